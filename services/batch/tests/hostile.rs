//! Hostile or broken upstreams, against real local servers: a count that
//! would plan a billion pages, cursors and links that go round in a loop,
//! bodies that never end, redirects to another server, and credentials in
//! the source URL. Each ends the run with an error naming the limit or the
//! field, publishes nothing, and leaks no secret.

mod support;

use serde_json::json;
use support::{Lake, PagedApi, Reply, Server, items_page, items_pipeline, run_items, script};
use vesper_batch::{Pipelines, RunLimits};

/// A pipeline `items` over `base_url`, with fast retries and `extra`.
fn pipeline_at(base_url: &str, extra: &str) -> String {
    items_pipeline(
        base_url,
        &format!(
            r#"timeout = "5s"
            retry = {{ attempts = 3, initial_backoff = "10ms", max_backoff = "20ms" }}
            {extra}"#
        ),
    )
}

fn pipeline(server: &Server, extra: &str) -> String {
    pipeline_at(&server.base_url(), extra)
}

/// Runs `items` with `settings` over a server scripted with `replies`,
/// asserts that the run failed and published nothing, and returns the
/// server and the error.
async fn fails_over(replies: Vec<Reply>, settings: &str) -> (Server, String) {
    let server = script(replies).await;
    let lake = Lake::start().await;
    let report = lake.run_items(&pipeline(&server, settings)).await;
    let error = lake.assert_failed_without_publishing(&report).await;
    (server, error)
}

// ------------------------------------------------------------ page counts

#[tokio::test]
async fn a_huge_total_fails_the_run_before_its_pages_are_planned() {
    let (server, error) = fails_over(
        vec![Reply::ok(json!({
            "items": (1..=10).map(|id| json!({"id": id})).collect::<Vec<_>>(),
            "total": 9_000_000_000_000_000_000u64,
        }))],
        r#"pagination = { type = "offset", limit = 10, total = "total" }"#,
    )
    .await;
    assert_eq!(
        error,
        format!(
            "GET http://{}/items?offset=0&limit=10: total 9000000000000000000 on page 1 means 900000000000000000 pages, over the run's page limit of 100000 (limits.max_pages); the run would not fetch everything, so it fails instead: raise limits.max_pages (--max-run-pages), or set stop.max_pages or stop.max_records to take only part",
            server.addr
        )
    );
    assert_eq!(server.hits().len(), 1, "nothing past the first page");
}

#[tokio::test]
async fn a_huge_page_count_fails_the_run_against_the_engines_limit() {
    let server = script(vec![Reply::ok(json!({
        "items": [{"id": 1}],
        "pages": 500,
    }))])
    .await;
    let lake = Lake::start().await;
    let engine = lake
        .engine(&pipeline(
            &server,
            r#"pagination = { type = "page_number", total_pages = "pages" }"#,
        ))
        .with_limits(RunLimits {
            max_pages: 100,
            ..RunLimits::default()
        })
        .expect("valid limits");
    let report = run_items(&engine).await;
    let error = lake.assert_failed_without_publishing(&report).await;
    assert!(
        error.contains("pages 500 on page 1 means 500 pages, over the run's page limit of 100 (limits.max_pages)"),
        "{error}"
    );
    assert_eq!(server.hits().len(), 1);
}

#[tokio::test]
async fn a_negative_total_is_refused_with_the_field_named() {
    let (_server, error) = fails_over(
        vec![Reply::ok(json!({
            "items": (1..=10).map(|id| json!({"id": id})).collect::<Vec<_>>(),
            "total": -3,
        }))],
        r#"pagination = { type = "offset", limit = 10, total = "total" }"#,
    )
    .await;
    assert!(error.ends_with(": total is -3, not a count"), "{error}");
}

#[tokio::test]
async fn a_stop_rule_takes_part_of_a_huge_total_on_purpose() {
    let server = script(vec![
        Reply::ok(json!({"items": [{"id": 1}, {"id": 2}], "total": i64::MAX})),
        Reply::ok(json!({"items": [{"id": 3}, {"id": 4}], "total": i64::MAX})),
    ])
    .await;
    let lake = Lake::start().await;
    let report = lake
        .run_items(&pipeline(
            &server,
            r#"pagination = { type = "offset", limit = 2, total = "total" }
               stop = { max_pages = 2 }"#,
        ))
        .await;
    assert!(report.succeeded(), "{:?}", report.error);
    assert_eq!(report.stop_reason.as_deref(), Some("max_pages 2"));
    assert_eq!(report.records, 4);
    assert_eq!(server.hits().len(), 2);
}

