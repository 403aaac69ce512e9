//! The daemon's errors. State store errors name the store by its scheme and
//! host only: the URL may carry a password.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    /// The state store could not be reached or refused a statement.
    #[error("state store {store}: {source}")]
    State {
        store: String,
        #[source]
        source: sqlx::Error,
    },
    /// The state URL is not one the daemon can use.
    #[error("state: {0}")]
    StateUrl(String),
    /// A job or run that the request names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A request that cannot be served as asked.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Engine(#[from] sluice_engine::Error),
    #[error(transparent)]
    Core(#[from] sluice_core::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
