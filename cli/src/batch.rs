//! `vesper batch`: run, list and serve the batch pipelines.

use std::{
    io::{IsTerminal, Write},
    net::SocketAddr,
    sync::Arc,
};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use vesper::{
    Shutdown,
    auth::{AuthArgs, ClientTokenArgs, PeerTokenArgs, ReflectionArgs},
    config::{announce_listening, bind, defaults},
    grpc::GrpcLimits,
    metrics::MetricsArgs,
    tls::{ClientTlsArgs, TlsArgs},
};
use vesper_batch::{BatchArgs, BatchError, LogProgress, PipelineArgs, RunObserver, RunReport};

/// Run batch pipelines: pull paged REST APIs into lake snapshots.
#[derive(Debug, Args)]
pub(crate) struct BatchCommand {
    #[command(subcommand)]
    action: BatchAction,
}

#[derive(Debug, Subcommand)]
enum BatchAction {
    /// Run pipelines now, then print a report of each. Exits 1 if any failed.
    Run(Box<RunCommand>),
    /// List the declared pipelines.
    List(ListCommand),
    /// Serve vesper.v1.BatchPipeline over gRPC, to run pipelines on request.
    Serve(Box<ServeCommand>),
}

#[derive(Debug, Args)]
struct RunCommand {
    /// Pipelines to run, in this order (every declared one when none is
    /// given; the built-in ones are users, content and events).
    #[arg(value_name = "PIPELINE")]
    names: Vec<String>,

    #[command(flatten)]
    args: BatchArgs,

    #[command(flatten, next_help_heading = "TLS")]
    tls: ClientTlsArgs,
    #[command(flatten, next_help_heading = "Access control")]
    token: ClientTokenArgs,
}

#[derive(Debug, Args)]
struct ListCommand {
    #[command(flatten)]
    pipelines: PipelineArgs,
}

#[derive(Debug, Args)]
struct ServeCommand {
    /// Address to serve gRPC on (port 0 picks a free port).
    #[arg(
        long,
        env = "VESPER_GRPC_ADDR",
        default_value = defaults::BATCH_GRPC_ADDR,
        value_name = "HOST:PORT"
    )]
    grpc_addr: SocketAddr,

    #[command(flatten)]
    args: BatchArgs,

    #[command(flatten)]
    metrics: MetricsArgs,

    #[command(flatten, next_help_heading = "gRPC limits")]
    grpc_limits: GrpcLimits,
    #[command(flatten, next_help_heading = "TLS")]
    tls: TlsArgs,

    #[command(flatten, next_help_heading = "Access control")]
    auth: AuthArgs,

    #[command(flatten, next_help_heading = "Access control")]
    reflection: ReflectionArgs,

    #[command(flatten, next_help_heading = "Access control")]
    peer_token: PeerTokenArgs,
}

impl BatchCommand {
    pub(crate) async fn run(self) -> anyhow::Result<()> {
        match self.action {
            BatchAction::Run(command) => (*command).run().await,
            BatchAction::List(command) => command.run(),
            BatchAction::Serve(command) => (*command).run().await,
        }
    }
}

impl RunCommand {
    async fn run(self) -> anyhow::Result<()> {
        let shutdown = Shutdown::on_signals();
        self.tls.install()?;
        self.token.install()?;
        // A bar is for people watching; logs and pipes get plain lines.
        let observer: Arc<dyn RunObserver> = if std::io::stderr().is_terminal() {
            Arc::new(crate::progress::BarProgress::new())
        } else {
            Arc::new(LogProgress::default())
        };
        let engine = self
            .args
            .engine()
            .await
            .with_context(|| format!("cannot open {}", self.args.destination()))?
            .with_observer(observer);
        let reports = match engine.run(&self.names, &shutdown).await {
            Ok(reports) => reports,
            Err(err @ BatchError::LakeUnavailable { .. }) => {
                let hint = match &self.args.lake {
                    Some(_) => "check --lake (VESPER_BATCH_LAKE)".to_owned(),
                    None => format!(
                        "start `vesper storage` there, point --storage-addr (VESPER_STORAGE_ADDR) at a running one, or write to a lake directly with --lake DIR|s3://BUCKET (now {})",
                        self.args.storage.storage_addr
                    ),
                };
                bail!("{err}; {hint}");
            }
            Err(err) => return Err(err.into()),
        };
        print_reports(&reports)?;
        let failed = reports.iter().filter(|report| !report.succeeded()).count();
        if failed > 0 {
            bail!("{failed} of {} pipelines failed", reports.len());
        }
        Ok(())
    }
}

