//! Traces across the mesh, with the real binaries exporting to a collector
//! inside the test:
//!
//! - a webhook call with a `traceparent` is one trace from the caller
//!   through the gateway to ingest, hop by hop in parent order;
//! - the flush that writes its events runs in its own trace, links back to
//!   the call, and holds storage's span of the write; the call's trace then
//!   gets a span naming the object, linked to the flush;
//! - a REST call is one trace through the gateway to DataSource, a
//!   generated push one trace from the generator to ingest, and a batch
//!   run one trace through the gateway to DataSource and to storage;
//! - health probes leave no trace;
//! - without an endpoint (or with the SDK disabled) nothing is built and
//!   nothing is exported; spans are flushed when a process is stopped.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde_json::{Value, json};
use tonic::metadata::MetadataValue;
use vesper::v1::{
    FlushRequest, HeadObjectRequest, event_ingest_client::EventIngestClient,
    storage_client::StorageClient,
};
use vesper_tests::{OtlpCollector, ReceivedSpan, VesperProcess};

const WAIT: Duration = Duration::from_secs(30);

const WEBHOOK_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const WEBHOOK_PARENT: &str = "b7ad6b7169203331";
const REST_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const REST_PARENT: &str = "00f067aa0ba902b7";

fn traceparent(trace: &str, parent: &str) -> String {
    format!("00-{trace}-{parent}-01")
}

fn start(args: &[&str], env: &[(&str, String)]) -> VesperProcess {
    VesperProcess::start(args, env)
}

/// A DataSource that exports to `collector` and neither pushes events nor
/// fails calls, so the traces hold only what a test does.
fn quiet_datasource(collector: &OtlpCollector) -> VesperProcess {
    start(
        &[
            "datasource",
            "--grpc-addr",
            "127.0.0.1:0",
            "--no-generator",
            "--no-faults",
        ],
        &collector.env(),
    )
}

fn path_arg(path: &Path) -> String {
    path.display().to_string()
}

/// Storage, ingest (batches written only on Flush) and a gateway in front
/// of ingest and `datasource`, all exporting to `collector`.
struct Mesh {
    storage: VesperProcess,
    ingest: VesperProcess,
    gateway: VesperProcess,
    lake: tempfile::TempDir,
    _wal: tempfile::TempDir,
}

impl Mesh {
    fn start(collector: &OtlpCollector, datasource: &str) -> Self {
        let env = collector.env();
        let lake = tempfile::tempdir().expect("lake dir");
        let wal = tempfile::tempdir().expect("wal dir");
        let storage = start(
            &[
                "storage",
                "--grpc-addr",
                "127.0.0.1:0",
                "--lake",
                &path_arg(lake.path()),
            ],
            &env,
        );
        let ingest = start(
            &[
                "ingest",
                "--grpc-addr",
                "127.0.0.1:0",
                "--storage-addr",
                &storage.grpc_addr().to_string(),
                "--wal-dir",
                &path_arg(wal.path()),
                "--max-batch-age",
                "1h",
            ],
            &env,
        );
        let gateway = start(
            &[
                "gateway",
                "--http-addr",
                "127.0.0.1:0",
                "--ingest-addr",
                &ingest.grpc_addr().to_string(),
                "--datasource-addr",
                datasource,
            ],
            &env,
        );
        Self {
            storage,
            ingest,
            gateway,
            lake,
            _wal: wal,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gateway.http_addr())
    }
}

fn webhook_body() -> Value {
    let event = |id: &str, event_type: &str, properties: Value| {
        json!({
            "event_id": id,
            "user_id": "user_42",
            "event_type": event_type,
            "source": "web",
            "timestamp": "2026-11-25T21:04:05Z",
            "properties": properties,
        })
    };
    json!({"events": [
        event("6f1c1a52-5b0e-4c1e-9d7a-1a2b3c4d5e01", "purchase", json!({"amount": 19.5, "product_id": "prod_7"})),
        event("6f1c1a52-5b0e-4c1e-9d7a-1a2b3c4d5e02", "click", json!({})),
    ]})
}

