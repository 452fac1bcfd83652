//! The lake writer of fleet mode: any number of writer processes share one
//! durable pull consumer of the event stream, batch its messages per hour
//! partition by the same rules as the single-node flusher
//! ([`BatchRules`]: `--batch-bytes`, `--batch-size`, `--max-batch-age`),
//! write each batch through Storage, and ack its messages only once Storage
//! confirmed the object.
//!
//! # Keys
//!
//! An object is named `Partition::object_key(first, last, <stream>)`: the
//! first and last *stream* sequence numbers of its messages. A batch of the
//! same messages written again (a retry, or the same batch cut again after
//! a redelivery) overwrites the same object instead of adding one.
//!
//! # Flow control
//!
//! - Pulls are bounded: at most `--fetch-max-messages` messages and
//!   `--fetch-max-bytes` bytes per pull request.
//! - Memory is bounded: messages held (in open batches, in objects waiting
//!   for or in a write) cost their payload plus bookkeeping; the writer
//!   pulls only while a whole pull still fits under `--max-held-bytes`.
//!   Past it, it stops pulling until a write frees memory; JetStream keeps
//!   the rest (and hands it to other writers).
//! - While a message waits (in a batch, or in a write that storage is slow
//!   to confirm) longer than half the consumer's ack wait, the writer sends
//!   an in-progress ack (`+WPI`), so that a slow storage does not make
//!   JetStream hand the same messages to another writer.
//! - A failed write is retried with capped exponential backoff and full
//!   jitter (`--flush-retry-max`), each attempt bounded by
//!   `--write-timeout`. Nothing is acked meanwhile. There is no dead-letter
//!   directory in fleet mode: an object storage refuses for good (it cannot
//!   happen for the keys and sizes the writer makes, which are checked at
//!   start) stays unacked and is retried, visible in `/health`.
//!
//! # How many copies of an event can reach the lake
//!
//! Without a failure, exactly one: each message is delivered to one
//! writer, put in one batch, written under one key (retries overwrite),
//! then acked, and an acked message is deleted from the work-queue stream.
//!
//! A copy can only come from a *redelivery of a message whose object was
//! already written*: the message's ack did not reach the stream's
//! consumer before its ack wait ran out. That takes a failure between the
//! object's write and the ack's replication — the writer killed (or its
//! machine lost) after the write, its NATS connection lost before the
//! acks went out, or the consumer's leader lost before it replicated the
//! ack — or a writer stalled longer than the ack wait with its
//! in-progress acks not getting through, or storage that wrote an object
//! without confirming it while the writer was stopping (it hands the
//! messages back). The redelivered message is batched anew, generally
//! with other messages, so its new object has other sequence bounds and is
//! a second copy. Each delivery of a message
//! ends up in at most one object key (a writer holds a sequence number
//! once, and a batch keeps its key across retries), so:
//!
//! > copies of an event in the lake ≤ 1 + F, where F is the number of such
//! > failures that struck while the event's message was written but not
//! > yet acked.
//!
//! With the consumer's unlimited `max_deliver` no event is ever lost to
//! redelivery limits; the bound above is on duplicates only. The
//! analytics drop them: the staging model of events keeps one row per
//! `event_id`. (This bound is on top of what the publisher side allows:
//! JetStream's duplicate window drops a re-published event with the same
//! `Nats-Msg-Id` inside the window.)

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use async_nats::{
    Subject,
    jetstream::{
        self, AckKind, ErrorCode,
        consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull},
        context::{ConsumerInfoError, ConsumerInfoErrorKind, GetStreamErrorKind},
    },
};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use vesper::config::{ByteSize, parse_duration};
use vesper_storage::ObjectStore;

use super::{FleetConfig, StreamSettings, TRACEPARENT_HEADER, hour_of_subject};
use crate::{
    BatchArgs, BatchRules, IngestError,
    batching::{self, Batched, CallTraces, object_body, put_object},
    lake::Partition,
};

/// Default ack wait of the consumer: how long JetStream waits for a
/// writer's ack (or in-progress ack) before it hands the message to
/// another writer. Long enough for a batch's age, one write and one retry
/// wait at the defaults (5 s + 20 s + 10 s); short enough that the
/// messages of a killed writer are written by another within a minute.
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(60);
/// Default most messages of one pull request.
pub const DEFAULT_FETCH_MAX_MESSAGES: u32 = 1000;
/// Default most bytes of one pull request: NATS's default largest
/// message, so that any message the stream holds fits one pull.
pub const DEFAULT_FETCH_MAX_BYTES: ByteSize = ByteSize::mib(1);
/// Default bound of the messages a writer holds (open batches, objects
/// waiting for or in a write): sixteen objects of the default 4 MiB, the
/// single-node memory window's default.
pub const DEFAULT_MAX_HELD_BYTES: ByteSize = ByteSize::mib(64);
/// Default bound of one write to storage.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(20);

