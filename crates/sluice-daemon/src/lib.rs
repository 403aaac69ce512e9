//! Sluice's control plane, behind `sluice serve`: the state store (SQLite
//! or PostgreSQL), the scheduler that turns cron schedules into DAG runs,
//! and the executor that runs their task instances with retries, timeouts
//! and sensors, surviving restarts without losing or repeating work.

pub mod clock;
pub mod error;
pub mod executor;
pub mod http;
pub mod jobs;
pub mod metrics;
pub mod retry;
pub mod service;
pub mod state;
pub mod task_log;

pub use error::{Error, Result};
