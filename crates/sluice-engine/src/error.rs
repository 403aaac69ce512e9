//! The data plane's error type. Variants say whose problem a failure is:
//! the user's (config, SQL, bad data: retrying will not help), the outside
//! world's (storage, network: worth a retry), or ours.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A config problem found at run time (a bad URL, an unknown connection).
    #[error("{0}")]
    Config(String),
    /// A record that could not be parsed, with `on_error = "fail"`.
    #[error("{file}:{line}: {message}")]
    BadRecord {
        file: String,
        line: u64,
        message: String,
    },
    /// A database connection or query failed. The message never holds the
    /// connection's password.
    #[error("connection {connection}: {message}")]
    Database {
        connection: String,
        message: String,
        retryable: bool,
    },
    /// A SQL statement failed to plan or run.
    #[error("{context}: {message}")]
    Sql { context: String, message: String },
    /// A `check` task's assertion did not hold.
    #[error("check failed: {0}")]
    CheckFailed(String),
    /// Object storage failed.
    #[error("{context}: {source}")]
    Store {
        context: String,
        #[source]
        source: object_store::Error,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("{0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("{0}")]
    DataFusion(Box<datafusion::error::DataFusionError>),
    #[error(transparent)]
    Core(#[from] sluice_core::Error),
    /// The task ran past its timeout and was cancelled.
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// A bug: a broken invariant or a panicked worker.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<datafusion::error::DataFusionError> for Error {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        // A source or sink error travelling through DataFusion keeps its meaning.
        match e {
            datafusion::error::DataFusionError::External(inner) => {
                match inner.downcast::<Error>() {
                    Ok(ours) => *ours,
                    Err(other) => Error::DataFusion(Box::new(
                        datafusion::error::DataFusionError::External(other),
                    )),
                }
            }
            other => Error::DataFusion(Box::new(other)),
        }
    }
}

impl From<Error> for datafusion::error::DataFusionError {
    fn from(e: Error) -> Self {
        datafusion::error::DataFusionError::External(Box::new(e))
    }
}

impl Error {
    pub fn store(context: impl Into<String>, source: object_store::Error) -> Self {
        Error::Store {
            context: context.into(),
            source,
        }
    }

    /// Whether retrying the task could help.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Store { .. }
                | Error::Io { .. }
                | Error::Timeout(_)
                | Error::Database {
                    retryable: true,
                    ..
                }
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
