//! Databases as sources: `extract = "sql"` runs a query on a connection and
//! streams its rows as Arrow batches, `batch_size` rows at a time, so that
//! memory stays flat whatever the table's size.

mod cancel;
mod incremental;
mod load;
mod mysql;
mod poke;
mod postgres;
mod sqlite;
mod text_column;

use crate::error::{Error, Result};
use arrow::datatypes::SchemaRef;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use sluice_core::config::{DaemonConfig, SqlExtract};
use sluice_core::redact::redact_url;

pub use cancel::{cancel_abandoned, has_abandoned};
pub use incremental::{Mark, MarkSource};
pub use load::{LoadMarker, LoadRequest, Loaded, load, take_load};
pub use poke::poke;

/// How SQL for `connection` quotes a template's string parameters
/// (Standard when the connection does not resolve: that error is told
/// where the connection is used).
pub(crate) fn dialect(
    config: &sluice_core::config::DaemonConfig,
    connection: &str,
) -> sluice_core::template::Dialect {
    match DbTarget::resolve(config, connection).and_then(|t| t.kind()) {
        Ok(DbKind::MySql) => sluice_core::template::Dialect::MySql,
        _ => sluice_core::template::Dialect::Standard,
    }
}

/// A database to talk to, with the name errors call it by.
#[derive(Clone)]
pub struct DbTarget {
    /// The `[connections]` name, or the URL without its password.
    pub name: String,
    /// May hold a password: never shown.
    url: String,
    password: Option<String>,
}

impl std::fmt::Debug for DbTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.name)
    }
}

/// Bytes of row data after which a reader ends its batch early, whatever
/// `batch_size` says. An Arrow string or binary array holds at most 2 GiB,
/// and appending past that panics: with one value at most 1 GiB (both
/// servers' limit), a batch cut at 512 MiB stays well below.
pub(crate) const MAX_BATCH_BYTES: usize = 512 << 20;

/// How long opening a database connection may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Which kind of database a URL points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    Postgres,
    MySql,
    Sqlite,
}

impl DbTarget {
    /// Finds `connection`: a `[connections]` name or a URL written in place.
    pub fn resolve(config: &DaemonConfig, connection: &str) -> Result<DbTarget> {
        let (name, url) = match config.connections.get(connection) {
            Some(c) => (c.name.clone(), c.url.clone()),
            None if connection.contains("://") => (redact_url(connection), connection.to_string()),
            None => {
                let known: Vec<&str> = config.connections.keys().map(String::as_str).collect();
                return Err(Error::Config(format!(
                    "unknown connection \"{connection}\"; expected a name from [connections] ({}) or a postgres://, mysql:// or sqlite:// URL",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                )));
            }
        };
        let password = url::Url::parse(&url)
            .ok()
            .and_then(|u| u.password().map(percent_decode));
        let target = DbTarget {
            name,
            url,
            password,
        };
        target.kind()?;
        Ok(target)
    }

    pub fn kind(&self) -> Result<DbKind> {
        let scheme = self.url.split("://").next().unwrap_or_default();
        match scheme {
            "postgres" | "postgresql" => Ok(DbKind::Postgres),
            "mysql" | "mariadb" => Ok(DbKind::MySql),
            "sqlite" => Ok(DbKind::Sqlite),
            other => Err(Error::Config(format!(
                "connection {}: \"{other}://\" is not a database; expected postgres://, mysql:// or sqlite://",
                self.name
            ))),
        }
    }

    /// Opens a connection. A host that does not answer is given up on
    /// after [`CONNECT_TIMEOUT`], as the drivers themselves wait for as
    /// long as the operating system does (minutes), holding a worker.
    pub async fn connect<C: sqlx::Connection>(&self) -> Result<C> {
        match tokio::time::timeout(CONNECT_TIMEOUT, C::connect(&self.url)).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(self.error("connecting", &e)),
            Err(_) => Err(Error::Database {
                connection: self.name.clone(),
                message: format!(
                    "connecting: no answer within {}s",
                    CONNECT_TIMEOUT.as_secs()
                ),
                retryable: true,
            }),
        }
    }

    /// An error from the driver while doing `what`, naming the connection.
    fn error(&self, what: &str, e: &sqlx::Error) -> Error {
        Error::Database {
            connection: self.name.clone(),
            message: self.scrub(&format!("{what}: {e}")),
            retryable: is_transient(e),
        }
    }

    fn error_msg(&self, what: &str, message: &str) -> Error {
        Error::Database {
            connection: self.name.clone(),
            message: self.scrub(&format!("{what}: {message}")),
            retryable: false,
        }
    }

    fn column_error(&self, column: &str, message: &str) -> Error {
        self.error_msg(&format!("column {column}"), message)
    }

    /// Drivers do not put passwords in their messages, but a server may
    /// echo what it was sent; this makes sure none gets through.
    fn scrub(&self, message: &str) -> String {
        match &self.password {
            Some(p) if p.len() >= 4 => message.replace(p.as_str(), "***"),
            _ => message.to_string(),
        }
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(h) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(h, 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether a driver error could go away on a retry: the network, the
/// server restarting or running short, a serialization conflict.
fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolTimedOut => true,
        sqlx::Error::Database(d) => d
            .code()
            .is_some_and(|c| ["08", "40", "53", "57P"].iter().any(|p| c.starts_with(p))),
        _ => false,
    }
}

