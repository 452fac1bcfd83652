//! A scripted replica of the old data server's REST API
//! (docs/compatibility.md, "The data server's REST API"), for tests that
//! pull from it without the DataSource service: the same routes, bodies,
//! paging fields, limits, errors and faults.
//!
//! What differs, on purpose, for tests: the data is generated from a fixed
//! seed, and the `/api/events` faults come on a fixed schedule with the
//! upstream's rates (by default every 10th call answers 503, every 20th
//! stalls 10 s), so that a short run meets both and never flakes. Edge
//! cases the old server got wrong answer 400 with a clear error, as vesper
//! does.

use std::{
    collections::HashMap,
    net::{SocketAddr, TcpListener},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::{Value, json};
use time::{Date, OffsetDateTime, format_description::well_known::Rfc3339};

/// Users the replica holds: "user_1" .. "user_10000".
pub const USERS: u64 = 10_000;
/// Content items it holds: "content_1" .. "content_1000".
pub const CONTENT_ITEMS: u64 = 1_000;

const PAGE_CAP: i64 = 200;
const EVENTS_DEFAULT: i64 = 50;
const EVENTS_CAP: i64 = 200;
const SOURCE_EVENTS_DEFAULT: i64 = 20;
const SOURCE_EVENTS_CAP: i64 = 100;

/// The faults of `/api/events`, by call number (0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventFaults {
    /// Calls 1, 1 + n, 1 + 2n, ... answer 503 `{"error":"Service
    /// temporarily unavailable"}`; 0 never does.
    pub unavailable_every: u64,
    /// Calls 3, 3 + n, ... (that are not 503s) stall for `stall` before
    /// answering; 0 never does.
    pub stall_every: u64,
    /// How long a stall lasts.
    pub stall: Duration,
}

impl EventFaults {
    /// A reliable `/api/events`.
    pub const NONE: Self = Self {
        unavailable_every: 0,
        stall_every: 0,
        stall: Duration::ZERO,
    };
}

impl Default for EventFaults {
    /// The upstream's rates: 10% of calls answer 503, 5% stall 10 s.
    fn default() -> Self {
        Self {
            unavailable_every: 10,
            stall_every: 20,
            stall: Duration::from_secs(10),
        }
    }
}

/// How the replica behaves besides its data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplicaOptions {
    /// The faults of `/api/events`.
    pub event_faults: EventFaults,
    /// Added before every answer: a stand-in for the network between a
    /// client and a remote API (loopback has next to none).
    pub latency: Duration,
}

#[derive(Debug)]
struct Replica {
    faults: EventFaults,
    latency: Duration,
    event_calls: AtomicU64,
    next_event: AtomicU64,
    calls: Mutex<HashMap<String, u64>>,
}

impl Replica {
    /// Counts a call, then waits out the configured latency.
    async fn answer(&self, route: &str) {
        if let Ok(mut calls) = self.calls.lock() {
            *calls.entry(route.to_owned()).or_default() += 1;
        }
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
    }
}

