//! The event generator against a test webhook receiver: what it pushes
//! (the upstream shape, the nested user, duplicates, properties by type),
//! how it counts, and that it stops.

use std::{collections::HashMap, time::Duration};

use axum::{Json, Router, extract::State, http::StatusCode, routing::post};
use serde_json::Value;
use tokio::{net::TcpListener, sync::mpsc};
use vesper::{Shutdown, config::Range};
use vesper_datasource::{DataSourceConfig, DataSourceService, FaultPolicy, GeneratorConfig};
use vesper_tests::{eventually, unserved_addr};

/// A webhook that records every body and answers `status`.
async fn receiver(status: StatusCode) -> (String, mpsc::UnboundedReceiver<Value>, Shutdown) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = Router::new()
        .route(
            "/webhook/events",
            post(
                |State((tx, status)): State<(mpsc::UnboundedSender<Value>, StatusCode)>,
                 Json(body): Json<Value>| async move {
                    let _ = tx.send(body);
                    (status, Json(serde_json::json!({"status": "success"})))
                },
            ),
        )
        .with_state((tx, status));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = Shutdown::new();
    let stop = shutdown.signalled();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
            .expect("receiver");
    });
    (format!("http://{addr}/webhook/events"), rx, shutdown)
}

/// Stops the receiver and returns how many bodies it took that were not
/// received yet: once the channel closes, nothing more can arrive.
async fn close_receiver(stop: Shutdown, bodies: &mut mpsc::UnboundedReceiver<Value>) -> usize {
    stop.trigger();
    let mut late = 0;
    while tokio::time::timeout(Duration::from_secs(20), bodies.recv())
        .await
        .expect("the receiver closes within 20 s")
        .is_some()
    {
        late += 1;
    }
    late
}

