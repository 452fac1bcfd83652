//! The `vesper.v1.BatchPipeline` gRPC service.

use std::sync::Arc;

use tokio::net::TcpListener;
use tonic::{Request, Response, Status};
use tracing::Instrument;
use vesper::{
    Shutdown,
    grpc::{GrpcServices, ServeError},
    v1::{
        self,
        batch_pipeline_server::{BatchPipeline, BatchPipelineServer},
    },
};

use crate::{BatchEngine, BatchError};

/// Runs an engine's pipelines on request.
#[derive(Debug, Clone)]
pub struct BatchPipelineService {
    engine: Arc<BatchEngine>,
    shutdown: Shutdown,
}

impl BatchPipelineService {
    /// A service over `engine`; runs in progress stop, unpublished, when
    /// `shutdown` is triggered.
    pub fn new(engine: Arc<BatchEngine>, shutdown: Shutdown) -> Self {
        Self { engine, shutdown }
    }

    /// The tonic server.
    pub fn into_server(self) -> BatchPipelineServer<Self> {
        BatchPipelineServer::new(self)
    }
}

/// Runs the BatchPipeline service (with health and reflection) on
/// `listener` until `shutdown` is triggered; a run in progress then stops
/// without publishing its manifest.
pub async fn serve(
    listener: TcpListener,
    engine: Arc<BatchEngine>,
    shutdown: Shutdown,
) -> Result<(), ServeError> {
    GrpcServices::new()
        .with(BatchPipelineService::new(engine, shutdown.clone()).into_server())
        .serve(listener, shutdown.signalled())
        .await
}

#[tonic::async_trait]
impl BatchPipeline for BatchPipelineService {
    /// Runs in a task of its own: a caller that goes away (a client
    /// timeout) does not cut a run short, which then still publishes and
    /// logs its report. The task stays in the call's trace.
    #[tracing::instrument(skip_all, fields(pipelines = ?request.get_ref().pipelines))]
    async fn run(
        &self,
        request: Request<v1::RunRequest>,
    ) -> Result<Response<v1::RunResponse>, Status> {
        let names = request.into_inner().pipelines;
        self.engine.select(&names)?;
        let engine = Arc::clone(&self.engine);
        let shutdown = self.shutdown.clone();
        let reports =
            tokio::spawn(async move { engine.run(&names, &shutdown).await }.in_current_span())
                .await
                .map_err(|err| BatchError::Task(err.to_string()))??;
        Ok(Response::new(v1::RunResponse {
            reports: reports.iter().map(Into::into).collect(),
        }))
    }

    async fn list(
        &self,
        _request: Request<v1::ListPipelinesRequest>,
    ) -> Result<Response<v1::ListPipelinesResponse>, Status> {
        Ok(Response::new(v1::ListPipelinesResponse {
            pipelines: self.engine.pipelines().iter().map(|p| p.info()).collect(),
        }))
    }
}
