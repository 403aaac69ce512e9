//! MySQL and MariaDB: reading over the text protocol (`read`) and
//! loading through bind-parameter INSERTs (`load`).

mod load;
mod read;

pub(crate) use load::{column_type, load};

pub(crate) use read::extract;
