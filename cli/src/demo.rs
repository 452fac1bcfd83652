//! `vesper demo`: the platform for a bounded time, then the analytics.

use std::{io::Write, time::Duration};

use clap::Args;
use vesper::{
    Shutdown,
    config::{announce_listening, parse_duration},
    v1::RunStatus,
};

use crate::{
    analytics::AnalyticsCommand,
    platform::{Platform, PlatformArgs, Summary},
};

/// Run the platform for a while, then build the analytics and show the
/// top-5 table and what happened.
#[derive(Debug, Args)]
pub(crate) struct DemoCommand {
    /// How long the platform runs before the analytics (e.g. 60s, 2m).
    #[arg(
        long,
        env = "VESPER_DEMO_DURATION",
        default_value = "60s",
        value_parser = parse_duration,
        value_name = "DURATION"
    )]
    duration: Duration,

    #[command(flatten)]
    platform: PlatformArgs,
}

impl DemoCommand {
    pub(crate) async fn run(self) -> anyhow::Result<()> {
        let shutdown = Shutdown::on_signals();
        let mut platform = Platform::start(&self.platform, &shutdown).await?;
        let addresses = platform.addresses().clone();
        announce_listening(Some(addresses.grpc), Some(addresses.http));
        tracing::info!(
            duration = %humantime::format_duration(self.duration),
            lake = %addresses.lake,
            "demo running: the generator pushes events, the pipelines snapshot users and content"
        );
        platform.booted().await;
        tokio::select! {
            () = tokio::time::sleep(self.duration) => {}
            () = shutdown.signalled() => tracing::info!("demo cut short"),
        }
        let summary = platform.stop().await?;
        if shutdown.is_triggered() {
            return print_summary(&summary).map_err(Into::into);
        }
        let analytics = AnalyticsCommand::for_lake(self.platform.lake().clone())
            .run()
            .await;
        // Last, so it is what stays on screen under dbt's output.
        print_summary(&summary)?;
        analytics
    }
}

fn print_summary(summary: &Summary) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "\nWhat happened")?;
    if let Some(stats) = &summary.ingest {
        writeln!(
            out,
            "  events   {} accepted, {} signups filtered, {} duplicates dropped, {} rejected",
            stats.accepted, stats.filtered, stats.duplicates, stats.rejected
        )?;
        writeln!(
            out,
            "  lake     {} event objects written ({} events){}",
            stats.flushed_objects,
            stats.flushed_events,
            if stats.buffered_events > 0 {
                format!(", {} events still in the WAL", stats.buffered_events)
            } else {
                String::new()
            }
        )?;
    }
    for report in &summary.pipelines {
        let outcome = if report.status() == RunStatus::Succeeded {
            format!("{} records, {}", report.records, report.manifest_key)
        } else {
            format!("failed: {}", report.error)
        };
        writeln!(out, "  pipeline {:<8} {outcome}", report.pipeline)?;
    }
    writeln!(out)?;
    out.flush()
}
