//! The built-in pipelines against the real DataSource through the real
//! gateway (faults on, as upstream), writing through a real Storage service
//! into a directory lake.

mod kit;

use std::{collections::HashSet, sync::Arc};

use kit::{MAX_OBJECT_SIZE, Service, spawn_datasource, spawn_gateway, spawn_storage};
use serde_json::Value;
use vesper::Shutdown;
use vesper_batch::{BatchEngine, MANIFEST_NAME, Manifest, Pipelines, Quiet, RunReport};
use vesper_datasource::{DataSourceConfig, FaultPolicy, GeneratorConfig};
use vesper_gateway::GatewayConfig;
use vesper_storage::{ObjectKey, ObjectStore, RemoteStore};

struct Mesh {
    store: Arc<dyn ObjectStore>,
    api: String,
    _services: [Service; 3],
    _lake: tempfile::TempDir,
}

impl Mesh {
    async fn start() -> Self {
        let lake = tempfile::tempdir().expect("temp dir");
        let storage = spawn_storage(lake.path()).await;
        let datasource = spawn_datasource(DataSourceConfig {
            seed: 42,
            // The upstream's own unreliability: 10% 503s, 5% 10 s stalls.
            faults: FaultPolicy::UPSTREAM,
            generator: GeneratorConfig {
                autostart: false,
                ..GeneratorConfig::default()
            },
        })
        .await;
        let gateway = spawn_gateway(GatewayConfig::all_peers_at(datasource.peer())).await;
        Self {
            store: Arc::new(RemoteStore::connect_lazy(&storage.peer(), MAX_OBJECT_SIZE)),
            api: gateway.url("/api/"),
            _services: [storage, datasource, gateway],
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
