//! The gRPC services behind the gateway.

use vesper::{
    config::PeerAddr,
    grpc::{TracedChannel, connect_lazy},
    v1::{data_source_client::DataSourceClient, event_ingest_client::EventIngestClient},
};

use crate::GatewayConfig;

/// Clients of every peer; cheap to clone (channels are shared).
#[derive(Debug, Clone)]
pub struct Peers {
    datasource: DataSourceClient<TracedChannel>,
    ingest: EventIngestClient<TracedChannel>,
    datasource_addr: PeerAddr,
    ingest_addr: PeerAddr,
}

impl Peers {
    /// Clients that connect on first use, so the gateway starts while its
    /// peers are down.
    pub fn connect_lazy(config: &GatewayConfig) -> Self {
        Self {
            datasource: DataSourceClient::new(connect_lazy(&config.datasource)),
            ingest: EventIngestClient::new(connect_lazy(&config.ingest)),
            datasource_addr: config.datasource.clone(),
            ingest_addr: config.ingest.clone(),
        }
    }

    /// A DataSource client.
    pub fn datasource(&self) -> DataSourceClient<TracedChannel> {
        self.datasource.clone()
    }

    /// An EventIngest client.
    pub fn ingest(&self) -> EventIngestClient<TracedChannel> {
        self.ingest.clone()
    }

    /// Where DataSource is.
    pub fn datasource_addr(&self) -> &PeerAddr {
        &self.datasource_addr
    }

    /// Where EventIngest is.
    pub fn ingest_addr(&self) -> &PeerAddr {
        &self.ingest_addr
    }
}
