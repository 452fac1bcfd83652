//! Whatever the webhook or Ingest accepts replays unchanged: any valid
//! event (properties of any shape within the edge bounds, the deepest
//! allowed nesting included) is logged, survives a crash (the engine is
//! abandoned without a shutdown, as a SIGKILL would leave it), and comes
//! back from the log as the exact lake line it would have been written as.

use std::{path::Path, sync::Arc};

use proptest::prelude::*;
use serde_json::{Value, json};
use vesper_ingest::{IngestConfig, IngestEngine, lake};
use vesper_storage::{FsStore, ObjectStore};

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i32>().prop_map(Value::from),
        (-1e12_f64..1e12).prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
    ]
}

/// Properties of any shape, some nested to the deepest level allowed.
fn properties() -> impl Strategy<Value = Value> {
    let nested = json_leaf().prop_recursive(6, 48, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::from),
            prop::collection::btree_map("\\PC{1,10}", inner, 0..5)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    });
    let deepest = (1..vesper::wire::MAX_PROPERTIES_DEPTH).prop_map(|depth| {
        let mut value = json!("bottom");
        for level in 0..depth {
            value = if level % 2 == 0 {
                json!([value])
            } else {
                json!({ "k": value })
            };
        }
        value
    });
    (
        prop::collection::btree_map("\\PC{1,10}", nested, 0..6),
        deepest,
    )
        .prop_map(|(mut map, deep)| {
            map.insert("deep".into(), deep);
            Value::Object(map.into_iter().collect())
        })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

async fn lake_lines(lake: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    let mut pending = vec![lake.join("events")];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let text = std::fs::read_to_string(&path).expect("object");
                lines.extend(text.lines().map(str::to_owned));
            }
        }
    }
    lines
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn any_accepted_event_survives_log_and_replay_unchanged(
        properties in properties(),
        seconds in 0_i64..253_402_300_799,
    ) {
        let timestamp = time::OffsetDateTime::from_unix_timestamp(seconds)
            .expect("in range")
            .format(&time::format_description::well_known::Rfc3339)
            .expect("format");
        let body = json!({ "events": [{
            "event_id": "6f1c2b3a-4d5e-4f60-8a7b-9c0d1e2f3a4b",
            "user_id": "user_1",
            "event_type": "click",
            "source": "web",
            "timestamp": timestamp,
            "properties": properties,
        }]});
        let decoded = vesper::wire::decode_webhook(&body);
        // Refused at the edge (e.g. too many keys): nothing to replay.
        prop_assume!(decoded.is_ok());
        let events = decoded.expect("accepted");
        let dir = tempfile::tempdir().expect("tempdir");
        let wal = dir.path().join("wal");
        let lake_dir = dir.path().join("lake");
        let (expected, lines) = runtime().block_on(async {
            let store: Arc<dyn ObjectStore> = Arc::new(
                FsStore::open(&lake_dir, vesper_storage::DEFAULT_MAX_OBJECT_SIZE.bytes())
                    .await
                    .expect("lake"),
            );
            let config = IngestConfig {
                max_batch_age: std::time::Duration::from_secs(3600),
                ..IngestConfig::new(&wal)
            };
            let engine = IngestEngine::start(config.clone(), Arc::clone(&store))
                .await
                .expect("engine");
            let outcome = engine.ingest(events.clone()).await.expect("accepted");
            assert_eq!(outcome.accepted, 1);
            // Abandoned: no shutdown, nothing flushed, as after a SIGKILL.
            drop(engine);
            let engine = IngestEngine::start(config, store).await.expect("replay");
            engine.flush().await.expect("flush");
            engine.shutdown().await;
            let lines = lake_lines(&lake_dir).await;
            // The line the event was accepted as, up to its receive time.
            let line: Value = serde_json::from_str(lines.first().map_or("null", String::as_str))
                .expect("a JSON line");
            let received = line["received_at"].as_str().unwrap_or_default().to_owned();
            let received = vesper::wire::parse_timestamp(&received).expect("received_at");
            let expected = String::from_utf8(lake::event_line(&events[0], &received))
                .expect("utf-8");
            (expected, lines)
        });
        prop_assert_eq!(lines, vec![expected]);
    }
}
