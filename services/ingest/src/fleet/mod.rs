//! Fleet mode: ingest replicas publish accepted events to a NATS JetStream
//! stream instead of the local write-ahead log, and lake writers share one
//! durable consumer of it.
//!
//! This module holds what both sides share: the `--log` options
//! ([`LogArgs`] → [`FleetConfig`]), the connection ([`connect`]), the
//! stream's settings and its check ([`stream::ensure_stream`]), and the
//! wire constants (subject, headers). `publish` is the ingest side;
//! `writer` the lake side.
//!
//! # Wire form
//!
//! One message per accepted event, on subject `<prefix>.<unix hour>` (the
//! hour of the event's time, [`crate::lake::Partition::unix_hour`]), with
//! header `Nats-Msg-Id: <event_id>` (JetStream drops a second message with
//! the same id inside the stream's duplicate window) and the W3C
//! `traceparent`/`tracestate` of the publish span. The payload is the
//! event's lake NDJSON line without its newline, the same bytes the
//! write-ahead log keeps; a writer joins payloads with `\n` as the
//! single-node flusher joins lines.

use std::{
    fmt,
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use async_nats::{ConnectOptions, ServerAddr};
use vesper::config::{ByteSize, ParseError, parse_duration};

use crate::IngestError;

pub mod publish;
pub mod stream;
pub mod writer;

/// `--log` when none is given: the local write-ahead log.
pub const LOG_WAL: &str = "wal";
/// Default stream name.
pub const DEFAULT_STREAM: &str = "VESPER_EVENTS";
/// Default subject prefix: events go to `vesper.events.<unix hour>`.
pub const DEFAULT_SUBJECT_PREFIX: &str = "vesper.events";
/// Default name of the lake writers' shared durable consumer.
pub const DEFAULT_CONSUMER: &str = "vesper-lake-writers";
/// Default replicas of the stream: a 3-node cluster keeps taking events
/// with one node down.
pub const DEFAULT_STREAM_REPLICAS: usize = 3;
/// Default bound of the stream. Past it (discard new) publishes fail and
/// Ingest answers UNAVAILABLE until the lake writers catch up. At ~400
/// bytes an event, about 2.6 million events.
pub const DEFAULT_STREAM_MAX_BYTES: ByteSize = ByteSize::mib(1024);
/// Default duplicate window of the stream: how long JetStream remembers a
/// message id. Each id remembered costs about 170 bytes of memory on every
/// server holding a replica (measured, docs/fleet.md): a minute is ~100 MB
/// at 10,000 events/s and ~610 MB at 60,000, and it covers a client's
/// retries of a failed call (Retry-After of 1 to 5 s) many times over.
pub const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(60);
/// Default bound of the wait for a TCP connection (and TLS handshake) to
/// one NATS server.
pub const DEFAULT_LOG_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default bound of one JetStream API request and of the wait for one
/// publish acknowledgement.
pub const DEFAULT_LOG_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Default bound of the wait at start for the stream to be reachable and
/// checked (a fleet that starts before its NATS cluster).
pub const DEFAULT_LOG_START_TIMEOUT: Duration = Duration::from_secs(60);

/// The header JetStream deduplicates by.
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";
/// The W3C trace context headers carried by every message.
pub const TRACEPARENT_HEADER: &str = "traceparent";
/// See [`TRACEPARENT_HEADER`].
pub const TRACESTATE_HEADER: &str = "tracestate";

/// Where accepted events are logged: the local write-ahead log, or a NATS
/// JetStream cluster.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LogTarget {
    /// The local write-ahead log in `--wal-dir` (single-node mode).
    #[default]
    Wal,
    /// The servers of a NATS cluster (fleet mode), as given.
    Nats(Vec<NatsUrl>),
}

/// One NATS server URL, checked: scheme `nats` or `tls`, a host, no
/// credentials (those come from files, so that they stay out of process
/// listings and logs).
#[derive(Clone, PartialEq, Eq)]
pub struct NatsUrl(String);

