//! The one way a test waits: poll an observable condition until it holds,
//! and fail naming what was awaited when it does not hold in time. A test
//! never sleeps and then asserts.

use std::{
    fmt::Display,
    time::{Duration, Instant},
};

/// How often a condition is polled.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Polls `condition` until it holds; panics naming `what` after `timeout`.
pub async fn eventually(
    what: impl Display,
    timeout: Duration,
    mut condition: impl AsyncFnMut() -> bool,
) {
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// [`eventually`] for tests without a tokio runtime.
pub fn eventually_blocking(
    what: impl Display,
    timeout: Duration,
    mut condition: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(POLL_INTERVAL);
    }
}