/// How long one pull request waits on the server for messages. Short, so
/// that a pull lost with a server is noticed soon (the client gives it
/// five more seconds).
const PULL_EXPIRES: Duration = Duration::from_secs(2);
/// Bytes a held message costs beyond its payload (its reply subject,
/// bookkeeping).
const HELD_OVERHEAD: u64 = 160;
/// The smallest lake line the consumer's `max_ack_pending` is sized for.
/// An upstream event's line is about 400 bytes; every held byte in
/// messages of this size still fits.
const SIZING_LINE_BYTES: u64 = 256;
/// Writes in flight at once (each holds its object's body).
const WRITE_CONCURRENCY: usize = 2;
/// First wait before retrying a failed write (doubles up to
/// `--flush-retry-max`).
const RETRY_INITIAL: Duration = Duration::from_millis(200);
/// Attempts of a write once the writer is stopping; what storage still
/// refuses is handed back to JetStream (negatively acked) for another
/// writer.
const SHUTDOWN_WRITE_ATTEMPTS: u32 = 3;
/// How often the consumer's state is read for `/health` and the gauges.
const CONSUMER_POLL_INTERVAL: Duration = Duration::from_secs(5);
/// Bound of the waits for NATS while stopping (sending the last acks).
const STOP_NATS_TIMEOUT: Duration = Duration::from_secs(5);

/// The lake writer's own options (the batch options and the `--log`
/// options are shared with ingest).
#[derive(Debug, Clone, clap::Args)]
pub struct WriterArgs {
    /// How long JetStream waits for a writer's ack before it gives the
    /// message to another writer (set when the consumer is created). Must
    /// be longer than --max-batch-age + --write-timeout + --flush-retry-max;
    /// writers holding messages longer send in-progress acks.
    #[arg(
        long,
        env = "VESPER_ACK_WAIT",
        default_value = "60s",
        value_parser = parse_duration,
        value_name = "DURATION"
    )]
    pub ack_wait: Duration,

    /// Most messages one pull request asks for.
    #[arg(
        long,
        env = "VESPER_FETCH_MAX_MESSAGES",
        default_value_t = DEFAULT_FETCH_MAX_MESSAGES,
        value_parser = clap::value_parser!(u32).range(1..=100_000),
        value_name = "N"
    )]
    pub fetch_max_messages: u32,

    /// Most bytes one pull request asks for; must hold the largest message
    /// the servers take (their max_payload, checked at start).
    #[arg(
        long,
        env = "VESPER_FETCH_MAX_BYTES",
        default_value_t = DEFAULT_FETCH_MAX_BYTES,
        value_name = "SIZE"
    )]
    pub fetch_max_bytes: ByteSize,

    /// Bound of the messages a writer holds (open batches and objects
    /// being written); past it the writer stops pulling until a write
    /// frees memory, and JetStream keeps the rest for it or other writers.
    /// Must hold one batch of --batch-bytes and one pull of
    /// --fetch-max-bytes.
    #[arg(
        long,
        env = "VESPER_MAX_HELD_BYTES",
        default_value_t = DEFAULT_MAX_HELD_BYTES,
        value_name = "SIZE"
    )]
    pub max_held_bytes: ByteSize,

    /// Bound of one write to storage; a write without an answer by then
    /// counts as failed and is retried (the same key: no copy).
    #[arg(
        long,
        env = "VESPER_WRITE_TIMEOUT",
        default_value = "20s",
        value_parser = parse_duration,
        value_name = "DURATION"
    )]
    pub write_timeout: Duration,
}

impl Default for WriterArgs {
    fn default() -> Self {
        Self {
            ack_wait: DEFAULT_ACK_WAIT,
            fetch_max_messages: DEFAULT_FETCH_MAX_MESSAGES,
            fetch_max_bytes: DEFAULT_FETCH_MAX_BYTES,
            max_held_bytes: DEFAULT_MAX_HELD_BYTES,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
        }
    }
}

/// How a lake writer runs.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// The stream (its name is part of every object key).
    pub stream: StreamSettings,
    /// The durable consumer.
    pub consumer: String,
    /// When a partition's messages become an object.
    pub rules: BatchRules,
    /// First wait before retrying a failed write.
    pub retry_initial: Duration,
    /// Longest wait between write retries.
    pub retry_max: Duration,
    /// Bound of one write.
    pub write_timeout: Duration,
    /// The consumer's ack wait when the writer creates it.
    pub ack_wait: Duration,
    /// Most messages per pull.
    pub fetch_max_messages: usize,
    /// Most bytes per pull.
    pub fetch_max_bytes: u64,
    /// Bound of the messages held.
    pub max_held_bytes: u64,
    /// The largest object storage accepts.
    pub max_object_size: u64,
}

impl WriterConfig {
    /// The configuration of these options.
    pub fn new(
        fleet: &FleetConfig,
        batch: &BatchArgs,
        writer: &WriterArgs,
        max_object_size: u64,
    ) -> Self {
        Self {
            stream: fleet.stream.clone(),
            consumer: fleet.consumer.clone(),
            rules: batch.rules(),
            retry_initial: RETRY_INITIAL,
            retry_max: batch.flush_retry_max,
            write_timeout: writer.write_timeout,
            ack_wait: writer.ack_wait,
            fetch_max_messages: writer.fetch_max_messages as usize,
            fetch_max_bytes: writer.fetch_max_bytes.bytes(),
            max_held_bytes: writer.max_held_bytes.bytes(),
            max_object_size,
        }
    }

    /// The shortest ack wait the writer works with: a message may wait a
    /// batch's age, then a write, then a retry wait, before the writer
    /// next acts on it.
    pub fn required_ack_wait(&self) -> Duration {
        self.rules.max_batch_age + self.write_timeout + self.retry_max
    }