impl NatsUrl {
    /// The URL as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn server_addr(&self) -> Result<ServerAddr, IngestError> {
        self.0.parse().map_err(|err| IngestError::Config {
            message: format!("--log: {err}"),
        })
    }
}

impl fmt::Debug for NatsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for NatsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for LogTarget {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text.eq_ignore_ascii_case(LOG_WAL) {
            return Ok(Self::Wal);
        }
        let mut urls = Vec::new();
        for part in text.split(',').map(str::trim) {
            if part.is_empty() {
                return Err(ParseError::new(format!(
                    "--log {text:?} has an empty URL; write `wal` or nats://HOST:PORT[,nats://HOST:PORT...]"
                )));
            }
            let Some((scheme, _)) = part.split_once("://") else {
                return Err(ParseError::new(format!(
                    "--log: {part:?} is neither `wal` nor a URL; write nats://HOST:PORT (or tls://HOST:PORT)"
                )));
            };
            if scheme != "nats" && scheme != "tls" {
                return Err(ParseError::new(format!(
                    "--log: {part:?} has scheme {scheme:?}; only nats:// and tls:// are served"
                )));
            }
            let addr: ServerAddr = part
                .parse()
                .map_err(|err| ParseError::new(format!("--log: {part:?}: {err}")))?;
            if addr.has_user_pass() {
                return Err(ParseError::new(format!(
                    "--log: a URL carries credentials ({scheme}://USER:...@{}); pass them with --log-creds or --log-token-file instead",
                    addr.host()
                )));
            }
            urls.push(NatsUrl(part.to_owned()));
        }
        Ok(Self::Nats(urls))
    }
}

impl fmt::Display for LogTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Wal => f.write_str(LOG_WAL),
            Self::Nats(urls) => {
                let urls: Vec<_> = urls.iter().map(NatsUrl::as_str).collect();
                f.write_str(&urls.join(","))
            }
        }
    }
}

/// Parses `--log` with errors of its own: clap's usual "invalid value
/// '...'" would echo a URL's password into logs.
#[derive(Debug, Clone, Copy)]
struct LogTargetParser;

impl clap::builder::TypedValueParser for LogTargetParser {
    type Value = LogTarget;

