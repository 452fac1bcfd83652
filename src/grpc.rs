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
//! the status (`OK`, `NOT_FOUND`, ...), `rpc` a method the server offers
//! or `unknown` (so random paths cannot create series).
//!
//! With auth on ([`crate::auth`]), every call but health (and reflection,
//! per `--reflection`) needs a bearer token with the method's right; the
//! token's name is the span's `enduser.id`. Every client sends the
//! process's own token ([`crate::auth::install_client_token`]).
//!
//! Every server is bounded ([`GrpcLimits`]): streams per connection, calls
//! in flight per port, request bytes in flight per port (past either,
//! UNAVAILABLE with a `retry-after`), and a time limit per call (past it,
//! DEADLINE_EXCEEDED).

use std::{
    collections::HashSet,
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body::Frame;
use prost::Message;
use tokio::{net::TcpListener, sync::Semaphore};
use tonic::{
    Code,
    body::Body,
    server::NamedService,
    service::RoutesBuilder,
    transport::{Channel, Endpoint, Server, server::TcpIncoming},
};
use tonic_health::ServingStatus;
use tracing::Instrument;

use crate::{
    FILE_DESCRIPTOR_SET,
    auth::{AuthLayer, Reflection, ServerAuth},
    config::{ByteSize, PeerAddr, parse_duration, parse_positive_count},
    tls::{Port, ServerTls, TlsConnect},
};

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

/// Methods that legitimately run long (a whole batch run, a flush of
/// every buffered event): they get [`GrpcLimits::grpc_long_call_timeout`].
pub const LONG_CALLS: [&str; 2] = ["vesper.v1.BatchPipeline/Run", "vesper.v1.EventIngest/Flush"];

/// Default HTTP/2 streams per connection.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 256;
/// Default calls in flight per port.
pub const DEFAULT_MAX_IN_FLIGHT_CALLS: usize = 1024;
/// Default request bytes in flight per port: four of the largest objects
/// Storage takes by default.
pub const DEFAULT_MAX_IN_FLIGHT_BYTES: ByteSize = ByteSize::mib(256);
/// Default time limit of a call.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Default time limit of a [`LONG_CALLS`] call.
pub const DEFAULT_LONG_CALL_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// How often an idle connection is pinged, and how long the answer may
/// take, so that connections of vanished clients are closed.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a gRPC port allows; shared by every gRPC server (`vesper up` and
/// each service alone).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct GrpcLimits {
    /// HTTP/2 streams (calls) one gRPC connection may have open at once;
    /// further calls wait on the client.
    #[arg(
        long,
        env = "VESPER_GRPC_MAX_CONCURRENT_STREAMS",
        default_value_t = DEFAULT_MAX_CONCURRENT_STREAMS,
        value_parser = clap::value_parser!(u32).range(1..),
        value_name = "COUNT"
    )]
    pub grpc_max_concurrent_streams: u32,

    /// gRPC calls handled at once on the port, over all connections
    /// (health checks excepted); further calls get UNAVAILABLE.
    #[arg(
        long,
        env = "VESPER_GRPC_MAX_IN_FLIGHT_CALLS",
        default_value_t = DEFAULT_MAX_IN_FLIGHT_CALLS,
        value_parser = parse_positive_count,
        value_name = "COUNT"
    )]
    pub grpc_max_in_flight_calls: usize,

    /// Request bytes held at once on the port, over all calls (e.g.
    /// 256MiB); a call that would go past it gets UNAVAILABLE.
    #[arg(
        long,
        env = "VESPER_GRPC_MAX_IN_FLIGHT_BYTES",
        default_value_t = DEFAULT_MAX_IN_FLIGHT_BYTES,
        value_name = "SIZE"
    )]
    pub grpc_max_in_flight_bytes: ByteSize,

    /// The most a gRPC call may take (e.g. 60s); past it, DEADLINE_EXCEEDED.
    /// A client's shorter grpc-timeout wins.
    #[arg(
        long,
        env = "VESPER_GRPC_CALL_TIMEOUT",
        default_value = "60s",
        value_parser = parse_duration,
        value_name = "DURATION"
    )]
    pub grpc_call_timeout: Duration,

    /// The most BatchPipeline/Run and EventIngest/Flush may take (e.g. 1h).
    #[arg(
        long,
        env = "VESPER_GRPC_LONG_CALL_TIMEOUT",
        default_value = "1h",
        value_parser = parse_duration,
        value_name = "DURATION"
    )]
    pub grpc_long_call_timeout: Duration,
}

