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
//! # Files
//!
//! This file holds the shared state, the single-node engine's face (start,
//! ingest, flush, stats, shutdown; [`crate::IngestEngine`] puts it behind
//! the public one) and `prepare`, the filter and checks both logs share; `committer.rs` the log writer thread,
//! `flusher.rs` the flusher task and the lake writes, `backlog.rs` the
//! events waiting in the log only and the replay index.
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
use vesper::{
    telemetry,
    v1::{Event, EventType, FlushResponse, StatsResponse},
};
use vesper_storage::ObjectStore;

use crate::{
    IngestConfig, IngestError,
    batching::{self, Batched, CallTraces, object_body, put_object},
    dedup::{DedupWindow, Seen},
    error::OversizedEvent,
    lake::{self, Partition},
    wal::{
        self, Append, Entry, Events, FlushDone, FlushIntent, Frame, LoggedEvent, Position, Record,
        Wal,
    },
};

mod backlog;
mod committer;
mod flusher;

use backlog::ReplayIndex;
use committer::run_committer;

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

impl Batched for Buffered {
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

/// The events of one partition waiting to be cut into an object.
type Batch = batching::Batch<Buffered>;

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
pub(crate) struct Counters {
    pub(crate) accepted: u64,
    pub(crate) filtered: u64,
    pub(crate) duplicates: u64,
    pub(crate) rejected: u64,
    flushed_objects: u64,
    flushed_events: u64,
    refused_batches: u64,
    dead_lettered_objects: u64,
}

impl Counters {
    /// Counts a successful call, in the stats and the metrics.
    pub(crate) fn record(&mut self, outcome: IngestOutcome) {
        self.accepted += u64::from(outcome.accepted);
        self.filtered += u64::from(outcome.filtered);
        self.duplicates += u64::from(outcome.duplicates);
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

    /// Counts the events of a call refused whole as invalid.
    pub(crate) fn reject(&mut self, events: usize) {
        self.rejected += events as u64;
        metrics::counter!("vesper_ingest_events_total", "outcome" => "rejected")
            .increment(events as u64);
    }
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

/// The single-node engine: cheap to clone, one per write-ahead log.
#[derive(Debug, Clone)]
pub(crate) struct WalEngine {
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

impl WalEngine {
    /// Opens the log in `config.wal_dir`, replays it, and starts the
    /// committer and the flusher, which writes through `store`. Events the
    /// log held but the lake had not confirmed are flushed again (under
    /// their recorded keys when a flush of them had begun).
    pub(crate) async fn start(
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
    pub(crate) fn wal_id(&self) -> &str {
        &self.shared.wal_id
    }

    /// The configuration.
    pub(crate) fn config(&self) -> &IngestConfig {
        &self.shared.config
    }

    /// Counts a batch rejected as invalid (validation happens in the
    /// service, before the engine).
    pub(crate) fn count_rejected(&self, events: usize) {
        self.shared.lock().counters.reject(events);
    }

    /// Appends a validated batch: drops signups and duplicates, logs the
    /// rest durably, and returns once they are on disk. An event whose
    /// lake line is over `max_event_bytes` refuses the whole batch
    /// ([`IngestError::EventsTooLarge`]); nothing of it is stored.
    pub(crate) async fn ingest(&self, events: Vec<Event>) -> Result<IngestOutcome, IngestError> {
        let now_ms = unix_millis(SystemTime::now());
        let trace_context = telemetry::current_trace_context();
        let Prepared {
            received_at,
            candidates,
            mut outcome,
        } = match prepare(&self.shared.config, events) {
            Ok(prepared) => prepared,
            Err(PrepareError::Refused { events, error }) => {
                self.count_rejected(events);
                return Err(error);
            }
            Err(PrepareError::Other(error)) => return Err(error),
        };

        let (ack, acked) = oneshot::channel();
        {
            let mut state = self.shared.lock();
            let Some(jobs) = state.jobs.clone() else {
                return Err(IngestError::ShuttingDown);
            };
            let mut accepted = Vec::with_capacity(candidates.len());
            let mut ids = Vec::with_capacity(candidates.len());
            let mut waits_for_pending = false;
            for Candidate { id, event } in candidates {
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
    pub(crate) async fn flush(&self) -> Result<FlushOutcome, IngestError> {
        let (reply, replied) = oneshot::channel();
        self.flush_requests
            .send(reply)
            .map_err(|_| IngestError::EngineStopped)?;
        replied.await.map_err(|_| IngestError::EngineStopped)?
    }

    /// Counters since start and current gauges.
    pub(crate) fn stats(&self) -> StatsResponse {
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
            log: crate::fleet::LOG_WAL.into(),
            ..StatsResponse::default()
        }
    }

    /// Stops accepting (Ingest answers UNAVAILABLE), waits for appends in
    /// flight, writes everything buffered to the lake (a few tries), and
    /// stops the flusher and the log writer. Whatever storage did not take
    /// stays in the log and is written after the next start. Idempotent.
    pub(crate) async fn shutdown(&self) {
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
}

/// An accepted event, rendered, before the log.
#[derive(Debug)]
pub(crate) struct Candidate {
    /// Its id as a number, when it is a UUID (validation guarantees it).
    pub(crate) id: Option<u128>,
    /// Its id, hour and lake line.
    pub(crate) event: LoggedEvent,
}

/// A call's events after the filter and the size check, both logs alike.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// When the call came in (part of every lake line).
    pub(crate) received_at: Timestamp,
    /// The events to log, in call order.
    pub(crate) candidates: Vec<Candidate>,
    /// The call's outcome so far (`filtered`).
    pub(crate) outcome: IngestOutcome,
}

/// Why [`prepare`] refused a call.
#[derive(Debug)]
pub(crate) enum PrepareError {
    /// The call is refused whole; its `events` count as rejected.
    Refused { events: usize, error: IngestError },
    /// Refused, but not the caller's fault.
    Other(IngestError),
}

/// What both logs do first: drops signups, renders each event's lake line,
/// refuses the call whole when one is over `max_event_bytes`, and places
/// each in its hour. The CPU-heavy part of a call, done outside any lock.
pub(crate) fn prepare(config: &IngestConfig, events: Vec<Event>) -> Result<Prepared, PrepareError> {
    let received_at = vesper::wire::from_datetime(time::OffsetDateTime::now_utc());
    let mut outcome = IngestOutcome::default();
    let max_event_bytes = config.max_event_bytes;
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
            return Err(PrepareError::Other(IngestError::Unplaceable {
                index,
                event_id: event.event_id.clone(),
            }));
        };
        let id = uuid::Uuid::try_parse(&event.event_id)
            .ok()
            .map(|id| id.as_u128());
        candidates.push(Candidate {
            id,
            event: LoggedEvent {
                id: id.map(|id| id.to_be_bytes().to_vec()).unwrap_or_default(),
                hour,
                line: Bytes::from(line),
            },
        });
    }
    if oversized_count > 0 {
        return Err(PrepareError::Refused {
            events: events.len(),
            error: IngestError::EventsTooLarge {
                events: oversized,
                more: oversized_count.saturating_sub(MAX_OVERSIZED_REPORTED),
                limit: max_event_bytes,
            },
        });
    }
    Ok(Prepared {
        received_at,
        candidates,
        outcome,
    })
}

/// The dead-letter file name of an object key: the key with `%` and `/`
/// escaped, so that it is one file name and decodes back to the key.
pub fn dead_letter_name(key: &str) -> String {
    key.replace('%', "%25").replace('/', "%2F")
}

/// Records the counters of a successful call.
fn record_outcome(state: &mut State, outcome: IngestOutcome) {
    state.counters.record(outcome);
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
    state
        .partitions
        .entry(partition)
        .or_default()
        .push(event, &config.batch_rules())
}

fn unix_millis(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        })
}
