//! The daemon config, `sluice.toml`. Every key has a default, so Sluice runs
//! with no file at all; `SLUICE_<KEY>` environment variables override keys.

use super::{deserialize_at, read_toml};
use crate::error::{ConfigError, Error, Result};
use crate::units::{parse_duration, parse_size};
use indexmap::IndexMap;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    #[serde(default = "default_jobs")]
    jobs: String,
    #[serde(default = "default_state")]
    state: String,
    #[serde(default = "default_staging")]
    staging: String,
    #[serde(default = "default_dead_letter")]
    dead_letter: String,
    #[serde(default = "default_listen")]
    listen: String,
    #[serde(default = "default_workers")]
    workers: usize,
    #[serde(default = "default_memory_limit")]
    memory_limit: String,
    #[serde(default = "default_shutdown_grace")]
    shutdown_grace: String,
    #[serde(default = "default_state_outage_limit")]
    state_outage_limit: String,
    #[serde(default)]
    api_token: Option<String>,
    #[serde(default)]
    api_read_public: bool,
    #[serde(default)]
    connections: IndexMap<String, RawConnection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConnection {
    url: String,
    #[serde(default)]
    options: IndexMap<String, String>,
}

fn default_jobs() -> String {
    "configs/jobs".into()
}
fn default_state() -> String {
    "sqlite://sluice-state.db".into()
}
fn default_staging() -> String {
    "file://./data/staging".into()
}
fn default_dead_letter() -> String {
    "file://./data/dead_letter".into()
}
fn default_listen() -> String {
    "127.0.0.1:9898".into()
}
fn default_workers() -> usize {
    4
}
fn default_memory_limit() -> String {
    "2GiB".into()
}
fn default_state_outage_limit() -> String {
    "10m".into()
}

fn default_shutdown_grace() -> String {
    "30s".into()
}

/// A named connection: a database or an object store.
#[derive(Clone, PartialEq, Eq)]
pub struct Connection {
    pub name: String,
    /// May hold a password; print it only through [`crate::redact::redact_url`].
    pub url: String,
    /// Store options (endpoint, region, credentials, `allow_http`, …).
    pub options: IndexMap<String, String>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let options: Vec<(&String, &str)> = self
            .options
            .iter()
            .map(|(k, v)| {
                (
                    k,
                    if crate::redact::is_secret_key(k) {
                        "***"
                    } else {
                        v.as_str()
                    },
                )
            })
            .collect();
        f.debug_struct("Connection")
            .field("name", &self.name)
            .field("url", &crate::redact::redact_url(&self.url))
            .field("options", &options)
            .finish()
    }
}

/// The validated daemon config.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// The file it was read from; `None` for the embedded defaults.
    pub file: Option<PathBuf>,
    pub jobs: PathBuf,
    pub state: String,
    pub staging: String,
    pub dead_letter: String,
    pub listen: String,
    pub workers: usize,
    pub memory_limit: u64,
    pub shutdown_grace: Duration,
    /// How long the daemon keeps retrying a state store that fails before
    /// it gives up and exits; running tasks go on meanwhile.
    pub state_outage_limit: Duration,
    pub api_token: Option<String>,
    /// With `api_token` set, whether API reads need no token.
    pub api_read_public: bool,
    pub connections: IndexMap<String, Connection>,
}

/// Keys that `SLUICE_<KEY>` may override, with whether the value is a number.
const OVERRIDABLE: &[(&str, bool)] = &[
    ("jobs", false),
    ("state", false),
    ("staging", false),
    ("dead_letter", false),
    ("listen", false),
    ("workers", true),
    ("memory_limit", false),
    ("shutdown_grace", false),
    ("state_outage_limit", false),
    ("api_token", false),
];

