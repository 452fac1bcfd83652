//! The gateway's settings and their command-line form.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use vesper::{
    auth::TokenTable,
    config::{ByteSize, PeerAddr, defaults, parse_duration, parse_positive_count},
    signature::WebhookSecret,
};

/// How the gateway runs.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The DataSource service (REST API, generator control, health).
    pub datasource: PeerAddr,
    /// The EventIngest service (webhook, health).
    pub ingest: PeerAddr,
    /// The most a request may take, end to end. The upstream's deliberate
    /// 10 s stalls must fit.
    pub request_timeout: Duration,
    /// The largest webhook body accepted.
    pub body_limit: ByteSize,
    /// Most events in one webhook body.
    pub max_request_events: usize,
    /// When set, webhook calls must carry a valid signature.
    pub webhook_signing: Option<WebhookSigning>,
    /// The longest wait for the next piece of a request body.
    pub body_read_timeout: Duration,
    /// Requests handled at once; past it, 503 with `Retry-After`.
    pub max_in_flight_requests: usize,
    /// Browser origins, besides the gateway's own, allowed to make
    /// state-changing requests.
    pub allowed_origins: Vec<AllowedOrigin>,
    /// The connection limits of the HTTP server.
    pub server: ServerLimits,
    /// The accepted bearer tokens; `None`: auth is off.
    pub auth: Option<Arc<TokenTable>>,
}

impl GatewayConfig {
    /// Every peer at one address (`vesper up` serves all gRPC services on
    /// one port).
    pub fn all_peers_at(addr: PeerAddr) -> Self {
        Self {
            datasource: addr.clone(),
            ingest: addr,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            body_limit: DEFAULT_BODY_LIMIT,
            max_request_events: vesper::wire::DEFAULT_MAX_REQUEST_EVENTS,
            webhook_signing: None,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            max_in_flight_requests: DEFAULT_MAX_IN_FLIGHT_REQUESTS,
            allowed_origins: Vec::new(),
            server: ServerLimits::default(),
            auth: None,
        }
    }
}

/// What the HTTP server allows each connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLimits {
    /// The longest a client may take to send a request's header (from the
    /// moment the server waits for it, so it also bounds how long an idle
    /// HTTP/1.1 keep-alive connection stays open).
    pub header_read_timeout: Duration,
    /// How long a connection with no request in flight and no bytes moving
    /// stays open (HTTP/2 connections, and any connection before its
    /// first request).
    pub idle_timeout: Duration,
    /// Connections open at once; past it, new connections wait in the
    /// listen backlog until one closes.
    pub max_connections: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Default longest wait for a request's header.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default longest wait for the next piece of a request body.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time an idle connection stays open.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default number of connections open at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default number of requests handled at once.
pub const DEFAULT_MAX_IN_FLIGHT_REQUESTS: usize = 1024;

/// A browser origin allowed to make state-changing requests:
/// `scheme://host[:port]`, compared case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedOrigin(String);

impl AllowedOrigin {
    /// Whether the `Origin` header value `origin` is this one.
    pub fn matches(&self, origin: &str) -> bool {
        self.0.eq_ignore_ascii_case(origin.trim_end_matches('/'))
    }
}

impl std::str::FromStr for AllowedOrigin {
    type Err = vesper::config::ParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim().trim_end_matches('/');
        let valid = text.split_once("://").is_some_and(|(scheme, rest)| {
            !scheme.is_empty()
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
                && !rest.is_empty()
                && !rest.contains(['/', '?', '#', ' ', ','])
        });
        if valid {
            Ok(Self(text.to_ascii_lowercase()))
        } else {
            Err(vesper::config::ParseError::new(format!(
                "invalid origin {text:?}: write scheme://host[:port], e.g. https://app.example.com"
            )))
        }
    }
}

impl std::fmt::Display for AllowedOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Default tolerance between a signature's timestamp and the gateway's clock.
pub const DEFAULT_SIGNATURE_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// How webhook signatures are checked (see the webhook module).
#[derive(Debug, Clone)]
pub struct WebhookSigning {
    /// The HMAC-SHA256 key.
    pub secret: WebhookSecret,
    /// How far a signature's timestamp may be from now, either way.
    pub tolerance: Duration,
}

/// Default end-to-end request timeout.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default webhook body limit.
pub const DEFAULT_BODY_LIMIT: ByteSize = ByteSize::mib(1);

/// Command-line options of the gateway.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayArgs {
    /// Address to serve HTTP on (port 0 picks a free port).
    #[arg(
        long,
        env = "VESPER_HTTP_ADDR",
        default_value = defaults::HTTP_ADDR,
        value_name = "HOST:PORT"
    )]
    pub http_addr: SocketAddr,

    /// The DataSource gRPC service.
    #[arg(
        long,
        env = "VESPER_DATASOURCE_ADDR",
        default_value = defaults::DATASOURCE_GRPC_ADDR,
        value_name = "HOST:PORT"
    )]
    pub datasource_addr: PeerAddr,

    /// The EventIngest gRPC service.
    #[arg(
        long,
        env = "VESPER_INGEST_ADDR",
        default_value = defaults::INGEST_GRPC_ADDR,
        value_name = "HOST:PORT"
    )]
    pub ingest_addr: PeerAddr,

    #[command(flatten)]
    pub limits: GatewayLimits,
}

