//! The fleet-mode publisher on a real 3-node NATS JetStream cluster:
//! duplicates across replicas, a cluster that goes away and comes back, a
//! node lost under load, and a full stream. Every acknowledged event must
//! be in the stream exactly once; nothing the stream did not store may be
//! acknowledged.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use vesper::{ErrorCode, ServiceError, v1::Event};
use vesper_ingest::{
    IngestConfig, IngestEngine, IngestError,
    fleet::{self, FleetConfig, MSG_ID_HEADER, publish::PublishArgs},
};
use vesper_tests::{NatsCluster, event_id, eventually, upstream_event};

/// Event `n` of `series`, at an hour of 2026-12-01; every tenth a signup.
fn event(series: u32, n: u32) -> Event {
    let event_type = if n % 10 == 9 { "signup" } else { "click" };
    let value = upstream_event(
        &event_id(series, n),
        event_type,
        &format!("2026-12-01T{:02}:{:02}:00Z", n % 24, n % 60),
    );
    let body = serde_json::json!({ "events": [value] });
    vesper::wire::decode_webhook(&body)
        .expect("a valid event")
        .remove(0)
}

fn events(series: u32, range: std::ops::Range<u32>) -> Vec<Event> {
    range.map(|n| event(series, n)).collect()
}

fn accepted_ids(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter(|event| event.event_type != vesper::v1::EventType::Signup as i32)
        .map(|event| event.event_id.clone())
        .collect()
}

/// An engine in fleet mode on `urls`, with bounds short enough for tests.
async fn engine(urls: &str, publish_timeout: Duration, wal: &tempfile::TempDir) -> IngestEngine {
    let mut fleet = FleetConfig::new(urls).expect("fleet config");
    fleet.request_timeout = Duration::from_secs(2);
    fleet.connect_timeout = Duration::from_secs(1);
    fleet.start_timeout = Duration::from_secs(30);
    IngestEngine::start_fleet(
        IngestConfig::new(wal.path()),
        fleet,
        PublishArgs {
            publish_timeout,
            ..PublishArgs::default()
        },
        unused_lake(wal).await,
    )
    .await
    .expect("fleet engine starts")
}

/// A lake for the local log's drain, which has nothing to drain here.
async fn unused_lake(dir: &tempfile::TempDir) -> Arc<dyn vesper_storage::ObjectStore> {
    Arc::new(
        vesper_storage::FsStore::open(
            dir.path().join("lake"),
            vesper_storage::DEFAULT_MAX_OBJECT_SIZE.bytes(),
        )
        .await
        .expect("a lake"),
    )
}

/// A JetStream context of its own, to look at the stream.
async fn observer(cluster: &NatsCluster) -> async_nats::jetstream::Context {
    let config = FleetConfig::new(&cluster.urls()).expect("fleet config");
    let client = fleet::connect(&config, "observer").await.expect("connect");
    fleet::jetstream(client, &config)
}