    /// The smallest `max_ack_pending` the writer works with: every message
    /// it may hold (a full batch of every partition its memory bound lets
    /// it keep open), counted in lines of 256 bytes (an upstream event's
    /// is about 400), and never less than a full batch by count or one
    /// pull.
    pub fn required_max_ack_pending(&self) -> i64 {
        let by_bytes = self.max_held_bytes / SIZING_LINE_BYTES;
        let by_count = u64::from(self.rules.batch_size)
            * self.max_held_bytes.div_ceil(self.rules.batch_bytes.max(1));
        let needed = by_bytes.max(by_count).max(self.fetch_max_messages as u64);
        i64::try_from(needed).unwrap_or(i64::MAX)
    }

    /// Checks the bounds against each other.
    pub fn check(&self) -> Result<(), IngestError> {
        let fail = |message: String| Err(IngestError::Config { message });
        if self.rules.batch_bytes > self.max_object_size {
            return fail(format!(
                "--batch-bytes ({}) must not exceed the object-size limit of storage ({})",
                self.rules.batch_bytes, self.max_object_size
            ));
        }
        if self.max_held_bytes < self.rules.batch_bytes + self.fetch_max_bytes {
            return fail(format!(
                "--max-held-bytes ({}) must hold one batch of --batch-bytes ({}) and one pull of --fetch-max-bytes ({})",
                self.max_held_bytes, self.rules.batch_bytes, self.fetch_max_bytes
            ));
        }
        if self.write_timeout.is_zero() {
            return fail("--write-timeout must be more than 0".into());
        }
        if self.ack_wait <= self.required_ack_wait() {
            return fail(format!(
                "--ack-wait ({:?}) must be longer than --max-batch-age + --write-timeout + --flush-retry-max ({:?})",
                self.ack_wait,
                self.required_ack_wait()
            ));
        }
        Ok(())
    }

    /// The consumer the writer creates when there is none.
    pub fn consumer_config(&self) -> pull::Config {
        pull::Config {
            durable_name: Some(self.consumer.clone()),
            description: Some(
                "vesper lake writers: batches of the event stream to the lake".into(),
            ),
            ack_policy: AckPolicy::Explicit,
            deliver_policy: DeliverPolicy::All,
            ack_wait: self.ack_wait,
            max_deliver: -1,
            max_ack_pending: self.required_max_ack_pending(),
            ..pull::Config::default()
        }
    }

    /// Every way an existing consumer breaks the writer's guarantees,
    /// naming the setting and the flag behind the bound.
    pub fn consumer_mismatches(&self, found: &jetstream::consumer::Config) -> Vec<String> {
        let mut problems = Vec::new();
        if found.ack_policy != AckPolicy::Explicit {
            problems.push(format!(
                "ack policy is {:?}, expected Explicit (a message is acked once its object is in the lake)",
                found.ack_policy
            ));
        }
        if found.deliver_policy != DeliverPolicy::All {
            problems.push(format!(
                "deliver policy is {:?}, expected All (every event of the stream goes to the lake)",
                found.deliver_policy
            ));
        }
        if found.max_deliver > 0 {
            problems.push(format!(
                "max_deliver is {}, expected unlimited (-1): a limit would drop events storage was slow to take",
                found.max_deliver
            ));
        }
        if found.ack_wait <= self.required_ack_wait() {
            problems.push(format!(
                "ack wait is {:?}, expected longer than --max-batch-age + --write-timeout + --flush-retry-max ({:?})",
                found.ack_wait,
                self.required_ack_wait()
            ));
        }
        let required = self.required_max_ack_pending();
        if found.max_ack_pending > 0 && found.max_ack_pending < required {
            problems.push(format!(
                "max_ack_pending is {}, expected at least {required} (what --max-held-bytes lets a writer hold: a full batch of every open partition)",
                found.max_ack_pending
            ));
        }
        if found.deliver_subject.is_some() {
            problems.push("it is a push consumer; the lake writers pull".into());
        }
        let all = self.stream.subjects();
        let filters: Vec<&String> = std::iter::once(&found.filter_subject)
            .chain(found.filter_subjects.iter())
            .filter(|filter| !filter.is_empty())
            .collect();
        if filters.iter().any(|filter| **filter != all) {
            problems.push(format!(
                "it filters {filters:?}, expected every subject of the stream ({all})"
            ));
        }
        problems
    }
}

