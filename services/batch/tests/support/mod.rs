//! What the batch tests share: a lake (an in-process directory store,
//! reached through the `ObjectStore` trait as the engine reaches any
//! store), a scripted fault server, and a paged API in every paging style.
//! The engine through a real Storage service is a cross-service test, in
//! the workspace's end-to-end tests.

#![allow(dead_code, unreachable_pub)]

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{
    Json, Router,
    extract::{Query, State},
    http::{HeaderName, HeaderValue, StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::get,
};
use futures::StreamExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tempfile::TempDir;
use tokio::time::Instant;
use vesper::Shutdown;
use vesper_batch::{BatchEngine, MANIFEST_NAME, Manifest, Pipelines, Quiet, RunReport, RunStatus};
use vesper_storage::{FsStore, ObjectKey, ObjectStore};

const OBJECT_LIMIT: u64 = 64 * 1024 * 1024;

/// A directory lake in a temp dir, behind an in-process [`FsStore`].
pub struct Lake {
    pub store: Arc<dyn ObjectStore>,
    pub dir: TempDir,
}

impl Lake {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store: Arc<dyn ObjectStore> = Arc::new(
            FsStore::open(dir.path(), OBJECT_LIMIT)
                .await
                .expect("open the lake"),
        );
        Self { store, dir }
    }

    /// Runs the one pipeline of a file over this lake.
    pub async fn run_only(&self, pipelines: &str) -> RunReport {
        let mut reports = self
            .engine(pipelines)
            .run(&[] as &[&str], &Shutdown::new())
            .await
            .expect("known pipelines");
        assert_eq!(reports.len(), 1);
        reports.remove(0)
    }

    /// Runs the pipeline `items` of a file over this lake.
    pub async fn run_items(&self, pipelines: &str) -> RunReport {
        run_items(&self.engine(pipelines)).await
    }

    /// Asserts that `report` is a failure that left nothing under `items/`,
    /// and returns its error.
    pub async fn assert_failed_without_publishing(&self, report: &RunReport) -> String {
        assert_eq!(report.status, RunStatus::Failed, "{report:?}");
        assert_eq!(report.manifest_key, None);
        self.assert_nothing_published("items/").await;
        report.error.clone().expect("an error")
    }

    /// Asserts that there is neither a manifest nor a part under `prefix`.
    pub async fn assert_nothing_published(&self, prefix: &str) {
        assert_eq!(self.manifests(prefix).await, []);
        assert_eq!(
            self.keys(prefix).await,
            Vec::<String>::new(),
            "a failed run's parts are deleted"
        );
    }

    /// An engine over pipelines written in the file format, quiet.
    pub fn engine(&self, pipelines: &str) -> BatchEngine {
        let pipelines = Pipelines::from_toml(pipelines, "test pipelines").expect("valid pipelines");
        self.engine_for(pipelines)
    }

    pub fn engine_for(&self, pipelines: Pipelines) -> BatchEngine {
        BatchEngine::new(pipelines, Arc::clone(&self.store))
            .expect("engine")
            .with_observer(Arc::new(Quiet))
    }

    /// Every key under `prefix`, in order.
    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .store
                .list(prefix, token.as_deref(), 0)
                .await
                .expect("list");
            keys.extend(page.objects.into_iter().map(|object| object.key));
            match page.next_token {
                Some(next) => token = Some(next),
                None => return keys,
            }
        }
    }

    /// Every manifest under `prefix`, by key.
    pub async fn manifests(&self, prefix: &str) -> Vec<Manifest> {
        let mut manifests = Vec::new();
        for key in self.keys(prefix).await {
            if key.ends_with(MANIFEST_NAME) {
                manifests.push(self.manifest(&key).await);
            }
        }
        manifests
    }

    pub async fn manifest(&self, key: &str) -> Manifest {
        let (_, body) = self
            .store
            .get(&ObjectKey::new(key).expect("key"))
            .await
            .expect("manifest");
        serde_json::from_slice(&body).expect("a manifest")
    }

    /// The snapshot readers take: the greatest run id that has a manifest.
    pub async fn latest(&self, prefix: &str) -> Option<Manifest> {
        self.manifests(prefix)
            .await
            .into_iter()
            .max_by(|a, b| a.run_id.cmp(&b.run_id))
    }

    /// The records of a manifested run, checking each part against the
    /// manifest (records, bytes, SHA-256).
    pub async fn records(&self, manifest: &Manifest) -> Vec<Value> {
        let mut records = Vec::new();
        for part in &manifest.parts {
            let (meta, body) = self
                .store
                .get(&ObjectKey::new(part.key.as_str()).expect("key"))
                .await
                .expect("part");
            assert_eq!(meta.content_type, "application/x-ndjson");
            assert_eq!(body.len() as u64, part.bytes, "{}", part.key);
            assert_eq!(
                hex::encode(Sha256::digest(&body)),
                part.sha256,
                "{}",
                part.key
            );
            let text = std::str::from_utf8(&body).expect("UTF-8");
            assert!(text.ends_with('\n'), "NDJSON ends with a newline");
            let lines: Vec<Value> = text
                .lines()
                .map(|line| serde_json::from_str(line).expect("a JSON line"))
                .collect();
            assert_eq!(lines.len() as u64, part.records, "{}", part.key);
            records.extend(lines);
        }
        assert_eq!(records.len() as u64, manifest.records);
        records
    }
}