/// The gateway's request limits, shared by `vesper gateway` and `vesper up`.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayLimits {
    /// The most an HTTP request may take, end to end (e.g. 30s).
    #[arg(
        long,
        env = "VESPER_REQUEST_TIMEOUT",
        default_value = "30s",
        value_parser = parse_duration,
        value_name = "DURATION"
    )]
    pub request_timeout: Duration,

    /// The largest webhook body accepted; larger bodies get 413.
    #[arg(
        long,
        env = "VESPER_BODY_LIMIT",
        default_value_t = DEFAULT_BODY_LIMIT,
        value_name = "SIZE"
    )]
    pub body_limit: ByteSize,

    /// Most events in one webhook body; a larger body gets 413 before any
    /// event is decoded. Ingest has its own cap (--max-request-events of
    /// `vesper ingest`), which answers 413 through the webhook too.
    #[arg(
        long = "webhook-max-events",
        env = "VESPER_WEBHOOK_MAX_EVENTS",
        default_value_t = vesper::wire::DEFAULT_MAX_REQUEST_EVENTS,
        value_name = "N"
    )]
    pub webhook_max_events: usize,

    /// How far the timestamp of a webhook signature may be from the
    /// gateway's clock (e.g. 5m). Signatures are required only when the
    /// secret is set in the environment variable VESPER_WEBHOOK_SECRET
    /// (never a flag, so it stays out of `ps`).
    #[arg(
        long,
        env = "VESPER_WEBHOOK_SIGNATURE_TOLERANCE",
        default_value = "5m",
        value_parser = parse_duration,
        value_name = "DURATION"
    )]
    pub webhook_signature_tolerance: Duration,

    /// The longest a client may take to send a request's header (and to
    /// start the next request on a kept-alive HTTP/1.1 connection); the
    /// connection is then closed.
    #[arg(
        long,
        env = "VESPER_HEADER_READ_TIMEOUT",
        default_value = "10s",
        value_parser = parse_duration,
        value_name = "DURATION"
    )]
    pub header_read_timeout: Duration,

    /// The longest wait for the next piece of a request body; past it the
    /// request gets 408.
    #[arg(
        long,
        env = "VESPER_BODY_READ_TIMEOUT",
        default_value = "10s",
        value_parser = parse_duration,
        value_name = "DURATION"
    )]
    pub body_read_timeout: Duration,

    /// How long a connection with no request in flight and no traffic stays
    /// open (HTTP/2, or before the first request).
    #[arg(
        long,
        env = "VESPER_IDLE_TIMEOUT",
        default_value = "60s",
        value_parser = parse_duration,
        value_name = "DURATION"
    )]
    pub idle_timeout: Duration,

    /// HTTP connections open at once; further connections wait in the
    /// listen backlog until one closes.
    #[arg(
        long,
        env = "VESPER_MAX_CONNECTIONS",
        default_value_t = DEFAULT_MAX_CONNECTIONS,
        value_parser = parse_positive_count,
        value_name = "COUNT"
    )]
    pub max_connections: usize,

    /// HTTP requests handled at once; further requests get 503 with
    /// Retry-After.
    #[arg(
        long,
        env = "VESPER_MAX_IN_FLIGHT_REQUESTS",
        default_value_t = DEFAULT_MAX_IN_FLIGHT_REQUESTS,
        value_parser = parse_positive_count,
        value_name = "COUNT"
    )]
    pub max_in_flight_requests: usize,

    /// Browser origins (`scheme://host[:port]`, comma-separated) allowed to
    /// make state-changing requests (POST) besides the gateway's own;
    /// requests a browser marks cross-site from any other origin get 403.
    /// Clients that send no Origin (curl, services) are not affected.
    #[arg(
        long,
        env = "VESPER_ALLOWED_ORIGINS",
        value_delimiter = ',',
        value_name = "ORIGINS"
    )]
    pub allowed_origins: Vec<AllowedOrigin>,
}

impl GatewayLimits {
    /// Sets these limits on `config`.
    pub fn apply_to(&self, config: &mut GatewayConfig) {
        config.request_timeout = self.request_timeout;
        config.body_limit = self.body_limit;
        config.max_request_events = self.webhook_max_events;
        config.webhook_signing = self.webhook_signing();
        config.body_read_timeout = self.body_read_timeout;
        config.max_in_flight_requests = self.max_in_flight_requests;
        config.allowed_origins = self.allowed_origins.clone();
        config.server = ServerLimits {
            header_read_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
            max_connections: self.max_connections,
        };
    }

    /// Webhook signing as the environment asks: on when
    /// `VESPER_WEBHOOK_SECRET` is set and not empty.
    pub fn webhook_signing(&self) -> Option<WebhookSigning> {
        Some(WebhookSigning {
            secret: WebhookSecret::from_env()?,
            tolerance: self.webhook_signature_tolerance,
        })
    }
}

impl GatewayArgs {
    /// The configuration these options describe.
    pub fn config(&self) -> GatewayConfig {
        let mut config = GatewayConfig::all_peers_at(self.datasource_addr.clone());
        config.ingest = self.ingest_addr.clone();
        self.limits.apply_to(&mut config);
        config
    }
}
