//! `vesper datasource`.

use std::net::SocketAddr;

use clap::Args;
use vesper::{
    Shutdown,
    auth::{AuthArgs, PeerTokenArgs, ReflectionArgs},
    config::{announce_listening, bind, defaults},
    grpc::GrpcLimits,
    metrics::MetricsArgs,
    tls::TlsArgs,
};
use vesper_datasource::{DataSourceArgs, WebhookArgs};

/// Serve the mock upstream over gRPC.
#[derive(Debug, Args)]
pub(crate) struct DataSourceCommand {
    /// Address to serve gRPC on (port 0 picks a free port).
    #[arg(
        long,
        env = "VESPER_GRPC_ADDR",
        default_value = defaults::DATASOURCE_GRPC_ADDR,
        value_name = "HOST:PORT"
    )]
    grpc_addr: SocketAddr,

    #[command(flatten)]
    args: DataSourceArgs,

    #[command(flatten)]
    webhook: WebhookArgs,

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

impl DataSourceCommand {
    pub(crate) async fn run(self) -> anyhow::Result<()> {
        let shutdown = Shutdown::on_signals();
        self.grpc_limits.install();
        self.tls.install()?;
        self.auth
            .server_auth(self.reflection.reflection, &[self.grpc_addr])?
            .install();
        self.peer_token.install()?;
        let config = self.args.config(self.webhook.webhook_url.clone());
        let listener = bind(self.grpc_addr).await?;
        self.metrics.spawn(shutdown.signalled()).await?;
        tracing::info!(
            seed = config.seed,
            fault_rate = config.faults.fault_rate,
            stall_rate = config.faults.stall_rate,
            stall = ?config.faults.stall,
            webhook_url = %config.generator.webhook_url,
            generator = if config.generator.autostart { "on" } else { "off" },
            "datasource ready"
        );
        announce_listening(Some(listener.local_addr()?), None);
        vesper_datasource::serve(listener, config, shutdown.signalled()).await?;
        tracing::info!("datasource stopped");
        Ok(())
    }
}
