//! The HTTP front of vesper: the old system's public faces (the data
//! server's REST API and the webhook), each call translated to gRPC on the
//! services behind it. The gateway holds no data of its own; it starts
//! while its peers are down, answers 503 on the routes that need them, and
//! recovers by itself when they come back.
//!
//! Every route is bounded (docs/limits.md): header and body timeouts, a
//! connection cap, an in-flight cap answered with 503 and `Retry-After`,
//! and cross-site browser requests refused. With a tokens file, the REST
//! and control routes need a bearer token with their right and the webhook
//! a token with `events:write` or a valid signature (docs/security.md). The webhook's contract and
//! statuses are in docs/ingest.md, the REST API in docs/rest-api.md.

mod auth;
mod config;
mod error;
mod guard;
mod health;
mod observe;
mod peers;
mod rest;
mod server;
mod webhook;

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{Router, routing::get};
use http::{HeaderName, StatusCode};
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::{
    compression::CompressionLayer,
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    timeout::{RequestBodyTimeoutLayer, TimeoutLayer},
    trace::TraceLayer,
};

pub use config::{
    AllowedOrigin, DEFAULT_BODY_LIMIT, DEFAULT_BODY_READ_TIMEOUT, DEFAULT_HEADER_READ_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_IN_FLIGHT_REQUESTS,
    DEFAULT_REQUEST_TIMEOUT, DEFAULT_SIGNATURE_TOLERANCE, GatewayArgs, GatewayConfig,
    GatewayLimits, ServerLimits, WebhookSigning,
};
pub use error::GatewayError;
pub use peers::Peers;
// The signing primitives live in the kernel (the generator signs too);
// re-exported here for clients of the webhook.
pub use vesper::signature::{SIGNATURE_HEADER, WEBHOOK_SECRET_ENV, WebhookSecret, sign_webhook};

/// The header that carries a request's id, set when the client sent none.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    peers: Peers,
    config: Arc<GatewayConfig>,
    /// Events of webhook batches refused as invalid here, which therefore
    /// never reach ingest's own count.
    webhook_rejected: Arc<AtomicU64>,
}

impl AppState {
    /// State for `config`, with lazily connected peers.
    pub fn new(config: GatewayConfig) -> Self {
        Self {
            peers: Peers::connect_lazy(&config),
            config: Arc::new(config),
            webhook_rejected: Arc::default(),
        }
    }

    /// Counts the events of a webhook batch refused as invalid.
    pub(crate) fn count_webhook_rejected(&self, events: u64) {
        self.webhook_rejected.fetch_add(events, Ordering::Relaxed);
        // The same series ingest counts its gRPC rejections in: webhook
        // rejections never reach ingest, so summing never counts twice.
        metrics::counter!("vesper_ingest_events_total", "outcome" => "rejected").increment(events);
    }

    /// Events of webhook batches refused as invalid since start.
    pub(crate) fn webhook_rejected(&self) -> u64 {
        self.webhook_rejected.load(Ordering::Relaxed)
    }

    /// The gRPC peers.
    pub fn peers(&self) -> &Peers {
        &self.peers
    }

    /// The configuration.
    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }
}

/// The gateway's routes with the tower-http stack every request goes
/// through: request ids, a span per request, the in-flight limit, a
/// timeout, a body read timeout, the cross-site check and compression.
/// `/metrics` serves the process's Prometheus metrics (the recorder is
/// installed here if the binary has not done it yet).
pub fn router(config: GatewayConfig) -> Router {
    let timeout = config.request_timeout;
    let body_read_timeout = config.body_read_timeout;
    let in_flight = guard::InFlight::new(config.max_in_flight_requests);
    let allowed_origins: Arc<[AllowedOrigin]> = config.allowed_origins.clone().into();
    let tokens = config.auth.clone();
    let state = AppState::new(config);
    let routes = Router::new()
        .route("/health", get(health::health))
        .merge(rest::routes(tokens))
        .merge(webhook::routes())
        .route_layer(axum::middleware::from_fn(observe::record_http_metrics))
        .with_state(state)
        .merge(vesper::metrics::router(vesper::metrics::install()))
        .layer(axum::middleware::from_fn_with_state(
            allowed_origins,
            guard::refuse_cross_site,
        ));
    with_middleware(routes, timeout, body_read_timeout, in_flight)
}

fn with_middleware(
    router: Router,
    timeout: Duration,
    body_read_timeout: Duration,
    in_flight: guard::InFlight,
) -> Router {
    router.layer(
        ServiceBuilder::new()
            .layer(SetRequestIdLayer::new(REQUEST_ID_HEADER, MakeRequestUuid))
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(observe::request_span)
                    .on_response(observe::record_response),
            )
            .layer(PropagateRequestIdLayer::new(REQUEST_ID_HEADER))
            .layer(axum::middleware::from_fn_with_state(
                in_flight,
                guard::shed_over_limit,
            ))
            .layer(TimeoutLayer::with_status_code(
                StatusCode::GATEWAY_TIMEOUT,
                timeout,
            ))
            .layer(RequestBodyTimeoutLayer::new(body_read_timeout))
            .layer(CompressionLayer::new()),
    )
}

/// Serves `router` on an already-bound listener, within the default
/// connection limits and with the process's TLS
/// ([`vesper::tls::ServerTls::current`]), until `shutdown` completes, then
/// lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, router, &ServerLimits::default(), shutdown).await
}

/// [`serve`] within `limits` (header read and idle timeouts, connection
/// cap).
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    limits: &ServerLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let tls = vesper::tls::ServerTls::current();
    server::serve(listener, router, limits, tls, shutdown).await
}

/// [`serve_with`] with `tls` (plaintext with `None`) instead of the
/// process's TLS.
pub async fn serve_with_tls(
    listener: TcpListener,
    router: Router,
    limits: &ServerLimits,
    tls: Option<Arc<vesper::tls::ServerTls>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    server::serve(listener, router, limits, tls, shutdown).await
}
