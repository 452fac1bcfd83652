//! The `vesper.v1.Storage` gRPC service over any [`ObjectStore`].

use std::{future::Future, sync::Arc, time::Instant};

use tokio::net::TcpListener;
use tonic::{Request, Response, Status};
use vesper::{
    ServiceError,
    grpc::{GrpcServices, MESSAGE_OVERHEAD, ServeError},
    v1::{
        self,
        storage_server::{Storage, StorageServer},
    },
};

use crate::{ObjectKey, ObjectStore, PutOptions, StorageError};

/// Serves a store over gRPC.
#[derive(Debug, Clone)]
pub struct StorageService {
    store: Arc<dyn ObjectStore>,
}

impl StorageService {
    /// A service in front of `store`.
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self { store }
    }

    /// The tonic server, with message limits raised so that objects up to
    /// `max_object_size` bytes fit in one message each way.
    pub fn into_server(self, max_object_size: u64) -> StorageServer<Self> {
        let limit = message_limit(max_object_size);
        StorageServer::new(self)
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit)
    }
}

/// The gRPC message size that carries an object of `max_object_size` bytes.
pub fn message_limit(max_object_size: u64) -> usize {
    usize::try_from(max_object_size)
        .unwrap_or(usize::MAX)
        .saturating_add(MESSAGE_OVERHEAD)
}

/// Runs the Storage service (with health and reflection) on `listener`
/// until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    store: Arc<dyn ObjectStore>,
    max_object_size: u64,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    GrpcServices::new()
        .with(StorageService::new(store).into_server(max_object_size))
        .serve(listener, shutdown)
        .await
}

fn key_of(key: String) -> Result<ObjectKey, StorageError> {
    ObjectKey::new(key)
}

/// Counts and times one storage operation; errors are counted by their gRPC
/// code, so a dashboard tells a flood of bad keys (`INVALID_ARGUMENT`) or
/// missing objects (`NOT_FOUND`) from a backend outage (`UNAVAILABLE`).
fn observe<T>(
    operation: &'static str,
    started: Instant,
    result: Result<T, StorageError>,
) -> Result<T, StorageError> {
    metrics::histogram!("vesper_storage_operation_duration_seconds", "operation" => operation)
        .record(started.elapsed().as_secs_f64());
    let outcome = match &result {
        Ok(_) => "ok",
        Err(err) => {
            metrics::counter!(
                "vesper_storage_errors_total",
                "operation" => operation,
                "code" => vesper::grpc::code_name(err.code().grpc()),
            )
            .increment(1);
            "error"
        }
    };
    metrics::counter!("vesper_storage_operations_total", "operation" => operation, "outcome" => outcome)
        .increment(1);
    result
}

#[tonic::async_trait]
impl Storage for StorageService {
    #[tracing::instrument(skip_all, fields(key = %request.get_ref().key, bytes = request.get_ref().body.len()))]
    async fn put_object(
        &self,
        request: Request<v1::PutObjectRequest>,
    ) -> Result<Response<v1::PutObjectResponse>, Status> {
        let started = Instant::now();
        let request = request.into_inner();
        let result = async {
            let key = key_of(request.key)?;
            let options = PutOptions {
                content_type: Some(request.content_type).filter(|ct| !ct.is_empty()),
                metadata: request.metadata.into_iter().collect(),
            };
            self.store.put(&key, request.body, options).await
        }
        .await;
        let meta = observe("put", started, result)?;
        metrics::counter!("vesper_storage_bytes_written_total").increment(meta.size);
        tracing::debug!("object written");
        Ok(Response::new(v1::PutObjectResponse {
            object: Some(meta.into()),
        }))
    }

    #[tracing::instrument(skip_all, fields(key = %request.get_ref().key))]
    async fn get_object(
        &self,
        request: Request<v1::GetObjectRequest>,
    ) -> Result<Response<v1::GetObjectResponse>, Status> {
        let started = Instant::now();
        let result = async {
            let key = key_of(request.into_inner().key)?;
            self.store.get(&key).await
        }
        .await;
        let (meta, body) = observe("get", started, result)?;
        Ok(Response::new(v1::GetObjectResponse {
            object: Some(meta.into()),
            body,
        }))
    }

    #[tracing::instrument(skip_all, fields(key = %request.get_ref().key))]
    async fn head_object(
        &self,
        request: Request<v1::HeadObjectRequest>,
    ) -> Result<Response<v1::HeadObjectResponse>, Status> {
        let started = Instant::now();
        let result = async {
            let key = key_of(request.into_inner().key)?;
            self.store.head(&key).await
        }
        .await;
        let meta = observe("head", started, result)?;
        Ok(Response::new(v1::HeadObjectResponse {
            object: Some(meta.into()),
        }))
    }

    #[tracing::instrument(skip_all, fields(prefix = %request.get_ref().prefix))]
    async fn list_objects(
        &self,
        request: Request<v1::ListObjectsRequest>,
    ) -> Result<Response<v1::ListObjectsResponse>, Status> {
        let started = Instant::now();
        let request = request.into_inner();
        let token = Some(request.continuation_token.as_str()).filter(|token| !token.is_empty());
        let result = self
            .store
            .list(&request.prefix, token, request.max_keys)
            .await;
        let page = observe("list", started, result)?;
        Ok(Response::new(v1::ListObjectsResponse {
            objects: page.objects.into_iter().map(Into::into).collect(),
            next_continuation_token: page.next_token.unwrap_or_default(),
        }))
    }

    #[tracing::instrument(skip_all, fields(key = %request.get_ref().key))]
    async fn delete_object(
        &self,
        request: Request<v1::DeleteObjectRequest>,
    ) -> Result<Response<v1::DeleteObjectResponse>, Status> {
        let started = Instant::now();
        let result = async {
            let key = key_of(request.into_inner().key)?;
            self.store.delete(&key).await
        }
        .await;
        observe("delete", started, result)?;
        Ok(Response::new(v1::DeleteObjectResponse {}))
    }
}