    fn parse_ref(
        &self,
        _cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<Self::Value, clap::Error> {
        let text = value.to_str().ok_or_else(|| {
            clap::Error::raw(
                clap::error::ErrorKind::InvalidUtf8,
                "--log is not valid UTF-8\n",
            )
        })?;
        text.parse().map_err(|err: ParseError| {
            clap::Error::raw(clap::error::ErrorKind::ValueValidation, format!("{err}\n"))
        })
    }
}

/// The `--log` options, shared by `vesper ingest`, `vesper up` and
/// `vesper lake-writer`.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Fleet mode (--log nats://...)")]
pub struct LogArgs {
    /// Where accepted events are logged before Ingest answers: `wal` (the
    /// local write-ahead log in --wal-dir, one machine) or the
    /// comma-separated URLs of a NATS JetStream cluster
    /// (nats://HOST:PORT,...; fleet mode: events go to a replicated stream
    /// and lake writers write them to the lake).
    #[arg(
        long,
        env = "VESPER_LOG",
        default_value = LOG_WAL,
        value_parser = LogTargetParser,
        value_name = "wal|URLS"
    )]
    pub log: LogTarget,

    /// The JetStream stream of accepted events (created if missing;
    /// checked against the flags below if it exists).
    #[arg(
        long,
        env = "VESPER_STREAM",
        default_value = DEFAULT_STREAM,
        value_parser = parse_stream_name,
        value_name = "NAME"
    )]
    pub stream: String,

    /// Subjects of the stream: events go to PREFIX.HOUR, HOUR being the
    /// hours since the epoch of the event time.
    #[arg(
        long,
        env = "VESPER_SUBJECT_PREFIX",
        default_value = DEFAULT_SUBJECT_PREFIX,
        value_parser = parse_subject_prefix,
        value_name = "PREFIX"
    )]
    pub subject_prefix: String,

    /// The lake writers' shared durable consumer (ingest reads its lag for
    /// Stats; the writers create and check it).
    #[arg(
        long,
        env = "VESPER_CONSUMER",
        default_value = DEFAULT_CONSUMER,
        value_parser = parse_stream_name,
        value_name = "NAME"
    )]
    pub consumer: String,

    /// Copies of every message in the cluster (1 for a single NATS server;
    /// 3 keeps taking events with one server down).
    #[arg(
        long,
        env = "VESPER_STREAM_REPLICAS",
        default_value_t = DEFAULT_STREAM_REPLICAS,
        value_parser = parse_replicas,
        value_name = "N"
    )]
    pub stream_replicas: usize,

    /// Bound of the stream (events not yet in the lake). Past it Ingest
    /// answers UNAVAILABLE (503 with Retry-After) until the lake writers
    /// catch up.
    #[arg(
        long,
        env = "VESPER_STREAM_MAX_BYTES",
        default_value_t = DEFAULT_STREAM_MAX_BYTES,
        value_name = "SIZE"
    )]
    pub stream_max_bytes: ByteSize,

    /// How long JetStream remembers an event id to drop a resend (costs
    /// memory on every server per id remembered; see docs/fleet.md).
    #[arg(
        long,
        env = "VESPER_DUPLICATE_WINDOW",
        default_value = "1m",
        value_parser = parse_duplicate_window,
        value_name = "DURATION"
    )]
    pub duplicate_window: Duration,

    /// A PEM file of CA certificates to verify the NATS servers' TLS
    /// certificates with (turns TLS on).
    #[arg(long, env = "VESPER_LOG_CA", value_name = "FILE")]
    pub log_ca: Option<PathBuf>,

    /// A NATS credentials file (.creds: user JWT and NKey seed).
    #[arg(long, env = "VESPER_LOG_CREDS", value_name = "FILE")]
    pub log_creds: Option<PathBuf>,

    /// A file holding a NATS authentication token (its first line).
    #[arg(
        long,
        env = "VESPER_LOG_TOKEN_FILE",
        value_name = "FILE",
        conflicts_with = "log_creds"
    )]
    pub log_token_file: Option<PathBuf>,

    /// Bound of the wait for a connection (and TLS handshake) to one NATS
    /// server; the client tries the next one past it.
    #[arg(
        long,
        env = "VESPER_LOG_CONNECT_TIMEOUT",
        default_value = "5s",
        value_parser = parse_positive_duration,
        value_name = "DURATION"
    )]
    pub log_connect_timeout: Duration,

    /// Bound of one JetStream request and of the wait for one publish
    /// acknowledgement.
    #[arg(
        long,
        env = "VESPER_LOG_REQUEST_TIMEOUT",
        default_value = "5s",
        value_parser = parse_positive_duration,
        value_name = "DURATION"
    )]
    pub log_request_timeout: Duration,

    /// Bound of the wait at start for the cluster to answer and the stream
    /// to be checked; past it the process exits naming the servers.
    #[arg(
        long,
        env = "VESPER_LOG_START_TIMEOUT",
        default_value = "60s",
        value_parser = parse_positive_duration,
        value_name = "DURATION"
    )]
    pub log_start_timeout: Duration,
}

impl Default for LogArgs {
    fn default() -> Self {
        Self {
            log: LogTarget::Wal,
            stream: DEFAULT_STREAM.to_owned(),
            subject_prefix: DEFAULT_SUBJECT_PREFIX.to_owned(),
            consumer: DEFAULT_CONSUMER.to_owned(),
            stream_replicas: DEFAULT_STREAM_REPLICAS,
            stream_max_bytes: DEFAULT_STREAM_MAX_BYTES,
            duplicate_window: DEFAULT_DUPLICATE_WINDOW,
            log_ca: None,
            log_creds: None,
            log_token_file: None,
            log_connect_timeout: DEFAULT_LOG_CONNECT_TIMEOUT,
            log_request_timeout: DEFAULT_LOG_REQUEST_TIMEOUT,
            log_start_timeout: DEFAULT_LOG_START_TIMEOUT,
        }
    }
}

