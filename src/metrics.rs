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
//! are histograms in `_seconds`, sizes are in `_bytes`. The README lists
//! every series.

use std::{future::Future, sync::OnceLock};

use axum::{Router, routing::get};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

/// Latency buckets (seconds): sub-millisecond hops to the upstream's 10 s
/// stalls.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Installs the process-wide Prometheus recorder (once; later calls return
/// the same handle) and returns the handle that renders it.
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
                    let _ = metrics::set_global_recorder(recorder);
                    handle
                }
            }
        })
        .clone()
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
/// `--metrics-addr`) until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(handle))
        .with_graceful_shutdown(shutdown)
        .await
}

/// The `--metrics-addr` option of services that serve no HTTP of their own.
#[derive(Debug, Clone, clap::Args)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics on http://ADDR/metrics (off when unset).
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
        tracing::info!("serving metrics=http://{bound}/metrics");
        Ok(Some(bound))
    }
}
