//! The built-in pipelines against the real DataSource through the real
//! gateway (faults on, as upstream), writing through a real Storage service
//! into a directory lake.

use std::{collections::HashSet, sync::Arc};

use serde_json::Value;
use tokio::net::TcpListener;
use vesper::{Shutdown, config::PeerAddr};
use vesper_batch::{BatchEngine, MANIFEST_NAME, Manifest, Pipelines, Quiet, RunReport};
use vesper_datasource::{DataSourceConfig, FaultPolicy, GeneratorConfig};
use vesper_gateway::GatewayConfig;
use vesper_storage::{FsStore, ObjectKey, ObjectStore, RemoteStore};

const OBJECT_LIMIT: u64 = 64 * 1024 * 1024;

struct Mesh {
    store: Arc<dyn ObjectStore>,
    api: String,
    shutdown: Shutdown,
    _lake: tempfile::TempDir,
}

impl Mesh {
    async fn start() -> Self {
        let shutdown = Shutdown::new();
        let lake = tempfile::tempdir().expect("temp dir");
        let fs: Arc<dyn ObjectStore> = Arc::new(
            FsStore::open(lake.path(), OBJECT_LIMIT)
                .await
                .expect("lake"),
        );

        let storage = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let storage_peer = peer(&storage);
        tokio::spawn(vesper_storage::serve(
            storage,
            fs,
            OBJECT_LIMIT,
            shutdown.signalled(),
        ));

        let datasource = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let datasource_peer = peer(&datasource);
        let config = DataSourceConfig {
            seed: 42,
            // The upstream's own unreliability: 10% 503s, 5% 10 s stalls.
            faults: FaultPolicy::UPSTREAM,
            generator: GeneratorConfig {
                autostart: false,
                ..GeneratorConfig::default()
            },
        };
        tokio::spawn(vesper_datasource::serve(
            datasource,
            config,
            shutdown.signalled(),
        ));

        let http = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let api = format!("http://{}/api/", http.local_addr().expect("addr"));
        let gateway = GatewayConfig::all_peers_at(datasource_peer);
        tokio::spawn(vesper_gateway::serve(
            http,
            vesper_gateway::router(gateway),
            shutdown.signalled(),
        ));

        Self {
            store: Arc::new(RemoteStore::connect_lazy(&storage_peer, OBJECT_LIMIT)),
            api,
            shutdown,
            _lake: lake,
        }
    }

    async fn run(&self, name: &str) -> RunReport {
        let pipelines = Pipelines::builtin()
            .expect("built-in pipelines")
            .with_source_url(&self.api)
            .expect("the gateway's URL");
        let engine = BatchEngine::new(pipelines, Arc::clone(&self.store))
            .expect("engine")
            .with_observer(Arc::new(Quiet));
        let report = engine
            .run(&[name], &Shutdown::new())
            .await
            .expect("a built-in pipeline")
            .remove(0);
        assert!(report.succeeded(), "{name}: {:?}", report.error);
        report
    }

    /// The one manifest under `prefix`, and every record its parts hold.
    async fn snapshot(&self, prefix: &str) -> (Manifest, Vec<Value>) {
        let page = self.store.list(prefix, None, 0).await.expect("list");
        let manifests: Vec<_> = page
            .objects
            .iter()
            .filter(|object| object.key.ends_with(MANIFEST_NAME))
            .collect();
        assert_eq!(manifests.len(), 1, "one manifested run under {prefix}");
        let key = ObjectKey::new(manifests[0].key.clone()).expect("key");
        let (_, body) = self.store.get(&key).await.expect("manifest");
        let manifest: Manifest = serde_json::from_slice(&body).expect("manifest JSON");
        let mut records = Vec::new();
        for part in &manifest.parts {
            let key = ObjectKey::new(part.key.clone()).expect("part key");
            let (_, body) = self.store.get(&key).await.expect("part");
            for line in body.split(|b| *b == b'\n').filter(|line| !line.is_empty()) {
                records.push(serde_json::from_slice(line).expect("an NDJSON record"));
            }
        }
        (manifest, records)
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

fn peer(listener: &TcpListener) -> PeerAddr {
    listener
        .local_addr()
        .expect("addr")
        .to_string()
        .parse()
        .expect("peer")
}

fn unique(records: &[Value], field: &str) -> HashSet<String> {
    records
        .iter()
        .map(|record| record[field].as_str().expect("a string id").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_lands_ten_thousand_unique_users_in_one_manifested_run() {
    let mesh = Mesh::start().await;
    let report = mesh.run("users").await;
    assert_eq!(report.records, 10_000);
    let (manifest, records) = mesh.snapshot("users/").await;
    assert_eq!(manifest.records, 10_000);
    assert_eq!(records.len(), 10_000);
    let ids = unique(&records, "user_id");
    assert_eq!(ids.len(), 10_000);
    assert!(ids.contains("user_1") && ids.contains("user_10000"));
    assert!(
        records
            .iter()
            .all(|r| r["_run_id"] == manifest.run_id.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_lands_the_thousand_items() {
    let mesh = Mesh::start().await;
    mesh.run("content").await;
    let (manifest, records) = mesh.snapshot("content/").await;
    assert_eq!(manifest.records, 1_000);
    assert_eq!(unique(&records, "content_id").len(), 1_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_completes_despite_the_upstream_faults() {
    let mesh = Mesh::start().await;
    let report = mesh.run("events").await;
    let (manifest, records) = mesh.snapshot("api_events/").await;
    assert_eq!(manifest.records, report.records);
    assert!(!records.is_empty());
    assert!(
        records.iter().all(|r| r["user_id"].is_object()),
        "upstream's nested user object is kept as it came"
    );
}
