//! Sinks: where a task's output goes. Parquet on any object store, with
//! hive-style partitions and a publish that a retry always heals into
//! exactly the run's new output.

pub(crate) mod dictionary;
pub(crate) mod encoder;
pub mod parquet;
pub(crate) mod partition;
#[cfg(test)]
mod publish_tests;

pub use parquet::{ParquetOptions, write_dataset};
