//! Faults, against a scripted server: what is retried succeeds, what is not
//! fails fast with the URL and the server's message, and a failed run
//! leaves no manifest behind.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{Lake, Reply, Server, items_page, items_pipeline, script};
use vesper::Shutdown;
use vesper_batch::{RunStatus, USER_AGENT};
use vesper_tests::eventually;

/// A one-page pipeline over the scripted server, with fast retries.
fn pipeline(server: &Server, extra: &str) -> String {
    items_pipeline(
        &server.base_url(),
        &format!(
            r#"timeout = "500ms"
            retry = {{ attempts = 4, initial_backoff = "10ms", max_backoff = "50ms" }}
            {extra}"#
        ),
    )
}

#[tokio::test]
async fn unavailable_answers_are_retried_until_success() {
    let server = script(vec![
        Reply::unavailable(),
        Reply::Json(502, json!({"error": "bad gateway"})),
        Reply::ok(items_page(&[1, 2])),
    ])
    .await;
    let lake = Lake::start().await;
    let report = lake.run_items(&pipeline(&server, "")).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    assert_eq!(report.retries, 2);
    assert_eq!(report.records, 2);
    assert_eq!(server.hits().len(), 3);
    assert!(
        server.hits().iter().all(|hit| hit.user_agent == USER_AGENT),
        "every request says who it is"
    );
    assert!(USER_AGENT.starts_with("vesper-batch/"));
    assert!(lake.latest("items/").await.is_some());
}

// Paused: the Retry-After wait runs on tokio's clock, and so do the times
// the server records, so the second needs no real waiting.
#[tokio::test(start_paused = true)]
async fn too_many_requests_waits_as_long_as_retry_after_says() {
    let server = script(vec![
        Reply::JsonWith(
            429,
            vec![("retry-after", "1".into())],
            json!({"error": "slow down"}),
        ),
        Reply::ok(items_page(&[1])),
    ])
    .await;
    let lake = Lake::start().await;
    let report = lake.run_items(&pipeline(&server, "")).await;
    assert!(report.succeeded(), "{:?}", report.error);
    assert_eq!(report.retries, 1);
    let hits = server.hits();
    let waited = hits[1].at - hits[0].at;
    // The backoff alone is at most 50 ms here; only Retry-After explains a
    // second.
    assert!(waited >= Duration::from_secs(1), "retried after {waited:?}");
}

#[tokio::test]
async fn a_retry_after_longer_than_the_policy_allows_ends_the_run() {
    let server = script(vec![Reply::JsonWith(
        503,
        vec![("retry-after", "3600".into())],
        json!({"error": "maintenance"}),
    )])
    .await;
    let lake = Lake::start().await;
    let report = lake.run_items(&pipeline(&server, "")).await;
    assert_eq!(report.status, RunStatus::Failed);
    let error = report.error.expect("an error");
    assert!(error.contains("retry after 1h"), "{error}");
    assert!(error.contains("max_retry_after (1m)"), "{error}");
    assert_eq!(server.hits().len(), 1);
    lake.assert_nothing_published("items/").await;
}

// Paused: the timeout and the stall run on tokio's clock, which skips ahead
// whenever every task waits on it.
#[tokio::test(start_paused = true)]
async fn a_stall_past_the_timeout_is_retried() {
    let server = script(vec![
        Reply::stall(Duration::from_secs(10), Reply::ok(items_page(&[9]))),
        Reply::ok(items_page(&[1])),
    ])
    .await;
    let lake = Lake::start().await;
    let started = tokio::time::Instant::now();
    let report = lake.run_items(&pipeline(&server, "")).await;
    assert!(report.succeeded(), "{:?}", report.error);
    assert_eq!(report.retries, 1);
    let manifest = lake.latest("items/").await.expect("manifest");
    assert_eq!(lake.records(&manifest).await[0]["id"], 1);
    // On the paused clock, waiting out the stall would take its 10 s.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the stall was cut short"
    );
    assert!(
        report.duration < Duration::from_secs(10),
        "the stall was cut short"
    );
}

#[tokio::test]
async fn a_bad_request_fails_at_once_with_the_url_and_the_message() {
    let server = script(vec![Reply::Json(400, json!({"error": "Invalid offset"}))]).await;
    let lake = Lake::start().await;
    let report = lake
        .run_items(&pipeline(
            &server,
            r#"pagination = { type = "offset", limit = 10 }"#,
        ))
        .await;
    assert_eq!(report.status, RunStatus::Failed);
    let expected = format!(
        "GET http://{}/items?offset=0&limit=10: 400 Bad Request: Invalid offset",
        server.addr
    );
    assert_eq!(report.error.as_deref(), Some(expected.as_str()));
    assert_eq!(report.retries, 0);
    assert_eq!(server.hits().len(), 1, "no retry");
    lake.assert_nothing_published("items/").await;
}

