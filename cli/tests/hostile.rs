//! Hostile input against `vesper up` (the real binary, on free ports): each
//! attack gets its documented status, the process stays up with its peak
//! memory under a bound, and every event acknowledged before the attacks is
//! in the lake exactly once after a SIGKILL and a restart. The limits are
//! listed in docs/ingest.md and docs/limits.md.

use std::path::Path;

use serde_json::{Value, json};
use vesper_tests::{Grpcurl, VesperProcess, lake_event_ids, peak_rss_bytes_of};

const BIN: &str = env!("CARGO_BIN_EXE_vesper");

/// Peak memory `vesper up` may reach under the attacks below (it idles
/// near 45 MB; one unbounded body used to take it past 300 MB).
const PEAK_RSS_BOUND: u64 = 160 * 1024 * 1024;

fn up(dir: &Path) -> VesperProcess {
    let lake = dir.join("lake").to_string_lossy().into_owned();
    let wal = dir.join("wal").to_string_lossy().into_owned();
    VesperProcess::start_with(
        Path::new(BIN),
        &[
            "up",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--lake",
            &lake,
            "--wal-dir",
            &wal,
            "--no-generator",
            // Nothing reaches the lake before the kill: replay must do it.
            "--max-batch-age",
            "1h",
        ],
        &[],
    )
}

fn event(n: u32, properties: Value) -> Value {
    json!({
        "event_id": format!("00000000-0000-4000-8000-{n:012}"),
        "user_id": format!("user_{n}"),
        "event_type": "click",
        "source": "web",
        "timestamp": "2026-12-01T10:00:00Z",
        "properties": properties,
    })
}

fn nested_arrays(depth: usize) -> Value {
    let mut value = json!(1);
    for _ in 0..depth {
        value = json!([value]);
    }
    value
}

fn post(up: &VesperProcess, body: impl Into<reqwest::blocking::Body>) -> (u16, Value) {
    let response = reqwest::blocking::Client::new()
        .post(format!("http://{}/webhook/events", up.http_addr()))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .expect("the webhook answers");
    let status = response.status().as_u16();
    let body = response.json().unwrap_or(Value::Null);
    (status, body)
}

#[test]
fn hostile_requests_get_their_status_and_acknowledged_events_survive_a_kill() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut platform = up(dir.path());

    // Ten events, one per request; the sixth nests 48 levels deep, which
    // was once acknowledged and then lost on replay.
    let mut acknowledged = Vec::new();
    for n in 1..=10 {
        let properties = if n == 6 {
            json!({ "x": nested_arrays(48) })
        } else {
            json!({ "n": n, "tags": ["a", {"b": [1, 2, 3]}] })
        };
        let one = event(n, properties);
        let (status, body) = post(&platform, json!({ "events": [one.clone()] }).to_string());
        if n == 6 {
            assert_eq!(status, 400, "{body}");
            let details = body.to_string();
            assert!(
                details.contains("events[0].properties.x[0]") && details.contains("nests deeper"),
                "the refusal names the field: {body}"
            );
        } else {
            assert_eq!(status, 200, "{body}");
            acknowledged.push(one["event_id"].as_str().expect("id").to_owned());
        }
    }

    // The attacks, each with its documented answer.
    let empties = format!("{{\"events\":[{}]}}", vec!["{}"; 300_000].join(","));
    let (status, body) = post(&platform, empties);
    assert_eq!(status, 413, "{body}");
    assert!(body.to_string().contains("10000"), "names the cap: {body}");

    let oversized = event(100, json!({ "blob": "x".repeat(300 * 1024) }));
    let (status, body) = post(&platform, json!({ "events": [oversized] }).to_string());
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("--max-event-bytes"), "{body}");

    let many_keys: serde_json::Map<String, Value> =
        (0..1_001).map(|k| (format!("k{k}"), json!(k))).collect();
    let (status, body) = post(
        &platform,
        json!({ "events": [event(101, Value::Object(many_keys))] }).to_string(),
    );
    assert_eq!(status, 400, "{body}");

    let mut ancient = event(102, json!({}));
    ancient["timestamp"] = json!("1969-07-20T20:17:40Z");
    let (status, body) = post(&platform, json!({ "events": [ancient] }).to_string());
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("events[0].timestamp"), "{body}");

    let (status, _) = post(
        &platform,
        format!("{}1{}", "[".repeat(5_000), "]".repeat(5_000)),
    );
    assert_eq!(status, 400, "a body nested past the parser's limit");
    let (status, _) = post(&platform, "{\"events\": [");
    assert_eq!(status, 400, "a truncated body");

    // Still up, and within its memory bound.
    let health = reqwest::blocking::get(format!("http://{}/health", platform.http_addr()))
        .expect("health answers");
    assert!(health.status().is_success());
    let peak = peak_rss_bytes_of(platform.pid()).expect("VmHWM on Linux");
    assert!(
        peak < PEAK_RSS_BOUND,
        "peak RSS {peak} bytes is over the bound {PEAK_RSS_BOUND}"
    );

    // SIGKILL, restart on the same log and lake, flush.
    platform.kill();
    let platform = up(dir.path());
    Grpcurl::new(platform.grpc_addr())
        .call("vesper.v1.EventIngest/Flush", "{}")
        .expect("flush after the restart");
    let counts = lake_event_ids(&dir.path().join("lake"));
    for id in &acknowledged {
        assert_eq!(
            counts.get(id),
            Some(&1),
            "event {id} once in the lake: {counts:?}"
        );
    }
    assert_eq!(
        counts.len(),
        acknowledged.len(),
        "nothing refused is in the lake"
    );
}

#[test]
fn clashing_bounds_refuse_to_start_naming_the_flags() {
    let dir = tempfile::tempdir().expect("temp dir");
    let wal = dir.path().join("wal").to_string_lossy().into_owned();
    let lake = dir.path().join("lake").to_string_lossy().into_owned();
    for (args, expected) in [
        (
            vec![
                "ingest",
                "--wal-dir",
                &wal,
                "--max-event-bytes",
                "1MiB",
                "--batch-bytes",
                "512KiB",
            ],
            "--batch-bytes",
        ),
        (
            vec!["ingest", "--wal-dir", &wal, "--max-buffered-bytes", "1MiB"],
            "--max-buffered-bytes",
        ),
        (
            vec![
                "storage",
                "--grpc-addr",
                "127.0.0.1:0",
                "--lake",
                &lake,
                "--grpc-max-in-flight-bytes",
                "1MiB",
            ],
            "--grpc-max-in-flight-bytes",
        ),
    ] {
        let output = VesperProcess::run_with(Path::new(BIN), &args, &[]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} started");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}
