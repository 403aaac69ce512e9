//! `extract = "logs"` and `extract = "sql"`: where a job's data comes from.

use super::{At, TaskKind, is_identifier, sql_text};
use crate::config::ColumnType;
use crate::error::ConfigError;
use crate::units::parse_size;
use indexmap::IndexMap;
use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Clone)]
pub enum Extract {
    Logs(LogsExtract),
    Sql(SqlExtract),
}

/// `extract = "sql"`: a query run on a database connection.
#[derive(Debug, Clone)]
pub struct SqlExtract {
    /// A `[connections]` name, or a `postgres://`, `mysql://` or
    /// `sqlite://` URL written in place.
    pub connection: String,
    /// The query (a template); read from the file when the job named one.
    pub query: String,
    /// Rows per Arrow batch: the unit of memory while streaming.
    pub batch_size: usize,
    /// Splits the query into `partitions` ranges of this column, read at
    /// once on as many connections.
    pub partition_on: Option<String>,
    pub partitions: usize,
    /// `incremental = { column = "updated_at" }`: read only rows whose
    /// column is past the mark the last successful run left.
    pub incremental: Option<String>,
}

/// Rows per batch when a SQL extract does not say. Memory holds a few
/// batches at each stage; at 16,384 rows the 5-million-row benchmark peaks
/// about 80 MB lower than at 65,536, at the same speed.
pub const DEFAULT_SQL_BATCH_SIZE: usize = 16_384;