fn fast_generator(url: &str, batch: u32) -> DataSourceConfig {
    DataSourceConfig {
        seed: 42,
        faults: FaultPolicy::NONE,
        generator: GeneratorConfig {
            webhook_url: url.parse().expect("url"),
            batch: Range {
                min: batch,
                max: batch,
            },
            interval: Range {
                min: Duration::from_millis(5),
                max: Duration::from_millis(15),
            },
            delay: Duration::ZERO,
            autostart: true,
            signing: None,
        },
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

#[tokio::test]
async fn pushes_have_the_upstream_shape_with_duplicates() {
    let (url, mut bodies, receiver_stop) = receiver(StatusCode::OK).await;
    let shutdown = Shutdown::new();
    let service =
        DataSourceService::new(fast_generator(&url, 100), shutdown.clone()).expect("service");
    let generator = service.generator().clone();
    assert!(!generator.is_running());
    assert!(generator.start());
    assert!(!generator.start(), "starting twice is a no-op");

    let mut pushes = Vec::new();
    while pushes.len() < 20 {
        let body = tokio::time::timeout(Duration::from_secs(20), bodies.recv())
            .await
            .expect("a push within 20 s")
            .expect("receiver open");
        pushes.push(body);
    }
    assert!(generator.stop());
    generator.join().await;
    assert!(!generator.is_running());
    // Whatever arrived between the 20th push and the stop counts too.
    while let Ok(body) = bodies.try_recv() {
        pushes.push(body);
    }

    let mut events_received = 0;
    let mut duplicated_pushes = 0;
    let mut event_types = HashMap::new();
    for body in &pushes {
        assert_eq!(keys(body), ["events"]);
        let events = body["events"].as_array().expect("events");
        events_received += events.len();
        // The whole body decodes with the webhook's own decoder.
        let decoded = vesper::wire::decode_webhook(body).expect("valid upstream events");
        let mut by_id: HashMap<&str, &Value> = HashMap::new();
        let mut duplicates = 0;
        for (event, typed) in events.iter().zip(&decoded) {
            assert_eq!(
                keys(event),
                [
                    "event_id",
                    "user_id",
                    "event_type",
                    "source",
                    "timestamp",
                    "properties"
                ]
            );
            // The quirk: user_id carries the whole user.
            assert_eq!(
                keys(&event["user_id"]),
                ["user_id", "age", "status", "country", "created_at"]
            );
            assert!(typed.user.is_some());
            let event_type = event["event_type"].as_str().expect("type").to_owned();
            let properties = &event["properties"];
            match event_type.as_str() {
                "purchase" => assert_eq!(keys(properties), ["amount", "product_id"]),
                "view" | "like" | "share" => {
                    assert_eq!(
                        keys(properties),
                        ["content_id", "media_type", "prayer_type"]
                    );
                }
                _ => assert!(keys(properties).is_empty(), "{event}"),
            }
            *event_types.entry(event_type).or_insert(0) += 1;
            let id = event["event_id"].as_str().expect("id");
            if let Some(original) = by_id.insert(id, event) {
                assert_eq!(original, event, "a duplicate is the same body");
                duplicates += 1;
            }
        }
        assert_eq!(by_id.len(), 100, "100 distinct events per push");
        if duplicates > 0 {
            duplicated_pushes += 1;
        }
    }
    // 3% of 100 events: a push without any duplicate has probability
    // 0.97^100 ≈ 5%, so nearly every one of 20 pushes has some.
    assert!(
        duplicated_pushes >= 10,
        "{duplicated_pushes} of {}",
        pushes.len()
    );
    assert_eq!(event_types.len(), 7, "{event_types:?}");

    let status = generator.status();
    assert!(!status.running);
    assert_eq!(status.webhook_url, url);
    assert_eq!(status.batches_delivered, pushes.len() as u64);
    assert_eq!(status.events_delivered, events_received as u64);
    assert_eq!(status.batches_failed, 0);

    // Stopped means stopped: by the time the receiver has closed, it took
    // nothing beyond what the generator had delivered when it stopped.
    assert_eq!(close_receiver(receiver_stop, &mut bodies).await, 0);
    assert_eq!(generator.status().batches_delivered, pushes.len() as u64);
    shutdown.trigger();
}

#[tokio::test]
async fn refused_and_unreachable_pushes_are_counted_not_retried() {
    let (url, mut bodies, receiver_stop) = receiver(StatusCode::BAD_REQUEST).await;
    let shutdown = Shutdown::new();
    let service =
        DataSourceService::new(fast_generator(&url, 3), shutdown.clone()).expect("service");
    let generator = service.generator().clone();
    generator.start();
    for _ in 0..5 {
        tokio::time::timeout(Duration::from_secs(20), bodies.recv())
            .await
            .expect("a push within 20 s")
            .expect("receiver open");
    }
    generator.stop();
    generator.join().await;
    let mut received = 5;
    while bodies.try_recv().is_ok() {
        received += 1;
    }
    let status = generator.status();
    assert_eq!(status.batches_delivered, 0);
    assert_eq!(status.events_delivered, 0);
    assert_eq!(
        status.batches_failed, received,
        "every refused push counted once, none retried"
    );
    receiver_stop.trigger();

    // Nothing serves at all: the generator keeps going and counts.
    let dead_url = format!("http://{}/webhook/events", unserved_addr());
    let service =
        DataSourceService::new(fast_generator(&dead_url, 3), shutdown.clone()).expect("service");
    let generator = service.generator().clone();
    generator.start();
    eventually("three failed pushes", Duration::from_secs(20), async || {
        generator.status().batches_failed >= 3
    })
    .await;
    assert!(generator.is_running());
    // The service's shutdown stops it as well.
    shutdown.trigger();
    generator.join().await;
    assert!(!generator.is_running());
    assert!(!generator.start(), "a shut-down generator stays stopped");
}

#[tokio::test]
async fn serve_starts_the_generator_after_its_delay_and_stops_it_on_shutdown() {
    let (url, mut bodies, receiver_stop) = receiver(StatusCode::OK).await;
    let mut config = fast_generator(&url, 2);
    config.generator.delay = Duration::from_millis(300);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let shutdown = Shutdown::new();
    let started = tokio::time::Instant::now();
    let server = tokio::spawn(vesper_datasource::serve(
        listener,
        config,
        shutdown.signalled(),
    ));
    tokio::time::timeout(Duration::from_secs(20), bodies.recv())
        .await
        .expect("a push within 20 s")
        .expect("receiver open");
    assert!(started.elapsed() >= Duration::from_millis(300));
    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .expect("serve returns after shutdown")
        .expect("task")
        .expect("served");
    while bodies.try_recv().is_ok() {}
    assert_eq!(
        close_receiver(receiver_stop, &mut bodies).await,
        0,
        "no push after shutdown"
    );
}

#[tokio::test]
async fn with_a_secret_every_push_is_signed() {
    use axum::{body::Bytes, http::HeaderMap};
    use vesper::signature::{SIGNATURE_HEADER, WebhookSecret};

    let (tx, mut pushes) = mpsc::unbounded_channel::<(HeaderMap, Bytes)>();
    let app = Router::new().route(
        "/webhook/events",
        post(move |headers: HeaderMap, body: Bytes| {
            let tx = tx.clone();
            async move {
                let _ = tx.send((headers, body));
                StatusCode::OK
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!(
        "http://{}/webhook/events",
        listener.local_addr().expect("addr")
    );
    tokio::spawn(async move { axum::serve(listener, app).await });

    let secret = WebhookSecret::new("generator-secret").expect("secret");
    let mut config = fast_generator(&url, 3);
    config.generator.signing = Some(secret.clone());
    let shutdown = Shutdown::new();
    let service = DataSourceService::new(config, shutdown.clone()).expect("service");
    service.generator().start();
    let (headers, body) = tokio::time::timeout(Duration::from_secs(10), pushes.recv())
        .await
        .expect("a push within 10 s")
        .expect("a push");
    shutdown.trigger();

    let header = headers[SIGNATURE_HEADER].to_str().expect("ascii");
    let (timestamp, digest) = header
        .strip_prefix("t=")
        .and_then(|rest| rest.split_once(",v1="))
        .expect("t=...,v1=...");
    let timestamp: i64 = timestamp.parse().expect("unix seconds");
    let digest = hex::decode(digest).expect("hex digest");
    assert!(
        secret.matches(timestamp, &body, &digest),
        "the signature verifies"
    );
    assert!((vesper::signature::unix_now() - timestamp).abs() < 60);
    assert_eq!(headers["content-type"], "application/json");
}
