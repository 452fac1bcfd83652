//! Each paginator, and each of its stop rules, against a scripted API: the
//! requests made, the records written, why paging ended.

mod support;

use support::{Lake, PagedApi, ids};
use vesper::Shutdown;
use vesper_batch::{Pipelines, RunReport};

/// Runs `pagination` over `/path` of a 45-item API; returns the report, the
/// written ids and the requests.
async fn page_through(
    path: &str,
    pagination: &str,
    items: u64,
) -> (RunReport, Vec<u64>, Vec<String>) {
    let api = PagedApi::start(items).await;
    let lake = Lake::start().await;
    let report = lake
        .run_only(&format!(
            r#"
            base_url = "{}"
            [pipelines.items]
            path = "{path}"
            records = "data"
            pagination = {pagination}
            "#,
            api.base_url()
        ))
        .await;
    assert!(report.succeeded(), "{:?}", report.error);
    let manifest = lake.latest("items/").await.expect("a manifested run");
    let records = lake.records(&manifest).await;
    (report, ids(&records), api.uris())
}

fn one_to(n: u64) -> Vec<u64> {
    (1..=n).collect()
}

#[tokio::test]
async fn offset_stops_when_has_more_is_false() {
    let (report, ids, uris) = page_through(
        "offset",
        r#"{ type = "offset", limit = 10, has_more = "has_more", stop_on_short_page = false }"#,
        45,
    )
    .await;
    assert_eq!(ids, one_to(45));
    assert_eq!(
        uris,
        [
            "/offset?offset=0&limit=10",
            "/offset?offset=10&limit=10",
            "/offset?offset=20&limit=10",
            "/offset?offset=30&limit=10",
            "/offset?offset=40&limit=10",
        ]
    );
    assert_eq!(report.stop_reason.as_deref(), Some("has_more is false"));
    assert_eq!(report.pages, 5);
}

#[tokio::test]
async fn offset_stops_when_next_offset_is_minus_one() {
    let (report, ids, uris) = page_through(
        "offset",
        r#"{ type = "offset", limit = 10, next_offset = "next_offset", stop_on_short_page = false }"#,
        45,
    )
    .await;
    assert_eq!(ids, one_to(45));
    assert_eq!(uris.len(), 5);
    assert_eq!(report.stop_reason.as_deref(), Some("next_offset is -1"));
}

