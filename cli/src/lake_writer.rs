//! `vesper lake-writer`: the fleet's writers of the lake.

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context;
use axum::{Json, Router, extract::State, http::StatusCode, routing::get};
use clap::Args;
use vesper::{
    Shutdown,
    config::{announce_listening, bind},
};
use vesper_ingest::{
    BatchArgs,
    fleet::{
        self, FleetConfig, LogArgs,
        writer::{LakeWriter, WriterArgs, WriterConfig, ensure_consumer_within},
    },
};
use vesper_storage::{DEFAULT_MAX_OBJECT_SIZE, ObjectStore, StoragePeerArgs};

/// Default address of the writer's `/health` and `/metrics`.
const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8090";

/// `vesper lake-writer --help`: what the writer does and why it is its
/// own command.
pub(crate) const LONG_ABOUT: &str = "Write the fleet's event stream to the lake.

In fleet mode (`--log nats://...`) ingest replicas do not write the
lake: they publish every accepted event to a replicated NATS JetStream
stream and answer once it is stored there, so they keep no state and
any of them can take any request. Lake writers turn that stream into
lake objects: every writer pulls from one shared durable consumer, so
each message goes to one writer; it batches them per hour of event time
(the --batch-* rules of `vesper ingest`), writes each batch through
Storage, and acks the messages only once Storage confirmed the object.
A writer that dies leaves its messages unacked, and JetStream gives them
to another writer after the ack wait: no event is lost, and one can
reach the lake twice only through such a failure (docs/fleet.md bounds
the copies).

The writer is its own command so that it scales apart from request
handling: run as many ingest replicas as the request rate needs and as
many writers as the lake's write rate needs (`vesper up --log ...` runs
one of each in one process). Ctrl-C or SIGTERM writes the open batches,
acks them, and exits. /health (JSON: the consumer's pending, ack-pending
and redelivered messages, what this writer wrote and holds) and
/metrics are served on --http-addr.";

/// Write the fleet's event stream to the lake (see [`LONG_ABOUT`]).
#[derive(Debug, Args)]
pub(crate) struct LakeWriterCommand {
    /// Address to serve /health and /metrics on (port 0 picks a free port).
    #[arg(
        long,
        env = "VESPER_WRITER_HTTP_ADDR",
        default_value = DEFAULT_HTTP_ADDR,
        value_name = "HOST:PORT"
    )]
    http_addr: SocketAddr,

    #[command(flatten)]
    storage: StoragePeerArgs,

    #[command(flatten, next_help_heading = "Event log (NATS JetStream)")]
    log: LogArgs,

    #[command(flatten, next_help_heading = "Lake writer")]
    writer: WriterArgs,

    #[command(flatten, next_help_heading = "Batches")]
    batch: BatchArgs,
}

impl LakeWriterCommand {
    pub(crate) async fn run(self) -> anyhow::Result<()> {
        let shutdown = Shutdown::on_signals();
        let fleet = self.log.fleet().context(
            "vesper lake-writer needs --log nats://HOST:PORT[,...]: the NATS JetStream cluster of the fleet (with --log wal, ingest writes the lake itself)",
        )?;
        let max_object_size = DEFAULT_MAX_OBJECT_SIZE.bytes();
        let store = Arc::new(self.storage.connect_lazy(max_object_size));
        let writer =
            start_writer(&fleet, &self.batch, &self.writer, store, max_object_size).await?;
        let listener = bind(self.http_addr).await?;
        let addr = listener.local_addr()?;
        let router = router(writer.clone());
        let server = tokio::spawn(
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown.signalled())
                .into_future(),
        );
        tracing::info!(
            storage = %self.storage.storage_addr,
            log = %self.log.log,
            stream = fleet.stream.name,
            consumer = fleet.consumer,
            "lake writer ready"
        );
        announce_listening(None, Some(addr));
        shutdown.signalled().await;
        writer.shutdown().await;
        server
            .await
            .context("the HTTP server of the lake writer failed")??;
        Ok(())
    }
}

/// Connects to the cluster, makes sure of the stream and the consumer, and
/// starts a writer on them (`vesper lake-writer`, and the one `vesper up
/// --log nats://...` embeds).
pub(crate) async fn start_writer(
    fleet: &FleetConfig,
    batch: &BatchArgs,
    args: &WriterArgs,
    store: Arc<dyn ObjectStore>,
    max_object_size: u64,
) -> anyhow::Result<LakeWriter> {
    let config = WriterConfig::new(fleet, batch, args, max_object_size);
    config.check()?;
    let client = fleet::connect(fleet, "vesper-lake-writer").await?;
    let context = fleet::jetstream(client.clone(), fleet);
    fleet::stream::ensure_stream_within(&context, &fleet.stream, fleet.start_timeout).await?;
    let consumer = ensure_consumer_within(&context, &config, fleet.start_timeout).await?;
    Ok(LakeWriter::start(client, consumer, config, store)?)
}

/// `/health` and `/metrics`.
fn router(writer: LakeWriter) -> Router {
    Router::new()
        .route("/health", get(health))
        .with_state(writer)
        .merge(vesper::metrics::router(vesper::metrics::install()))
}

async fn health(State(writer): State<LakeWriter>) -> (StatusCode, Json<serde_json::Value>) {
    let health = writer.health().await;
    let status = if health["status"] == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(health))
}
