//! The engine behind EventIngest: deduplication, the write-ahead log with
//! group commit, per-partition batches, and the flusher that writes them to
//! the lake.
//!
//! # Threads and tasks
//!
//! - **Ingest calls** check the batch against the deduplication window and
//!   the log bound under the state lock, and queue one append job for the
//!   committer in the same critical section (so the queue order is the
//!   order in which ids were claimed). They then wait for the committer.
//! - **The committer** (one OS thread, because fsync blocks) takes every
//!   job queued at that moment, numbers the events, writes all the records
//!   with one write and one fdatasync, moves the events into their
//!   partition batches and only then acknowledges: when an Ingest call
//!   returns OK its events are on disk *and* visible to the flusher. When a
//!   write fails (disk full), it fails that group and every job queued
//!   behind it, and releases their ids, all under the state lock, so no
//!   call can ever count an event as a duplicate of one that was refused.
//! - **The flusher** (a tokio task) cuts batches (batch bytes, batch
//!   size, batch age, Flush, shutdown), logs a flush intent for each (its key and sequence
//!   numbers) *before* writing it, writes it through [`ObjectStore`],
//!   logs the confirmation, and asks the committer to reclaim segments. A
//!   failed write is retried with capped exponential backoff and full
//!   jitter; the events stay in the log meanwhile.
//!
//! # Memory
//!
//! Accepted events wait for the lake in memory only up to
//! `--max-buffered-bytes`. Past it (a storage outage, or events spread
//! over many hours) the committer keeps logging them but leaves them on
//! disk: the log is the backlog. As flushes free memory the committer
//! reads the backlog back in order, a bounded window at a time; replay
//! after a restart is the same read from the oldest segment. So memory
//! stays bounded whatever the log holds.
//!
//! # Guarantees
//!
//! An acknowledged event is fsynced in the log. Replay rebuilds the
//! batches: events under a confirmed intent are in the lake; events under
//! an unconfirmed intent are written again under the same key (overwriting,
//! never duplicating); the rest are batched again. Log space is given back
//! only after storage confirmed, and the confirmation is itself logged
//! first.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque},
    ops::ControlFlow,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        mpsc::{self as std_mpsc, Receiver, Sender, TryRecvError},
    },
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use futures::{StreamExt, stream};
use prost_types::Timestamp;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use vesper::{
    telemetry,
    v1::{Event, EventType, FlushResponse, StatsResponse},
};
use vesper_storage::{ObjectKey, ObjectStore, PutOptions};

use crate::{
    IngestConfig, IngestError,
    dedup::{DedupWindow, Seen},
    error::OversizedEvent,
    lake::{self, Partition},
    wal::{
        self, Append, Entry, Events, FlushDone, FlushIntent, Frame, LoggedEvent, Position, Record,
        Wal,
    },
};

/// Jobs one committer group takes at most, so a flood cannot starve the
/// acknowledgements of the first callers.
const MAX_GROUP_JOBS: usize = 4096;

/// How often the final flush of a shutdown tries storage before leaving
/// the events in the log.
const SHUTDOWN_FLUSH_ATTEMPTS: u32 = 3;

/// How often storage may refuse an object for good (an invalid key, too
/// large) before it is moved to the dead-letter directory, so that one bad
/// object never blocks the log.
const PERMANENT_FAILURES_BEFORE_DEAD_LETTER: u32 = 3;

/// Directory beside the log segments where objects storage refused for
/// good are kept, one NDJSON file per object.
pub const DEAD_LETTER_DIR: &str = "dead-letter";

/// Bytes an event in memory costs beyond its line (bookkeeping).
const BUFFERED_OVERHEAD: u64 = 64;

/// Oversized events listed in one refusal at most.
const MAX_OVERSIZED_REPORTED: usize = 100;

/// What an Ingest call did with its batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestOutcome {
    /// Events appended to the log.
    pub accepted: u32,
    /// Signup events dropped.
    pub filtered: u32,
    /// Events dropped as seen before.
    pub duplicates: u32,
}

/// What a flush wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlushOutcome {
    /// Keys of the objects written.
    pub keys: Vec<String>,
    /// Events in them.
    pub events: u64,
}

impl From<FlushOutcome> for FlushResponse {
    fn from(outcome: FlushOutcome) -> Self {
        Self {
            objects_written: u32::try_from(outcome.keys.len()).unwrap_or(u32::MAX),
            events_written: outcome.events,
            keys: outcome.keys,
        }
    }
}

/// One accepted event waiting for the lake, in memory.
#[derive(Debug, Clone)]
struct Buffered {
    seq: u64,
    /// Its lake line, without the newline.
    line: Bytes,
    trace_context: Option<Arc<str>>,
    /// When it entered its batch (for the age trigger).
    arrival: Instant,
}

impl Buffered {
    /// What it costs in memory.
    fn cost(&self) -> u64 {
        self.line.len() as u64 + BUFFERED_OVERHEAD
    }
}

/// The events of one partition waiting to be cut into an object.
#[derive(Debug, Default)]
struct Batch {
    events: Vec<Buffered>,
    /// NDJSON bytes of the events, newlines included.
    bytes: u64,
}

/// A cut batch: logged as an intent (or about to be), written to the lake
/// under `key`.
#[derive(Debug)]
struct PendingObject {
    key: String,
    events: Vec<Buffered>,
    intent_logged: bool,
    /// Times storage refused it for good in a row.
    permanent_failures: u32,
}

#[derive(Debug, Default)]
struct Counters {
    accepted: u64,
    filtered: u64,
    duplicates: u64,
    rejected: u64,
    flushed_objects: u64,
    flushed_events: u64,
    refused_batches: u64,
    dead_lettered_objects: u64,
}

/// Everything the calls, the committer and the flusher share.
#[derive(Debug)]
struct State {
    /// The committer's queue; `None` once shutting down.
    jobs: Option<Sender<Job>>,
    dedup: DedupWindow,
    partitions: BTreeMap<Partition, Batch>,
    pending: BTreeMap<String, PendingObject>,
    /// Sequence numbers of the events in memory (in `partitions` and
    /// `pending`), not yet confirmed in the lake.
    in_memory: BTreeSet<u64>,
    /// What the events in memory cost (see [`Buffered::cost`]).
    memory_bytes: u64,
    /// Events in the log not read back into memory yet.
    backlog_events: u64,
    /// No unread event of the backlog has a smaller sequence number.
    backlog_floor: Option<u64>,
    /// Estimated bytes of appends queued for the committer.
    queued_bytes: u64,
    wal_bytes: u64,
    counters: Counters,
    storage_healthy: bool,
    last_flush_error: String,
    /// The current retry delay bound, the hint given to refused callers.
    retry_after: Duration,
}

impl State {
    fn buffered_events(&self) -> u64 {
        self.in_memory.len() as u64 + self.backlog_events
    }