/// Runs an `extract = "sql"` task's rendered `query`. For an incremental
/// task, `mark` is where the last successful run stopped; the returned
/// tracker follows the largest value read, the next mark.
pub async fn extract(
    config: &DaemonConfig,
    spec: &SqlExtract,
    query: &str,
    mark: Option<Mark>,
) -> Result<(SendableRecordBatchStream, incremental::MarkTracker)> {
    let target = DbTarget::resolve(config, &spec.connection)?;
    let kind = target.kind()?;
    let query = match &spec.incremental {
        Some(column) => incremental::past_mark(query, column, mark, kind),
        None => query.to_string(),
    };
    let stream = match kind {
        DbKind::Postgres => postgres::extract(&target, &query, spec).await?,
        DbKind::MySql => mysql::extract(&target, &query, spec).await?,
        DbKind::Sqlite => sqlite::extract(&target, &query, spec).await?,
    };
    let tracker = incremental::MarkTracker::default();
    let Some(column) = spec.incremental.clone() else {
        return Ok((stream, tracker));
    };
    let schema = stream.schema();
    let watching = tracker.clone();
    let stream = futures::StreamExt::map(stream, move |batch| {
        let batch = batch?;
        watching.observe(&batch, &column)?;
        Ok::<_, datafusion::error::DataFusionError>(batch)
    });
    Ok((
        Box::pin(RecordBatchStreamAdapter::new(schema, stream)),
        tracker,
    ))
}

/// Rows per batch for each of `readers` concurrent readers: `batch_size`
/// shared between them, so that a partitioned read holds about as many
/// rows in memory as one reader does. A floor keeps batches large enough
/// to encode well.
fn reader_batch_size(batch_size: usize, readers: usize) -> usize {
    (batch_size / readers.max(1)).max(batch_size.min(8192))
}

/// A query as the databases take it inside `COPY (…)` or `SELECT * FROM
/// (…)`: without surrounding space or a trailing semicolon.
fn trimmed(query: &str) -> &str {
    query.trim().trim_end_matches(';').trim_end()
}

/// The Arrow schema of a query's described columns (all nullable: a
/// query's columns carry no NOT NULL).
fn schema_of<'a>(
    columns: impl Iterator<Item = (&'a str, arrow::datatypes::DataType)>,
) -> SchemaRef {
    std::sync::Arc::new(arrow::datatypes::Schema::new(
        columns
            .map(|(name, ty)| arrow::datatypes::Field::new(name, ty, true))
            .collect::<Vec<_>>(),
    ))
}

/// What a partition key is measured as: an integer, days or microseconds
/// since 1970-01-01.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Int,
    Date,
    Timestamp { utc: bool },
}

/// The index of the partition column `on` among the query's columns.
fn partition_column<'a>(names: impl Iterator<Item = &'a str> + Clone, on: &str) -> Result<usize> {
    names.clone().position(|n| n == on).ok_or_else(|| {
        Error::Config(format!(
            "partition_on: the query has no column \"{on}\"; it has {}",
            names.collect::<Vec<_>>().join(", ")
        ))
    })
}

fn unsplittable(on: &str, ty: &arrow::datatypes::DataType) -> Error {
    Error::Config(format!(
        "partition_on: column \"{on}\" is {ty}; partitions split integer, date or timestamp columns"
    ))
}

fn date_literal(days: i64) -> String {
    chrono::DateTime::from_timestamp(days * 86_400, 0)
        .unwrap_or_default()
        .format("%Y-%m-%d")
        .to_string()
}

fn timestamp_literal(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .unwrap_or_default()
        .format("%Y-%m-%d %H:%M:%S%.6f")
        .to_string()
}

