//! Incremental extraction: a task with `incremental = { column = … }`
//! reads only rows whose column is past the mark the last successful run
//! left, and reports the largest value it read as the next mark. The mark
//! is advanced by whoever owns the run (the daemon, or `sluice run`) only
//! once the whole run has succeeded, so a run that fails after extracting
//! is read again in full by the next one.
//!
//! A mark is written `<kind>:<integer>`: `int:42`, `date:20419` (days since
//! 1970-01-01), `ts:…` or `tstz:…` (microseconds since 1970-01-01 UTC), so
//! it can be turned back into a literal of the column's own type.

use super::{DbKind, KeyKind, date_literal, timestamp_literal};
use crate::error::{Error, Result};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type, TimeUnit};
use futures::future::BoxFuture;
use std::sync::{Arc, Mutex};

/// Where the marks the last successful runs left are kept (the state store).
pub trait MarkSource: Send + Sync {
    fn mark(
        &self,
        job: &str,
        task: &str,
    ) -> BoxFuture<'_, std::result::Result<Option<String>, String>>;
}

/// A parsed mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    kind: KeyKind,
    value: i64,
}

impl Mark {
    pub fn parse(text: &str) -> Result<Mark> {
        let bad = || {
            Error::Internal(format!(
                "unreadable watermark \"{text}\" in the state store"
            ))
        };
        let (kind, value) = text.split_once(':').ok_or_else(bad)?;
        let kind = match kind {
            "int" => KeyKind::Int,
            "date" => KeyKind::Date,
            "ts" => KeyKind::Timestamp { utc: false },
            "tstz" => KeyKind::Timestamp { utc: true },
            _ => return Err(bad()),
        };
        Ok(Mark {
            kind,
            value: value.parse().map_err(|_| bad())?,
        })
    }

    pub fn to_text(self) -> String {
        let kind = match self.kind {
            KeyKind::Int => "int",
            KeyKind::Date => "date",
            KeyKind::Timestamp { utc: false } => "ts",
            KeyKind::Timestamp { utc: true } => "tstz",
        };
        format!("{kind}:{}", self.value)
    }

    /// The mark as a literal of the column's type in `db`'s dialect.
    fn literal(self, db: DbKind) -> String {
        match (self.kind, db) {
            (KeyKind::Int, _) => self.value.to_string(),
            (KeyKind::Date, DbKind::Postgres) => format!("date '{}'", date_literal(self.value)),
            (KeyKind::Timestamp { utc: false }, DbKind::Postgres) => {
                format!("timestamp '{}'", timestamp_literal(self.value))
            }
            (KeyKind::Timestamp { utc: true }, DbKind::Postgres) => {
                format!("timestamptz '{}+00'", timestamp_literal(self.value))
            }
            (KeyKind::Date, _) => format!("'{}'", date_literal(self.value)),
            (KeyKind::Timestamp { .. }, _) => format!("'{}'", timestamp_literal(self.value)),
        }
    }
}

/// The query with only the rows past `mark`.
pub fn past_mark(query: &str, column: &str, mark: Option<Mark>, db: DbKind) -> String {
    let query = super::trimmed(query);
    match mark {
        None => query.to_string(),
        Some(m) => {
            let quoted = match db {
                DbKind::MySql => format!("`{}`", column.replace('`', "``")),
                _ => format!("\"{}\"", column.replace('"', "\"\"")),
            };
            format!(
                "SELECT * FROM ({query}) AS sluice_inc WHERE {quoted} > {}",
                m.literal(db)
            )
        }
    }
}

/// Follows the largest value of the mark column in the batches going by.
#[derive(Clone, Default)]
pub struct MarkTracker(Arc<Mutex<Option<Mark>>>);

impl MarkTracker {
    /// Takes in one batch. `start` is the mark the run began from: the
    /// next mark never goes back before it.
    pub fn observe(&self, batch: &RecordBatch, column: &str) -> Result<()> {
        let Ok(idx) = batch.schema().index_of(column) else {
            return Err(Error::Config(format!(
                "incremental.column: the query has no column \"{column}\""
            )));
        };
        let array = batch.column(idx);
        let kind = match array.data_type() {
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32 => KeyKind::Int,
            DataType::Date32 => KeyKind::Date,
            DataType::Timestamp(TimeUnit::Microsecond, tz) => {
                KeyKind::Timestamp { utc: tz.is_some() }
            }
            other => {
                return Err(Error::Config(format!(
                    "incremental.column: \"{column}\" is {other}; a mark needs an integer, date or timestamp column"
                )));
            }
        };
        let as_i64 = arrow::compute::cast(array, &DataType::Int64)?;
        let Some(max) = arrow::compute::max(as_i64.as_primitive::<Int64Type>()) else {
            return Ok(());
        };
        let mut guard = self
            .0
            .lock()
            .map_err(|_| Error::Internal("mark lock".into()))?;
        match &mut *guard {
            Some(m) if m.value >= max => {}
            Some(m) => m.value = max,
            None => *guard = Some(Mark { kind, value: max }),
        }
        debug_assert!(as_i64.len() == array.len());
        Ok(())
    }

    /// The mark to advance to: the largest value read, or `start` when
    /// nothing new was read.
    pub fn next(&self, start: Option<Mark>) -> Option<String> {
        let seen = self.0.lock().ok().and_then(|g| *g);
        match (seen, start) {
            (Some(s), Some(st)) if st.value > s.value => Some(st.to_text()),
            (Some(s), _) => Some(s.to_text()),
            (None, st) => st.map(Mark::to_text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_round_trip_and_filter_in_each_dialect() {
        let m = Mark::parse("tstz:1500000").unwrap();
        assert_eq!(m.to_text(), "tstz:1500000");
        assert_eq!(
            past_mark("SELECT * FROM t;", "updated_at", Some(m), DbKind::Postgres),
            "SELECT * FROM (SELECT * FROM t) AS sluice_inc WHERE \"updated_at\" > timestamptz '1970-01-01 00:00:01.500000+00'"
        );
        assert_eq!(
            past_mark(
                "SELECT * FROM t",
                "id",
                Some(Mark::parse("int:7").unwrap()),
                DbKind::MySql
            ),
            "SELECT * FROM (SELECT * FROM t) AS sluice_inc WHERE `id` > 7"
        );
        assert_eq!(past_mark("SELECT 1", "id", None, DbKind::MySql), "SELECT 1");
        assert!(Mark::parse("what:1").is_err());
    }
}
