//! The ingest side of fleet mode: an Ingest call validates and filters
//! exactly as on one machine, then publishes every accepted event to the
//! stream and answers once JetStream acknowledged them all.
//!
//! # What an OK means
//!
//! Every accepted event was acknowledged by the stream: stored on a quorum
//! of its replicas (an fsync only when the servers run with
//! `sync_interval: always`). Nothing is acknowledged that JetStream did
//! not acknowledge.
//!
//! # Duplicates
//!
//! The id of every event travels as `Nats-Msg-Id`; the stream drops a
//! second message with the same id within its duplicate window and says so
//! in the acknowledgement, which is what the call counts as a duplicate.
//! The single-node deduplication window is not used: each replica would
//! only know its own calls, while the stream sees those of the whole fleet
//! (and a second, local window would cost memory for nothing).
//!
//! # Failures
//!
//! Publishes are retried with the same ids (so a retry is never stored
//! twice) with capped, jittered backoff, within `--publish-timeout`: a
//! stream leader election or the loss of one node of three costs a call
//! time, not an error. Past the bound the call fails UNAVAILABLE (503 with
//! Retry-After through the webhook), naming the cause. When part of the
//! call was stored, the error says how much; the client's retry of the
//! whole call is idempotent and its answer counts the stored events as
//! duplicates. A full stream (`--stream-max-bytes`, discard new) is not
//! retried within the call: the writers drain it at lake speed.

use std::{
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use async_nats::{
    HeaderMap,
    jetstream::{
        self, ErrorCode,
        context::{PublishError, PublishErrorKind},
        message::PublishMessage,
    },
};
use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use vesper::{
    telemetry,
    v1::{Event, StatsResponse},
};

use super::{FleetConfig, MSG_ID_HEADER, StreamSettings, TRACEPARENT_HEADER, TRACESTATE_HEADER};
use crate::{
    FlushOutcome, IngestConfig, IngestError, IngestOutcome,
    engine::{Candidate, Counters, PrepareError, Prepared, prepare},
};

/// Default bound of the publishes of one Ingest call, retries included.
pub const DEFAULT_PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bound of the publishes waiting for their acknowledgement, over
/// all calls: two calls of the largest size.
pub const DEFAULT_MAX_PUBLISHES_IN_FLIGHT: usize = 2 * crate::DEFAULT_MAX_REQUEST_EVENTS;
/// Default bound of a Flush's wait for the lake writers.
pub const DEFAULT_FLUSH_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the stream's and the writers' state is read for Stats and
/// the gauges.
const STATE_REFRESH: Duration = Duration::from_secs(1);
/// How often a Flush looks at the stream while it waits.
const FLUSH_POLL: Duration = Duration::from_millis(100);
/// How often a call waiting for the connection looks at it.
const CONNECTION_POLL: Duration = Duration::from_millis(20);
/// Bytes a message's headers take at most beside its payload (the id, the
/// trace context, the protocol's framing).
const MESSAGE_HEADROOM: u64 = 1024;
/// First and largest wait between two tries of a call's publishes.
const RETRY_INITIAL: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(1);

/// The publisher's options (`vesper ingest` and `vesper up` in fleet mode).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Fleet mode (--log nats://...)")]
pub struct PublishArgs {
    /// Bound of the publishes of one Ingest call, retries through a leader
    /// election included; past it the call fails UNAVAILABLE (503 with
    /// Retry-After), naming the cause.
    #[arg(
        long,
        env = "VESPER_PUBLISH_TIMEOUT",
        default_value = "10s",
        value_parser = super::parse_positive_duration,
        value_name = "DURATION"
    )]
    pub publish_timeout: Duration,

    /// Bound of the events published and waiting for JetStream's
    /// acknowledgement, over all calls; further publishes wait for room
    /// (within --publish-timeout).
    #[arg(
        long,
        env = "VESPER_MAX_PUBLISHES_IN_FLIGHT",
        default_value_t = DEFAULT_MAX_PUBLISHES_IN_FLIGHT,
        value_parser = vesper::config::parse_positive_count,
        value_name = "N"
    )]
    pub max_publishes_in_flight: usize,

    /// Bound of a Flush's wait for the lake writers to take every event in
    /// the stream at the call; past it Flush fails DEADLINE_EXCEEDED.
    #[arg(
        long,
        env = "VESPER_FLUSH_TIMEOUT",
        default_value = "30s",
        value_parser = super::parse_positive_duration,
        value_name = "DURATION"
    )]
    pub flush_timeout: Duration,
}