/// WHERE conditions cutting the keys in `bounds` (the smallest and largest,
/// measured as integers) into `n` ranges of equal width, as one list of
/// conditions per connection. Adjacent ranges share one literal, `>=` on
/// one side and `<` on the other, so each row falls in exactly one. Rows
/// whose key is NULL are read by the first connection after its range, as
/// a query of their own: `key < x OR key IS NULL` would keep the server
/// from using an index on the key.
fn split_ranges(
    bounds: Option<(i64, i64)>,
    n: usize,
    column: &str,
    literal: impl Fn(i64) -> String,
) -> Vec<Vec<String>> {
    let Some((lo, hi)) = bounds else {
        // No keys at all: one range takes every row (NULL keys included).
        return vec![vec!["TRUE".into()]];
    };
    let span = (i128::from(hi) - i128::from(lo) + 1).max(1);
    let n = (n as i128).min(span).max(1) as usize;
    if n == 1 {
        return vec![vec!["TRUE".into()]];
    }
    let cut = |k: usize| (i128::from(lo) + span * k as i128 / n as i128) as i64;
    (0..n)
        .map(|k| {
            let mut parts = Vec::new();
            if k > 0 {
                parts.push(format!("{column} >= {}", literal(cut(k))));
            }
            if k + 1 < n {
                parts.push(format!("{column} < {}", literal(cut(k + 1))));
            }
            let range = parts.join(" AND ");
            if k == 0 {
                vec![range, format!("{column} IS NULL")]
            } else {
                vec![range]
            }
        })
        .collect()
}

/// The queries each reader runs: `query` filtered by each condition of its
/// range (from [`split_ranges`]).
fn range_queries(query: &str, ranges: Vec<Vec<String>>) -> Vec<Vec<String>> {
    ranges
        .into_iter()
        .map(|conditions| {
            conditions
                .iter()
                .map(|c| format!("SELECT * FROM ({query}) AS sluice_q WHERE {c}"))
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod cancel_tests;

#[cfg(test)]
mod reader_failure_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_share_the_batch_size() {
        assert_eq!(reader_batch_size(65_536, 1), 65_536);
        assert_eq!(reader_batch_size(65_536, 2), 32_768);
        assert_eq!(reader_batch_size(65_536, 64), 8192);
        assert_eq!(reader_batch_size(1000, 4), 1000);
    }

    fn config(url: &str) -> DaemonConfig {
        let text = format!("[connections.app]\nurl = \"{url}\"\n");
        DaemonConfig::parse(&text, std::path::Path::new("sluice.toml"), &|_| None).unwrap()
    }

    #[test]
    fn ranges_cover_every_key_once() {
        let r = split_ranges(Some((1, 100)), 3, "id", |v| v.to_string());
        assert_eq!(
            r,
            vec![
                vec!["id < 34".to_string(), "id IS NULL".to_string()],
                vec!["id >= 34 AND id < 67".to_string()],
                vec!["id >= 67".to_string()]
            ]
        );
        // Fewer keys than partitions: one range per key.
        assert_eq!(
            split_ranges(Some((5, 6)), 4, "id", |v| v.to_string()).len(),
            2
        );
        assert_eq!(
            split_ranges(None, 4, "id", |v| v.to_string()),
            vec![vec!["TRUE"]]
        );
        assert_eq!(
            split_ranges(Some((7, 7)), 1, "id", |v| v.to_string()),
            vec![vec!["TRUE"]]
        );
        assert_eq!(timestamp_literal(1_500_000), "1970-01-01 00:00:01.500000");
        assert_eq!(date_literal(1), "1970-01-02");
    }

    #[test]
    fn connections_resolve_by_name_or_url() {
        let c = config("postgres://etl:s3cr%40t@db:5432/app");
        let t = DbTarget::resolve(&c, "app").unwrap();
        assert_eq!(t.name, "app");
        assert_eq!(t.kind().unwrap(), DbKind::Postgres);
        assert_eq!(t.scrub("bad s3cr@t here"), "bad *** here");
        let t = DbTarget::resolve(&c, "mysql://root:pw@h/db").unwrap();
        assert_eq!(t.name, "mysql://root:***@h/db");
        let e = DbTarget::resolve(&c, "other").unwrap_err().to_string();
        assert!(
            e.contains("unknown connection \"other\"") && e.contains("app"),
            "{e}"
        );
        let e = DbTarget::resolve(&config("s3://bucket"), "app")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a database"), "{e}");
    }
}
