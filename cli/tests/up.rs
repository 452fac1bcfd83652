//! `vesper up` and `vesper demo` as a user runs them: the real binary on a
//! temp dir with free ports, operated with curl-like HTTP calls and the real
//! grpcurl.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde_json::Value;
use vesper_tests::{Grpcurl, VesperProcess, eventually_blocking, lake_records};

const BIN: &str = env!("CARGO_BIN_EXE_vesper");

/// A directory for the lake and the WAL, and the flags that use it.
struct Workdir {
    dir: tempfile::TempDir,
}

impl Workdir {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn lake(&self) -> PathBuf {
        self.dir.path().join("lake")
    }

    fn wal(&self) -> PathBuf {
        self.dir.path().join("wal")
    }

    /// `vesper up` on free ports, the generator pushing at once and often.
    fn up(&self, extra: &[&str]) -> VesperProcess {
        self.up_with_env(extra, &[])
    }

    fn up_with_env(&self, extra: &[&str], env: &[(&str, String)]) -> VesperProcess {
        let args = self.platform_args("up", extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        VesperProcess::start_with(Path::new(BIN), &args, env)
    }

    /// `command` (up or demo) on this lake and WAL, on free ports, with a
    /// generator that pushes at once and often, then `extra`.
    fn platform_args(&self, command: &str, extra: &[&str]) -> Vec<String> {
        let lake = self.lake().to_string_lossy().into_owned();
        let wal = self.wal().to_string_lossy().into_owned();
        let mut args: Vec<String> = [
            command,
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--lake",
            &lake,
            "--wal-dir",
            &wal,
            "--generator-delay",
            "0s",
            "--generator-interval",
            "100ms-200ms",
            "--max-batch-age",
            "1s",
        ]
        .map(str::to_owned)
        .to_vec();
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        args
    }

    /// Lake files under `prefix` (relative paths), without the lake's own
    /// `.vesper/` files.
    fn files(&self, prefix: &str) -> Vec<String> {
        let root = self.lake();
        let mut found = Vec::new();
        let mut pending = vec![root.join(prefix)];
        while let Some(dir) = pending.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    pending.push(path);
                } else if let Ok(relative) = path.strip_prefix(&root) {
                    found.push(relative.to_string_lossy().into_owned());
                }
            }
        }
        found.sort();
        found
    }

    /// Every record of the webhook objects.
    fn events(&self) -> Vec<Value> {
        lake_records(&self.lake(), "events")
            .into_values()
            .flatten()
            .collect()
    }

    /// Every event id in the webhook objects, with repeats.
    fn event_ids(&self) -> Vec<String> {
        self.events()
            .iter()
            .map(|record| record["event_id"].as_str().expect("event_id").to_owned())
            .collect()
    }
}

fn has_manifest(files: &[String]) -> bool {
    files.iter().any(|file| file.ends_with("/_manifest.json"))
}

fn stop(mut process: VesperProcess) {
    process.signal("INT");
    let status = process
        .wait_exit(Duration::from_secs(15))
        .expect("vesper up stops within a few seconds of SIGINT");
    assert!(
        status.success(),
        "exit status {status:?}\n{}",
        process.log()
    );
}

