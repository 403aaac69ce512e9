//! Retry delays: exponential backoff with jitter, capped.

use std::time::Duration;

/// The wait before the attempt that follows the `failures`-th failure:
/// `base` doubled for each failure after the first, capped at `max`, then
/// scaled by a random factor in [0.75, 1.0] so that tasks failing together
/// do not retry in lockstep. The jitter never lets a delay drop below the
/// one before it (0.75 × 2 > 1), so delays grow until the cap.
pub fn retry_delay(base: Duration, max: Duration, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(30);
    let raw = base.saturating_mul(1u32 << doublings).min(max);
    raw.mul_f64(0.75 + 0.25 * fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_with_jitter_until_the_cap() {
        let base = Duration::from_secs(10);
        let max = Duration::from_secs(60);
        for _ in 0..100 {
            let d: Vec<Duration> = (1..=5).map(|f| retry_delay(base, max, f)).collect();
            assert!(d[0] >= Duration::from_millis(7500) && d[0] <= base);
            assert!(d[1] > d[0] && d[2] > d[1], "{d:?}");
            assert!(d[3] <= max && d[4] >= max.mul_f64(0.75));
        }
        assert_eq!(retry_delay(Duration::ZERO, max, 3), Duration::ZERO);
    }
}
