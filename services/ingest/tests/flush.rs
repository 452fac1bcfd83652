//! Flush answers only once every event accepted before it is in the lake,
//! even when it arrives while a restart is still reading the log back
//! into memory (the log writer then moves events into memory after the
//! flusher's first cut; a Flush used to return with those still waiting).

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use vesper::v1::Event;
use vesper_ingest::{IngestConfig, IngestEngine};
use vesper_storage::{FsStore, ObjectStore};
use vesper_tests::{event_id, lake_event_ids, upstream_event};

/// Events in the log at the restart: enough that reading them back takes
/// a while, so the Flush lands in the middle of it.
const EVENTS: u32 = 20_000;

/// Events per Ingest call.
const PER_CALL: u32 = 500;

fn event(n: u32) -> Event {
    let value = upstream_event(
        &event_id(1, n),
        "click",
        &format!("2026-12-01T{:02}:{:02}:00Z", n % 24, n % 60),
    );
    let body = serde_json::json!({ "events": [value] });
    vesper::wire::decode_webhook(&body)
        .expect("a valid event")
        .remove(0)
}

async fn lake(root: &Path) -> Arc<dyn ObjectStore> {
    Arc::new(
        FsStore::open(root, vesper_storage::DEFAULT_MAX_OBJECT_SIZE.bytes())
            .await
            .expect("lake"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_during_replay_answers_once_the_whole_log_is_in_the_lake() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lake_dir = dir.path().join("lake");
    let store = lake(&lake_dir).await;
    // Nothing is cut on its own: only the Flush writes.
    let config = IngestConfig {
        batch_size: 0,
        batch_bytes: 64 << 20,
        max_buffered_bytes: 1 << 30,
        max_batch_age: Duration::from_secs(3600),
        ..IngestConfig::new(dir.path().join("wal"))
    };

    let engine = IngestEngine::start(config.clone(), Arc::clone(&store))
        .await
        .expect("engine");
    for call in 0..EVENTS / PER_CALL {
        let events = (call * PER_CALL..(call + 1) * PER_CALL)
            .map(event)
            .collect();
        let outcome = engine.ingest(events).await.expect("accepted");
        assert_eq!(outcome.accepted, PER_CALL);
    }
    // Abandoned without a shutdown, as after a SIGKILL: all in the log only.
    drop(engine);

    // The Flush must find the log part read: some events in memory, the
    // rest still in the log. A restart that read it whole before that could
    // be seen is abandoned too, and the log (still all unwritten) replayed
    // again.
    let mut attempts = 0;
    let engine = loop {
        attempts += 1;
        let engine = IngestEngine::start(config.clone(), Arc::clone(&store))
            .await
            .expect("replay");
        let deadline = Instant::now() + Duration::from_secs(30);
        let stats = loop {
            let stats = engine.stats();
            if stats.buffered_bytes > 0 {
                break stats;
            }
            assert!(
                Instant::now() < deadline,
                "the log is never read back: {stats:?}"
            );
            tokio::task::yield_now().await;
        };
        if stats.backlog_events > 0 {
            break engine;
        }
        assert!(
            attempts < 5,
            "the whole log was read before the Flush could start, {attempts} times: make it longer"
        );
        drop(engine);
    };
    let flushed = engine.flush().await.expect("flush");

    let stats = engine.stats();
    assert_eq!(
        (
            stats.buffered_events,
            stats.backlog_events,
            stats.buffered_bytes
        ),
        (0, 0, 0),
        "events still wait after the Flush answered: {stats:?}"
    );
    assert_eq!(flushed.events, u64::from(EVENTS));
    let ids = lake_event_ids(&lake_dir);
    assert_eq!(ids.len(), EVENTS as usize);
    assert!(ids.values().all(|copies| *copies == 1));
    engine.shutdown().await;
}
