//! gRPC scaffolding shared by every server and client: each server offers
//! `grpc.health.v1` and reflection (v1, and v1alpha for grpcurl 1.8), a
//! span and metrics per call, and a graceful stop; each client connects
//! lazily, so a service starts while its peers are still down, and makes a
//! client span per call whose W3C trace context travels in the call's
//! metadata.
//!
//! Spans follow OpenTelemetry's RPC conventions: named after the method
//! (`vesper.v1.Storage/PutObject`), with `rpc.system`, `rpc.service`,
//! `rpc.method` and `rpc.grpc.status_code`, `otel.kind` server or client,
//! and `otel.status_code = "ERROR"` on failure (on a server, only for the
//! codes that mean the server failed: UNKNOWN, DEADLINE_EXCEEDED,
//! UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS). Calls to
//! `grpc.health.v1.Health` get no server span (they are counted).
//!
//! Every server records `vesper_grpc_requests_total{rpc,code}` and
//! `vesper_grpc_request_duration_seconds{rpc}`; `code` is the gRPC name of
//! the status (`OK`, `NOT_FOUND`, ...).

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use tokio::net::TcpListener;
use tonic::{
    Code,
    body::Body,
    server::NamedService,
    service::RoutesBuilder,
    transport::{Channel, Endpoint, Server, server::TcpIncoming},
};
use tonic_health::ServingStatus;
use tracing::Instrument;

use crate::{FILE_DESCRIPTOR_SET, config::PeerAddr};

/// Bytes a gRPC message may carry beyond its payload (field tags, lengths,
/// the other fields). Services that carry large payloads add this to their
/// payload limit when they raise tonic's 4 MiB default.
pub const MESSAGE_OVERHEAD: usize = 64 * 1024;

/// gRPC metadata key through which a service that answers UNAVAILABLE
/// suggests how many whole seconds to wait; the gateway turns it into an
/// HTTP `Retry-After`.
pub const RETRY_AFTER_METADATA: &str = "retry-after";

/// Failure to run a gRPC server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The contracts' descriptor set could not be loaded for reflection (a
    /// build problem).
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The server stopped on a transport error.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// The gRPC services one listener serves.
#[derive(Debug, Default)]
pub struct GrpcServices {
    routes: RoutesBuilder,
    names: Vec<&'static str>,
}

impl GrpcServices {
    /// No services yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a generated tonic server.
    pub fn with<S>(mut self, service: S) -> Self
    where
        S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.names.push(S::NAME);
        self.routes.add_service(service);
        self
    }

    /// The fully qualified names of the services added so far.
    pub fn names(&self) -> &[&'static str] {
        &self.names
    }

    /// Serves the services, plus health and reflection, on an already-bound
    /// listener until `shutdown` completes; then reports NOT_SERVING, lets
    /// in-flight calls finish and returns.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let Self { mut routes, names } = self;
        let (health, health_service) = tonic_health::server::health_reporter();
        for name in &names {
            health
                .set_service_status(name, ServingStatus::Serving)
                .await;
        }
        routes
            .add_service(health_service)
            .add_service(reflection(&names).build_v1()?)
            .add_service(reflection(&names).build_v1alpha()?);

        let stop = async move {
            shutdown.await;
            health
                .set_service_status("", ServingStatus::NotServing)
                .await;
            for name in &names {
                health
                    .set_service_status(name, ServingStatus::NotServing)
                    .await;
            }
        };
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        Server::builder()
            .layer(ObservedLayer)
            .add_routes(routes.routes())
            .serve_with_incoming_shutdown(incoming, stop)
            .await?;
        Ok(())
    }
}

fn reflection(names: &[&'static str]) -> tonic_reflection::server::Builder<'static> {
    let mut builder = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name(HEALTH_SERVICE);
    for name in names {
        builder = builder.with_service_name(*name);
    }
    builder
}

const HEALTH_SERVICE: &str = "grpc.health.v1.Health";

/// A channel to a peer that connects on first use and reconnects after a
/// failure, so that callers see UNAVAILABLE while the peer is down and
/// success as soon as it is back. Every call gets a client span, child of
/// the span it is made in, whose W3C trace context travels in the call's
/// metadata.
pub fn connect_lazy(peer: &PeerAddr) -> TracedChannel {
    let channel = Endpoint::from(peer.uri().clone())
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .connect_lazy();
    TracedChannel::new(channel, peer)
}

/// A channel to a peer whose calls are traced: a client span per call,
/// its context injected into the call's metadata (`traceparent`,
/// `tracestate`), its status recorded when the answer comes.
#[derive(Debug, Clone)]
pub struct TracedChannel {
    inner: Channel,
    address: Arc<str>,
    port: u16,
}

impl TracedChannel {
    /// Traces the calls made on `channel`, a channel to `peer`.
    pub fn new(channel: Channel, peer: &PeerAddr) -> Self {
        let uri = peer.uri();
        Self {
            inner: channel,
            address: Arc::from(uri.host().unwrap_or_default()),
            port: uri.port_u16().unwrap_or_default(),
        }
    }
}

impl tower::Service<http::Request<Body>> for TracedChannel {
    type Response = http::Response<Body>;
    type Error = tonic::transport::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let rpc = Rpc::of(request.uri().path());
        let span = tracing::info_span!(
            "grpc.client",
            otel.name = rpc.full,
            otel.kind = "client",
            rpc.system = "grpc",
            rpc.service = rpc.service,
            rpc.method = rpc.method,
            server.address = &*self.address,
            server.port = i64::from(self.port),
            rpc.grpc.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            otel.status_description = tracing::field::Empty,
        );
        crate::telemetry::inject_context(&span, request.headers_mut());
        let response = self.inner.call(request);
        let recorded = span.clone();
        Box::pin(
            async move {
                let response = response.await;
                let status = match &response {
                    Ok(response) => status_of(response),
                    Err(err) => tonic::Status::unavailable(err.to_string()),
                };
                record_status(&recorded, &status, Side::Client);
                response
            }
            .instrument(span),
        )
    }
}

/// The server side of every call: its span (continuing the caller's trace
/// context) and its metrics.
#[derive(Debug, Clone, Copy, Default)]
struct ObservedLayer;

impl<S> tower::Layer<S> for ObservedLayer {
    type Service = Observed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observed { inner }
    }
}

