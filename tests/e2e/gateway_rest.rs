//! The old data server's REST API through a real HTTP client against an
//! in-process gateway and DataSource: every response shape, field order
//! and error of docs/compatibility.md, the paging walk, the deliberate faults, and a
//! DataSource that comes up after the gateway.

mod kit;

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use kit::{Service, http_client, spawn_datasource_on, spawn_gateway};
use serde_json::{Value, json};
use vesper::{config::PeerAddr, wire::user_json};
use vesper_datasource::{DataSet, DataSourceConfig, FaultPolicy, GeneratorConfig};
use vesper_gateway::GatewayConfig;
use vesper_tests::{FreePort, eventually, unserved_addr};

const SEED: u64 = 7;

/// A DataSource on `SEED` with `faults`, its generator idle.
async fn start_datasource(faults: FaultPolicy) -> Service {
    start_datasource_on(FreePort::new(), faults)
}

fn start_datasource_on(port: FreePort, faults: FaultPolicy) -> Service {
    spawn_datasource_on(
        port,
        DataSourceConfig {
            seed: SEED,
            faults,
            generator: GeneratorConfig {
                // Nothing listens there; only the generator's state matters.
                webhook_url: "http://127.0.0.1:9/webhook/events".parse().expect("url"),
                delay: Duration::from_secs(3600),
                autostart: false,
                ..GeneratorConfig::default()
            },
        },
    )
}

/// A gateway in front of a DataSource, with a client pointed at it.
struct Gateway {
    service: Service,
    client: reqwest::Client,
}

impl Gateway {
    async fn start(datasource: PeerAddr) -> Self {
        // The gateway's other peers are down.
        let mut config =
            GatewayConfig::all_peers_at(unserved_addr().to_string().parse().expect("peer"));
        config.datasource = datasource;
        Self {
            service: spawn_gateway(config).await,
            client: http_client(),
        }
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        Self::read(self.send(self.client.get(self.service.url(path))).await).await
    }

    async fn post(&self, path: &str) -> (u16, Value) {
        Self::read(self.send(self.client.post(self.service.url(path))).await).await
    }

    /// Status and the raw body text, for byte-exact comparisons.
    async fn get_text(&self, path: &str) -> (u16, String) {
        let response = self.send(self.client.get(self.service.url(path))).await;
        (
            response.status().as_u16(),
            response.text().await.expect("body"),
        )
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> reqwest::Response {
        request.send().await.expect("the gateway answers")
    }

    async fn read(response: reqwest::Response) -> (u16, Value) {
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert_eq!(content_type, "application/json", "status {status}");
        (status, response.json().await.expect("JSON body"))
    }
}

fn keys(value: &Value) -> Vec<&str> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .map(String::as_str)
        .collect()
}

/// An RFC 3339 UTC timestamp in whole seconds: `2026-11-25T21:04:05Z`.
fn assert_upstream_timestamp(text: &str) {
    let bytes = text.as_bytes();
    assert_eq!(bytes.len(), 20, "{text}");
    for (index, byte) in bytes.iter().enumerate() {
        let expected_separator = match index {
            4 | 7 => Some(b'-'),
            10 => Some(b'T'),
            13 | 16 => Some(b':'),
            19 => Some(b'Z'),
            _ => None,
        };
        match expected_separator {
            Some(separator) => assert_eq!(*byte, separator, "{text}"),
            None => assert!(byte.is_ascii_digit(), "{text}"),
        }
    }
    assert!(vesper::wire::parse_timestamp(text).is_some(), "{text}");
}

const USER_KEYS: [&str; 5] = ["user_id", "age", "status", "country", "created_at"];
const CONTENT_KEYS: [&str; 4] = ["content_id", "media_type", "prayer_type", "created_at"];
const EVENT_KEYS: [&str; 6] = [
    "event_id",
    "user_id",
    "event_type",
    "source",
    "timestamp",
    "properties",
];

fn assert_upstream_user(user: &Value) {
    assert_eq!(keys(user), USER_KEYS, "{user}");
    let created = user["created_at"].as_str().expect("created_at");
    assert_upstream_timestamp(created);
    assert!(created.starts_with("2023-") && created.ends_with("T00:00:00Z"));
}

