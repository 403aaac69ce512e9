//! Tasks: the validated shape of each `[tasks.<id>]` table. A task is
//! exactly one of extract, transform, load, sensor or check; its table is
//! checked against the keys that kind accepts, so a key meant for another
//! kind is reported instead of silently ignored.

mod extract;
mod load;
mod sensor;
mod transform;

pub use extract::{DEFAULT_SQL_BATCH_SIZE, Extract, LogFormat, LogsExtract, OnError, SqlExtract};
pub use load::{Compression, DEFAULT_ROW_GROUP_SIZE, Load, LoadMode, ParquetLoad, SqlLoad};
pub use sensor::{Sensor, SensorKind};
pub use transform::{Check, Transform};

use super::deserialize_at;
use crate::error::ConfigError;
use crate::units::parse_duration;
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

/// Job-level defaults a task inherits.
#[derive(Debug, Clone)]
pub(crate) struct TaskDefaults {
    pub retries: u32,
    pub retry_delay: Duration,
    pub max_retry_delay: Duration,
    pub timeout: Option<Duration>,
}

const KINDS: &[&str] = &["extract", "transform", "load", "sensor", "check"];

/// Where a task's table is: what the parser of each kind needs to name
/// keys in its errors and find `.sql` files.
pub(super) struct At<'a> {
    /// `tasks.<id>`.
    base: &'a str,
    file: &'a Path,
    job_dir: &'a Path,
}

impl At<'_> {
    /// This task's table as `T`; a bad key goes to `errors`.
    fn read<T: serde::de::DeserializeOwned>(
        &self,
        value: toml::Value,
        errors: &mut Vec<ConfigError>,
    ) -> Option<T> {
        deserialize_at(value, self.file, self.base)
            .map_err(|e| errors.push(e))
            .ok()
    }

    /// An error on `key` of this task (the task itself when empty).
    fn err(&self, key: &str, message: String) -> ConfigError {
        let key = if key.is_empty() {
            self.base.to_string()
        } else {
            format!("{}.{key}", self.base)
        };
        ConfigError::new(self.file, key, message)
    }
}

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
    let at = At {
        base: &base,
        file,
        job_dir,
    };
    let kind = match kind_key {
        "extract" => extract::parse(&kind_value, value, &at, errors),
        "transform" => transform::parse_transform(value, &at, errors),
        "check" => transform::parse_check(value, &at, errors),
        "load" => load::parse(&kind_value, value, &at, errors),
        "sensor" => sensor::parse(&kind_value, value, &at, errors),
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

/// Task ids double as SQL table names, so they must be plain identifiers.
pub(crate) fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
