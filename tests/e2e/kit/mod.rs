//! Every service in process on 127.0.0.1:0, for the tests that drive more
//! than one: `spawn_*` starts one and returns a [`Service`] whose `stop`
//! shuts it down gracefully and waits until it has. Included with `mod
//! kit;` by each cross-service test (and the webhook benchmark); the
//! service crates' own tests cannot use it, since this crate depends on
//! them.

#![allow(dead_code, unreachable_pub)]

use std::{future::Future, net::SocketAddr, path::Path, sync::Arc, time::Duration};

use tokio::{net::TcpListener, task::JoinHandle};
use vesper::{
    Shutdown, config::PeerAddr, grpc::TracedChannel, v1::event_ingest_client::EventIngestClient,
};
use vesper_batch::BatchEngine;
use vesper_datasource::DataSourceConfig;
use vesper_gateway::GatewayConfig;
use vesper_ingest::{IngestConfig, IngestEngine};
use vesper_storage::{FsStore, ObjectStore, RemoteStore};
use vesper_tests::FreePort;

/// The object size bound of every in-process storage and its clients.
pub const MAX_OBJECT_SIZE: u64 = 64 * 1024 * 1024;

/// How long a graceful stop may take: in-flight calls finish, idle
/// connections are closed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A service serving in this process. Dropping it signals it to stop
/// without waiting; [`Service::stop`] waits.
#[derive(Debug)]
pub struct Service {
    pub addr: SocketAddr,
    name: &'static str,
    shutdown: Shutdown,
    task: Option<JoinHandle<()>>,
}

impl Service {
    /// Runs `serve` on a free port of 127.0.0.1 until the service is
    /// stopped; `serve` failing fails the test at [`Service::stop`].
    async fn spawn<F, E>(name: &'static str, serve: impl FnOnce(TcpListener, Shutdown) -> F) -> Self
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display,
    {
        Self::spawn_on(FreePort::new(), name, serve)
    }

    /// [`Service::spawn`] on a port the test already holds.
    fn spawn_on<F, E>(
        port: FreePort,
        name: &'static str,
        serve: impl FnOnce(TcpListener, Shutdown) -> F,
    ) -> Self
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display,
    {
        let addr = port.addr();
        let shutdown = Shutdown::new();
        let serving = serve(port.listen(), shutdown.clone());
        let task = tokio::spawn(async move {
            if let Err(err) = serving.await {
                panic!("{name} stopped serving: {err}");
            }
        });
        Self {
            addr,
            name,
            shutdown,
            task: Some(task),
        }
    }

    /// Its address as a peer for another service's flags or clients.
    pub fn peer(&self) -> PeerAddr {
        self.addr.to_string().parse().expect("a peer address")
    }

    /// `http://ADDR` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops serving and waits until the service has stopped.
    pub async fn stop(mut self) {
        self.shutdown.trigger();
        let Some(task) = self.task.take() else { return };
        let name = self.name;
        tokio::time::timeout(STOP_TIMEOUT, task)
            .await
            .unwrap_or_else(|_| panic!("{name} did not stop within {STOP_TIMEOUT:?}"))
            .unwrap_or_else(|err| panic!("{name} failed: {err}"));
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

/// A Storage service on the directory lake at `lake`.
pub async fn spawn_storage(lake: &Path) -> Service {
    let store = FsStore::open(lake, MAX_OBJECT_SIZE)
        .await
        .expect("open the lake");
    spawn_storage_with(Arc::new(store)).await
}

/// A Storage service in front of `store`.
pub async fn spawn_storage_with(store: Arc<dyn ObjectStore>) -> Service {
    Service::spawn("storage", move |listener, shutdown| async move {
        vesper_storage::serve(listener, store, MAX_OBJECT_SIZE, shutdown.signalled()).await
    })
    .await
}

/// A Storage service in front of `store` on `port`, which clients may
/// already know (connections to it were refused until now: a storage that
/// comes back).
pub fn spawn_storage_on(port: FreePort, store: Arc<dyn ObjectStore>) -> Service {
    Service::spawn_on(port, "storage", move |listener, shutdown| async move {
        vesper_storage::serve(listener, store, MAX_OBJECT_SIZE, shutdown.signalled()).await
    })
}

/// An EventIngest service with its engine, for assertions on the engine
/// itself.
#[derive(Debug)]
pub struct Ingest {
    pub service: Service,
    pub engine: IngestEngine,
}

impl Ingest {
    pub fn peer(&self) -> PeerAddr {
        self.service.peer()
    }

    pub fn client(&self) -> EventIngestClient<TracedChannel> {
        EventIngestClient::new(vesper::grpc::connect_lazy(&self.peer()))
    }

    /// Graceful stop: serving ends, the engine flushes what it can and
    /// stops.
    pub async fn stop(self) {
        self.service.stop().await;
    }
}

/// An EventIngest service on `config`, writing through the Storage at
/// `storage`.
pub async fn spawn_ingest(config: IngestConfig, storage: &PeerAddr) -> Ingest {
    let store = RemoteStore::connect_lazy(storage, MAX_OBJECT_SIZE);
    spawn_ingest_with(config, Arc::new(store)).await
}

/// An EventIngest service on `config`, writing through `store`.
pub async fn spawn_ingest_with(config: IngestConfig, store: Arc<dyn ObjectStore>) -> Ingest {
    let engine = IngestEngine::start(config, store)
        .await
        .expect("the ingest engine starts");
    let serving = engine.clone();
    let service = Service::spawn("ingest", move |listener, shutdown| async move {
        vesper_ingest::serve_engine(listener, serving, shutdown.signalled()).await
    })
    .await;
    Ingest { service, engine }
}

/// An ingest config for tests: the log in `wal_dir`, quick retries.
pub fn ingest_config(wal_dir: &Path) -> IngestConfig {
    IngestConfig {
        retry_initial: Duration::from_millis(50),
        retry_max: Duration::from_millis(500),
        ..IngestConfig::new(wal_dir)
    }
}

/// A gateway on `config`.
pub async fn spawn_gateway(config: GatewayConfig) -> Service {
    Service::spawn("gateway", move |listener, shutdown| async move {
        let router = vesper_gateway::router(config);
        vesper_gateway::serve(listener, router, shutdown.signalled()).await
    })
    .await
}

/// A DataSource on `config`.
pub async fn spawn_datasource(config: DataSourceConfig) -> Service {
    spawn_datasource_on(FreePort::new(), config)
}

/// A DataSource on `config` on `port`, which clients may already know.
pub fn spawn_datasource_on(port: FreePort, config: DataSourceConfig) -> Service {
    Service::spawn_on(port, "datasource", move |listener, shutdown| async move {
        vesper_datasource::serve(listener, config, shutdown.signalled()).await
    })
}

/// A BatchPipeline service running `engine`.
pub async fn spawn_batch(engine: Arc<BatchEngine>) -> Service {
    Service::spawn("batch", move |listener, shutdown| {
        vesper_batch::serve(listener, engine, shutdown)
    })
    .await
}

/// The JSON that a GET of `url` answers, whatever its status.
pub async fn get_json(url: &str) -> serde_json::Value {
    let response = http_client()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|err| panic!("GET {url}: {err}"));
    response
        .json()
        .await
        .unwrap_or_else(|err| panic!("GET {url}: not JSON: {err}"))
}

/// An HTTP client that gives up on a silent server.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client")
}