    /// The smallest sequence number not yet in the lake, if any.
    fn unflushed_floor(&self) -> Option<u64> {
        let in_memory = self.in_memory.first().copied();
        match (in_memory, self.backlog_floor) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn record_gauges(&self) {
        metrics::gauge!("vesper_ingest_wal_bytes").set(self.wal_bytes as f64);
        metrics::gauge!("vesper_ingest_buffered_events").set(self.buffered_events() as f64);
        metrics::gauge!("vesper_ingest_buffered_bytes").set(self.memory_bytes as f64);
        metrics::gauge!("vesper_ingest_backlog_events").set(self.backlog_events as f64);
    }
}

#[derive(Debug)]
struct Shared {
    config: IngestConfig,
    wal_id: String,
    state: Mutex<State>,
    /// Wakes the flusher (a batch is full).
    kick: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves counters at worst stale;
        // the log, not this state, is the truth.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A job for the committer thread.
#[derive(Debug)]
enum Job {
    /// Log accepted events; acknowledge once durable and batched.
    Append {
        events: Vec<LoggedEvent>,
        ids: Vec<u128>,
        received_at: Timestamp,
        trace_context: Option<String>,
        estimated_bytes: u64,
        ack: oneshot::Sender<Result<(), IngestError>>,
    },
    /// Log a flush intent or confirmation.
    Log {
        record: Record,
        ack: oneshot::Sender<Result<(), IngestError>>,
    },
    /// Acknowledge once every job before it is settled.
    Barrier {
        ack: oneshot::Sender<Result<(), IngestError>>,
    },
    /// Give back log space the lake has confirmed, and read more of the
    /// backlog into the memory that freed.
    Reclaim,
    /// Read more of the backlog now; acknowledge once done.
    ReadBacklog {
        ack: oneshot::Sender<Result<(), IngestError>>,
    },
}

impl Job {
    fn is_write(&self) -> bool {
        matches!(self, Self::Append { .. } | Self::Log { .. })
    }

    /// Refuses the job because the log could not take it (or what it
    /// counted on).
    fn fail(self, state: &mut State, error: &str) {
        match self {
            Self::Append {
                ids,
                estimated_bytes,
                ack,
                ..
            } => refuse_append(state, &ids, estimated_bytes, ack, error),
            Self::Log { ack, .. } | Self::Barrier { ack } | Self::ReadBacklog { ack } => {
                let _ = ack.send(Err(IngestError::WalWrite {
                    message: error.to_owned(),
                }));
            }
            Self::Reclaim => {}
        }
    }
}

/// Undoes what an append claimed (its ids, its queued bytes) and tells its
/// caller.
fn refuse_append(
    state: &mut State,
    ids: &[u128],
    estimated_bytes: u64,
    ack: oneshot::Sender<Result<(), IngestError>>,
    error: &str,
) {
    for id in ids {
        state.dedup.release(*id);
    }
    state.queued_bytes = state.queued_bytes.saturating_sub(estimated_bytes);
    state.counters.refused_batches += 1;
    metrics::counter!("vesper_ingest_refused_batches_total", "reason" => "disk").increment(1);
    let _ = ack.send(Err(IngestError::WalWrite {
        message: error.to_owned(),
    }));
}

/// A running engine: cheap to clone, one per write-ahead log.
#[derive(Debug, Clone)]
pub struct IngestEngine {
    shared: Arc<Shared>,
    store: Arc<dyn ObjectStore>,
    flush_requests: mpsc::UnboundedSender<oneshot::Sender<Result<FlushOutcome, IngestError>>>,
    tasks: Arc<Mutex<Option<Tasks>>>,
}

#[derive(Debug)]
struct Tasks {
    stop_flusher: CancellationToken,
    flusher: tokio::task::JoinHandle<()>,
    committer: std::thread::JoinHandle<()>,
}

impl IngestEngine {
    /// Opens the log in `config.wal_dir`, replays it, and starts the
    /// committer and the flusher, which writes through `store`. Events the
    /// log held but the lake had not confirmed are flushed again (under
    /// their recorded keys when a flush of them had begun).
    pub async fn start(
        config: IngestConfig,
        store: Arc<dyn ObjectStore>,
    ) -> Result<Self, IngestError> {
        config.check()?;
        let started = Instant::now();
        let (wal, replayed, snapshot, index) = {
            let dir = config.wal_dir.clone();
            let fs = Arc::clone(&config.fs);
            let segment_bytes = config.effective_segment_bytes();
            tokio::task::spawn_blocking(move || {
                let mut index = ReplayIndex::default();
                let (wal, replayed) =
                    Wal::open(&dir, fs, segment_bytes, |_, record| index.add(record))?;
                let snapshot = match std::fs::read(dir.join(wal::DEDUP_SNAPSHOT)) {
                    Ok(bytes) => Some(bytes),
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot read the deduplication snapshot; the window is rebuilt from the log alone");
                        None
                    }
                };
                Ok::<_, IngestError>((wal, replayed, snapshot, index))
            })
            .await
            .map_err(|_| IngestError::EngineStopped)??
        };

        let now_ms = unix_millis(SystemTime::now());
        let mut dedup = DedupWindow::new(config.dedup_window, config.dedup_ttl);
        if let Some(bytes) = snapshot
            && let Err(reason) = dedup.restore(&bytes, now_ms)
        {
            tracing::warn!(
                reason,
                "the deduplication snapshot is unusable; the window is rebuilt from the log alone"
            );
        }
        for (id, received_ms) in &index.ids {
            dedup.offer(*id, *received_ms, true);
        }
        dedup.evict(now_ms);
        let dedup_ids = dedup.len();
        let backlog = index.into_backlog(replayed.start);
        let wal_id = wal.wal_id().to_owned();
        let wal_bytes = wal.bytes();

        let (jobs, job_queue) = std_mpsc::channel();
        let flusher_jobs = jobs.clone();
        let replayed_events = backlog.as_ref().map_or(0, |backlog| backlog.events);
        let state = State {
            jobs: Some(jobs),
            dedup,
            partitions: BTreeMap::new(),
            pending: BTreeMap::new(),
            in_memory: BTreeSet::new(),
            memory_bytes: 0,
            backlog_events: replayed_events,
            backlog_floor: backlog.as_ref().map(|backlog| backlog.floor_seq),
            queued_bytes: 0,
            wal_bytes,
            counters: Counters::default(),
            storage_healthy: true,
            last_flush_error: String::new(),
            retry_after: config.retry_initial,
        };
        state.record_gauges();
        // The bounds, beside the levels, so that one query shows how full
        // the log and the memory window are (past the log's bound the
        // webhook answers 503).
        metrics::gauge!("vesper_ingest_wal_limit_bytes").set(config.max_wal_bytes as f64);
        metrics::gauge!("vesper_ingest_buffered_limit_bytes").set(config.max_buffered_bytes as f64);
        tracing::info!(
            wal_dir = %config.wal_dir.display(),
            wal_id,
            wal_bytes,
            unflushed_events = replayed_events,
            dedup_ids,
            torn_segments = replayed.torn_segments,
            damaged_records = replayed.damaged,
            quarantined_bytes = replayed.quarantined_bytes,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "write-ahead log replayed"
        );

