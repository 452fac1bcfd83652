//! The webhook path with durable acknowledgements: HTTP client -> gateway
//! -> EventIngest (validation, dedup, WAL append + fdatasync with group
//! commit) -> 200, while the flusher writes batches to a Storage service
//! on a directory lake in the background. Everything runs in this process
//! on loopback, on the real disk (the WAL lives in the target directory,
//! not in a tmpfs).
//!
//! Prints events/s accepted and per-request latency (p50, p99) at a few
//! concurrency levels; each request carries 10 events.
//!
//! `cargo bench -p vesper-tests --bench webhook`

#![allow(clippy::print_stdout, missing_docs)]

#[path = "../e2e/kit/mod.rs"]
mod kit;

use std::time::{Duration, Instant};

use kit::{spawn_gateway, spawn_ingest, spawn_storage};
use serde_json::{Value, json};
use vesper_gateway::GatewayConfig;
use vesper_ingest::IngestConfig;

const EVENTS_PER_REQUEST: u32 = 10;
const REQUESTS_PER_LEVEL: u32 = 3_000;
const CONCURRENCY: [u32; 4] = [1, 8, 32, 64];

fn body(level: u32, request: u32) -> String {
    let events: Vec<Value> = (0..EVENTS_PER_REQUEST)
        .map(|n| {
            let id = format!("{level:08x}-0000-4000-8000-{:012x}", request * EVENTS_PER_REQUEST + n);
            json!({
                "event_id": id,
                "user_id": {"user_id": "user_42", "age": 31, "status": "paid", "country": "BR",
                            "created_at": "2023-05-01T00:00:00Z"},
                "event_type": "view",
                "source": "android",
                "timestamp": "2026-11-25T21:04:05Z",
                "properties": {"content_id": "content_7", "media_type": "audio", "prayer_type": "rosary"},
            })
        })
        .collect();
    json!({ "events": events }).to_string()
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

async fn run() {
    let scratch = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("scratch dir");
    let storage = spawn_storage(&scratch.path().join("lake")).await;
    let ingest = spawn_ingest(
        IngestConfig::new(scratch.path().join("wal")),
        &storage.peer(),
    )
    .await;
    let gateway = spawn_gateway(GatewayConfig::all_peers_at(ingest.peer())).await;
    let url = gateway.url("/webhook/events");
    let client = reqwest::Client::new();

    println!(
        "webhook -> ingest (WAL fdatasync, group commit) -> 200; {EVENTS_PER_REQUEST} events per request, {REQUESTS_PER_LEVEL} requests per level"
    );
    println!();
    println!("| concurrency | events/s | requests/s | p50 | p99 |");
    println!("| --- | --- | --- | --- | --- |");
    for (level, concurrency) in CONCURRENCY.into_iter().enumerate() {
        let level = level as u32 + 1;
        let started = Instant::now();
        let mut workers = Vec::new();
        for worker in 0..concurrency {
            let client = client.clone();
            let url = url.clone();
            workers.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut request = worker;
                while request < REQUESTS_PER_LEVEL {
                    let body = body(level, request);
                    let sent = Instant::now();
                    let response = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await
                        .expect("the gateway answers");
                    assert_eq!(response.status(), 200, "{:?}", response.text().await);
                    latencies.push(sent.elapsed());
                    request += concurrency;
                }
                latencies
            }));
        }
        let mut latencies = Vec::new();
        for worker in workers {
            latencies.extend(worker.await.expect("worker"));
        }
        let elapsed = started.elapsed().as_secs_f64();
        latencies.sort();
        let requests = latencies.len() as f64;
        println!(
            "| {concurrency} | {:.0} | {:.0} | {:.2} ms | {:.2} ms |",
            requests * f64::from(EVENTS_PER_REQUEST) / elapsed,
            requests / elapsed,
            percentile(&latencies, 0.50).as_secs_f64() * 1e3,
            percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        );
    }
    let stats = ingest.engine.stats();
    println!();
    println!(
        "accepted {} events; {} written to the lake in {} objects so far",
        stats.accepted, stats.flushed_events, stats.flushed_objects
    );
    // Gateway, ingest, storage and the load generator share this process.
    println!("{}", vesper_tests::peak_rss_line());
    gateway.stop().await;
    ingest.stop().await;
    storage.stop().await;
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}