fn assert_upstream_event(event: &Value) {
    assert_eq!(keys(event), EVENT_KEYS, "{event}");
    assert_upstream_user(&event["user_id"]);
    assert_upstream_timestamp(event["timestamp"].as_str().expect("timestamp"));
    let id = event["event_id"].as_str().expect("event_id");
    let uuid = uuid_version(id);
    assert_eq!(uuid, Some(4), "{id}");
    let properties = &event["properties"];
    match event["event_type"].as_str().expect("event_type") {
        "purchase" => assert_eq!(keys(properties), ["amount", "product_id"]),
        "view" | "like" | "share" => assert_eq!(
            keys(properties),
            ["content_id", "media_type", "prayer_type"]
        ),
        "click" | "signup" | "pray" => assert_eq!(properties, &json!({})),
        other => panic!("unknown event type {other}"),
    }
    assert!(["web", "apple", "android"].contains(&event["source"].as_str().expect("source")));
}

/// The version digit of a canonical UUID.
fn uuid_version(text: &str) -> Option<u32> {
    let groups: Vec<_> = text.split('-').collect();
    let lengths: Vec<_> = groups.iter().map(|group| group.len()).collect();
    if lengths != [8, 4, 4, 4, 12] || !text.chars().all(|c| c == '-' || c.is_ascii_hexdigit()) {
        return None;
    }
    groups[2].chars().next()?.to_digit(16)
}