impl LogArgs {
    /// The fleet configuration, or `None` for the local write-ahead log.
    pub fn fleet(&self) -> Option<FleetConfig> {
        let LogTarget::Nats(servers) = &self.log else {
            return None;
        };
        Some(FleetConfig {
            servers: servers.clone(),
            stream: StreamSettings {
                name: self.stream.clone(),
                subject_prefix: self.subject_prefix.clone(),
                replicas: self.stream_replicas,
                max_bytes: self.stream_max_bytes.bytes(),
                duplicate_window: self.duplicate_window,
            },
            consumer: self.consumer.clone(),
            auth: LogAuth {
                ca: self.log_ca.clone(),
                creds: self.log_creds.clone(),
                token_file: self.log_token_file.clone(),
            },
            connect_timeout: self.log_connect_timeout,
            request_timeout: self.log_request_timeout,
            start_timeout: self.log_start_timeout,
        })
    }
}

/// What the stream must be: created so, or found so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSettings {
    /// Stream name.
    pub name: String,
    /// Subjects are `<prefix>.>`.
    pub subject_prefix: String,
    /// Copies of every message.
    pub replicas: usize,
    /// Bound of the stream in bytes (discard new past it).
    pub max_bytes: u64,
    /// How long a message id is remembered.
    pub duplicate_window: Duration,
}

impl StreamSettings {
    /// Settings with the defaults and this name and prefix.
    pub fn new(name: impl Into<String>, subject_prefix: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            subject_prefix: subject_prefix.into(),
            replicas: DEFAULT_STREAM_REPLICAS,
            max_bytes: DEFAULT_STREAM_MAX_BYTES.bytes(),
            duplicate_window: DEFAULT_DUPLICATE_WINDOW,
        }
    }

    /// The one subject filter of the stream.
    pub fn subjects(&self) -> String {
        format!("{}.>", self.subject_prefix)
    }

    /// The subject of the events of one hour (hours since the epoch).
    pub fn subject_for_hour(&self, unix_hour: i64) -> String {
        subject_for_hour(&self.subject_prefix, unix_hour)
    }
}

/// The subject of the events of one hour: `<prefix>.<unix_hour>`.
pub fn subject_for_hour(prefix: &str, unix_hour: i64) -> String {
    format!("{prefix}.{unix_hour}")
}

/// The hour (hours since the epoch) a subject of `prefix` stands for.
pub fn hour_of_subject(prefix: &str, subject: &str) -> Option<i64> {
    subject
        .strip_prefix(prefix)?
        .strip_prefix('.')?
        .parse()
        .ok()
}

/// Where the connection's secrets are: only paths are kept, so that
/// printing a configuration never prints a secret.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogAuth {
    /// CA certificates (PEM) for TLS.
    pub ca: Option<PathBuf>,
    /// A `.creds` file.
    pub creds: Option<PathBuf>,
    /// A file holding a token.
    pub token_file: Option<PathBuf>,
}

/// Fleet mode's settings.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// The cluster's servers.
    pub servers: Vec<NatsUrl>,
    /// The stream.
    pub stream: StreamSettings,
    /// The lake writers' durable consumer.
    pub consumer: String,
    /// TLS and credentials.
    pub auth: LogAuth,
    /// Bound of one connection attempt.
    pub connect_timeout: Duration,
    /// Bound of one JetStream request or publish acknowledgement.
    pub request_timeout: Duration,
    /// Bound of the wait for the stream at start.
    pub start_timeout: Duration,
}