impl Default for PublishArgs {
    fn default() -> Self {
        Self {
            publish_timeout: DEFAULT_PUBLISH_TIMEOUT,
            max_publishes_in_flight: DEFAULT_MAX_PUBLISHES_IN_FLIGHT,
            flush_timeout: DEFAULT_FLUSH_TIMEOUT,
        }
    }
}

/// One event on its way to the stream.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    /// `Nats-Msg-Id`: the event id (none only for an id that is not a
    /// UUID, which validation rules out; such an event is not deduplicated,
    /// as on one machine).
    pub(crate) id: Option<String>,
    pub(crate) subject: String,
    pub(crate) payload: Bytes,
}

/// What the stream did with a call's events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Published {
    /// Stored by this call.
    pub(crate) stored: u32,
    /// Dropped by the stream as already stored.
    pub(crate) duplicates: u32,
}

impl Published {
    fn acknowledged(self) -> usize {
        self.stored as usize + self.duplicates as usize
    }
}

/// Why a publish failed.
#[derive(Debug, Clone)]
enum Failure {
    /// Worth another try within the call (no quorum, a leader election, a
    /// dropped connection, a timeout).
    Transient(String),
    /// The stream is at its bound.
    StreamFull,
    /// Another try cannot help (a message over the servers' max_payload).
    Permanent(String),
}

/// The stream's and the writers' state as last read.
#[derive(Debug, Default, Clone)]
struct LogState {
    stream_bytes: u64,
    stream_messages: u64,
    consumer_pending: u64,
    consumer_ack_pending: u64,
    last_error: String,
}

/// The fleet engine: the same Ingest, Flush and Stats as the single-node
/// engine, over the stream.
#[derive(Debug, Clone)]
pub(crate) struct FleetEngine {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: IngestConfig,
    fleet: FleetConfig,
    publish: PublishArgs,
    client: async_nats::Client,
    context: jetstream::Context,
    counters: Mutex<FleetCounters>,
    log_state: Mutex<LogState>,
    pending_publishes: AtomicU64,
    closing: AtomicBool,
    stop: CancellationToken,
}

#[derive(Debug, Default)]
struct FleetCounters {
    counters: Counters,
    refused_batches: u64,
}

impl FleetEngine {
    /// Connects, creates or checks the stream (waiting up to
    /// `--log-start-timeout` for the cluster), and starts the task that
    /// reads the stream's state for Stats and the gauges.
    pub(crate) async fn start(
        config: IngestConfig,
        fleet: FleetConfig,
        publish: PublishArgs,
    ) -> Result<Self, IngestError> {
        let client = super::connect(&fleet, &connection_name()).await?;
        let context = jetstream::context::ContextBuilder::new()
            .timeout(fleet.request_timeout)
            .max_ack_inflight(publish.max_publishes_in_flight)
            // An ack abandoned by a failed call gives its in-flight slot
            // back within the same bound, not the default 30 s.
            .ack_timeout(fleet.request_timeout)
            .build(client.clone());
        let info =
            super::stream::ensure_stream_within(&context, &fleet.stream, fleet.start_timeout)
                .await?;
        // A message over the servers' max_payload can never be stored:
        // refuse the bounds at start rather than every such call later.
        let max_payload = client.server_info().max_payload as u64;
        if max_payload > 0 && config.max_event_bytes + MESSAGE_HEADROOM > max_payload {
            return Err(IngestError::Config {
                message: format!(
                    "--max-event-bytes ({}) plus the message headers does not fit the NATS servers' max_payload ({max_payload}); lower it or raise max_payload on the servers",
                    config.max_event_bytes
                ),
            });
        }
        tracing::info!(
            servers = fleet.servers_text(),
            stream = fleet.stream.name,
            messages = info.state.messages,
            bytes = info.state.bytes,
            "fleet mode: accepted events go to the stream"
        );
        metrics::gauge!("vesper_ingest_stream_limit_bytes").set(fleet.stream.max_bytes as f64);
        let engine = Self {
            inner: Arc::new(Inner {
                config,
                fleet,
                publish,
                client,
                context,
                counters: Mutex::new(FleetCounters::default()),
                log_state: Mutex::new(LogState {
                    stream_bytes: info.state.bytes,
                    stream_messages: info.state.messages,
                    ..LogState::default()
                }),
                pending_publishes: AtomicU64::new(0),
                closing: AtomicBool::new(false),
                stop: CancellationToken::new(),
            }),
        };
        tokio::spawn(engine.clone().watch_state());
        Ok(engine)
    }