#[test]
fn up_fills_the_lake_stops_cleanly_and_resumes_without_duplicates() {
    let work = Workdir::new();
    let up = work.up(&[]);
    eventually_blocking(
        "events, snapshots and sample data in the lake",
        Duration::from_secs(90),
        || {
            work.files("data").len() == 3
                && has_manifest(&work.files("users"))
                && has_manifest(&work.files("content"))
                && work.files("events").len() >= 2
        },
    );
    let health: Value = reqwest::blocking::get(format!("http://{}/health", up.http_addr()))
        .expect("health")
        .json()
        .expect("health JSON");
    assert_eq!(health["status"], "healthy", "{health}");
    stop(up);

    let before = work.event_ids();
    let unique: HashSet<_> = before.iter().collect();
    assert_eq!(unique.len(), before.len(), "no event twice in the lake");
    assert!(
        work.events()
            .iter()
            .all(|record| record["event_type"] != "signup"),
        "no signup reaches the lake"
    );
    assert!(
        work.files("events")
            .iter()
            .all(|file| file.starts_with("events/dt=") && file.contains("/hour=")),
        "events are partitioned by date and hour"
    );
    let objects = work.files("events");
    let samples = work.files("data");
    let sample_times: Vec<_> = samples
        .iter()
        .map(|file| {
            std::fs::metadata(work.lake().join(file))
                .and_then(|m| m.modified())
                .expect("mtime")
        })
        .collect();

    // A second start replays the WAL and finds the sample data: nothing is
    // written twice.
    let again = work.up_with_env(
        &["--no-generator", "--no-pipelines"],
        &[("RUST_LOG", "info".to_owned())],
    );
    eventually_blocking(
        "the restart to find the sample data in the lake",
        Duration::from_secs(30),
        || again.log().contains("sample data already in the lake"),
    );
    stop(again);
    assert_eq!(
        work.files("events"),
        objects,
        "a restart writes no new event object"
    );
    assert_eq!(work.event_ids().len(), before.len());
    let times_after: Vec<_> = samples
        .iter()
        .map(|file| {
            std::fs::metadata(work.lake().join(file))
                .and_then(|m| m.modified())
                .expect("mtime")
        })
        .collect();
    assert_eq!(
        sample_times, times_after,
        "the sample data is not rewritten"
    );
}

#[test]
fn with_signing_on_up_refuses_unsigned_calls_and_still_takes_its_own_events() {
    let work = Workdir::new();
    let up = work.up_with_env(
        &["--no-pipelines", "--no-sample-data"],
        &[("VESPER_WEBHOOK_SECRET", "s3cret for the test".to_owned())],
    );
    let unsigned = reqwest::blocking::Client::new()
        .post(format!("http://{}/webhook/events", up.http_addr()))
        .header("content-type", "application/json")
        .body(r#"{"events":[]}"#)
        .send()
        .expect("webhook answers");
    assert_eq!(unsigned.status(), 401);
    eventually_blocking(
        "the generator's signed pushes in the lake",
        Duration::from_secs(60),
        || !work.files("events").is_empty(),
    );
    stop(up);
}

#[test]
fn up_refuses_a_wal_inside_the_lake() {
    let work = Workdir::new();
    let lake = work.lake().to_string_lossy().into_owned();
    let wal = work.lake().join("wal").to_string_lossy().into_owned();
    let output = VesperProcess::run_with(
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
        ],
        &[],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is inside the lake"), "{stderr}");
}

/// The README's grpcurl calls, against a running `vesper up`.
#[test]
fn the_readme_grpcurl_calls_work_against_up() {
    let work = Workdir::new();
    let up = work.up(&["--no-generator", "--no-faults"]);
    let grpcurl = Grpcurl::new(up.grpc_addr());

    let services = grpcurl.raw(None, &["list"]).expect("list");
    for service in [
        "vesper.v1.Storage",
        "vesper.v1.DataSource",
        "vesper.v1.EventIngest",
        "vesper.v1.BatchPipeline",
        "grpc.health.v1.Health",
    ] {
        assert!(
            services.lines().any(|line| line == service),
            "{service} in {services}"
        );
    }
    let described = grpcurl
        .raw(None, &["describe", "vesper.v1.EventIngest"])
        .expect("describe");
    assert!(described.contains("rpc Ingest"), "{described}");

    let put = grpcurl
        .call(
            "vesper.v1.Storage/PutObject",
            r#"{"key":"notes/hello.txt","body":"aGVsbG8gdmVzcGVy","contentType":"text/plain"}"#,
        )
        .expect("put");
    assert_eq!(put["object"]["size"], "12");
    let got = grpcurl
        .call(
            "vesper.v1.Storage/GetObject",
            r#"{"key":"notes/hello.txt"}"#,
        )
        .expect("get");
    assert_eq!(got["body"], "aGVsbG8gdmVzcGVy");

    let page = grpcurl
        .call(
            "vesper.v1.DataSource/ListUsers",
            r#"{"offset":9990,"limit":5}"#,
        )
        .expect("list users");
    assert_eq!(page["users"].as_array().map(Vec::len), Some(5));
    assert_eq!(page["users"][0]["userId"], "user_9991");

    let ingested = grpcurl
        .call(
            "vesper.v1.EventIngest/Ingest",
            r#"{"events":[
                {"eventId":"0b7e6a7c-1d2e-4f00-8a9b-3c4d5e6f7a8b","userId":"user_7",
                 "eventType":"EVENT_TYPE_PURCHASE","source":"SOURCE_WEB",
                 "timestamp":"2026-11-25T21:04:05Z",
                 "properties":{"purchase":{"amount":12.5,"productId":"prod_7"}}},
                {"eventId":"5f0c6b7e-8a43-4f0e-9a57-2f4c1d2b9e11","userId":"user_8",
                 "eventType":"EVENT_TYPE_SIGNUP","source":"SOURCE_APPLE",
                 "timestamp":"2026-11-25T21:04:06Z","properties":{}}]}"#,
        )
        .expect("ingest");
    assert_eq!(ingested["accepted"], 1, "{ingested}");
    assert_eq!(ingested["filtered"], 1, "{ingested}");
    let flushed = grpcurl
        .call("vesper.v1.EventIngest/Flush", "{}")
        .expect("flush");
    assert_eq!(flushed["objectsWritten"], 1, "{flushed}");
    assert!(work.files("events/dt=2026-11-25/hour=21").len() == 1);

    let run = grpcurl
        .call(
            "vesper.v1.BatchPipeline/Run",
            r#"{"pipelines":["content"]}"#,
        )
        .expect("run");
    assert_eq!(run["reports"][0]["status"], "RUN_STATUS_SUCCEEDED", "{run}");
    assert_eq!(run["reports"][0]["records"], "1000");
    stop(up);
}