#[tokio::test]
async fn a_malformed_json_page_fails_with_the_url_and_the_position() {
    let server = script(vec![
        Reply::ok(json!({"items": [{"id": 1}], "next": "/items?page=2"})),
        Reply::Raw(200, "{\"items\": [{\"id\": 2},\n  {\"id\": }]}"),
    ])
    .await;
    let lake = Lake::start().await;
    let report = lake
        .run_items(&pipeline(
            &server,
            r#"pagination = { type = "next_link", next_url = "next" }
               parts = { max_records = 1 }"#,
        ))
        .await;
    assert_eq!(report.status, RunStatus::Failed);
    let error = report.error.expect("an error");
    assert!(
        error.starts_with(&format!("GET http://{}/items?page=2: ", server.addr)),
        "{error}"
    );
    assert!(error.contains("not valid JSON"), "{error}");
    assert!(error.contains("line 2 column 10"), "{error}");
    assert_eq!(
        server.hits().len(),
        2,
        "a complete but malformed body is not retried"
    );
    assert_eq!(report.pages, 1);
    lake.assert_nothing_published("items/").await;
}

#[tokio::test]
async fn exhausted_retries_fail_the_run_and_the_previous_snapshot_stays_latest() {
    let server = script(vec![
        // The first run succeeds.
        Reply::ok(json!({"items": [{"id": 1}], "next": "/items?page=2"})),
        Reply::ok(json!({"items": [{"id": 2}]})),
        // The second gets a page, then only 503s.
        Reply::ok(json!({"items": [{"id": 3}], "next": "/items?page=2"})),
        Reply::unavailable(),
        Reply::unavailable(),
        Reply::unavailable(),
        Reply::unavailable(),
    ])
    .await;
    let lake = Lake::start().await;
    let pipelines = pipeline(
        &server,
        r#"pagination = { type = "next_link", next_url = "next" }
           parts = { max_records = 1 }"#,
    );
    let first = lake.run_items(&pipelines).await;
    assert!(first.succeeded(), "{:?}", first.error);
    let second = lake.run_items(&pipelines).await;
    assert_eq!(second.status, RunStatus::Failed);
    assert!(second.run_id > first.run_id, "run ids sort by time");
    let error = second.error.expect("an error");
    assert_eq!(
        error,
        format!(
            "GET http://{}/items?page=2: gave up after 4 attempts; last: 503 Service Unavailable: Service temporarily unavailable",
            server.addr
        )
    );
    assert_eq!(second.retries, 3);
    assert_eq!(second.manifest_key, None);
    assert_eq!(second.parts, []);

    let latest = lake.latest("items/").await.expect("the first run");
    assert_eq!(latest.run_id, first.run_id.to_string());
    assert_eq!(lake.manifests("items/").await.len(), 1);
    let keys = lake.keys("items/").await;
    assert!(
        keys.iter()
            .all(|key| key.contains(&first.run_id.to_string())),
        "nothing of the failed run is left: {keys:?}"
    );
}

#[tokio::test]
async fn shutdown_stops_a_run_without_publishing() {
    let server = script(vec![
        Reply::ok(json!({"items": [{"id": 1}], "next": "/items?page=2"})),
        Reply::stall(Duration::from_secs(30), Reply::ok(items_page(&[2]))),
    ])
    .await;
    let lake = Lake::start().await;
    let engine = lake.engine(&format!(
        r#"
        base_url = "{}"
        [pipelines.items]
        records = "items"
        timeout = "60s"
        pagination = {{ type = "next_link", next_url = "next" }}
        parts = {{ max_records = 1 }}
        "#,
        server.base_url()
    ));
    let shutdown = Shutdown::new();
    // Shut down once the run waits on the stalled second page.
    let shut_down_while_stalled = async {
        eventually(
            "the request for the stalled second page",
            Duration::from_secs(10),
            async || server.hits().len() == 2,
        )
        .await;
        shutdown.trigger();
    };
    let (reports, ()) = tokio::join!(engine.run(&["items"], &shutdown), shut_down_while_stalled);
    let report = reports.expect("known").remove(0);
    assert_eq!(report.status, RunStatus::Failed);
    assert_eq!(
        report.error.as_deref(),
        Some("stopped by shutdown before the run finished")
    );
    assert!(report.duration < Duration::from_secs(30));
    lake.assert_nothing_published("items/").await;
}
