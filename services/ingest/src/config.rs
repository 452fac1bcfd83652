//! The ingest service's settings and their command-line form.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use vesper::config::{ByteSize, defaults, parse_duration};
use vesper_storage::StoragePeerArgs;

use crate::fs::{StdFs, WalFs};

/// Default number of events per lake object.
pub const DEFAULT_BATCH_SIZE: u32 = 50;
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

/// How the ingest engine runs.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// The write-ahead log directory.
    pub wal_dir: PathBuf,
    /// Events per lake object: a partition's batch is flushed when it has
    /// this many.
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
    /// Flushes that may write to storage at once.
    pub flush_concurrency: usize,
    /// The largest object storage accepts: the gRPC message limit of the
    /// storage client.
    pub max_object_size: u64,
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
            flush_concurrency: 4,
            max_object_size: vesper_storage::DEFAULT_MAX_OBJECT_SIZE.bytes(),
            fs: Arc::new(StdFs),
        }
    }

    /// The segment size really used: small enough that sealed segments can
    /// be reclaimed well before the log reaches its bound.
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

    /// Events per lake object: a partition's batch is written when it holds
    /// this many.
    #[arg(
        long,
        env = "VESPER_BATCH_SIZE",
        default_value_t = DEFAULT_BATCH_SIZE,
        value_parser = clap::value_parser!(u32).range(1..=100_000),
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

impl IngestEngineArgs {
    /// The configuration these options describe.
    pub fn config(&self) -> IngestConfig {
        IngestConfig {
            batch_size: self.batch_size,
            max_batch_age: self.max_batch_age,
            max_wal_bytes: self.max_wal_bytes.bytes(),
            dedup_window: self.dedup_window,
            dedup_ttl: self.dedup_ttl,
            retry_max: self.flush_retry_max,
            ..IngestConfig::new(&self.wal_dir)
        }
    }
}
