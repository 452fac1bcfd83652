//! The ingest service's settings and their command-line form.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use vesper::config::{ByteSize, defaults, parse_duration};
use vesper_storage::StoragePeerArgs;

use crate::{
    batching::BatchRules,
    fleet::{LogArgs, publish::PublishArgs},
    fs::{StdFs, WalFs},
};

/// Default cap of events per lake object: 0, off. Objects are cut by
/// bytes (`DEFAULT_BATCH_BYTES`) or age instead, so that they are sized for
/// analytics and for a store's per-request price; the old system's 50 is
/// one flag away.
pub const DEFAULT_BATCH_SIZE: u32 = 0;
/// Default age at which a partition's batch is flushed however small.
pub const DEFAULT_MAX_BATCH_AGE: Duration = Duration::from_secs(5);
/// Default bound of the write-ahead log. At ~400 bytes an event that is
/// about 650,000 events, minutes of a heavy producer, or hours of the
/// upstream generator, while storage is down.
pub const DEFAULT_MAX_WAL_BYTES: ByteSize = ByteSize::mib(256);
/// Default size at which a log segment is sealed.
pub const DEFAULT_SEGMENT_BYTES: ByteSize = ByteSize::mib(16);
/// Default number of event ids in the deduplication window.
pub const DEFAULT_DEDUP_WINDOW: usize = 100_000;
/// Default age after which an event id leaves the deduplication window.
pub const DEFAULT_DEDUP_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// Default cap of the wait between retries of a failed flush.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(10);
/// Default bound of one event, as the line it becomes in the lake. The
/// upstream's events are about 400 bytes; this leaves room for rich
/// properties while keeping one request, one batch and one object
/// bounded by a few of them.
pub const DEFAULT_MAX_EVENT_BYTES: ByteSize = ByteSize::kib(256);
/// Default bytes of NDJSON per lake object: big enough that a partition
/// under a heavy load gets a few objects a second, small enough that the
/// objects being written (each copied through the Storage gRPC hop) keep
/// the process's peak memory under 100 MB (docs/benchmarks.md).
pub const DEFAULT_BATCH_BYTES: ByteSize = ByteSize::mib(4);
/// Default bound of the accepted events held in memory while they wait
/// for the lake; past it they wait in the log only.
pub const DEFAULT_MAX_BUFFERED_BYTES: ByteSize = ByteSize::mib(64);
/// Default cap of the events of one Ingest call (and one webhook body).
pub const DEFAULT_MAX_REQUEST_EVENTS: usize = vesper::wire::DEFAULT_MAX_REQUEST_EVENTS;

/// How the ingest engine runs.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// The write-ahead log directory.
    pub wal_dir: PathBuf,
    /// Events per lake object: a partition's batch is flushed when it has
    /// this many; 0 turns the count off (the default).
    pub batch_size: u32,
    /// A partition's batch is flushed when its oldest event has waited
    /// this long.
    pub max_batch_age: Duration,
    /// Above this many bytes of log, Ingest answers UNAVAILABLE until
    /// flushes drain it. The bound is checked when a batch is offered; the
    /// flush bookkeeping of batches already accepted (intents and
    /// confirmations, a few percent of their size) may take the log a
    /// little past it.
    pub max_wal_bytes: u64,
    /// A log segment is sealed at this size (and earlier when everything
    /// in it is in the lake). Capped at a quarter of `max_wal_bytes`.
    pub segment_bytes: u64,
    /// Event ids remembered for deduplication.
    pub dedup_window: usize,
    /// How long an event id is remembered.
    pub dedup_ttl: Duration,
    /// First wait before retrying a failed flush; doubles up to `retry_max`.
    pub retry_initial: Duration,
    /// Longest wait between flush retries.
    pub retry_max: Duration,
    /// Flushes that may write to storage at once; each holds one object
    /// (and its copies on the way to storage) in memory.
    pub flush_concurrency: usize,
    /// The largest object storage accepts: the gRPC message limit of the
    /// storage client.
    pub max_object_size: u64,
    /// Largest event, in bytes of its lake line; a call holding a larger
    /// one is refused whole, naming it.
    pub max_event_bytes: u64,
    /// A partition's batch is cut into an object at this many bytes of
    /// NDJSON (or earlier, at `batch_size` events or `max_batch_age`).
    pub batch_bytes: u64,
    /// Bound of the accepted events held in memory; past it they wait in
    /// the log only and are read back as memory frees.
    pub max_buffered_bytes: u64,
    /// Most events in one Ingest call.
    pub max_request_events: usize,
    /// The file layer of the log ([`StdFs`]; tests inject faults here).
    pub fs: Arc<dyn WalFs>,
}

