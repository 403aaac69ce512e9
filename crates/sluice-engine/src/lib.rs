//! Sluice's data plane: log sources that parse files into Arrow record
//! batches, DataFusion SQL over upstream tasks, and Parquet written to any
//! object store with an all-or-nothing commit. [`runner`] ties them into
//! one run of a job.

//!
//! What the daemon and the binary use is public: the [`runner`] (the
//! engine, its units and reports), [`validate`], the error type, and the
//! few database hooks below; the rest stays inside the crate.

mod db;
mod error;
mod faults;
pub mod fence;
mod logs;
mod memory_pool;
mod producers;
pub mod runner;
mod schema;
mod sink;
mod sql;
#[cfg(test)]
mod sql_memory_tests;
mod staging;
mod store;
pub mod stream;
pub mod validate;

pub use db::{MarkSource, cancel_abandoned, has_abandoned};
pub use error::{Error, ErrorKind, Result};
pub use producers::panic_message;
