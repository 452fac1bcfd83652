//! Fleet mode's lake writers against a real 3-node NATS JetStream cluster:
//! real `vesper lake-writer` processes, killed with SIGKILL where the test
//! says so, writing through a Storage service on a directory lake. Events
//! are published the way the fleet's ingest replicas publish them (the
//! subject of their hour, `Nats-Msg-Id`, `traceparent`, the lake line as
//! the payload).

mod kit;

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use async_nats::{HeaderMap, jetstream};
use async_trait::async_trait;
use bytes::Bytes;
use serde_json::{Value, json};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use vesper_ingest::{
    fleet::{self, FleetConfig, stream::ensure_stream_within},
    lake::Partition,
};
use vesper_storage::{
    FsStore, ListPage, ObjectKey, ObjectMeta, ObjectStore, PutOptions, StorageError,
};
use vesper_tests::{
    FreePort, NatsCluster, OtlpCollector, VesperProcess, eventually, lake_event_ids, lake_records,
};

const WAIT: Duration = Duration::from_secs(60);

/// The first hour of the test's events (2026-11-25T08:00Z).
const HOUR: i64 = 1_764_057_600 / 3600;

/// The cluster, a JetStream context on it, and the stream the writers read.
struct Fleet {
    cluster: NatsCluster,
    config: FleetConfig,
    context: jetstream::Context,
}

impl Fleet {
    async fn start() -> Self {
        let cluster = NatsCluster::start(3);
        let config = FleetConfig::new(&cluster.urls()).expect("fleet settings");
        let client = fleet::connect(&config, "fleet-writer-test")
            .await
            .expect("connect to the cluster");
        let context = fleet::jetstream(client, &config);
        ensure_stream_within(&context, &config.stream, WAIT)
            .await
            .expect("the stream");
        Self {
            cluster,
            config,
            context,
        }
    }

