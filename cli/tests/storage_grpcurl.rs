//! `vesper storage` operated with the real grpcurl, on a directory lake and
//! on an S3 lake: list the services, put and read back an object, refuse a
//! key that climbs out of the lake.

use std::path::Path;

use base64::{Engine, prelude::BASE64_STANDARD};
use vesper_tests::{Grpcurl, S3Server, VesperProcess, unique_bucket};

const BIN: &str = env!("CARGO_BIN_EXE_vesper");

fn exercise(storage: &VesperProcess) {
    let grpcurl = Grpcurl::new(storage.grpc_addr());
    let services = grpcurl.raw(None, &["list"]).expect("list");
    let services: Vec<_> = services.lines().collect();
    assert!(services.contains(&"vesper.v1.Storage"), "{services:?}");
    assert!(services.contains(&"grpc.health.v1.Health"), "{services:?}");

    let health = grpcurl
        .call(
            "grpc.health.v1.Health/Check",
            r#"{"service":"vesper.v1.Storage"}"#,
        )
        .expect("health");
    assert_eq!(health["status"], "SERVING");

    let body = BASE64_STANDARD.encode(b"hello, lake\n");
    let put = grpcurl
        .call(
            "vesper.v1.Storage/PutObject",
            &format!(r#"{{"key":"a/b.txt","body":"{body}","contentType":"text/plain"}}"#),
        )
        .expect("put");
    assert_eq!(put["object"]["key"], "a/b.txt");
    assert_eq!(put["object"]["size"], "12");

    let got = grpcurl
        .call("vesper.v1.Storage/GetObject", r#"{"key":"a/b.txt"}"#)
        .expect("get");
    assert_eq!(got["body"], body);
    assert_eq!(got["object"]["contentType"], "text/plain");

    let listed = grpcurl
        .call("vesper.v1.Storage/ListObjects", r#"{"prefix":"a/"}"#)
        .expect("list objects");
    assert_eq!(listed["objects"][0]["key"], "a/b.txt");

    let refused = grpcurl
        .call(
            "vesper.v1.Storage/PutObject",
            &format!(r#"{{"key":"../../etc/passwd","body":"{body}"}}"#),
        )
        .expect_err("a climbing key");
    assert!(
        refused.stderr.contains("InvalidArgument"),
        "{}",
        refused.stderr
    );
    assert!(refused.stderr.contains("'..'"), "{}", refused.stderr);

    let missing = grpcurl
        .call("vesper.v1.Storage/HeadObject", r#"{"key":"no/such"}"#)
        .expect_err("missing");
    assert!(missing.stderr.contains("NotFound"), "{}", missing.stderr);
}

#[test]
fn storage_on_a_directory() {
    let lake = tempfile::tempdir().expect("temp dir");
    let lake_arg = lake.path().to_string_lossy().into_owned();
    let mut storage = VesperProcess::start_with(
        Path::new(BIN),
        &["storage", "--grpc-addr", "127.0.0.1:0", "--lake", &lake_arg],
        &[],
    );
    exercise(&storage);
    let grpc = storage.grpc_addr().to_string();
    let probe = VesperProcess::run_with(Path::new(BIN), &["healthcheck", "--grpc", &grpc], &[]);
    assert!(probe.status.success(), "{probe:?}");
    let probe = VesperProcess::run_with(
        Path::new(BIN),
        &[
            "healthcheck",
            "--grpc",
            &grpc,
            "--service",
            "vesper.v1.Storage",
        ],
        &[],
    );
    assert!(probe.status.success(), "{probe:?}");
    let probe = VesperProcess::run_with(
        Path::new(BIN),
        &[
            "healthcheck",
            "--grpc",
            &grpc,
            "--service",
            "vesper.v1.Nothing",
        ],
        &[],
    );
    assert!(!probe.status.success(), "an unknown service is not healthy");
    assert_eq!(
        std::fs::read(lake.path().join("a/b.txt")).expect("object file"),
        b"hello, lake\n"
    );
    storage.signal("INT");
    let status = storage
        .wait_exit(std::time::Duration::from_secs(10))
        .expect("exits after SIGINT");
    assert!(status.success(), "{status:?}");
}

#[test]
fn storage_on_s3() {
    let server = S3Server::shared();
    let lake = format!("s3://{}/vesper", unique_bucket("grpcurl"));
    let storage = VesperProcess::start_with(
        Path::new(BIN),
        &[
            "storage",
            "--grpc-addr",
            "127.0.0.1:0",
            "--lake",
            &lake,
            "--create-bucket",
        ],
        &server.env(),
    );
    exercise(&storage);
}

#[test]
fn storage_refuses_a_missing_bucket_without_create_bucket() {
    let server = S3Server::shared();
    let lake = format!("s3://{}", unique_bucket("missing"));
    let output = VesperProcess::run_with(
        Path::new(BIN),
        &["storage", "--grpc-addr", "127.0.0.1:0", "--lake", &lake],
        &server.env(),
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("does not exist"), "{stderr}");
    assert!(stderr.contains("--create-bucket"), "{stderr}");
}
