//! The event stream on a real 3-node NATS JetStream cluster: created with
//! the fleet's settings when missing, accepted when it matches, and
//! refused, every difference named, when it exists with other settings.

use std::time::Duration;

use async_nats::jetstream::stream::{Config, DiscardPolicy, RetentionPolicy, StorageType};
use vesper_ingest::{
    IngestError,
    fleet::{self, FleetConfig, stream},
};
use vesper_tests::NatsCluster;

async fn context(cluster: &NatsCluster) -> (FleetConfig, async_nats::jetstream::Context) {
    let config = FleetConfig::new(&cluster.urls()).expect("fleet config");
    let client = fleet::connect(&config, "fleet-stream-test")
        .await
        .expect("connect");
    let context = fleet::jetstream(client, &config);
    (config, context)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_stream_is_created_and_a_matching_one_accepted() {
    let cluster = NatsCluster::start(3);
    let (config, context) = context(&cluster).await;
    let info = stream::ensure_stream_within(&context, &config.stream, Duration::from_secs(30))
        .await
        .expect("created");
    assert_eq!(info.config.retention, RetentionPolicy::WorkQueue);
    assert_eq!(info.config.num_replicas, 3);
    assert_eq!(info.config.subjects, ["vesper.events.>"]);
    // A second member starting with the same flags finds it as it wants it.
    let again = stream::ensure_stream(&context, &config.stream)
        .await
        .expect("accepted");
    assert_eq!(again.config.name, info.config.name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_stream_with_other_settings_is_refused_naming_every_difference() {
    let cluster = NatsCluster::start(3);
    let (config, context) = context(&cluster).await;
    context
        .create_stream(Config {
            name: config.stream.name.clone(),
            subjects: vec!["elsewhere.>".into()],
            retention: RetentionPolicy::Limits,
            discard: DiscardPolicy::Old,
            max_bytes: 1024 * 1024,
            max_age: Duration::from_secs(3600),
            duplicate_window: Duration::from_secs(10),
            num_replicas: 1,
            storage: StorageType::Memory,
            ..Config::default()
        })
        .await
        .expect("a stream of other settings");
    let err = stream::ensure_stream_within(&context, &config.stream, Duration::from_secs(30))
        .await
        .expect_err("refused");
    let IngestError::StreamMismatch { stream, mismatches } = &err else {
        panic!("expected a mismatch, got {err}");
    };
    assert_eq!(stream, "VESPER_EVENTS");
    let text = err.to_string();
    for setting in [
        "retention is Limits, expected WorkQueue",
        "discard is Old, expected New",
        "subjects (--subject-prefix) is [\"elsewhere.>\"], expected [\"vesper.events.>\"]",
        "replicas (--stream-replicas) is 1, expected 3",
        "max_bytes (--stream-max-bytes) is 1048576, expected 1073741824",
        "max_age is 3600s, expected 0ns",
        "duplicate_window (--duplicate-window) is 10s, expected 60s",
        "storage is Memory, expected File",
    ] {
        assert!(text.contains(setting), "{setting:?} not in: {text}");
    }
    assert_eq!(mismatches.len(), 8, "{text}");
    // The refused stream was left as it was.
    let info = context
        .get_stream(&config.stream.name)
        .await
        .expect("still there")
        .cached_info()
        .clone();
    assert_eq!(info.config.retention, RetentionPolicy::Limits);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cluster_is_named_within_the_start_timeout() {
    let mut cluster = NatsCluster::start(1);
    let urls = cluster.urls();
    cluster.kill_all();
    let mut config = FleetConfig::new(&urls).expect("fleet config");
    config.request_timeout = Duration::from_millis(300);
    config.connect_timeout = Duration::from_millis(300);
    let client = fleet::connect(&config, "fleet-stream-test")
        .await
        .expect("connects in the background");
    let context = fleet::jetstream(client, &config);
    let err = stream::ensure_stream_within(&context, &config.stream, Duration::from_secs(2))
        .await
        .expect_err("nothing answers");
    let text = err.to_string();
    assert!(matches!(err, IngestError::LogUnavailable { .. }), "{text}");
    assert!(text.contains("--log-start-timeout"), "{text}");
    assert!(text.contains("VESPER_EVENTS"), "{text}");
}
