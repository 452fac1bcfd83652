//! Fleet mode's edges with the rest of ingest: a member that ran on one
//! machine hands the events left in its write-ahead log to the lake before
//! it joins the fleet, and Flush waits for the lake writers (bounded).

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use async_nats::jetstream::consumer::{AckPolicy, pull};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use vesper::v1::Event;
use vesper_ingest::{
    IngestConfig, IngestEngine, IngestError,
    fleet::{self, FleetConfig, publish::PublishArgs},
};
use vesper_storage::{
    FsStore, ListPage, ObjectKey, ObjectMeta, ObjectStore, PutOptions, StorageError,
};
use vesper_tests::{NatsCluster, event_id, eventually, lake_event_ids, upstream_event};

/// A directory lake that can be switched off.
#[derive(Debug)]
struct SwitchableLake {
    inner: FsStore,
    down: AtomicBool,
}

#[async_trait]
impl ObjectStore for SwitchableLake {
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

async fn lake(root: &Path, down: bool) -> Arc<SwitchableLake> {
    let inner = FsStore::open(root, vesper_storage::DEFAULT_MAX_OBJECT_SIZE.bytes())
        .await
        .expect("lake");
    Arc::new(SwitchableLake {
        inner,
        down: AtomicBool::new(down),
    })
}

/// Event `n` of `series`; every tenth a signup.
fn events(series: u32, range: std::ops::Range<u32>) -> Vec<Event> {
    range
        .map(|n| {
            let event_type = if n % 10 == 9 { "signup" } else { "click" };
            let value = upstream_event(
                &event_id(series, n),
                event_type,
                &format!("2026-12-01T{:02}:00:00Z", n % 3),
            );
            vesper::wire::decode_webhook(&serde_json::json!({ "events": [value] }))
                .expect("a valid event")
                .remove(0)
        })
        .collect()
}

/// Fleet settings for a one-node cluster.
fn single_node(cluster: &NatsCluster) -> FleetConfig {
    let mut fleet = FleetConfig::new(&cluster.urls()).expect("fleet config");
    fleet.stream.replicas = 1;
    fleet
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_left_in_a_local_log_reach_the_lake_before_the_member_joins_the_fleet() {
    let cluster = NatsCluster::start(1);
    let dir = tempfile::tempdir().expect("dir");
    let wal_dir = dir.path().join("wal");
    let lake_dir = dir.path().join("lake");
    let config = IngestConfig {
        max_batch_age: Duration::from_secs(3600),
        retry_initial: Duration::from_millis(20),
        retry_max: Duration::from_millis(100),
        ..IngestConfig::new(&wal_dir)
    };

    // One machine, storage down: the events stay in the log at shutdown.
    let storage = lake(&lake_dir, true).await;
    let single = IngestEngine::start(config.clone(), storage.clone())
        .await
        .expect("single node");
    let outcome = single.ingest(events(7, 0..30)).await.expect("logged");
    assert_eq!(outcome.accepted, 27);
    single.shutdown().await;
    assert_eq!(single.stats().buffered_events, 27);

    // Fleet mode will not start over them while storage is down, and says
    // where they are.
    let err = IngestEngine::start_fleet(
        config.clone(),
        single_node(&cluster),
        PublishArgs::default(),
        storage.clone(),
    )
    .await
    .expect_err("the log cannot be emptied");
    let text = err.to_string();
    assert!(text.contains(&wal_dir.display().to_string()), "{text}");
    assert!(text.contains("27 events"), "{text}");
    assert!(lake_event_ids(&lake_dir).is_empty());

    // With storage back they are written (once each), then fleet mode runs.
    storage.down.store(false, Ordering::SeqCst);
    let engine = IngestEngine::start_fleet(
        config,
        single_node(&cluster),
        PublishArgs::default(),
        storage,
    )
    .await
    .expect("fleet mode after the handover");
    let in_lake = lake_event_ids(&lake_dir);
    assert_eq!(in_lake.len(), 27, "{in_lake:?}");
    assert!(in_lake.values().all(|copies| *copies == 1), "{in_lake:?}");
    assert!(engine.is_fleet());
    let outcome = engine.ingest(events(8, 0..10)).await.expect("fleet ingest");
    assert_eq!(outcome.accepted, 9);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_waits_for_the_lake_writers_within_its_bound() {
    let cluster = NatsCluster::start(1);
    let dir = tempfile::tempdir().expect("dir");
    let start = |flush_timeout: Duration| {
        let fleet = single_node(&cluster);
        let wal = dir
            .path()
            .join(format!("wal-{}", flush_timeout.as_millis()));
        let lake_dir = dir.path().join("lake");
        async move {
            IngestEngine::start_fleet(
                IngestConfig::new(wal),
                fleet,
                PublishArgs {
                    flush_timeout,
                    ..PublishArgs::default()
                },
                lake(&lake_dir, false).await,
            )
            .await
            .expect("fleet engine")
        }
    };
    let impatient = start(Duration::from_millis(500)).await;
    let patient = start(Duration::from_secs(30)).await;
    patient.ingest(events(9, 0..20)).await.expect("published");

    // No writer: the bound is named.
    let err = impatient
        .flush()
        .await
        .expect_err("nobody takes the events");
    let IngestError::FlushTimeout {
        stream, remaining, ..
    } = &err
    else {
        panic!("expected a flush timeout, got {err}");
    };
    assert_eq!((stream.as_str(), *remaining), (fleet::DEFAULT_STREAM, 18));
    assert!(err.to_string().contains("--flush-timeout"), "{err}");

    // A writer's consumer: Stats show its lag, and a Flush returns once it
    // has acknowledged everything.
    let config = single_node(&cluster);
    let client = fleet::connect(&config, "writer").await.expect("connect");
    let context = fleet::jetstream(client, &config);
    let consumer = context
        .get_stream(fleet::DEFAULT_STREAM)
        .await
        .expect("stream")
        .create_consumer(pull::Config {
            durable_name: Some(fleet::DEFAULT_CONSUMER.into()),
            ack_policy: AckPolicy::Explicit,
            ..pull::Config::default()
        })
        .await
        .expect("consumer");
    eventually(
        "the writers' lag in Stats",
        Duration::from_secs(10),
        async || {
            let stats = patient.stats();
            stats.consumer_pending == 18 && stats.stream_messages == 18
        },
    )
    .await;
    let mut messages = consumer
        .batch()
        .max_messages(18)
        .expires(Duration::from_secs(10))
        .messages()
        .await
        .expect("a batch");
    let mut taken = Vec::new();
    while let Some(message) = messages.next().await {
        taken.push(message.expect("a message"));
    }
    assert_eq!(taken.len(), 18);
    // Handed to a writer is not in the lake: Flush still waits.
    let err = impatient.flush().await.expect_err("not acknowledged yet");
    assert!(matches!(err, IngestError::FlushTimeout { .. }), "{err}");
    for message in taken {
        message.double_ack().await.expect("acknowledged");
    }
    let flushed = patient.flush().await.expect("flush");
    assert!(flushed.keys.is_empty());
    eventually(
        "an empty stream in Stats",
        Duration::from_secs(10),
        async || {
            let stats = patient.stats();
            stats.stream_messages == 0 && stats.consumer_ack_pending == 0
        },
    )
    .await;
    impatient.shutdown().await;
    patient.shutdown().await;
}

/// The publish is a span of the call, and each message carries its W3C
/// trace context, so the lake writer can link its write to the call.
#[tokio::test(flavor = "current_thread")]
async fn each_message_carries_the_trace_context_of_its_call() {
    use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
    use tracing::Instrument;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    use tracing_subscriber::layer::SubscriberExt;

    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    // The runtime has one thread: every span of the call is recorded here.
    let _recording = tracing::subscriber::set_default(subscriber);

    let cluster = NatsCluster::start(1);
    let dir = tempfile::tempdir().expect("dir");
    let engine = IngestEngine::start_fleet(
        IngestConfig::new(dir.path().join("wal")),
        single_node(&cluster),
        PublishArgs::default(),
        lake(&dir.path().join("lake"), false).await,
    )
    .await
    .expect("fleet engine");
    let call = tracing::info_span!("call");
    let trace_id = call.context().span().span_context().trace_id().to_string();
    assert_ne!(trace_id, "00000000000000000000000000000000");
    engine
        .ingest(events(10, 0..3))
        .instrument(call)
        .await
        .expect("published");

    let config = single_node(&cluster);
    let client = fleet::connect(&config, "observer").await.expect("connect");
    let stream = fleet::jetstream(client, &config)
        .get_stream(fleet::DEFAULT_STREAM)
        .await
        .expect("stream");
    for sequence in 1..=3 {
        let message = stream.get_raw_message(sequence).await.expect("a message");
        let traceparent = message
            .headers
            .get(fleet::TRACEPARENT_HEADER)
            .expect("a traceparent header")
            .to_string();
        assert!(
            traceparent.contains(&trace_id),
            "{traceparent} is not of trace {trace_id}"
        );
    }
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_bound_over_the_servers_max_payload_is_refused_at_start() {
    let cluster = NatsCluster::start(1);
    let dir = tempfile::tempdir().expect("dir");
    let err = IngestEngine::start_fleet(
        IngestConfig {
            max_event_bytes: 2 * 1024 * 1024,
            ..IngestConfig::new(dir.path().join("wal"))
        },
        single_node(&cluster),
        PublishArgs::default(),
        lake(&dir.path().join("lake"), false).await,
    )
    .await
    .expect_err("a 2 MiB event cannot be a NATS message of 1 MiB");
    let text = err.to_string();
    assert!(
        text.contains("--max-event-bytes") && text.contains("max_payload (1048576)"),
        "{text}"
    );
}