    pub(crate) fn config(&self) -> &IngestConfig {
        &self.inner.config
    }

    pub(crate) fn stream(&self) -> &StreamSettings {
        &self.inner.fleet.stream
    }

    pub(crate) fn count_rejected(&self, events: usize) {
        self.counters().counters.reject(events);
    }

    fn counters(&self) -> std::sync::MutexGuard<'_, FleetCounters> {
        // The counters are statistics; a panic elsewhere leaves them at
        // worst stale.
        self.inner
            .counters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn log_state(&self) -> std::sync::MutexGuard<'_, LogState> {
        self.inner
            .log_state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Filters and checks the events as the single-node engine does, then
    /// publishes the accepted ones and waits for all their acks.
    pub(crate) async fn ingest(&self, events: Vec<Event>) -> Result<IngestOutcome, IngestError> {
        if self.inner.closing.load(Ordering::Acquire) {
            return Err(IngestError::ShuttingDown);
        }
        let Prepared {
            candidates,
            mut outcome,
            ..
        } = match prepare(&self.inner.config, events) {
            Ok(prepared) => prepared,
            Err(PrepareError::Refused { events, error }) => {
                self.count_rejected(events);
                return Err(error);
            }
            Err(PrepareError::Other(error)) => return Err(error),
        };
        let prefix = &self.inner.fleet.stream.subject_prefix;
        let messages: Vec<Outgoing> = candidates
            .into_iter()
            .map(|Candidate { id, event }| Outgoing {
                id: id.map(|id| uuid::Uuid::from_u128(id).hyphenated().to_string()),
                subject: super::subject_for_hour(prefix, event.hour),
                payload: event.line,
            })
            .collect();
        if messages.is_empty() {
            self.counters().counters.record(outcome);
            return Ok(outcome);
        }
        let span = tracing::info_span!(
            "publish",
            stream = %self.inner.fleet.stream.name,
            events = messages.len(),
            stored = tracing::field::Empty,
            duplicates = tracing::field::Empty,
        );
        let (published, failure) = self.publish(messages, &span).instrument(span.clone()).await;
        span.record("stored", published.stored);
        span.record("duplicates", published.duplicates);
        outcome.accepted = published.stored;
        outcome.duplicates = published.duplicates;
        let mut counters = self.counters();
        match failure {
            None => {
                counters.counters.record(outcome);
                drop(counters);
                self.log_state().last_error.clear();
                Ok(outcome)
            }
            Some(error) => {
                // What the stream stored is counted: it reaches the lake.
                counters.counters.record(IngestOutcome {
                    filtered: 0,
                    ..outcome
                });
                counters.refused_batches += 1;
                drop(counters);
                let reason = match &error {
                    IngestError::StreamFull { .. } => "stream_full",
                    _ if published.acknowledged() > 0 => "partial",
                    _ => "log_unavailable",
                };
                metrics::counter!("vesper_ingest_refused_batches_total", "reason" => reason)
                    .increment(1);
                self.log_state().last_error = error.to_string();
                Err(error)
            }
        }
    }