impl IngestConfig {
    /// Defaults with the log in `wal_dir`.
    pub fn new(wal_dir: impl Into<PathBuf>) -> Self {
        Self {
            wal_dir: wal_dir.into(),
            batch_size: DEFAULT_BATCH_SIZE,
            max_batch_age: DEFAULT_MAX_BATCH_AGE,
            max_wal_bytes: DEFAULT_MAX_WAL_BYTES.bytes(),
            segment_bytes: DEFAULT_SEGMENT_BYTES.bytes(),
            dedup_window: DEFAULT_DEDUP_WINDOW,
            dedup_ttl: DEFAULT_DEDUP_TTL,
            retry_initial: Duration::from_millis(200),
            retry_max: DEFAULT_RETRY_MAX,
            flush_concurrency: 2,
            max_object_size: vesper_storage::DEFAULT_MAX_OBJECT_SIZE.bytes(),
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES.bytes(),
            batch_bytes: DEFAULT_BATCH_BYTES.bytes(),
            max_buffered_bytes: DEFAULT_MAX_BUFFERED_BYTES.bytes(),
            max_request_events: DEFAULT_MAX_REQUEST_EVENTS,
            fs: Arc::new(StdFs),
        }
    }

    /// The segment size really used: small enough that sealed segments can
    /// be reclaimed well before the log reaches its bound.
    /// Checks the bounds against each other: one event must fit a batch,
    /// a batch an object, a batch the memory window, and the largest event
    /// an Ingest message.
    pub fn check(&self) -> Result<(), crate::IngestError> {
        let fail = |message: String| Err(crate::IngestError::Config { message });
        if self.max_event_bytes == 0 {
            return fail("--max-event-bytes must be more than 0".into());
        }
        if self.max_event_bytes + 1 > self.batch_bytes {
            return fail(format!(
                "--batch-bytes ({}) must hold at least one event of --max-event-bytes ({}) and its newline",
                self.batch_bytes, self.max_event_bytes
            ));
        }
        if self.batch_bytes > self.max_object_size {
            return fail(format!(
                "--batch-bytes ({}) must not exceed the object-size limit of storage ({})",
                self.batch_bytes, self.max_object_size
            ));
        }
        if self.batch_bytes > self.max_buffered_bytes {
            return fail(format!(
                "--max-buffered-bytes ({}) must hold at least one batch of --batch-bytes ({})",
                self.max_buffered_bytes, self.batch_bytes
            ));
        }
        if self.max_event_bytes > self.max_wal_bytes / 4 {
            return fail(format!(
                "--max-wal-bytes ({}) must hold at least four events of --max-event-bytes ({})",
                self.max_wal_bytes, self.max_event_bytes
            ));
        }
        Ok(())
    }

    /// The largest Ingest message the service decodes: room for one
    /// event of `max_event_bytes` in its protobuf form (which can be
    /// several times its JSON for arrays of small numbers), and never less
    /// than 16 MiB.
    pub fn max_ingest_message(&self) -> usize {
        let per_event =
            usize::try_from(self.max_event_bytes.saturating_mul(8)).unwrap_or(usize::MAX);
        per_event.max(16 * 1024 * 1024) + vesper::grpc::MESSAGE_OVERHEAD
    }

    /// The batching settings, shared with the fleet's lake writers.
    pub fn batch_rules(&self) -> BatchRules {
        BatchRules {
            batch_size: self.batch_size,
            batch_bytes: self.batch_bytes,
            max_batch_age: self.max_batch_age,
        }
    }

    pub(crate) fn effective_segment_bytes(&self) -> u64 {
        self.segment_bytes.min((self.max_wal_bytes / 4).max(4096))
    }
}

/// Command-line options of `vesper ingest`.
#[derive(Debug, Clone, clap::Args)]
pub struct IngestArgs {
    /// Address to serve gRPC on (port 0 picks a free port).
    #[arg(
        long,
        env = "VESPER_GRPC_ADDR",
        default_value = defaults::INGEST_GRPC_ADDR,
        value_name = "HOST:PORT"
    )]
    pub grpc_addr: SocketAddr,

    #[command(flatten)]
    pub storage: StoragePeerArgs,

    #[command(flatten)]
    pub engine: IngestEngineArgs,
}

