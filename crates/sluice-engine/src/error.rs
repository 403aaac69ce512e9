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
    /// A SQL statement failed to plan or run. Whose fault that is depends
    /// on why (a bad query, or the storage under a table), so the engine's
    /// error is kept.
    #[error("{context}: {source}")]
    Sql {
        context: String,
        #[source]
        source: Box<datafusion::error::DataFusionError>,
    },
    /// The input a task reads is not there (yet): no file matches its
    /// path. Retried, as the file may be on its way.
    #[error("{0}")]
    NoInput(String),
    /// What an upstream task staged for this run is not in the staging
    /// store: it was removed, or written where this process cannot see it
    /// (a `file://` staging folder on another replica's disk). Retried, as
    /// a shared file system may show it late; the daemon adds which
    /// replica wrote it.
    #[error("the output of task \"{task}\" is not in the staging store ({location})")]
    StagedInputMissing { task: String, location: String },
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
    /// The attempt no longer holds its claim (another replica re-ran the
    /// task after this one stopped heart-beating), or the state store
    /// could not say; nothing was published.
    #[error("not published: {0}")]
    Fenced(String),
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
    pub fn sql(context: impl Into<String>, source: datafusion::error::DataFusionError) -> Self {
        Error::Sql {
            context: context.into(),
            source: Box::new(source),
        }
    }

    pub fn store(context: impl Into<String>, source: object_store::Error) -> Self {
        Error::Store {
            context: context.into(),
            source,
        }
    }

    /// Whose problem this is, which decides whether a retry can help.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Config(_) | Error::BadRecord { .. } => ErrorKind::User,
            Error::Sql { source, .. } => datafusion_kind(source),
            Error::Database { retryable, .. } => {
                if *retryable {
                    ErrorKind::External
                } else {
                    ErrorKind::User
                }
            }
            Error::NoInput(_)
            | Error::StagedInputMissing { .. }
            | Error::CheckFailed(_)
            | Error::Store { .. }
            | Error::Io { .. }
            | Error::Timeout(_)
            | Error::Fenced(_) => ErrorKind::External,
            Error::Arrow(e) => arrow_kind(e),
            Error::Parquet(e) => parquet_kind(e),
            Error::DataFusion(e) => datafusion_kind(e),
            Error::Core(e) => match e {
                sluice_core::Error::Config(_) | sluice_core::Error::Template { .. } => {
                    ErrorKind::User
                }
                sluice_core::Error::Io { .. } => ErrorKind::External,
            },
            Error::Internal(_) => ErrorKind::Internal,
        }
    }

    /// Whether the attempt lost its claim (see [`crate::fence`]).
    pub fn is_fenced(&self) -> bool {
        matches!(self, Error::Fenced(_))
    }

    /// The upstream task whose staged output this error says is missing.
    pub fn missing_input(&self) -> Option<&str> {
        match self {
            Error::StagedInputMissing { task, .. } => Some(task),
            _ => None,
        }
    }

    /// Whether retrying the task could help.
    pub fn is_retryable(&self) -> bool {
        self.kind().is_retryable()
    }
}

/// Whose problem a failure is. The daemon retries what can change and
/// fails the rest at once, whatever `retries` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The job or its data: a bad query, template, type or record. The
    /// same input fails the same way again.
    User,
    /// The world outside: the network, a database, object storage, a
    /// timeout, input not there yet, a check on data still arriving.
    External,
    /// A bug in Sluice (a panic, a broken invariant). Retried: it may have
    /// come from a state a new attempt does not meet.
    Internal,
}