/// Every message of the stream: id → (subject, payload), and how many
/// messages there are (to catch a second copy of an id).
async fn stream_contents(
    context: &async_nats::jetstream::Context,
) -> (BTreeMap<String, (String, Vec<u8>)>, u64) {
    let mut stream = context
        .get_stream(fleet::DEFAULT_STREAM)
        .await
        .expect("the stream");
    let state = stream.info().await.expect("stream info").state.clone();
    let mut messages = BTreeMap::new();
    if state.messages > 0 {
        for sequence in state.first_sequence..=state.last_sequence {
            let message = stream
                .get_raw_message(sequence)
                .await
                .expect("a stored message");
            let id = message
                .headers
                .get(MSG_ID_HEADER)
                .expect("every message carries its id")
                .to_string();
            messages.insert(id, (message.subject.to_string(), message.payload.to_vec()));
        }
    }
    (messages, state.messages)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_events_through_two_replicas_are_stored_once() {
    let cluster = NatsCluster::start(3);
    let (wal_a, wal_b) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let first = engine(&cluster.url(0), Duration::from_secs(10), &wal_a).await;
    let second = engine(&cluster.url(1), Duration::from_secs(10), &wal_b).await;
    let batch = events(1, 0..50);
    let ids = accepted_ids(&batch);

    let outcome = first.ingest(batch.clone()).await.expect("first replica");
    assert_eq!(
        (outcome.accepted, outcome.filtered, outcome.duplicates),
        (45, 5, 0)
    );
    let outcome = second.ingest(batch).await.expect("second replica");
    assert_eq!(
        (outcome.accepted, outcome.filtered, outcome.duplicates),
        (0, 5, 45)
    );
    let stats = second.stats();
    assert_eq!(
        (stats.accepted, stats.duplicates, stats.filtered),
        (0, 45, 5)
    );
    assert_eq!(stats.log, "nats");
    assert!(stats.log_connected);

    let (messages, count) = stream_contents(&observer(&cluster).await).await;
    assert_eq!(count, 45, "one copy of each event");
    assert_eq!(messages.keys().cloned().collect::<Vec<_>>(), {
        let mut sorted = ids.clone();
        sorted.sort();
        sorted
    });
    // The payload is the lake line, on the subject of its hour.
    let (subject, payload) = &messages[&event_id(1, 0)];
    let line: serde_json::Value = serde_json::from_slice(payload).expect("a JSON line");
    assert_eq!(line["event_id"], event_id(1, 0));
    assert!(!payload.ends_with(b"\n"));
    let hour = vesper_ingest::lake::Partition::of(
        &vesper::wire::parse_timestamp("2026-12-01T00:00:00Z").expect("timestamp"),
    )
    .expect("in range")
    .unix_hour();
    assert_eq!(subject, &format!("vesper.events.{hour}"));

    // Stats catch up with the stream within a refresh.
    eventually(
        "the stream's size in Stats",
        Duration::from_secs(10),
        async || first.stats().stream_messages == 45,
    )
    .await;
    first.shutdown().await;
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_that_goes_away_answers_unavailable_and_is_used_again_when_back() {
    let mut cluster = NatsCluster::start(3);
    let wal = tempfile::tempdir().expect("dir");
    let engine = engine(&cluster.urls(), Duration::from_secs(2), &wal).await;
    let before = events(2, 0..20);
    engine.ingest(before.clone()).await.expect("cluster up");

    cluster.kill_all();
    let during = events(2, 100..120);
    let err = engine
        .ingest(during.clone())
        .await
        .expect_err("no cluster, no OK");
    assert_eq!(err.code(), ErrorCode::Unavailable, "{err}");
    assert!(
        matches!(err, IngestError::LogUnavailable { .. }),
        "nothing was stored, so not a partial failure: {err}"
    );
    let status = tonic::Status::from(err);
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(status.metadata().get("retry-after").is_some(), "{status:?}");
    assert!(!engine.stats().log_connected);

    for node in 0..cluster.len() {
        cluster.restart(node);
    }
    // The same engine, never restarted, takes the call again once the
    // cluster has a stream leader.
    let mut outcome = None;
    eventually(
        "an OK after the cluster's restart",
        Duration::from_secs(60),
        async || {
            outcome = engine.ingest(during.clone()).await.ok();
            outcome.is_some()
        },
    )
    .await;
    let outcome = outcome.expect("an OK");
    assert_eq!(outcome.accepted + outcome.duplicates, 18);

    let (messages, count) = stream_contents(&observer(&cluster).await).await;
    let mut expected = accepted_ids(&before);
    expected.extend(accepted_ids(&during));
    expected.sort();
    assert_eq!(count, expected.len() as u64, "one copy each");
    assert_eq!(messages.keys().cloned().collect::<Vec<_>>(), expected);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_stream_leader_under_load_costs_no_error() {
    let mut cluster = NatsCluster::start(3);
    let wal = tempfile::tempdir().expect("dir");
    let engine = engine(
        &cluster.urls(),
        vesper_ingest::fleet::publish::DEFAULT_PUBLISH_TIMEOUT,
        &wal,
    )
    .await;
    let context = observer(&cluster).await;
    let leader = context
        .get_stream(fleet::DEFAULT_STREAM)
        .await
        .expect("stream")
        .cached_info()
        .cluster
        .as_ref()
        .and_then(|cluster| cluster.leader.clone())
        .expect("the stream has a leader");
    let leader_index: usize = leader
        .trim_start_matches('n')
        .parse::<usize>()
        .expect("nodes are n1..n3")
        - 1;

    const CALLS: u32 = 120;
    let calls_done = Arc::new(AtomicUsize::new(0));
    let load = tokio::spawn({
        let engine = engine.clone();
        let calls_done = Arc::clone(&calls_done);
        async move {
            let mut acknowledged = Vec::new();
            for call in 0..CALLS {
                let batch = events(3, call * 10..call * 10 + 10);
                match engine.ingest(batch.clone()).await {
                    Ok(outcome) => {
                        assert_eq!(outcome.accepted + outcome.duplicates, 9);
                        acknowledged.extend(accepted_ids(&batch));
                    }
                    Err(err) => panic!("call {call} failed with a quorum left: {err}"),
                }
                calls_done.fetch_add(1, Ordering::Relaxed);
            }
            acknowledged
        }
    });
    eventually("the first calls", Duration::from_secs(30), async || {
        calls_done.load(Ordering::Relaxed) >= 20
    })
    .await;
    cluster.kill(leader_index);
    let acknowledged = load.await.expect("every call answered OK");
    assert_eq!(acknowledged.len(), CALLS as usize * 9);

    let context = observer(&cluster).await;
    let (messages, count) = stream_contents(&context).await;
    assert_eq!(count, acknowledged.len() as u64, "one copy each");
    for id in &acknowledged {
        assert!(
            messages.contains_key(id),
            "acknowledged {id} is not in the stream"
        );
    }
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_stream_is_named_and_a_partial_call_is_retried_as_duplicates() {
    let cluster = NatsCluster::start(3);
    let wal = tempfile::tempdir().expect("dir");
    let mut fleet = FleetConfig::new(&cluster.urls()).expect("fleet config");
    fleet.stream.max_bytes = 8 * 1024;
    let engine = IngestEngine::start_fleet(
        IngestConfig::new(wal.path()),
        fleet.clone(),
        PublishArgs::default(),
        unused_lake(&wal).await,
    )
    .await
    .expect("starts");

    // More than the stream holds: part is stored, the rest refused.
    let batch = events(4, 0..40);
    let err = engine
        .ingest(batch.clone())
        .await
        .expect_err("over the bound");
    assert_eq!(err.code(), ErrorCode::Unavailable, "{err}");
    assert!(err.to_string().contains("--stream-max-bytes"), "{err}");
    let IngestError::PartiallyStored { stored, total, .. } = err else {
        panic!("expected a partial failure, got {err}");
    };
    assert_eq!(total, 36);
    assert!(stored > 0 && stored < total, "{stored} of {total}");

    // Nothing fits any more: the stream is named full.
    let err = engine
        .ingest(events(4, 100..101))
        .await
        .expect_err("stream full");
    assert!(matches!(err, IngestError::StreamFull { .. }), "{err}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(5)));

    // Once there is room, the client's retry of the whole call is answered
    // OK, the events stored the first time counted as duplicates.
    let context = observer(&cluster).await;
    let mut config = context
        .get_stream(fleet::DEFAULT_STREAM)
        .await
        .expect("stream")
        .cached_info()
        .config
        .clone();
    config.max_bytes = 1 << 20;
    context.update_stream(config).await.expect("room");
    let outcome = engine.ingest(batch.clone()).await.expect("the retry");
    assert_eq!(outcome.duplicates as usize, stored);
    assert_eq!(outcome.accepted as usize, total - stored);
    let (messages, count) = stream_contents(&context).await;
    assert_eq!(count, 36);
    assert_eq!(messages.len(), 36);
    engine.shutdown().await;
}
