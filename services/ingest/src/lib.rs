//! EventIngest: takes events in, validates them, drops `signup` events and
//! duplicates, logs them durably (write-ahead log, group commit), and writes
//! them to the lake in batches per hour of event time.
//!
//! - [`IngestEngine`]: the engine (log, deduplication, batches, flusher),
//!   with an async [`IngestEngine::shutdown`] that flushes and stops.
//! - [`IngestService`]: the `vesper.v1.EventIngest` gRPC service over it.
//! - [`serve`] / [`serve_engine`]: `vesper ingest` alone.
//!
//! - [`IngestConfig`] / [`IngestEngineArgs`]: every bound (event size,
//!   batch bytes, memory window, log size, request events), checked
//!   against each other at start.
//! - [`lake`]: where and how events land in the lake (partitions, keys,
//!   the NDJSON line).
//! - [`fleet`]: fleet mode, where accepted events go to a NATS JetStream
//!   stream shared by several replicas instead of the local log (`--log`).
//!
//! # Guarantees
//!
//! An OK from Ingest (a 200 from the webhook) means every accepted event
//! is fsynced in the write-ahead log, and it reaches the lake exactly once
//! across crashes, restarts and storage outages; whatever the log holds,
//! memory stays bounded; damage in the log costs only the damaged records,
//! which are kept aside. The engine's module documentation says how (group
//! commit, flush intents logged before writes, deterministic keys, the
//! backlog), and docs/ingest.md lists every guarantee, every limit and
//! what a client gets past it. The log's format is described in the `wal`
//! module and in docs/ingest.md.
//!
//! In fleet mode an OK means every accepted event was acknowledged by the
//! stream (stored on a quorum of its replicas); docs/fleet.md says what
//! that does and does not promise.

mod batching;
mod config;
mod dedup;
mod engine;
mod error;
pub mod fleet;
mod front;
pub mod fs;
pub mod lake;
mod service;
mod wal;

pub use batching::BatchRules;
pub use config::{
    BatchArgs, DEFAULT_BATCH_BYTES, DEFAULT_BATCH_SIZE, DEFAULT_DEDUP_TTL, DEFAULT_DEDUP_WINDOW,
    DEFAULT_MAX_BATCH_AGE, DEFAULT_MAX_BUFFERED_BYTES, DEFAULT_MAX_EVENT_BYTES,
    DEFAULT_MAX_REQUEST_EVENTS, DEFAULT_MAX_WAL_BYTES, DEFAULT_RETRY_MAX, DEFAULT_SEGMENT_BYTES,
    IngestArgs, IngestConfig, IngestEngineArgs,
};
pub use engine::{DEAD_LETTER_DIR, FlushOutcome, IngestOutcome, dead_letter_name};
pub use error::{IngestError, OversizedEvent};
pub use front::IngestEngine;
pub use service::{IngestService, MAX_INGEST_MESSAGE, serve, serve_engine};
