//! The built-in pipelines end to end against a replica of the old data
//! server's REST API (its paging, its shapes, its faults), into a
//! directory lake.

mod support;

use std::collections::HashSet;

use serde_json::Value;
use support::Lake;
use vesper::Shutdown;
use vesper_batch::{Pipelines, RunReport};
use vesper_tests::{CONTENT_ITEMS, EventFaults, USERS, UpstreamReplica};

async fn run_builtin(lake: &Lake, upstream: &UpstreamReplica, name: &str) -> RunReport {
    let pipelines = Pipelines::builtin()
        .expect("built-in pipelines")
        .with_source_url(&upstream.base_url())
        .expect("the replica's URL");
    let report = lake
        .engine_for(pipelines)
        .run(&[name], &Shutdown::new())
        .await
        .expect("a built-in pipeline")
        .remove(0);
    assert!(report.succeeded(), "{name}: {:?}", report.error);
    report
}

fn field<'a>(records: &'a [Value], name: &str) -> Vec<&'a str> {
    records
        .iter()
        .map(|record| record[name].as_str().expect("a string field"))
        .collect()
}

#[tokio::test]
async fn users_lands_every_user_once_in_one_manifested_run() {
    let upstream = UpstreamReplica::start();
    let lake = Lake::start().await;
    let report = run_builtin(&lake, &upstream, "users").await;
    assert_eq!(report.records, USERS);
    assert_eq!(report.pages, 50);
    assert_eq!(
        upstream.calls("/api/users"),
        50,
        "no request past the total"
    );
    assert_eq!(report.retries, 0);

    let manifests = lake.manifests("users/").await;
    assert_eq!(manifests.len(), 1);
    let manifest = &manifests[0];
    assert_eq!(manifest.records, USERS);
    assert_eq!(manifest.parts.len(), 2, "parts of 5,000");
    assert_eq!(
        manifest.source_url,
        format!("{}users?offset=0&limit=200", upstream.base_url())
    );
    let records = lake.records(manifest).await;
    let ids: HashSet<&str> = field(&records, "user_id").into_iter().collect();
    assert_eq!(ids.len() as u64, USERS, "10,000 unique user_ids");
    let expected: HashSet<String> = (1..=USERS).map(|n| format!("user_{n}")).collect();
    assert!(ids.iter().all(|id| expected.contains(*id)));

    // The upstream's fields as they came, then the run metadata.
    let first = records[0].as_object().expect("an object");
    let fields: Vec<_> = first.keys().map(String::as_str).collect();
    assert_eq!(
        fields,
        [
            "user_id",
            "age",
            "status",
            "country",
            "created_at",
            "_extracted_at",
            "_run_id",
            "_source_url"
        ]
    );
    assert_eq!(first["user_id"], "user_1");
    assert_eq!(first["_run_id"], report.run_id.to_string());
    assert_eq!(
        records[9_999]["_source_url"],
        format!("{}users?offset=9800&limit=200", upstream.base_url())
    );
}

#[tokio::test]
async fn content_lands_every_item_in_one_page() {
    let upstream = UpstreamReplica::start();
    let lake = Lake::start().await;
    let report = run_builtin(&lake, &upstream, "content").await;
    assert_eq!(report.records, CONTENT_ITEMS);
    assert_eq!(report.pages, 1);
    let manifest = lake.latest("content/").await.expect("a manifested run");
    let records = lake.records(&manifest).await;
    let ids: HashSet<&str> = field(&records, "content_id").into_iter().collect();
    assert_eq!(ids.len() as u64, CONTENT_ITEMS);
    assert_eq!(
        records[0]
            .as_object()
            .expect("object")
            .keys()
            .take(4)
            .collect::<Vec<_>>(),
        ["content_id", "media_type", "prayer_type", "created_at"]
    );
}

#[tokio::test]
async fn events_complete_despite_unavailable_answers_and_stalls() {
    // The upstream's rates on a fixed schedule: call 1 answers 503, call 3
    // stalls 10 s, which the built-in 3 s timeout cuts short.
    let upstream = UpstreamReplica::with_faults(EventFaults::default());
    let lake = Lake::start().await;
    let report = run_builtin(&lake, &upstream, "events").await;
    assert_eq!(
        report.pages, 10,
        "has_more is always true: the stop rule ends it"
    );
    assert_eq!(report.stop_reason.as_deref(), Some("max_pages 10"));
    assert!(
        report.retries >= 2,
        "a 503 and a stall were retried: {}",
        report.retries
    );
    assert_eq!(upstream.calls("/api/events"), 10 + report.retries);
    assert!(
        report.records >= 2_000,
        "200 events a page, duplicates kept"
    );

    let manifest = lake.latest("api_events/").await.expect("a manifested run");
    assert!(
        lake.keys("events/").await.is_empty(),
        "never under the webhook's prefix"
    );
    let records = lake.records(&manifest).await;
    assert_eq!(records.len() as u64, report.records);
    let event = records[0].as_object().expect("an object");
    let fields: Vec<_> = event.keys().map(String::as_str).take(6).collect();
    assert_eq!(
        fields,
        [
            "event_id",
            "user_id",
            "event_type",
            "source",
            "timestamp",
            "properties"
        ]
    );
    assert!(
        event["user_id"]["user_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("user_")),
        "the upstream's nested user object is kept as it came: {}",
        event["user_id"]
    );
    let unique: HashSet<&str> = field(&records, "event_id").into_iter().collect();
    assert!(
        unique.len() < records.len(),
        "the upstream's duplicates are kept for analytics to drop"
    );
}

#[tokio::test]
async fn the_readme_hook_stores_the_user_id_as_a_string_and_keeps_the_snapshot() {
    let upstream = UpstreamReplica::with_faults(EventFaults::NONE);
    let lake = Lake::start().await;
    let pipelines = Pipelines::builtin()
        .expect("built-in pipelines")
        .with_source_url(&upstream.base_url())
        .expect("the replica's URL");
    let engine = lake
        .engine_for(pipelines)
        .with_hook("events", |mut event| {
            // Keep the user snapshot, store the id as a string.
            let user = event.shift_remove("user_id")?;
            event.insert("user_id".into(), user["user_id"].clone());
            event.insert("user".into(), user);
            Some(event)
        })
        .expect("events is declared");
    let report = engine
        .run(&["events"], &Shutdown::new())
        .await
        .expect("run")
        .remove(0);
    assert!(report.succeeded(), "{:?}", report.error);
    let manifest = lake.latest("api_events/").await.expect("manifest");
    for event in lake.records(&manifest).await {
        assert!(
            event["user_id"]
                .as_str()
                .is_some_and(|id| id.starts_with("user_")),
            "{event}"
        );
        assert_eq!(event["user"]["user_id"], event["user_id"]);
    }
}
