//! Capped exponential backoff with full jitter, the one retry schedule
//! every retrying loop uses (ingest's flushes, the batch engine's
//! requests): the bound doubles with each failure up to a cap, and the wait
//! is a uniform draw below the bound, so that many clients retrying a
//! recovered peer do not arrive together.

use std::time::Duration;

use rand::Rng;

/// The bound after `failures` failures in a row (1 for the first):
/// `initial` doubled `failures - 1` times, never above `max`.
pub fn backoff_bound(initial: Duration, max: Duration, failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(31);
    initial.saturating_mul(1 << exponent).min(max)
}

/// A uniformly random wait from zero up to `bound` ("full jitter").
pub fn full_jitter(bound: Duration) -> Duration {
    let nanos = u64::try_from(bound.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rand::rng().random_range(0..=nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_doubles_up_to_the_cap_and_the_wait_stays_below_it() {
        let (initial, max) = (Duration::from_millis(100), Duration::from_secs(1));
        let bounds: Vec<_> = (1..=6)
            .map(|failures| backoff_bound(initial, max, failures).as_millis())
            .collect();
        assert_eq!(bounds, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff_bound(initial, max, u32::MAX), max);
        assert_eq!(backoff_bound(initial, max, 0), initial);
        for _ in 0..100 {
            assert!(full_jitter(Duration::from_millis(50)) <= Duration::from_millis(50));
        }
    }
}