/// The replica, serving on 127.0.0.1 on a thread of its own until dropped.
#[derive(Debug)]
pub struct UpstreamReplica {
    addr: SocketAddr,
    replica: Arc<Replica>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl UpstreamReplica {
    /// A replica with the upstream's fault rates.
    pub fn start() -> Self {
        Self::with_faults(EventFaults::default())
    }

    /// A replica whose `/api/events` fails as `faults` says.
    pub fn with_faults(faults: EventFaults) -> Self {
        Self::with_options(ReplicaOptions {
            event_faults: faults,
            ..ReplicaOptions::default()
        })
    }

    /// A replica that behaves as `options` says.
    pub fn with_options(options: ReplicaOptions) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the upstream replica");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("replica address");
        let replica = Arc::new(Replica {
            faults: options.event_faults,
            latency: options.latency,
            event_calls: AtomicU64::new(0),
            next_event: AtomicU64::new(0),
            calls: Mutex::new(HashMap::new()),
        });
        let app = Router::new()
            .route("/api/users", get(users))
            .route("/api/content", get(content))
            .route("/api/events", get(events))
            .route("/api/events/source/{source}", get(events_by_source))
            .route("/health", get(health))
            .with_state(Arc::clone(&replica));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("replica runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                // Not a graceful stop: a stalled call must not hold the test up.
                tokio::select! {
                    served = axum::serve(listener, app) => {
                        if let Err(err) = served {
                            eprintln!("upstream replica stopped: {err}");
                        }
                    }
                    _ = stopped => {}
                }
            });
            runtime.shutdown_background();
        });
        Self {
            addr,
            replica,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its REST API's base URL, `http://127.0.0.1:PORT/api/`.
    pub fn base_url(&self) -> String {
        format!("http://{}/api/", self.addr)
    }

    /// Calls received on a route ("/api/users", "/api/events").
    pub fn calls(&self, route: &str) -> u64 {
        self.replica
            .calls
            .lock()
            .map(|calls| calls.get(route).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

impl Drop for UpstreamReplica {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

type Params = Query<HashMap<String, String>>;

fn bad_request(message: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": message }))).into_response()
}

/// A whole-number query parameter: `default` when absent, `None` when it
/// is not a number.
fn number(params: &HashMap<String, String>, name: &str, default: i64) -> Option<i64> {
    match params.get(name) {
        None => Some(default),
        Some(text) => text.trim().parse().ok(),
    }
}

async fn users(State(replica): State<Arc<Replica>>, Query(params): Params) -> Response {
    replica.answer("/api/users").await;
    let total = USERS as i64;
    let Some(offset) = number(&params, "offset", 0) else {
        return bad_request("Invalid offset");
    };
    let limit = match number(&params, "limit", PAGE_CAP) {
        Some(limit) if limit > 0 => limit.min(PAGE_CAP),
        _ => return bad_request("Invalid limit: a whole number from 1 to 200"),
    };
    if !(0..total).contains(&offset) {
        return bad_request("Invalid offset");
    }
    let end = (offset + limit).min(total);
    let users: Vec<Value> = (offset + 1..=end).map(|id| user(id as u64)).collect();
    let has_more = end < total;
    Json(json!({
        "users": users,
        "count": users.len(),
        "total_users": total,
        "offset": offset,
        "limit": limit,
        "has_more": has_more,
        "next_offset": if has_more { end } else { -1 },
    }))
    .into_response()
}

async fn content(State(replica): State<Arc<Replica>>) -> Response {
    replica.answer("/api/content").await;
    let content: Vec<Value> = (1..=CONTENT_ITEMS).map(content_item).collect();
    Json(json!({
        "content": content,
        "count": content.len(),
        "total_content": CONTENT_ITEMS,
    }))
    .into_response()
}

async fn events(State(replica): State<Arc<Replica>>, Query(params): Params) -> Response {
    replica.answer("/api/events").await;
    let call = replica.event_calls.fetch_add(1, Ordering::Relaxed);
    let faults = replica.faults;
    if faults.unavailable_every > 0 && call % faults.unavailable_every == 1 {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": "Service temporarily unavailable"})),
        )
            .into_response();
    }
    if faults.stall_every > 0 && call % faults.stall_every == 3 {
        tokio::time::sleep(faults.stall).await;
    }
    let count = match number(&params, "count", EVENTS_DEFAULT) {
        Some(count) if count > 0 => count.min(EVENTS_CAP),
        _ => return bad_request("Invalid count: a whole number from 1 to 200"),
    };
    let events = generate_events(&replica, count as u64, None);
    Json(json!({
        "events": events,
        "total_count": events.len(),
        "has_more": true,
    }))
    .into_response()
}

async fn events_by_source(
    State(replica): State<Arc<Replica>>,
    Path(source): Path<String>,
    Query(params): Params,
) -> Response {
    replica.answer("/api/events/source").await;
    let count = match number(&params, "count", SOURCE_EVENTS_DEFAULT) {
        Some(count) if count > 0 => count.min(SOURCE_EVENTS_CAP),
        _ => return bad_request("Invalid count: a whole number from 1 to 100"),
    };
    Json(json!({ "events": generate_events(&replica, count as u64, Some(&source)) }))
        .into_response()
}

async fn health(State(replica): State<Arc<Replica>>) -> Response {
    replica.answer("/health").await;
    Json(json!({"status": "healthy", "generator_running": false})).into_response()
}

// ---------------------------------------------------------------- data

const STATUSES: [&str; 3] = ["free", "paid", "trial"];
const COUNTRIES: [&str; 4] = ["US", "BR", "IT", "FR"];
const MEDIA_TYPES: [&str; 3] = ["video", "audio", "text"];
const PRAYER_TYPES: [&str; 6] = [
    "academic",
    "podcast",
    "reflection",
    "lectio_divina",
    "rosary",
    "meditation",
];
const EVENT_TYPES: [&str; 7] = [
    "click", "view", "purchase", "signup", "pray", "share", "like",
];
const SOURCES: [&str; 3] = ["web", "apple", "android"];

/// SplitMix64: a fixed, well-mixed sequence from a counter.
fn mix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D1_049B_B133_111E);
    z ^ (z >> 31)
}

fn pick<'a>(values: &[&'a str], random: u64) -> &'a str {
    values[(random % values.len() as u64) as usize]
}

