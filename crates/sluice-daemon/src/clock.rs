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

/// The instant `d` after `at`, as microseconds. Durations come from job
/// files; a sum past what an instant holds saturates at the far future
/// ("never") instead of wrapping round to the past ("at once").
pub fn micros_after(at_micros: i64, d: std::time::Duration) -> i64 {
    at_micros.saturating_add(i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// `at` plus `d`, saturating like [`micros_after`].
pub fn after(at: DateTime<Utc>, d: std::time::Duration) -> DateTime<Utc> {
    chrono::TimeDelta::from_std(d)
        .ok()
        .and_then(|delta| at.checked_add_signed(delta))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations_from_config_saturate_instead_of_wrapping() {
        let now = Utc::now();
        let huge = Duration::from_secs(u64::MAX);
        assert_eq!(after(now, huge), DateTime::<Utc>::MAX_UTC);
        assert!(after(now, Duration::from_secs(86_400 * 365 * 10_000)) > now);
        assert_eq!(micros_after(micros(now), huge), i64::MAX);
        assert_eq!(
            micros_after(micros(now), Duration::from_secs(2)),
            micros(now) + 2_000_000
        );
        assert_eq!(
            after(now, Duration::from_secs(2)),
            now + chrono::Duration::seconds(2)
        );
    }
}
