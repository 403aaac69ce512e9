//! Tasks: the validated shape of each `[tasks.<id>]` table. A task is
//! exactly one of extract, transform, load, sensor or check; its table is
//! checked against the keys that kind accepts, so a key meant for another
//! kind is reported instead of silently ignored.

use super::{ColumnType, deserialize_at, one_of};
use crate::error::ConfigError;
use crate::units::{parse_duration, parse_size};
use indexmap::IndexMap;
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;

/// One task of a job.
#[derive(Debug, Clone)]
pub struct Task {
    /// The task id; it is also the table name later SQL reads its output by.
    pub id: String,
    pub kind: TaskKind,
    /// Upstream task ids written with `depends_on`.
    pub depends_on: Vec<String>,
    pub retries: u32,
    pub retry_delay: Duration,
    pub max_retry_delay: Duration,
    pub timeout: Option<Duration>,
    pub description: Option<String>,
}

#[derive(Debug, Clone)]
pub enum TaskKind {
    Extract(Extract),
    Transform(Transform),
    Load(Load),
    Sensor(Sensor),
    Check(Check),
}

impl TaskKind {
    /// The key that names this kind in a job file.
    pub fn key(&self) -> &'static str {
        match self {
            TaskKind::Extract(_) => "extract",
            TaskKind::Transform(_) => "transform",
            TaskKind::Load(_) => "load",
            TaskKind::Sensor(_) => "sensor",
            TaskKind::Check(_) => "check",
        }
    }
}

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

/// Rows per Parquet row group when a load does not say.
pub const DEFAULT_ROW_GROUP_SIZE: usize = 1 << 17;

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

#[derive(Debug, Clone)]
pub struct Transform {
    /// The SQL text (a template); read from the file when the job named one.
    pub sql: String,
    /// The `.sql` file it came from, if any.
    pub sql_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Check {
    pub sql: String,
}

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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Zstd(i32),
    Snappy,
    None,
}

#[derive(Debug, Clone)]
pub struct Sensor {
    pub kind: SensorKind,
    pub poke_interval: Duration,
}

#[derive(Debug, Clone)]
pub enum SensorKind {
    ObjectExists {
        url: String,
        connection: Option<String>,
    },
    /// Pokes `query` (a template) on a database until its first value is
    /// true.
    Sql { connection: String, query: String },
}