impl FleetConfig {
    /// Settings with the defaults for these servers (tests, embedding).
    pub fn new(servers: &str) -> Result<Self, IngestError> {
        let target: LogTarget = servers
            .parse()
            .map_err(|err: ParseError| IngestError::Config {
                message: err.to_string(),
            })?;
        LogArgs {
            log: target,
            ..LogArgs::default()
        }
        .fleet()
        .ok_or_else(|| IngestError::Config {
            message: "fleet mode needs NATS URLs, not `wal`".into(),
        })
    }

    /// The servers, comma-separated, for messages.
    pub fn servers_text(&self) -> String {
        LogTarget::Nats(self.servers.clone()).to_string()
    }
}

/// Connects to the cluster. The client connects in the background and
/// reconnects by itself, forever, after any loss (a fleet member must come
/// back with its cluster without a restart); meanwhile requests fail
/// within `request_timeout`. Disconnects, reconnects and server errors are
/// logged. `name` is the connection's name in the servers' monitoring.
pub async fn connect(config: &FleetConfig, name: &str) -> Result<async_nats::Client, IngestError> {
    let servers = config
        .servers
        .iter()
        .map(NatsUrl::server_addr)
        .collect::<Result<Vec<_>, _>>()?;
    let mut options = match (&config.auth.creds, &config.auth.token_file) {
        (Some(creds), _) => ConnectOptions::with_credentials_file(creds)
            .await
            .map_err(|err| file_error("--log-creds", creds, &err))?,
        (None, Some(token_file)) => ConnectOptions::with_token(read_token(token_file).await?),
        (None, None) => ConnectOptions::new(),
    };
    if let Some(ca) = &config.auth.ca {
        // Read here so that a missing file is named at start, not at the
        // first handshake.
        tokio::fs::metadata(ca)
            .await
            .map_err(|err| file_error("--log-ca", ca, &err))?;
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    let servers_text = config.servers_text();
    let options = options
        .name(name)
        .connection_timeout(config.connect_timeout)
        .request_timeout(Some(config.request_timeout))
        // A dead peer behind a live TCP path (a partition) is noticed
        // within two pings.
        .ping_interval(Duration::from_secs(10))
        .max_reconnects(None)
        .retry_on_initial_connect()
        .event_callback(move |event| {
            let servers = servers_text.clone();
            async move { log_event(&servers, &event) }
        });
    options
        .connect(servers)
        .await
        .map_err(|err| IngestError::LogUnavailable {
            message: format!("cannot connect to NATS at {}: {err}", config.servers_text()),
        })
}

/// A JetStream context whose requests and publish acknowledgements are
/// bounded by `request_timeout`.
pub fn jetstream(
    client: async_nats::Client,
    config: &FleetConfig,
) -> async_nats::jetstream::Context {
    async_nats::jetstream::context::ContextBuilder::new()
        .timeout(config.request_timeout)
        .build(client)
}

fn log_event(servers: &str, event: &async_nats::Event) {
    use async_nats::Event;
    match event {
        Event::Connected => tracing::info!(servers, "connected to the NATS cluster"),
        Event::Disconnected => tracing::warn!(
            servers,
            "disconnected from the NATS cluster; reconnecting (Ingest answers UNAVAILABLE meanwhile)"
        ),
        Event::LameDuckMode => {
            tracing::warn!(servers, "a NATS server is entering lame duck mode");
        }
        Event::Draining | Event::Closed => tracing::info!(servers, %event, "NATS connection"),
        Event::SlowConsumer(_) | Event::ServerError(_) | Event::ClientError(_) => {
            tracing::warn!(servers, %event, "NATS connection");
        }
    }
}

async fn read_token(path: &Path) -> Result<String, IngestError> {
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|err| file_error("--log-token-file", path, &err))?;
    let token = text.lines().next().unwrap_or_default().trim();
    if token.is_empty() {
        return Err(IngestError::Config {
            message: format!("--log-token-file {}: the file is empty", path.display()),
        });
    }
    Ok(token.to_owned())
}

