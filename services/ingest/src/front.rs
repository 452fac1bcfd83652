//! [`IngestEngine`]: one face over the two ways of logging accepted
//! events, the local write-ahead log (single node, the default) and a NATS
//! JetStream stream (fleet mode). Both validate, filter and refuse exactly
//! alike ([`crate::engine`]'s `prepare`); they differ in where an OK's
//! events are kept and in how duplicates are found.

use std::sync::Arc;

use vesper::v1::{Event, StatsResponse};
use vesper_storage::ObjectStore;

use crate::{
    FlushOutcome, IngestConfig, IngestEngineArgs, IngestError, IngestOutcome,
    engine::WalEngine,
    fleet::{FleetConfig, publish::FleetEngine, publish::PublishArgs},
};

/// A running engine: cheap to clone.
#[derive(Debug, Clone)]
pub struct IngestEngine {
    log: Log,
}

#[derive(Debug, Clone)]
enum Log {
    Wal(WalEngine),
    JetStream(FleetEngine),
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
        Ok(Self {
            log: Log::Wal(WalEngine::start(config, store).await?),
        })
    }

    /// Fleet mode: connects to the cluster, creates or checks the stream
    /// (waiting up to `--log-start-timeout` for it), and publishes every
    /// accepted event there. The lake is written by the lake writers, not
    /// by this engine.
    ///
    /// Events still in a local write-ahead log in `config.wal_dir` (a
    /// member that ran on one machine before) are first written to the
    /// lake through `store`, exactly as the single-node engine would after
    /// a restart (same keys, so exactly once); when storage does not take
    /// them the start fails, naming the directory, and they stay in the log.
    pub async fn start_fleet(
        config: IngestConfig,
        fleet: FleetConfig,
        publish: PublishArgs,
        store: Arc<dyn ObjectStore>,
    ) -> Result<Self, IngestError> {
        config.check()?;
        drain_local_log(&config, store).await?;
        Ok(Self {
            log: Log::JetStream(FleetEngine::start(config, fleet, publish).await?),
        })
    }

    /// Starts the engine the options describe: the local log, or fleet
    /// mode when `--log` names NATS servers.
    pub async fn start_with(
        args: &IngestEngineArgs,
        store: Arc<dyn ObjectStore>,
    ) -> Result<Self, IngestError> {
        let config = args.config();
        match args.log.fleet() {
            Some(fleet) => Self::start_fleet(config, fleet, args.publish.clone(), store).await,
            None => Self::start(config, store).await,
        }
    }

    /// Whether accepted events go to a JetStream stream.
    pub fn is_fleet(&self) -> bool {
        matches!(self.log, Log::JetStream(_))
    }

    /// The write-ahead log's id (part of every object name); in fleet mode,
    /// the stream's name.
    pub fn wal_id(&self) -> &str {
        match &self.log {
            Log::Wal(engine) => engine.wal_id(),
            Log::JetStream(engine) => &engine.stream().name,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &IngestConfig {
        match &self.log {
            Log::Wal(engine) => engine.config(),
            Log::JetStream(engine) => engine.config(),
        }
    }

    /// Counts a batch rejected as invalid (validation happens in the
    /// service, before the engine).
    pub fn count_rejected(&self, events: usize) {
        match &self.log {
            Log::Wal(engine) => engine.count_rejected(events),
            Log::JetStream(engine) => engine.count_rejected(events),
        }
    }

    /// Takes a validated batch: drops signups and duplicates, stores the
    /// rest durably (fsynced in the local log, or acknowledged by a quorum
    /// of the stream), and returns once they are. An event whose lake line
    /// is over `max_event_bytes` refuses the whole batch
    /// ([`IngestError::EventsTooLarge`]); nothing of it is stored.
    pub async fn ingest(&self, events: Vec<Event>) -> Result<IngestOutcome, IngestError> {
        match &self.log {
            Log::Wal(engine) => engine.ingest(events).await,
            Log::JetStream(engine) => engine.ingest(events).await,
        }
    }

    /// Single node: writes every buffered event to the lake now and returns
    /// once storage confirmed it. Fleet mode: waits until the lake writers
    /// have taken every event the stream held at the call (bounded by
    /// `--flush-timeout`); the answer names no keys.
    pub async fn flush(&self) -> Result<FlushOutcome, IngestError> {
        match &self.log {
            Log::Wal(engine) => engine.flush().await,
            Log::JetStream(engine) => engine.flush().await,
        }
    }

    /// Counters since start and current gauges.
    pub fn stats(&self) -> StatsResponse {
        match &self.log {
            Log::Wal(engine) => engine.stats(),
            Log::JetStream(engine) => engine.stats(),
        }
    }

    /// Stops accepting (Ingest answers UNAVAILABLE) and stops. Single node:
    /// waits for appends in flight, writes everything buffered to the lake
    /// (a few tries), and stops the flusher and the log writer; whatever
    /// storage did not take stays in the log and is written after the next
    /// start. Idempotent.
    pub async fn shutdown(&self) {
        match &self.log {
            Log::Wal(engine) => engine.shutdown().await,
            Log::JetStream(engine) => engine.shutdown().await,
        }
    }
}

/// Writes what a local write-ahead log still holds to the lake, before
/// fleet mode takes over; nothing when there is no log.
async fn drain_local_log(
    config: &IngestConfig,
    store: Arc<dyn ObjectStore>,
) -> Result<(), IngestError> {
    let dir = &config.wal_dir;
    let found = crate::wal::has_segments(dir).map_err(|source| IngestError::Io {
        action: "cannot list",
        path: dir.clone(),
        source,
    })?;
    if !found {
        return Ok(());
    }
    let engine = WalEngine::start(config.clone(), store).await?;
    let waiting = engine.stats().buffered_events;
    if waiting > 0 {
        tracing::info!(
            wal_dir = %dir.display(),
            events = waiting,
            "writing the events left in the local write-ahead log to the lake before fleet mode"
        );
    }
    let flushed = engine.flush().await;
    engine.shutdown().await;
    let left = engine.stats().buffered_events;
    match flushed {
        Ok(_) if left == 0 => Ok(()),
        Ok(_) => Err(IngestError::Config {
            message: format!(
                "the write-ahead log {} still holds {left} events the lake has not confirmed; fleet mode starts once they are written (start again when storage is up)",
                dir.display()
            ),
        }),
        Err(err) => Err(IngestError::Config {
            message: format!(
                "the write-ahead log {} holds {waiting} events that storage did not take ({err}); they stay there, and fleet mode starts once they are written (start again when storage is up)",
                dir.display()
            ),
        }),
    }
}