/// Midnight UTC of a day of `year`, RFC 3339.
fn midnight(year: i32, random: u64) -> String {
    let days = if year % 4 == 0 { 366 } else { 365 };
    let day = (random % days) as u16 + 1;
    let date = Date::from_ordinal_date(year, day).expect("a day of the year");
    format!("{date}T00:00:00Z")
}

fn user(id: u64) -> Value {
    let random = mix(id);
    json!({
        "user_id": format!("user_{id}"),
        "age": 18 + random % 65,
        "status": pick(&STATUSES, random >> 8),
        "country": pick(&COUNTRIES, random >> 16),
        "created_at": midnight(2023, random >> 24),
    })
}

fn content_item(id: u64) -> Value {
    let random = mix(id ^ 0xC0_4E47);
    json!({
        "content_id": format!("content_{id}"),
        "media_type": pick(&MEDIA_TYPES, random),
        "prayer_type": pick(&PRAYER_TYPES, random >> 8),
        "created_at": midnight(2024, random >> 24),
    })
}

/// A UUID v4 string from two random words.
fn uuid_v4(high: u64, low: u64) -> String {
    let high = (high & 0xFFFF_FFFF_FFFF_0FFF) | 0x0000_0000_0000_4000;
    let low = (low & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        high >> 32,
        (high >> 16) & 0xFFFF,
        high & 0xFFFF,
        low >> 48,
        low & 0xFFFF_FFFF_FFFF
    )
}

/// `count` events, about 3% of them sent twice (same body), as upstream.
fn generate_events(replica: &Replica, count: u64, source: Option<&str>) -> Vec<Value> {
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("zero nanoseconds")
        .format(&Rfc3339)
        .expect("RFC 3339");
    let mut events = Vec::new();
    for _ in 0..count {
        let n = replica.next_event.fetch_add(1, Ordering::Relaxed);
        let random = mix(n ^ 0xE7E7);
        let event_type = pick(&EVENT_TYPES, random >> 4);
        let properties = match event_type {
            "purchase" => json!({
                "amount": 5.0 + ((random >> 20) % 49_500) as f64 / 100.0,
                "product_id": format!("prod_{}", 1 + (random >> 40) % 100),
            }),
            "view" | "like" | "share" => content_item(1 + (random >> 20) % CONTENT_ITEMS)
                .as_object()
                .map(|item| {
                    json!({
                        "content_id": item["content_id"],
                        "media_type": item["media_type"],
                        "prayer_type": item["prayer_type"],
                    })
                })
                .unwrap_or_default(),
            _ => json!({}),
        };
        let event = json!({
            "event_id": uuid_v4(random, mix(random)),
            "user_id": user(1 + (random >> 12) % USERS),
            "event_type": event_type,
            "source": source.unwrap_or_else(|| pick(&SOURCES, random >> 36)),
            "timestamp": now,
            "properties": properties,
        });
        if random % 100 < 3 {
            events.push(event.clone());
        }
        events.push(event);
    }
    events
}