#[tokio::test]
async fn an_api_with_more_pages_than_the_limit_fails_the_run() {
    let api = PagedApi::start(100).await;
    let lake = Lake::start().await;
    let report = lake
        .run_items(&format!(
            r#"
            base_url = "{}"
            [pipelines.items]
            path = "cursor"
            records = "data"
            pagination = {{ type = "cursor", cursor = "next_cursor" }}
            limits = {{ max_pages = 3 }}
            "#,
            api.base_url()
        ))
        .await;
    let error = lake.assert_failed_without_publishing(&report).await;
    assert_eq!(
        error,
        format!(
            "GET http://{}/cursor?cursor=c02: the API has more pages after page 3, the run's page limit (limits.max_pages); the run would not fetch everything, so it fails instead: raise limits.max_pages (--max-run-pages), or set stop.max_pages or stop.max_records to take only part",
            api.addr
        )
    );
    assert_eq!(api.uris().len(), 3, "no request past the limit");
}

// ------------------------------------------------------------------ loops

#[tokio::test]
async fn a_cursor_that_comes_back_two_pages_later_is_a_loop() {
    let (server, error) = fails_over(
        vec![
            Reply::ok(json!({"items": [{"id": 1}], "next_cursor": "A"})),
            Reply::ok(json!({"items": [{"id": 2}], "next_cursor": "B"})),
            Reply::ok(json!({"items": [{"id": 3}], "next_cursor": "A"})),
            Reply::ok(json!({"items": [{"id": 2}], "next_cursor": "B"})),
        ],
        r#"pagination = { type = "cursor", cursor = "next_cursor" }"#,
    )
    .await;
    assert_eq!(
        error,
        format!(
            "GET http://{}/items?cursor=B: next_cursor \"A\" on page 3 was already followed, to page 2; the API is going round in a loop",
            server.addr
        )
    );
    assert_eq!(server.hits().len(), 3);
}

#[tokio::test]
async fn a_next_link_back_to_the_first_page_is_a_loop() {
    let (server, error) = fails_over(
        vec![
            Reply::ok(json!({"items": [{"id": 1}], "next": "/items?page=2"})),
            Reply::ok(json!({"items": [{"id": 2}], "next": "/items?page=3"})),
            Reply::ok(json!({"items": [{"id": 3}], "next": "/items"})),
        ],
        r#"pagination = { type = "next_link", next_url = "next" }"#,
    )
    .await;
    assert_eq!(
        error,
        format!(
            "GET http://{0}/items?page=3: next http://{0}/items on page 3 was already followed, to page 1; the API is going round in a loop",
            server.addr
        )
    );
    assert_eq!(server.hits().len(), 3);
}

#[tokio::test]
async fn a_next_link_to_a_file_is_refused() {
    let (_server, error) = fails_over(
        vec![Reply::ok(
            json!({"items": [{"id": 1}], "next": "file:///etc/passwd"}),
        )],
        r#"pagination = { type = "next_link", next_url = "next" }"#,
    )
    .await;
    assert!(
        error.ends_with(": next is a file: URL; only http and https links are followed"),
        "{error}"
    );
}

// ------------------------------------------------------------ body sizes

#[tokio::test]
async fn a_body_over_the_limit_fails_the_run_without_a_retry() {
    let big = serde_json::to_string(&items_page(&(1..=500).collect::<Vec<_>>())).expect("json");
    assert!(big.len() > 2048);
    let (server, error) = fails_over(
        vec![Reply::Text(big)],
        r#"limits = { max_response_size = "1KiB" }"#,
    )
    .await;
    assert_eq!(
        error,
        format!(
            "GET http://{}/items: the response body is over 1KiB (limits.max_response_size); raise the limit (--max-response-size) or ask for smaller pages",
            server.addr
        )
    );
    assert_eq!(server.hits().len(), 1, "not retried");
}

#[tokio::test]
async fn a_body_that_never_ends_is_cut_at_the_engines_limit() {
    let server = script(vec![Reply::Endless]).await;
    let lake = Lake::start().await;
    let engine = lake
        .engine(&pipeline(&server, ""))
        .with_limits(RunLimits {
            max_response_bytes: 256 * 1024,
            ..RunLimits::default()
        })
        .expect("valid limits");
    let report = run_items(&engine).await;
    let error = lake.assert_failed_without_publishing(&report).await;
    assert!(
        error.ends_with(": the response body is over 256KiB (limits.max_response_size); raise the limit (--max-response-size) or ask for smaller pages"),
        "{error}"
    );
    assert_eq!(server.hits().len(), 1);
}

#[tokio::test]
async fn a_pipelines_own_limit_wins_over_the_engines() {
    let body = serde_json::to_string(&items_page(&(1..=200).collect::<Vec<_>>())).expect("json");
    let server = script(vec![Reply::Text(body)]).await;
    let lake = Lake::start().await;
    let engine = lake
        .engine(&pipeline(
            &server,
            r#"limits = { max_response_size = "1MiB" }"#,
        ))
        .with_limits(RunLimits {
            max_response_bytes: 100,
            ..RunLimits::default()
        })
        .expect("valid limits");
    let report = run_items(&engine).await;
    assert!(report.succeeded(), "{:?}", report.error);
    assert_eq!(report.records, 200);
}

// -------------------------------------------------------------- redirects