/// Finds the writers' durable consumer, or creates it, and checks it.
/// A consumer another writer created with other (sufficient) settings is
/// used as it is; one that breaks a guarantee is refused, every problem
/// named ([`IngestError::ConsumerMismatch`]).
pub async fn ensure_consumer(
    context: &jetstream::Context,
    config: &WriterConfig,
) -> Result<PullConsumer, IngestError> {
    let stream_name = &config.stream.name;
    let unavailable = |what: &str, err: &dyn std::fmt::Display| IngestError::LogUnavailable {
        message: format!(
            "cannot {what} consumer {} of stream {stream_name}: {err}",
            config.consumer
        ),
    };
    let stream = context
        .get_stream(stream_name)
        .await
        .map_err(|err| match err.kind() {
            GetStreamErrorKind::JetStream(js) if js.error_code() == ErrorCode::STREAM_NOT_FOUND => {
                IngestError::Config {
                    message: format!("stream {stream_name} does not exist"),
                }
            }
            _ => unavailable("look up", &err),
        })?;
    let info = match stream.consumer_info(&config.consumer).await {
        Ok(info) => info,
        Err(err) if is_consumer_not_found(&err) => {
            match stream.create_consumer(config.consumer_config()).await {
                Ok(mut consumer) => {
                    tracing::info!(
                        stream = stream_name,
                        consumer = config.consumer,
                        ack_wait = ?config.ack_wait,
                        max_ack_pending = config.required_max_ack_pending(),
                        "created the lake writers' consumer"
                    );
                    consumer
                        .info()
                        .await
                        .map_err(|err| unavailable("read", &err))?
                        .clone()
                }
                // Another writer created it meanwhile (with the same
                // settings or others): take it and check it.
                Err(_) => stream
                    .consumer_info(&config.consumer)
                    .await
                    .map_err(|err| unavailable("create", &err))?,
            }
        }
        Err(err) => return Err(unavailable("look up", &err)),
    };
    let problems = config.consumer_mismatches(&info.config);
    if !problems.is_empty() {
        return Err(IngestError::ConsumerMismatch {
            stream: stream_name.clone(),
            consumer: config.consumer.clone(),
            mismatches: problems,
        });
    }
    if info.config.ack_wait != config.ack_wait {
        tracing::info!(
            consumer = config.consumer,
            ack_wait = ?info.config.ack_wait,
            flag = ?config.ack_wait,
            "the consumer exists with another ack wait than --ack-wait; the consumer's is used"
        );
    }
    stream
        .get_consumer(&config.consumer)
        .await
        .map_err(|err| unavailable("open", &*err))
}

fn is_consumer_not_found(err: &ConsumerInfoError) -> bool {
    match err.kind() {
        ConsumerInfoErrorKind::NotFound => true,
        ConsumerInfoErrorKind::JetStream(js) => js.error_code() == ErrorCode::CONSUMER_NOT_FOUND,
        _ => false,
    }
}

/// [`ensure_consumer`], tried again (with backoff) while the cluster does
/// not answer, for up to `timeout`. A mismatch ends the wait at once.
pub async fn ensure_consumer_within(
    context: &jetstream::Context,
    config: &WriterConfig,
    timeout: Duration,
) -> Result<PullConsumer, IngestError> {
    super::while_cluster_starts(timeout, async || ensure_consumer(context, config).await).await
}

/// What a writer has done since it started, and what it holds.
#[derive(Debug, Default, Clone)]
struct Status {
    objects_written: u64,
    events_written: u64,
    acked_messages: u64,
    redelivered_messages: u64,
    progress_acks: u64,
    failed_writes: u64,
    terminated_messages: u64,
    held_messages: u64,
    held_bytes: u64,
    open_partitions: u64,
    objects_waiting: u64,
    pulling: bool,
    storage_healthy: bool,
    last_write_error: String,
    consumer: Option<ConsumerState>,
}

/// The shared consumer's state, as JetStream last reported it.
#[derive(Debug, Clone, Copy)]
struct ConsumerState {
    /// Messages not yet delivered to any writer (the lag).
    pending: u64,
    /// Messages delivered and not yet acked, over every writer.
    ack_pending: u64,
    /// Messages delivered more than once so far.
    redelivered: u64,
    /// Pull requests waiting.
    waiting: u64,
    ack_wait: Duration,
    max_ack_pending: i64,
}

impl ConsumerState {
    fn of(info: &jetstream::consumer::Info) -> Self {
        Self {
            pending: info.num_pending,
            ack_pending: info.num_ack_pending as u64,
            redelivered: info.num_redelivered as u64,
            waiting: info.num_waiting as u64,
            ack_wait: info.config.ack_wait,
            max_ack_pending: info.config.max_ack_pending,
        }
    }

    fn record_gauges(&self) {
        metrics::gauge!("vesper_ingest_consumer_pending").set(self.pending as f64);
        metrics::gauge!("vesper_ingest_consumer_ack_pending").set(self.ack_pending as f64);
    }
}

