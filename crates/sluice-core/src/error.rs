//! The core crate's error type. Config problems carry the file and the key
//! path so that a user can go straight to the line to fix.

use std::fmt;
use std::path::PathBuf;

/// A problem in a config or job file, located by file and key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the problem is in (empty for embedded defaults).
    pub file: PathBuf,
    /// Dotted key path, e.g. `tasks.hits.format`; empty for the whole file.
    pub key: String,
    /// What is wrong and, where it helps, what would be valid.
    pub message: String,
}

impl ConfigError {
    pub fn new(
        file: impl Into<PathBuf>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            file: file.into(),
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display();
        match (self.file.as_os_str().is_empty(), self.key.is_empty()) {
            (true, true) => write!(f, "{}", self.message),
            (true, false) => write!(f, "{}: {}", self.key, self.message),
            (false, true) => write!(f, "{file}: {}", self.message),
            (false, false) => write!(f, "{file}: {}: {}", self.key, self.message),
        }
    }
}

/// Errors of the core crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// One or more problems in config files; all of them are reported at once.
    #[error("{}", join_config_errors(.0))]
    Config(Vec<ConfigError>),
    /// A template could not be rendered.
    #[error("{context}: template error: {message}")]
    Template { context: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub fn config(
        file: impl Into<PathBuf>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Error::Config(vec![ConfigError::new(file, key, message)])
    }

    /// The config problems this error carries (empty for other kinds).
    pub fn config_errors(&self) -> &[ConfigError] {
        match self {
            Error::Config(errors) => errors,
            _ => &[],
        }
    }
}

fn join_config_errors(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
