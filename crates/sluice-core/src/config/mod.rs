//! Config files: the daemon config (`sluice.toml`) and job files. Each is
//! read in three steps: TOML is parsed and `${VAR}`s expanded, the tree is
//! deserialized into raw structs (unknown keys are errors), and the raw
//! structs are validated into the types the rest of Sluice uses. Validation
//! is pure and collects every problem it finds.

mod daemon;
mod job;
mod stream;
mod task;
mod types;

pub use daemon::{Connection, DaemonConfig};
pub use job::{Job, JobMode, job_sources, load_job, load_jobs_dir, parse_job};
pub use task::{
    Check, Compression, DEFAULT_ROW_GROUP_SIZE, DEFAULT_SQL_BATCH_SIZE, Extract, Load, LoadMode,
    LogFormat, LogsExtract, OnError, ParquetLoad, Sensor, SensorKind, SqlExtract, SqlLoad, Task,
    TaskKind, Transform,
};
pub use types::ColumnType;

pub use crate::error::ConfigError;
use serde::de::DeserializeOwned;
use std::path::Path;

/// Deserializes `value` into `T`, turning serde's message into one that
/// names the file and the full key path.
pub(crate) fn deserialize_at<T: DeserializeOwned>(
    value: toml::Value,
    file: &Path,
    base: &str,
) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let mut key = base.to_string();
        let inner = err.path().to_string();
        if inner != "." && !inner.is_empty() {
            if !key.is_empty() {
                key.push('.');
            }
            key.push_str(&inner);
        }
        let message = err.inner().to_string();
        if let Some(rest) = message.strip_prefix("unknown field `") {
            let (name, expected) = rest.split_once('`').unwrap_or((rest, ""));
            if !key.ends_with(name) {
                if !key.is_empty() {
                    key.push('.');
                }
                key.push_str(name);
            }
            let expected = expected
                .trim_start_matches(", expected ")
                .trim_start_matches("one of ")
                .replace('`', "");
            return ConfigError::new(
                file,
                key,
                format!("unknown key; expected one of {expected}"),
            );
        }
        ConfigError::new(file, key, message)
    })
}

/// Reads a TOML file and expands `${VAR}`s in it.
pub(crate) fn read_toml(
    text: &str,
    file: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<toml::Value, Vec<ConfigError>> {
    let mut value: toml::Value = text
        .parse::<toml::Table>()
        .map(toml::Value::Table)
        .map_err(|e| {
            let message = e.message().to_string();
            let location = e
                .span()
                .map(|span| {
                    let line = text[..span.start].matches('\n').count() + 1;
                    format!("line {line}: ")
                })
                .unwrap_or_default();
            vec![ConfigError::new(
                file,
                "",
                format!("{location}invalid TOML: {message}"),
            )]
        })?;
    crate::env::interpolate(&mut value, file, env)?;
    Ok(value)
}

/// A name-or-list helper used for lists of strings.
pub(crate) fn one_of(value: &str, allowed: &[&str], what: &str) -> Result<(), String> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "unknown {what} \"{value}\"; expected one of {}",
            allowed.join(", ")
        ))
    }
}
