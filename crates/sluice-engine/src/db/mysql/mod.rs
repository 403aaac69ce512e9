//! MySQL and MariaDB: reading over the text protocol (`read`).

mod read;

pub(crate) use read::extract;
