//! Local replicas of public APIs' paging protocols, 1,234 records each:
//! GitHub's `Link` header, a cursor in a response header, Stripe's
//! `starting_after` the last record's id with `has_more`, and page numbers
//! against a server that caps its page size. Each lands every record
//! exactly once, or fails with a message naming the field and the page and
//! publishes nothing.

mod support;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::{
    Json, Router,
    extract::{Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::{Value, json};
use support::{Lake, PagedApi, Server, serve};

const RECORDS: u64 = 1234;
const TOKEN: &str = "ghp_replica-token-0123456789";

/// The path and query of a request, and its Authorization header.
type Hit = (String, Option<String>);

#[derive(Clone, Default)]
struct Replica {
    hits: Arc<Mutex<Vec<Hit>>>,
}

type Params = Query<HashMap<String, String>>;

impl Replica {
    fn hit(&self, uri: &Uri, headers: &HeaderMap) {
        let auth = headers
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        self.hits
            .lock()
            .expect("hits")
            .push((uri.to_string(), auth));
    }

    fn uris(&self) -> Vec<String> {
        let hits = self.hits.lock().expect("hits");
        hits.iter().map(|(uri, _)| uri.clone()).collect()
    }
}

fn number(params: &HashMap<String, String>, name: &str, default: u64) -> u64 {
    params
        .get(name)
        .map_or(default, |text| text.parse().expect("a number"))
}

/// GitHub's issues: a bare array, `per_page` at most 100, the next page in
/// `Link` (absent with a single page, no rel="next" on the last), and a
/// bearer token required.
async fn github_issues(
    State(replica): State<Replica>,
    uri: Uri,
    headers: HeaderMap,
    Query(params): Params,
) -> Response {
    replica.hit(&uri, &headers);
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {TOKEN}"))
    {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"message": "Bad credentials"})),
        )
            .into_response();
    }
    let per_page = number(&params, "per_page", 30).min(100);
    let page = number(&params, "page", 1).max(1);
    let last = RECORDS.div_ceil(per_page);
    let from = (page - 1) * per_page;
    let to = (from + per_page).min(RECORDS);
    let issues: Vec<Value> = (from + 1..=to)
        .map(|id| json!({"id": id, "number": id, "title": format!("issue {id}")}))
        .collect();
    let host = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let link = |page: u64, rel: &str| {
        format!("<http://{host}/repos/o/r/issues?per_page={per_page}&page={page}>; rel=\"{rel}\"")
    };
    let mut links = Vec::new();
    if page < last {
        links.push(link(page + 1, "next"));
        links.push(link(last, "last"));
    }
    if page > 1 {
        links.push(link(1, "first"));
        links.push(link(page - 1, "prev"));
    }
    let mut response = Json(issues).into_response();
    if !links.is_empty() {
        response.headers_mut().insert(
            "link",
            HeaderValue::from_str(&links.join(", ")).expect("a header"),
        );
    }
    response
}

/// A feed whose next cursor is in the `X-Next-Cursor` response header,
/// absent on the last page.
async fn header_cursor_feed(
    State(replica): State<Replica>,
    uri: Uri,
    headers: HeaderMap,
    Query(params): Params,
) -> Response {
    replica.hit(&uri, &headers);
    let from: u64 = params.get("cursor").map_or(0, |cursor| {
        cursor
            .strip_prefix("opaque-")
            .and_then(|n| n.parse().ok())
            .expect("a cursor this server issued")
    });
    let to = (from + 100).min(RECORDS);
    let items: Vec<Value> = (from + 1..=to).map(|id| json!({"id": id})).collect();
    let mut response = Json(json!({"items": items})).into_response();
    if to < RECORDS {
        response.headers_mut().insert(
            "x-next-cursor",
            HeaderValue::from_str(&format!("opaque-{to}")).expect("a header"),
        );
    }
    response
}