    /// Publishes `messages` (all at once, then the ones that failed again,
    /// with the same ids) until every one is acknowledged, the stream is
    /// full, or `--publish-timeout` passes.
    async fn publish(
        &self,
        messages: Vec<Outgoing>,
        span: &tracing::Span,
    ) -> (Published, Option<IngestError>) {
        let total = messages.len();
        let deadline = tokio::time::Instant::now() + self.inner.publish.publish_timeout;
        let trace = trace_headers(span);
        let mut published = Published::default();
        // A message whose earlier try may have been stored (its ack was
        // lost): a later "duplicate" is most likely that earlier try.
        let mut maybe_stored = vec![false; total];
        let mut remaining: Vec<usize> = (0..total).collect();
        let mut failures = 0_u32;
        loop {
            let mut failed: Vec<(usize, Failure)> = Vec::new();
            if let Err(failure) = self.wait_connected(deadline).await {
                failed.extend(remaining.iter().map(|&index| (index, failure.clone())));
            } else {
                let mut acks = Vec::with_capacity(remaining.len());
                for &index in &remaining {
                    let message = &messages[index];
                    let mut headers = trace.clone();
                    if let Some(id) = &message.id {
                        headers.insert(MSG_ID_HEADER, id.as_str());
                    }
                    let publish = PublishMessage::build()
                        .payload(message.payload.clone())
                        .headers(headers);
                    let sent = tokio::time::timeout_at(
                        deadline,
                        self.inner
                            .context
                            .send_publish(message.subject.clone(), publish),
                    )
                    .await;
                    match sent {
                        Ok(Ok(ack)) => acks.push((index, ack)),
                        Ok(Err(err)) => failed.push((index, self.classify(&err))),
                        Err(_) => failed.push((index, self.timed_out())),
                    }
                }
                let pending = acks.len() as u64;
                self.inner
                    .pending_publishes
                    .fetch_add(pending, Ordering::Relaxed);
                let results =
                    futures::future::join_all(acks.into_iter().map(|(index, ack)| async move {
                        (
                            index,
                            tokio::time::timeout_at(
                                deadline,
                                std::future::IntoFuture::into_future(ack),
                            )
                            .await,
                        )
                    }))
                    .await;
                self.inner
                    .pending_publishes
                    .fetch_sub(pending, Ordering::Relaxed);
                for (index, result) in results {
                    match result {
                        Ok(Ok(ack)) if ack.duplicate && !maybe_stored[index] => {
                            published.duplicates += 1;
                        }
                        Ok(Ok(_)) => published.stored += 1,
                        Ok(Err(err)) => {
                            if matches!(
                                err.kind(),
                                PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe
                            ) {
                                maybe_stored[index] = true;
                            }
                            failed.push((index, self.classify(&err)));
                        }
                        Err(_) => {
                            maybe_stored[index] = true;
                            failed.push((index, self.timed_out()));
                        }
                    }
                }
            }
            if failed.is_empty() {
                return (published, None);
            }
            failures += 1;
            metrics::counter!("vesper_ingest_publish_retries_total").increment(1);
            let worst = failed
                .iter()
                .map(|(_, failure)| failure)
                .find(|failure| !matches!(failure, Failure::Transient(_)))
                .unwrap_or(&failed[0].1)
                .clone();
            let wait = vesper::retry::full_jitter(vesper::retry::backoff_bound(
                RETRY_INITIAL,
                RETRY_MAX,
                failures,
            ));
            let out_of_time = tokio::time::Instant::now() + wait >= deadline;
            if out_of_time || !matches!(worst, Failure::Transient(_)) {
                let error = self.failure_error(worst, failed.len(), total, published);
                tracing::warn!(error = %error, tries = failures, "publish failed");
                return (published, Some(error));
            }
            tracing::debug!(
                failed = failed.len(),
                tries = failures,
                "publishes failed; trying again with the same ids"
            );
            tokio::time::sleep(wait).await;
            remaining = failed.into_iter().map(|(index, _)| index).collect();
        }
    }

    /// Waits (up to `deadline`) for the client to be connected: publishing
    /// while it is not would only queue messages in the client that could
    /// go out after the call has failed.
    async fn wait_connected(&self, deadline: tokio::time::Instant) -> Result<(), Failure> {
        use async_nats::connection::State;
        loop {
            if self.inner.client.connection_state() == State::Connected {
                return Ok(());
            }
            if tokio::time::Instant::now() + CONNECTION_POLL >= deadline {
                return Err(Failure::Transient(format!(
                    "not connected to any NATS server of {} (--publish-timeout {:?})",
                    self.inner.fleet.servers_text(),
                    self.inner.publish.publish_timeout
                )));
            }
            tokio::time::sleep(CONNECTION_POLL).await;
        }
    }