        let shared = Arc::new(Shared {
            config,
            wal_id,
            state: Mutex::new(state),
            kick: Notify::new(),
        });
        let committer = {
            let writer_shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("vesper-wal".into())
                .spawn(move || run_committer(&writer_shared, wal, backlog, &job_queue))
                .map_err(|source| IngestError::Io {
                    action: "cannot start the log writer for",
                    path: shared.config.wal_dir.clone(),
                    source,
                })?
        };
        let (flush_requests, flush_queue) = mpsc::unbounded_channel();
        let stop_flusher = CancellationToken::new();
        let engine = Self {
            shared,
            store,
            flush_requests,
            tasks: Arc::new(Mutex::new(None)),
        };
        let flusher = tokio::spawn(engine.clone().run_flusher(
            flusher_jobs,
            flush_queue,
            stop_flusher.clone(),
        ));
        *engine.tasks.lock().unwrap_or_else(PoisonError::into_inner) = Some(Tasks {
            stop_flusher,
            flusher,
            committer,
        });
        Ok(engine)
    }

    /// The log's id (part of every object name).
    pub fn wal_id(&self) -> &str {
        &self.shared.wal_id
    }

    /// The configuration.
    pub fn config(&self) -> &IngestConfig {
        &self.shared.config
    }

    /// Counts a batch rejected as invalid (validation happens in the
    /// service, before the engine).
    pub fn count_rejected(&self, events: usize) {
        self.shared.lock().counters.rejected += events as u64;
        metrics::counter!("vesper_ingest_events_total", "outcome" => "rejected")
            .increment(events as u64);
    }

    /// Appends a validated batch: drops signups and duplicates, logs the
    /// rest durably, and returns once they are on disk. An event whose
    /// lake line is over `max_event_bytes` refuses the whole batch
    /// ([`IngestError::EventsTooLarge`]); nothing of it is stored.
    pub async fn ingest(&self, events: Vec<Event>) -> Result<IngestOutcome, IngestError> {
        let received_at = vesper::wire::from_datetime(time::OffsetDateTime::now_utc());
        let now_ms = unix_millis(SystemTime::now());
        let trace_context = telemetry::current_trace_context();
        let mut outcome = IngestOutcome::default();

        // Rendered before the lock: this is the CPU-heavy part of a call.
        let max_event_bytes = self.shared.config.max_event_bytes;
        let mut candidates = Vec::with_capacity(events.len());
        let mut oversized = Vec::new();
        let mut oversized_count = 0_usize;
        for (index, event) in events.iter().enumerate() {
            if event.event_type == EventType::Signup as i32 {
                outcome.filtered += 1;
                continue;
            }
            let line = lake::event_line(event, &received_at);
            if line.len() as u64 > max_event_bytes {
                oversized_count += 1;
                if oversized.len() < MAX_OVERSIZED_REPORTED {
                    oversized.push(OversizedEvent {
                        index,
                        bytes: line.len() as u64,
                    });
                }
                continue;
            }
            let hour = event
                .timestamp
                .as_ref()
                .and_then(Partition::of)
                .map(|partition| partition.unix_hour());
            let Some(hour) = hour else {
                // Validation guarantees a timestamp in range.
                return Err(IngestError::Unplaceable {
                    index,
                    event_id: event.event_id.clone(),
                });
            };
            let id = uuid::Uuid::try_parse(&event.event_id)
                .ok()
                .map(|id| id.as_u128());
            candidates.push((
                id,
                LoggedEvent {
                    id: id.map(|id| id.to_be_bytes().to_vec()).unwrap_or_default(),
                    hour,
                    line: Bytes::from(line),
                },
            ));
        }
        if oversized_count > 0 {
            self.count_rejected(events.len());
            return Err(IngestError::EventsTooLarge {
                events: oversized,
                more: oversized_count.saturating_sub(MAX_OVERSIZED_REPORTED),
                limit: max_event_bytes,
            });
        }
        drop(events);

        let (ack, acked) = oneshot::channel();
        {
            let mut state = self.shared.lock();
            let Some(jobs) = state.jobs.clone() else {
                return Err(IngestError::ShuttingDown);
            };
            let mut accepted = Vec::with_capacity(candidates.len());
            let mut ids = Vec::with_capacity(candidates.len());
            let mut waits_for_pending = false;
            for (id, event) in candidates {
                let Some(id) = id else {
                    // Validation guarantees a UUID; keep the event rather than guess.
                    accepted.push(event);
                    continue;
                };
                match state.dedup.offer(id, now_ms, false) {
                    Seen::New => {
                        ids.push(id);
                        accepted.push(event);
                    }
                    Seen::Durable => outcome.duplicates += 1,
                    Seen::Pending => {
                        outcome.duplicates += 1;
                        waits_for_pending = true;
                    }
                }
            }
            // The bound applies to what would be written: a resend of events
            // already in the log is answered even when the log is full.
            let estimated_bytes = accepted
                .iter()
                .map(|event| event.line.len() as u64 + 48)
                .sum::<u64>()
                + 64;
            let occupied = state.wal_bytes + state.queued_bytes;
            let max_wal_bytes = self.shared.config.max_wal_bytes;
            if !accepted.is_empty() && occupied + estimated_bytes > max_wal_bytes {
                for id in &ids {
                    state.dedup.release(*id);
                }
                state.counters.refused_batches += 1;
                metrics::counter!("vesper_ingest_refused_batches_total", "reason" => "wal_full")
                    .increment(1);
                return Err(IngestError::WalFull {
                    wal_bytes: occupied,
                    max_wal_bytes,
                    retry_after: state.retry_after,
                });
            }
            outcome.accepted = u32::try_from(accepted.len()).unwrap_or(u32::MAX);
            // Sent under the lock: the queue order is the order ids were
            // claimed in, which is what lets a failed append fail every call
            // that counted on it.
            let job = if accepted.is_empty() {
                waits_for_pending.then_some(Job::Barrier { ack })
            } else {
                state.queued_bytes += estimated_bytes;
                Some(Job::Append {
                    events: accepted,
                    ids,
                    received_at,
                    trace_context,
                    estimated_bytes,
                    ack,
                })
            };
            match job {
                Some(job) => {
                    if let Err(std_mpsc::SendError(job)) = jobs.send(job) {
                        job.fail(&mut state, "the log writer stopped");
                        return Err(IngestError::EngineStopped);
                    }
                }
                None => {
                    record_outcome(&mut state, outcome);
                    return Ok(outcome);
                }
            }
        }
        acked.await.map_err(|_| IngestError::EngineStopped)??;
        let mut state = self.shared.lock();
        record_outcome(&mut state, outcome);
        Ok(outcome)
    }

    /// Writes every buffered event to the lake now and returns once storage
    /// confirmed it (or the first storage error).
    pub async fn flush(&self) -> Result<FlushOutcome, IngestError> {
        let (reply, replied) = oneshot::channel();
        self.flush_requests
            .send(reply)
            .map_err(|_| IngestError::EngineStopped)?;
        replied.await.map_err(|_| IngestError::EngineStopped)?
    }

