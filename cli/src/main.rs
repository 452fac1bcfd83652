//! `vesper`: every vesper service, alone or all together, and the tools
//! around them. This binary only parses flags and wires the library crates
//! together; the behaviour lives in the crates.

mod analytics;
mod batch;
mod datasource;
mod demo;
mod gateway;
mod healthcheck;
mod ingest;
mod lake_writer;
mod platform;
mod progress;
mod sample_data;
mod storage;
mod up;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of the system allocator: after 20 s of webhook load
/// the system allocator still held 350 MiB in its per-thread arenas, while
/// mimalloc gives freed pages back and allocates the many small
/// per-request buffers faster (docs/benchmarks.md). It is built as v2 and
/// without transparent huge pages (`no_thp`): with huge pages, which many
/// kernels enable for every mapping, each thread's arena costs megabytes
/// of resident memory at idle.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// vesper: an open data-ingestion platform.
///
/// A mesh of gRPC services (storage, datasource, ingest, batch) behind one
/// HTTP gateway, writing a lake on a local directory or S3. Every flag has
/// an environment variable fallback (shown in each command's --help); flags
/// win over the environment, the environment over defaults. Logs go to
/// stderr; RUST_LOG sets their level (e.g. RUST_LOG=debug). Traces are
/// exported over OTLP/gRPC when OTEL_EXPORTER_OTLP_ENDPOINT is set
/// (OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf for OTLP/HTTP).
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
    /// Run the whole platform in one process (every gRPC service on one port,
    /// the gateway on HTTP) until Ctrl-C.
    Up(up::UpCommand),
    /// Run the platform for a while, then build the analytics and show the
    /// top-5 table and a summary.
    Demo(demo::DemoCommand),
    /// Serve the lake over gRPC (vesper.v1.Storage) on a directory or an S3 bucket.
    Storage(storage::StorageCommand),
    /// Serve the mock upstream over gRPC (vesper.v1.DataSource) and push events to a webhook.
    Datasource(datasource::DataSourceCommand),
    /// Take events in (vesper.v1.EventIngest): validate, drop signups and
    /// duplicates, log durably, batch to the lake.
    Ingest(ingest::IngestCommand),
    /// Fleet mode: write the NATS JetStream event stream to the lake (one
    /// shared consumer, any number of writers), apart from the ingest replicas.
    #[command(long_about = lake_writer::LONG_ABOUT)]
    LakeWriter(lake_writer::LakeWriterCommand),
    /// Serve the HTTP front: the old REST API and the webhook, translated to gRPC.
    Gateway(gateway::GatewayCommand),
    /// Run batch pipelines: pull paged REST APIs into lake snapshots (run, list, serve).
    Batch(batch::BatchCommand),
    /// Write the analytics' sample CSVs (data/users.csv, sessions.csv, content.csv) into a lake.
    SampleData(sample_data::SampleDataCommand),
    /// Build the analytics (dbt + DuckDB) over a lake and print the top-5 table.
    Analytics(analytics::AnalyticsCommand),
    /// Probe a vesper server (gRPC health or HTTP); for container health checks.
    Healthcheck(healthcheck::HealthcheckCommand),
}

impl Command {
    /// The OpenTelemetry `service.name`. The one-process platform is one
    /// process, hence one name; its spans still name each hop.
    fn service_name(&self) -> &'static str {
        match self {
            Self::Up(_) | Self::Demo(_) => "vesper",
            Self::Storage(_) => "vesper-storage",
            Self::Datasource(_) => "vesper-datasource",
            Self::Ingest(_) => "vesper-ingest",
            Self::LakeWriter(_) => "vesper-lake-writer",
            Self::Gateway(_) => "vesper-gateway",
            Self::Batch(_) => "vesper-batch",
            Self::SampleData(_) => "vesper-sample-data",
            Self::Analytics(_) => "vesper-analytics",
            Self::Healthcheck(_) => "vesper-healthcheck",
        }
    }

    async fn run(self) -> anyhow::Result<()> {
        match self {
            Self::Up(command) => command.run().await,
            Self::Demo(command) => command.run().await,
            Self::Storage(command) => command.run().await,
            Self::Datasource(command) => command.run().await,
            Self::Ingest(command) => command.run().await,
            Self::LakeWriter(command) => command.run().await,
            Self::Gateway(command) => command.run().await,
            Self::Batch(command) => command.run().await,
            Self::SampleData(command) => command.run().await,
            Self::Analytics(command) => command.run().await,
            Self::Healthcheck(command) => command.run().await,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("vesper: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    // The OTLP exporter needs the runtime, both when it is built and when
    // the guard flushes the last spans on drop.
    let _runtime_context = runtime.enter();
    let _telemetry = vesper::telemetry::init(cli.command.service_name());
    // Recording is cheap; only commands that serve /metrics render it.
    vesper::metrics::install();
    match runtime.block_on(cli.command.run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            match err.downcast_ref::<analytics::AnalyticsFailed>() {
                Some(failed) => ExitCode::from(u8::try_from(failed.code).unwrap_or(1)),
                None => ExitCode::FAILURE,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Flag names, ids and env variables of every command are unique and
    /// consistent (clap checks this only when a command is first parsed).
    #[test]
    fn every_command_has_consistent_flags() {
        super::Cli::command().debug_assert();
    }
}