#[test]
fn demo_ends_with_the_top_5_table_and_a_summary() {
    let work = Workdir::new();
    let results = work.dir.path().join("results/dbt.duckdb");
    let args = work.platform_args("demo", &["--duration", "20s"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = VesperProcess::run_with(
        Path::new(BIN),
        &args,
        &[("VESPER_DUCKDB_PATH", results.to_string_lossy().into_owned())],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "demo failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("top_5_prayer_types_per_age_group"),
        "{stdout}"
    );
    for group in ["18-24", "25-34", "35-44", "45-54", "55-64", "65+"] {
        let rows = stdout
            .lines()
            .filter(|line| line.trim_start().starts_with(&format!("{group} ")))
            .count();
        assert_eq!(rows, 5, "five rows for {group}:\n{stdout}");
    }
    assert!(stdout.contains("What happened"), "{stdout}");
    assert!(stdout.contains("accepted"), "{stdout}");
    assert!(stdout.contains("pipeline users"), "{stdout}");
    assert!(results.exists(), "the results file was built");
}

/// `up`'s HTTP port has the gateway's bounds, set by its flags: a half-sent
/// header loses its connection, a cross-site POST is refused.
#[test]
fn up_closes_slow_connections_and_refuses_cross_site_posts() {
    use std::io::{Read, Write};

    let work = Workdir::new();
    let up = work.up(&[
        "--no-generator",
        "--no-faults",
        "--no-pipelines",
        "--header-read-timeout",
        "300ms",
        "--allowed-origins",
        "https://dashboard.example",
    ]);
    let mut half = std::net::TcpStream::connect(up.http_addr()).expect("connect");
    // A guard against hanging only: the server closes long before.
    half.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");
    half.write_all(b"GET /health HTTP/1.1\r\nHost: up\r\nX-Slow: 1\r\n")
        .expect("write");
    let started = Instant::now();
    let mut rest = Vec::new();
    half.read_to_end(&mut rest)
        .expect("the server closes the connection");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "closed after {:?}",
        started.elapsed()
    );

    let client = reqwest::blocking::Client::new();
    let url = format!("http://{}/stop-generator", up.http_addr());
    let refused = client
        .post(&url)
        .header("origin", "https://evil.example")
        .send()
        .expect("answer");
    assert_eq!(refused.status(), 403);
    let body: Value = refused.json().expect("json");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|error| error.contains("--allowed-origins")),
        "{body}"
    );
    let allowed = client
        .post(&url)
        .header("origin", "https://dashboard.example")
        .send()
        .expect("answer");
    assert_eq!(allowed.status(), 200);
}