#[tokio::test]
async fn every_response_has_the_old_shape() {
    let datasource = start_datasource(FaultPolicy::NONE).await;
    let gateway = Gateway::start(datasource.peer()).await;
    let data = DataSet::generate(SEED);

    // The example of docs/rest-api.md: the last page.
    let (status, page) = gateway.get("/api/users?offset=9990").await;
    assert_eq!(status, 200);
    assert_eq!(
        keys(&page),
        [
            "users",
            "count",
            "total_users",
            "offset",
            "limit",
            "has_more",
            "next_offset"
        ]
    );
    let users = page["users"].as_array().expect("users");
    assert_eq!(users.len(), 10);
    assert_eq!(
        (
            &page["count"],
            &page["total_users"],
            &page["offset"],
            &page["limit"],
            &page["has_more"],
            &page["next_offset"]
        ),
        (
            &json!(10),
            &json!(10000),
            &json!(9990),
            &json!(200),
            &json!(false),
            &json!(-1)
        )
    );
    for (user, expected) in users.iter().zip(&data.users()[9990..]) {
        assert_upstream_user(user);
        assert_eq!(user, &user_json(expected));
    }
    assert_eq!(users[9]["user_id"], "user_10000");

    let (status, first) = gateway.get("/api/users").await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            &first["count"],
            &first["offset"],
            &first["limit"],
            &first["has_more"],
            &first["next_offset"]
        ),
        (
            &json!(200),
            &json!(0),
            &json!(200),
            &json!(true),
            &json!(200)
        )
    );

    let (status, catalogue) = gateway.get("/api/content").await;
    assert_eq!(status, 200);
    assert_eq!(keys(&catalogue), ["content", "count", "total_content"]);
    assert_eq!(catalogue["count"], 1000);
    assert_eq!(catalogue["total_content"], 1000);
    let content = catalogue["content"].as_array().expect("content");
    assert_eq!(content.len(), 1000);
    for (index, item) in content.iter().enumerate() {
        assert_eq!(keys(item), CONTENT_KEYS, "{item}");
        assert_eq!(item["content_id"], format!("content_{}", index + 1));
        let created = item["created_at"].as_str().expect("created_at");
        assert_upstream_timestamp(created);
        assert!(created.starts_with("2024-") && created.ends_with("T00:00:00Z"));
    }

    let (status, events) = gateway.get("/api/events").await;
    assert_eq!(status, 200);
    assert_eq!(keys(&events), ["events", "total_count", "has_more"]);
    let list = events["events"].as_array().expect("events");
    assert_eq!(events["total_count"], list.len());
    assert_eq!(events["has_more"], true);
    let distinct: HashSet<_> = list.iter().map(|e| e["event_id"].clone()).collect();
    assert_eq!(distinct.len(), 50, "50 distinct events by default");
    list.iter().for_each(assert_upstream_event);

    let (_, capped) = gateway.get("/api/events?count=500").await;
    let distinct: HashSet<_> = capped["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["event_id"].clone())
        .collect();
    assert_eq!(distinct.len(), 200, "count is capped at 200");

    for source in ["web", "apple", "android"] {
        let (status, by_source) = gateway.get(&format!("/api/events/source/{source}")).await;
        assert_eq!(status, 200);
        assert_eq!(keys(&by_source), ["events"]);
        let list = by_source["events"].as_array().expect("events");
        let distinct: HashSet<_> = list.iter().map(|e| e["event_id"].clone()).collect();
        assert_eq!(distinct.len(), 20, "20 distinct events by default");
        for event in list {
            assert_upstream_event(event);
            assert_eq!(event["source"], source);
        }
    }
    let (_, capped) = gateway.get("/api/events/source/web?count=1000").await;
    let distinct: HashSet<_> = capped["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["event_id"].clone())
        .collect();
    assert_eq!(distinct.len(), 100, "count by source is capped at 100");

    let (status, started) = gateway.post("/start-generator").await;
    assert_eq!(
        (status, started),
        (200, json!({"message": "Event generator started"}))
    );
    let (status, health) = gateway.get("/health").await;
    assert_eq!(status, 200);
    assert_eq!(health["generator_running"], true);
    let (status, stopped) = gateway.post("/stop-generator").await;
    assert_eq!(
        (status, stopped),
        (200, json!({"message": "Event generator stopped"}))
    );
    let (_, health) = gateway.get("/health").await;
    assert_eq!(health["generator_running"], false);
    // Both are idempotent, as before.
    assert_eq!(gateway.post("/stop-generator").await.0, 200);

    datasource.stop().await;
}

#[tokio::test]
async fn bad_input_gets_a_400_in_the_old_words() {
    let datasource = start_datasource(FaultPolicy::NONE).await;
    let gateway = Gateway::start(datasource.peer()).await;
    let cases = [
        // What the old server refused, refused the same way.
        ("/api/users?offset=10000", "Invalid offset"),
        ("/api/users?offset=-1", "Invalid offset"),
        // What it mishandled (docs/compatibility.md, "Where vesper deliberately differs").
        ("/api/users?offset=abc", "Invalid offset"),
        ("/api/users?offset=", "Invalid offset"),
        ("/api/users?offset=99999999999999999999", "Invalid offset"),
        ("/api/users?limit=0", "Invalid limit"),
        ("/api/users?limit=-5", "Invalid limit"),
        ("/api/users?limit=ten", "Invalid limit"),
        ("/api/users?limit=1.5", "Invalid limit"),
        ("/api/events?count=0", "Invalid count"),
        ("/api/events?count=-1", "Invalid count"),
        ("/api/events?count=lots", "Invalid count"),
        ("/api/events/source/web?count=0", "Invalid count"),
        ("/api/events/source/desktop", "Invalid source"),
        ("/api/events/source/WEB", "Invalid source"),
        ("/api/events/source/%FF", "Invalid source"),
    ];
    for (path, message) in cases {
        let (status, body) = gateway.get_text(path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body, format!(r#"{{"error":"{message}"}}"#), "{path}");
    }
    // A huge limit is a valid request: capped, as before.
    let (status, page) = gateway.get("/api/users?limit=99999999999999999999").await;
    assert_eq!((status, &page["limit"]), (200, &json!(200)));
    datasource.stop().await;
}

#[tokio::test]
async fn paging_walks_every_user_exactly_once() {
    let datasource = start_datasource(FaultPolicy::NONE).await;
    let gateway = Gateway::start(datasource.peer()).await;

    let mut seen = HashSet::new();
    for offset in (0..10_000).step_by(200) {
        let (status, page) = gateway
            .get(&format!("/api/users?offset={offset}&limit=200"))
            .await;
        assert_eq!(status, 200);
        for user in page["users"].as_array().expect("users") {
            let id = user["user_id"].as_str().expect("user_id").to_owned();
            assert!(seen.insert(id.clone()), "{id} seen twice");
        }
        let last = offset + 200 >= 10_000;
        assert_eq!(page["has_more"], !last, "offset {offset}");
        let next = if last { -1 } else { offset + 200 };
        assert_eq!(page["next_offset"], next, "offset {offset}");
    }
    assert_eq!(seen.len(), 10_000);
    assert!((1..=10_000).all(|n| seen.contains(&format!("user_{n}"))));

    // A client following next_offset with an over-large limit ends too.
    let (mut offset, mut pages, mut users) = (0, 0, 0);
    while offset != -1 {
        let (status, page) = gateway
            .get(&format!("/api/users?offset={offset}&limit=500"))
            .await;
        assert_eq!(status, 200);
        assert_eq!(page["limit"], 200, "limit 500 is capped to 200");
        users += page["users"].as_array().expect("users").len();
        offset = page["next_offset"].as_i64().expect("next_offset");
        pages += 1;
    }
    assert_eq!((pages, users), (50, 10_000));

    let (status, tail) = gateway.get("/api/users?offset=9990").await;
    assert_eq!(status, 200);
    assert_eq!(tail["count"], 10);
    assert_eq!(tail["has_more"], false);
    let (status, past) = gateway.get("/api/users?offset=10000").await;
    assert_eq!((status, past), (400, json!({"error": "Invalid offset"})));
    datasource.stop().await;
}

#[tokio::test]
async fn unfiltered_events_fail_like_upstream_and_by_source_stays_reliable() {
    let datasource = start_datasource(FaultPolicy {
        fault_rate: 1.0,
        stall_rate: 0.0,
        stall: Duration::ZERO,
    })
    .await;
    let gateway = Gateway::start(datasource.peer()).await;
    for _ in 0..3 {
        let response = gateway
            .client
            .get(gateway.service.url("/api/events"))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 503);
        assert!(response.headers().contains_key("retry-after"));
        assert_eq!(
            response.text().await.expect("body"),
            r#"{"error":"Service temporarily unavailable"}"#
        );
    }
    let (status, by_source) = gateway.get("/api/events/source/android").await;
    assert_eq!(status, 200);
    assert!(!by_source["events"].as_array().expect("events").is_empty());
    datasource.stop().await;
}

#[tokio::test]
async fn stalled_calls_answer_after_the_stall() {
    let stall = Duration::from_secs(1);
    let datasource = start_datasource(FaultPolicy {
        fault_rate: 0.0,
        stall_rate: 1.0,
        stall,
    })
    .await;
    let gateway = Gateway::start(datasource.peer()).await;
    let started = Instant::now();
    let (status, events) = gateway.get("/api/events?count=3").await;
    assert_eq!(status, 200);
    assert!(started.elapsed() >= stall, "{:?}", started.elapsed());
    assert!(events["total_count"].as_u64().expect("count") >= 3);
    // Filtered calls never stall.
    let started = Instant::now();
    assert_eq!(gateway.get("/api/events/source/web").await.0, 200);
    assert!(started.elapsed() < stall, "{:?}", started.elapsed());
    datasource.stop().await;
}

#[tokio::test]
async fn a_missing_datasource_is_a_503_until_it_comes_up() {
    // The DataSource's port is held, refusing connections, until it comes
    // up there.
    let port = FreePort::new();
    let gateway = Gateway::start(port.addr().to_string().parse().expect("peer")).await;

    for path in ["/api/users", "/api/content", "/api/events"] {
        let (status, body) = gateway.get(path).await;
        assert_eq!(status, 503, "{path}: {body}");
        let message = body["error"].as_str().expect("error");
        assert!(message.contains("datasource"), "{message}");
    }
    let (status, body) = gateway.post("/start-generator").await;
    assert_eq!(status, 503, "{body}");

    let datasource = start_datasource_on(port, FaultPolicy::NONE);
    eventually(
        "the gateway to reach the DataSource",
        Duration::from_secs(20),
        async || {
            let (status, body) = gateway.get("/api/users?offset=9990").await;
            if status == 200 {
                assert_eq!(body["count"], 10);
            } else {
                assert_eq!(status, 503, "{body}");
            }
            status == 200
        },
    )
    .await;
    datasource.stop().await;
}
