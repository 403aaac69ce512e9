//! `transform` (SQL over upstream tasks) and `check` (an assertion that
//! must hold before downstream tasks run).

use super::{At, TaskKind, sql_text};
use crate::error::ConfigError;
use serde::Deserialize;

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

pub(super) fn parse_transform(
    value: toml::Value,
    at: &At<'_>,
    errors: &mut Vec<ConfigError>,
) -> Option<TaskKind> {
    let job_dir = at.job_dir;
    let err = |key: &str, message: String| at.err(key, message);
    at.read::<RawTransform>(value, errors)
        .and_then(|raw| match sql_text(&raw.transform, job_dir) {
            Ok((sql, sql_file)) => Some(TaskKind::Transform(Transform { sql, sql_file })),
            Err(m) => {
                errors.push(err("transform", m));
                None
            }
        })
}

pub(super) fn parse_check(
    value: toml::Value,
    at: &At<'_>,
    errors: &mut Vec<ConfigError>,
) -> Option<TaskKind> {
    let job_dir = at.job_dir;
    let err = |key: &str, message: String| at.err(key, message);
    at.read::<RawCheck>(value, errors)
        .and_then(|raw| match sql_text(&raw.check, job_dir) {
            Ok((sql, _)) => Some(TaskKind::Check(Check { sql })),
            Err(m) => {
                errors.push(err("check", m));
                None
            }
        })
}
