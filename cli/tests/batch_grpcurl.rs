//! `vesper batch` operated as docs/pipelines.md says: `vesper batch serve` driven
//! by the real grpcurl, and `vesper batch run` from the shell, each pulling
//! a replica of the old upstream into a `vesper storage` process's lake.

use std::{path::Path, time::Duration};

use vesper_tests::{EventFaults, Grpcurl, UpstreamReplica, VesperProcess};

const BIN: &str = env!("CARGO_BIN_EXE_vesper");

fn storage(lake: &Path) -> VesperProcess {
    let lake = lake.to_string_lossy().into_owned();
    VesperProcess::start_with(
        Path::new(BIN),
        &["storage", "--grpc-addr", "127.0.0.1:0", "--lake", &lake],
        &[],
    )
}

/// Manifests under `prefix` in a directory lake.
fn manifests(lake: &Path, prefix: &str) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(days) = std::fs::read_dir(lake.join(prefix)) else {
        return found;
    };
    for day in days.flatten() {
        for run in std::fs::read_dir(day.path())
            .expect("a day directory")
            .flatten()
        {
            let manifest = run.path().join("_manifest.json");
            if manifest.exists() {
                found.push(manifest.to_string_lossy().into_owned());
            }
        }
    }
    found
}

#[test]
fn batch_serve_lists_and_runs_pipelines_for_grpcurl() {
    // The upstream's fault rates: the events run meets a 503 and a stall.
    let upstream = UpstreamReplica::with_faults(EventFaults::default());
    let lake = tempfile::tempdir().expect("temp dir");
    let storage = storage(lake.path());
    let storage_addr = storage.grpc_addr().to_string();
    let source_url = upstream.base_url();
    let mut batch = VesperProcess::start_with(
        Path::new(BIN),
        &[
            "batch",
            "serve",
            "--grpc-addr",
            "127.0.0.1:0",
            "--source-url",
            &source_url,
            "--storage-addr",
            &storage_addr,
        ],
        &[],
    );
    let grpcurl = Grpcurl::new(batch.grpc_addr());

    let services = grpcurl.raw(None, &["list"]).expect("list services");
    assert!(
        services
            .lines()
            .any(|line| line == "vesper.v1.BatchPipeline"),
        "{services}"
    );

    let listed = grpcurl
        .call("vesper.v1.BatchPipeline/List", "{}")
        .expect("List");
    let names: Vec<_> = listed["pipelines"]
        .as_array()
        .expect("pipelines")
        .iter()
        .map(|p| p["name"].as_str().expect("a name"))
        .collect();
    assert_eq!(names, ["users", "content", "events"]);
    assert_eq!(
        listed["pipelines"][0]["url"],
        format!("{source_url}users?offset=0&limit=200")
    );

    // An empty list runs every declared pipeline.
    let ran = grpcurl
        .call("vesper.v1.BatchPipeline/Run", "{}")
        .expect("Run");
    let reports = ran["reports"].as_array().expect("reports");
    assert_eq!(reports.len(), 3, "{ran}");
    for report in reports {
        assert_eq!(report["status"], "RUN_STATUS_SUCCEEDED", "{report}");
        assert!(
            report["manifestKey"]
                .as_str()
                .is_some_and(|key| key.ends_with("/_manifest.json")),
            "{report}"
        );
    }
    // 64-bit counts travel as strings in JSON.
    assert_eq!(reports[0]["records"], "10000");
    assert_eq!(reports[0]["pages"], "50");
    assert_eq!(reports[1]["records"], "1000");
    assert_eq!(reports[2]["pages"], "10");
    assert!(
        reports[2]["retries"].as_str().is_some(),
        "events were retried: {}",
        reports[2]
    );

    for prefix in ["users", "content", "api_events"] {
        assert_eq!(manifests(lake.path(), prefix).len(), 1, "{prefix}");
    }

    let refused = grpcurl
        .call(
            "vesper.v1.BatchPipeline/Run",
            r#"{"pipelines":["sessions"]}"#,
        )
        .expect_err("an unknown pipeline");
    assert!(
        refused.stderr.contains("InvalidArgument"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("unknown pipeline \"sessions\""),
        "{}",
        refused.stderr
    );

    batch.signal("INT");
    let status = batch
        .wait_exit(Duration::from_secs(10))
        .expect("exits after SIGINT");
    assert!(status.success(), "{status:?}");
}

#[test]
fn batch_run_prints_reports_and_fails_when_a_pipeline_fails() {
    let upstream = UpstreamReplica::with_faults(EventFaults::NONE);
    let lake = tempfile::tempdir().expect("temp dir");
    let storage = storage(lake.path());
    let storage_addr = storage.grpc_addr().to_string();
    let source_url = upstream.base_url();
    let output = VesperProcess::run_with(
        Path::new(BIN),
        &[
            "batch",
            "run",
            "users",
            "content",
            "--source-url",
            &source_url,
            "--storage-addr",
            &storage_addr,
            "--concurrency",
            "2",
        ],
        &[],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("PIPELINE  STATUS"), "{stdout}");
    let users: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        users[..4],
        ["users", "succeeded", "10000", "50"],
        "{stdout}"
    );
    let content: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(
        content[..4],
        ["content", "succeeded", "1000", "1"],
        "{stdout}"
    );
    assert!(stdout.contains("users: users/dt="), "{stdout}");
    assert!(
        stderr.contains("users: 10 pages, 2000 records so far"),
        "plain progress lines off a terminal: {stderr}"
    );
    assert_eq!(manifests(lake.path(), "users").len(), 1);

    // A pipeline file whose endpoint does not exist: the run fails, says
    // why, and the command exits non-zero.
    let pipelines = lake.path().join("pipelines.toml");
    std::fs::write(
        &pipelines,
        "[pipelines.sessions]\npath = \"sessions\"\nrecords = \"sessions\"\n",
    )
    .expect("write a pipeline file");
    let output = VesperProcess::run_with(
        Path::new(BIN),
        &[
            "batch",
            "run",
            "--pipelines",
            &pipelines.to_string_lossy(),
            "--source-url",
            &source_url,
            "--storage-addr",
            &storage_addr,
        ],
        &[],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!(
            "sessions: FAILED: GET {source_url}sessions: 404 Not Found"
        )),
        "{stdout}"
    );
    assert!(stderr.contains("1 of 1 pipelines failed"), "{stderr}");
    assert!(manifests(lake.path(), "sessions").is_empty());
}