    fn timed_out(&self) -> Failure {
        Failure::Transient(format!(
            "no acknowledgement from stream {} within --publish-timeout {:?} (no quorum, no stream leader, or the cluster is unreachable)",
            self.inner.fleet.stream.name, self.inner.publish.publish_timeout
        ))
    }

    fn classify(&self, err: &PublishError) -> Failure {
        let stream = &self.inner.fleet.stream.name;
        match err.kind() {
            PublishErrorKind::TimedOut => Failure::Transient(format!(
                "no acknowledgement from stream {stream} within {:?} (--log-request-timeout; no quorum or no stream leader?)",
                self.inner.fleet.request_timeout
            )),
            PublishErrorKind::StreamNotFound => Failure::Transient(format!(
                "no server answered for stream {stream} (no stream leader, or the stream is gone)"
            )),
            PublishErrorKind::BrokenPipe => {
                Failure::Transient("the connection to the NATS cluster dropped".into())
            }
            PublishErrorKind::MaxAckPending => Failure::Transient(format!(
                "too many publishes waiting for acknowledgement (--max-publishes-in-flight {})",
                self.inner.publish.max_publishes_in_flight
            )),
            PublishErrorKind::MaxPayloadExceeded
            | PublishErrorKind::WrongLastMessageId
            | PublishErrorKind::WrongLastSequence => Failure::Permanent(err.to_string()),
            PublishErrorKind::Other => {
                let jetstream = std::error::Error::source(err)
                    .and_then(|source| source.downcast_ref::<jetstream::Error>());
                let full = jetstream.is_some_and(|js| {
                    js.error_code() == ErrorCode::STORAGE_RESOURCES_EXCEEDED
                        || js.error_code() == ErrorCode::STREAM_STORE_FAILED
                            && js.to_string().contains("maximum bytes")
                }) || err.to_string().contains("maximum bytes exceeded");
                if full {
                    Failure::StreamFull
                } else {
                    Failure::Transient(format!("stream {stream}: {err}"))
                }
            }
        }
    }

    fn failure_error(
        &self,
        failure: Failure,
        failed: usize,
        total: usize,
        published: Published,
    ) -> IngestError {
        let cause = match failure {
            Failure::StreamFull => IngestError::StreamFull {
                stream: self.inner.fleet.stream.name.clone(),
                max_bytes: self.inner.fleet.stream.max_bytes,
            },
            Failure::Transient(message) | Failure::Permanent(message) => {
                IngestError::LogUnavailable { message }
            }
        };
        let stored = published.acknowledged();
        if stored == 0 {
            return cause;
        }
        debug_assert_eq!(stored + failed, total);
        IngestError::PartiallyStored {
            stored,
            total,
            cause: cause.to_string(),
        }
    }

    /// Waits until the lake writers have taken (acked, so deleted from the
    /// work-queue stream) every message the stream held at the call.
    pub(crate) async fn flush(&self) -> Result<FlushOutcome, IngestError> {
        let started = Instant::now();
        let deadline = started + self.inner.publish.flush_timeout;
        let name = &self.inner.fleet.stream.name;
        let unavailable = |err: &dyn std::fmt::Display| IngestError::LogUnavailable {
            message: format!("cannot read stream {name}: {err}"),
        };
        let mut stream = self
            .inner
            .context
            .get_stream(name)
            .await
            .map_err(|err| unavailable(&err))?;
        let at_call = stream.cached_info().state.clone();
        let target = at_call.last_sequence;
        loop {
            let state = &stream.cached_info().state;
            if state.messages == 0 || state.first_sequence > target {
                return Ok(FlushOutcome {
                    keys: Vec::new(),
                    events: at_call.messages,
                });
            }
            if Instant::now() + FLUSH_POLL >= deadline {
                return Err(IngestError::FlushTimeout {
                    stream: name.clone(),
                    waited: started.elapsed(),
                    target,
                    remaining: state.messages,
                });
            }
            tokio::time::sleep(FLUSH_POLL).await;
            stream.info().await.map_err(|err| unavailable(&err))?;
        }
    }

