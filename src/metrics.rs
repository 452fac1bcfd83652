//! Prometheus metrics: one recorder per process, installed by the binary,
//! rendered as Prometheus text on `/metrics` (the HTTP port where there is
//! one, or `--metrics-addr` for gRPC-only services). Libraries record with
//! the `metrics` crate's macros and never know where the numbers go; before
//! [`install`] is called those macros cost next to nothing.
//!
//! Names follow `vesper_<component>_<thing>_<unit>`: the component is a
//! service (`storage`, `ingest`, `batch`, `datasource`) or a layer every
//! service shares (`grpc`, recorded by [`crate::grpc`] for every server;
//! `http`, recorded by the gateway); counters end in `_total`, durations
//! are histograms in `_seconds`, sizes are in `_bytes`.
//! docs/observability.md lists every series.

use std::{
    future::Future,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{Router, routing::get};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

/// Latency buckets (seconds): sub-millisecond hops to the upstream's 10 s
/// stalls.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// How often the recorder folds recorded histogram samples into its
/// buckets. Samples wait in memory until then (or until a scrape), so this
/// bounds what a process holds while nobody scrapes `/metrics`.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Installs the process-wide Prometheus recorder (once; later calls return
/// the same handle) and returns the handle that renders it. Its upkeep
/// runs every [`UPKEEP_INTERVAL`] on a thread of its own.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .map(PrometheusBuilder::build_recorder);
            match recorder {
                Ok(recorder) => {
                    let handle = recorder.handle();
                    spawn_upkeep(handle.clone(), UPKEEP_INTERVAL);
                    if metrics::set_global_recorder(recorder).is_err() {
                        tracing::warn!(
                            "another metrics recorder is installed; /metrics stays empty"
                        );
                    }
                    handle
                }
                // Only an empty bucket list fails, and ours is not empty.
                Err(err) => {
                    tracing::warn!("cannot configure metric buckets ({err}); using defaults");
                    let recorder = PrometheusBuilder::new().build_recorder();
                    let handle = recorder.handle();
                    spawn_upkeep(handle.clone(), UPKEEP_INTERVAL);
                    let _ = metrics::set_global_recorder(recorder);
                    handle
                }
            }
        })
        .clone()
}

/// Runs the recorder's upkeep every `interval`, for the life of the
/// process: without it every histogram sample stays in memory until a
/// scrape drains it. A plain thread, so that it runs whatever runtime the
/// process has (or none). Returns the number of upkeeps done so far.
pub fn spawn_upkeep(handle: PrometheusHandle, interval: Duration) -> Arc<AtomicU64> {
    let done = Arc::new(AtomicU64::new(0));
    let counter = done.clone();
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(interval);
                handle.run_upkeep();
                counter.fetch_add(1, Ordering::Release);
            }
        });
    if let Err(err) = spawned {
        tracing::warn!("cannot start the metrics upkeep ({err}); histograms grow until scraped");
    }
    done
}

/// `GET /metrics` in the Prometheus text format.
pub fn router(handle: PrometheusHandle) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            async move {
                (
                    [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    handle.render(),
                )
            }
        }),
    )
}

/// Serves `/metrics` alone on `listener` (a gRPC-only service's
/// `--metrics-addr`), over TLS when the process serves TLS, until
/// `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    match crate::tls::ServerTls::current() {
        Some(tls) => {
            axum::serve(crate::tls::TlsListener::new(tls, listener)?, router(handle))
                .with_graceful_shutdown(shutdown)
                .await
        }
        None => {
            axum::serve(listener, router(handle))
                .with_graceful_shutdown(shutdown)
                .await
        }
    }
}

/// The `--metrics-addr` option of services that serve no HTTP of their own.
#[derive(Debug, Clone, clap::Args)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics on http://ADDR/metrics (off when unset;
    /// https:// when the process serves TLS).
    #[arg(long, env = "VESPER_METRICS_ADDR", value_name = "HOST:PORT")]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

impl MetricsArgs {
    /// Starts the metrics endpoint when one was asked for; it stops with
    /// `shutdown`. Fails only when the address cannot be bound.
    pub async fn spawn(
        &self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<Option<std::net::SocketAddr>> {
        let Some(addr) = self.metrics_addr else {
            return Ok(None);
        };
        let handle = install();
        let listener = crate::config::bind(addr).await?;
        let bound = listener.local_addr()?;
        tokio::spawn(async move {
            if let Err(err) = serve(listener, handle, shutdown).await {
                tracing::warn!("metrics endpoint stopped: {err}");
            }
        });
        let scheme = if crate::tls::ServerTls::current().is_some() {
            "https"
        } else {
            "http"
        };
        tracing::info!("serving metrics={scheme}://{bound}/metrics");
        Ok(Some(bound))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The process's resident memory, in bytes, from /proc (Linux).
    fn resident_bytes() -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// Blocks until the upkeep thread has run at least once more.
    fn wait_for_upkeep(done: &AtomicU64) {
        let seen = done.load(Ordering::Acquire);
        while done.load(Ordering::Acquire) <= seen + 1 {
            std::thread::yield_now();
        }
    }

    #[test]
    fn histograms_stay_bounded_while_nobody_scrapes() {
        const ROUNDS: u64 = 40;
        const SAMPLES_PER_ROUND: u64 = 250_000;
        // Unscraped and without upkeep, every sample is kept: 10 million
        // samples hold at least 80 MB.
        const BOUND: u64 = 32 * 1024 * 1024;
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .map(PrometheusBuilder::build_recorder)
            .expect("buckets");
        let handle = recorder.handle();
        let done = spawn_upkeep(handle.clone(), Duration::from_millis(20));
        let histogram = metrics::with_local_recorder(
            &recorder,
            || metrics::histogram!("vesper_test_duration_seconds", "rpc" => "x"),
        );
        // One round first, so allocator arenas and the upkeep's own working
        // memory are counted in the baseline.
        for sample in 0..SAMPLES_PER_ROUND {
            histogram.record((sample % 100) as f64 / 1000.0);
        }
        wait_for_upkeep(&done);
        let Some(before) = resident_bytes() else {
            return; // Not Linux: nothing to measure.
        };
        for _ in 1..ROUNDS {
            for sample in 0..SAMPLES_PER_ROUND {
                histogram.record((sample % 100) as f64 / 1000.0);
            }
            wait_for_upkeep(&done);
        }
        let after = resident_bytes().expect("VmRSS");
        let grown = after.saturating_sub(before);
        assert!(
            grown < BOUND,
            "resident memory grew by {grown} bytes over {} samples",
            ROUNDS * SAMPLES_PER_ROUND
        );
        // The samples were folded into buckets, not dropped. (A sample
        // recorded at the very moment an upkeep drains the same block can
        // be missed: the exporter's buckets are lock-free and do not
        // promise it; so the count is checked against a floor.)
        let rendered = handle.render();
        let counted: u64 = rendered
            .lines()
            .find_map(|line| line.strip_prefix("vesper_test_duration_seconds_count{rpc=\"x\"} "))
            .and_then(|count| count.parse().ok())
            .expect("a count line");
        let recorded = ROUNDS * SAMPLES_PER_ROUND;
        assert!(
            counted <= recorded && counted >= recorded * 9 / 10,
            "{counted} of {recorded} samples counted"
        );
    }
}
