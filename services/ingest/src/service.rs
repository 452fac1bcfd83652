//! The `vesper.v1.EventIngest` gRPC service over an [`IngestEngine`].

use std::{future::Future, sync::Arc};

use tokio::net::TcpListener;
use tonic::{Request, Response, Status};
use vesper::{
    grpc::{GrpcServices, MESSAGE_OVERHEAD},
    v1::{
        EventError, FlushRequest, FlushResponse, IngestRequest, IngestResponse, StatsRequest,
        StatsResponse,
        event_ingest_server::{EventIngest, EventIngestServer},
    },
    wire::validate_event,
};
use vesper_storage::RemoteStore;

use crate::{IngestConfig, IngestEngine, IngestError};

/// The largest Ingest request: well above the gateway's default 1 MiB
/// webhook body, whose protobuf form is smaller than its JSON.
pub const MAX_INGEST_MESSAGE: usize = 16 * 1024 * 1024 + MESSAGE_OVERHEAD;

/// Serves EventIngest.
#[derive(Debug, Clone)]
pub struct IngestService {
    engine: IngestEngine,
}

impl IngestService {
    /// A service in front of `engine`.
    pub fn new(engine: IngestEngine) -> Self {
        Self { engine }
    }

    /// The tonic server.
    pub fn into_server(self) -> EventIngestServer<Self> {
        EventIngestServer::new(self).max_decoding_message_size(MAX_INGEST_MESSAGE)
    }
}

#[tonic::async_trait]
impl EventIngest for IngestService {
    #[tracing::instrument(
        skip_all,
        fields(events = request.get_ref().events.len(), accepted, filtered, duplicates)
    )]
    async fn ingest(
        &self,
        request: Request<IngestRequest>,
    ) -> Result<Response<IngestResponse>, Status> {
        let events = request.into_inner().events;
        // The same rules as the webhook, for callers that come over gRPC.
        let errors: Vec<EventError> = events
            .iter()
            .enumerate()
            .flat_map(|(index, event)| {
                validate_event(&format!("events[{index}]"), event)
                    .into_iter()
                    .map(move |error| EventError {
                        index: u32::try_from(index).unwrap_or(u32::MAX),
                        field: error.path,
                        reason: error.reason,
                    })
            })
            .collect();
        if !errors.is_empty() {
            self.engine.count_rejected(events.len());
            tracing::debug!(problems = errors.len(), "batch rejected");
            return Ok(Response::new(IngestResponse {
                errors,
                ..IngestResponse::default()
            }));
        }
        let outcome = self.engine.ingest(events).await?;
        let span = tracing::Span::current();
        span.record("accepted", outcome.accepted);
        span.record("filtered", outcome.filtered);
        span.record("duplicates", outcome.duplicates);
        Ok(Response::new(IngestResponse {
            accepted: outcome.accepted,
            filtered: outcome.filtered,
            duplicates: outcome.duplicates,
            errors: Vec::new(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn flush(
        &self,
        _request: Request<FlushRequest>,
    ) -> Result<Response<FlushResponse>, Status> {
        let outcome = self.engine.flush().await?;
        tracing::info!(
            objects = outcome.keys.len(),
            events = outcome.events,
            "flushed on request"
        );
        Ok(Response::new(outcome.into()))
    }

    async fn stats(
        &self,
        _request: Request<StatsRequest>,
    ) -> Result<Response<StatsResponse>, Status> {
        Ok(Response::new(self.engine.stats()))
    }
}

/// Opens the engine for `config`, writing through the Storage service at
/// `storage`, serves EventIngest (with health and reflection) on `listener`
/// until `shutdown` completes, then flushes what it can and stops. When
/// storage is down at that point the events stay in the log (and the
/// function still returns `Ok`): they are written after the next start.
pub async fn serve(
    listener: TcpListener,
    config: IngestConfig,
    storage: &vesper::config::PeerAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), IngestError> {
    let store = Arc::new(RemoteStore::connect_lazy(storage, config.max_object_size));
    let engine = IngestEngine::start(config, store).await?;
    serve_engine(listener, engine, shutdown).await
}

/// Serves an already started engine on `listener` until `shutdown`
/// completes, then stops serving and shuts the engine down (final flush).
pub async fn serve_engine(
    listener: TcpListener,
    engine: IngestEngine,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), IngestError> {
    let served = GrpcServices::new()
        .with(IngestService::new(engine.clone()).into_server())
        .serve(listener, shutdown)
        .await;
    engine.shutdown().await;
    served.map_err(|err| IngestError::Serve {
        message: err.to_string(),
    })
}