impl Default for GrpcLimits {
    fn default() -> Self {
        Self {
            grpc_max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            grpc_max_in_flight_calls: DEFAULT_MAX_IN_FLIGHT_CALLS,
            grpc_max_in_flight_bytes: DEFAULT_MAX_IN_FLIGHT_BYTES,
            grpc_call_timeout: DEFAULT_CALL_TIMEOUT,
            grpc_long_call_timeout: DEFAULT_LONG_CALL_TIMEOUT,
        }
    }
}

static PROCESS_LIMITS: OnceLock<GrpcLimits> = OnceLock::new();

impl GrpcLimits {
    /// Makes these the limits of every gRPC server this process starts
    /// from now on (the binary calls it once, from its flags; the first
    /// call wins).
    pub fn install(&self) {
        if PROCESS_LIMITS.set(self.clone()).is_err() {
            tracing::debug!("gRPC limits were installed already");
        }
    }

    /// The limits installed for this process, or the defaults.
    pub fn current() -> Self {
        PROCESS_LIMITS.get().cloned().unwrap_or_default()
    }

    /// Checks that a message of `message_bytes` (the largest `what` takes)
    /// fits the bytes-in-flight budget: otherwise such a call would always
    /// be refused as UNAVAILABLE, which clients take for "retry later".
    pub fn check_fits(&self, what: &str, message_bytes: usize) -> Result<(), String> {
        let budget = self.grpc_max_in_flight_bytes.bytes();
        if (message_bytes as u64) > budget {
            return Err(format!(
                "--grpc-max-in-flight-bytes ({budget}) is smaller than the largest {what} ({message_bytes} bytes); raise it or lower the size bound"
            ));
        }
        Ok(())
    }

    /// The time limit of a call to `rpc` (`package.Service/Method`).
    pub fn timeout_of(&self, rpc: &str) -> Duration {
        if LONG_CALLS.contains(&rpc) {
            self.grpc_long_call_timeout
        } else {
            self.grpc_call_timeout
        }
    }
}

/// The gRPC services one listener serves.
#[derive(Debug)]
pub struct GrpcServices {
    routes: RoutesBuilder,
    names: Vec<&'static str>,
    limits: GrpcLimits,
    tls: Option<Arc<ServerTls>>,
    auth: ServerAuth,
}

impl Default for GrpcServices {
    fn default() -> Self {
        Self::new()
    }
}

impl GrpcServices {
    /// No services yet, within the process's limits
    /// ([`GrpcLimits::current`]), its TLS ([`ServerTls::current`]) and its
    /// access control ([`ServerAuth::current`]).
    pub fn new() -> Self {
        Self {
            routes: RoutesBuilder::default(),
            names: Vec::new(),
            limits: GrpcLimits::current(),
            tls: ServerTls::current(),
            auth: ServerAuth::current(),
        }
    }

    /// Serves with `tls` (or plaintext with `None`) instead of the
    /// process's TLS.
    pub fn tls(mut self, tls: Option<Arc<ServerTls>>) -> Self {
        self.tls = tls;
        self
    }

    /// Checks callers as `auth` says instead of as the process does.
    pub fn auth(mut self, auth: ServerAuth) -> Self {
        self.auth = auth;
        self
    }