    /// Publishes one event of `hour` as an ingest replica does; returns its
    /// stream sequence number.
    async fn publish(&self, id: &str, hour: i64) -> u64 {
        self.publish_traced(
            id,
            hour,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .await
    }

    /// [`Fleet::publish`] with the trace context of the call that took the
    /// event in.
    async fn publish_traced(&self, id: &str, hour: i64, traceparent: &str) -> u64 {
        let mut headers = HeaderMap::new();
        headers.insert(fleet::MSG_ID_HEADER, id);
        headers.insert(fleet::TRACEPARENT_HEADER, traceparent);
        let ack = self
            .context
            .publish_with_headers(
                self.config.stream.subject_for_hour(hour),
                headers,
                Bytes::from(line(id, hour)),
            )
            .await
            .expect("publish")
            .await
            .expect("stored by the stream");
        ack.sequence
    }

    /// Publishes `count` events spread over `hours` hours; returns their ids.
    async fn publish_many(&self, prefix: &str, count: usize, hours: i64) -> Vec<String> {
        let mut ids = Vec::with_capacity(count);
        for n in 0..count {
            let id = event_id(prefix, n);
            self.publish(&id, HOUR + (n as i64 % hours)).await;
            ids.push(id);
        }
        ids
    }

    async fn stream_messages(&self) -> u64 {
        let mut stream = self
            .context
            .get_stream(&self.config.stream.name)
            .await
            .expect("the stream");
        stream.info().await.expect("stream info").state.messages
    }

    async fn consumer(&self) -> jetstream::consumer::Info {
        self.context
            .get_stream(&self.config.stream.name)
            .await
            .expect("the stream")
            .consumer_info(&self.config.consumer)
            .await
            .expect("the writers' consumer")
    }

    /// A `vesper lake-writer` on this cluster writing through `storage`,
    /// with `flags` (`--name value` pairs) over the test's defaults.
    fn writer(&self, storage: &str, flags: &[(&str, &str)]) -> VesperProcess {
        self.writer_with_env(storage, flags, &[])
    }

    fn writer_with_env(
        &self,
        storage: &str,
        flags: &[(&str, &str)],
        env: &[(&str, String)],
    ) -> VesperProcess {
        // Short waits, so that a killed writer's messages come back within
        // seconds: 300ms + 1s + 500ms < 3s.
        let mut options: BTreeMap<&str, &str> = BTreeMap::from([
            ("--ack-wait", "3s"),
            ("--max-batch-age", "300ms"),
            ("--write-timeout", "1s"),
            ("--flush-retry-max", "500ms"),
        ]);
        options.extend(flags.iter().copied());
        let urls = self.cluster.urls();
        let mut args = vec![
            "lake-writer",
            "--log",
            &urls,
            "--storage-addr",
            storage,
            "--http-addr",
            "127.0.0.1:0",
        ];
        for (name, value) in options {
            args.extend([name, value]);
        }
        VesperProcess::start(&args, env)
    }
}

/// A UUID-shaped event id, unique per prefix and number.
fn event_id(prefix: &str, n: usize) -> String {
    let tag: u32 = prefix
        .bytes()
        .fold(7, |acc, b| acc.wrapping_mul(31).wrapping_add(u32::from(b)));
    format!("{tag:08x}-0000-4000-8000-{n:012x}")
}

/// The lake line of an event of `hour`.
fn line(id: &str, hour: i64) -> Vec<u8> {
    let at = OffsetDateTime::from_unix_timestamp(hour * 3600 + 90)
        .expect("in range")
        .format(&Rfc3339)
        .expect("formatted");
    serde_json::to_vec(&json!({
        "event_id": id,
        "user_id": "user_7",
        "event_type": "click",
        "source": "web",
        "timestamp": at,
        "properties": {},
        "received_at": at,
    }))
    .expect("a JSON line")
}

async fn health(writer: &VesperProcess) -> Value {
    reqwest::get(format!("http://{}/health", writer.http_addr()))
        .await
        .expect("GET /health")
        .json()
        .await
        .expect("health JSON")
}

fn key(hour: i64, first: u64, last: u64) -> String {
    Partition::from_unix_hour(hour)
        .expect("in range")
        .object_key(first, last, fleet::DEFAULT_STREAM)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_cut_per_hour_and_named_by_their_stream_sequences() {
    let fleet = Fleet::start().await;
    let lake = tempfile::tempdir().expect("a lake");
    let storage = kit::spawn_storage(lake.path()).await;
    // Ten events of one hour, then five of the next: by count, the first
    // hour makes two objects, the second one.
    for n in 0..10 {
        fleet.publish(&event_id("cut", n), HOUR).await;
    }
    for n in 10..15 {
        fleet.publish(&event_id("cut", n), HOUR + 1).await;
    }
    let writer = fleet.writer(
        &storage.addr.to_string(),
        &[
            ("--batch-size", "5"),
            ("--max-batch-age", "1m"),
            ("--ack-wait", "2m"),
        ],
    );
    eventually("the stream to be written and acked", WAIT, async || {
        fleet.stream_messages().await == 0
    })
    .await;
    let objects = lake_records(lake.path(), "events");
    let keys: Vec<&String> = objects.keys().collect();
    assert_eq!(
        keys,
        [key(HOUR, 1, 5), key(HOUR, 6, 10), key(HOUR + 1, 11, 15)]
            .iter()
            .collect::<Vec<_>>()
    );
    for (key, records) in &objects {
        assert_eq!(records.len(), 5, "{key}");
    }
    let ids = lake_event_ids(lake.path());
    assert_eq!(ids.len(), 15);
    assert!(ids.values().all(|copies| *copies == 1), "{ids:?}");

    let health = health(&writer).await;
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["writer"]["objects_written"], 3, "{health}");
    assert_eq!(health["writer"]["acked_messages"], 15, "{health}");
    assert_eq!(health["consumer"]["pending"], 0, "{health}");
    assert_eq!(health["consumer"]["ack_pending"], 0, "{health}");
    let metrics = reqwest::get(format!("http://{}/metrics", writer.http_addr()))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    for series in [
        "vesper_ingest_objects_written_total 3",
        "vesper_ingest_writer_acked_messages_total 15",
        "vesper_ingest_writer_held_limit_bytes",
    ] {
        assert!(
            metrics.contains(series),
            "{series} missing from:\n{metrics}"
        );
    }
}

/// Storage that keeps writes but loses their confirmations while `lose`
/// is set: the writer sees a failure after the object is in the lake.
#[derive(Debug)]
struct LosesConfirmations {
    lake: FsStore,
    lose: Arc<AtomicBool>,
}

#[async_trait]
impl ObjectStore for LosesConfirmations {
    fn location(&self) -> String {
        self.lake.location()
    }

