//! Time as the scheduler sees it. Everything that decides "is it due"
//! reads a [`Clock`], so tests and benchmarks can run schedules faster
//! than the wall clock without sleeping.

use chrono::{DateTime, Utc};

pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The wall clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Microseconds since the Unix epoch: how the state store keeps instants,
/// the same in SQLite and PostgreSQL.
pub fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub fn from_micros(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}
