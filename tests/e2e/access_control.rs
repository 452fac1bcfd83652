//! Access control through the real binaries: tokens issued with `vesper
//! tokens new`, gRPC called with the real grpcurl and HTTP with a real
//! client. A missing token, a wrong one and one without the right each get
//! their own answer naming what is missing; the right token gets through;
//! health stays open; services call each other with their own tokens; and
//! no token shows in a log, a span or a metric.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde_json::{Value, json};
use vesper_tests::{
    Grpcurl, GrpcurlError, OtlpCollector, VesperProcess, event_id, eventually, lake_event_ids,
    upstream_event,
};

/// grpcurl exits with 64 + the gRPC code of a failed call.
const UNAUTHENTICATED_EXIT: i32 = 64 + 16;
const PERMISSION_DENIED_EXIT: i32 = 64 + 7;

/// A token issued by `vesper tokens new`.
struct Issued {
    token: String,
    /// The line for a tokens file.
    line: String,
}

fn issue(name: &str, rights: &str) -> Issued {
    let output = VesperProcess::run(&["tokens", "new", "--name", name, "--right", rights], &[]);
    assert!(
        output.status.success(),
        "vesper tokens new failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let lines: Vec<&str> = stdout
        .lines()
        .filter(|line| !line.starts_with('#'))
        .collect();
    let [token, line] = lines[..] else {
        panic!("expected a token and a line, got:\n{stdout}");
    };
    assert!(token.starts_with("vsp_"), "{token}");
    assert!(
        line.starts_with(&format!("{name} ")) && !line.contains(token),
        "the tokens file line must hold the digest, not the token: {line}"
    );
    Issued {
        token: token.to_owned(),
        line: line.to_owned(),
    }
}

fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path
}

fn tokens_file(dir: &Path, name: &str, issued: &[&Issued]) -> String {
    let text: String = issued.iter().map(|i| format!("{}\n", i.line)).collect();
    path_arg(&write_file(dir, name, &text))
}

fn path_arg(path: &Path) -> String {
    path.to_str().expect("utf-8 path").to_owned()
}

fn bearer(token: &str) -> String {
    format!("authorization: Bearer {token}")
}

fn refused(result: Result<Value, GrpcurlError>, exit: i32, words: &[&str]) {
    let err = result.expect_err("the call must be refused");
    assert_eq!(err.exit_code, Some(exit), "{}", err.stderr);
    for word in words {
        assert!(err.stderr.contains(word), "{word:?} not in: {}", err.stderr);
    }
}

fn assert_no_token(what: &str, text: &str, tokens: &[&Issued]) {
    for issued in tokens {
        assert!(
            !text.contains(&issued.token),
            "a token appears in the {what}"
        );
        // Not even a good part of it.
        assert!(
            !text.contains(&issued.token[4..24]),
            "part of a token appears in the {what}"
        );
    }
}