#[derive(Debug, Clone)]
struct Observed<S> {
    inner: S,
}

impl<S, B, R> tower::Service<http::Request<B>> for Observed<S>
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
        let rpc = Rpc::of(request.uri().path());
        // Health probes come every few seconds from every orchestrator:
        // counted, but a trace each would bury the real ones.
        let span = if rpc.service == HEALTH_SERVICE {
            tracing::Span::none()
        } else {
            tracing::info_span!(
                "grpc.server",
                otel.name = rpc.full,
                otel.kind = "server",
                rpc.system = "grpc",
                rpc.service = rpc.service,
                rpc.method = rpc.method,
                rpc.grpc.status_code = tracing::field::Empty,
                otel.status_code = tracing::field::Empty,
                otel.status_description = tracing::field::Empty,
            )
        };
        crate::telemetry::set_parent_from_headers(&span, request.headers());
        let label = rpc.full.to_owned();
        let started = Instant::now();
        let response = span.in_scope(|| self.inner.call(request));
        let recorded = span.clone();
        Box::pin(
            async move {
                let response = response.await;
                // An error here is the transport's; the handler's own
                // failures are answers with a status.
                let status = match &response {
                    Ok(response) => status_of(response),
                    Err(_) => tonic::Status::unavailable("the call failed before an answer"),
                };
                record_status(&recorded, &status, Side::Server);
                metrics::counter!(
                    "vesper_grpc_requests_total",
                    "rpc" => label.clone(),
                    "code" => code_name(status.code()),
                )
                .increment(1);
                metrics::histogram!("vesper_grpc_request_duration_seconds", "rpc" => label)
                    .record(started.elapsed().as_secs_f64());
                response
            }
            .instrument(span),
        )
    }
}

/// A method path, `/vesper.v1.Storage/PutObject`, in its parts.
struct Rpc<'a> {
    /// `vesper.v1.Storage/PutObject`
    full: &'a str,
    /// `vesper.v1.Storage`
    service: &'a str,
    /// `PutObject`
    method: &'a str,
}

impl<'a> Rpc<'a> {
    fn of(path: &'a str) -> Self {
        let full = path.trim_start_matches('/');
        let (service, method) = full.split_once('/').unwrap_or((full, ""));
        Self {
            full,
            service,
            method,
        }
    }
}

/// The status of an answer as far as its headers tell: an error travels
/// in the headers of a trailers-only answer; an answer without
/// `grpc-status` there is a success whose OK comes in the trailers (tonic
/// sends OK no other way for unary calls).
fn status_of<B>(response: &http::Response<B>) -> tonic::Status {
    tonic::Status::from_header_map(response.headers())
        .unwrap_or_else(|| tonic::Status::new(Code::Ok, ""))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Server,
}

fn record_status(span: &tracing::Span, status: &tonic::Status, side: Side) {
    let code = status.code();
    span.record("rpc.grpc.status_code", code as i32);
    let failed = match side {
        Side::Client => code != Code::Ok,
        Side::Server => matches!(
            code,
            Code::Unknown
                | Code::DeadlineExceeded
                | Code::Unimplemented
                | Code::Internal
                | Code::Unavailable
                | Code::DataLoss
        ),
    };
    if failed {
        crate::telemetry::record_error(
            span,
            format_args!("{}: {}", code_name(code), status.message()),
        );
    }
}

/// The gRPC name of a status code (`OK`, `INVALID_ARGUMENT`, ...), as the
/// gRPC specification spells it; the `code` label of every metric.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_paths_split_into_service_and_method() {
        let rpc = Rpc::of("/vesper.v1.Storage/PutObject");
        assert_eq!(rpc.full, "vesper.v1.Storage/PutObject");
        assert_eq!(rpc.service, "vesper.v1.Storage");
        assert_eq!(rpc.method, "PutObject");
        let odd = Rpc::of("/no-method");
        assert_eq!((odd.service, odd.method), ("no-method", ""));
    }

    #[test]
    fn an_answer_without_grpc_status_in_its_headers_is_ok() {
        let ok = http::Response::new(());
        assert_eq!(status_of(&ok).code(), Code::Ok);
        let failed = http::Response::builder()
            .header("grpc-status", "5")
            .header("grpc-message", "no%20such%20key")
            .body(())
            .expect("response");
        let status = status_of(&failed);
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), "no such key");
        assert_eq!(code_name(status.code()), "NOT_FOUND");
    }
}
