//! The engine's resource bounds under the conditions that used to break
//! them: a storage outage with a large backlog (memory stays within
//! `--max-buffered-bytes`, while running and while replaying), and an
//! object storage refuses for good (moved to the dead-letter directory
//! after bounded tries, never blocking the log).

use std::{
    collections::BTreeMap,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use bytes::Bytes;
use vesper::v1::Event;
use vesper_ingest::{DEAD_LETTER_DIR, IngestConfig, IngestEngine, dead_letter_name};
use vesper_storage::{
    FsStore, ListPage, ObjectKey, ObjectMeta, ObjectStore, PutOptions, StorageError,
};
use vesper_tests::{event_id, lake_event_ids, upstream_event};

/// An engine config for tests: the log in `wal_dir`, quick retries.
fn test_config(wal_dir: &Path) -> IngestConfig {
    IngestConfig {
        retry_initial: Duration::from_millis(50),
        retry_max: Duration::from_millis(500),
        ..IngestConfig::new(wal_dir)
    }
}

/// A directory lake that can be switched off (every write UNAVAILABLE)
/// and that refuses for good the objects of one hour partition.
#[derive(Debug)]
struct TestLake {
    inner: FsStore,
    down: AtomicBool,
    refused_partition: Option<&'static str>,
}

impl TestLake {
    async fn open(root: &Path, refused_partition: Option<&'static str>) -> Arc<Self> {
        let inner = FsStore::open(root, vesper_storage::DEFAULT_MAX_OBJECT_SIZE.bytes())
            .await
            .expect("lake");
        Arc::new(Self {
            inner,
            down: AtomicBool::new(false),
            refused_partition,
        })
    }

    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
}

#[async_trait]
impl ObjectStore for TestLake {
    fn location(&self) -> String {
        self.inner.location()
    }

    async fn put(
        &self,
        key: &ObjectKey,
        body: Bytes,
        options: PutOptions,
    ) -> Result<ObjectMeta, StorageError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StorageError::Unavailable {
                message: "switched off by the test".into(),
            });
        }
        if self
            .refused_partition
            .is_some_and(|partition| key.as_str().contains(partition))
        {
            return Err(StorageError::TooLarge {
                size: body.len() as u64,
                limit: 1,
            });
        }
        self.inner.put(key, body, options).await
    }

    async fn get(&self, key: &ObjectKey) -> Result<(ObjectMeta, Bytes), StorageError> {
        self.inner.get(key).await
    }

    async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta, StorageError> {
        self.inner.head(key).await
    }

    async fn list(
        &self,
        prefix: &str,
        token: Option<&str>,
        max_keys: u32,
    ) -> Result<ListPage, StorageError> {
        self.inner.list(prefix, token, max_keys).await
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        self.inner.delete(key).await
    }
}

/// Event `n` of `series`, at `hour` of 2026-12-01, with some bulk.
fn event(series: u32, n: u32, hour: u32) -> Event {
    let mut value = upstream_event(
        &event_id(series, n),
        "click",
        &format!("2026-12-01T{hour:02}:{:02}:00Z", n % 60),
    );
    value["properties"] = serde_json::json!({ "note": "x".repeat(200), "n": n });
    let body = serde_json::json!({ "events": [value] });
    vesper::wire::decode_webhook(&body)
        .expect("a valid event")
        .remove(0)
}

/// Small bounds, so that a few thousand events overflow memory.
fn small_bounds(wal_dir: &Path) -> IngestConfig {
    IngestConfig {
        max_event_bytes: 4 * 1024,
        batch_bytes: 16 * 1024,
        max_buffered_bytes: 64 * 1024,
        batch_size: 100_000,
        max_batch_age: Duration::from_secs(3600),
        ..test_config(wal_dir)
    }
}

/// Memory held may pass the bound by at most one call's events.
const SLACK: u64 = 50 * 1024;

