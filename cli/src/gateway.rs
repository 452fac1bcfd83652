//! `vesper gateway`.

use clap::Args;
use vesper::{
    Shutdown,
    auth::{AuthArgs, PeerTokenArgs, Reflection},
    config::{announce_listening, bind},
    tls::TlsArgs,
};
use vesper_gateway::GatewayArgs;

/// Serve the HTTP front.
#[derive(Debug, Args)]
pub(crate) struct GatewayCommand {
    #[command(flatten)]
    args: GatewayArgs,
    #[command(flatten, next_help_heading = "TLS")]
    tls: TlsArgs,

    #[command(flatten, next_help_heading = "Access control")]
    auth: AuthArgs,

    #[command(flatten, next_help_heading = "Access control")]
    peer_token: PeerTokenArgs,
}

impl GatewayCommand {
    pub(crate) async fn run(self) -> anyhow::Result<()> {
        let shutdown = Shutdown::on_signals();
        self.tls.install()?;
        let mut config = self.args.config();
        config.auth = self
            .auth
            .server_auth(Reflection::Off, &[self.args.http_addr])?
            .tokens;
        self.peer_token.install()?;
        tracing::info!(
            datasource = %config.datasource,
            ingest = %config.ingest,
            "gateway ready"
        );
        let listener = bind(self.args.http_addr).await?;
        announce_listening(None, Some(listener.local_addr()?));
        let limits = config.server.clone();
        vesper_gateway::serve_with(
            listener,
            vesper_gateway::router(config),
            &limits,
            shutdown.signalled(),
        )
        .await?;
        tracing::info!("gateway stopped");
        Ok(())
    }
}