/// The engine's options, shared by `vesper ingest` and `vesper up`.
#[derive(Debug, Clone, clap::Args)]
pub struct IngestEngineArgs {
    /// The write-ahead log directory (created if missing; never inside the
    /// lake). Accepted events are fsynced here before Ingest answers.
    #[arg(
        long,
        env = "VESPER_WAL_DIR",
        default_value = defaults::WAL_DIR,
        value_name = "DIR"
    )]
    pub wal_dir: PathBuf,

    #[command(flatten)]
    pub batch: BatchArgs,

    /// The most write-ahead log kept while storage is slow or down; past it
    /// Ingest answers UNAVAILABLE (the webhook 503 with Retry-After) until
    /// flushes drain the log.
    #[arg(
        long,
        env = "VESPER_MAX_WAL_BYTES",
        default_value_t = DEFAULT_MAX_WAL_BYTES,
        value_name = "SIZE"
    )]
    pub max_wal_bytes: ByteSize,

    /// Largest event accepted, in bytes of the line it becomes in the
    /// lake; a call holding a larger one is refused whole (400 /
    /// INVALID_ARGUMENT naming the event). Must fit --batch-bytes.
    #[arg(
        long,
        env = "VESPER_MAX_EVENT_BYTES",
        default_value_t = DEFAULT_MAX_EVENT_BYTES,
        value_name = "SIZE"
    )]
    pub max_event_bytes: ByteSize,

    /// Accepted events held in memory while they wait for the lake; past
    /// it they wait in the write-ahead log only and are read back as
    /// flushes free memory. Bounds ingest's memory whatever the backlog.
    #[arg(
        long,
        env = "VESPER_MAX_BUFFERED_BYTES",
        default_value_t = DEFAULT_MAX_BUFFERED_BYTES,
        value_name = "SIZE"
    )]
    pub max_buffered_bytes: ByteSize,

    /// Most events in one Ingest call; a larger call is refused whole
    /// (RESOURCE_EXHAUSTED; 413 through the webhook) before any event is
    /// looked at.
    #[arg(
        long,
        env = "VESPER_MAX_REQUEST_EVENTS",
        default_value_t = DEFAULT_MAX_REQUEST_EVENTS,
        value_parser = parse_request_events,
        value_name = "N"
    )]
    pub max_request_events: usize,

    /// How many recent event ids are remembered to drop duplicates (the
    /// window survives restarts).
    #[arg(
        long,
        env = "VESPER_DEDUP_WINDOW",
        default_value_t = DEFAULT_DEDUP_WINDOW,
        value_name = "N"
    )]
    pub dedup_window: usize,

    /// How long an event id is remembered to drop duplicates (e.g. 24h).
    #[arg(
        long,
        env = "VESPER_DEDUP_TTL",
        default_value = "24h",
        value_parser = parse_duration,
        value_name = "DURATION"
    )]
    pub dedup_ttl: Duration,

    /// Where accepted events are logged (the local write-ahead log, or a
    /// NATS JetStream stream in fleet mode) and the stream's settings.
    #[command(flatten)]
    pub log: LogArgs,

    /// The fleet-mode publisher's bounds.
    #[command(flatten)]
    pub publish: PublishArgs,
}

/// How accepted events become lake objects, and how failed writes are
/// retried: shared by `vesper ingest`, `vesper up` and the fleet's
/// `vesper lake-writer`, so the settings mean the same in every mode.
#[derive(Debug, Clone, clap::Args)]
pub struct BatchArgs {
    /// Events per lake object: a partition's batch is written when it holds
    /// this many. 0 (the default) turns the count off: objects are cut by
    /// --batch-bytes or --max-batch-age. The old system wrote 50.
    #[arg(
        long,
        env = "VESPER_BATCH_SIZE",
        default_value_t = DEFAULT_BATCH_SIZE,
        value_parser = clap::value_parser!(u32).range(0..=100_000),
        value_name = "N"
    )]
    pub batch_size: u32,

    /// A partition's batch is written when its oldest event has waited this
    /// long, however small it is (e.g. 5s, 500ms).
    #[arg(
        long,
        env = "VESPER_MAX_BATCH_AGE",
        default_value = "5s",
        value_parser = parse_duration,
        value_name = "DURATION"
    )]
    pub max_batch_age: Duration,

    /// A partition's batch becomes a lake object at this many bytes of
    /// NDJSON, or earlier at --batch-size events or --max-batch-age. Must
    /// fit the storage object-size limit.
    #[arg(
        long,
        env = "VESPER_BATCH_BYTES",
        default_value_t = DEFAULT_BATCH_BYTES,
        value_name = "SIZE"
    )]
    pub batch_bytes: ByteSize,

    /// The longest wait between retries of a failed write to storage
    /// (retries back off exponentially, with jitter, up to this).
    #[arg(
        long,
        env = "VESPER_FLUSH_RETRY_MAX",
        default_value = "10s",
        value_parser = parse_duration,
        value_name = "DURATION"
    )]
    pub flush_retry_max: Duration,
}

impl BatchArgs {
    /// The batching rules these options describe.
    pub fn rules(&self) -> BatchRules {
        BatchRules {
            batch_size: self.batch_size,
            batch_bytes: self.batch_bytes.bytes(),
            max_batch_age: self.max_batch_age,
        }
    }
}

/// A request-events cap: 1 to 1,000,000.
fn parse_request_events(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if (1..=1_000_000).contains(&n) => Ok(n),
        _ => Err(format!("{text:?} is not a whole number from 1 to 1000000")),
    }
}

impl IngestEngineArgs {
    /// The configuration these options describe.
    pub fn config(&self) -> IngestConfig {
        IngestConfig {
            batch_size: self.batch.batch_size,
            max_batch_age: self.batch.max_batch_age,
            max_wal_bytes: self.max_wal_bytes.bytes(),
            dedup_window: self.dedup_window,
            dedup_ttl: self.dedup_ttl,
            retry_max: self.batch.flush_retry_max,
            max_event_bytes: self.max_event_bytes.bytes(),
            batch_bytes: self.batch.batch_bytes.bytes(),
            max_buffered_bytes: self.max_buffered_bytes.bytes(),
            max_request_events: self.max_request_events,
            ..IngestConfig::new(&self.wal_dir)
        }
    }
}