/// The one span that passes `test`; panics with every span otherwise.
fn only<'a>(
    spans: &'a [ReceivedSpan],
    what: &str,
    test: impl Fn(&ReceivedSpan) -> bool,
) -> &'a ReceivedSpan {
    let found: Vec<&ReceivedSpan> = spans.iter().filter(|span| test(span)).collect();
    assert!(
        found.len() == 1,
        "expected exactly one {what}, found {}; spans:\n{}",
        found.len(),
        summary(spans)
    );
    found[0]
}

fn summary(spans: &[ReceivedSpan]) -> String {
    spans
        .iter()
        .map(|span| {
            format!(
                "  {:<18} {:<8} {:<40} trace={} span={} parent={} links={:?}",
                span.service,
                span.kind(),
                span.name(),
                span.trace_id(),
                span.span_id(),
                span.parent_span_id(),
                span.links()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn child_of<'a>(
    spans: &'a [ReceivedSpan],
    parent: &ReceivedSpan,
    service: &str,
    kind: &str,
    name: &str,
) -> &'a ReceivedSpan {
    only(
        spans,
        &format!(
            "{kind} span {name:?} of {service} under {:?}",
            parent.name()
        ),
        |span| {
            span.trace_id() == parent.trace_id()
                && span.parent_span_id() == parent.span_id()
                && span.service == service
                && span.kind() == kind
                && span.name() == name
        },
    )
}

fn is_flush_of_webhook(span: &ReceivedSpan) -> bool {
    span.name() == "ingest.flush" && span.linked_trace_ids().iter().any(|t| t == WEBHOOK_TRACE)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_call_is_traced_to_ingest_and_its_flush_trace_links_back() {
    let collector = OtlpCollector::start().await;
    let datasource = quiet_datasource(&collector);
    let mesh = Mesh::start(&collector, &datasource.grpc_addr().to_string());
    let http = reqwest::Client::new();

    let answer: Value = http
        .post(mesh.url("/webhook/events"))
        .header("traceparent", traceparent(WEBHOOK_TRACE, WEBHOOK_PARENT))
        .json(&webhook_body())
        .send()
        .await
        .expect("webhook call")
        .json()
        .await
        .expect("webhook answer");
    assert_eq!(answer["accepted"], 2, "{answer}");

    let mut ingest = EventIngestClient::connect(format!("http://{}", mesh.ingest.grpc_addr()))
        .await
        .expect("connect to ingest");
    let flushed = ingest
        .flush(FlushRequest {})
        .await
        .expect("flush")
        .into_inner();
    assert_eq!(flushed.keys.len(), 1, "{flushed:?}");
    let key = &flushed.keys[0];
    assert!(
        mesh.lake.path().join(key).is_file(),
        "{key} is not in the lake"
    );

    let users = http
        .get(mesh.url("/api/users?limit=2"))
        .header("traceparent", traceparent(REST_TRACE, REST_PARENT))
        .send()
        .await
        .expect("REST call");
    assert_eq!(users.status(), 200);

    let spans = collector
        .wait_for(WAIT, |spans| {
            let flush_trace = spans
                .iter()
                .find(|span| is_flush_of_webhook(span))
                .map(ReceivedSpan::trace_id);
            let has = |service: &str, trace: &str, name: &str| {
                spans.iter().any(|span| {
                    span.service == service && span.trace_id() == trace && span.name() == name
                })
            };
            flush_trace.is_some_and(|trace| {
                has("vesper-storage", &trace, "put_object")
                    && has("vesper-ingest", &trace, "vesper.v1.Storage/PutObject")
            }) && has("vesper-gateway", WEBHOOK_TRACE, "POST /webhook/events")
                && has("vesper-ingest", WEBHOOK_TRACE, "ingest")
                && has("vesper-ingest", WEBHOOK_TRACE, "ingest.flushed")
                && has("vesper-gateway", REST_TRACE, "GET /api/users")
                && has("vesper-datasource", REST_TRACE, "list_users")
        })
        .await;

    // The webhook call: caller -> gateway -> ingest, in parent order.
    let request = only(&spans, "gateway request span", |span| {
        span.trace_id() == WEBHOOK_TRACE && span.name() == "POST /webhook/events"
    });
    assert_eq!(request.service, "vesper-gateway");
    assert_eq!(request.kind(), "server");
    assert_eq!(
        request.parent_span_id(),
        WEBHOOK_PARENT,
        "the caller's span is the parent"
    );
    assert_eq!(
        request.attribute("http.request.method").as_deref(),
        Some("POST")
    );
    assert_eq!(
        request.attribute("http.route").as_deref(),
        Some("/webhook/events")
    );
    assert_eq!(
        request.attribute("http.response.status_code").as_deref(),
        Some("200")
    );
    assert!(!request.is_error());
    let handler = child_of(&spans, request, "vesper-gateway", "internal", "webhook");
    assert_eq!(handler.attribute("events").as_deref(), Some("2"));
    let call = child_of(
        &spans,
        handler,
        "vesper-gateway",
        "client",
        "vesper.v1.EventIngest/Ingest",
    );
    assert_eq!(call.attribute("rpc.system").as_deref(), Some("grpc"));
    assert_eq!(call.attribute("rpc.grpc.status_code").as_deref(), Some("0"));
    let served = child_of(
        &spans,
        call,
        "vesper-ingest",
        "server",
        "vesper.v1.EventIngest/Ingest",
    );
    assert_eq!(
        served.attribute("rpc.service").as_deref(),
        Some("vesper.v1.EventIngest")
    );
    assert_eq!(served.attribute("rpc.method").as_deref(), Some("Ingest"));
    let ingested = child_of(&spans, served, "vesper-ingest", "internal", "ingest");
    assert_eq!(ingested.attribute("accepted").as_deref(), Some("2"));

    // The flush: its own trace, linked to the call, holding storage's write.
    let flush = only(
        &spans,
        "flush span linked to the webhook call",
        is_flush_of_webhook,
    );
    assert_eq!(flush.service, "vesper-ingest");
    assert_ne!(
        flush.trace_id(),
        WEBHOOK_TRACE,
        "a flush runs in a trace of its own"
    );
    assert_eq!(
        flush.parent_span_id(),
        "",
        "the flush span is the root of its trace"
    );
    assert_eq!(
        flush.links(),
        vec![(WEBHOOK_TRACE.to_owned(), ingested.span_id())],
        "the flush links to the span that took its events in"
    );
    assert_eq!(flush.attribute("key").as_deref(), Some(key.as_str()));
    assert_eq!(flush.attribute("events").as_deref(), Some("2"));
    assert!(!flush.is_error());
    let put = child_of(
        &spans,
        flush,
        "vesper-ingest",
        "client",
        "vesper.v1.Storage/PutObject",
    );
    let stored = child_of(
        &spans,
        put,
        "vesper-storage",
        "server",
        "vesper.v1.Storage/PutObject",
    );
    let written = child_of(&spans, stored, "vesper-storage", "internal", "put_object");
    assert_eq!(written.attribute("key").as_deref(), Some(key.as_str()));

    // And back in the call's trace, once written: where its events went.
    let landed = child_of(
        &spans,
        ingested,
        "vesper-ingest",
        "internal",
        "ingest.flushed",
    );
    assert_eq!(landed.attribute("key").as_deref(), Some(key.as_str()));
    assert_eq!(landed.attribute("events").as_deref(), Some("2"));
    assert_eq!(landed.links(), vec![(flush.trace_id(), flush.span_id())]);

    // The REST call: caller -> gateway -> DataSource.
    let rest = only(&spans, "REST request span", |span| {
        span.trace_id() == REST_TRACE && span.name() == "GET /api/users"
    });
    assert_eq!(rest.parent_span_id(), REST_PARENT);
    assert_eq!(rest.attribute("url.query").as_deref(), Some("limit=2"));
    let listing = child_of(&spans, rest, "vesper-gateway", "internal", "list_users");
    let call = child_of(
        &spans,
        listing,
        "vesper-gateway",
        "client",
        "vesper.v1.DataSource/ListUsers",
    );
    let served = child_of(
        &spans,
        call,
        "vesper-datasource",
        "server",
        "vesper.v1.DataSource/ListUsers",
    );
    child_of(
        &spans,
        served,
        "vesper-datasource",
        "internal",
        "list_users",
    );
    drop(mesh);
    collector.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_generated_push_is_one_trace_from_the_generator_to_ingest() {
    let collector = OtlpCollector::start().await;
    // The gateway never calls DataSource here; the generator calls it.
    let mesh = Mesh::start(&collector, "127.0.0.1:9");
    let webhook = mesh.url("/webhook/events");
    let _datasource = start(
        &[
            "datasource",
            "--grpc-addr",
            "127.0.0.1:0",
            "--webhook-url",
            &webhook,
            "--generator-delay",
            "0s",
            "--generator-interval",
            "1h",
        ],
        &collector.env(),
    );

    let spans = collector
        .wait_for(WAIT, |spans| {
            spans.iter().any(|push| {
                push.name() == "generator.push"
                    && spans.iter().any(|span| {
                        span.trace_id() == push.trace_id()
                            && span.service == "vesper-ingest"
                            && span.name() == "ingest"
                    })
            })
        })
        .await;
    let push = only(&spans, "generator push", |span| {
        span.name() == "generator.push"
    });
    assert_eq!(push.service, "vesper-datasource");
    assert_eq!(push.parent_span_id(), "", "each push starts a trace");
    let post = child_of(&spans, push, "vesper-datasource", "client", "POST");
    assert_eq!(
        post.attribute("url.full").as_deref(),
        Some(webhook.as_str())
    );
    assert_eq!(
        post.attribute("http.response.status_code").as_deref(),
        Some("200")
    );
    let request = child_of(
        &spans,
        post,
        "vesper-gateway",
        "server",
        "POST /webhook/events",
    );
    let handler = child_of(&spans, request, "vesper-gateway", "internal", "webhook");
    let call = child_of(
        &spans,
        handler,
        "vesper-gateway",
        "client",
        "vesper.v1.EventIngest/Ingest",
    );
    let served = child_of(
        &spans,
        call,
        "vesper-ingest",
        "server",
        "vesper.v1.EventIngest/Ingest",
    );
    child_of(&spans, served, "vesper-ingest", "internal", "ingest");
    drop(mesh);
    collector.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_run_is_one_trace_through_the_gateway_to_datasource_and_storage() {
    let collector = OtlpCollector::start().await;
    let datasource = quiet_datasource(&collector);
    let mesh = Mesh::start(&collector, &datasource.grpc_addr().to_string());
    let storage = mesh.storage.grpc_addr().to_string();
    let output = VesperProcess::run(
        &[
            "batch",
            "run",
            "content",
            "--source-url",
            &mesh.url("/api/"),
            "--storage-addr",
            &storage,
        ],
        &collector.env(),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // `vesper batch run` has exited: its spans were flushed on the way out.
    let spans = collector
        .wait_for(WAIT, |spans| {
            spans.iter().any(|span| span.name() == "batch.run")
                && spans.iter().any(|span| {
                    span.service == "vesper-datasource" && span.name() == "list_content"
                })
                && spans
                    .iter()
                    .filter(|span| span.service == "vesper-storage" && span.name() == "put_object")
                    .count()
                    == 2
        })
        .await;
    let run = only(&spans, "batch run", |span| span.name() == "batch.run");
    assert_eq!(run.service, "vesper-batch");
    assert_eq!(run.parent_span_id(), "");
    assert_eq!(run.attribute("pipeline").as_deref(), Some("content"));
    assert_eq!(run.attribute("records").as_deref(), Some("1000"));
    let get = child_of(&spans, run, "vesper-batch", "client", "GET");
    assert_eq!(
        get.attribute("url.full").as_deref(),
        Some(mesh.url("/api/content").as_str())
    );
    assert_eq!(
        get.attribute("http.response.status_code").as_deref(),
        Some("200")
    );
    let request = child_of(&spans, get, "vesper-gateway", "server", "GET /api/content");
    let handler = child_of(
        &spans,
        request,
        "vesper-gateway",
        "internal",
        "list_content",
    );
    let call = child_of(
        &spans,
        handler,
        "vesper-gateway",
        "client",
        "vesper.v1.DataSource/ListContent",
    );
    let served = child_of(
        &spans,
        call,
        "vesper-datasource",
        "server",
        "vesper.v1.DataSource/ListContent",
    );
    child_of(
        &spans,
        served,
        "vesper-datasource",
        "internal",
        "list_content",
    );
    // The part, then the manifest, each written through storage in the run's trace.
    let writes: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|span| {
            span.parent_span_id() == run.span_id() && span.name() == "vesper.v1.Storage/PutObject"
        })
        .collect();
    assert_eq!(writes.len(), 2, "{}", summary(&spans));
    for write in writes {
        child_of(
            &spans,
            write,
            "vesper-storage",
            "server",
            "vesper.v1.Storage/PutObject",
        );
    }
    drop(mesh);
    collector.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn health_probes_are_not_traced() {
    let collector = OtlpCollector::start().await;
    let mut mesh = Mesh::start(&collector, "127.0.0.1:9");
    let health = mesh.url("/health");
    for probe in [
        ["healthcheck", "--http", health.as_str()],
        [
            "healthcheck",
            "--grpc",
            &mesh.storage.grpc_addr().to_string(),
        ],
    ] {
        let output = VesperProcess::run(&probe, &collector.env());
        assert!(
            output.status.success(),
            "{probe:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // The same route called by anyone else is traced.
    let answer = reqwest::get(&health).await.expect("GET /health");
    assert_eq!(answer.status(), 200);

    // Stopped, every process has sent all it had.
    for process in [&mut mesh.gateway, &mut mesh.ingest, &mut mesh.storage] {
        process.signal("TERM");
        assert!(process.wait_exit(WAIT).is_some(), "{}", process.log());
    }
    let spans = collector.spans();
    let requests: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|span| span.name() == "GET /health")
        .collect();
    assert_eq!(
        requests.len(),
        1,
        "only the plain call:\n{}",
        summary(&spans)
    );
    assert_eq!(requests[0].parent_span_id(), "");
    assert!(
        !spans
            .iter()
            .any(|span| span.service == "vesper-healthcheck"
                || span.name().starts_with("grpc.health")),
        "probes leave no trace:\n{}",
        summary(&spans)
    );
    collector.stop();
}

/// The names of a process's threads (Linux).
fn thread_names(process: &VesperProcess) -> Vec<String> {
    let tasks = PathBuf::from(format!("/proc/{}/task", process.pid()));
    std::fs::read_dir(&tasks)
        .expect("the process's threads")
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .collect()
}

/// The batch span processor's thread, as the kernel shortens its name.
const EXPORT_THREAD: &str = "OpenTelemetry.T";

async fn head_with_traceparent(storage: &VesperProcess, trace: &str) {
    let mut client = StorageClient::connect(format!("http://{}", storage.grpc_addr()))
        .await
        .expect("connect to storage");
    let mut request = tonic::Request::new(HeadObjectRequest {
        key: "no/such/object".into(),
    });
    request.metadata_mut().insert(
        "traceparent",
        MetadataValue::try_from(traceparent(trace, REST_PARENT)).expect("ascii"),
    );
    let status = client.head_object(request).await.expect_err("no object");
    assert_eq!(status.code(), tonic::Code::NotFound);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_an_endpoint_no_exporter_is_built_and_nothing_is_sent() {
    let collector = OtlpCollector::start().await;
    let lake = tempfile::tempdir().expect("lake dir");
    let lake = path_arg(lake.path());
    let storage = |env: &[(&str, String)]| {
        start(
            &["storage", "--grpc-addr", "127.0.0.1:0", "--lake", &lake],
            env,
        )
    };
    let mut traced_env = collector.env();
    traced_env.push(("OTEL_SERVICE_NAME", "renamed-storage".into()));
    let traced = storage(&traced_env);
    let mut unset = storage(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", String::new()),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", String::new()),
    ]);
    let mut disabled_env = collector.env();
    disabled_env.push(("OTEL_SDK_DISABLED", "true".into()));
    disabled_env.push(("OTEL_SERVICE_NAME", "disabled-storage".into()));
    let mut disabled = storage(&disabled_env);

    assert!(
        thread_names(&traced)
            .iter()
            .any(|name| name == EXPORT_THREAD),
        "an exporting process runs the span processor's thread: {:?}",
        thread_names(&traced)
    );
    assert!(traced.log().contains("exporting traces over OTLP"));
    for quiet in [&unset, &disabled] {
        assert!(
            !thread_names(quiet).iter().any(|name| name == EXPORT_THREAD),
            "no exporter thread without export: {:?}",
            thread_names(quiet)
        );
        assert!(!quiet.log().contains("exporting traces over OTLP"));
    }

    const TRACED: &str = "11111111111111111111111111111111";
    const DISABLED: &str = "22222222222222222222222222222222";
    head_with_traceparent(&traced, TRACED).await;
    head_with_traceparent(&unset, "33333333333333333333333333333333").await;
    head_with_traceparent(&disabled, DISABLED).await;
    // A process that exported anything would send it before it exits.
    for quiet in [&mut unset, &mut disabled] {
        quiet.signal("TERM");
        assert!(quiet.wait_exit(WAIT).is_some_and(|status| status.success()));
    }
    let spans = collector
        .wait_for(WAIT, |spans| {
            spans.iter().any(|span| span.trace_id() == TRACED)
        })
        .await;
    assert!(
        spans.iter().all(|span| span.service == "renamed-storage"),
        "OTEL_SERVICE_NAME names the service, and only the exporting process sent spans:\n{}",
        summary(&spans)
    );
    assert!(!spans.iter().any(|span| span.trace_id() == DISABLED));
    collector.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_not_yet_exported_are_flushed_when_the_process_stops() {
    let collector = OtlpCollector::start().await;
    let lake = tempfile::tempdir().expect("lake dir");
    let mut env = collector.env();
    // Far longer than the test: only the shutdown can send these spans.
    env.push(("OTEL_BSP_SCHEDULE_DELAY", "60000".into()));
    let mut storage = start(
        &[
            "storage",
            "--grpc-addr",
            "127.0.0.1:0",
            "--lake",
            &path_arg(lake.path()),
        ],
        &env,
    );
    const TRACE: &str = "44444444444444444444444444444444";
    head_with_traceparent(&storage, TRACE).await;
    assert!(
        collector.spans().is_empty(),
        "nothing is exported before the schedule delay"
    );

    storage.signal("TERM");
    let status = storage.wait_exit(WAIT).expect("storage exits on SIGTERM");
    assert!(status.success(), "{status:?}");
    let spans = collector.spans();
    let served = only(&spans, "storage server span", |span| {
        span.trace_id() == TRACE && span.kind() == "server"
    });
    assert_eq!(served.name(), "vesper.v1.Storage/HeadObject");
    assert_eq!(
        served.attribute("rpc.grpc.status_code").as_deref(),
        Some("5")
    );
    assert!(
        !served.is_error(),
        "NOT_FOUND is the caller's problem, not a server failure"
    );
    collector.stop();
}
