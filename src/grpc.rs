//! gRPC scaffolding shared by every server and client: each server offers
//! `grpc.health.v1` and reflection (v1, and v1alpha for grpcurl 1.8), one
//! span per call, and a graceful stop; each client connects lazily, so a
//! service starts while its peers are still down.

use std::{convert::Infallible, future::Future, time::Duration};

use tokio::net::TcpListener;
use tonic::{
    body::Body,
    metadata::{MetadataKey, MetadataValue},
    server::NamedService,
    service::{Interceptor, RoutesBuilder, interceptor::InterceptedService},
    transport::{Channel, Endpoint, Server, server::TcpIncoming},
};
use tonic_health::ServingStatus;

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
            .trace_fn(|request| {
                let rpc = request.uri().path();
                let span = tracing::info_span!(
                    "grpc",
                    otel.name = rpc.trim_start_matches('/'),
                    otel.kind = "server",
                    rpc.system = "grpc",
                    rpc = %rpc,
                );
                crate::telemetry::set_parent_from_headers(&span, request.headers());
                span
            })
            .layer(crate::metrics::GrpcMetricsLayer)
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

/// A channel to a peer whose calls carry the caller's trace context.
pub type TracedChannel = InterceptedService<Channel, TraceContextInterceptor>;

/// A channel to a peer that connects on first use and reconnects after a
/// failure, so that callers see UNAVAILABLE while the peer is down and
/// success as soon as it is back. Every call carries the W3C trace context
/// of the span it is made in.
pub fn connect_lazy(peer: &PeerAddr) -> TracedChannel {
    let channel = Endpoint::from(peer.uri().clone())
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .connect_lazy();
    InterceptedService::new(channel, TraceContextInterceptor)
}

/// Writes the current span's W3C trace context into a call's metadata, so
/// the server's span joins the caller's trace.
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceContextInterceptor;

impl Interceptor for TraceContextInterceptor {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        let mut headers = http::HeaderMap::new();
        crate::telemetry::inject_headers(&mut headers);
        for (name, value) in &headers {
            if let (Ok(key), Ok(value)) = (
                MetadataKey::from_bytes(name.as_str().as_bytes()),
                MetadataValue::try_from(value.as_bytes()),
            ) {
                request.metadata_mut().insert(key, value);
            }
        }
        Ok(request)
    }
}
