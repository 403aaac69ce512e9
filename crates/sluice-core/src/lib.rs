//! Sluice's light core: everything about a job that can be known without
//! touching data — the config files, the DAG they describe, schedules and
//! templating. It deliberately does not depend on DataFusion, sqlx or
//! object_store so that tools which only reason about jobs build fast.

pub mod config;
pub mod dag;
pub mod env;
pub mod error;
pub mod redact;
pub mod schedule;
pub mod sql_refs;
pub mod template;
pub mod units;

pub use error::{ConfigError, Error, Result};
