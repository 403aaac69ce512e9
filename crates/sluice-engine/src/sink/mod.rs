//! Sinks: where a task's output goes. Parquet on any object store, with
//! hive-style partitions and a commit that makes a run's output appear
//! whole or not at all.

mod dictionary;
mod encoder;
pub mod parquet;
mod partition;

pub use parquet::{ParquetOptions, WriteSummary, write_dataset};
