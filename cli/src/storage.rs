//! `vesper storage`.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Args;
use vesper::{
    Shutdown,
    auth::{AuthArgs, ReflectionArgs},
    config::{announce_listening, bind, defaults},
    grpc::GrpcLimits,
    metrics::MetricsArgs,
    tls::TlsArgs,
};
use vesper_storage::LakeArgs;

/// Serve the lake over gRPC.
#[derive(Debug, Args)]
pub(crate) struct StorageCommand {
    /// Address to serve gRPC on (port 0 picks a free port).
    #[arg(
        long,
        env = "VESPER_GRPC_ADDR",
        default_value = defaults::STORAGE_GRPC_ADDR,
        value_name = "HOST:PORT"
    )]
    grpc_addr: SocketAddr,

    #[command(flatten)]
    lake: LakeArgs,

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
}

impl StorageCommand {
    pub(crate) async fn run(self) -> anyhow::Result<()> {
        let shutdown = Shutdown::on_signals();
        self.grpc_limits
            .check_fits(
                "PutObject (--max-object-size)",
                vesper_storage::message_limit(self.lake.max_object_size.bytes()),
            )
            .map_err(anyhow::Error::msg)?;
        self.grpc_limits.install();
        self.tls.install()?;
        self.auth
            .server_auth(self.reflection.reflection, &[self.grpc_addr])?
            .install();
        let store = self
            .lake
            .open()
            .await
            .with_context(|| format!("cannot open the lake {}", self.lake.lake))?;
        let listener = bind(self.grpc_addr).await?;
        self.metrics.spawn(shutdown.signalled()).await?;
        tracing::info!(lake = %store.location(), max_object_size = %self.lake.max_object_size, "storage ready");
        announce_listening(Some(listener.local_addr()?), None);
        vesper_storage::serve(
            listener,
            store,
            self.lake.max_object_size.bytes(),
            shutdown.signalled(),
        )
        .await?;
        tracing::info!("storage stopped");
        Ok(())
    }
}
