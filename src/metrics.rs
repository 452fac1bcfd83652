//! Prometheus metrics: one recorder per process, installed by the binary,
//! rendered as Prometheus text on `/metrics` (the HTTP port where there is
//! one, or `--metrics-addr` for gRPC-only services). Libraries record with
//! the `metrics` crate's macros and never know where the numbers go; before
//! [`install`] is called those macros cost next to nothing.
//!
//! Shared series recorded here: `vesper_grpc_requests_total{rpc,code}` and
//! `vesper_grpc_request_duration_seconds{rpc}` for every gRPC server (see
//! [`GrpcMetricsLayer`]); HTTP series are recorded by the gateway.

use std::{
    future::Future,
    pin::Pin,
    sync::OnceLock,
    task::{Context, Poll},
    time::Instant,
};

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

/// A tower layer for gRPC servers that counts calls by rpc and status code
/// and times them.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcMetricsLayer;

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics { inner }
    }
}

/// The service [`GrpcMetricsLayer`] wraps around a gRPC server.
#[derive(Debug, Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
}

impl<S, B, R> tower::Service<http::Request<B>> for GrpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let rpc = request.uri().path().trim_start_matches('/').to_owned();
        let started = Instant::now();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            // Errors travel in the headers of trailers-only responses; a
            // response without grpc-status there is a success whose status
            // comes in the trailers (tonic only sends OK that way).
            let code = match &response {
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|code| code.to_str().ok())
                    .and_then(|code| code.parse::<i32>().ok())
                    .map_or("Ok", |code| code_name(tonic::Code::from_i32(code))),
                Err(_) => "Unavailable",
            };
            metrics::counter!("vesper_grpc_requests_total", "rpc" => rpc.clone(), "code" => code)
                .increment(1);
            metrics::histogram!("vesper_grpc_request_duration_seconds", "rpc" => rpc)
                .record(started.elapsed().as_secs_f64());
            response
        })
    }
}

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "Ok",
        Code::Cancelled => "Cancelled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
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