#[tokio::test]
async fn a_redirect_to_another_origin_is_not_followed() {
    let elsewhere = script(vec![Reply::ok(items_page(&[1]))]).await;
    let server = script(vec![Reply::Redirect(
        302,
        format!("{}items", elsewhere.base_url()),
    )])
    .await;
    let base_url = format!("http://alice:hunter2-secret@{}/", server.addr);
    let lake = Lake::start().await;
    let report = lake
        .run_items(&pipeline_at(
            &base_url,
            r#"headers = { X-Api-Key = "key-123" }"#,
        ))
        .await;
    let error = lake.assert_failed_without_publishing(&report).await;
    assert_eq!(
        error,
        format!(
            "GET http://{0}/items: 302 Found to another origin (http://{1}); the pipeline's headers and credentials are for http://{0} only, so the redirect is not followed (point the pipeline's base_url at the other server if that is where the API lives)",
            server.addr, elsewhere.addr
        )
    );
    assert_eq!(elsewhere.hits().len(), 0, "nothing was sent elsewhere");
    assert_eq!(server.hits().len(), 1, "not retried");
    assert_eq!(server.hits()[0].header("x-api-key"), Some("key-123"));
}

#[tokio::test]
async fn a_redirect_on_the_same_origin_keeps_the_headers() {
    let server = script(vec![
        Reply::Redirect(301, "/v2/items".into()),
        Reply::Redirect(307, "/v3/items".into()),
        Reply::ok(items_page(&[1, 2])),
    ])
    .await;
    let lake = Lake::start().await;
    let report = lake
        .run_items(&pipeline(&server, r#"headers = { X-Api-Key = "key-123" }"#))
        .await;
    assert!(report.succeeded(), "{:?}", report.error);
    assert_eq!(report.records, 2);
    assert_eq!(server.uris(), ["/items", "/v2/items", "/v3/items"]);
    assert!(
        server
            .hits()
            .iter()
            .all(|hit| hit.header("x-api-key") == Some("key-123"))
    );
}

#[tokio::test]
async fn redirects_are_bounded() {
    let (server, error) = fails_over(
        vec![
            Reply::Redirect(302, "/a".into()),
            Reply::Redirect(302, "/b".into()),
            Reply::Redirect(302, "/c".into()),
        ],
        "limits = { max_redirects = 2 }",
    )
    .await;
    assert_eq!(
        error,
        format!(
            "GET http://{0}/items: 302 Found to http://{0}/c: more than 2 redirects (limits.max_redirects)",
            server.addr
        )
    );
    assert_eq!(server.uris(), ["/items", "/a", "/b"]);
}

#[tokio::test]
async fn a_redirect_to_a_file_is_refused() {
    let (_server, error) =
        fails_over(vec![Reply::Redirect(302, "file:///etc/passwd".into())], "").await;
    assert!(
        error.ends_with(": 302 Found to a file: URL; only http and https are followed"),
        "{error}"
    );
}

// ------------------------------------------------------------ credentials

const PASSWORD: &str = "hunter2-secret";

fn assert_no_secret(place: &str, text: &str) {
    assert!(!text.contains(PASSWORD), "{place} shows a secret:\n{text}");
}

#[tokio::test]
async fn credentials_in_a_bad_source_url_are_not_quoted() {
    let pipelines = Pipelines::from_toml("[pipelines.items]\n", "test pipelines").expect("valid");
    let err = pipelines
        .with_source_url(&format!("ftp://alice:{PASSWORD}@files.test/"))
        .expect_err("not http");
    assert_no_secret("the error", &err.to_string());
    let err = Pipelines::from_toml(
        &format!("base_url = \"http://alice:{PASSWORD}@api.test:99999/\"\n[pipelines.items]\n"),
        "test pipelines",
    )
    .expect_err("a bad port");
    assert_no_secret("the error", &err.to_string());
    assert!(
        err.to_string().contains("http://***@api.test:99999/"),
        "{err}"
    );
}

#[tokio::test]
async fn credentials_and_an_authorization_header_are_one_too_many() {
    let err = Pipelines::from_toml(
        &format!(
            r#"
            base_url = "http://alice:{PASSWORD}@api.test/"
            [pipelines.items]
            headers = {{ Authorization = "Bearer x" }}
            "#
        ),
        "test pipelines",
    )
    .expect_err("two credentials");
    assert_eq!(
        err.to_string(),
        "test pipelines: pipelines.items.headers.Authorization: base_url carries credentials (user:password@) too; keep one of the two"
    );
}

#[tokio::test]
async fn engine_limits_out_of_range_are_refused() {
    let lake = Lake::start().await;
    let err = lake
        .engine("[pipelines.items]\n")
        .with_limits(RunLimits {
            max_redirects: 50,
            ..RunLimits::default()
        })
        .expect_err("too many redirects");
    assert_eq!(
        err.to_string(),
        "engine limits: max_redirects: must be between 0 and 20, got 50"
    );
}
