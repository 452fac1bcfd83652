//! The load generator of the webhook benchmark, a process of its own:
//! `CONNECTIONS` keep-alive connections post `{"events":[...]}` bodies of
//! 10 realistic events with fresh ids (no signups, so every event takes the
//! durable path), either flat out or at a fixed total rate, for a fixed
//! time. Prints one JSON line: requests, events, non-2xx answers, errors,
//! events/s, and latency p50/p90/p99/max in milliseconds. At a fixed rate a
//! request's latency counts from when it was due, unless the connection was
//! free then: then from when the generator's timer woke to send it.
//!
//! `webhook_load URL[,URL...] SECONDS CONNECTIONS [EVENTS_PER_SECOND]`
//!
//! With several URLs (replicas of a fleet) the connections are spread over
//! them in turn, as a round-robin load balancer would.

#![allow(clippy::print_stdout, missing_docs)]

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::json;

const EVENTS_PER_REQUEST: usize = 10;
const TYPES: [&str; 6] = ["click", "view", "purchase", "pray", "share", "like"];
const SOURCES: [&str; 3] = ["web", "apple", "android"];

fn body(request: u64) -> String {
    let events: Vec<_> = (0..EVENTS_PER_REQUEST)
        .map(|n| {
            let kind = TYPES[(request as usize + n) % TYPES.len()];
            let properties = match kind {
                "purchase" => json!({"amount": 19.99, "product_id": format!("prod_{}", n + 1)}),
                "view" | "share" | "like" => json!({
                    "content_id": format!("content_{}", request % 1000 + 1),
                    "media_type": "audio",
                    "prayer_type": "rosary"
                }),
                _ => json!({}),
            };
            json!({
                "event_id": uuid::Uuid::new_v4().to_string(),
                "user_id": {
                    "user_id": format!("user_{}", request % 10_000 + 1),
                    "age": 31, "status": "paid", "country": "BR",
                    "created_at": "2023-05-01T00:00:00Z"
                },
                "event_type": kind,
                "source": SOURCES[n % SOURCES.len()],
                "timestamp": "2026-12-01T10:04:05Z",
                "properties": properties,
            })
        })
        .collect();
    json!({ "events": events }).to_string()
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    non_2xx: u64,
    errors: u64,
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, seconds, connections, rest @ ..] = args.as_slice() else {
        eprintln!("usage: webhook_load URL[,URL...] SECONDS CONNECTIONS [EVENTS_PER_SECOND]");
        std::process::exit(2);
    };
    let urls: Vec<Arc<String>> = url.split(',').map(|url| Arc::new(url.to_owned())).collect();
    let duration = Duration::from_secs_f64(seconds.parse().expect("SECONDS"));
    let connections: u64 = connections.parse().expect("CONNECTIONS");
    let rate: Option<f64> = rest
        .first()
        .map(|rate| rate.parse().expect("EVENTS_PER_SECOND"));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections as usize)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for connection in 0..connections {
        let client = client.clone();
        let url = Arc::clone(&urls[connection as usize % urls.len()]);
        // At a fixed rate each connection sends its share on a schedule;
        // a late answer does not push the schedule back (no coordinated
        // omission: latency counts from when the request was due).
        let interval = rate.map(|rate| {
            Duration::from_secs_f64(connections as f64 * EVENTS_PER_REQUEST as f64 / rate)
        });
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut request = connection;
            // Connections take turns: their schedules are spread over one
            // interval, so the rate is smooth instead of bursts of all of
            // them at once.
            let mut due = Instant::now()
                + interval.map_or(Duration::ZERO, |interval| {
                    interval.mul_f64(connection as f64 / connections as f64)
                });
            let mut previous_answer = Instant::now();
            while Instant::now() < deadline {
                // The body is built before the clock starts: rendering it is
                // the generator's work, not the server's.
                let body = body(request);
                if interval.is_some() {
                    tokio::time::sleep_until(due.into()).await;
                }
                // Latency counts from when the request was due if the
                // previous answer came after that (no coordinated omission:
                // a slow server cannot hide the requests behind it), else
                // from when the generator woke to send it: a timer fires up
                // to a millisecond late, and that lateness is the
                // generator's, not the server's.
                let sent = match interval {
                    Some(_) if previous_answer > due => due,
                    _ => Instant::now(),
                };
                let result = client
                    .post(url.as_str())
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                match result {
                    Ok(response) => {
                        if !response.status().is_success() {
                            tally.non_2xx += 1;
                        }
                        let _ = response.bytes().await;
                    }
                    Err(_) => tally.errors += 1,
                }
                previous_answer = Instant::now();
                let micros = previous_answer.duration_since(sent).as_micros();
                tally
                    .latencies_us
                    .push(u32::try_from(micros).unwrap_or(u32::MAX));
                request += connections;
                if let Some(interval) = interval {
                    due += interval;
                }
            }
            tally
        }));
    }
    let mut all = Tally::default();
    for task in tasks {
        let tally = task.await.expect("load task");
        all.latencies_us.extend(tally.latencies_us);
        all.non_2xx += tally.non_2xx;
        all.errors += tally.errors;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.latencies_us.sort_unstable();
    let quantile = |q: f64| -> f64 {
        if all.latencies_us.is_empty() {
            return 0.0;
        }
        let index = ((all.latencies_us.len() - 1) as f64 * q).round() as usize;
        f64::from(all.latencies_us[index]) / 1000.0
    };
    let requests = all.latencies_us.len() as u64;
    println!(
        "{}",
        json!({
            "requests": requests,
            "events": requests * EVENTS_PER_REQUEST as u64,
            "non_2xx": all.non_2xx,
            "errors": all.errors,
            "seconds": elapsed,
            "events_per_second": (requests * EVENTS_PER_REQUEST as u64) as f64 / elapsed,
            "p50_ms": quantile(0.50),
            "p90_ms": quantile(0.90),
            "p99_ms": quantile(0.99),
            "max_ms": quantile(1.0),
        })
    );
}
