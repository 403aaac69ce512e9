//! `load = "parquet"` and `load = "sql"`: where a job's data goes.

use super::{At, TaskKind, is_identifier};
use crate::config::one_of;
use crate::error::ConfigError;
use crate::units::parse_size;
use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Clone)]
pub enum Load {
    Parquet(ParquetLoad),
    Sql(SqlLoad),
}

impl Load {
    pub fn input(&self) -> &str {
        match self {
            Load::Parquet(p) => &p.input,
            Load::Sql(s) => &s.input,
        }
    }
}

/// `load = "sql"`: a dataset written into a database table, all or nothing.
#[derive(Debug, Clone)]
pub struct SqlLoad {
    pub input: String,
    pub connection: String,
    /// `table` or `schema.table` (templated).
    pub table: String,
    pub mode: LoadMode,
    /// Creates the table from the dataset's schema when it does not exist.
    pub create: bool,
    /// Rows per INSERT statement (MySQL, SQLite).
    pub batch_size: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadMode {
    Append,
    /// The table's rows are replaced by the dataset's.
    Replace,
    /// Rows whose key matches are updated, others inserted.
    Upsert {
        key: Vec<String>,
    },
    /// The rows `delete_where` (templated, e.g. `dt = '{{ ds }}'`) selects
    /// are deleted and the dataset inserted, in one transaction: re-running
    /// a date replaces that date's rows and leaves the others.
    DeleteInsert {
        delete_where: String,
    },
}

#[derive(Debug, Clone)]
pub struct ParquetLoad {
    pub input: String,
    /// Destination folder (templated): full URL, local path or
    /// `<connection>/<path>`.
    pub url: String,
    pub connection: Option<String>,
    pub partition_by: Vec<String>,
    pub compression: Compression,
    pub row_group_size: usize,
    /// A file is closed and the next one started past this many bytes.
    pub max_file_size: u64,
    /// Stream jobs: files roll at about this size …
    pub target_file_size: Option<u64>,
    /// … or this long after their first line, whichever comes first.
    pub max_file_age: Option<std::time::Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Zstd(i32),
    Snappy,
    None,
}

/// Rows per Parquet row group when a load does not say.
pub const DEFAULT_ROW_GROUP_SIZE: usize = 1 << 17;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParquetLoad {
    // Matched before deserializing; declared so that the key is accepted.
    #[serde(rename = "load")]
    _load: String,
    input: String,
    url: String,
    connection: Option<String>,
    #[serde(default)]
    partition_by: Vec<String>,
    compression: Option<String>,
    compression_level: Option<i32>,
    row_group_size: Option<usize>,
    max_file_size: Option<String>,
    target_file_size: Option<String>,
    max_file_age: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSqlLoad {
    // Matched before deserializing; declared so that the key is accepted.
    #[serde(rename = "load")]
    _load: String,
    input: String,
    connection: String,
    table: String,
    mode: Option<String>,
    key: Option<Vec<String>>,
    delete_where: Option<String>,
    create: Option<bool>,
    batch_size: Option<usize>,
}

fn sql_load(
    raw: RawSqlLoad,
    base: &str,
    file: &Path,
    errors: &mut Vec<ConfigError>,
) -> Option<SqlLoad> {
    let before = errors.len();
    let mut err =
        |key: &str, m: String| errors.push(ConfigError::new(file, format!("{base}.{key}"), m));
    let mode_name = raw.mode.as_deref().unwrap_or("append");
    if raw.delete_where.is_some() && mode_name != "delete_insert" {
        err(
            "delete_where",
            "delete_where is only for mode = \"delete_insert\"".into(),
        );
    }
    let mode = match (mode_name, raw.key) {
        ("append", None) => Some(LoadMode::Append),
        ("replace", None) => Some(LoadMode::Replace),
        ("upsert", Some(key)) if !key.is_empty() => Some(LoadMode::Upsert { key }),
        ("upsert", _) => {
            err(
                "key",
                "mode = \"upsert\" needs the columns that identify a row, e.g. key = [\"id\"]"
                    .into(),
            );
            None
        }
        ("delete_insert", None) => match raw.delete_where {
            Some(w) if !w.trim().is_empty() => Some(LoadMode::DeleteInsert { delete_where: w }),
            _ => {
                err(
                    "delete_where",
                    "mode = \"delete_insert\" needs the condition that selects the rows a run replaces, e.g. delete_where = \"dt = '{{ ds }}'\"".into(),
                );
                None
            }
        },
        ("append" | "replace" | "delete_insert", Some(_)) => {
            err("key", "key is only for mode = \"upsert\"".into());
            None
        }
        (other, _) => {
            err(
                "mode",
                format!(
                    "unknown mode \"{other}\"; expected one of append, replace, upsert, delete_insert"
                ),
            );
            None
        }
    };
    let table_ok = raw.table.contains("{{")
        || (!raw.table.is_empty()
            && raw.table.split('.').count() <= 2
            && raw.table.split('.').all(is_identifier));
    if !table_ok {
        err(
            "table",
            format!(
                "\"{}\" is not a table name; expected name or schema.name",
                raw.table
            ),
        );
    }
    let batch_size = raw.batch_size.unwrap_or(1000);
    if batch_size == 0 {
        err("batch_size", "must be at least 1 row".into());
    }
    if errors.len() > before {
        return None;
    }
    Some(SqlLoad {
        input: raw.input,
        connection: raw.connection,
        table: raw.table,
        mode: mode?,
        create: raw.create.unwrap_or(false),
        batch_size,
    })
}

fn parquet_load(
    raw: RawParquetLoad,
    base: &str,
    file: &Path,
    errors: &mut Vec<ConfigError>,
) -> Option<ParquetLoad> {
    let before = errors.len();
    let mut err =
        |key: &str, m: String| errors.push(ConfigError::new(file, format!("{base}.{key}"), m));
    let compression = match raw.compression.as_deref().unwrap_or("zstd") {
        "zstd" => {
            let level = raw.compression_level.unwrap_or(3);
            if !(1..=22).contains(&level) {
                err(
                    "compression_level",
                    format!("{level} is out of range; zstd levels are 1 to 22"),
                );
            }
            Some(Compression::Zstd(level))
        }
        c @ ("snappy" | "none") => {
            if raw.compression_level.is_some() {
                err(
                    "compression_level",
                    format!("only valid with compression = \"zstd\", not \"{c}\""),
                );
            }
            Some(if c == "snappy" {
                Compression::Snappy
            } else {
                Compression::None
            })
        }
        other => {
            if let Err(m) = one_of(other, &["zstd", "snappy", "none"], "compression") {
                err("compression", m);
            }
            None
        }
    };
    // About DuckDB's default: a row group is encoded whole in memory before
    // it is written, so its size bounds the memory a load takes.
    let row_group_size = raw.row_group_size.unwrap_or(DEFAULT_ROW_GROUP_SIZE);
    if row_group_size == 0 {
        err("row_group_size", "must be more than 0".into());
    }
    let max_file_size = match raw.max_file_size.as_deref() {
        None => Some(512 << 20),
        Some(s) => parse_size(s).map_err(|m| err("max_file_size", m)).ok(),
    };
    let target_file_size = match raw.target_file_size.as_deref() {
        None => Some(None),
        Some(s) => parse_size(s)
            .map_err(|m| err("target_file_size", m))
            .ok()
            .map(Some),
    };
    let max_file_age = match raw.max_file_age.as_deref() {
        None => Some(None),
        Some(s) => crate::units::parse_duration(s)
            .map_err(|m| err("max_file_age", m))
            .ok()
            .map(Some),
    };
    if errors.len() > before {
        return None;
    }
    Some(ParquetLoad {
        input: raw.input,
        url: raw.url,
        connection: raw.connection,
        partition_by: raw.partition_by,
        compression: compression?,
        row_group_size,
        max_file_size: max_file_size?,
        target_file_size: target_file_size?,
        max_file_age: max_file_age?,
    })
}

pub(super) fn parse(
    kind: &str,
    value: toml::Value,
    at: &At<'_>,
    errors: &mut Vec<ConfigError>,
) -> Option<TaskKind> {
    let (base, file) = (at.base, at.file);
    let err = |key: &str, message: String| at.err(key, message);
    match kind {
        "parquet" => at
            .read::<RawParquetLoad>(value, errors)
            .and_then(|raw| parquet_load(raw, base, file, errors))
            .map(|p| TaskKind::Load(Load::Parquet(p))),
        "sql" => at
            .read::<RawSqlLoad>(value, errors)
            .and_then(|raw| sql_load(raw, base, file, errors))
            .map(|l| TaskKind::Load(Load::Sql(l))),
        other => {
            errors.push(err(
                "load",
                format!("unknown load \"{other}\"; expected one of parquet, sql"),
            ));
            None
        }
    }
}
