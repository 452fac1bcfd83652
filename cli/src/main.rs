//! `vesper`: every vesper service, alone or all together, and the tools
//! around them. This binary only parses flags and wires the library crates
//! together; the behaviour lives in the crates.

mod batch;
mod gateway;
mod storage;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// vesper: an open data-ingestion platform.
///
/// A mesh of gRPC services (storage, datasource, ingest, batch) behind one
/// HTTP gateway, writing a lake on a local directory or S3. Every flag has
/// an environment variable fallback (shown in each command's --help); flags
/// win over the environment, the environment over defaults. Logs go to
/// stderr; RUST_LOG sets their level (e.g. RUST_LOG=debug).
#[derive(Debug, Parser)]
#[command(
    name = "vesper",
    version,
    propagate_version = true,
    max_term_width = 100
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the lake over gRPC (vesper.v1.Storage) on a directory or an S3 bucket.
    Storage(storage::StorageCommand),
    /// Serve the HTTP front: the old REST API and the webhook, translated to gRPC.
    Gateway(gateway::GatewayCommand),
    /// Run batch pipelines: pull paged REST APIs into lake snapshots (run, list, serve).
    Batch(batch::BatchCommand),
}

impl Command {
    fn service_name(&self) -> &'static str {
        match self {
            Self::Storage(_) => "vesper-storage",
            Self::Gateway(_) => "vesper-gateway",
            Self::Batch(_) => "vesper-batch",
        }
    }

    async fn run(self) -> anyhow::Result<()> {
        match self {
            Self::Storage(command) => command.run().await,
            Self::Gateway(command) => command.run().await,
            Self::Batch(command) => command.run().await,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _telemetry = vesper::telemetry::init(cli.command.service_name());
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!("cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli.command.run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}