#[tokio::test]
async fn grpc_callers_get_one_code_per_failure_and_the_right_token_gets_through() {
    let dir = tempfile::tempdir().expect("dir");
    let lake = dir.path().join("lake");
    let writer = issue("writer", "lake:write");
    let reader = issue("reader", "lake:read");
    let never_accepted = issue("stranger", "lake:read,lake:write");
    let tokens = tokens_file(dir.path(), "tokens", &[&writer, &reader]);
    let storage = VesperProcess::start(
        &[
            "storage",
            "--grpc-addr",
            "127.0.0.1:0",
            "--lake",
            &path_arg(&lake),
            "--metrics-addr",
            "127.0.0.1:0",
            "--auth-tokens",
            &tokens,
        ],
        &[("RUST_LOG", "debug".to_owned())],
    );
    let anonymous = Grpcurl::new(storage.grpc_addr());
    let list = r#"{"prefix":"notes/"}"#;
    let put = r#"{"key":"notes/a.txt","body":"aGVsbG8="}"#;
    let delete = r#"{"key":"notes/a.txt"}"#;

    // Health answers probes without a token; reflection is open by default,
    // so grpcurl can list and encode without one.
    let health = anonymous
        .call("grpc.health.v1.Health/Check", "{}")
        .expect("health is open");
    assert_eq!(health["status"], "SERVING");
    let services = anonymous.raw(None, &["list"]).expect("reflection is open");
    assert!(services.contains("vesper.v1.Storage"), "{services}");

    refused(
        anonymous.call("vesper.v1.Storage/ListObjects", list),
        UNAUTHENTICATED_EXIT,
        &["Unauthenticated", "lake:read", "authorization: Bearer"],
    );
    let wrong = anonymous
        .clone()
        .with_header(&bearer(&never_accepted.token));
    refused(
        wrong.call("vesper.v1.Storage/ListObjects", list),
        UNAUTHENTICATED_EXIT,
        &["Unauthenticated", "not one this server accepts"],
    );
    let malformed = anonymous
        .clone()
        .with_header("authorization: Basic dXNlcjpwYXNz");
    refused(
        malformed.call("vesper.v1.Storage/ListObjects", list),
        UNAUTHENTICATED_EXIT,
        &["Unauthenticated", "not `Bearer <token>`"],
    );
    let as_reader = anonymous.clone().with_header(&bearer(&reader.token));
    refused(
        as_reader.call("vesper.v1.Storage/PutObject", put),
        PERMISSION_DENIED_EXIT,
        &["PermissionDenied", "lake:write", "\"reader\""],
    );

    let as_writer = anonymous.clone().with_header(&bearer(&writer.token));
    as_writer
        .call("vesper.v1.Storage/PutObject", put)
        .expect("the writer may write");
    let listed = as_reader
        .call("vesper.v1.Storage/ListObjects", list)
        .expect("the reader may list");
    assert_eq!(listed["objects"][0]["key"], "notes/a.txt", "{listed}");
    refused(
        as_writer.call("vesper.v1.Storage/ListObjects", list),
        PERMISSION_DENIED_EXIT,
        &["PermissionDenied", "lake:read", "\"writer\""],
    );
    refused(
        as_reader.call("vesper.v1.Storage/DeleteObject", delete),
        PERMISSION_DENIED_EXIT,
        &["PermissionDenied", "lake:write"],
    );
    as_writer
        .call("vesper.v1.Storage/DeleteObject", delete)
        .expect("the writer may delete");

    let metrics = reqwest::get(storage.metrics_url())
        .await
        .expect("scrape")
        .text()
        .await
        .expect("metrics");
    assert!(
        metrics.contains(r#"code="UNAUTHENTICATED""#)
            && metrics.contains(r#"code="PERMISSION_DENIED""#),
        "refusals are counted like any answer:\n{metrics}"
    );
    let everything = [&writer, &reader, &never_accepted];
    assert_no_token("metrics", &metrics, &everything);
    assert_no_token("log", &storage.log(), &everything);
}

#[tokio::test]
async fn reflection_can_be_closed() {
    let dir = tempfile::tempdir().expect("dir");
    let reader = issue("reader", "lake:read");
    let tokens = tokens_file(dir.path(), "tokens", &[&reader]);
    let storage = VesperProcess::start(
        &[
            "storage",
            "--grpc-addr",
            "127.0.0.1:0",
            "--lake",
            &path_arg(&dir.path().join("lake")),
            "--auth-tokens",
            &tokens,
            "--reflection",
            "authenticated",
        ],
        &[],
    );
    let anonymous = Grpcurl::new(storage.grpc_addr());
    let err = anonymous
        .raw(None, &["list"])
        .expect_err("reflection needs a token");
    assert!(err.stderr.contains("Unauthenticated"), "{}", err.stderr);
    let services = anonymous
        .with_header(&bearer(&reader.token))
        .raw(None, &["list"])
        .expect("any known token may reflect");
    assert!(services.contains("vesper.v1.Storage"), "{services}");
}

#[tokio::test]
async fn the_gateway_answers_401_and_403_and_up_calls_itself_with_its_own_token() {
    let dir = tempfile::tempdir().expect("dir");
    let reader = issue("reader", "source:read");
    let operator = issue("operator", "generator:control,status:read");
    let sender = issue("sender", "events:write");
    let stranger = issue("stranger", "source:read");
    let tokens = tokens_file(dir.path(), "tokens", &[&reader, &operator, &sender]);
    let up = VesperProcess::start(
        &[
            "up",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--lake",
            &path_arg(&dir.path().join("lake")),
            "--wal-dir",
            &path_arg(&dir.path().join("wal")),
            "--no-sample-data",
            "--no-generator",
            "--no-faults",
            "--auth-tokens",
            &tokens,
        ],
        &[],
    );
    let http = reqwest::Client::new();
    let url = |path: &str| format!("http://{}{path}", up.http_addr());
    let get = |path: &str, token: Option<&str>| {
        let mut request = http.get(url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };

    // Health is open, and healthy: the gateway reached both services with
    // the platform's own token.
    let health: Value = get("/health", None)
        .await
        .expect("health")
        .json()
        .await
        .expect("json");
    assert_eq!(health["status"], "healthy", "{health}");
    let metrics = get("/metrics", None).await.expect("metrics");
    assert_eq!(metrics.status(), 200, "/metrics stays open for scrapers");
    // The start-up pipelines read the gateway's REST API with it too.
    eventually(
        "the start-up pipelines",
        Duration::from_secs(60),
        async || up.log().matches("pipeline run done").count() == 2,
    )
    .await;
    assert!(!up.log().contains("pipeline run failed"), "{}", up.log());

    for (token, status, words) in [
        (
            None,
            401,
            &["GET /api/users", "source:read", "authorization: Bearer"][..],
        ),
        (
            Some(&stranger.token),
            401,
            &["not one this server accepts"][..],
        ),
        (
            Some(&operator.token),
            403,
            &["source:read", "\"operator\""][..],
        ),
    ] {
        let response = get("/api/users?limit=1", token.map(String::as_str))
            .await
            .expect("answer");
        assert_eq!(response.status(), status);
        if status == 401 {
            assert_eq!(
                response.headers()["www-authenticate"],
                "Bearer realm=\"vesper\""
            );
        }
        let body: Value = response.json().await.expect("json error");
        let error = body["error"].as_str().expect("the gateway's error shape");
        for word in words {
            assert!(error.contains(word), "{word:?} not in {error}");
        }
    }
    let users = get("/api/users?limit=1", Some(&reader.token))
        .await
        .expect("users");
    assert_eq!(users.status(), 200);

    let control = |token: &str| http.post(url("/stop-generator")).bearer_auth(token).send();
    let denied = control(&reader.token).await.expect("answer");
    assert_eq!(denied.status(), 403);
    let body: Value = denied.json().await.expect("json");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("generator:control"),
        "{body}"
    );
    assert_eq!(
        control(&operator.token).await.expect("answer").status(),
        200
    );

    // The webhook: a token with events:write gets in, others do not.
    let event = event_id(0xa0, 1);
    let batch = json!({"events": [upstream_event(&event, "click", "2026-11-25T10:00:00Z")]});
    let post = |token: Option<&str>| {
        let mut request = http.post(url("/webhook/events")).json(&batch);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    assert_eq!(post(None).await.expect("answer").status(), 401);
    let wrong_right = post(Some(&reader.token)).await.expect("answer");
    assert_eq!(wrong_right.status(), 403);
    let accepted = post(Some(&sender.token)).await.expect("answer");
    assert_eq!(accepted.status(), 200);
    let accepted: Value = accepted.json().await.expect("json");
    assert_eq!(accepted["accepted"], 1, "{accepted}");

    // The one gRPC port of `up` checks too.
    let grpc = Grpcurl::new(up.grpc_addr());
    refused(
        grpc.call("vesper.v1.EventIngest/Stats", "{}"),
        UNAUTHENTICATED_EXIT,
        &["status:read"],
    );
    let stats = grpc
        .clone()
        .with_header(&bearer(&operator.token))
        .call("vesper.v1.EventIngest/Stats", "{}")
        .expect("the operator may read the counters");
    assert_eq!(stats["accepted"], "1", "{stats}");
    refused(
        grpc.with_header(&bearer(&operator.token))
            .call("vesper.v1.BatchPipeline/Run", r#"{"pipelines":["users"]}"#),
        PERMISSION_DENIED_EXIT,
        &["pipelines:run"],
    );

    let metrics = get("/metrics", None)
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let everything = [&reader, &operator, &sender, &stranger];
    assert_no_token("metrics", &metrics, &everything);
    assert_no_token("log", &up.log(), &everything);
}

#[tokio::test]
async fn services_call_each_other_with_their_own_tokens() {
    let dir = tempfile::tempdir().expect("dir");
    let lake = dir.path().join("lake");
    let ingest_to_storage = issue("ingest", "lake:write");
    let inspector = issue("inspector", "lake:read");
    let gateway_to_ingest = issue("gateway", "events:write,source:read,status:read");
    let sender = issue("sender", "events:write");
    // Every process exports its spans here, to check that no token rides
    // along in a span's attributes or events.
    let collector = OtlpCollector::start().await;
    let traced = collector.env();

    let storage = VesperProcess::start(
        &[
            "storage",
            "--grpc-addr",
            "127.0.0.1:0",
            "--lake",
            &path_arg(&lake),
            "--auth-tokens",
            &tokens_file(
                dir.path(),
                "storage-tokens",
                &[&ingest_to_storage, &inspector],
            ),
        ],
        &traced,
    );
    let ingest = VesperProcess::start(
        &[
            "ingest",
            "--grpc-addr",
            "127.0.0.1:0",
            "--storage-addr",
            &storage.grpc_addr().to_string(),
            "--wal-dir",
            &path_arg(&dir.path().join("wal")),
            "--max-batch-age",
            "100ms",
            "--auth-tokens",
            &tokens_file(dir.path(), "ingest-tokens", &[&gateway_to_ingest]),
            "--peer-token-file",
            &path_arg(&write_file(
                dir.path(),
                "ingest-token",
                &ingest_to_storage.token,
            )),
        ],
        &traced,
    );
    let gateway_args = |peer_token: Option<&str>| {
        let mut args = vec![
            "gateway".to_owned(),
            "--http-addr".to_owned(),
            "127.0.0.1:0".to_owned(),
            "--ingest-addr".to_owned(),
            ingest.grpc_addr().to_string(),
            "--auth-tokens".to_owned(),
            tokens_file(dir.path(), "gateway-tokens", &[&sender]),
        ];
        if let Some(file) = peer_token {
            args.extend(["--peer-token-file".to_owned(), file.to_owned()]);
        }
        args
    };
    let peer_token = path_arg(&write_file(
        dir.path(),
        "gateway-token",
        &gateway_to_ingest.token,
    ));
    let with_token = gateway_args(Some(&peer_token));
    let gateway = VesperProcess::start(
        &with_token.iter().map(String::as_str).collect::<Vec<_>>(),
        &traced,
    );
    let without_token = gateway_args(None);
    let tokenless_gateway = VesperProcess::start(
        &without_token.iter().map(String::as_str).collect::<Vec<_>>(),
        &traced,
    );

    let http = reqwest::Client::new();
    let event = event_id(0xa1, 1);
    let batch = json!({"events": [upstream_event(&event, "click", "2026-11-25T10:00:00Z")]});
    let post = |gateway: &VesperProcess| {
        http.post(format!("http://{}/webhook/events", gateway.http_addr()))
            .bearer_auth(&sender.token)
            .json(&batch)
            .send()
    };

    // A gateway without its own token is refused by ingest: a deployment
    // mistake, reported as such.
    let refused_hop = post(&tokenless_gateway).await.expect("answer");
    assert_eq!(refused_hop.status(), 500);
    let body: Value = refused_hop.json().await.expect("json");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("ingest refused the gateway's own token") && error.contains("events:write"),
        "{error}"
    );

    let accepted = post(&gateway).await.expect("answer");
    assert_eq!(accepted.status(), 200);
    eventually(
        "the event in the lake",
        Duration::from_secs(30),
        async || lake_event_ids(&lake).contains_key(&event),
    )
    .await;
    let listed = Grpcurl::new(storage.grpc_addr())
        .with_header(&bearer(&inspector.token))
        .call("vesper.v1.Storage/ListObjects", r#"{"prefix":"events/"}"#)
        .expect("the inspector may list");
    assert!(
        listed["objects"]
            .as_array()
            .is_some_and(|objects| !objects.is_empty()),
        "{listed}"
    );

    let everything = [&ingest_to_storage, &inspector, &gateway_to_ingest, &sender];
    for process in [&storage, &ingest, &gateway, &tokenless_gateway] {
        assert_no_token("log", &process.log(), &everything);
    }
    let spans = collector
        .wait_for(Duration::from_secs(30), |spans| {
            [
                "vesper.v1.EventIngest/Ingest",
                "vesper.v1.Storage/PutObject",
            ]
            .iter()
            .all(|name| spans.iter().any(|span| span.name() == *name))
        })
        .await;
    for span in &spans {
        assert_no_token(
            &format!("span {} of {}", span.name(), span.service),
            &format!("{:?}", span.span),
            &everything,
        );
    }
}
