//! `extract = "logs"`: files matched by a glob, decompressed, cut into
//! chunks that end on a record boundary, and parsed on all cores into Arrow
//! record batches. Records that do not parse go where `on_error` says.
//!
//! One parser per format (`jsonl`, `csv`, `combined` for nginx and Apache,
//! `regex`), each behind the [`Parser`] trait; [`source`] drives them.

mod chunks;
mod combined;
mod csv;
mod dead_letter;
mod flat_json;
mod jsonl;
mod lines;
mod regex;
pub mod source;
mod typed;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use std::sync::Arc;

pub use dead_letter::DeadLetter;
pub use source::{LogsSource, stream_parser};

/// A piece of one file that ends at a record boundary.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// The file's path or URL, for error messages.
    pub file: Arc<str>,
    /// The 1-based line number of the chunk's first byte.
    pub first_line: u64,
    pub data: Bytes,
}

/// A record that did not parse.
#[derive(Debug, Clone)]
pub struct BadRecord {
    pub file: Arc<str>,
    pub line: u64,
    pub error: String,
    pub raw: Bytes,
}

/// What parsing one chunk produced.
#[derive(Debug, Default)]
pub struct Parsed {
    pub batches: Vec<RecordBatch>,
    pub bad: Vec<BadRecord>,
    /// Records seen (good and bad; blank lines are not records).
    pub records: u64,
}

/// Parses chunks of one format. Implementations are pure functions of the
/// chunk, so chunks can be parsed on any thread in any order.
pub trait Parser: Send + Sync {
    fn schema(&self) -> SchemaRef;

    /// Parses one chunk. A bad record is returned in [`Parsed::bad`], never
    /// as an error; `Err` means the chunk as a whole cannot be parsed.
    fn parse(&self, chunk: &Chunk) -> crate::Result<Parsed>;
}

pub use combined::combined_schema;

/// The schema `format = "regex"` produces for `pattern` and declared types.
pub fn regex_schema(
    pattern: &str,
    types: &[(String, sluice_core::config::ColumnType)],
) -> crate::Result<SchemaRef> {
    Ok(regex::RegexParser::new(pattern, types, usize::MAX, None)?.schema())
}

#[cfg(test)]
mod combined_differential_tests;