/// Stripe's list: `{"object": "list", "data", "has_more", "url"}`, at most
/// 100 per page, the next page by `starting_after=<id of the last item>`.
async fn stripe_customers(
    State(replica): State<Replica>,
    uri: Uri,
    headers: HeaderMap,
    Query(params): Params,
) -> Response {
    replica.hit(&uri, &headers);
    let limit = number(&params, "limit", 10).min(100);
    let from: u64 = params.get("starting_after").map_or(0, |id| {
        id.strip_prefix("cus_")
            .and_then(|n| n.parse().ok())
            .expect("an id this server issued")
    });
    let to = (from + limit).min(RECORDS);
    let data: Vec<Value> = (from + 1..=to)
        .map(|n| json!({"id": format!("cus_{n:04}"), "object": "customer"}))
        .collect();
    Json(json!({
        "object": "list",
        "url": "/v1/customers",
        "has_more": to < RECORDS,
        "data": data,
    }))
    .into_response()
}

/// Page numbers, at most 100 records a page whatever `per_page` asks for;
/// pages are numbered by the size asked for (as many servers do), so a
/// client that trusts a larger size skips records.
async fn capped_pages(
    State(replica): State<Replica>,
    uri: Uri,
    headers: HeaderMap,
    Query(params): Params,
) -> Response {
    replica.hit(&uri, &headers);
    let asked = number(&params, "per_page", 20);
    let page = number(&params, "page", 1).max(1);
    let from = ((page - 1) * asked).min(RECORDS);
    let to = (from + asked.min(100)).min(RECORDS);
    let data: Vec<Value> = (from + 1..=to).map(|id| json!({"id": id})).collect();
    Json(json!({"data": data, "page": page})).into_response()
}

struct Api {
    replica: Replica,
    server: Server,
}

async fn start() -> Api {
    let replica = Replica::default();
    let app = Router::new()
        .route("/repos/o/r/issues", get(github_issues))
        .route("/events", get(header_cursor_feed))
        .route("/v1/customers", get(stripe_customers))
        .route("/pages", get(capped_pages))
        .with_state(replica.clone());
    Api {
        replica,
        server: serve(app).await,
    }
}

/// The ids of the latest manifested run of `prefix`, in lake order.
async fn landed(lake: &Lake, prefix: &str) -> Vec<Value> {
    let manifest = lake.latest(prefix).await.expect("a manifested run");
    lake.records(&manifest)
        .await
        .into_iter()
        .map(|record| record["id"].clone())
        .collect()
}

fn one_to_total() -> Vec<Value> {
    (1..=RECORDS).map(|id| json!(id)).collect()
}

