//! The event path under faults: storage outages (backpressure, then
//! recovery), a full disk under the log, and a crash between an object's
//! write and its confirmation.

mod kit;

use std::{
    collections::BTreeSet,
    io,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use bytes::Bytes;
use kit::{
    MAX_OBJECT_SIZE, get_json, http_client, ingest_config, spawn_gateway, spawn_ingest,
    spawn_ingest_with, spawn_storage,
};
use serde_json::{Value, json};
use vesper::v1::{FlushRequest, StatsRequest};
use vesper_gateway::GatewayConfig;
use vesper_ingest::{
    IngestConfig,
    fs::{StdFs, WalFile, WalFs},
};
use vesper_storage::{
    FsStore, ListPage, ObjectKey, ObjectMeta, ObjectStore, PutOptions, StorageError,
};
use vesper_tests::{
    Relay, assert_each_acknowledged_event_once, event_id, eventually, lake_event_ids, lake_records,
    upstream_event,
};

fn batch(series: u32, range: std::ops::Range<u32>) -> (Value, Vec<String>) {
    let ids: Vec<String> = range.map(|n| event_id(series, n)).collect();
    let events: Vec<Value> = ids
        .iter()
        .map(|id| upstream_event(id, "share", "2026-11-25T10:30:00Z"))
        .collect();
    (json!({ "events": events }), ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_outage_fills_the_log_to_its_bound_then_everything_arrives() {
    let lake = tempfile::tempdir().expect("lake");
    let wal = tempfile::tempdir().expect("wal");
    let storage = spawn_storage(lake.path()).await;
    // Ingest reaches storage through a relay, so that the storage that
    // comes back (on a fresh port) is at the address ingest knows.
    let relay = Relay::start(Some(storage.addr)).await;
    let storage_peer = relay.addr().to_string().parse().expect("peer");
    let config = IngestConfig {
        batch_size: 10,
        max_batch_age: Duration::from_millis(100),
        max_wal_bytes: 64 * 1024,
        max_event_bytes: 4 * 1024,
        ..ingest_config(wal.path())
    };
    let ingest = spawn_ingest(config, &storage_peer).await;
    let gateway = spawn_gateway(GatewayConfig::all_peers_at(ingest.peer())).await;
    let http = http_client();
    let mut acknowledged = BTreeSet::new();
    let mut next = 0_u32;
    let mut send = async |acknowledged: &mut BTreeSet<String>| {
        let (body, ids) = batch(3, next..next + 5);
        next += 5;
        let response = http
            .post(gateway.url("/webhook/events"))
            .json(&body)
            .send()
            .await
            .expect("the gateway answers");
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|value| value.to_str().expect("ascii").to_owned());
        let body: Value = response.json().await.expect("json");
        if status == 200 {
            assert_eq!(body["accepted"], 5);
            acknowledged.extend(ids);
        }
        (status, retry_after, body)
    };

    for _ in 0..20 {
        assert_eq!(send(&mut acknowledged).await.0, 200);
    }
    storage.stop().await;
    relay.cut();

    // Steady sending: accepted into the log until the bound, then 503.
    let mut refusal = None;
    for _ in 0..2_000 {
        let (status, retry_after, body) = send(&mut acknowledged).await;
        match status {
            200 => {}
            503 => {
                refusal = Some((retry_after, body));
                break;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    let (retry_after, body) = refusal.expect("the log bound was never reached");
    let retry_after: u64 = retry_after
        .expect("a 503 carries Retry-After")
        .parse()
        .expect("whole seconds");
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|error| error.contains("write-ahead log is full")),
        "{body}"
    );
    let mut client = ingest.client();
    let stats = client
        .stats(StatsRequest {})
        .await
        .expect("stats")
        .into_inner();
    assert!(!stats.storage_healthy);
    assert!(!stats.last_flush_error.is_empty());
    assert!(stats.refused_batches >= 1);
    // Refused at the bound: accepted events filled it; only the flush
    // bookkeeping of those events (a few percent) may go past it.
    assert!(stats.wal_bytes >= stats.max_wal_bytes * 3 / 4, "{stats:?}");
    assert!(
        stats.wal_bytes <= stats.max_wal_bytes * 11 / 10,
        "{stats:?}"
    );
    let flush = client
        .flush(FlushRequest {})
        .await
        .expect_err("storage is down");
    assert_eq!(flush.code(), tonic::Code::Unavailable);
    let health = get_json(&gateway.url("/health")).await;
    assert_eq!(health["storage_healthy"], false);

    // Storage comes back: the log drains by itself and acceptance resumes
    // without anyone asking.
    let storage = spawn_storage(lake.path()).await;
    relay.point_to(storage.addr);
    eventually(
        "acceptance to resume",
        Duration::from_secs(30),
        async || send(&mut acknowledged).await.0 == 200,
    )
    .await;
    client.flush(FlushRequest {}).await.expect("flush");
    let in_lake = assert_each_acknowledged_event_once(lake.path(), &acknowledged);
    assert_eq!(
        in_lake.len(),
        acknowledged.len(),
        "nothing refused was stored"
    );
    let stats = client
        .stats(StatsRequest {})
        .await
        .expect("stats")
        .into_inner();
    assert!(stats.storage_healthy);
    assert_eq!(stats.buffered_events, 0);

    ingest.stop().await;
    storage.stop().await;
}

/// A file system whose disk can be made full: writes then store half their
/// bytes and fail with ENOSPC, as a real full disk does.
#[derive(Debug, Default)]
struct FillableFs {
    full: Arc<AtomicBool>,
}

fn no_space() -> io::Error {
    io::Error::from_raw_os_error(28)
}

impl WalFs for FillableFs {
    fn create(&self, path: &Path) -> io::Result<Box<dyn WalFile>> {
        if self.full.load(Ordering::SeqCst) {
            return Err(no_space());
        }
        Ok(Box::new(FillableFile {
            inner: StdFs.create(path)?,
            full: Arc::clone(&self.full),
        }))
    }

    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        if self.full.load(Ordering::SeqCst) {
            return Err(no_space());
        }
        StdFs.write_atomic(path, bytes)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        StdFs.remove(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        StdFs.sync_dir(dir)
    }
}

#[derive(Debug)]
struct FillableFile {
    inner: Box<dyn WalFile>,
    full: Arc<AtomicBool>,
}

impl WalFile for FillableFile {
    fn write_all_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        if self.full.load(Ordering::SeqCst) {
            self.inner.write_all_at(offset, &bytes[..bytes.len() / 2])?;
            return Err(no_space());
        }
        self.inner.write_all_at(offset, bytes)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.inner.sync_data()
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_batches_leaves_nothing_torn_and_recovers() {
    let lake = tempfile::tempdir().expect("lake");
    let wal = tempfile::tempdir().expect("wal");
    let storage = spawn_storage(lake.path()).await;
    let fs = FillableFs::default();
    let full = Arc::clone(&fs.full);
    let config = IngestConfig {
        batch_size: 1000,
        max_batch_age: Duration::from_secs(3600),
        fs: Arc::new(fs),
        ..ingest_config(wal.path())
    };
    let ingest = spawn_ingest(config, &storage.peer()).await;
    let gateway = spawn_gateway(GatewayConfig::all_peers_at(ingest.peer())).await;
    let http = http_client();
    let post = |body: &Value| http.post(gateway.url("/webhook/events")).json(body).send();

    let (first, first_ids) = batch(4, 0..5);
    assert_eq!(post(&first).await.expect("answer").status(), 200);

    full.store(true, Ordering::SeqCst);
    let (second, second_ids) = batch(4, 5..10);
    let refused = post(&second).await.expect("answer");
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.expect("json");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|error| error.contains("No space left on device")),
        "{body}"
    );
    let stats = ingest
        .client()
        .stats(StatsRequest {})
        .await
        .expect("stats")
        .into_inner();
    assert_eq!((stats.accepted, stats.refused_batches), (5, 1));

    // Space is back: the same batch is accepted, not taken for duplicates.
    full.store(false, Ordering::SeqCst);
    let accepted: Value = post(&second)
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    assert_eq!(
        (
            accepted["accepted"].as_u64(),
            accepted["duplicates"].as_u64()
        ),
        (Some(5), Some(0))
    );
    let (third, third_ids) = batch(4, 10..15);
    assert_eq!(post(&third).await.expect("answer").status(), 200);

    // Crash with everything only in the log (storage is down for the final
    // flush), then replay on a healthy disk: had the failed append left a
    // partial record, replay would stop there and lose what follows it.
    storage.stop().await;
    ingest.stop().await;
    assert!(lake_event_ids(lake.path()).is_empty());
    let storage = spawn_storage(lake.path()).await;
    let ingest = spawn_ingest(ingest_config(wal.path()), &storage.peer()).await;
    ingest.client().flush(FlushRequest {}).await.expect("flush");
    let in_lake = lake_event_ids(lake.path());
    let expected: BTreeSet<String> = [first_ids, second_ids, third_ids]
        .concat()
        .into_iter()
        .collect();
    assert_eq!(in_lake.keys().cloned().collect::<BTreeSet<_>>(), expected);
    assert!(in_lake.values().all(|count| *count == 1));
    ingest.stop().await;
    storage.stop().await;
}

/// A store that writes the object and then reports a failure, as when the
/// process dies after storage wrote but before the confirmation was
/// logged.
#[derive(Debug)]
struct WritesThenFails(FsStore);

#[async_trait]
impl ObjectStore for WritesThenFails {
    fn location(&self) -> String {
        self.0.location()
    }

    async fn put(
        &self,
        key: &ObjectKey,
        body: Bytes,
        options: PutOptions,
    ) -> Result<ObjectMeta, StorageError> {
        self.0.put(key, body, options).await?;
        Err(StorageError::Unavailable {
            message: "the confirmation was lost".into(),
        })
    }

    async fn get(&self, key: &ObjectKey) -> Result<(ObjectMeta, Bytes), StorageError> {
        self.0.get(key).await
    }

    async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta, StorageError> {
        self.0.head(key).await
    }

    async fn list(
        &self,
        prefix: &str,
        token: Option<&str>,
        max_keys: u32,
    ) -> Result<ListPage, StorageError> {
        self.0.list(prefix, token, max_keys).await
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        self.0.delete(key).await
    }
}

#[tokio::test]
async fn a_replay_after_an_unconfirmed_write_overwrites_the_same_object() {
    let lake = tempfile::tempdir().expect("lake");
    let wal = tempfile::tempdir().expect("wal");
    let config = || IngestConfig {
        batch_size: 5,
        max_batch_age: Duration::from_secs(3600),
        ..ingest_config(wal.path())
    };
    let store = WritesThenFails(
        FsStore::open(lake.path(), MAX_OBJECT_SIZE)
            .await
            .expect("lake"),
    );
    let ingest = spawn_ingest_with(config(), Arc::new(store)).await;
    let gateway = spawn_gateway(GatewayConfig::all_peers_at(ingest.peer())).await;
    let (body, ids) = batch(5, 0..5);
    let response = http_client()
        .post(gateway.url("/webhook/events"))
        .json(&body)
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 200);
    eventually(
        "the object to be written",
        Duration::from_secs(5),
        async || !lake_records(lake.path(), "events").is_empty(),
    )
    .await;
    let written: Vec<String> = lake_records(lake.path(), "events").into_keys().collect();
    // Shutting down with storage "failing" leaves the intent unconfirmed,
    // as a crash would.
    ingest.stop().await;

    let store = FsStore::open(lake.path(), MAX_OBJECT_SIZE)
        .await
        .expect("lake");
    let ingest = spawn_ingest_with(config(), Arc::new(store)).await;
    let flushed = ingest
        .client()
        .flush(FlushRequest {})
        .await
        .expect("flush")
        .into_inner();
    let objects = lake_records(lake.path(), "events");
    assert_eq!(
        objects.keys().cloned().collect::<Vec<_>>(),
        written,
        "same key, no second object"
    );
    assert!(
        flushed.keys.is_empty() || flushed.keys == written,
        "{flushed:?}"
    );
    let in_lake = lake_event_ids(lake.path());
    assert_eq!(in_lake.keys().cloned().collect::<Vec<_>>(), ids);
    assert!(in_lake.values().all(|count| *count == 1));
    let stats = ingest.engine.stats();
    assert_eq!((stats.flushed_objects, stats.buffered_events), (1, 0));
    ingest.stop().await;
}