/// Keys every kind of task accepts.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommon {
    #[serde(default)]
    depends_on: Vec<String>,
    retries: Option<u32>,
    retry_delay: Option<String>,
    max_retry_delay: Option<String>,
    timeout: Option<String>,
    description: Option<String>,
}
const COMMON_KEYS: &[&str] = &[
    "depends_on",
    "retries",
    "retry_delay",
    "max_retry_delay",
    "timeout",
    "description",
];

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTransform {
    transform: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    check: String,
}

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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSqlSensor {
    // Matched before deserializing; declared so that the key is accepted.
    #[serde(rename = "sensor")]
    _sensor: String,
    connection: String,
    query: String,
    poke_interval: Option<String>,
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawObjectSensor {
    // Matched before deserializing; declared so that the key is accepted.
    #[serde(rename = "sensor")]
    _sensor: String,
    url: String,
    connection: Option<String>,
    poke_interval: Option<String>,
}

/// Job-level defaults a task inherits.
#[derive(Debug, Clone)]
pub(crate) struct TaskDefaults {
    pub retries: u32,
    pub retry_delay: Duration,
    pub max_retry_delay: Duration,
    pub timeout: Option<Duration>,
}

const KINDS: &[&str] = &["extract", "transform", "load", "sensor", "check"];

/// Validates one `[tasks.<id>]` table. `job_dir` resolves `.sql` files.
pub(crate) fn parse_task(
    id: &str,
    value: toml::Value,
    file: &Path,
    job_dir: &Path,
    defaults: &TaskDefaults,
    errors: &mut Vec<ConfigError>,
) -> Option<Task> {
    let base = format!("tasks.{id}");
    let err = |key: &str, message: String| {
        let key = if key.is_empty() {
            base.clone()
        } else {
            format!("{base}.{key}")
        };
        ConfigError::new(file, key, message)
    };
    if !is_identifier(id) {
        errors.push(err(
            "",
            format!(
                "task id \"{id}\" is not a valid table name; use letters, digits and _ (not first)"
            ),
        ));
    }
    let toml::Value::Table(mut table) = value else {
        errors.push(err("", "expected a table".into()));
        return None;
    };
    let mut common_table = toml::Table::new();
    for key in COMMON_KEYS {
        if let Some(v) = table.remove(*key) {
            common_table.insert((*key).to_string(), v);
        }
    }
    let common: RawCommon = match deserialize_at(toml::Value::Table(common_table), file, &base) {
        Ok(c) => c,
        Err(e) => {
            errors.push(e);
            RawCommon::default()
        }
    };
    let kinds: Vec<&str> = KINDS
        .iter()
        .copied()
        .filter(|k| table.contains_key(*k))
        .collect();
    let kind_key = match kinds.as_slice() {
        [one] => *one,
        [] => {
            errors.push(err(
                "",
                format!("a task needs exactly one of {}", KINDS.join(", ")),
            ));
            return None;
        }
        many => {
            errors.push(err(
                "",
                format!(
                    "a task has exactly one of {}; this one has {}",
                    KINDS.join(", "),
                    many.join(" and ")
                ),
            ));
            return None;
        }
    };
    let kind_value = match table.get(kind_key) {
        Some(toml::Value::String(s)) => s.clone(),
        _ => {
            errors.push(err(kind_key, "expected a string".into()));
            return None;
        }
    };
    let value = toml::Value::Table(table);
    let before = errors.len();
    let kind = match kind_key {
        "extract" => match kind_value.as_str() {
            "logs" => deserialize_at::<RawLogs>(value, file, &base)
                .map_err(|e| errors.push(e))
                .ok()
                .and_then(|raw| logs(raw, &base, file, errors))
                .map(|l| TaskKind::Extract(Extract::Logs(l))),
            "sql" => deserialize_at::<RawSql>(value, file, &base)
                .map_err(|e| errors.push(e))
                .ok()
                .and_then(|raw| sql_extract(raw, &base, file, job_dir, errors))
                .map(|s| TaskKind::Extract(Extract::Sql(s))),
            other => {
                errors.push(err(
                    "extract",
                    format!("unknown extract \"{other}\"; expected one of logs, sql"),
                ));
                None
            }
        },
        "transform" => deserialize_at::<RawTransform>(value, file, &base)
            .map_err(|e| errors.push(e))
            .ok()
            .and_then(|raw| match sql_text(&raw.transform, job_dir) {
                Ok((sql, sql_file)) => Some(TaskKind::Transform(Transform { sql, sql_file })),
                Err(m) => {
                    errors.push(err("transform", m));
                    None
                }
            }),
        "check" => deserialize_at::<RawCheck>(value, file, &base)
            .map_err(|e| errors.push(e))
            .ok()
            .and_then(|raw| match sql_text(&raw.check, job_dir) {
                Ok((sql, _)) => Some(TaskKind::Check(Check { sql })),
                Err(m) => {
                    errors.push(err("check", m));
                    None
                }
            }),
        "load" => match kind_value.as_str() {
            "parquet" => deserialize_at::<RawParquetLoad>(value, file, &base)
                .map_err(|e| errors.push(e))
                .ok()
                .and_then(|raw| parquet_load(raw, &base, file, errors))
                .map(|p| TaskKind::Load(Load::Parquet(p))),
            "sql" => deserialize_at::<RawSqlLoad>(value, file, &base)
                .map_err(|e| errors.push(e))
                .ok()
                .and_then(|raw| sql_load(raw, &base, file, errors))
                .map(|l| TaskKind::Load(Load::Sql(l))),
            other => {
                errors.push(err(
                    "load",
                    format!("unknown load \"{other}\"; expected one of parquet, sql"),
                ));
                None
            }
        },
        "sensor" => match kind_value.as_str() {
            "object_exists" => deserialize_at::<RawObjectSensor>(value, file, &base)
                .map_err(|e| errors.push(e))
                .ok()
                .and_then(|raw| {
                    let poke_interval = duration_or(
                        raw.poke_interval.as_deref(),
                        Duration::from_secs(60),
                        &format!("{base}.poke_interval"),
                        file,
                        errors,
                    )?;
                    Some(TaskKind::Sensor(Sensor {
                        kind: SensorKind::ObjectExists {
                            url: raw.url,
                            connection: raw.connection,
                        },
                        poke_interval,
                    }))
                }),
            "sql" => deserialize_at::<RawSqlSensor>(value, file, &base)
                .map_err(|e| errors.push(e))
                .ok()
                .and_then(|raw| {
                    let poke_interval = duration_or(
                        raw.poke_interval.as_deref(),
                        Duration::from_secs(60),
                        &format!("{base}.poke_interval"),
                        file,
                        errors,
                    )?;
                    let query = match sql_text(&raw.query, job_dir) {
                        Ok((q, _)) => q,
                        Err(m) => {
                            errors.push(err("query", m));
                            return None;
                        }
                    };
                    Some(TaskKind::Sensor(Sensor {
                        kind: SensorKind::Sql {
                            connection: raw.connection,
                            query,
                        },
                        poke_interval,
                    }))
                }),
            other => {
                errors.push(err(
                    "sensor",
                    format!("unknown sensor \"{other}\"; expected one of object_exists, sql"),
                ));
                None
            }
        },
        _ => unreachable!("kind keys come from KINDS"),
    };
    let retry_delay = duration_or(
        common.retry_delay.as_deref(),
        defaults.retry_delay,
        &format!("{base}.retry_delay"),
        file,
        errors,
    );
    let max_retry_delay = duration_or(
        common.max_retry_delay.as_deref(),
        defaults.max_retry_delay,
        &format!("{base}.max_retry_delay"),
        file,
        errors,
    );
    let timeout = match common.timeout.as_deref() {
        None => Some(defaults.timeout),
        Some(t) => match parse_duration(t) {
            Ok(d) => Some(Some(d)),
            Err(m) => {
                errors.push(err("timeout", m));
                None
            }
        },
    };
    if errors.len() > before {
        return None;
    }
    Some(Task {
        id: id.to_string(),
        kind: kind?,
        depends_on: common.depends_on,
        retries: common.retries.unwrap_or(defaults.retries),
        retry_delay: retry_delay?,
        max_retry_delay: max_retry_delay?,
        timeout: timeout?,
        description: common.description,
    })
}

pub(crate) fn duration_or(
    text: Option<&str>,
    default: Duration,
    key: &str,
    file: &Path,
    errors: &mut Vec<ConfigError>,
) -> Option<Duration> {
    match text {
        None => Some(default),
        Some(t) => parse_duration(t)
            .map_err(|m| errors.push(ConfigError::new(file, key, m)))
            .ok(),
    }
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

/// A `.sql` file name beside the job, or inline SQL.
/// The file a SQL value names (`sql/daily.sql`, beside the job), if it
/// names one rather than holding the SQL itself.
pub(crate) fn sql_file(text: &str, job_dir: &Path) -> Option<std::path::PathBuf> {
    let t = text.trim();
    (t.ends_with(".sql") && !t.contains(char::is_whitespace)).then(|| job_dir.join(t))
}

fn sql_text(text: &str, job_dir: &Path) -> Result<(String, Option<std::path::PathBuf>), String> {
    match sql_file(text, job_dir) {
        Some(path) => {
            let sql = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read SQL file {}: {e}", path.display()))?;
            Ok((sql, Some(path)))
        }
        None => Ok((text.to_string(), None)),
    }
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
                    super::task::FORMATS.join(", ")
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
    })
}

/// Task ids double as SQL table names, so they must be plain identifiers.
pub(crate) fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