#[tokio::test]
async fn github_link_header_lands_every_record_once_with_a_token_from_a_file() {
    let api = start().await;
    let lake = Lake::start().await;
    let token_file = lake.dir.path().join("github-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("write the token");
    let report = lake
        .run_only(&format!(
            r#"
            base_url = "{}"
            [pipelines.issues]
            path = "repos/o/r/issues"
            query = {{ per_page = 100, state = "all" }}
            headers = {{ Authorization = "Bearer ${{file:{}}}" }}
            pagination = {{ type = "link_header" }}
            "#,
            api.server.base_url(),
            token_file.display()
        ))
        .await;
    assert!(report.succeeded(), "{:?}", report.error);
    assert_eq!(report.pages, 13);
    assert_eq!(report.stop_reason.as_deref(), Some("no Link rel=\"next\""));
    assert_eq!(landed(&lake, "issues/").await, one_to_total());
    let hits = api.replica.hits.lock().expect("hits").clone();
    assert!(
        hits.iter()
            .all(|(_, auth)| auth.as_deref() == Some(format!("Bearer {TOKEN}").as_str())),
        "the token from the file went with every request"
    );
    assert_eq!(hits[1].0, "/repos/o/r/issues?per_page=100&page=2");
    for (path, bytes) in support::every_file(lake.dir.path()) {
        if path != token_file {
            assert!(
                !String::from_utf8_lossy(&bytes).contains(TOKEN),
                "{} holds the token",
                path.display()
            );
        }
    }
}

#[tokio::test]
async fn a_cursor_in_a_response_header_lands_every_record_once() {
    let api = start().await;
    let lake = Lake::start().await;
    let report = lake
        .run_only(&format!(
            r#"
            base_url = "{}"
            [pipelines.feed]
            path = "events"
            records = "items"
            pagination = {{ type = "header_cursor", cursor_header = "X-Next-Cursor" }}
            "#,
            api.server.base_url()
        ))
        .await;
    assert!(report.succeeded(), "{:?}", report.error);
    assert_eq!(report.pages, 13);
    assert_eq!(
        report.stop_reason.as_deref(),
        Some("no x-next-cursor header")
    );
    assert_eq!(landed(&lake, "feed/").await, one_to_total());
    assert_eq!(api.replica.uris()[1], "/events?cursor=opaque-100");
}

#[tokio::test]
async fn stripe_starting_after_the_last_record_lands_every_record_once() {
    let api = start().await;
    let lake = Lake::start().await;
    let report = lake.run_only(
        &format!(
            r#"
            base_url = "{}"
            [pipelines.customers]
            path = "v1/customers"
            query = {{ limit = 100 }}
            records = "data"
            pagination = {{ type = "last_record", cursor_field = "id", cursor_param = "starting_after", has_more = "has_more" }}
            "#,
            api.server.base_url()
        ),
    )
    .await;
    assert!(report.succeeded(), "{:?}", report.error);
    assert_eq!(report.pages, 13, "no request after has_more false");
    assert_eq!(report.stop_reason.as_deref(), Some("has_more is false"));
    let expected: Vec<Value> = (1..=RECORDS)
        .map(|n| json!(format!("cus_{n:04}")))
        .collect();
    assert_eq!(landed(&lake, "customers/").await, expected);
    assert_eq!(
        api.replica.uris()[1],
        "/v1/customers?limit=100&starting_after=cus_0100"
    );
}

#[tokio::test]
async fn stripe_with_has_more_seen_but_not_declared_still_lands_everything() {
    let api = start().await;
    let lake = Lake::start().await;
    let report = lake.run_only(
        &format!(
            r#"
            base_url = "{}"
            [pipelines.customers]
            path = "v1/customers"
            query = {{ limit = 100 }}
            records = "data"
            pagination = {{ type = "last_record", cursor_field = "id", cursor_param = "starting_after" }}
            "#,
            api.server.base_url()
        ),
    )
    .await;
    assert!(report.succeeded(), "{:?}", report.error);
    assert_eq!(
        report.pages, 14,
        "the last page is confirmed by an empty one"
    );
    assert_eq!(landed(&lake, "customers/").await.len() as u64, RECORDS);
}

/// Runs a Stripe pipeline with `pagination`; asserts it failed with
/// `error` (after the URL) and left nothing in the lake.
async fn stripe_fails(pagination: &str, error: &str) {
    let api = start().await;
    let lake = Lake::start().await;
    let report = lake
        .run_only(&format!(
            r#"
            base_url = "{}"
            [pipelines.customers]
            path = "v1/customers"
            query = {{ limit = 100 }}
            records = "data"
            pagination = {pagination}
            "#,
            api.server.base_url()
        ))
        .await;
    assert!(!report.succeeded(), "{pagination}");
    let message = report.error.expect("an error");
    assert!(message.ends_with(error), "{pagination}:\n{message}");
    assert!(
        lake.keys("customers/").await.is_empty(),
        "no manifest and no part: {pagination}"
    );
}

#[tokio::test]
async fn a_truncated_stripe_run_fails_and_publishes_nothing() {
    // A misspelt cursor field: it never resolves.
    stripe_fails(
        r#"{ type = "cursor", cursor = "next_page", cursor_param = "starting_after" }"#,
        "the response has no next_page (pagination.cursor) on page 1, and had none on an earlier page: the field path is wrong, or the API leaves it out; the run would end without knowing whether there is more, so it fails instead",
    )
    .await;
    // A misspelt field of the last record.
    stripe_fails(
        r#"{ type = "last_record", cursor_field = "idd", cursor_param = "starting_after" }"#,
        "the last record on page 1 (record 99) has no idd (pagination.cursor_field); the next page cannot be asked for, and ending here would keep only part of the data",
    )
    .await;
    // One page of a list that says it has more.
    stripe_fails(
        r#"{ type = "single" }"#,
        "has_more is true on page 1, but paging would end here (single page): the run would keep only part of the data, so it fails instead; declare a paginator for this API, or set stop.max_pages = 1 to take the first page only",
    )
    .await;
    // A next link that the list does not have.
    stripe_fails(
        r#"{ type = "next_link", next_url = "next_page_url" }"#,
        "the response has no next_page_url (pagination.next_url) on page 1, and had none on an earlier page: the field path is wrong, or the API leaves it out; the run would end without knowing whether there is more, so it fails instead",
    )
    .await;
}

#[tokio::test]
async fn page_numbers_larger_than_the_server_serves_fail_instead_of_skipping() {
    let api = start().await;
    let lake = Lake::start().await;
    let pipelines = |page_size: u64| {
        format!(
            r#"
            base_url = "{}"
            [pipelines.pages]
            path = "pages"
            records = "data"
            pagination = {{ type = "page_number", page_size = {page_size}, page_size_param = "per_page" }}
            "#,
            api.server.base_url()
        )
    };
    let report = lake.run_only(&pipelines(200)).await;
    assert_eq!(
        report.error.as_deref(),
        Some(
            format!(
                "GET {}pages?page=2&per_page=100: page 1 had 100 records for page_size 200, and page 2 asked for at 100 a page has 100 more: the server serves fewer records per page than page_size asks for, so numbered pages could skip or repeat records; set page_size to 100 or less",
                api.server.base_url()
            )
            .as_str()
        )
    );
    assert!(lake.keys("pages/").await.is_empty());

    let report = lake.run_only(&pipelines(100)).await;
    assert!(report.succeeded(), "{:?}", report.error);
    assert_eq!(
        report.stop_reason.as_deref(),
        Some("short page: 34 records for page size 100")
    );
    assert_eq!(landed(&lake, "pages/").await, one_to_total());
}

#[tokio::test]
async fn a_short_first_page_is_confirmed_by_the_next_at_the_size_served() {
    let api = start().await;
    let lake = Lake::start().await;
    // The replica numbers pages by the size asked for: page 2 at 2,000 a
    // page would be empty, and look like the end after 100 of 1,234
    // records. Asked for at the 100 a page served, it is not.
    let report = lake
        .run_only(&format!(
            r#"
            base_url = "{}"
            [pipelines.pages]
            path = "pages"
            records = "data"
            pagination = {{ type = "page_number", page_size = 2000, page_size_param = "per_page" }}
            "#,
            api.server.base_url()
        ))
        .await;
    assert!(!report.succeeded(), "100 of 1,234 records is not a success");
    assert_eq!(
        api.replica.uris(),
        ["/pages?page=1&per_page=2000", "/pages?page=2&per_page=100"]
    );
    assert!(lake.keys("pages/").await.is_empty());

    // A result that really fits one short page: the page after it, at the
    // size served, is empty.
    let small = PagedApi::start(7).await;
    let report = lake
        .run_only(&format!(
            r#"
            base_url = "{}"
            [pipelines.small]
            path = "pages"
            records = "data"
            pagination = {{ type = "page_number", page_size = 50, page_size_param = "per_page" }}
            "#,
            small.base_url()
        ))
        .await;
    assert!(report.succeeded(), "{:?}", report.error);
    assert_eq!(
        small.uris(),
        ["/pages?page=1&per_page=50", "/pages?page=2&per_page=7"]
    );
    assert_eq!(landed(&lake, "small/").await.len(), 7);
}
