//! `sensor = "object_exists"` and `sensor = "sql"`: conditions a run
//! waits for, poked every `poke_interval`.

use super::{At, TaskKind, duration_or, sql_text};
use crate::error::ConfigError;
use serde::Deserialize;
use std::time::Duration;

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
struct RawObjectSensor {
    // Matched before deserializing; declared so that the key is accepted.
    #[serde(rename = "sensor")]
    _sensor: String,
    url: String,
    connection: Option<String>,
    poke_interval: Option<String>,
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
        "object_exists" => at.read::<RawObjectSensor>(value, errors).and_then(|raw| {
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
        "sql" => at.read::<RawSqlSensor>(value, errors).and_then(|raw| {
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
    }
}