    /// Counters since start and current gauges.
    pub fn stats(&self) -> StatsResponse {
        let state = self.shared.lock();
        let counters = &state.counters;
        StatsResponse {
            accepted: counters.accepted,
            filtered: counters.filtered,
            duplicates: counters.duplicates,
            rejected: counters.rejected,
            flushed_objects: counters.flushed_objects,
            flushed_events: counters.flushed_events,
            buffered_events: state.buffered_events(),
            wal_bytes: state.wal_bytes,
            max_wal_bytes: self.shared.config.max_wal_bytes,
            batch_size: self.shared.config.batch_size,
            storage_healthy: state.storage_healthy,
            last_flush_error: state.last_flush_error.clone(),
            refused_batches: counters.refused_batches,
            batch_bytes: self.shared.config.batch_bytes,
            buffered_bytes: state.memory_bytes,
            max_buffered_bytes: self.shared.config.max_buffered_bytes,
            backlog_events: state.backlog_events,
            dead_lettered_objects: counters.dead_lettered_objects,
            max_event_bytes: self.shared.config.max_event_bytes,
        }
    }

    /// Stops accepting (Ingest answers UNAVAILABLE), waits for appends in
    /// flight, writes everything buffered to the lake (a few tries), and
    /// stops the flusher and the log writer. Whatever storage did not take
    /// stays in the log and is written after the next start. Idempotent.
    pub async fn shutdown(&self) {
        let Some(tasks) = self
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        else {
            return;
        };
        let barrier = {
            let mut state = self.shared.lock();
            state.jobs.take().and_then(|jobs| {
                let (ack, acked) = oneshot::channel();
                jobs.send(Job::Barrier { ack }).ok().map(|()| acked)
            })
        };
        if let Some(acked) = barrier {
            let _ = acked.await;
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.flush().await {
                Ok(outcome) => {
                    tracing::info!(
                        objects = outcome.keys.len(),
                        events = outcome.events,
                        "final flush done"
                    );
                    break;
                }
                Err(err) if attempt < SHUTDOWN_FLUSH_ATTEMPTS => {
                    tracing::warn!(error = %err, attempt, "final flush failed; trying again");
                    tokio::time::sleep(Duration::from_millis(300 * u64::from(attempt))).await;
                }
                Err(err) => {
                    let unflushed = self.shared.lock().buffered_events();
                    tracing::warn!(
                        error = %err,
                        unflushed,
                        wal_dir = %self.shared.config.wal_dir.display(),
                        "storage did not take the last batches; they are safe in the write-ahead log and are written after the next start"
                    );
                    break;
                }
            }
        }
        tasks.stop_flusher.cancel();
        let _ = tasks.flusher.await;
        // The queue closed when `jobs` was taken; the writer ends after the
        // last queued job (the flusher, which logged through it, is gone).
        let _ = tokio::task::spawn_blocking(move || tasks.committer.join()).await;
        tracing::info!("ingest engine stopped");
    }

    // ------------------------------------------------------------ flusher

    /// The flusher task. It logs through its own `jobs` sender, so the
    /// final flush of a shutdown still can after calls were cut off; the
    /// log writer ends when this task does.
    async fn run_flusher(
        self,
        jobs: Sender<Job>,
        mut requests: mpsc::UnboundedReceiver<oneshot::Sender<Result<FlushOutcome, IngestError>>>,
        stop: CancellationToken,
    ) {
        let mut failures: u32 = 0;
        let mut retry_at: Option<tokio::time::Instant> = None;
        loop {
            let wake = self.next_wake(retry_at);
            let mut waiters = Vec::new();
            tokio::select! {
                () = stop.cancelled() => break,
                request = requests.recv() => {
                    let Some(request) = request else { break };
                    waiters.push(request);
                    while let Ok(request) = requests.try_recv() {
                        waiters.push(request);
                    }
                }
                () = self.shared.kick.notified() => {}
                () = tokio::time::sleep_until(wake) => {}
            }
            let forced = !waiters.is_empty();
            if !forced && retry_at.is_some_and(|at| tokio::time::Instant::now() < at) {
                continue;
            }
            let mut result = self.flush_round(&jobs, forced).await;
            // A flush on request writes the backlog too, a memory window at
            // a time.
            while forced && result.is_ok() && self.shared.lock().backlog_floor.is_some() {
                let (ack, acked) = oneshot::channel();
                if jobs.send(Job::ReadBacklog { ack }).is_err() || acked.await.is_err() {
                    break;
                }
                let more = self.flush_round(&jobs, forced).await;
                match (&mut result, more) {
                    // Reading made no progress (a read error, logged): stop
                    // rather than spin; the backlog is read after the next
                    // flush.
                    (Ok(_), Ok(outcome)) if outcome.keys.is_empty() => break,
                    (Ok(so_far), Ok(outcome)) => {
                        so_far.events += outcome.events;
                        so_far.keys.extend(outcome.keys);
                    }
                    (_, Err(err)) => result = Err(err),
                    (Err(_), Ok(_)) => {}
                }
            }
            match &result {
                Ok(_) => {
                    failures = 0;
                    retry_at = None;
                    self.shared.lock().retry_after = self.shared.config.retry_initial;
                }
                Err(err) => {
                    failures = failures.saturating_add(1);
                    let bound = backoff_bound(&self.shared.config, failures);
                    let delay = full_jitter(bound);
                    retry_at = Some(tokio::time::Instant::now() + delay);
                    self.shared.lock().retry_after = bound;
                    tracing::warn!(error = %err, failures, retry_in_ms = delay.as_millis() as u64, "flush failed; the events stay in the write-ahead log and are retried");
                }
            }
            for waiter in waiters {
                let _ = waiter.send(match &result {
                    Ok(outcome) => Ok(outcome.clone()),
                    Err(err) => Err(err.duplicate()),
                });
            }
        }
        for waiter in std::iter::from_fn(|| requests.try_recv().ok()) {
            let _ = waiter.send(Err(IngestError::EngineStopped));
        }
    }

    /// When the flusher must look again: now when a batch is full, when the
    /// oldest batch comes of age, never before a pending retry.
    fn next_wake(&self, retry_at: Option<tokio::time::Instant>) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        let config = &self.shared.config;
        let state = self.shared.lock();
        let mut wake = now + Duration::from_secs(3600);
        if !state.pending.is_empty() {
            wake = now;
        }
        for batch in state.partitions.values() {
            if config.batch_is_full(batch.events.len(), batch.bytes) {
                wake = now;
            } else if let Some(first) = batch.events.first() {
                wake = wake.min(tokio::time::Instant::from_std(
                    first.arrival + config.max_batch_age,
                ));
            }
        }
        match retry_at {
            Some(at) => wake.max(at),
            None => wake,
        }
    }

