//! `vesper up`: the whole platform in one process until Ctrl-C.

use std::io::Write;

use clap::Args;
use vesper::{Shutdown, config::announce_listening};

use crate::platform::{Addresses, Platform, PlatformArgs};

/// Run the whole platform in one process until Ctrl-C.
#[derive(Debug, Args)]
pub(crate) struct UpCommand {
    #[command(flatten)]
    platform: PlatformArgs,
}

impl UpCommand {
    pub(crate) async fn run(self) -> anyhow::Result<()> {
        let shutdown = Shutdown::on_signals();
        let platform = Platform::start(&self.platform, &shutdown).await?;
        let addresses = platform.addresses().clone();
        announce_listening(Some(addresses.grpc), Some(addresses.http));
        print_banner(&addresses)?;
        shutdown.signalled().await;
        let summary = platform.stop().await?;
        if let Some(stats) = summary.ingest.as_ref().filter(|stats| stats.log == "nats") {
            // Fleet mode: what waits for the lake is the stream's, not this
            // member's.
            tracing::info!(
                accepted = stats.accepted,
                filtered = stats.filtered,
                duplicates = stats.duplicates,
                in_stream = stats.stream_messages,
                "vesper stopped"
            );
        } else if let Some(stats) = summary.ingest {
            tracing::info!(
                accepted = stats.accepted,
                filtered = stats.filtered,
                duplicates = stats.duplicates,
                objects = stats.flushed_objects,
                still_in_wal = stats.buffered_events,
                "vesper stopped"
            );
        }
        Ok(())
    }
}

/// Where everything is, and how to poke at it, on stdout.
fn print_banner(addresses: &Addresses) -> std::io::Result<()> {
    let Addresses {
        grpc,
        http,
        lake,
        wal,
    } = addresses;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "\nvesper is up\n\
         \x20 gRPC   {grpc}  (vesper.v1 Storage, DataSource, EventIngest, BatchPipeline; health, reflection)\n\
         \x20 HTTP   http://{http}  (POST /webhook/events, GET /api/*, /health, /metrics)\n\
         \x20 lake   {lake}\n\
         \x20 WAL    {}\n\
         \n\
         Try:\n\
         \x20 curl -s 'http://{http}/api/users?offset=9990&limit=2'\n\
         \x20 curl -s http://{http}/health\n\
         \x20 grpcurl -plaintext {grpc} list\n\
         \x20 grpcurl -plaintext -d '{{\"offset\":0,\"limit\":2}}' {grpc} vesper.v1.DataSource/ListUsers\n\
         \x20 grpcurl -plaintext {grpc} vesper.v1.EventIngest/Stats\n\
         \n\
         Ctrl-C stops vesper; buffered events are written to the lake first.\n",
        wal.display()
    )?;
    out.flush()
}
