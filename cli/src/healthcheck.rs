//! `vesper healthcheck`: a probe for container health checks, so images
//! need neither grpcurl nor curl.
//!
//! A container runtime probes every few seconds, for as long as the
//! service runs. Each probe carries a W3C trace context that says "not
//! sampled": the server joins that trace and, honouring the flag, records
//! nothing, and neither do the peers it calls to answer (the gateway's
//! `/health` asks datasource and ingest). So probes never flood the trace
//! backend, while every real request is still traced.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Args;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use vesper::config::PeerAddr;

/// Probe a vesper server: exit 0 when it is serving, 1 otherwise.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("probe").required(true).args(["grpc", "http"])))]
pub(crate) struct HealthcheckCommand {
    /// Ask a gRPC server's grpc.health.v1 service (HOST:PORT).
    #[arg(long, value_name = "HOST:PORT")]
    grpc: Option<PeerAddr>,

    /// The gRPC service to ask about (default: the server as a whole).
    #[arg(long, default_value = "", requires = "grpc", value_name = "NAME")]
    service: String,

    /// GET an HTTP URL and expect a 2xx answer (e.g. http://127.0.0.1:8080/health).
    #[arg(long, value_name = "URL")]
    http: Option<String>,

    /// Give up after this long.
    #[arg(long, default_value = "5s", value_parser = vesper::config::parse_duration, value_name = "DURATION")]
    timeout: Duration,
}

impl HealthcheckCommand {
    pub(crate) async fn run(self) -> anyhow::Result<()> {
        let traceparent = unsampled_traceparent();
        let probe = async {
            if let Some(peer) = &self.grpc {
                let mut client = HealthClient::new(vesper::grpc::connect_lazy(peer));
                let mut request = tonic::Request::new(HealthCheckRequest {
                    service: self.service.clone(),
                });
                if let Ok(value) = traceparent.parse() {
                    request.metadata_mut().insert(TRACEPARENT, value);
                }
                let response = client.check(request).await.map_err(|status| {
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
                let response = reqwest::Client::new()
                    .get(url)
                    .header(TRACEPARENT, &traceparent)
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
        tokio::time::timeout(self.timeout, probe)
            .await
            .with_context(|| format!("no answer within {:?}", self.timeout))?
    }
}

/// The W3C trace context header.
const TRACEPARENT: &str = "traceparent";

/// A valid W3C `traceparent` with the sampled flag off (`-00`). The ids
/// only need to be non-zero and distinct enough not to join another
/// probe's trace; nothing records them.
fn unsampled_traceparent() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    let trace_id = nanos | 1;
    let span_id = (u64::from(std::process::id()) << 32) | 1;
    format!("00-{trace_id:032x}-{span_id:016x}-00")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_trace_context_is_well_formed_and_not_sampled() {
        let header = unsampled_traceparent();
        let parts: Vec<&str> = header.split('-').collect();
        assert_eq!(parts.len(), 4, "{header}");
        assert_eq!(parts[0], "00");
        assert_eq!(parts[1].len(), 32);
        assert_eq!(parts[2].len(), 16);
        assert_eq!(parts[3], "00", "the sampled flag is off");
        for id in &parts[1..3] {
            assert!(id.chars().all(|c| c.is_ascii_hexdigit()), "{header}");
            assert!(
                id.chars().any(|c| c != '0'),
                "an all-zero id is invalid: {header}"
            );
        }
    }
}