    /// One round: cut the batches that are due (all of them when `forced`),
    /// log their intents, write every pending object, log the
    /// confirmations, reclaim. `Err` carries the first failure; whatever
    /// succeeded is kept.
    async fn flush_round(
        &self,
        jobs: &Sender<Job>,
        forced: bool,
    ) -> Result<FlushOutcome, IngestError> {
        self.cut_batches(forced);

        // Intents first: nothing reaches the lake that a replay could not
        // write again under the same key.
        let intents: Vec<(String, Vec<u64>)> = self
            .shared
            .lock()
            .pending
            .values()
            .filter(|object| !object.intent_logged)
            .map(|object| {
                (
                    object.key.clone(),
                    object.events.iter().map(|event| event.seq).collect(),
                )
            })
            .collect();
        let mut first_error = None;
        let logged = log_records(
            jobs,
            intents.into_iter().map(|(key, seqs)| {
                let record = Record::new(Entry::Intent(FlushIntent {
                    key: key.clone(),
                    seqs,
                }));
                (key, record)
            }),
        )
        .await;
        {
            let mut state = self.shared.lock();
            for (key, result) in logged {
                match result {
                    Ok(()) => {
                        if let Some(object) = state.pending.get_mut(&key) {
                            object.intent_logged = true;
                        }
                    }
                    Err(err) => {
                        first_error.get_or_insert(err);
                    }
                }
            }
        }

        let writes: Vec<(String, Bytes, CallTraces, usize)> = {
            let state = self.shared.lock();
            state
                .pending
                .values()
                .filter(|object| object.intent_logged)
                .map(|object| {
                    let (body, traces) = object_body(&object.events);
                    (object.key.clone(), body, traces, object.events.len())
                })
                .collect()
        };
        let store = &self.store;
        let written: Vec<(String, usize, Result<(), IngestError>)> = stream::iter(writes)
            .map(|(key, body, traces, events)| async move {
                let result = put_object(store.as_ref(), &key, body, &traces, events).await;
                (key, events, result)
            })
            .buffer_unordered(self.shared.config.flush_concurrency.max(1))
            .collect()
            .await;

        let mut confirmed = Vec::new();
        for (key, _, result) in written {
            match result {
                Ok(()) => confirmed.push(key),
                Err(err) => {
                    if err.is_permanent() && self.dead_letter_if_hopeless(&key, &err).await {
                        // Set aside for good: no longer this flush's failure.
                        confirmed.push(key);
                        continue;
                    }
                    first_error.get_or_insert(err);
                }
            }
        }
        {
            let mut state = self.shared.lock();
            match &first_error {
                Some(err @ IngestError::Storage { .. }) => {
                    state.storage_healthy = false;
                    state.last_flush_error = err.to_string();
                }
                _ if !confirmed.is_empty() => {
                    state.storage_healthy = true;
                    state.last_flush_error.clear();
                }
                _ => {}
            }
        }

        // Confirmations: only once they are logged may the space go.
        let logged = log_records(
            jobs,
            confirmed.into_iter().map(|key| {
                let record = Record::new(Entry::Done(FlushDone { key: key.clone() }));
                (key, record)
            }),
        )
        .await;
        let mut outcome = FlushOutcome::default();
        {
            let mut state = self.shared.lock();
            for (key, result) in logged {
                if let Err(err) = result {
                    // The object is in the lake; it is written again (same
                    // key, same bytes) and confirmed on a later round.
                    first_error.get_or_insert(err);
                    continue;
                }
                let Some(object) = state.pending.remove(&key) else {
                    continue;
                };
                for event in &object.events {
                    state.in_memory.remove(&event.seq);
                    state.memory_bytes = state.memory_bytes.saturating_sub(event.cost());
                }
                let events = object.events.len() as u64;
                state.counters.flushed_objects += 1;
                state.counters.flushed_events += events;
                metrics::counter!("vesper_ingest_objects_written_total").increment(1);
                outcome.events += events;
                outcome.keys.push(key);
            }
            state.record_gauges();
        }
        if !outcome.keys.is_empty() {
            let _ = jobs.send(Job::Reclaim);
        }
        outcome.keys.sort();
        match first_error {
            None => Ok(outcome),
            Some(err) => Err(err),
        }
    }

    /// Moves due events from their partitions into pending objects: full
    /// batches (by bytes or by count) always, aged ones too, every one
    /// when `forced`.
    fn cut_batches(&self, forced: bool) {
        let config = &self.shared.config;
        let now = Instant::now();
        let mut state = self.shared.lock();
        let mut cut = Vec::new();
        for (partition, batch) in &mut state.partitions {
            let aged = batch
                .events
                .first()
                .is_some_and(|first| now.duration_since(first.arrival) >= config.max_batch_age);
            let take_all = forced || aged;
            while !batch.events.is_empty()
                && (take_all || config.batch_is_full(batch.events.len(), batch.bytes))
            {
                let (count, bytes) =
                    config.batch_prefix(batch.events.iter().map(|event| event.line.len()));
                batch.bytes -= bytes;
                cut.push((*partition, batch.events.drain(..count).collect::<Vec<_>>()));
            }
        }
        state.partitions.retain(|_, batch| !batch.events.is_empty());
        for (partition, mut events) in cut {
            events.sort_by_key(|event| event.seq);
            let (Some(first), Some(last)) = (events.first(), events.last()) else {
                continue;
            };
            let key = partition.object_key(first.seq, last.seq, &self.shared.wal_id);
            state.pending.insert(
                key.clone(),
                PendingObject {
                    key,
                    events,
                    intent_logged: false,
                    permanent_failures: 0,
                },
            );
        }
    }

    /// Counts a permanent refusal of `key`; past the bound, moves the
    /// object to the dead-letter directory beside the log (fsynced) and
    /// answers `true`: it may then be confirmed, so it never blocks the log.
    async fn dead_letter_if_hopeless(&self, key: &str, err: &IngestError) -> bool {
        let body = {
            let mut state = self.shared.lock();
            let Some(object) = state.pending.get_mut(key) else {
                return false;
            };
            object.permanent_failures += 1;
            if object.permanent_failures < PERMANENT_FAILURES_BEFORE_DEAD_LETTER {
                return false;
            }
            object_body(&object.events).0
        };
        let dir = self.shared.config.wal_dir.join(DEAD_LETTER_DIR);
        let path = dir.join(dead_letter_name(key));
        let fs = Arc::clone(&self.shared.config.fs);
        let written = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || {
                std::fs::create_dir_all(&dir)?;
                fs.write_atomic(&path, &body)
            })
            .await
        };
        match written {
            Ok(Ok(())) => {
                let events = self
                    .shared
                    .lock()
                    .pending
                    .get(key)
                    .map_or(0, |object| object.events.len());
                self.shared.lock().counters.dead_lettered_objects += 1;
                metrics::counter!("vesper_ingest_dead_lettered_events_total")
                    .increment(events as u64);
                tracing::error!(
                    key,
                    events,
                    path = %path.display(),
                    error = %err,
                    "storage refused an object for good; it is moved to the dead-letter directory (see the docs to re-drive it)"
                );
                true
            }
            Ok(Err(io)) => {
                tracing::error!(key, path = %path.display(), error = %io, "cannot write a dead letter; the object stays in the log and is retried");
                false
            }
            Err(_) => false,
        }
    }
}

/// The dead-letter file name of an object key: the key with `%` and `/`
/// escaped, so that it is one file name and decodes back to the key.
pub fn dead_letter_name(key: &str) -> String {
    key.replace('%', "%25").replace('/', "%2F")
}

/// Records the counters of a successful call.
fn record_outcome(state: &mut State, outcome: IngestOutcome) {
    let counters = &mut state.counters;
    counters.accepted += u64::from(outcome.accepted);
    counters.filtered += u64::from(outcome.filtered);
    counters.duplicates += u64::from(outcome.duplicates);
    for (label, count) in [
        ("accepted", outcome.accepted),
        ("filtered", outcome.filtered),
        ("duplicate", outcome.duplicates),
    ] {
        if count > 0 {
            metrics::counter!("vesper_ingest_events_total", "outcome" => label)
                .increment(u64::from(count));
        }
    }
}

