//! [`IngestEngine`]: one face over the two ways of logging accepted
//! events, the local write-ahead log (single node, the default) and a NATS
//! JetStream stream (fleet mode). Both validate, filter and refuse exactly
//! alike ([`crate::engine`]'s `prepare`); they differ in where an OK's
//! events are kept and in how duplicates are found.

use std::sync::Arc;

use vesper::v1::{Event, StatsResponse};
use vesper_storage::ObjectStore;

use crate::{
    FlushOutcome, IngestConfig, IngestError, IngestOutcome,
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
    pub async fn start_fleet(
        config: IngestConfig,
        fleet: FleetConfig,
        publish: PublishArgs,
    ) -> Result<Self, IngestError> {
        config.check()?;
        Ok(Self {
            log: Log::JetStream(FleetEngine::start(config, fleet, publish).await?),
        })
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
