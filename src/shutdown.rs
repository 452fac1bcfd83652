//! The shutdown signal servers take as a future.
//!
//! One [`Shutdown`] is created per process and cloned into every server and
//! background task. SIGINT or SIGTERM triggers it once: servers stop
//! accepting, buffers flush, the process exits 0. A second signal while that
//! is under way exits at once (data already acknowledged is in the WAL and
//! replays on the next start).

use std::future::Future;

use tokio_util::sync::CancellationToken;

/// Exit status of a process that was told twice to stop (128 + SIGINT).
pub const FORCED_EXIT_CODE: i32 = 130;

/// A cloneable handle on the process-wide "stop now" event.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    /// A shutdown that only [`Shutdown::trigger`] sets off (tests, embedding).
    pub fn new() -> Self {
        Self::default()
    }

    /// A shutdown that SIGINT (Ctrl-C) or SIGTERM sets off. Must be called
    /// inside a tokio runtime.
    pub fn on_signals() -> Self {
        let shutdown = Self::new();
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            let first = wait_for_signal().await;
            tracing::info!(
                signal = first,
                "shutting down: finishing in-flight work and flushing"
            );
            trigger.trigger();
            let second = wait_for_signal().await;
            tracing::warn!(
                signal = second,
                "second signal: exiting now; acknowledged events stay in the WAL and replay on next start"
            );
            std::process::exit(FORCED_EXIT_CODE);
        });
        shutdown
    }

    /// Sets the shutdown off. Idempotent.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// Whether the shutdown has been set off.
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// A future that completes once the shutdown is set off; what servers
    /// take as their stop signal.
    pub fn signalled(&self) -> impl Future<Output = ()> + Send + 'static {
        self.token.clone().cancelled_owned()
    }

    /// A child handle: triggered with its parent, or on its own without
    /// stopping the parent (one service of several in a process).
    pub fn child(&self) -> Self {
        Self {
            token: self.token.child_token(),
        }
    }
}

#[cfg(unix)]
async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the process with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = interrupt.recv() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() -> &'static str {
    if tokio::signal::ctrl_c().await.is_err() {
        return std::future::pending().await;
    }
    "Ctrl-C"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn signalled_completes_after_trigger_on_every_clone() {
        let shutdown = Shutdown::new();
        let waiter = tokio::spawn(shutdown.clone().signalled());
        assert!(!shutdown.is_triggered());
        shutdown.trigger();
        waiter.await.expect("waiter task");
        assert!(shutdown.clone().is_triggered());
    }

    #[tokio::test]
    async fn a_child_stops_alone_but_follows_its_parent() {
        let parent = Shutdown::new();
        let lone = parent.child();
        lone.trigger();
        assert!(!parent.is_triggered());
        let follower = parent.child();
        parent.trigger();
        follower.signalled().await;
    }
}