/// Adds a durable event to its partition's batch in memory; `true` when
/// the flusher has something new to watch (a batch started, so a new
/// deadline, or a batch is full).
fn buffer_event(
    state: &mut State,
    config: &IngestConfig,
    partition: Partition,
    event: Buffered,
) -> bool {
    state.in_memory.insert(event.seq);
    state.memory_bytes += event.cost();
    let batch = state.partitions.entry(partition).or_default();
    batch.bytes += event.line.len() as u64 + 1;
    batch.events.push(event);
    batch.events.len() == 1 || config.batch_is_full(batch.events.len(), batch.bytes)
}

/// Sends records to the committer and waits for each; results by key.
async fn log_records(
    jobs: &Sender<Job>,
    records: impl Iterator<Item = (String, Record)>,
) -> Vec<(String, Result<(), IngestError>)> {
    let mut waiting = Vec::new();
    for (key, record) in records {
        let (ack, acked) = oneshot::channel();
        match jobs.send(Job::Log { record, ack }) {
            Ok(()) => waiting.push((key, Some(acked))),
            Err(_) => waiting.push((key, None)),
        }
    }
    let mut results = Vec::with_capacity(waiting.len());
    for (key, acked) in waiting {
        let result = match acked {
            Some(acked) => acked.await.unwrap_or(Err(IngestError::EngineStopped)),
            None => Err(IngestError::EngineStopped),
        };
        results.push((key, result));
    }
    results
}

/// The calls whose events an object holds: each call's W3C trace context,
/// with how many of its events are in the object.
type CallTraces = Vec<(Arc<str>, usize)>;

/// The NDJSON body of an object, and the calls whose events it holds.
fn object_body(events: &[Buffered]) -> (Bytes, CallTraces) {
    let size = events.iter().map(|event| event.line.len() + 1).sum();
    let mut body = Vec::with_capacity(size);
    let mut traces = CallTraces::new();
    for event in events {
        body.extend_from_slice(&event.line);
        body.push(b'\n');
        if let Some(trace) = &event.trace_context {
            match traces.iter_mut().find(|(known, _)| known == trace) {
                Some((_, count)) => *count += 1,
                None => traces.push((Arc::clone(trace), 1)),
            }
        }
    }
    (Bytes::from(body), traces)
}

/// Writes one object in its own trace: batching ends the calls' traces, and
/// one write serves many calls. The flush span links to the span of every
/// call whose events it holds, and the write to storage is its child. Once
/// the object is written, each of those calls' traces gets an
/// `ingest.flushed` span (the object's key, linked back to the flush), so a
/// trace leads from a webhook call to the object that holds its events,
/// and from the object back to every call.
async fn put_object(
    store: &dyn ObjectStore,
    key: &str,
    body: Bytes,
    traces: &[(Arc<str>, usize)],
    events: usize,
) -> Result<(), IngestError> {
    let span = tracing::info_span!(
        parent: None,
        "ingest.flush",
        key,
        events,
        bytes = body.len(),
        linked_calls = traces.len(),
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
    );
    for (trace, _) in traces {
        telemetry::add_link(&span, trace);
    }
    let started = Instant::now();
    let result = async {
        let key = ObjectKey::new(key).map_err(|err| IngestError::storage(&err))?;
        store
            .put(&key, body, PutOptions::content_type(lake::CONTENT_TYPE))
            .await
            .map_err(|err| IngestError::storage(&err))
    }
    .instrument(span.clone())
    .await;
    match &result {
        Ok(_) => {
            for (trace, events) in traces {
                let flushed = tracing::info_span!(parent: None, "ingest.flushed", key, events);
                telemetry::set_parent_from_traceparent(&flushed, trace);
                telemetry::link_to(&flushed, &span);
            }
        }
        Err(err) => telemetry::record_error(&span, err),
    }
    metrics::histogram!("vesper_ingest_flush_duration_seconds")
        .record(started.elapsed().as_secs_f64());
    let label = if result.is_ok() { "ok" } else { "error" };
    metrics::counter!("vesper_ingest_flushes_total", "result" => label).increment(1);
    result.map(|_| ())
}

fn backoff_bound(config: &IngestConfig, failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(20);
    config
        .retry_initial
        .saturating_mul(1 << exponent)
        .min(config.retry_max)
}

/// A uniformly random wait up to `bound` ("full jitter"), so that many
/// instances retrying a recovered storage do not arrive together.
fn full_jitter(bound: Duration) -> Duration {
    use rand::Rng;
    let millis = u64::try_from(bound.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::rng().random_range(0..=millis))
}

fn unix_millis(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        })
}

// ------------------------------------------------------------ committer

