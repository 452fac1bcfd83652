//! The `vesper.v1.DataSource` gRPC service.

use std::{future::Future, sync::Arc};

use rand::Rng;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};
use vesper::{
    Shutdown,
    grpc::GrpcServices,
    v1::{
        self, Source,
        data_source_server::{DataSource, DataSourceServer},
    },
    wire::WireEnum,
};

use crate::{
    DataSet, DataSourceConfig, DataSourceError, FaultPolicy, Generator, data::count_of,
    generate_events,
};

/// Events per unfiltered call when the caller names no count, and the cap.
pub const EVENTS_DEFAULT: i32 = 50;
/// See [`EVENTS_DEFAULT`].
pub const EVENTS_MAX: i32 = 200;
/// Events per call filtered by source when the caller names no count, and
/// the cap.
pub const SOURCE_EVENTS_DEFAULT: i32 = 20;
/// See [`SOURCE_EVENTS_DEFAULT`].
pub const SOURCE_EVENTS_MAX: i32 = 100;

/// What StartGenerator answers, as the old server did.
pub const GENERATOR_STARTED: &str = "Event generator started";
/// What StopGenerator answers, as the old server did.
pub const GENERATOR_STOPPED: &str = "Event generator stopped";

/// The mock upstream over gRPC: the seeded data set, the deliberate
/// faults, and the event generator. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DataSourceService {
    data: Arc<DataSet>,
    faults: FaultPolicy,
    generator: Generator,
    shutdown: Shutdown,
}

impl DataSourceService {
    /// The service `config` describes, with a stopped generator. `shutdown`
    /// stops the generator for good and cuts stalls short, so that a
    /// stopping server is never held up by its own deliberate delays.
    pub fn new(config: DataSourceConfig, shutdown: Shutdown) -> Result<Self, DataSourceError> {
        let data = Arc::new(DataSet::generate(config.seed));
        let generator = Generator::new(config.generator, Arc::clone(&data), shutdown.clone())?;
        Ok(Self {
            data,
            faults: config.faults,
            generator,
            shutdown,
        })
    }

    /// The data set served.
    pub fn data(&self) -> &Arc<DataSet> {
        &self.data
    }

    /// The event generator, to start it at boot and to wait for its last
    /// push at shutdown.
    pub fn generator(&self) -> &Generator {
        &self.generator
    }

    /// The tonic server.
    pub fn into_server(self) -> DataSourceServer<Self> {
        DataSourceServer::new(self)
    }

    /// The upstream's unreliability: fails or stalls some calls.
    async fn misbehave(&self) -> Result<(), DataSourceError> {
        let draw: f64 = rand::rng().random();
        if draw < self.faults.fault_rate {
            tracing::debug!("deliberate fault");
            return Err(DataSourceError::Unavailable);
        }
        if draw < self.faults.fault_rate + self.faults.stall_rate {
            tracing::debug!(stall = ?self.faults.stall, "deliberate stall");
            tokio::select! {
                () = tokio::time::sleep(self.faults.stall) => {}
                () = self.shutdown.signalled() => {}
            }
        }
        Ok(())
    }
}

/// Runs the DataSource service `config` describes (with health and
/// reflection) on `listener` until `shutdown` completes. The generator
/// starts after its delay unless disabled, and its last push ends before
/// this returns.
pub async fn serve(
    listener: TcpListener,
    config: DataSourceConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DataSourceError> {
    let stopping = Shutdown::new();
    let autostart = config.generator.autostart.then_some(config.generator.delay);
    let service = DataSourceService::new(config, stopping.clone())?;
    let generator = service.generator().clone();
    if let Some(delay) = autostart {
        generator.start_after(delay);
    }
    let trigger = stopping.clone();
    let served = GrpcServices::new()
        .with(service.into_server())
        .serve(listener, async move {
            shutdown.await;
            trigger.trigger();
        })
        .await;
    stopping.trigger();
    generator.join().await;
    Ok(served?)
}

/// The count a GenerateEvents call gets: its own (capped) or the default.
fn effective_count(count: Option<i32>, default: i32, max: i32) -> Result<usize, DataSourceError> {
    let count = match count {
        None => default,
        Some(count) if count < 1 => return Err(DataSourceError::InvalidCount),
        Some(count) => count.min(max),
    };
    usize::try_from(count).map_err(|_| DataSourceError::InvalidCount)
}

#[tonic::async_trait]
impl DataSource for DataSourceService {
    #[tracing::instrument(skip_all, fields(offset = request.get_ref().offset, limit = request.get_ref().limit))]
    async fn list_users(
        &self,
        request: Request<v1::ListUsersRequest>,
    ) -> Result<Response<v1::ListUsersResponse>, Status> {
        let request = request.into_inner();
        let page = self.data.users_page(request.offset, request.limit)?;
        Ok(Response::new(page))
    }

    #[tracing::instrument(skip_all)]
    async fn list_content(
        &self,
        _request: Request<v1::ListContentRequest>,
    ) -> Result<Response<v1::ListContentResponse>, Status> {
        let content = self.data.content().to_vec();
        Ok(Response::new(v1::ListContentResponse {
            count: count_of(content.len()),
            total_content: count_of(content.len()),
            content,
        }))
    }

    #[tracing::instrument(skip_all, fields(count = request.get_ref().count, source = request.get_ref().source))]
    async fn generate_events(
        &self,
        request: Request<v1::GenerateEventsRequest>,
    ) -> Result<Response<v1::GenerateEventsResponse>, Status> {
        let request = request.into_inner();
        let source = match Source::try_from(request.source) {
            Ok(Source::Unspecified) => None,
            Ok(source) if source.wire_name().is_some() => Some(source),
            _ => return Err(DataSourceError::InvalidSource.into()),
        };
        let count = match source {
            None => effective_count(request.count, EVENTS_DEFAULT, EVENTS_MAX)?,
            Some(_) => effective_count(request.count, SOURCE_EVENTS_DEFAULT, SOURCE_EVENTS_MAX)?,
        };
        if source.is_none() {
            self.misbehave().await?;
        }
        let events = generate_events(&self.data, count, source, &mut rand::rng());
        Ok(Response::new(v1::GenerateEventsResponse {
            total_count: count_of(events.len()),
            events,
            has_more: true,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn start_generator(
        &self,
        _request: Request<v1::StartGeneratorRequest>,
    ) -> Result<Response<v1::StartGeneratorResponse>, Status> {
        self.generator.start();
        Ok(Response::new(v1::StartGeneratorResponse {
            message: GENERATOR_STARTED.to_owned(),
            status: Some(self.generator.status()),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn stop_generator(
        &self,
        _request: Request<v1::StopGeneratorRequest>,
    ) -> Result<Response<v1::StopGeneratorResponse>, Status> {
        self.generator.stop();
        Ok(Response::new(v1::StopGeneratorResponse {
            message: GENERATOR_STOPPED.to_owned(),
            status: Some(self.generator.status()),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn generator_status(
        &self,
        _request: Request<v1::GeneratorStatusRequest>,
    ) -> Result<Response<v1::GeneratorStatusResponse>, Status> {
        Ok(Response::new(self.generator.status()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_default_cap_and_refuse() {
        assert_eq!(effective_count(None, 50, 200).ok(), Some(50));
        assert_eq!(effective_count(Some(500), 50, 200).ok(), Some(200));
        assert_eq!(effective_count(Some(1), 20, 100).ok(), Some(1));
        for bad in [0, -1, i32::MIN] {
            assert!(matches!(
                effective_count(Some(bad), 50, 200),
                Err(DataSourceError::InvalidCount)
            ));
        }
    }
}
