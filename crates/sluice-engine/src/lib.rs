//! Sluice's data plane: log sources that parse files into Arrow record
//! batches, DataFusion SQL over upstream tasks, and Parquet written to any
//! object store with an all-or-nothing commit. [`runner`] ties them into
//! one run of a job.

pub mod db;
pub mod error;
mod faults;
pub mod logs;
mod producers;
pub mod runner;
pub mod schema;
pub mod sink;
pub mod sql;
pub mod staging;
pub mod store;
pub mod validate;

pub use error::{Error, ErrorKind, Result};
pub use producers::panic_message;