#[tokio::test]
async fn offset_stops_on_a_short_page() {
    let (report, ids, uris) =
        page_through("offset", r#"{ type = "offset", limit = 10 }"#, 45).await;
    assert_eq!(ids, one_to(45));
    assert_eq!(uris.len(), 5);
    assert_eq!(
        report.stop_reason.as_deref(),
        Some("short page: 5 records for limit 10")
    );
}

#[tokio::test]
async fn offset_stops_on_an_empty_page() {
    let (report, ids, uris) =
        page_through("offset", r#"{ type = "offset", limit = 10 }"#, 40).await;
    assert_eq!(ids, one_to(40));
    assert_eq!(
        uris.len(),
        5,
        "four full pages, then an empty one: {uris:?}"
    );
    assert_eq!(uris[4], "/offset?offset=40&limit=10");
    assert_eq!(report.stop_reason.as_deref(), Some("empty page"));
    assert_eq!(report.pages, 5);
}

#[tokio::test]
async fn offset_with_a_known_total_plans_the_pages() {
    let (report, ids, uris) = page_through(
        "offset",
        r#"{ type = "offset", limit = 10, total = "total", stop_on_short_page = false }"#,
        45,
    )
    .await;
    assert_eq!(ids, one_to(45));
    let mut sorted = uris.clone();
    sorted.sort();
    assert_eq!(sorted.len(), 5, "no request past the total: {uris:?}");
    assert_eq!(
        report.stop_reason.as_deref(),
        Some("offset 45 reached total 45")
    );
}

#[tokio::test]
async fn offset_honours_a_start_and_renamed_parameters() {
    let api = PagedApi::start(30).await;
    let lake = Lake::start().await;
    // The API reads offset/limit; a start of 20 skips the first 20 items.
    let report = lake
        .run_only(&format!(
            r#"
            base_url = "{}"
            [pipelines.items]
            path = "offset"
            records = "data"
            query = {{ limit = 4 }}
            pagination = {{ type = "offset", limit = 5, start = 20, limit_param = "size" }}
            "#,
            api.base_url()
        ))
        .await;
    assert!(report.succeeded(), "{:?}", report.error);
    let manifest = lake.latest("items/").await.expect("manifest");
    // The server ignores `size` and reads the query's limit = 4: a first
    // page of 4 against 5 may be the server's own page size, so paging goes
    // on by the records received, and ends on a page short against 4.
    assert_eq!(ids(&lake.records(&manifest).await), one_to(30)[20..]);
    assert_eq!(
        api.uris(),
        [
            "/offset?limit=4&offset=20&size=5",
            "/offset?limit=4&offset=24&size=5",
            "/offset?limit=4&offset=28&size=5"
        ]
    );
    assert_eq!(
        report.stop_reason.as_deref(),
        Some("short page: 2 records for limit 4")
    );
}

#[tokio::test]
async fn page_number_with_total_pages() {
    let (report, ids, uris) = page_through(
        "pages",
        r#"{ type = "page_number", page_size = 10, page_size_param = "per_page", total_pages = "total_pages" }"#,
        45,
    )
    .await;
    assert_eq!(ids, one_to(45));
    let mut sorted = uris.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "/pages?page=1&per_page=10",
            "/pages?page=2&per_page=10",
            "/pages?page=3&per_page=10",
            "/pages?page=4&per_page=10",
            "/pages?page=5&per_page=10",
        ]
    );
    assert_eq!(
        report.stop_reason.as_deref(),
        Some("last page (total_pages 5)")
    );
}

#[tokio::test]
async fn page_number_with_has_more() {
    let (report, ids, uris) = page_through(
        "pages",
        r#"{ type = "page_number", has_more = "has_more" }"#,
        25,
    )
    .await;
    assert_eq!(ids, one_to(25));
    assert_eq!(uris, ["/pages?page=1", "/pages?page=2", "/pages?page=3"]);
    assert_eq!(report.stop_reason.as_deref(), Some("has_more is false"));
}

#[tokio::test]
async fn cursor_from_a_json_field() {
    let (report, ids, uris) = page_through(
        "cursor",
        r#"{ type = "cursor", cursor = "next_cursor" }"#,
        25,
    )
    .await;
    assert_eq!(ids, one_to(25));
    assert_eq!(
        uris,
        ["/cursor", "/cursor?cursor=c01", "/cursor?cursor=c02"]
    );
    assert_eq!(report.stop_reason.as_deref(), Some("no next_cursor"));
}

#[tokio::test]
async fn next_link_from_a_json_field() {
    let (report, ids, uris) = page_through(
        "links",
        r#"{ type = "next_link", next_url = "links.next" }"#,
        25,
    )
    .await;
    assert_eq!(ids, one_to(25));
    assert_eq!(uris, ["/links", "/links?after=10", "/links?after=20"]);
    assert_eq!(report.stop_reason.as_deref(), Some("no links.next"));
}