impl DaemonConfig {
    /// What is allowed but likely wrong, for `sluice validate` and the
    /// daemon's start. A PostgreSQL state store serves several replicas,
    /// and a task claimed by one replica reads what another staged: on a
    /// local folder it is not there, unless the folder is a network file
    /// system mounted on every replica (so this is no error).
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let shared_state =
            self.state.starts_with("postgres://") || self.state.starts_with("postgresql://");
        if shared_state && self.staging.starts_with("file://") {
            out.push(format!(
                "{}staging = \"{}\" is a local folder while the state store is PostgreSQL, which several replicas share: a task run by one replica cannot read what another staged unless the folder is a network file system mounted on every replica; use s3://, gs:// or az:// staging",
                self.file
                    .as_ref()
                    .map(|f| format!("{}: ", f.display()))
                    .unwrap_or_default(),
                self.staging
            ));
        }
        out
    }

    /// The embedded defaults, with `SLUICE_*` overrides applied.
    pub fn defaults(env: &dyn Fn(&str) -> Option<String>) -> Result<Self> {
        Self::parse("", Path::new(""), env)
    }

    /// Reads `path`, or the embedded defaults when `path` is `None` and
    /// `./sluice.toml` does not exist.
    pub fn load(path: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> Result<Self> {
        let path = match path {
            Some(p) => Some(p.to_path_buf()),
            None => env("SLUICE_CONFIG").map(PathBuf::from).or_else(|| {
                Path::new("sluice.toml")
                    .exists()
                    .then(|| PathBuf::from("sluice.toml"))
            }),
        };
        match path {
            None => Self::defaults(env),
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
                    path: path.clone(),
                    source,
                })?;
                let mut config = Self::parse(&text, &path, env)?;
                config.file = Some(path);
                Ok(config)
            }
        }
    }

    /// Parses daemon config text; `file` is used in error messages.
    pub fn parse(text: &str, file: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Self> {
        let mut value = read_toml(text, file, env).map_err(Error::Config)?;
        if let toml::Value::Table(table) = &mut value {
            for (key, numeric) in OVERRIDABLE {
                let var = format!("SLUICE_{}", key.to_ascii_uppercase());
                if let Some(v) = env(&var) {
                    let parsed = if *numeric {
                        match v.parse::<i64>() {
                            Ok(n) => toml::Value::Integer(n),
                            Err(_) => {
                                return Err(Error::config(
                                    file,
                                    *key,
                                    format!("{var}=\"{v}\" is not a number"),
                                ));
                            }
                        }
                    } else {
                        toml::Value::String(v)
                    };
                    table.insert((*key).to_string(), parsed);
                }
            }
        }
        let raw: RawDaemon = deserialize_at(value, file, "").map_err(|e| Error::Config(vec![e]))?;
        let mut errors = Vec::new();
        let memory_limit = parse_size(&raw.memory_limit).unwrap_or_else(|m| {
            errors.push(ConfigError::new(file, "memory_limit", m));
            0
        });
        let shutdown_grace = parse_duration(&raw.shutdown_grace).unwrap_or_else(|m| {
            errors.push(ConfigError::new(file, "shutdown_grace", m));
            Duration::ZERO
        });
        let state_outage_limit = parse_duration(&raw.state_outage_limit).unwrap_or_else(|m| {
            errors.push(ConfigError::new(file, "state_outage_limit", m));
            Duration::ZERO
        });
        if raw.workers == 0 {
            errors.push(ConfigError::new(file, "workers", "must be at least 1"));
        }
        for (key, url) in [
            ("state", &raw.state),
            ("staging", &raw.staging),
            ("dead_letter", &raw.dead_letter),
        ] {
            if !url.contains("://") {
                errors.push(ConfigError::new(
                    file,
                    key,
                    format!("\"{url}\" is not a URL; expected e.g. file://./data"),
                ));
            }
        }
        let mut connections = IndexMap::new();
        for (name, c) in raw.connections {
            if !c.url.contains("://") {
                errors.push(ConfigError::new(
                    file,
                    format!("connections.{name}.url"),
                    "not a URL; expected postgres://, mysql://, sqlite://, s3://, gs://, az:// or file://",
                ));
            }
            connections.insert(
                name.clone(),
                Connection {
                    name,
                    url: c.url,
                    options: c.options,
                },
            );
        }
        if !errors.is_empty() {
            return Err(Error::Config(errors));
        }
        Ok(DaemonConfig {
            file: None,
            jobs: PathBuf::from(raw.jobs),
            state: raw.state,
            staging: raw.staging,
            dead_letter: raw.dead_letter,
            listen: raw.listen,
            workers: raw.workers,
            memory_limit,
            shutdown_grace,
            state_outage_limit,
            api_token: raw.api_token.filter(|t| !t.is_empty()),
            api_read_public: raw.api_read_public,
            connections,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn local_staging_beside_a_shared_state_store_is_a_warning() {
        let parse = |text: &str| {
            super::DaemonConfig::parse(text, std::path::Path::new("sluice.toml"), &|_| None)
                .unwrap()
        };
        let w =
            parse("state = \"postgres://h/db\"\nstaging = \"file:///data/staging\"\n").warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("staging = \"file:///data/staging\""),
            "{w:?}"
        );
        assert!(w[0].contains("network file system"), "{w:?}");
        assert_eq!(
            parse("state = \"postgres://h/db\"\nstaging = \"file://./data/staging\"\n")
                .warnings()
                .len(),
            1
        );
        assert!(
            parse("state = \"postgres://h/db\"\nstaging = \"s3://b/staging\"\n")
                .warnings()
                .is_empty()
        );
        assert!(
            parse("state = \"sqlite://s.db\"\nstaging = \"file:///data/staging\"\n")
                .warnings()
                .is_empty()
        );
    }

    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn defaults_need_no_file() {
        let c = DaemonConfig::defaults(&no_env).unwrap();
        assert_eq!(c.jobs, PathBuf::from("configs/jobs"));
        assert_eq!(c.state, "sqlite://sluice-state.db");
        assert_eq!(c.workers, 4);
        assert_eq!(c.memory_limit, 2 << 30);
    }

    #[test]
    fn environment_overrides_keys() {
        let env = |k: &str| match k {
            "SLUICE_WORKERS" => Some("8".to_string()),
            "SLUICE_STAGING" => Some("s3://stage".to_string()),
            _ => None,
        };
        let c = DaemonConfig::parse("workers = 2", Path::new("s.toml"), &env).unwrap();
        assert_eq!(c.workers, 8);
        assert_eq!(c.staging, "s3://stage");
    }

    #[test]
    fn unknown_key_is_named() {
        let err = DaemonConfig::parse("wokers = 2", Path::new("sluice.toml"), &no_env).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("sluice.toml: wokers: unknown key; expected one of jobs, state"),
            "{msg}"
        );
    }

    #[test]
    fn debug_hides_passwords() {
        let env = |k: &str| (k == "PW").then(|| "hunter2".to_string());
        let c = DaemonConfig::parse(
            "[connections.db]\nurl = \"postgres://u:${PW}@h/d\"\noptions = { secret_access_key = \"${PW}\" }\n",
            Path::new("s.toml"),
            &env,
        )
        .unwrap();
        assert_eq!(c.connections["db"].url, "postgres://u:hunter2@h/d");
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
