//! SQLite: reading a file's query results (`read`).

mod read;

pub(crate) use read::extract;