/// A running lake writer: cheap to clone.
#[derive(Debug, Clone)]
pub struct LakeWriter {
    status: Arc<Mutex<Status>>,
    consumer: PullConsumer,
    config: Arc<WriterConfig>,
    stop: CancellationToken,
    task: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl LakeWriter {
    /// Starts writing what `consumer` delivers to `store`. `client` is the
    /// connection the consumer's context runs on (the acks go through it).
    pub fn start(
        client: async_nats::Client,
        consumer: PullConsumer,
        config: WriterConfig,
        store: Arc<dyn ObjectStore>,
    ) -> Result<Self, IngestError> {
        config.check()?;
        let max_payload = client.server_info().max_payload as u64;
        if max_payload > config.fetch_max_bytes {
            return Err(IngestError::Config {
                message: format!(
                    "--fetch-max-bytes ({}) is smaller than the largest message the NATS servers take (max_payload {max_payload}); a pull could never carry such a message",
                    config.fetch_max_bytes
                ),
            });
        }
        let ack_wait = consumer.cached_info().config.ack_wait;
        let config = Arc::new(config);
        let status = Arc::new(Mutex::new(Status {
            storage_healthy: true,
            consumer: Some(ConsumerState::of(consumer.cached_info())),
            ..Status::default()
        }));
        metrics::gauge!("vesper_ingest_writer_held_limit_bytes").set(config.max_held_bytes as f64);
        let stop = CancellationToken::new();
        let run = Run {
            config: Arc::clone(&config),
            client,
            consumer: consumer.clone(),
            store,
            status: Arc::clone(&status),
            ack_wait,
            partitions: BTreeMap::new(),
            held: HashMap::new(),
            held_bytes: 0,
            waiting: VecDeque::new(),
            writes: JoinSet::new(),
            give_up: CancellationToken::new(),
        };
        let task = tokio::spawn(run.run(stop.clone()));
        tokio::spawn(poll_consumer(
            consumer.clone(),
            Arc::clone(&status),
            stop.clone(),
        ));
        tracing::info!(
            stream = config.stream.name,
            consumer = config.consumer,
            ack_wait = ?ack_wait,
            batch_bytes = config.rules.batch_bytes,
            batch_size = config.rules.batch_size,
            max_batch_age = ?config.rules.max_batch_age,
            max_held_bytes = config.max_held_bytes,
            "lake writer started"
        );
        Ok(Self {
            status,
            consumer,
            config,
            stop,
            task: Arc::new(Mutex::new(Some(task))),
        })
    }

    /// The writer's state as JSON for `/health`: what it wrote, what it
    /// holds, and the shared consumer's state (read now, or the last known
    /// state when JetStream does not answer).
    pub async fn health(&self) -> Value {
        let fresh = tokio::time::timeout(STOP_NATS_TIMEOUT, self.consumer.get_info()).await;
        let mut status = self.lock().clone();
        let consumer_error = match fresh {
            Ok(Ok(info)) => {
                let state = ConsumerState::of(&info);
                state.record_gauges();
                self.lock().consumer = Some(state);
                status.consumer = Some(state);
                None
            }
            Ok(Err(err)) => Some(err.to_string()),
            Err(_) => Some(format!("no answer within {STOP_NATS_TIMEOUT:?}")),
        };
        let healthy = status.storage_healthy && consumer_error.is_none();
        json!({
            "status": if healthy { "ok" } else { "degraded" },
            "stream": self.config.stream.name,
            "consumer": {
                "name": self.config.consumer,
                "pending": status.consumer.map(|c| c.pending),
                "ack_pending": status.consumer.map(|c| c.ack_pending),
                "redelivered": status.consumer.map(|c| c.redelivered),
                "waiting_pulls": status.consumer.map(|c| c.waiting),
                "ack_wait_ms": status.consumer.map(|c| c.ack_wait.as_millis() as u64),
                "max_ack_pending": status.consumer.map(|c| c.max_ack_pending),
                "error": consumer_error,
            },
            "writer": {
                "objects_written": status.objects_written,
                "events_written": status.events_written,
                "acked_messages": status.acked_messages,
                "redelivered_messages": status.redelivered_messages,
                "progress_acks": status.progress_acks,
                "failed_writes": status.failed_writes,
                "terminated_messages": status.terminated_messages,
                "held_messages": status.held_messages,
                "held_bytes": status.held_bytes,
                "max_held_bytes": self.config.max_held_bytes,
                "open_partitions": status.open_partitions,
                "objects_waiting": status.objects_waiting,
                "pulling": status.pulling,
                "storage_healthy": status.storage_healthy,
                "last_write_error": status.last_write_error,
            },
        })
    }

    /// Objects this writer has written (and acked) since it started.
    pub fn objects_written(&self) -> u64 {
        self.lock().objects_written
    }

    /// Stops pulling, writes every open batch (a few tries when storage
    /// fails), acks what storage confirmed, hands the rest back to
    /// JetStream for another writer, and returns once done. Idempotent.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        let task = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Reads the consumer's state every [`CONSUMER_POLL_INTERVAL`] for the
/// gauges and `/health`.
async fn poll_consumer(
    consumer: PullConsumer,
    status: Arc<Mutex<Status>>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(CONSUMER_POLL_INTERVAL) => {}
        }
        if let Ok(Ok(info)) = tokio::time::timeout(STOP_NATS_TIMEOUT, consumer.get_info()).await {
            let state = ConsumerState::of(&info);
            state.record_gauges();
            status
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .consumer = Some(state);
        }
    }
}

/// A message held by the writer, waiting in a batch.
#[derive(Debug)]
struct Pulled {
    seq: u64,
    line: Bytes,
    trace_context: Option<Arc<str>>,
    arrival: Instant,
}

impl Batched for Pulled {
    fn line(&self) -> &[u8] {
        &self.line
    }

    fn trace_context(&self) -> Option<&Arc<str>> {
        self.trace_context.as_ref()
    }

    fn arrival(&self) -> Instant {
        self.arrival
    }
}

/// Where to ack a held message, and since when it waits.
#[derive(Debug)]
struct Held {
    reply: Subject,
    /// Its delivery, or its last in-progress ack.
    touched: Instant,
    cost: u64,
}

/// A cut batch: its key, its messages' sequence numbers, its body.
#[derive(Debug)]
struct Object {
    key: String,
    seqs: Vec<u64>,
    body: Bytes,
    traces: CallTraces,
}