fn run_committer(
    shared: &Shared,
    mut wal: Wal,
    mut backlog: Option<Backlog>,
    queue: &Receiver<Job>,
) {
    read_backlog(shared, &wal, &mut backlog);
    let mut jobs: VecDeque<Job> = VecDeque::new();
    loop {
        if jobs.is_empty() {
            match queue.recv() {
                Ok(job) => jobs.push_back(job),
                Err(_) => break,
            }
        }
        while jobs.len() < MAX_GROUP_JOBS {
            match queue.try_recv() {
                Ok(job) => jobs.push_back(job),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        let writes = jobs.iter().take_while(|job| job.is_write()).count();
        if writes > 0 {
            let group: Vec<Job> = jobs.drain(..writes).collect();
            if let Err(err) = commit(shared, &mut wal, &mut backlog, group) {
                // Everything queued behind the failed group may count on it
                // (an id it claimed); fail it all, atomically with respect
                // to new calls.
                let mut state = shared.lock();
                let message = err.to_string();
                for job in jobs
                    .drain(..)
                    .chain(std::iter::from_fn(|| queue.try_recv().ok()))
                {
                    job.fail(&mut state, &message);
                }
                state.wal_bytes = wal.bytes();
                state.record_gauges();
                continue;
            }
        }
        match jobs.pop_front() {
            Some(Job::Barrier { ack }) => {
                let _ = ack.send(Ok(()));
            }
            Some(Job::Reclaim) => {
                read_backlog(shared, &wal, &mut backlog);
                reclaim(shared, &mut wal);
            }
            Some(Job::ReadBacklog { ack }) => {
                read_backlog(shared, &wal, &mut backlog);
                let _ = ack.send(Ok(()));
            }
            Some(other) => jobs.push_front(other),
            None => {}
        }
    }
}

/// Writes one group of records with one fsync, then batches (or leaves in
/// the backlog) and acknowledges the appends. On error the group is failed
/// here and the error returned so the caller fails what queued behind it.
fn commit(
    shared: &Shared,
    wal: &mut Wal,
    backlog: &mut Option<Backlog>,
    group: Vec<Job>,
) -> Result<(), std::io::Error> {
    let mut frames = Vec::with_capacity(group.len());
    let mut next_seq = wal.next_seq();
    let mut appended = Vec::with_capacity(group.len());
    let mut logs = Vec::new();
    for job in group {
        match job {
            Job::Append {
                events,
                ids,
                received_at,
                trace_context,
                estimated_bytes,
                ack,
            } => {
                let count = events.len() as u64;
                let first_seq = next_seq;
                next_seq += count;
                let record = Record::new(Entry::Events(Events {
                    first_seq,
                    events,
                    received_at: Some(received_at),
                    trace_context,
                }));
                let offset = frames
                    .iter()
                    .map(|frame: &Frame| frame.bytes.len())
                    .sum::<usize>();
                frames.push(Frame {
                    bytes: record.frame(),
                    max_event_seq: count.checked_sub(1).map(|last| first_seq + last),
                });
                let Some(Entry::Events(events)) = record.entry else {
                    continue;
                };
                appended.push((events, offset, ids, estimated_bytes, ack));
            }
            Job::Log { record, ack } => {
                frames.push(Frame {
                    bytes: record.frame(),
                    max_event_seq: None,
                });
                logs.push(ack);
            }
            Job::Barrier { .. } | Job::Reclaim | Job::ReadBacklog { .. } => {}
        }
    }
    // Numbers handed out are never handed out again, even if this write
    // fails half-way and leaves a complete record behind.
    wal.advance_next_seq(next_seq);
    let result = wal.append(&frames);
    let mut state = shared.lock();
    state.wal_bytes = wal.bytes();
    match result {
        Ok(start) => {
            let config = &shared.config;
            let arrival = Instant::now();
            let mut wake_flusher = false;
            for (events, offset, ids, estimated_bytes, _) in &mut appended {
                state.queued_bytes = state.queued_bytes.saturating_sub(*estimated_bytes);
                for id in ids.iter() {
                    state.dedup.confirm(*id);
                }
                let count = events.events.len() as u64;
                // Past the memory bound the events stay in the log only, and
                // so does everything after them until the backlog is read.
                if backlog.is_some() || state.memory_bytes >= config.max_buffered_bytes {
                    let log = backlog.get_or_insert_with(|| {
                        Backlog::at(
                            Position {
                                segment: start.segment,
                                offset: start.offset + *offset as u64,
                            },
                            events.first_seq,
                        )
                    });
                    log.events += count;
                    state.backlog_events = log.events;
                    state.backlog_floor = Some(log.floor_seq);
                    continue;
                }
                let trace_context: Option<Arc<str>> =
                    events.trace_context.as_deref().map(Arc::from);
                let first_seq = events.first_seq;
                for (offset, event) in std::mem::take(&mut events.events).into_iter().enumerate() {
                    let Some(partition) = Partition::from_unix_hour(event.hour) else {
                        continue;
                    };
                    wake_flusher |= buffer_event(
                        &mut state,
                        config,
                        partition,
                        Buffered {
                            seq: first_seq + offset as u64,
                            line: event.line,
                            trace_context: trace_context.clone(),
                            arrival,
                        },
                    );
                }
            }
            state.record_gauges();
            drop(state);
            if wake_flusher {
                shared.kick.notify_one();
            }
            for (_, _, _, _, ack) in appended {
                let _ = ack.send(Ok(()));
            }
            for ack in logs {
                let _ = ack.send(Ok(()));
            }
            Ok(())
        }
        Err(err) => {
            tracing::warn!(error = %err, "write-ahead log append failed; the batch is refused and nothing of it is kept");
            let message = err.to_string();
            for (_, _, ids, estimated_bytes, ack) in appended {
                refuse_append(&mut state, &ids, estimated_bytes, ack, &message);
            }
            for ack in logs {
                let _ = ack.send(Err(IngestError::WalWrite {
                    message: message.clone(),
                }));
            }
            Err(err)
        }
    }
}

fn reclaim(shared: &Shared, wal: &mut Wal) {
    let (floor, drained) = {
        let state = shared.lock();
        let floor = state
            .unflushed_floor()
            .unwrap_or(u64::MAX)
            .min(wal.next_seq());
        let drained =
            state.in_memory.is_empty() && state.backlog_floor.is_none() && state.queued_bytes == 0;
        (floor, drained)
    };
    let result = wal.reclaim(floor, drained, || shared.lock().dedup.snapshot());
    let mut state = shared.lock();
    state.wal_bytes = wal.bytes();
    state.record_gauges();
    match result {
        Ok(0) => {}
        Ok(deleted) => tracing::debug!(
            deleted,
            wal_bytes = state.wal_bytes,
            "log segments reclaimed"
        ),
        Err(err) => {
            tracing::warn!(error = %err, "cannot reclaim log segments yet; retrying after the next flush")
        }
    }
}

// ------------------------------------------------------------ backlog

/// Events in the log that are not in memory: everything from `cursor` on
/// that is not in the lake yet. After a restart that is the whole log;
/// while running, what arrived past the memory bound.
#[derive(Debug)]
struct Backlog {
    /// The next record to read.
    cursor: Position,
    /// Every unread event has at least this sequence number.
    floor_seq: u64,
    /// Unread events (for the gauges; exact after a clean read).
    events: u64,
    /// From replay: events the lake already has, ascending.
    flushed: Vec<u64>,
    /// From replay: events under a flush intent storage never confirmed,
    /// with the intent's key.
    intended: HashMap<u64, Arc<str>>,
    /// From replay: those intents, with the events read so far.
    open_intents: HashMap<Arc<str>, OpenIntent>,
}

#[derive(Debug)]
struct OpenIntent {
    expected: usize,
    events: Vec<Buffered>,
}

impl Backlog {
    /// A backlog that starts at `cursor` with event `first_seq`.
    fn at(cursor: Position, first_seq: u64) -> Self {
        Self {
            cursor,
            floor_seq: first_seq,
            events: 0,
            flushed: Vec::new(),
            intended: HashMap::new(),
            open_intents: HashMap::new(),
        }
    }
}

/// What replay gathers while the log is opened: the small records only.
#[derive(Debug, Default)]
struct ReplayIndex {
    /// Every logged event id with its receive time, for the window.
    ids: Vec<(u128, i64)>,
    /// `(first_seq, count)` of every logged call.
    appends: Vec<(u64, u64)>,
    intents: Vec<FlushIntent>,
    done: HashSet<String>,
}

impl ReplayIndex {
    fn add(&mut self, record: Record) {
        match record.entry {
            Some(Entry::Events(events)) => {
                let received_ms = events
                    .received_at
                    .map_or(0, |at| at.seconds.saturating_mul(1000));
                for event in &events.events {
                    if let Ok(id) = <[u8; 16]>::try_from(event.id.as_slice()) {
                        self.ids.push((u128::from_be_bytes(id), received_ms));
                    }
                }
                self.appends
                    .push((events.first_seq, events.events.len() as u64));
            }
            Some(Entry::Append(append)) => {
                let received_ms = append
                    .received_at
                    .map_or(0, |at| at.seconds.saturating_mul(1000));
                for event in &append.events {
                    if let Ok(id) = uuid::Uuid::try_parse(&event.event_id) {
                        self.ids.push((id.as_u128(), received_ms));
                    }
                }
                self.appends
                    .push((append.first_seq, append.events.len() as u64));
            }
            Some(Entry::Intent(intent)) => self.intents.push(intent),
            Some(Entry::Done(done)) => {
                self.done.insert(done.key);
            }
            Some(Entry::Start(_)) | None => {}
        }
    }

    /// The backlog to read from `start`, or `None` when the log holds no
    /// event the lake lacks.
    fn into_backlog(self, start: Position) -> Option<Backlog> {
        let mut flushed = Vec::new();
        let mut intended = HashMap::new();
        let mut open_intents = HashMap::new();
        for intent in self.intents {
            if self.done.contains(&intent.key) {
                flushed.extend(intent.seqs);
                continue;
            }
            let key: Arc<str> = Arc::from(intent.key.as_str());
            if open_intents.contains_key(&key) {
                continue;
            }
            for seq in &intent.seqs {
                intended.insert(*seq, Arc::clone(&key));
            }
            open_intents.insert(
                key,
                OpenIntent {
                    expected: intent.seqs.len(),
                    events: Vec::new(),
                },
            );
        }
        flushed.sort_unstable();
        flushed.dedup();
        let mut events = 0;
        for (first, count) in &self.appends {
            let end = first + count;
            let lo = flushed.partition_point(|seq| seq < first);
            let hi = flushed.partition_point(|seq| *seq < end);
            events += count - (hi - lo) as u64;
        }
        if events == 0 {
            return None;
        }
        Some(Backlog {
            cursor: start,
            floor_seq: 0,
            events,
            flushed,
            intended,
            open_intents,
        })
    }
}

/// Reads the backlog into memory, in log order, until the memory bound
/// (and every replayed intent is complete) or the end of the log, where
/// the backlog ends. Runs on the committer thread, so nothing is appended
/// meanwhile.
fn read_backlog(shared: &Shared, wal: &Wal, backlog: &mut Option<Backlog>) {
    let Some(log) = backlog.as_mut() else {
        return;
    };
    let config = &shared.config;
    let full = |state: &State, log: &Backlog| {
        state.memory_bytes >= config.max_buffered_bytes && log.open_intents.is_empty()
    };
    if full(&shared.lock(), log) {
        return;
    }
    let arrival = Instant::now();
    let mut wake_flusher = false;
    let from = log.cursor;
    let read = wal.read_from(from, |after, record| {
        let (first_seq, received_at, trace_context, events) = match record.entry {
            Some(Entry::Events(events)) => (
                events.first_seq,
                events.received_at.unwrap_or_default(),
                events.trace_context,
                events
                    .events
                    .into_iter()
                    .map(|event| (Partition::from_unix_hour(event.hour), event.line))
                    .collect::<Vec<_>>(),
            ),
            Some(Entry::Append(Append {
                first_seq,
                events,
                received_at,
                trace_context,
            })) => {
                let received_at = received_at.unwrap_or_default();
                let lines = events
                    .iter()
                    .map(|event| {
                        (
                            event.timestamp.as_ref().and_then(Partition::of),
                            Bytes::from(lake::event_line(event, &received_at)),
                        )
                    })
                    .collect();
                (first_seq, received_at, trace_context, lines)
            }
            _ => {
                log.cursor = after;
                return ControlFlow::Continue(());
            }
        };
        let _ = received_at;
        let trace_context: Option<Arc<str>> = trace_context.as_deref().map(Arc::from);
        let mut state = shared.lock();
        let end_seq = first_seq + events.len() as u64;
        for (offset, (partition, line)) in events.into_iter().enumerate() {
            let seq = first_seq + offset as u64;
            if seq < log.floor_seq || log.flushed.binary_search(&seq).is_ok() {
                continue;
            }
            log.events = log.events.saturating_sub(1);
            let Some(partition) = partition else {
                tracing::error!(
                    seq,
                    "an event in the log has no valid hour; it cannot be placed in the lake"
                );
                continue;
            };
            let event = Buffered {
                seq,
                line,
                trace_context: trace_context.clone(),
                arrival,
            };
            if let Some(key) = log.intended.remove(&seq) {
                if let Some(intent) = log.open_intents.get_mut(&key) {
                    intent.events.push(event);
                    if intent.events.len() == intent.expected
                        && let Some(intent) = log.open_intents.remove(&key)
                    {
                        adopt_intent(&mut state, &key, intent.events);
                        wake_flusher = true;
                    }
                }
                continue;
            }
            wake_flusher |= buffer_event(&mut state, config, partition, event);
        }
        log.floor_seq = log.floor_seq.max(end_seq);
        log.cursor = after;
        state.backlog_events = log.events;
        state.backlog_floor = Some(log.floor_seq);
        if full(&state, log) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    match read {
        Ok((_, true)) => {
            let mut state = shared.lock();
            for (key, intent) in std::mem::take(&mut log.open_intents) {
                // Only a damaged log gets here: writing a subset under the
                // same key could shrink an object already in the lake, so the
                // events left are batched afresh instead.
                tracing::warn!(
                    key = %key,
                    found = intent.events.len(),
                    expected = intent.expected,
                    "a flush intent refers to events no longer in the log; its remaining events are written under a new key"
                );
                for event in intent.events {
                    let partition = partition_of_key(&key);
                    if let Some(partition) = partition {
                        wake_flusher |= buffer_event(&mut state, config, partition, event);
                    }
                }
            }
            state.backlog_events = 0;
            state.backlog_floor = None;
            state.record_gauges();
            *backlog = None;
        }
        Ok((_, false)) => shared.lock().record_gauges(),
        Err(err) => {
            tracing::warn!(error = %err, "cannot read the write-ahead log backlog yet; retrying after the next flush");
        }
    }
    if wake_flusher {
        shared.kick.notify_one();
    }
}

/// Takes a replayed, complete flush intent as a pending object, to be
/// written again under its key.
fn adopt_intent(state: &mut State, key: &str, mut events: Vec<Buffered>) {
    events.sort_by_key(|event| event.seq);
    for event in &events {
        state.in_memory.insert(event.seq);
        state.memory_bytes += event.cost();
    }
    state.pending.insert(
        key.to_owned(),
        PendingObject {
            key: key.to_owned(),
            events,
            intent_logged: true,
            permanent_failures: 0,
        },
    );
}

/// The partition an event object key names (`events/dt=…/hour=…/…`).
fn partition_of_key(key: &str) -> Option<Partition> {
    let mut parts = key.strip_prefix(lake::EVENTS_PREFIX)?.split('/');
    let date = parts.next()?.strip_prefix("dt=")?;
    let hour = parts.next()?.strip_prefix("hour=")?;
    let timestamp = vesper::wire::parse_timestamp(&format!("{date}T{hour}:00:00Z"))?;
    Partition::of(&timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_jitter_stays_below_it() {
        let config = IngestConfig {
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(1),
            ..IngestConfig::new("unused")
        };
        let bounds: Vec<_> = (1..=6)
            .map(|failures| backoff_bound(&config, failures).as_millis())
            .collect();
        assert_eq!(bounds, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff_bound(&config, u32::MAX), Duration::from_secs(1));
        for _ in 0..100 {
            assert!(full_jitter(Duration::from_millis(50)) <= Duration::from_millis(50));
        }
    }
}