// ---------------------------------------------------------------- servers

/// One request a scripted server received.
#[derive(Debug, Clone)]
pub struct Hit {
    pub uri: String,
    /// On tokio's clock, so that a test on paused time measures waits.
    pub at: Instant,
    pub user_agent: String,
    pub headers: axum::http::HeaderMap,
}

impl Hit {
    fn new(uri: &Uri, headers: &axum::http::HeaderMap) -> Self {
        Self {
            uri: uri.to_string(),
            at: Instant::now(),
            user_agent: headers
                .get("user-agent")
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
            headers: headers.clone(),
        }
    }

    /// A request header, as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

type HitLog = Arc<Mutex<Vec<Hit>>>;

fn log_hit(log: &HitLog, uri: &Uri, headers: &axum::http::HeaderMap) {
    log.lock().expect("hit log").push(Hit::new(uri, headers));
}

/// A server on a spawned task; aborted when dropped (a stalled reply does
/// not hold the test up).
pub struct Server {
    pub addr: SocketAddr,
    hits: HitLog,
    in_flight: Arc<InFlight>,
    task: tokio::task::JoinHandle<()>,
}

/// Requests being answered now, and the most at once.
#[derive(Debug, Default)]
struct InFlight {
    now: AtomicU64,
    max: AtomicU64,
}

impl InFlight {
    fn enter(self: &Arc<Self>) -> InFlightGuard {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
        InFlightGuard(Arc::clone(self))
    }
}

struct InFlightGuard(Arc<InFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Server {
    async fn start(app: Router, hits: HitLog) -> Self {
        Self::start_counting(app, hits, Arc::default()).await
    }

    async fn start_counting(app: Router, hits: HitLog, in_flight: Arc<InFlight>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        Self {
            addr,
            hits,
            in_flight,
            task,
        }
    }

    /// The most requests the server was answering at once.
    pub fn max_in_flight(&self) -> u64 {
        self.in_flight.max.load(Ordering::SeqCst)
    }

    /// `http://ADDR/`, the base URL of pipeline files.
    pub fn base_url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().expect("hit log").clone()
    }

    /// The path and query of every request, in order.
    pub fn uris(&self) -> Vec<String> {
        self.hits().into_iter().map(|hit| hit.uri).collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A scripted reply.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A JSON body with a status.
    Json(u16, Value),
    /// A JSON body with a status and extra headers.
    JsonWith(u16, Vec<(&'static str, String)>, Value),
    /// A raw body with a status, as `application/json`.
    Raw(u16, &'static str),
    /// A 200 whose body is this text, with its Content-Length.
    Text(String),
    /// A 200 with no Content-Length whose body never ends: `{"items": [`
    /// then `{"id": 1},` for ever, in 4 KiB chunks.
    Endless,
    /// A redirect with this status to this Location.
    Redirect(u16, String),
    /// Nothing for this long, then the inner reply.
    Stall(Duration, Box<Reply>),
}

impl Reply {
    pub fn ok(body: Value) -> Self {
        Self::Json(200, body)
    }

    pub fn unavailable() -> Self {
        Self::Json(503, json!({"error": "Service temporarily unavailable"}))
    }

    pub fn stall(duration: Duration, then: Reply) -> Self {
        Self::Stall(duration, Box::new(then))
    }
}

#[derive(Clone)]
struct ScriptState {
    replies: Arc<Vec<Reply>>,
    hits: HitLog,
}

/// Answers the n-th request, whatever its path, with the n-th reply; past
/// the end of the script, 500 "script exhausted".
pub async fn script(replies: Vec<Reply>) -> Server {
    let hits = HitLog::default();
    let state = ScriptState {
        replies: Arc::new(replies),
        hits: Arc::clone(&hits),
    };
    let app = Router::new().fallback(scripted).with_state(state);
    Server::start(app, hits).await
}

async fn scripted(
    State(state): State<ScriptState>,
    uri: Uri,
    headers: axum::http::HeaderMap,
) -> Response {
    let index = {
        let mut hits = state.hits.lock().expect("hit log");
        hits.push(Hit::new(&uri, &headers));
        hits.len() - 1
    };
    let mut reply = state
        .replies
        .get(index)
        .cloned()
        .unwrap_or(Reply::Json(500, json!({"error": "script exhausted"})));
    loop {
        match reply {
            Reply::Stall(duration, then) => {
                tokio::time::sleep(duration).await;
                reply = *then;
            }
            Reply::Json(status, body) => return (status_of(status), Json(body)).into_response(),
            Reply::JsonWith(status, headers, body) => {
                let mut response = (status_of(status), Json(body)).into_response();
                for (name, value) in headers {
                    response.headers_mut().insert(
                        HeaderName::from_static(name),
                        HeaderValue::from_str(&value).expect("header value"),
                    );
                }
                return response;
            }
            Reply::Raw(status, body) => {
                return (
                    status_of(status),
                    [("content-type", "application/json")],
                    body,
                )
                    .into_response();
            }
            Reply::Text(body) => {
                return ([("content-type", "application/json")], body).into_response();
            }
            Reply::Endless => {
                let chunk = bytes::Bytes::from("{\"id\": 1},".repeat(410));
                let body = futures::stream::once(async {
                    Ok::<_, std::convert::Infallible>(bytes::Bytes::from_static(b"{\"items\": ["))
                })
                .chain(futures::stream::repeat_with(move || Ok(chunk.clone())));
                return (
                    [("content-type", "application/json")],
                    axum::body::Body::from_stream(body),
                )
                    .into_response();
            }
            Reply::Redirect(status, location) => {
                return (status_of(status), [("location", location)]).into_response();
            }
        }
    }
}

fn status_of(code: u16) -> StatusCode {
    StatusCode::from_u16(code).expect("status")
}

/// Items `{"id": 1}` .. `{"id": n}` behind every paging style:
/// - `/offset?offset=O&limit=L`: `{"data", "has_more", "next_offset" (-1 at
///   the end), "total"}`, pages capped at `cap` records;
/// - `/pages?page=P[&per_page=S]` (from 1): `{"data", "total_pages", "has_more"}`;
/// - `/cursor[?cursor=C]`: `{"data", "next_cursor"}` (null at the end);
/// - `/links[?after=N]`: `{"data", "links": {"next": relative URL or null}}`.
///
/// With `slow_first`, the lower an offset the later its answer, so that
/// concurrent pages complete in reverse order.
pub struct PagedApi;

#[derive(Clone)]
struct PagedState {
    items: u64,
    cap: u64,
    page_size: u64,
    slow_first: bool,
    hits: HitLog,
    in_flight: Arc<InFlight>,
}

impl PagedApi {
    pub async fn start(items: u64) -> Server {
        Self::start_with(items, u64::MAX, false).await
    }

    pub async fn start_with(items: u64, cap: u64, slow_first: bool) -> Server {
        let hits = HitLog::default();
        let in_flight = Arc::<InFlight>::default();
        let state = PagedState {
            items,
            cap,
            page_size: 10,
            slow_first,
            hits: Arc::clone(&hits),
            in_flight: Arc::clone(&in_flight),
        };
        let app = Router::new()
            .route("/offset", get(offset_page))
            .route("/pages", get(numbered_page))
            .route("/cursor", get(cursor_page))
            .route("/links", get(linked_page))
            .with_state(state);
        Server::start_counting(app, hits, in_flight).await
    }
}

type Params = Query<HashMap<String, String>>;

fn param(params: &HashMap<String, String>, name: &str, default: u64) -> u64 {
    params
        .get(name)
        .map_or(default, |text| text.parse().expect("a numeric parameter"))
}

fn items(from: u64, to: u64) -> Vec<Value> {
    (from + 1..=to).map(|id| json!({"id": id})).collect()
}

async fn offset_page(
    State(state): State<PagedState>,
    uri: Uri,
    headers: axum::http::HeaderMap,
    Query(params): Params,
) -> Response {
    log_hit(&state.hits, &uri, &headers);
    let _answering = state.in_flight.enter();
    let offset = param(&params, "offset", 0);
    let limit = param(&params, "limit", 10).min(state.cap);
    if state.slow_first {
        let delay = state.items.saturating_sub(offset) * 3;
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let end = (offset + limit).min(state.items).max(offset);
    let has_more = end < state.items;
    Json(json!({
        "data": items(offset, end),
        "has_more": has_more,
        "next_offset": if has_more { end as i64 } else { -1 },
        "total": state.items,
    }))
    .into_response()
}

async fn numbered_page(
    State(state): State<PagedState>,
    uri: Uri,
    headers: axum::http::HeaderMap,
    Query(params): Params,
) -> Response {
    log_hit(&state.hits, &uri, &headers);
    let size = param(&params, "per_page", state.page_size);
    let page = param(&params, "page", 1).max(1);
    let from = ((page - 1) * size).min(state.items);
    let end = (from + size).min(state.items);
    let total_pages = state.items.div_ceil(size);
    Json(json!({
        "data": items(from, end),
        "total_pages": total_pages,
        "has_more": page < total_pages,
    }))
    .into_response()
}

async fn cursor_page(
    State(state): State<PagedState>,
    uri: Uri,
    headers: axum::http::HeaderMap,
    Query(params): Params,
) -> Response {
    log_hit(&state.hits, &uri, &headers);
    // An opaque-looking cursor: "c" and the offset, reversed.
    let from = params.get("cursor").map_or(0, |cursor| {
        cursor
            .trim_start_matches('c')
            .chars()
            .rev()
            .collect::<String>()
            .parse()
            .expect("a cursor this server issued")
    });
    let end = (from + state.page_size).min(state.items);
    let next = (end < state.items)
        .then(|| format!("c{}", end.to_string().chars().rev().collect::<String>()));
    Json(json!({"data": items(from, end), "next_cursor": next})).into_response()
}

async fn linked_page(
    State(state): State<PagedState>,
    uri: Uri,
    headers: axum::http::HeaderMap,
    Query(params): Params,
) -> Response {
    log_hit(&state.hits, &uri, &headers);
    let from = param(&params, "after", 0);
    let end = (from + state.page_size).min(state.items);
    let next = (end < state.items).then(|| format!("/links?after={end}"));
    Json(json!({"data": items(from, end), "links": {"next": next}})).into_response()
}

/// Runs the pipeline `items` of `engine` to its end.
pub async fn run_items(engine: &BatchEngine) -> RunReport {
    engine
        .run(&["items"], &Shutdown::new())
        .await
        .expect("a known pipeline")
        .remove(0)
}

/// A page `{"items": [{"id": ..}, ..]}`.
pub fn items_page(ids: &[u64]) -> Value {
    json!({"items": ids.iter().map(|id| json!({"id": id})).collect::<Vec<_>>()})
}

/// A file with one pipeline, `items`, at `base_url`: path and records
/// `items`, then `settings` (lines of the pipeline's table).
pub fn items_pipeline(base_url: &str, settings: &str) -> String {
    format!(
        r#"
        base_url = "{base_url}"
        [pipelines.items]
        path = "items"
        records = "items"
        {settings}
        "#
    )
}

/// Serves `app` on a free local port until the returned server is
/// dropped.
pub async fn serve(app: Router) -> Server {
    Server::start(app, HitLog::default()).await
}

/// The `id`s of records, in order.
pub fn ids(records: &[Value]) -> Vec<u64> {
    records
        .iter()
        .map(|record| record["id"].as_u64().expect("an id"))
        .collect()
}

/// Every byte of every file in `dir`, recursively (what a test greps the
/// lake for).
pub fn every_file(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read a lake directory") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let bytes = std::fs::read(&path).expect("read a lake file");
                files.push((path, bytes));
            }
        }
    }
    files
}

/// Every log line of the test process. Tracing caches which callsites a
/// subscriber wants across threads, so a thread-local capture misses
/// events when tests run in parallel: a test that captures logs has a test
/// binary of its own and installs this once.
#[derive(Clone, Default)]
pub struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl CapturedLogs {
    /// Captures DEBUG and above, process-wide.
    pub fn install() -> Self {
        let logs = Self::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .expect("the only subscriber of this test binary");
        logs
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("logs")).into_owned()
    }
}

impl std::io::Write for CapturedLogs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("logs").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