/// The writer's loop and everything it owns.
struct Run {
    config: Arc<WriterConfig>,
    client: async_nats::Client,
    consumer: PullConsumer,
    store: Arc<dyn ObjectStore>,
    status: Arc<Mutex<Status>>,
    /// The consumer's real ack wait (another writer may have created it).
    ack_wait: Duration,
    partitions: BTreeMap<Partition, batching::Batch<Pulled>>,
    /// Every message held, by stream sequence number: in a batch, waiting
    /// for a write, or being written.
    held: HashMap<u64, Held>,
    held_bytes: u64,
    /// Objects cut and waiting for a write slot.
    waiting: VecDeque<Object>,
    writes: JoinSet<(Object, Result<(), IngestError>)>,
    /// Cancelled when stopping: writes then give up after a few attempts.
    give_up: CancellationToken,
}

impl Run {
    async fn run(mut self, stop: CancellationToken) {
        let mut pull: Option<jetstream::consumer::pull::Batch> = None;
        let mut pull_failures: u32 = 0;
        let mut pull_again_at = tokio::time::Instant::now();
        let progress_every = (self.ack_wait / 4).max(Duration::from_millis(50));
        let mut progress = tokio::time::interval(progress_every);
        progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stopping = false;
        loop {
            self.start_writes();
            let room = self.config.max_held_bytes.saturating_sub(self.held_bytes);
            let may_pull = !stopping
                && pull.is_none()
                && room >= self.config.fetch_max_bytes
                && tokio::time::Instant::now() >= pull_again_at;
            if may_pull {
                match self
                    .consumer
                    .batch()
                    .max_messages(self.config.fetch_max_messages)
                    .max_bytes(usize::try_from(self.config.fetch_max_bytes).unwrap_or(usize::MAX))
                    .expires(PULL_EXPIRES)
                    .messages()
                    .await
                {
                    Ok(batch) => pull = Some(batch),
                    Err(err) => {
                        pull_failures += 1;
                        pull_again_at = self.pull_backoff(pull_failures, &err.to_string());
                    }
                }
            }
            self.record_status(pull.is_some());
            if stopping
                && self.partitions.is_empty()
                && self.waiting.is_empty()
                && self.writes.is_empty()
            {
                break;
            }
            let deadline = self
                .partitions
                .values()
                .filter_map(|batch| batch.deadline(&self.config.rules))
                .min()
                .map(tokio::time::Instant::from_std);
            let retry_pull = (pull.is_none() && !stopping && room >= self.config.fetch_max_bytes)
                .then_some(pull_again_at);
            tokio::select! {
                () = stop.cancelled(), if !stopping => {
                    stopping = true;
                    // Messages delivered to a dropped pull and not read are
                    // handed to another writer after the ack wait.
                    pull = None;
                    self.give_up.cancel();
                    self.cut(true);
                    tracing::info!(
                        held = self.held.len(),
                        "lake writer stopping: writing the open batches"
                    );
                }
                message = next_message(&mut pull), if pull.is_some() => match message {
                    Some(Ok(message)) => {
                        pull_failures = 0;
                        self.accept(message);
                    }
                    Some(Err(err)) => {
                        pull = None;
                        let text = err.to_string();
                        // A pull that reached its byte bound ends so.
                        if !text.contains("Batch Completed") && !text.contains("Exceeds MaxBytes") {
                            pull_failures += 1;
                            pull_again_at = self.pull_backoff(pull_failures, &text);
                        }
                    }
                    None => pull = None,
                },
                done = self.writes.join_next(), if !self.writes.is_empty() => {
                    if let Some(Ok((object, result))) = done {
                        self.written(object, result).await;
                    }
                }
                () = sleep_until(deadline), if deadline.is_some() => self.cut(false),
                () = tokio::time::sleep_until(retry_pull.unwrap_or_else(tokio::time::Instant::now)), if retry_pull.is_some_and(|at| at > tokio::time::Instant::now()) => {}
                _ = progress.tick() => self.send_progress().await,
            }
        }
        self.record_status(false);
        // The acks are published; make sure they left before the process may.
        if tokio::time::timeout(STOP_NATS_TIMEOUT, self.client.flush())
            .await
            .map_or(true, |flushed| flushed.is_err())
        {
            tracing::warn!(
                "could not send the last acks to NATS; their messages are written again by another writer (same events, another object)"
            );
        }
        tracing::info!("lake writer stopped");
    }

    fn pull_backoff(&self, failures: u32, error: &str) -> tokio::time::Instant {
        let bound = vesper::retry::backoff_bound(
            Duration::from_millis(100),
            Duration::from_secs(2),
            failures,
        );
        let wait = vesper::retry::full_jitter(bound);
        tracing::warn!(
            error,
            failures,
            retry_in_ms = wait.as_millis() as u64,
            "pulling from the event stream failed; trying again"
        );
        tokio::time::Instant::now() + wait
    }