#[tokio::test]
async fn single_page() {
    let (report, ids, uris) = page_through("cursor", r#"{ type = "single" }"#, 45).await;
    assert_eq!(ids, one_to(10), "the API's first page");
    assert_eq!(uris, ["/cursor"]);
    assert_eq!(report.stop_reason.as_deref(), Some("single page"));
}

#[tokio::test]
async fn a_single_page_of_an_api_that_says_it_has_more_fails() {
    let api = PagedApi::start(45).await;
    let lake = Lake::start().await;
    let report = lake
        .run_only(&format!(
            r#"
            base_url = "{}"
            [pipelines.items]
            path = "offset"
            records = "data"
            "#,
            api.base_url()
        ))
        .await;
    assert_eq!(
        report.error.as_deref(),
        Some(
            format!(
                "GET {}offset: has_more is true on page 1, but paging would end here (single page): the run would keep only part of the data, so it fails instead; declare a paginator for this API, or set stop.max_pages = 1 to take the first page only",
                api.base_url()
            )
            .as_str()
        )
    );
    assert!(lake.keys("items/").await.is_empty(), "no manifest, no part");
}

#[tokio::test]
async fn stop_rules_cut_paging_short() {
    let api = PagedApi::start(100).await;
    let lake = Lake::start().await;
    let engine = lake.engine(&format!(
        r#"
        base_url = "{}"
        [pipelines.pages]
        path = "offset"
        records = "data"
        pagination = {{ type = "offset", limit = 10, has_more = "has_more" }}
        stop = {{ max_pages = 3 }}
        [pipelines.records]
        path = "offset"
        records = "data"
        pagination = {{ type = "offset", limit = 10, total = "total" }}
        stop = {{ max_records = 25 }}
        "#,
        api.base_url()
    ));
    let reports = engine
        .run(&["pages", "records"], &Shutdown::new())
        .await
        .expect("run");
    assert_eq!(reports[0].pages, 3);
    assert_eq!(reports[0].records, 30);
    assert_eq!(reports[0].stop_reason.as_deref(), Some("max_pages 3"));
    assert_eq!(reports[1].records, 25, "the last page is cut to fit");
    assert_eq!(reports[1].stop_reason.as_deref(), Some("max_records 25"));
    let manifest = lake.latest("records/").await.expect("manifest");
    assert_eq!(ids(&lake.records(&manifest).await), one_to(25));
}

#[tokio::test]
async fn a_server_that_caps_its_pages_below_the_limit_is_not_silently_skipped() {
    // Asking 20 per page from a server that gives 10: offset arithmetic
    // from the limit would skip half the items.
    let api = PagedApi::start_with(45, 10, false).await;
    let lake = Lake::start().await;
    let report = lake.run_only(
        &format!(
            r#"
            base_url = "{}"
            [pipelines.items]
            path = "offset"
            records = "data"
            pagination = {{ type = "offset", limit = 20, total = "total", stop_on_short_page = false }}
            "#,
            api.base_url()
        ),
    )
    .await;
    assert!(report.succeeded(), "{:?}", report.error);
    let manifest = lake.latest("items/").await.expect("manifest");
    assert_eq!(ids(&lake.records(&manifest).await), one_to(45));
    assert_eq!(
        api.uris()[1],
        "/offset?offset=10&limit=20",
        "sequential, by what came back"
    );
}

#[tokio::test]
async fn a_wrong_pagination_setting_is_caught_at_load_time() {
    let err = Pipelines::from_toml(
        r#"
        [pipelines.users]
        path = "users"
        records = "users"
        pagination = { type = "offset", limit = 0, total = "total_users" }
        "#,
        "pipelines.toml",
    )
    .expect_err("a zero limit");
    assert_eq!(
        err.to_string(),
        "pipelines.toml: pipelines.users.pagination.limit: must be 1 or more, got 0"
    );
}

#[tokio::test]
async fn a_rate_limit_spaces_the_requests_of_a_run() {
    let api = PagedApi::start(25).await;
    let lake = Lake::start().await;
    let started = tokio::time::Instant::now();
    let report = lake
        .run_only(&format!(
            r#"
            base_url = "{}"
            [defaults]
            rate_limit = 20
            [pipelines.items]
            path = "cursor"
            records = "data"
            rate_limit = 10
            pagination = {{ type = "cursor", cursor = "next_cursor" }}
            "#,
            api.base_url()
        ))
        .await;
    assert!(report.succeeded(), "{:?}", report.error);
    let hits = api.hits();
    assert_eq!(hits.len(), 3);
    // 10 a second (the pipeline's rate wins over the defaults'): the
    // third request goes 200 ms after the first at the earliest.
    let third = hits[2].at.duration_since(started);
    assert!(third >= std::time::Duration::from_millis(200), "{third:?}");
}