fn file_error(flag: &str, path: &Path, err: &std::io::Error) -> IngestError {
    // The system's words name the file, never its content.
    IngestError::Config {
        message: format!("{flag} {}: {err}", path.display()),
    }
}

/// A JetStream stream name: what the server accepts (no whitespace, `.`,
/// `*`, `>`, path separators), at most 255 bytes.
pub fn parse_stream_name(text: &str) -> Result<String, ParseError> {
    let bad = text
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>' | '/' | '\\'));
    if text.is_empty() || text.len() > 255 || bad.is_some() {
        return Err(ParseError::new(format!(
            "invalid stream name {text:?}: 1 to 255 characters, none of whitespace, '.', '*', '>', '/' or '\\'"
        )));
    }
    Ok(text.to_owned())
}

/// A subject prefix: dot-separated non-empty tokens without wildcards or
/// whitespace.
pub fn parse_subject_prefix(text: &str) -> Result<String, ParseError> {
    let valid_token = |token: &str| {
        !token.is_empty()
            && !token
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '*' | '>'))
    };
    if text.is_empty() || text.len() > 200 || !text.split('.').all(valid_token) {
        return Err(ParseError::new(format!(
            "invalid subject prefix {text:?}: dot-separated tokens (e.g. vesper.events), none empty, without whitespace, '*' or '>'"
        )));
    }
    Ok(text.to_owned())
}

fn parse_replicas(text: &str) -> Result<usize, ParseError> {
    match text.trim().parse::<usize>() {
        Ok(n) if (1..=5).contains(&n) => Ok(n),
        _ => Err(ParseError::new(format!(
            "invalid replica count {text:?}: JetStream keeps 1 to 5 copies"
        ))),
    }
}

pub(crate) fn parse_positive_duration(text: &str) -> Result<Duration, ParseError> {
    let duration = parse_duration(text)?;
    if duration.is_zero() {
        return Err(ParseError::new(format!(
            "{text:?}: a bound of 0 would refuse everything; give a positive duration"
        )));
    }
    Ok(duration)
}

/// A duplicate window: JetStream's own floor is 100ms, and a window of
/// days would hold every id of days in memory.
fn parse_duplicate_window(text: &str) -> Result<Duration, ParseError> {
    let duration = parse_duration(text)?;
    if duration < Duration::from_millis(100) || duration > Duration::from_secs(24 * 60 * 60) {
        return Err(ParseError::new(format!(
            "duplicate window {text:?} out of range: 100ms to 24h"
        )));
    }
    Ok(duration)
}