impl ErrorKind {
    pub fn is_retryable(self) -> bool {
        !matches!(self, ErrorKind::User)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::User => "user",
            ErrorKind::External => "external",
            ErrorKind::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error from a library underneath, whose own error may carry one of
/// ours or an I/O or storage error.
fn external_kind(e: &(dyn std::error::Error + Send + Sync + 'static)) -> ErrorKind {
    if let Some(ours) = e.downcast_ref::<Error>() {
        ours.kind()
    } else if e.is::<object_store::Error>() || e.is::<std::io::Error>() {
        ErrorKind::External
    } else if let Some(a) = e.downcast_ref::<arrow::error::ArrowError>() {
        arrow_kind(a)
    } else if let Some(p) = e.downcast_ref::<parquet::errors::ParquetError>() {
        parquet_kind(p)
    } else if let Some(d) = e.downcast_ref::<datafusion::error::DataFusionError>() {
        datafusion_kind(d)
    } else {
        ErrorKind::Internal
    }
}

/// Arrow fails on values (casts, overflow, parsing): the data's problem,
/// but for I/O and what it carries from outside.
fn arrow_kind(e: &arrow::error::ArrowError) -> ErrorKind {
    use arrow::error::ArrowError;
    match e {
        ArrowError::IoError(..) => ErrorKind::External,
        ArrowError::ExternalError(inner) => external_kind(inner.as_ref()),
        ArrowError::MemoryError(_) => ErrorKind::External,
        _ => ErrorKind::User,
    }
}

/// The Parquet writer fails on storage (carried as `External`) or on a
/// bug; a reader also on a corrupt file, which is the data's.
fn parquet_kind(e: &parquet::errors::ParquetError) -> ErrorKind {
    use parquet::errors::ParquetError;
    match e {
        ParquetError::External(inner) => external_kind(inner.as_ref()),
        ParquetError::ArrowError(_) => ErrorKind::User,
        ParquetError::EOF(_) | ParquetError::NeedMoreData(_) => ErrorKind::User,
        _ => ErrorKind::Internal,
    }
}

fn datafusion_kind(e: &datafusion::error::DataFusionError) -> ErrorKind {
    use datafusion::error::DataFusionError as D;
    match e {
        D::ArrowError(a, _) => arrow_kind(a),
        D::ParquetError(p) => parquet_kind(p),
        D::ObjectStore(_) | D::IoError(_) | D::ResourcesExhausted(_) => ErrorKind::External,
        D::SQL(..)
        | D::NotImplemented(_)
        | D::Plan(_)
        | D::Configuration(_)
        | D::SchemaError(..)
        | D::Execution(_)
        | D::Substrait(_) => ErrorKind::User,
        D::External(inner) => external_kind(inner.as_ref()),
        D::Context(_, inner) | D::Diagnostic(_, inner) => datafusion_kind(inner),
        D::Shared(inner) => datafusion_kind(inner),
        D::Collection(all) => all.first().map_or(ErrorKind::Internal, datafusion_kind),
        _ => ErrorKind::Internal,
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::error::DataFusionError as D;

    fn store_error() -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: "connection reset".into(),
        }
    }

    #[test]
    fn errors_say_whose_they_are() {
        let user = [
            Error::Config("unknown connection".into()),
            Error::BadRecord {
                file: "a.log".into(),
                line: 3,
                message: "bad".into(),
            },
            Error::sql("transform", D::Plan("no column x".into())),
            Error::sql(
                "transform",
                D::SQL(
                    Box::new(sqlparser::parser::ParserError::ParserError(
                        "near SELEC".into(),
                    )),
                    None,
                ),
            ),
            Error::Database {
                connection: "app".into(),
                message: "syntax error".into(),
                retryable: false,
            },
            Error::Arrow(arrow::error::ArrowError::CastError(
                "'x' is not an int".into(),
            )),
            Error::Core(sluice_core::Error::Template {
                context: "tasks.a.query".into(),
                message: "undefined".into(),
            }),
        ];
        for e in &user {
            assert_eq!(e.kind(), ErrorKind::User, "{e}");
            assert!(!e.is_retryable(), "{e}");
        }
        let external = [
            Error::NoInput("no files match \"x/*.log\"".into()),
            Error::CheckFailed("query returned false".into()),
            Error::store("writing", store_error()),
            Error::Timeout(std::time::Duration::from_secs(1)),
            Error::Database {
                connection: "app".into(),
                message: "connection refused".into(),
                retryable: true,
            },
            // The same, travelling through DataFusion and Parquet.
            Error::sql(
                "registering upstream table t",
                D::ObjectStore(Box::new(store_error())),
            ),
            Error::from(D::External(Box::new(Error::store(
                "reading",
                store_error(),
            )))),
            Error::from(D::Context(
                "in a plan".into(),
                Box::new(D::External(Box::new(Error::NoInput("none".into())))),
            )),
            Error::Parquet(parquet::errors::ParquetError::External(Box::new(
                store_error(),
            ))),
        ];
        for e in &external {
            assert_eq!(e.kind(), ErrorKind::External, "{e}");
            assert!(e.is_retryable(), "{e}");
        }
        let internal = Error::Internal("the PostgreSQL reader panicked".into());
        assert_eq!(internal.kind(), ErrorKind::Internal);
        assert!(internal.is_retryable());
    }
}
