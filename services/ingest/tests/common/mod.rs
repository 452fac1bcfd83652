//! Shared helpers of the ingest tests: in-process Storage, EventIngest and
//! gateway servers on 127.0.0.1:0, upstream-shaped events, and a reader of
//! the lake's event objects.

#![allow(dead_code, unreachable_pub)]

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use serde_json::{Value, json};
use tokio::{net::TcpListener, task::JoinHandle};
use vesper::{
    Shutdown, config::PeerAddr, grpc::TracedChannel, v1::event_ingest_client::EventIngestClient,
};
use vesper_gateway::{GatewayConfig, WebhookSigning};
use vesper_ingest::{IngestConfig, IngestEngine};
use vesper_storage::{FsStore, ObjectStore, RemoteStore};

pub const MAX_OBJECT_SIZE: u64 = 64 * 1024 * 1024;

/// A Storage server on a directory lake.
#[derive(Debug)]
pub struct StorageServer {
    pub addr: SocketAddr,
    shutdown: Shutdown,
    task: JoinHandle<()>,
}

impl StorageServer {
    /// Serves `lake` on `addr` (127.0.0.1:0 for a fresh port).
    pub async fn start(lake: &Path, addr: SocketAddr) -> Self {
        let store: Arc<dyn ObjectStore> = Arc::new(
            FsStore::open(lake, MAX_OBJECT_SIZE)
                .await
                .expect("open the lake"),
        );
        // The port may still be in TIME_WAIT use by the previous server.
        let mut attempts = 0;
        let listener = loop {
            match TcpListener::bind(addr).await {
                Ok(listener) => break listener,
                Err(err) if attempts < 100 => {
                    attempts += 1;
                    let _ = err;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(err) => panic!("cannot bind storage on {addr}: {err}"),
            }
        };
        let addr = listener.local_addr().expect("addr");
        let shutdown = Shutdown::new();
        let signal = shutdown.signalled();
        let task = tokio::spawn(async move {
            vesper_storage::serve(listener, store, MAX_OBJECT_SIZE, signal)
                .await
                .expect("storage serves");
        });
        Self {
            addr,
            shutdown,
            task,
        }
    }

    pub fn peer(&self) -> PeerAddr {
        self.addr.to_string().parse().expect("peer")
    }

    /// Stops the server and waits until its port is closed.
    pub async fn stop(self) {
        self.shutdown.trigger();
        // In-flight calls finish; idle connections are dropped.
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

/// An in-process EventIngest server.
#[derive(Debug)]
pub struct IngestServer {
    pub addr: SocketAddr,
    pub engine: IngestEngine,
    shutdown: Shutdown,
    task: JoinHandle<()>,
}

impl IngestServer {
    /// Starts an engine on `config` writing through the Storage at `storage`.
    pub async fn start(config: IngestConfig, storage: &PeerAddr) -> Self {
        let store = Arc::new(RemoteStore::connect_lazy(storage, MAX_OBJECT_SIZE));
        Self::start_with_store(config, store).await
    }

    /// Starts an engine writing through `store`.
    pub async fn start_with_store(config: IngestConfig, store: Arc<dyn ObjectStore>) -> Self {
        let engine = IngestEngine::start(config, store)
            .await
            .expect("engine starts");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = Shutdown::new();
        let task = tokio::spawn(vesper_ingest_serve(
            listener,
            engine.clone(),
            shutdown.clone(),
        ));
        Self {
            addr,
            engine,
            shutdown,
            task,
        }
    }

    pub fn peer(&self) -> PeerAddr {
        self.addr.to_string().parse().expect("peer")
    }

    pub fn client(&self) -> EventIngestClient<TracedChannel> {
        EventIngestClient::new(vesper::grpc::connect_lazy(&self.peer()))
    }

    /// Graceful stop: serving ends, the engine flushes and stops.
    pub async fn stop(self) {
        self.shutdown.trigger();
        self.task.await.expect("ingest task");
    }
}

async fn vesper_ingest_serve(listener: TcpListener, engine: IngestEngine, shutdown: Shutdown) {
    vesper_ingest::serve_engine(listener, engine, shutdown.signalled())
        .await
        .expect("ingest serves");
}

/// A gateway in front of `ingest`.
#[derive(Debug)]
pub struct Gateway {
    pub addr: SocketAddr,
    shutdown: Shutdown,
}

impl Gateway {
    pub async fn start(ingest: &PeerAddr, signing: Option<WebhookSigning>) -> Self {
        let mut config = GatewayConfig::all_peers_at(ingest.clone());
        config.webhook_signing = signing;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = Shutdown::new();
        tokio::spawn(vesper_gateway::serve(
            listener,
            vesper_gateway::router(config),
            shutdown.signalled(),
        ));
        Self { addr, shutdown }
    }

    pub fn webhook_url(&self) -> String {
        format!("http://{}/webhook/events", self.addr)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// An engine config for tests: the log in `wal_dir`, quick retries.
pub fn test_config(wal_dir: &Path) -> IngestConfig {
    IngestConfig {
        retry_initial: Duration::from_millis(50),
        retry_max: Duration::from_millis(500),
        ..IngestConfig::new(wal_dir)
    }
}

/// A deterministic UUID for test event `n` of series `series`.
pub fn event_id(series: u32, n: u32) -> String {
    format!("{series:08x}-0000-4000-8000-{n:012x}")
}

/// An event as the upstream sends it (the user object in `user_id`).
pub fn upstream_event(id: &str, event_type: &str, timestamp: &str) -> Value {
    let properties = match event_type {
        "purchase" => json!({"amount": 12.5, "product_id": "prod_3"}),
        "view" | "like" | "share" => {
            json!({"content_id": "content_9", "media_type": "audio", "prayer_type": "rosary"})
        }
        _ => json!({}),
    };
    json!({
        "event_id": id,
        "user_id": {
            "user_id": "user_42",
            "age": 31,
            "status": "paid",
            "country": "BR",
            "created_at": "2023-05-01T00:00:00Z"
        },
        "event_type": event_type,
        "source": "web",
        "timestamp": timestamp,
        "properties": properties,
    })
}

/// Every event line in the lake's `events/` objects, by object key.
pub fn lake_events(lake: &Path) -> BTreeMap<String, Vec<Value>> {
    let mut objects = BTreeMap::new();
    let root = lake.join("events");
    let mut stack: Vec<PathBuf> = vec![root];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|ext| ext == "ndjson") {
                let key = path
                    .strip_prefix(lake)
                    .expect("under the lake")
                    .to_string_lossy()
                    .into_owned();
                let text = std::fs::read_to_string(&path).expect("read object");
                let lines = text
                    .lines()
                    .map(|line| serde_json::from_str(line).expect("a JSON line"))
                    .collect();
                objects.insert(key, lines);
            }
        }
    }
    objects
}

/// Every event id in the lake, with how many times it occurs.
pub fn lake_ids(lake: &Path) -> BTreeMap<String, usize> {
    let mut ids = BTreeMap::new();
    for lines in lake_events(lake).values() {
        for line in lines {
            let id = line["event_id"].as_str().expect("event_id").to_owned();
            *ids.entry(id).or_default() += 1;
        }
    }
    ids
}

/// Polls `condition` every 50 ms until it holds or `timeout` passes.
pub async fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