impl ListCommand {
    fn run(self) -> anyhow::Result<()> {
        let pipelines = self.pipelines.load()?;
        let mut rows = vec![row(["NAME", "PREFIX", "PAGINATION", "STOP", "FIRST URL"])];
        for pipeline in pipelines.iter() {
            let stop = pipeline.stop().describe();
            rows.push(vec![
                pipeline.name().to_owned(),
                pipeline.prefix().to_owned(),
                pipeline.describe_pagination(),
                if stop.is_empty() { "-".into() } else { stop },
                pipeline.display_url(),
            ]);
        }
        let mut out = std::io::stdout().lock();
        write!(out, "{}", table(&rows, &[]))?;
        Ok(())
    }
}

impl ServeCommand {
    async fn run(self) -> anyhow::Result<()> {
        let shutdown = Shutdown::on_signals();
        self.grpc_limits.install();
        self.tls.install()?;
        self.auth
            .server_auth(self.reflection.reflection, &[self.grpc_addr])?
            .install();
        self.peer_token.install()?;
        let engine = Arc::new(
            self.args
                .engine()
                .await
                .with_context(|| format!("cannot open {}", self.args.destination()))?,
        );
        let listener = bind(self.grpc_addr).await?;
        self.metrics.spawn(shutdown.signalled()).await?;
        tracing::info!(
            pipelines = %engine.pipelines().names().join(","),
            from = %engine.pipelines().origin(),
            to = %self.args.destination(),
            concurrency = self.args.engine.concurrency,
            "batch ready"
        );
        announce_listening(Some(listener.local_addr()?), None);
        vesper_batch::serve(listener, engine, shutdown)
            .await
            .context("the batch gRPC server failed")?;
        tracing::info!("batch stopped");
        Ok(())
    }
}

/// The reports as a table on stdout, then each run's manifest or error.
fn print_reports(reports: &[RunReport]) -> std::io::Result<()> {
    let mut rows = vec![row([
        "PIPELINE",
        "STATUS",
        "RECORDS",
        "PAGES",
        "BYTES",
        "RETRIES",
        "TIME",
        "RECORDS/S",
    ])];
    for report in reports {
        rows.push(vec![
            report.pipeline.clone(),
            report.status.as_str().to_owned(),
            report.records.to_string(),
            report.pages.to_string(),
            indicatif::HumanBytes(report.bytes).to_string(),
            report.retries.to_string(),
            format!("{:.1}s", report.duration.as_secs_f64()),
            format!("{:.0}", report.records_per_second()),
        ]);
    }
    let mut out = std::io::stdout().lock();
    write!(out, "{}", table(&rows, &[2, 3, 4, 5, 6, 7]))?;
    writeln!(out)?;
    for report in reports {
        match (&report.manifest_key, &report.error) {
            (Some(manifest), _) => writeln!(out, "{}: {manifest}", report.pipeline)?,
            (None, error) => writeln!(
                out,
                "{}: FAILED: {}",
                report.pipeline,
                error.as_deref().unwrap_or("unknown error")
            )?,
        }
    }
    out.flush()
}

fn row<const N: usize>(cells: [&str; N]) -> Vec<String> {
    cells.into_iter().map(str::to_owned).collect()
}

/// Rows as aligned columns; the columns in `right` are right-aligned.
fn table(rows: &[Vec<String>], right: &[usize]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|column| {
            rows.iter()
                .filter_map(|row| row.get(column))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut text = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(column, cell)| {
                let width = widths[column];
                if right.contains(&column) {
                    format!("{cell:>width$}")
                } else {
                    format!("{cell:<width$}")
                }
            })
            .collect();
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    text
}
