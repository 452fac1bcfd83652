//! Credentials in the source URL: sent to the API, shown nowhere (not in
//! the lake, the reports or the logs). A test binary of its own, because it
//! captures every log line of the process.

mod support;

use serde_json::json;
use support::{CapturedLogs, Lake, Reply, every_file, run_items, script};
use vesper_batch::{Pipelines, RunStatus};

const PASSWORD: &str = "hunter2-secret";
/// base64("alice:hunter2-secret")
const BASIC: &str = "Basic YWxpY2U6aHVudGVyMi1zZWNyZXQ=";

fn assert_no_secret(place: &str, text: &str) {
    for secret in [PASSWORD, "YWxpY2U6aHVudGVyMi1zZWNyZXQ", "q-secret"] {
        assert!(!text.contains(secret), "{place} shows a secret:\n{text}");
    }
}

#[tokio::test]
async fn credentials_in_the_source_url_are_sent_but_never_shown() {
    let logs = CapturedLogs::install();
    let server = script(vec![
        Reply::ok(json!({"items": [{"id": 1}], "next": "/items?page=2"})),
        Reply::ok(json!({"items": [{"id": 2}]})),
        // The second run: its second page fails.
        Reply::ok(json!({"items": [{"id": 1}], "next": "/items?page=2"})),
        Reply::Json(404, json!({"error": "no such page"})),
    ])
    .await;
    let lake = Lake::start().await;
    let text = format!(
        r#"
        base_url = "http://alice:{PASSWORD}@{}/"
        [pipelines.items]
        path = "items"
        records = "items"
        query = {{ api_key = "q-secret" }}
        pagination = {{ type = "next_link", next_url = "next" }}
        "#,
        server.addr
    );
    let pipelines = Pipelines::from_toml(&text, "test pipelines").expect("valid");
    assert_no_secret("the pipelines' Debug", &format!("{pipelines:?}"));
    assert_eq!(
        pipelines.get("items").expect("items").display_url(),
        format!("http://{}/items?api_key=***", server.addr)
    );
    let engine = lake.engine_for(pipelines);

    let report = run_items(&engine).await;
    assert!(report.succeeded(), "{:?}", report.error);
    let hits = server.hits();
    assert_eq!(hits.len(), 2);
    for hit in &hits {
        assert_eq!(hit.header("authorization"), Some(BASIC), "{}", hit.uri);
    }
    assert_eq!(hits[0].uri, "/items?api_key=q-secret", "sent as declared");
    assert_no_secret("the report", &format!("{report:?}"));
    let manifest = lake.latest("items/").await.expect("a manifest");
    assert_eq!(
        manifest.source_url,
        format!("http://{}/items?api_key=***", server.addr)
    );
    let records = lake.records(&manifest).await;
    assert_eq!(
        records[0]["_source_url"],
        format!("http://{}/items?api_key=***", server.addr)
    );
    let files = every_file(lake.dir.path());
    assert!(files.len() >= 2, "the part and the manifest: {files:?}");
    for (path, bytes) in &files {
        assert_no_secret(&path.display().to_string(), &String::from_utf8_lossy(bytes));
    }

    let failed = run_items(&engine).await;
    assert_eq!(failed.status, RunStatus::Failed);
    let error = failed.error.clone().expect("an error");
    assert_eq!(
        error,
        format!(
            "GET http://{}/items?page=2: 404 Not Found: no such page",
            server.addr
        )
    );
    assert_no_secret("the failed report", &format!("{failed:?}"));

    let logs = logs.text();
    assert!(
        logs.contains("items: run") && logs.contains("404 Not Found"),
        "the runs were logged:\n{logs}"
    );
    assert_no_secret("the logs", &logs);
}
