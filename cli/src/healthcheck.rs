//! `vesper healthcheck`: a probe for container health checks, so images
//! need neither grpcurl nor curl. Probes come every few seconds, so they
//! are never traced: the probe runs in a trace marked not sampled, and
//! says so to the server (`traceparent` with the sampled flag off).

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tracing::Instrument;
use vesper::{auth::ClientTokenArgs, config::PeerAddr, tls::ClientTlsArgs};

/// Probe a vesper server: exit 0 when it is serving, 1 otherwise.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("probe").required(true).args(["grpc", "http"])))]
pub(crate) struct HealthcheckCommand {
    /// Ask a gRPC server's grpc.health.v1 service (HOST:PORT, or
    /// https://HOST:PORT over TLS).
    #[arg(long, value_name = "HOST:PORT")]
    grpc: Option<PeerAddr>,

    /// The gRPC service to ask about (default: the server as a whole).
    #[arg(long, default_value = "", requires = "grpc", value_name = "NAME")]
    service: String,

    /// GET an HTTP URL and expect a 2xx answer (e.g. http://127.0.0.1:8080/health).
    #[arg(long, value_name = "URL")]
    http: Option<String>,

    /// Health is open to every caller; a token is sent only when one is
    /// given (e.g. for a proxy in front that wants one).
    #[command(flatten)]
    token: ClientTokenArgs,

    /// Give up after this long.
    #[arg(long, default_value = "5s", value_parser = vesper::config::parse_duration, value_name = "DURATION")]
    timeout: Duration,

    #[command(flatten, next_help_heading = "TLS")]
    tls: ClientTlsArgs,
}

impl HealthcheckCommand {
    pub(crate) async fn run(self) -> anyhow::Result<()> {
        self.tls.install()?;
        self.token.install()?;
        let traceparent = vesper::telemetry::unsampled_traceparent();
        let span = tracing::info_span!("healthcheck");
        vesper::telemetry::set_parent_from_traceparent(&span, &traceparent);
        let probe = async {
            if let Some(peer) = &self.grpc {
                let mut client = HealthClient::new(vesper::grpc::connect_lazy(peer));
                let response = client
                    .check(HealthCheckRequest {
                        service: self.service.clone(),
                    })
                    .await
                    .map_err(|status| {
                        anyhow::anyhow!(
                            "{peer} did not answer the health check: {}",
                            status.message()
                        )
                    })?;
                let status = response.into_inner().status();
                anyhow::ensure!(
                    status == ServingStatus::Serving,
                    "{peer} reports {status:?} for {:?}",
                    self.service
                );
            }
            if let Some(url) = &self.http {
                let mut request = vesper::tls::http_client_builder()
                    .build()
                    .context("cannot set up the HTTP client")?
                    .get(url)
                    .header("traceparent", &traceparent);
                if let Some(token) = vesper::auth::client_token() {
                    request = request.header(reqwest::header::AUTHORIZATION, token.authorization());
                }
                let response = request
                    .send()
                    .await
                    .with_context(|| format!("{url} did not answer"))?;
                anyhow::ensure!(
                    response.status().is_success(),
                    "{url} answered {}",
                    response.status()
                );
            }
            Ok(())
        };
        tokio::time::timeout(self.timeout, probe.instrument(span))
            .await
            .with_context(|| format!("no answer within {:?}", self.timeout))?
    }
}