    async fn put(
        &self,
        key: &ObjectKey,
        body: Bytes,
        options: PutOptions,
    ) -> Result<ObjectMeta, StorageError> {
        let meta = self.lake.put(key, body, options).await?;
        if self.lose.load(Ordering::SeqCst) {
            return Err(StorageError::Unavailable {
                message: "the confirmation was lost".into(),
            });
        }
        Ok(meta)
    }

    async fn get(&self, key: &ObjectKey) -> Result<(ObjectMeta, Bytes), StorageError> {
        self.lake.get(key).await
    }

    async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta, StorageError> {
        self.lake.head(key).await
    }

    async fn list(
        &self,
        prefix: &str,
        token: Option<&str>,
        max_keys: u32,
    ) -> Result<ListPage, StorageError> {
        self.lake.list(prefix, token, max_keys).await
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        self.lake.delete(key).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_redelivered_after_its_writer_died_overwrites_the_same_object() {
    let fleet = Fleet::start().await;
    let lake = tempfile::tempdir().expect("a lake");
    let lose = Arc::new(AtomicBool::new(true));
    let store = LosesConfirmations {
        lake: FsStore::open(lake.path(), kit::MAX_OBJECT_SIZE)
            .await
            .expect("the lake"),
        lose: Arc::clone(&lose),
    };
    let storage = kit::spawn_storage_with(Arc::new(store)).await;
    let ids = fleet.publish_many("redelivered", 5, 1).await;
    let batch = [
        ("--batch-size", "5"),
        ("--max-batch-age", "5s"),
        ("--ack-wait", "8s"),
    ];

    // The first writer writes the object, never hears it was written, and
    // dies before it could ack.
    let mut first = fleet.writer(&storage.addr.to_string(), &batch);
    eventually(
        "the object to be in the lake, unconfirmed",
        WAIT,
        async || {
            lake_records(lake.path(), "events").contains_key(&key(HOUR, 1, 5))
                && health(&first).await["writer"]["failed_writes"]
                    .as_u64()
                    .is_some_and(|failures| failures >= 1)
        },
    )
    .await;
    first.kill();
    assert_eq!(
        fleet.consumer().await.ack_floor.stream_sequence,
        0,
        "nothing was acked"
    );

    // JetStream gives the five messages to the next writer once the ack
    // wait has passed; in sequence order they make the same batch, hence
    // the same key.
    lose.store(false, Ordering::SeqCst);
    let second = fleet.writer(&storage.addr.to_string(), &batch);
    eventually(
        "the redelivered batch to be written and acked",
        WAIT,
        async || fleet.stream_messages().await == 0,
    )
    .await;
    let objects = lake_records(lake.path(), "events");
    assert_eq!(objects.keys().collect::<Vec<_>>(), [&key(HOUR, 1, 5)]);
    let in_lake = lake_event_ids(lake.path());
    assert_eq!(in_lake.keys().cloned().collect::<Vec<_>>(), ids);
    assert!(in_lake.values().all(|copies| *copies == 1), "{in_lake:?}");
    let health = health(&second).await;
    assert_eq!(health["writer"]["redelivered_messages"], 5, "{health}");
    assert_eq!(health["writer"]["objects_written"], 1, "{health}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_killed_mid_batch_lose_nothing_and_copies_stay_within_the_bound() {
    const ROUNDS: usize = 4;
    const PER_ROUND: usize = 150;
    let fleet = Fleet::start().await;
    let lake = tempfile::tempdir().expect("a lake");
    let storage = kit::spawn_storage(lake.path()).await;
    let storage_addr = storage.addr.to_string();
    let flags = [("--batch-size", "40")];
    let mut writers = [
        fleet.writer(&storage_addr, &flags),
        fleet.writer(&storage_addr, &flags),
    ];
    let mut published = Vec::new();
    let mut kills = 0;
    for round in 0..ROUNDS {
        published.extend(
            fleet
                .publish_many(&format!("round{round}"), PER_ROUND, 3)
                .await,
        );
        // Kill a writer while it is in the middle of the stream: it has
        // written objects of this round and holds more.
        let victim = round % writers.len();
        let written_before = health(&writers[victim]).await["writer"]["objects_written"]
            .as_u64()
            .unwrap_or(0);
        eventually(
            "the victim to have written part of the round",
            WAIT,
            async || {
                let health = health(&writers[victim]).await;
                health["writer"]["objects_written"].as_u64().unwrap_or(0) > written_before
                    || fleet.stream_messages().await == 0
            },
        )
        .await;
        writers[victim].kill();
        kills += 1;
        writers[victim] = fleet.writer(&storage_addr, &flags);
    }
    eventually(
        "every message to be written and acked",
        Duration::from_secs(120),
        async || fleet.stream_messages().await == 0,
    )
    .await;
    for writer in &writers {
        writer.signal("TERM");
    }
    for writer in &mut writers {
        let status = writer
            .wait_exit(Duration::from_secs(30))
            .expect("the writer stops");
        assert!(status.success(), "{status:?}:\n{}", writer.log());
    }

    let in_lake = lake_event_ids(lake.path());
    let missing: Vec<&String> = published
        .iter()
        .filter(|id| !in_lake.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} events lost, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    assert_eq!(
        in_lake.len(),
        published.len(),
        "events in the lake that were never published"
    );
    let bound = 1 + kills;
    let over: BTreeMap<&String, &usize> = in_lake
        .iter()
        .filter(|(_, copies)| **copies > bound)
        .collect();
    assert!(
        over.is_empty(),
        "copies over the bound of {bound}: {over:?}"
    );
    let copies = in_lake.values().filter(|copies| **copies > 1).count();
    eprintln!(
        "{} events, {kills} writers killed, {copies} events with more than one copy",
        published.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_storage_is_down_nothing_is_acked_and_everything_lands_once_it_is_back() {
    let fleet = Fleet::start().await;
    let lake = tempfile::tempdir().expect("a lake");
    let storage_port = FreePort::new();
    let storage_addr = storage_port.addr().to_string();
    let writer = fleet.writer(&storage_addr, &[("--batch-size", "10")]);
    let ids = fleet.publish_many("outage", 30, 2).await;

    // Storage refuses connections: writes fail and are retried, nothing is
    // acked, and in-progress acks keep JetStream from handing the messages
    // around (no redelivery) while the outage lasts longer than the ack
    // wait.
    eventually("in-progress acks during the outage", WAIT, async || {
        let health = health(&writer).await;
        health["writer"]["failed_writes"].as_u64().unwrap_or(0) >= 1
            && health["writer"]["progress_acks"].as_u64().unwrap_or(0) >= 30
    })
    .await;
    let consumer = fleet.consumer().await;
    assert_eq!(consumer.ack_floor.stream_sequence, 0, "nothing was acked");
    assert_eq!(consumer.num_ack_pending, 30);
    assert_eq!(
        consumer.num_redelivered, 0,
        "a slow storage caused redeliveries"
    );
    assert_eq!(fleet.stream_messages().await, 30);
    assert!(lake_records(lake.path(), "events").is_empty());
    let health = health(&writer).await;
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["writer"]["storage_healthy"], false, "{health}");

    let store = FsStore::open(lake.path(), kit::MAX_OBJECT_SIZE)
        .await
        .expect("the lake");
    let _storage = kit::spawn_storage_on(storage_port, Arc::new(store));
    eventually(
        "the backlog to be written once storage is back",
        WAIT,
        async || fleet.stream_messages().await == 0,
    )
    .await;
    let in_lake = lake_event_ids(lake.path());
    assert_eq!(in_lake.len(), ids.len());
    assert!(
        ids.iter().all(|id| in_lake.get(id) == Some(&1)),
        "{in_lake:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_in_fleet_mode_writes_the_webhook_events_through_its_embedded_writer() {
    let fleet = Fleet::start().await;
    let dir = tempfile::tempdir().expect("a work dir");
    let lake = dir.path().join("lake");
    let wal = dir.path().join("wal");
    let urls = fleet.cluster.urls();
    let (lake_arg, wal_arg) = (lake.to_string_lossy(), wal.to_string_lossy());
    let mut up = VesperProcess::start(
        &[
            "up",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--lake",
            &lake_arg,
            "--wal-dir",
            &wal_arg,
            "--log",
            &urls,
            "--max-batch-age",
            "300ms",
            "--no-sample-data",
            "--no-pipelines",
        ],
        &[],
    );
    let now = OffsetDateTime::now_utc().format(&Rfc3339).expect("now");
    let ids: Vec<String> = (0..20).map(|n| event_id("up", n)).collect();
    let events: Vec<Value> = ids
        .iter()
        .map(|id| {
            json!({
                "event_id": id,
                "user_id": "user_7",
                "event_type": "click",
                "source": "web",
                "timestamp": now,
                "properties": {},
            })
        })
        .collect();
    let response = reqwest::Client::new()
        .post(format!("http://{}/webhook/events", up.http_addr()))
        .json(&json!({ "events": events }))
        .send()
        .await
        .expect("webhook call");
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    eventually(
        "the events in the lake, written by the embedded writer",
        WAIT,
        async || {
            let in_lake = lake_event_ids(&lake);
            ids.iter().all(|id| in_lake.contains_key(id))
        },
    )
    .await;
    assert!(
        lake_records(&lake, "events")
            .keys()
            .all(|key| key.ends_with(&format!("-{}.ndjson", fleet::DEFAULT_STREAM))),
        "objects not named by stream sequences: {:?}",
        lake_records(&lake, "events").keys().collect::<Vec<_>>()
    );
    up.signal("TERM");
    let status = up.wait_exit(Duration::from_secs(60)).expect("up stops");
    assert!(status.success(), "{status:?}:\n{}", up.log());
    eventually(
        "everything written to be acked",
        Duration::from_secs(10),
        async || fleet.stream_messages().await == 0,
    )
    .await;
    let in_lake = lake_event_ids(&lake);
    assert!(
        ids.iter().all(|id| in_lake.get(id) == Some(&1)),
        "{in_lake:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_write_is_a_span_linking_the_traces_of_the_calls_whose_events_it_carries() {
    const CALL_A: (&str, &str) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    const CALL_B: (&str, &str) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    let fleet = Fleet::start().await;
    let collector = OtlpCollector::start().await;
    let lake = tempfile::tempdir().expect("a lake");
    let storage = kit::spawn_storage(lake.path()).await;
    // Two events of call A and one of call B make one object.
    for (n, (trace, span)) in [CALL_A, CALL_A, CALL_B].into_iter().enumerate() {
        let traceparent = format!("00-{trace}-{span}-01");
        fleet
            .publish_traced(&event_id("traced", n), HOUR, &traceparent)
            .await;
    }
    let _writer = fleet.writer_with_env(
        &storage.addr.to_string(),
        &[
            ("--batch-size", "3"),
            ("--max-batch-age", "1m"),
            ("--ack-wait", "2m"),
        ],
        &collector.env(),
    );
    let key = key(HOUR, 1, 3);
    let spans = collector
        .wait_for(WAIT, |spans| {
            spans.iter().any(|span| span.name() == "ingest.flush")
                && spans
                    .iter()
                    .filter(|span| span.name() == "ingest.flushed")
                    .count()
                    == 2
        })
        .await;
    let flush = spans
        .iter()
        .find(|span| span.name() == "ingest.flush")
        .expect("the write's span");
    assert_eq!(flush.service, "vesper-lake-writer");
    assert_eq!(flush.attribute("key").as_deref(), Some(key.as_str()));
    assert_eq!(flush.attribute("events").as_deref(), Some("3"));
    assert_eq!(flush.parent_span_id(), "", "a write is a trace of its own");
    let mut links = flush.links();
    links.sort();
    let mut calls = vec![
        (CALL_A.0.to_owned(), CALL_A.1.to_owned()),
        (CALL_B.0.to_owned(), CALL_B.1.to_owned()),
    ];
    calls.sort();
    assert_eq!(links, calls, "the write links each call once");
    for (trace, span) in [CALL_A, CALL_B] {
        let landed = spans
            .iter()
            .find(|landed| landed.name() == "ingest.flushed" && landed.trace_id() == trace)
            .unwrap_or_else(|| panic!("no ingest.flushed span in the trace of call {trace}"));
        assert_eq!(landed.parent_span_id(), span);
        assert_eq!(landed.attribute("key").as_deref(), Some(key.as_str()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_writer_writes_and_acks_its_open_batches_before_it_exits() {
    let fleet = Fleet::start().await;
    let lake = tempfile::tempdir().expect("a lake");
    let storage = kit::spawn_storage(lake.path()).await;
    let mut writer = fleet.writer(
        &storage.addr.to_string(),
        &[("--max-batch-age", "10m"), ("--ack-wait", "11m")],
    );
    let ids = fleet.publish_many("stopped", 3, 2).await;
    eventually(
        "the writer to hold the events in open batches",
        WAIT,
        async || {
            let health = health(&writer).await;
            health["writer"]["held_messages"] == 3 && health["writer"]["open_partitions"] == 2
        },
    )
    .await;
    assert!(lake_records(lake.path(), "events").is_empty());
    writer.signal("TERM");
    let status = writer
        .wait_exit(Duration::from_secs(30))
        .expect("the writer stops");
    assert!(status.success(), "{status:?}:\n{}", writer.log());
    // The acks left before the exit; the stream applies them at once.
    eventually(
        "the acks of the last batches",
        Duration::from_secs(10),
        async || fleet.stream_messages().await == 0,
    )
    .await;
    let in_lake = lake_event_ids(lake.path());
    assert!(
        ids.iter().all(|id| in_lake.get(id) == Some(&1)),
        "{in_lake:?}"
    );
    assert_eq!(lake_records(lake.path(), "events").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_node_killed_while_writers_work_loses_nothing() {
    let mut fleet = Fleet::start().await;
    let lake = tempfile::tempdir().expect("a lake");
    let storage = kit::spawn_storage(lake.path()).await;
    let storage_addr = storage.addr.to_string();
    let writers = [
        fleet.writer(&storage_addr, &[("--batch-size", "25")]),
        fleet.writer(&storage_addr, &[("--batch-size", "25")]),
    ];
    let mut ids = fleet.publish_many("before", 100, 2).await;
    fleet.cluster.kill(0);
    // Publishes go on through the two nodes left (a publish that meets a
    // leader election is sent again with the same id: stored once).
    for n in 0..100 {
        let id = event_id("during", n);
        let mut tries = 0;
        loop {
            tries += 1;
            let mut headers = HeaderMap::new();
            headers.insert(fleet::MSG_ID_HEADER, id.as_str());
            let stored = async {
                fleet
                    .context
                    .publish_with_headers(
                        fleet.config.stream.subject_for_hour(HOUR),
                        headers,
                        Bytes::from(line(&id, HOUR)),
                    )
                    .await
                    .ok()?
                    .await
                    .ok()
            }
            .await;
            if stored.is_some() {
                break;
            }
            assert!(tries < 100, "the cluster took no publish of {id}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ids.push(id);
    }
    fleet.cluster.restart(0);
    eventually(
        "every message to be written and acked",
        Duration::from_secs(120),
        async || fleet.stream_messages().await == 0,
    )
    .await;
    drop(writers);
    let in_lake = lake_event_ids(lake.path());
    let missing: Vec<&String> = ids.iter().filter(|id| !in_lake.contains_key(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} events lost, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    // One failure (the node): at most one more copy of an event.
    assert!(in_lake.values().all(|copies| *copies <= 2), "{in_lake:?}");
}
