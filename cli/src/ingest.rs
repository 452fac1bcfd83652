//! `vesper ingest`.

use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use vesper::{
    Shutdown,
    config::{announce_listening, bind},
    grpc::GrpcLimits,
    metrics::MetricsArgs,
};
use vesper_ingest::{IngestArgs, IngestEngine};

/// Serve EventIngest.
#[derive(Debug, Args)]
pub(crate) struct IngestCommand {
    #[command(flatten)]
    args: IngestArgs,

    #[command(flatten, next_help_heading = "Metrics")]
    metrics: MetricsArgs,

    #[command(flatten, next_help_heading = "gRPC limits")]
    grpc_limits: GrpcLimits,
}

impl IngestCommand {
    pub(crate) async fn run(self) -> anyhow::Result<()> {
        let shutdown = Shutdown::on_signals();
        let config = self.args.engine.config();
        config.check()?;
        self.grpc_limits
            .check_fits(
                "Ingest message (derived from --max-event-bytes)",
                config.max_ingest_message(),
            )
            .map_err(anyhow::Error::msg)?;
        self.grpc_limits.install();
        let store = Arc::new(self.args.storage.connect_lazy(config.max_object_size));
        // Replay (or, in fleet mode, the stream's check) before the ready
        // line: a client that waits for it finds the duplicate window and
        // the batches as they were.
        let engine = IngestEngine::start_with(&self.args.engine, store)
            .await
            .with_context(|| describe_log(&self.args.engine))?;
        let listener = bind(self.args.grpc_addr).await?;
        self.metrics.spawn(shutdown.signalled()).await?;
        tracing::info!(
            storage = %self.args.storage.storage_addr,
            log = %self.args.engine.log.log,
            wal_dir = %self.args.engine.wal_dir.display(),
            batch_size = self.args.engine.batch.batch_size,
            max_batch_age = ?self.args.engine.batch.max_batch_age,
            max_wal_bytes = %self.args.engine.max_wal_bytes,
            "ingest ready"
        );
        announce_listening(Some(listener.local_addr()?), None);
        vesper_ingest::serve_engine(listener, engine, shutdown.signalled()).await?;
        tracing::info!("ingest stopped");
        Ok(())
    }
}

/// What starting the engine opens, for the error when it fails.
pub(crate) fn describe_log(args: &vesper_ingest::IngestEngineArgs) -> String {
    match args.log.fleet() {
        Some(fleet) => format!(
            "cannot start fleet mode on stream {} at {}",
            fleet.stream.name,
            fleet.servers_text()
        ),
        None => format!("cannot open the write-ahead log {}", args.wal_dir.display()),
    }
}