/// Runs `attempt` again (with capped, jittered backoff) while the cluster
/// does not answer (`LogUnavailable`), for up to `timeout`: a fleet may
/// start before its NATS cluster. Any other outcome ends the wait at once.
pub(crate) async fn while_cluster_starts<T>(
    timeout: Duration,
    mut attempt: impl AsyncFnMut() -> Result<T, IngestError>,
) -> Result<T, IngestError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut failures = 0;
    loop {
        match attempt().await {
            Err(IngestError::LogUnavailable { message }) => {
                failures += 1;
                let wait = vesper::retry::full_jitter(vesper::retry::backoff_bound(
                    Duration::from_millis(100),
                    Duration::from_secs(2),
                    failures,
                ));
                if tokio::time::Instant::now() + wait >= deadline {
                    return Err(IngestError::LogUnavailable {
                        message: format!(
                            "{message} (still failing after {timeout:?}, --log-start-timeout)"
                        ),
                    });
                }
                tracing::info!(%message, "waiting for the NATS cluster");
                tokio::time::sleep(wait).await;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        log: LogArgs,
    }

    fn parse(args: &[&str]) -> Result<LogArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("vesper").chain(args.iter().copied()))
            .map(|cli| cli.log)
    }

    #[test]
    fn the_default_is_the_local_log_and_fleet_mode_takes_urls() {
        let args = parse(&[]).expect("defaults parse");
        assert_eq!(args.log, LogTarget::Wal);
        assert!(args.fleet().is_none());

        let args = parse(&["--log", "nats://127.0.0.1:4222, nats://n2:4223"]).expect("urls parse");
        let fleet = args.fleet().expect("fleet mode");
        assert_eq!(fleet.servers_text(), "nats://127.0.0.1:4222,nats://n2:4223");
        assert_eq!(fleet.stream.name, DEFAULT_STREAM);
        assert_eq!(fleet.stream.subjects(), "vesper.events.>");
        assert_eq!(fleet.stream.replicas, 3);
        assert_eq!(fleet.stream.max_bytes, 1 << 30);
        assert_eq!(fleet.stream.duplicate_window, DEFAULT_DUPLICATE_WINDOW);
    }

    #[test]
    fn bad_log_values_are_refused_naming_the_problem() {
        for (value, needle) in [
            ("nats://a:1,,nats://b:2", "empty URL"),
            ("wall", "neither `wal` nor a URL"),
            ("http://a:1", "only nats:// and tls://"),
            ("nats://user:secret@a:1", "--log-creds"),
        ] {
            let err = parse(&["--log", value]).expect_err(value).to_string();
            assert!(err.contains(needle), "{value}: {err}");
            assert!(!err.contains("secret"), "a secret was echoed: {err}");
        }
    }

    #[test]
    fn names_prefixes_replicas_and_windows_are_checked() {
        for args in [
            &["--stream", "a.b"][..],
            &["--stream", ""],
            &["--subject-prefix", "a..b"],
            &["--subject-prefix", "a.*"],
            &["--stream-replicas", "0"],
            &["--stream-replicas", "6"],
            &["--duplicate-window", "10ms"],
            &["--duplicate-window", "2d"],
            &["--log-request-timeout", "0s"],
        ] {
            assert!(parse(args).is_err(), "{args:?} was accepted");
        }
        let args = parse(&[
            "--stream",
            "EVENTS_2",
            "--subject-prefix",
            "acme.events",
            "--stream-replicas",
            "1",
            "--duplicate-window",
            "30s",
        ])
        .expect("valid values");
        assert_eq!(args.stream, "EVENTS_2");
        assert_eq!(args.stream_replicas, 1);
        assert_eq!(args.duplicate_window, Duration::from_secs(30));
    }

    #[test]
    fn a_token_file_and_a_creds_file_exclude_each_other() {
        let err = parse(&["--log-creds", "a.creds", "--log-token-file", "t"])
            .expect_err("both refused")
            .to_string();
        assert!(err.contains("cannot be used with"), "{err}");
    }

    #[test]
    fn subjects_are_per_hour_and_read_back() {
        let settings = StreamSettings::new("S", "vesper.events");
        assert_eq!(settings.subject_for_hour(490_000), "vesper.events.490000");
        assert_eq!(
            hour_of_subject("vesper.events", "vesper.events.490000"),
            Some(490_000)
        );
        assert_eq!(hour_of_subject("vesper.events", "vesper.eventsX.1"), None);
        assert_eq!(hour_of_subject("vesper.events", "other.1"), None);
    }

    #[tokio::test]
    async fn secrets_come_from_files_and_missing_files_are_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        let token = dir.path().join("token");
        std::fs::write(&token, "s3cret-token\n").expect("write token");
        assert_eq!(read_token(&token).await.expect("read"), "s3cret-token");

        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").expect("write");
        let err = read_token(&empty).await.expect_err("empty").to_string();
        assert!(err.contains("empty"), "{err}");

        let mut config = FleetConfig::new("nats://127.0.0.1:1").expect("config");
        config.auth.ca = Some(dir.path().join("missing-ca.pem"));
        let err = connect(&config, "test")
            .await
            .expect_err("missing CA")
            .to_string();
        assert!(
            err.contains("--log-ca") && err.contains("missing-ca.pem"),
            "{err}"
        );

        config.auth = LogAuth {
            token_file: Some(token),
            ..LogAuth::default()
        };
        let debug = format!("{config:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
    }
}