    /// Takes a delivered message into its partition's batch.
    fn accept(&mut self, message: jetstream::Message) {
        let now = Instant::now();
        let Some(reply) = message.reply.clone() else {
            return;
        };
        let (seq, delivered) = match message.info() {
            Ok(info) => (info.stream_sequence, info.delivered),
            Err(err) => {
                tracing::warn!(error = %err, "a message without JetStream metadata; ignored");
                return;
            }
        };
        if delivered > 1 {
            self.lock().redelivered_messages += 1;
            metrics::counter!("vesper_ingest_writer_redelivered_messages_total").increment(1);
        }
        if let Some(held) = self.held.get_mut(&seq) {
            // Ours already (JetStream gave it again while a write was slow):
            // ack through the newest delivery, batch it once.
            held.reply = reply;
            held.touched = now;
            return;
        }
        let partition = hour_of_subject(&self.config.stream.subject_prefix, &message.subject)
            .and_then(Partition::from_unix_hour);
        let Some(partition) = partition else {
            // Only a foreign publisher can put this on the stream: it has no
            // place in the lake, and retrying cannot give it one.
            tracing::error!(
                subject = %message.subject,
                seq,
                "a message on a subject that names no hour; it is terminated (not written)"
            );
            self.lock().terminated_messages += 1;
            metrics::counter!("vesper_ingest_writer_terminated_messages_total").increment(1);
            let client = self.client.clone();
            tokio::spawn(async move {
                let _ = client.publish(reply, AckKind::Term.into()).await;
            });
            return;
        };
        let trace_context = message
            .headers
            .as_ref()
            .and_then(|headers| headers.get(TRACEPARENT_HEADER))
            .map(|value| Arc::from(value.as_str()));
        let line = message.payload.clone();
        let cost = line.len() as u64 + HELD_OVERHEAD;
        self.held.insert(
            seq,
            Held {
                reply,
                touched: now,
                cost,
            },
        );
        self.held_bytes += cost;
        let batch = self.partitions.entry(partition).or_default();
        batch.push(
            Pulled {
                seq,
                line,
                trace_context,
                arrival: now,
            },
            &self.config.rules,
        );
        if batch.is_full(&self.config.rules) {
            self.cut(false);
        }
    }

    /// Cuts the due batches (all when `forced`) into objects.
    fn cut(&mut self, forced: bool) {
        let now = Instant::now();
        let stream = &self.config.stream.name;
        for (partition, batch) in &mut self.partitions {
            for mut messages in batch.cut(&self.config.rules, now, forced) {
                messages.sort_by_key(|message| message.seq);
                let (Some(first), Some(last)) = (messages.first(), messages.last()) else {
                    continue;
                };
                let key = partition.object_key(first.seq, last.seq, stream);
                let (body, traces) = object_body(&messages);
                self.waiting.push_back(Object {
                    key,
                    seqs: messages.iter().map(|message| message.seq).collect(),
                    body,
                    traces,
                });
            }
        }
        self.partitions.retain(|_, batch| !batch.events.is_empty());
    }

    fn start_writes(&mut self) {
        while self.writes.len() < WRITE_CONCURRENCY {
            let Some(object) = self.waiting.pop_front() else {
                return;
            };
            let store = Arc::clone(&self.store);
            let config = Arc::clone(&self.config);
            let status = Arc::clone(&self.status);
            let give_up = self.give_up.clone();
            self.writes.spawn(async move {
                let result =
                    write_with_retries(store.as_ref(), &object, &config, &status, &give_up).await;
                (object, result)
            });
        }
    }

    /// Acks the messages of a confirmed object; hands back to JetStream
    /// those of an object the writer gave up on (stopping).
    async fn written(&mut self, object: Object, result: Result<(), IngestError>) {
        let kind = if result.is_ok() {
            AckKind::Ack
        } else {
            AckKind::Nak(None)
        };
        let mut acked = 0_u64;
        for seq in &object.seqs {
            let Some(held) = self.held.remove(seq) else {
                continue;
            };
            self.held_bytes = self.held_bytes.saturating_sub(held.cost);
            // A failed publish means the connection is closed for good; the
            // message is then redelivered (another copy, within the bound).
            if self.client.publish(held.reply, kind.into()).await.is_ok() {
                acked += 1;
            }
        }
        metrics::gauge!("vesper_ingest_writer_held_bytes").set(self.held_bytes as f64);
        match result {
            Ok(()) => {
                let events = object.seqs.len() as u64;
                let mut status = self.lock();
                status.objects_written += 1;
                status.events_written += events;
                status.acked_messages += acked;
                status.storage_healthy = true;
                status.last_write_error.clear();
                drop(status);
                metrics::counter!("vesper_ingest_objects_written_total").increment(1);
                metrics::counter!("vesper_ingest_writer_acked_messages_total").increment(acked);
                tracing::debug!(key = object.key, events, "object written and acked");
            }
            Err(err) => {
                tracing::warn!(
                    key = object.key,
                    events = object.seqs.len(),
                    error = %err,
                    "storage did not take the object before the writer stopped; its messages go back to JetStream for another writer"
                );
            }
        }
    }

    /// In-progress acks for every message that has waited half the ack
    /// wait since its delivery or its last in-progress ack.
    async fn send_progress(&mut self) {
        let now = Instant::now();
        let due = self.ack_wait / 2;
        let mut sent = 0_u64;
        for held in self.held.values_mut() {
            if now.duration_since(held.touched) >= due {
                held.touched = now;
                if self
                    .client
                    .publish(held.reply.clone(), AckKind::Progress.into())
                    .await
                    .is_ok()
                {
                    sent += 1;
                }
            }
        }
        if sent > 0 {
            self.lock().progress_acks += sent;
            metrics::counter!("vesper_ingest_writer_progress_acks_total").increment(sent);
            tracing::debug!(messages = sent, "in-progress acks sent");
        }
    }