    /// Serves within `limits` instead of the process's.
    pub fn limits(mut self, limits: GrpcLimits) -> Self {
        self.limits = limits;
        self
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
        let Self {
            mut routes,
            names,
            limits,
            tls,
            auth,
        } = self;
        let guard = CallGuard::new(known_rpcs(&names), limits.clone());
        let (health, health_service) = tonic_health::server::health_reporter();
        for name in &names {
            health
                .set_service_status(name, ServingStatus::Serving)
                .await;
        }
        routes.add_service(health_service);
        if auth.reflection != Reflection::Off {
            routes
                .add_service(reflection(&names).build_v1()?)
                .add_service(reflection(&names).build_v1alpha()?);
        }

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
        let router = Server::builder()
            .max_concurrent_streams(limits.grpc_max_concurrent_streams)
            .http2_keepalive_interval(Some(KEEP_ALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(KEEP_ALIVE_TIMEOUT))
            .layer(ObservedLayer { guard })
            .layer(AuthLayer::new(auth))
            .add_routes(routes.routes());
        // tonic's own TLS reads its certificate once; our acceptor takes
        // the current one for every connection, so rotation needs no
        // restart.
        match tls {
            Some(tls) => {
                router
                    .serve_with_incoming_shutdown(tls.incoming(listener, Port::Grpc), stop)
                    .await?
            }
            None => {
                let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
                router.serve_with_incoming_shutdown(incoming, stop).await?
            }
        }
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

/// The methods of the health and reflection services every server adds.
const BUILT_IN_RPCS: [&str; 4] = [
    "grpc.health.v1.Health/Check",
    "grpc.health.v1.Health/Watch",
    "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// The `rpc` label of a call to a path no service offers.
const UNKNOWN_RPC: &str = "unknown";

/// Every `package.Service/Method` a server with `services` answers: the
/// methods the contracts declare for them, and the built-in ones.
fn known_rpcs(services: &[&'static str]) -> HashSet<String> {
    let mut known: HashSet<String> = BUILT_IN_RPCS.iter().map(|rpc| (*rpc).to_owned()).collect();
    let Ok(descriptors) = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET) else {
        tracing::warn!("cannot read the contracts' descriptor set; calls are labelled unknown");
        return known;
    };
    for file in descriptors.file {
        let package = file.package.unwrap_or_default();
        for service in file.service {
            let name = format!("{package}.{}", service.name.unwrap_or_default());
            if !services.contains(&name.as_str()) {
                continue;
            }
            for method in service.method {
                known.insert(format!("{name}/{}", method.name.unwrap_or_default()));
            }
        }
    }
    known
}

/// What every call on one port shares: the methods it offers, the calls
/// and request bytes in flight, and the limits.
#[derive(Debug)]
struct CallGuard {
    known: HashSet<String>,
    calls: Arc<Semaphore>,
    bytes: Arc<ByteBudget>,
    limits: GrpcLimits,
}

impl CallGuard {
    fn new(known: HashSet<String>, limits: GrpcLimits) -> Arc<Self> {
        let calls = limits
            .grpc_max_in_flight_calls
            .clamp(1, Semaphore::MAX_PERMITS);
        Arc::new(Self {
            known,
            calls: Arc::new(Semaphore::new(calls)),
            bytes: Arc::new(ByteBudget {
                limit: limits.grpc_max_in_flight_bytes.bytes(),
                used: AtomicU64::new(0),
            }),
            limits,
        })
    }

    /// The `rpc` label of a call: the method if this server offers it.
    fn label(&self, rpc: &str) -> String {
        if self.known.contains(rpc) {
            rpc.to_owned()
        } else {
            UNKNOWN_RPC.to_owned()
        }
    }

    fn over_call_limit(&self) -> tonic::Status {
        retry_later(format!(
            "the server is handling its limit of {} calls at once (--grpc-max-in-flight-calls, VESPER_GRPC_MAX_IN_FLIGHT_CALLS); retry later",
            self.limits.grpc_max_in_flight_calls
        ))
    }

    fn past_deadline(&self, rpc: &str, timeout: Duration) -> tonic::Status {
        let flag = if LONG_CALLS.contains(&rpc) {
            "--grpc-long-call-timeout, VESPER_GRPC_LONG_CALL_TIMEOUT"
        } else {
            "--grpc-call-timeout, VESPER_GRPC_CALL_TIMEOUT"
        };
        tonic::Status::deadline_exceeded(format!(
            "{rpc} did not finish within its {} time limit ({flag})",
            humantime::format_duration(timeout)
        ))
    }
}

/// An UNAVAILABLE that asks the client to come back in a second.
fn retry_later(message: String) -> tonic::Status {
    let mut status = tonic::Status::unavailable(message);
    status.metadata_mut().insert(
        RETRY_AFTER_METADATA,
        tonic::metadata::MetadataValue::from(1),
    );
    status
}

/// Request bytes held by the calls of one port.
#[derive(Debug)]
struct ByteBudget {
    limit: u64,
    used: AtomicU64,
}

/// The request bytes one call holds; given back when the call is done.
#[derive(Debug)]
struct Charge {
    budget: Arc<ByteBudget>,
    held: AtomicU64,
}

impl Charge {
    fn new(budget: Arc<ByteBudget>) -> Self {
        Self {
            budget,
            held: AtomicU64::new(0),
        }
    }

    /// Takes `bytes` more from the budget, or refuses the call.
    fn take(&self, bytes: u64) -> Result<(), tonic::Status> {
        let budget = &self.budget;
        let taken = budget
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes)
                    .filter(|total| *total <= budget.limit)
            });
        match taken {
            Ok(_) => {
                self.held.fetch_add(bytes, Ordering::AcqRel);
                Ok(())
            }
            Err(_) => Err(retry_later(format!(
                "the server holds its limit of {} of request bytes (--grpc-max-in-flight-bytes, VESPER_GRPC_MAX_IN_FLIGHT_BYTES); retry later",
                ByteSize(budget.limit)
            ))),
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        let held = *self.held.get_mut();
        self.budget.used.fetch_sub(held, Ordering::AcqRel);
    }
}

/// A request body whose bytes are charged to the port's budget as they
/// arrive; past the budget it fails with the refusal, which the decoder
/// turns into the call's status.
struct ChargedBody {
    inner: Body,
    charge: Arc<Charge>,
}

impl http_body::Body for ChargedBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            let bytes = u64::try_from(data.len()).unwrap_or(u64::MAX);
            if let Err(refused) = self.charge.take(bytes) {
                return Poll::Ready(Some(Err(refused)));
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A channel to a peer that connects on first use and reconnects after a
/// failure, so that callers see UNAVAILABLE while the peer is down and
/// success as soon as it is back. Every call gets a client span, child of
/// the span it is made in, whose W3C trace context travels in the call's
/// metadata.
///
/// An `https://` peer is reached over TLS with the process's client
/// settings ([`crate::tls::ClientTls::current`]); an `http://` one in
/// plaintext.
pub fn connect_lazy(peer: &PeerAddr) -> TracedChannel {
    let endpoint = Endpoint::from(peer.uri().clone())
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    let channel = if peer.is_tls() {
        endpoint.connect_with_connector_lazy(TlsConnect::new())
    } else {
        endpoint.connect_lazy()
    };
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
        if let Some(token) = crate::auth::client_token()
            && !request.headers().contains_key(http::header::AUTHORIZATION)
        {
            request
                .headers_mut()
                .insert(http::header::AUTHORIZATION, token.authorization());
        }
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
/// context), its metrics, and its bounds (calls and bytes in flight, time).
#[derive(Debug, Clone)]
struct ObservedLayer {
    guard: Arc<CallGuard>,
}

impl<S> tower::Layer<S> for ObservedLayer {
    type Service = Observed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observed {
            inner,
            guard: self.guard.clone(),
        }
    }
}

#[derive(Debug, Clone)]
struct Observed<S> {
    inner: S,
    guard: Arc<CallGuard>,
}

impl<S> tower::Service<http::Request<Body>> for Observed<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let rpc = Rpc::of(request.uri().path());
        let label = self.guard.label(rpc.full);
        // Health probes come every few seconds from every orchestrator:
        // counted, but a trace each would bury the real ones.
        let span = if rpc.service == HEALTH_SERVICE {
            tracing::Span::none()
        } else {
            tracing::info_span!(
                "grpc.server",
                otel.name = label.as_str(),
                otel.kind = "server",
                rpc.system = "grpc",
                rpc.service = rpc.service,
                rpc.method = rpc.method,
                rpc.grpc.status_code = tracing::field::Empty,
                otel.status_code = tracing::field::Empty,
                otel.status_description = tracing::field::Empty,
                enduser.id = tracing::field::Empty,
            )
        };
        crate::telemetry::set_parent_from_headers(&span, request.headers());
        let started = Instant::now();
        // Health checks must answer under load, and cost nothing.
        let slot = if rpc.service == HEALTH_SERVICE {
            Ok(None)
        } else {
            self.guard.calls.clone().try_acquire_owned().map(Some)
        };
        let guard = self.guard.clone();
        let timeout = guard.limits.timeout_of(&label);
        let charge = Arc::new(Charge::new(guard.bytes.clone()));
        let handled = match slot {
            Ok(slot) => {
                let charged = charge.clone();
                let request = request.map(|inner| {
                    Body::new(ChargedBody {
                        inner,
                        charge: charged,
                    })
                });
                Ok((slot, span.in_scope(|| self.inner.call(request))))
            }
            Err(_) => Err(guard.over_call_limit()),
        };
        let recorded = span.clone();
        Box::pin(
            async move {
                let response = match handled {
                    Ok((slot, response)) => {
                        let answer = tokio::time::timeout(timeout, response).await;
                        drop(slot);
                        match answer {
                            Ok(response) => response,
                            Err(_) => Ok(guard.past_deadline(&label, timeout).into_http()),
                        }
                    }
                    Err(refused) => Ok(refused.into_http()),
                };
                drop(charge);
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

#[cfg(test)]
mod limits_tests;
