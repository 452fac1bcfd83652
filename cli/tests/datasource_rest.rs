//! `vesper datasource` and `vesper gateway` as docs/rest-api.md runs them: the
//! old REST API over HTTP (`curl 'localhost:8080/api/users?offset=9990'`)
//! and the gRPC contract with the real grpcurl.

use std::{path::Path, time::Duration};

use serde_json::{Value, json};
use vesper_tests::{Grpcurl, S3Server, VesperProcess, unique_bucket};

const BIN: &str = env!("CARGO_BIN_EXE_vesper");

#[tokio::test]
async fn the_old_rest_api_and_grpc_answer_from_the_real_binaries() {
    let mut datasource = VesperProcess::start_with(
        Path::new(BIN),
        &[
            "datasource",
            "--grpc-addr",
            "127.0.0.1:0",
            "--no-generator",
            "--no-faults",
        ],
        &[],
    );
    let datasource_addr = datasource.grpc_addr().to_string();
    let mut gateway = VesperProcess::start_with(
        Path::new(BIN),
        &[
            "gateway",
            "--http-addr",
            "127.0.0.1:0",
            "--datasource-addr",
            &datasource_addr,
        ],
        &[],
    );

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let base = format!("http://{}", gateway.http_addr());
    let page: Value = client
        .get(format!("{base}/api/users?offset=9990"))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("JSON");
    let keys: Vec<_> = page.as_object().expect("object").keys().cloned().collect();
    assert_eq!(
        keys,
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
    assert_eq!(page["count"], 10);
    assert_eq!(page["has_more"], false);
    assert_eq!(page["next_offset"], -1);
    assert_eq!(page["users"][9]["user_id"], "user_10000");
    let refused = client
        .get(format!("{base}/api/users?offset=10000"))
        .send()
        .await
        .expect("request");
    assert_eq!(refused.status(), 400);
    assert_eq!(
        refused.json::<Value>().await.expect("JSON"),
        json!({"error": "Invalid offset"})
    );

    let grpcurl = Grpcurl::new(datasource.grpc_addr());
    let services = grpcurl.raw(None, &["list"]).expect("list");
    assert!(
        services.lines().any(|line| line == "vesper.v1.DataSource"),
        "{services}"
    );
    // The docs' call: no request body at all.
    let stdout = grpcurl
        .raw(None, &["vesper.v1.DataSource/ListUsers"])
        .expect("ListUsers");
    let first: Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(first["count"], 200);
    assert_eq!(first["nextOffset"], 200);
    assert_eq!(first["users"][0]["userId"], "user_1");
    // The same data over both faces.
    let last = grpcurl
        .call("vesper.v1.DataSource/ListUsers", r#"{"offset":9990}"#)
        .expect("last page");
    assert_eq!(last["users"][9]["userId"], "user_10000");
    assert_eq!(last["users"][0]["age"], page["users"][0]["age"]);
    let refused = grpcurl
        .call("vesper.v1.DataSource/ListUsers", r#"{"offset":10000}"#)
        .expect_err("offset past the end");
    assert!(
        refused.stderr.contains("InvalidArgument"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("Invalid offset"),
        "{}",
        refused.stderr
    );

    for process in [&mut gateway, &mut datasource] {
        process.signal("INT");
        let status = process
            .wait_exit(Duration::from_secs(15))
            .expect("exits after SIGINT");
        assert!(status.success(), "{status:?}");
    }
}

#[test]
fn sample_data_writes_the_three_csvs_and_respects_if_missing() {
    let lake = tempfile::tempdir().expect("temp dir");
    let lake_arg = lake.path().to_string_lossy().into_owned();
    let output = VesperProcess::run_with(
        Path::new(BIN),
        &["sample-data", "--lake", &lake_arg, "--seed", "7"],
        &[],
    );
    assert!(output.status.success(), "{output:?}");
    let summary = String::from_utf8_lossy(&output.stdout);
    for line in ["data/users.csv", "data/sessions.csv", "data/content.csv"] {
        assert!(summary.contains(line), "{summary}");
    }
    assert!(summary.contains("100000 rows"), "{summary}");
    let users = std::fs::read_to_string(lake.path().join("data/users.csv")).expect("users");
    assert!(users.starts_with("id,age,status,country,created_at\n1,"));
    assert_eq!(users.lines().count(), 10_001);

    let again = VesperProcess::run_with(
        Path::new(BIN),
        &["sample-data", "--lake", &lake_arg, "--if-missing"],
        &[],
    );
    assert!(again.status.success(), "{again:?}");
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing written"));
    // Still the seed-7 files.
    assert_eq!(
        std::fs::read_to_string(lake.path().join("data/users.csv")).expect("users"),
        users
    );
}

#[test]
fn sample_data_writes_to_an_s3_lake() {
    let server = S3Server::shared();
    let lake = format!("s3://{}/raw", unique_bucket("sample-data"));
    let output = VesperProcess::run_with(
        Path::new(BIN),
        &["sample-data", "--lake", &lake, "--create-bucket"],
        &server.env(),
    );
    assert!(output.status.success(), "{output:?}");
    let summary = String::from_utf8_lossy(&output.stdout);
    assert!(summary.contains(&lake), "{summary}");
    // A second run with --if-missing finds all three objects.
    let again = VesperProcess::run_with(
        Path::new(BIN),
        &["sample-data", "--lake", &lake, "--if-missing"],
        &server.env(),
    );
    assert!(again.status.success(), "{again:?}");
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("nothing written"),
        "{again:?}"
    );
}