    fn record_status(&self, pulling: bool) {
        let mut status = self.lock();
        status.held_messages = self.held.len() as u64;
        status.held_bytes = self.held_bytes;
        status.open_partitions = self.partitions.len() as u64;
        status.objects_waiting = (self.waiting.len() + self.writes.len()) as u64;
        status.pulling = pulling;
        drop(status);
        metrics::gauge!("vesper_ingest_writer_held_bytes").set(self.held_bytes as f64);
        metrics::gauge!("vesper_ingest_writer_held_messages").set(self.held.len() as f64);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

async fn next_message(
    pull: &mut Option<jetstream::consumer::pull::Batch>,
) -> Option<Result<jetstream::Message, async_nats::Error>> {
    match pull {
        Some(batch) => batch.next().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Writes one object until storage confirms it: each attempt bounded by
/// `--write-timeout`, failures retried with capped exponential backoff and
/// full jitter. Once `give_up` is cancelled (the writer stops) it makes
/// at most [`SHUTDOWN_WRITE_ATTEMPTS`] more attempts.
async fn write_with_retries(
    store: &dyn ObjectStore,
    object: &Object,
    config: &WriterConfig,
    status: &Mutex<Status>,
    give_up: &CancellationToken,
) -> Result<(), IngestError> {
    let mut failures: u32 = 0;
    let mut attempts_after_stop: u32 = 0;
    loop {
        if give_up.is_cancelled() {
            attempts_after_stop += 1;
        }
        let attempt = put_object(
            store,
            &object.key,
            object.body.clone(),
            &object.traces,
            object.seqs.len(),
        );
        let result = match tokio::time::timeout(config.write_timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(IngestError::Storage {
                message: format!(
                    "no answer within {:?} (--write-timeout)",
                    config.write_timeout
                ),
                permanent: false,
            }),
        };
        let err = match result {
            Ok(()) => return Ok(()),
            Err(err) => err,
        };
        failures = failures.saturating_add(1);
        {
            let mut status = status.lock().unwrap_or_else(PoisonError::into_inner);
            status.failed_writes += 1;
            status.storage_healthy = false;
            status.last_write_error = err.to_string();
        }
        if attempts_after_stop >= SHUTDOWN_WRITE_ATTEMPTS {
            return Err(err);
        }
        let wait = if give_up.is_cancelled() {
            Duration::from_millis(300 * u64::from(attempts_after_stop.max(1)))
        } else {
            vesper::retry::full_jitter(vesper::retry::backoff_bound(
                config.retry_initial,
                config.retry_max,
                failures,
            ))
        };
        if err.is_permanent() {
            tracing::error!(key = object.key, error = %err, failures, "storage refuses the object; its messages stay unacked and it is retried");
        } else {
            tracing::warn!(key = object.key, error = %err, failures, retry_in_ms = wait.as_millis() as u64, "writing an object failed; its messages stay unacked and it is retried");
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = give_up.cancelled(), if attempts_after_stop == 0 => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn config() -> WriterConfig {
        let fleet = FleetConfig::new("nats://127.0.0.1:4222").expect("fleet settings");
        let batch = BatchArgs {
            batch_size: 0,
            max_batch_age: Duration::from_secs(5),
            batch_bytes: ByteSize::mib(4),
            flush_retry_max: Duration::from_secs(10),
        };
        WriterConfig::new(&fleet, &batch, &WriterArgs::default(), 64 * 1024 * 1024)
    }

    #[test]
    fn the_defaults_hold_and_bounds_that_clash_are_named() {
        let config = config();
        config.check().expect("the defaults are consistent");
        assert_eq!(config.required_ack_wait(), Duration::from_secs(35));
        assert_eq!(config.required_max_ack_pending(), 262_144);

        let short_wait = WriterConfig {
            ack_wait: Duration::from_secs(30),
            ..config.clone()
        };
        let err = short_wait
            .check()
            .expect_err("ack wait too short")
            .to_string();
        assert!(
            err.contains("--ack-wait") && err.contains("--write-timeout"),
            "{err}"
        );

        let small_memory = WriterConfig {
            max_held_bytes: 4 * 1024 * 1024,
            ..config
        };
        let err = small_memory
            .check()
            .expect_err("memory too small")
            .to_string();
        assert!(
            err.contains("--max-held-bytes") && err.contains("--fetch-max-bytes"),
            "{err}"
        );
    }

    #[test]
    fn a_consumer_that_breaks_a_guarantee_is_refused_naming_every_problem() {
        let config = config();
        let wanted = config.consumer_config();
        let good = jetstream::consumer::Config {
            durable_name: wanted.durable_name.clone(),
            ack_policy: wanted.ack_policy,
            deliver_policy: wanted.deliver_policy,
            ack_wait: wanted.ack_wait,
            max_deliver: wanted.max_deliver,
            max_ack_pending: wanted.max_ack_pending,
            ..jetstream::consumer::Config::default()
        };
        assert!(config.consumer_mismatches(&good).is_empty());
        let bad = jetstream::consumer::Config {
            ack_policy: AckPolicy::All,
            deliver_policy: DeliverPolicy::New,
            ack_wait: Duration::from_secs(10),
            max_deliver: 5,
            max_ack_pending: 100,
            filter_subject: "vesper.events.42".into(),
            ..good
        };
        let problems = config.consumer_mismatches(&bad);
        for needle in [
            "ack policy",
            "deliver policy",
            "max_deliver",
            "ack wait",
            "max_ack_pending",
            "filters",
        ] {
            assert!(
                problems.iter().any(|problem| problem.contains(needle)),
                "{needle} not named in {problems:?}"
            );
        }
    }
}