/// `extract = "logs"`: files matched by a glob, parsed line by line.
#[derive(Debug, Clone)]
pub struct LogsExtract {
    /// A glob (templated): a local path, a full object URL, or
    /// `<connection>/<path>`.
    pub path: String,
    pub connection: Option<String>,
    pub format: LogFormat,
    pub on_error: OnError,
    /// Declared columns, in order; `None` means inferred (jsonl, csv) or the
    /// format's fixed schema.
    pub schema: Option<Vec<(String, ColumnType)>>,
    /// Lines longer than this are bad records.
    pub max_line_bytes: usize,
    /// strftime format for `timestamp` columns of csv and regex formats;
    /// RFC 3339 when unset.
    pub timestamp_format: Option<String>,
    /// Stream jobs: the input read ahead of what is written, at most
    /// (bounds the stream's memory whatever the input rate).
    pub max_buffer_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogFormat {
    Jsonl,
    Csv { delimiter: u8, header: bool },
    NginxCombined,
    ApacheCombined,
    Regex { pattern: String },
}

pub const FORMATS: &[&str] = &["jsonl", "csv", "nginx_combined", "apache_combined", "regex"];

/// What happens to a record that does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// The task fails, naming the file and line.
    Fail,
    /// The record is dropped and counted.
    Skip,
    /// The record is written, with its file, line and error, to the
    /// dead-letter store, and counted.
    DeadLetter,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLogs {
    // Matched before deserializing; declared so that the key is accepted.
    #[serde(rename = "extract")]
    _extract: String,
    path: String,
    format: String,
    connection: Option<String>,
    on_error: Option<String>,
    schema: Option<IndexMap<String, String>>,
    pattern: Option<String>,
    delimiter: Option<String>,
    header: Option<bool>,
    max_line_bytes: Option<String>,
    timestamp_format: Option<String>,
    max_buffer_bytes: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSql {
    // Matched before deserializing; declared so that the key is accepted.
    #[serde(rename = "extract")]
    _extract: String,
    connection: String,
    query: String,
    batch_size: Option<usize>,
    partition_on: Option<String>,
    partitions: Option<usize>,
    incremental: Option<RawIncremental>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIncremental {
    column: String,
}

fn sql_extract(
    raw: RawSql,
    base: &str,
    file: &Path,
    job_dir: &Path,
    errors: &mut Vec<ConfigError>,
) -> Option<SqlExtract> {
    let before = errors.len();
    let mut err =
        |key: &str, m: String| errors.push(ConfigError::new(file, format!("{base}.{key}"), m));
    let query = match sql_text(&raw.query, job_dir) {
        Ok((q, _)) => q,
        Err(m) => {
            err("query", m);
            String::new()
        }
    };
    let batch_size = raw.batch_size.unwrap_or(DEFAULT_SQL_BATCH_SIZE);
    if batch_size == 0 {
        err("batch_size", "must be at least 1 row".into());
    }
    let partitions = raw.partitions.unwrap_or(1);
    if partitions == 0 {
        err("partitions", "must be at least 1".into());
    }
    if partitions > 1 && raw.partition_on.is_none() {
        err(
            "partition_on",
            format!(
                "partitions = {partitions} needs the column to split on, e.g. partition_on = \"id\""
            ),
        );
    }
    if let Some(col) = &raw.partition_on
        && !is_identifier(col)
    {
        err(
            "partition_on",
            format!("\"{col}\" is not a column name; use letters, digits and _"),
        );
    }
    if let Some(inc) = &raw.incremental
        && !is_identifier(&inc.column)
    {
        err(
            "incremental.column",
            format!(
                "\"{}\" is not a column name; use letters, digits and _",
                inc.column
            ),
        );
    }
    (errors.len() == before).then_some(SqlExtract {
        connection: raw.connection,
        query,
        batch_size,
        partition_on: raw.partition_on,
        partitions,
        incremental: raw.incremental.map(|i| i.column),
    })
}

fn logs(
    raw: RawLogs,
    base: &str,
    file: &Path,
    errors: &mut Vec<ConfigError>,
) -> Option<LogsExtract> {
    let before = errors.len();
    let mut err =
        |key: &str, m: String| errors.push(ConfigError::new(file, format!("{base}.{key}"), m));
    let format = match raw.format.as_str() {
        "jsonl" => Some(LogFormat::Jsonl),
        "csv" => {
            let delimiter = match raw.delimiter.as_deref() {
                None => Some(b','),
                Some("\\t" | "\t" | "tab") => Some(b'\t'),
                Some(d) if d.len() == 1 => Some(d.as_bytes()[0]),
                Some(d) => {
                    err(
                        "delimiter",
                        format!("\"{d}\" is not one byte; expected e.g. \",\", \";\" or \"\\t\""),
                    );
                    None
                }
            };
            delimiter.map(|delimiter| LogFormat::Csv {
                delimiter,
                header: raw.header.unwrap_or(true),
            })
        }
        "nginx_combined" => Some(LogFormat::NginxCombined),
        "apache_combined" => Some(LogFormat::ApacheCombined),
        "regex" => match raw.pattern.clone() {
            None => {
                err("pattern", "format \"regex\" needs a pattern with named groups, e.g. '^(?P<ip>\\S+) (?P<msg>.*)$'".into());
                None
            }
            Some(p) => match regex::Regex::new(&p) {
                Err(e) => {
                    err("pattern", format!("invalid regex: {e}"));
                    None
                }
                Ok(re) if re.capture_names().flatten().next().is_none() => {
                    err(
                        "pattern",
                        "the regex has no named groups; name each column with (?P<name>…)".into(),
                    );
                    None
                }
                Ok(_) => Some(LogFormat::Regex { pattern: p }),
            },
        },
        other => {
            err(
                "format",
                format!(
                    "unknown format \"{other}\"; expected one of {}",
                    FORMATS.join(", ")
                ),
            );
            None
        }
    };
    if raw.pattern.is_some() && raw.format != "regex" {
        err("pattern", "only valid with format = \"regex\"".into());
    }
    if (raw.delimiter.is_some() || raw.header.is_some()) && raw.format != "csv" {
        err(
            if raw.delimiter.is_some() {
                "delimiter"
            } else {
                "header"
            },
            "only valid with format = \"csv\"".into(),
        );
    }
    if raw.schema.is_some() && matches!(raw.format.as_str(), "nginx_combined" | "apache_combined") {
        err(
            "schema",
            format!("format \"{}\" has a fixed schema", raw.format),
        );
    }
    let on_error = match raw.on_error.as_deref().unwrap_or("fail") {
        "fail" => Some(OnError::Fail),
        "skip" => Some(OnError::Skip),
        "dead_letter" => Some(OnError::DeadLetter),
        other => {
            err(
                "on_error",
                format!("unknown on_error \"{other}\"; expected one of fail, skip, dead_letter"),
            );
            None
        }
    };
    let schema = raw.schema.map(|cols| {
        cols.into_iter()
            .filter_map(|(name, ty)| match ty.parse::<ColumnType>() {
                Ok(t) => Some((name, t)),
                Err(m) => {
                    err(&format!("schema.{name}"), m);
                    None
                }
            })
            .collect::<Vec<_>>()
    });
    let max_line_bytes = match raw.max_line_bytes.as_deref() {
        None => Some(1 << 20),
        Some(s) => match parse_size(s) {
            Ok(n) if n > 0 => Some(n as usize),
            Ok(_) => {
                err("max_line_bytes", "must be more than 0".into());
                None
            }
            Err(m) => {
                err("max_line_bytes", m);
                None
            }
        },
    };
    let max_buffer_bytes = match raw.max_buffer_bytes.as_deref() {
        None => Some(None),
        Some(s) => match crate::units::parse_size(s) {
            Ok(n) if n >= 1 << 20 => Some(Some(n)),
            Ok(_) => {
                err("max_buffer_bytes", "must be at least 1MiB".into());
                None
            }
            Err(m) => {
                err("max_buffer_bytes", m);
                None
            }
        },
    };
    if errors.len() > before {
        return None;
    }
    Some(LogsExtract {
        path: raw.path,
        connection: raw.connection,
        format: format?,
        on_error: on_error?,
        schema,
        max_line_bytes: max_line_bytes?,
        timestamp_format: raw.timestamp_format,
        max_buffer_bytes: max_buffer_bytes?,
    })
}

pub(super) fn parse(
    kind: &str,
    value: toml::Value,
    at: &At<'_>,
    errors: &mut Vec<ConfigError>,
) -> Option<TaskKind> {
    let (base, file, job_dir) = (at.base, at.file, at.job_dir);
    let err = |key: &str, message: String| at.err(key, message);
    match kind {
        "logs" => at
            .read::<RawLogs>(value, errors)
            .and_then(|raw| logs(raw, base, file, errors))
            .map(|l| TaskKind::Extract(Extract::Logs(l))),
        "sql" => at
            .read::<RawSql>(value, errors)
            .and_then(|raw| sql_extract(raw, base, file, job_dir, errors))
            .map(|s| TaskKind::Extract(Extract::Sql(s))),
        other => {
            errors.push(err(
                "extract",
                format!("unknown extract \"{other}\"; expected one of logs, sql"),
            ));
            None
        }
    }
}
