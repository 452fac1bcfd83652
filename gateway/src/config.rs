//! The gateway's settings and their command-line form.

use std::{net::SocketAddr, time::Duration};

use vesper::{
    config::{ByteSize, PeerAddr, defaults, parse_duration},
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
        }
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
}

impl GatewayLimits {
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
        GatewayConfig {
            datasource: self.datasource_addr.clone(),
            ingest: self.ingest_addr.clone(),
            request_timeout: self.limits.request_timeout,
            body_limit: self.limits.body_limit,
            max_request_events: self.limits.webhook_max_events,
            webhook_signing: self.limits.webhook_signing(),
        }
    }
}
