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
    wire::{EventPath, validate_event},
};
use vesper_storage::RemoteStore;

use crate::{IngestConfig, IngestEngine, IngestError};

/// The largest Ingest request at the default event bound: well above the
/// gateway's default 1 MiB webhook body, whose protobuf form is smaller
/// than its JSON. See [`IngestConfig::max_ingest_message`].
pub const MAX_INGEST_MESSAGE: usize = 16 * 1024 * 1024 + MESSAGE_OVERHEAD;

/// Problems reported in one refused call at most; the rest are counted.
pub(crate) const MAX_REPORTED_ERRORS: usize = 100;

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
        let max_message = self.engine.config().max_ingest_message();
        EventIngestServer::new(self).max_decoding_message_size(max_message)
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
        let limit = self.engine.config().max_request_events;
        if events.len() > limit {
            self.engine.count_rejected(events.len());
            return Err(IngestError::TooManyEvents {
                events: events.len(),
                limit,
            }
            .into());
        }
        // The same rules as the webhook, for callers that come over gRPC.
        // Collecting stops at a cap: a call of many bad events costs no
        // more than a call of a few.
        let mut errors: Vec<EventError> = Vec::new();
        let mut more = 0_usize;
        for (index, event) in events.iter().enumerate() {
            for error in validate_event(EventPath(index), event) {
                if errors.len() < MAX_REPORTED_ERRORS {
                    errors.push(EventError {
                        index: u32::try_from(index).unwrap_or(u32::MAX),
                        field: error.path,
                        reason: error.reason,
                    });
                } else {
                    more += 1;
                }
            }
        }
        if more > 0 {
            errors.push(EventError {
                index: u32::MAX,
                field: "events".into(),
                reason: format!("... and {more} more problems"),
            });
        }
        if !errors.is_empty() {
            self.engine.count_rejected(events.len());
            tracing::debug!(problems = errors.len(), "batch rejected");
            return Ok(Response::new(IngestResponse {
                errors,
                ..IngestResponse::default()
            }));
        }
        let outcome = match self.engine.ingest(events).await {
            Err(IngestError::EventsTooLarge {
                events,
                more,
                limit,
            }) => {
                let mut errors: Vec<EventError> = events
                    .iter()
                    .map(|event| EventError {
                        index: u32::try_from(event.index).unwrap_or(u32::MAX),
                        field: format!("events[{}]", event.index),
                        reason: format!(
                            "{} bytes as written to the lake, over the limit of {limit} (--max-event-bytes)",
                            event.bytes
                        ),
                    })
                    .collect();
                if more > 0 {
                    errors.push(EventError {
                        index: u32::MAX,
                        field: "events".into(),
                        reason: format!("... and {more} more events over the limit"),
                    });
                }
                return Ok(Response::new(IngestResponse {
                    errors,
                    ..IngestResponse::default()
                }));
            }
            other => other?,
        };
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