    /// Fills the fleet fields of a Stats answer.
    pub(crate) fn stats(&self) -> StatsResponse {
        use async_nats::connection::State;
        let counters = self.counters();
        let state = self.log_state().clone();
        StatsResponse {
            accepted: counters.counters.accepted,
            filtered: counters.counters.filtered,
            duplicates: counters.counters.duplicates,
            rejected: counters.counters.rejected,
            refused_batches: counters.refused_batches,
            buffered_events: state.stream_messages,
            max_event_bytes: self.inner.config.max_event_bytes,
            storage_healthy: true,
            log: "nats".into(),
            log_connected: self.inner.client.connection_state() == State::Connected,
            stream_bytes: state.stream_bytes,
            stream_messages: state.stream_messages,
            stream_max_bytes: self.inner.fleet.stream.max_bytes,
            consumer_pending: state.consumer_pending,
            consumer_ack_pending: state.consumer_ack_pending,
            pending_publishes: self.inner.pending_publishes.load(Ordering::Relaxed),
            last_log_error: state.last_error,
            ..StatsResponse::default()
        }
    }

    /// Reads the stream's and the writers' consumer's state every
    /// [`STATE_REFRESH`] until shutdown.
    async fn watch_state(self) {
        let stop = self.inner.stop.clone();
        loop {
            self.refresh_state().await;
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(STATE_REFRESH) => {}
            }
        }
    }

    async fn refresh_state(&self) {
        let name = &self.inner.fleet.stream.name;
        let stream = match self.inner.context.get_stream(name).await {
            Ok(stream) => stream,
            Err(err) => {
                self.log_state().last_error = format!("cannot read stream {name}: {err}");
                return;
            }
        };
        let stream_state = stream.cached_info().state.clone();
        // The writers' consumer may not exist yet (no writer started).
        let consumer = stream
            .consumer_info(&self.inner.fleet.consumer)
            .await
            .ok()
            .map(|info| (info.num_pending, info.num_ack_pending as u64));
        let (pending, ack_pending) = consumer.unwrap_or_default();
        let mut state = self.log_state();
        state.stream_bytes = stream_state.bytes;
        state.stream_messages = stream_state.messages;
        state.consumer_pending = pending;
        state.consumer_ack_pending = ack_pending;
        metrics::gauge!("vesper_ingest_stream_bytes").set(stream_state.bytes as f64);
        metrics::gauge!("vesper_ingest_stream_messages").set(stream_state.messages as f64);
        metrics::gauge!("vesper_ingest_consumer_pending").set(pending as f64);
        metrics::gauge!("vesper_ingest_consumer_ack_pending").set(ack_pending as f64);
        metrics::gauge!("vesper_ingest_publish_pending")
            .set(self.inner.pending_publishes.load(Ordering::Relaxed) as f64);
    }

    /// Stops taking calls, waits (bounded) for the client to send what it
    /// holds, and stops the state reader. Idempotent.
    pub(crate) async fn shutdown(&self) {
        if self.inner.closing.swap(true, Ordering::AcqRel) {
            return;
        }
        self.inner.stop.cancel();
        let flushed =
            tokio::time::timeout(self.inner.fleet.request_timeout, self.inner.client.flush()).await;
        if !matches!(flushed, Ok(Ok(()))) {
            tracing::warn!("the NATS connection did not flush before shutdown");
        }
        tracing::info!("ingest engine stopped (fleet mode)");
    }
}

/// The W3C trace context of the publish span, as message headers, so the
/// lake writer links its write to the calls whose events it carries.
fn trace_headers(span: &tracing::Span) -> HeaderMap {
    let mut http_headers = tonic::codegen::http::HeaderMap::new();
    telemetry::inject_context(span, &mut http_headers);
    let mut headers = HeaderMap::new();
    for name in [TRACEPARENT_HEADER, TRACESTATE_HEADER] {
        if let Some(value) = http_headers.get(name).and_then(|value| value.to_str().ok()) {
            headers.insert(name, value);
        }
    }
    headers
}

/// The connection's name in the servers' monitoring: the host, when known.
fn connection_name() -> String {
    match std::env::var("HOSTNAME") {
        Ok(host) if !host.is_empty() => format!("vesper-ingest@{host}"),
        _ => format!("vesper-ingest@pid{}", std::process::id()),
    }
}