#[tokio::test]
async fn an_outage_backlog_waits_in_the_log_and_memory_stays_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = dir.path().join("wal");
    let lake = TestLake::open(&dir.path().join("lake"), None).await;
    lake.set_down(true);
    let config = small_bounds(&wal);
    let bound = config.max_buffered_bytes;

    let engine = IngestEngine::start(config.clone(), lake.clone())
        .await
        .expect("engine");
    const EVENTS: u32 = 3_000;
    for call in 0..EVENTS / 50 {
        let events = (call * 50..(call + 1) * 50)
            .map(|n| event(1, n, n % 24))
            .collect();
        let outcome = engine
            .ingest(events)
            .await
            .expect("accepted while storage is down");
        assert_eq!(outcome.accepted, 50);
    }
    let stats = engine.stats();
    assert_eq!(stats.buffered_events, u64::from(EVENTS));
    assert!(
        stats.backlog_events > 0,
        "past the bound events wait in the log: {stats:?}"
    );
    assert!(stats.buffered_bytes <= bound + SLACK, "{stats:?}");

    // A restart with storage still down replays within the same bound.
    engine.shutdown().await;
    let engine = IngestEngine::start(config, lake.clone())
        .await
        .expect("engine");
    let stats = engine.stats();
    assert_eq!(stats.buffered_events, u64::from(EVENTS), "{stats:?}");
    assert!(stats.buffered_bytes <= bound + SLACK, "{stats:?}");

    // Storage back: once one Flush answers, everything is written, each
    // event once. (A retry the flusher had already begun may write some
    // objects just before the Flush does: the engine's own count of what
    // it wrote since its start covers both.)
    lake.set_down(false);
    let flushed = engine.flush().await.expect("flush");
    assert!(flushed.events > 0);
    let stats = engine.stats();
    assert_eq!(
        (
            stats.buffered_events,
            stats.backlog_events,
            stats.buffered_bytes,
            stats.flushed_events
        ),
        (0, 0, 0, u64::from(EVENTS))
    );
    engine.shutdown().await;
    let ids = lake_event_ids(&dir.path().join("lake"));
    assert_eq!(ids.len(), EVENTS as usize);
    assert!(ids.values().all(|count| *count == 1));
}

#[tokio::test]
async fn an_object_refused_for_good_is_dead_lettered_and_the_rest_flows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = dir.path().join("wal");
    let lake = TestLake::open(&dir.path().join("lake"), Some("hour=13")).await;
    let engine = IngestEngine::start(test_config(&wal), lake)
        .await
        .expect("engine");
    let events = (0..20).map(|n| event(2, n, 12 + n % 2)).collect();
    assert_eq!(engine.ingest(events).await.expect("ingest").accepted, 20);

    // Two refusals are retried; the third moves the object aside.
    for attempt in 1..=2 {
        let err = engine.flush().await.expect_err("storage refuses hour 13");
        assert!(err.to_string().contains("over"), "attempt {attempt}: {err}");
    }
    engine
        .flush()
        .await
        .expect("the refused object is set aside");
    let stats = engine.stats();
    assert_eq!(stats.dead_lettered_objects, 1, "{stats:?}");
    assert_eq!(
        stats.buffered_events, 0,
        "nothing blocks the log: {stats:?}"
    );
    engine.shutdown().await;

    let letters: BTreeMap<String, String> = std::fs::read_dir(wal.join(DEAD_LETTER_DIR))
        .expect("dead-letter dir")
        .map(|entry| {
            let entry = entry.expect("entry");
            (
                entry.file_name().to_string_lossy().into_owned(),
                std::fs::read_to_string(entry.path()).expect("letter"),
            )
        })
        .collect();
    assert_eq!(letters.len(), 1);
    let (name, body) = letters.iter().next().expect("one letter");
    assert!(
        name.starts_with(&dead_letter_name("events/dt=2026-12-01/hour=13/")),
        "{name}"
    );
    assert_eq!(body.lines().count(), 10);
    let ids = lake_event_ids(&dir.path().join("lake"));
    assert_eq!(ids.len(), 10, "hour 12 reached the lake");

    // After a restart the dead letter is not written again.
    let lake = TestLake::open(&dir.path().join("lake"), None).await;
    let engine = IngestEngine::start(test_config(&wal), lake)
        .await
        .expect("engine");
    let flushed = engine.flush().await.expect("flush");
    assert_eq!(flushed.events, 0);
    engine.shutdown().await;
}
