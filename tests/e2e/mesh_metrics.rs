//! Prometheus metrics of the real binaries: known traffic through the
//! gateway, ingest, storage, DataSource and a batch run against a scripted
//! upstream, then each `/metrics` is scraped and every counter must have
//! moved by exactly what the traffic makes it move. Every series also
//! follows the naming rules and is documented in docs/observability.md.

use std::time::Duration;

use serde_json::{Value, json};
use vesper::v1::{
    FlushRequest, HeadObjectRequest, IngestRequest, RunRequest, RunStatus,
    batch_pipeline_client::BatchPipelineClient, event_ingest_client::EventIngestClient,
    storage_client::StorageClient,
};
use vesper_tests::{EventFaults, Scrape, UpstreamReplica, VesperProcess, workspace_root};

fn start(args: &[&str]) -> VesperProcess {
    VesperProcess::start(args, &[])
}

async fn scrape(url: &str) -> Scrape {
    let response = reqwest::get(url).await.expect("scrape /metrics");
    assert_eq!(response.status(), 200, "{url}");
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("content type")
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    Scrape::parse(&response.text().await.expect("metrics text"))
}

/// What one scrape says that the one before did not: `after - before` for
/// the series `name` with (at least) `labels`.
fn delta(before: &Scrape, after: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    after.value(name, labels) - before.value(name, labels)
}

macro_rules! assert_delta {
    ($before:expr, $after:expr, $name:expr, $labels:expr, $expected:expr) => {{
        let labels: &[(&str, &str)] = &$labels;
        let moved = delta(&$before, &$after, $name, labels);
        assert_eq!(
            moved, $expected as f64,
            "{}{labels:?} moved by {moved}, expected {}",
            $name, $expected
        );
    }};
}

fn event(id: &str, event_type: &str, properties: Value) -> Value {
    json!({
        "event_id": id,
        "user_id": "user_7",
        "event_type": event_type,
        "source": "android",
        "timestamp": "2026-11-25T08:30:00Z",
        "properties": properties,
    })
}

const PURCHASE: &str = "3d0c2f9e-1b7a-4c55-8a31-5e2b7d9c0a01";
const SIGNUP: &str = "3d0c2f9e-1b7a-4c55-8a31-5e2b7d9c0a02";
const CLICK: &str = "3d0c2f9e-1b7a-4c55-8a31-5e2b7d9c0a03";

fn purchase() -> Value {
    event(
        PURCHASE,
        "purchase",
        json!({"amount": 12.5, "product_id": "prod_3"}),
    )
}

/// Every series is `vesper_<component>_<thing>[_<unit>]`, counters end in
/// `_total`, histograms are durations in `_seconds`, and docs/observability.md
/// documents each.
fn assert_conventions(scrape: &Scrape, readme: &str) {
    const COMPONENTS: [&str; 6] = ["grpc", "http", "storage", "ingest", "batch", "datasource"];
    for (name, kind) in scrape.types() {
        let component = name
            .strip_prefix("vesper_")
            .and_then(|rest| rest.split('_').next())
            .unwrap_or_default();
        assert!(
            COMPONENTS.contains(&component),
            "{name}: not vesper_<component>_..."
        );
        match kind.as_str() {
            "counter" => assert!(
                name.ends_with("_total"),
                "counter {name} must end in _total"
            ),
            "histogram" => assert!(
                name.ends_with("_seconds"),
                "histogram {name} must be in _seconds"
            ),
            "gauge" => assert!(
                !name.ends_with("_total"),
                "gauge {name} must not end in _total"
            ),
            other => panic!("{name}: unexpected type {other}"),
        }
        assert!(
            readme.contains(&format!("`{name}`")),
            "{name} is not documented in docs/observability.md"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_the_traffic_exactly() {
    let readme = std::fs::read_to_string(workspace_root().join("docs/observability.md"))
        .expect("docs/observability.md");
    let lake = tempfile::tempdir().expect("lake dir");
    let wal = tempfile::tempdir().expect("wal dir");
    let storage = start(&[
        "storage",
        "--grpc-addr",
        "127.0.0.1:0",
        "--lake",
        &lake.path().display().to_string(),
        "--metrics-addr",
        "127.0.0.1:0",
    ]);
    let storage_addr = storage.grpc_addr().to_string();
    let ingest = start(&[
        "ingest",
        "--grpc-addr",
        "127.0.0.1:0",
        "--storage-addr",
        &storage_addr,
        "--wal-dir",
        &wal.path().display().to_string(),
        "--max-batch-age",
        "1h",
        "--metrics-addr",
        "127.0.0.1:0",
    ]);
    let datasource = start(&[
        "datasource",
        "--grpc-addr",
        "127.0.0.1:0",
        "--no-generator",
        "--no-faults",
        "--metrics-addr",
        "127.0.0.1:0",
    ]);
    let gateway = start(&[
        "gateway",
        "--http-addr",
        "127.0.0.1:0",
        "--ingest-addr",
        &ingest.grpc_addr().to_string(),
        "--datasource-addr",
        &datasource.grpc_addr().to_string(),
    ]);
    let gateway_metrics = format!("http://{}/metrics", gateway.http_addr());
    let url = |path: &str| format!("http://{}{path}", gateway.http_addr());

    let gateway_before = scrape(&gateway_metrics).await;
    let ingest_before = scrape(&ingest.metrics_url()).await;
    let storage_before = scrape(&storage.metrics_url()).await;
    let datasource_before = scrape(&datasource.metrics_url()).await;
    assert!(
        ingest_before.has("vesper_ingest_wal_bytes"),
        "the WAL gauge is there from the start"
    );
    assert_eq!(
        ingest_before.value("vesper_ingest_wal_limit_bytes", &[]),
        (256 * 1024 * 1024) as f64,
        "the default --max-wal-bytes"
    );

    // The webhook: a signup (filtered), a duplicate within the batch, then
    // a resend (a duplicate across batches), then an invalid batch.
    let http = reqwest::Client::new();
    let post = |body: Value| {
        let request = http.post(url("/webhook/events")).json(&body);
        async move { request.send().await.expect("webhook call") }
    };
    let first: Value = post(json!({"events": [
        purchase(),
        event(SIGNUP, "signup", json!({})),
        purchase(),
        event(CLICK, "click", json!({})),
    ]}))
    .await
    .json()
    .await
    .expect("answer");
    assert_eq!(
        (&first["accepted"], &first["filtered"], &first["duplicates"]),
        (&json!(2), &json!(1), &json!(1)),
        "{first}"
    );
    let resent: Value = post(json!({"events": [purchase()]}))
        .await
        .json()
        .await
        .expect("answer");
    assert_eq!(resent["duplicates"], 1, "{resent}");
    // Three events, one of them invalid: the batch is refused whole.
    let mut invalid = purchase();
    invalid["timestamp"] = json!("yesterday");
    let refused_batch = json!({"events": [
        event("3d0c2f9e-1b7a-4c55-8a31-5e2b7d9c0a01", "click", json!({})),
        invalid,
        event("3d0c2f9e-1b7a-4c55-8a31-5e2b7d9c0a02", "click", json!({})),
    ]});
    assert_eq!(post(refused_batch).await.status(), 400);
    assert_eq!(post(json!({"events": "nope"})).await.status(), 400);

    // gRPC callers get the same validation; ingest counts what it rejects.
    let mut ingest_client = EventIngestClient::connect(format!("http://{}", ingest.grpc_addr()))
        .await
        .expect("connect to ingest");
    let mut events = vesper::wire::decode_webhook(&json!({"events": [
        event("3d0c2f9e-1b7a-4c55-8a31-5e2b7d9c0a04", "click", json!({})),
        event("3d0c2f9e-1b7a-4c55-8a31-5e2b7d9c0a05", "click", json!({})),
    ]}))
    .expect("valid events");
    events[1].event_id = "not-a-uuid".into();
    let refused = ingest_client
        .ingest(IngestRequest { events })
        .await
        .expect("ingest")
        .into_inner();
    assert_eq!(refused.errors.len(), 1, "{refused:?}");

    let ingest_buffered = scrape(&ingest.metrics_url()).await;
    assert_eq!(
        ingest_buffered.value("vesper_ingest_buffered_events", &[]),
        2.0
    );
    assert!(
        ingest_buffered.value("vesper_ingest_wal_bytes", &[])
            > ingest_before.value("vesper_ingest_wal_bytes", &[]),
        "the accepted events take log space"
    );

    let flushed = ingest_client
        .flush(FlushRequest {})
        .await
        .expect("flush")
        .into_inner();
    assert_eq!((flushed.objects_written, flushed.events_written), (1, 2));
    let object_bytes = std::fs::metadata(lake.path().join(&flushed.keys[0]))
        .expect("the object is in the lake")
        .len();

    let mut storage_client = StorageClient::connect(format!("http://{storage_addr}"))
        .await
        .expect("connect to storage");
    let missing = storage_client
        .head_object(HeadObjectRequest {
            key: "no/such/object".into(),
        })
        .await
        .expect_err("no such object");
    assert_eq!(missing.code(), tonic::Code::NotFound);

    // The REST face: one call through to DataSource, one refused before it.
    assert_eq!(
        http.get(url("/api/users?limit=5"))
            .send()
            .await
            .expect("users")
            .status(),
        200
    );
    assert_eq!(
        http.get(url("/api/users?offset=abc"))
            .send()
            .await
            .expect("users")
            .status(),
        400
    );

    // /health adds both refusals up: three webhook events, two over gRPC.
    let health: Value = http
        .get(url("/health"))
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("health json");
    assert_eq!(
        (
            &health["accepted"],
            &health["filtered"],
            &health["duplicates"],
            &health["rejected"],
            &health["flushed_objects"],
        ),
        (&json!(2), &json!(1), &json!(2), &json!(5), &json!(1)),
        "{health}"
    );

    let gateway_after = scrape(&gateway_metrics).await;
    let ingest_after = scrape(&ingest.metrics_url()).await;
    let storage_after = scrape(&storage.metrics_url()).await;
    let datasource_after = scrape(&datasource.metrics_url()).await;

    let (g0, g1) = (&gateway_before, &gateway_after);
    let requests = "vesper_http_requests_total";
    let webhook = [("method", "POST"), ("route", "/webhook/events")];
    assert_delta!(
        g0,
        g1,
        requests,
        [webhook[0], webhook[1], ("status", "200")],
        2
    );
    assert_delta!(
        g0,
        g1,
        requests,
        [webhook[0], webhook[1], ("status", "400")],
        2
    );
    assert_delta!(
        g0,
        g1,
        "vesper_http_request_duration_seconds_count",
        webhook,
        4
    );
    // The webhook's refusals never reach ingest; the gateway counts them in
    // the same series.
    assert_delta!(
        g0,
        g1,
        "vesper_ingest_events_total",
        [("outcome", "rejected")],
        3
    );
    let users = [("method", "GET"), ("route", "/api/users")];
    assert_delta!(g0, g1, requests, [users[0], users[1], ("status", "200")], 1);
    assert_delta!(g0, g1, requests, [users[0], users[1], ("status", "400")], 1);
    assert_delta!(g0, g1, requests, [("route", "/metrics")], 0);

    let (i0, i1) = (&ingest_before, &ingest_after);
    let grpc = "vesper_grpc_requests_total";
    let ingest_rpc = ("rpc", "vesper.v1.EventIngest/Ingest");
    assert_delta!(i0, i1, grpc, [ingest_rpc, ("code", "OK")], 3);
    assert_delta!(i0, i1, grpc, [ingest_rpc], 3);
    assert_delta!(
        i0,
        i1,
        grpc,
        [("rpc", "vesper.v1.EventIngest/Flush"), ("code", "OK")],
        1
    );
    assert_delta!(
        i0,
        i1,
        "vesper_grpc_request_duration_seconds_count",
        [ingest_rpc],
        3
    );
    let outcome = |name| [("outcome", name)];
    assert_delta!(i0, i1, "vesper_ingest_events_total", outcome("accepted"), 2);
    assert_delta!(i0, i1, "vesper_ingest_events_total", outcome("filtered"), 1);
    assert_delta!(
        i0,
        i1,
        "vesper_ingest_events_total",
        outcome("duplicate"),
        2
    );
    assert_delta!(i0, i1, "vesper_ingest_events_total", outcome("rejected"), 2);
    assert_delta!(i0, i1, "vesper_ingest_flushes_total", [("result", "ok")], 1);
    assert_delta!(
        i0,
        i1,
        "vesper_ingest_flushes_total",
        [("result", "error")],
        0
    );
    assert_delta!(i0, i1, "vesper_ingest_flush_duration_seconds_count", [], 1);
    // One group commit at least for the accepted events, one for the
    // flush's intent and one for its confirmation.
    assert!(
        i1.value("vesper_ingest_wal_sync_duration_seconds_count", &[])
            >= i0.value("vesper_ingest_wal_sync_duration_seconds_count", &[]) + 3.0
    );
    assert_delta!(i0, i1, "vesper_ingest_objects_written_total", [], 1);
    assert_eq!(i1.value("vesper_ingest_buffered_events", &[]), 0.0);

    let (s0, s1) = (&storage_before, &storage_after);
    assert_delta!(
        s0,
        s1,
        grpc,
        [("rpc", "vesper.v1.Storage/PutObject"), ("code", "OK")],
        1
    );
    assert_delta!(
        s0,
        s1,
        grpc,
        [
            ("rpc", "vesper.v1.Storage/HeadObject"),
            ("code", "NOT_FOUND")
        ],
        1
    );
    let operations = "vesper_storage_operations_total";
    assert_delta!(
        s0,
        s1,
        operations,
        [("operation", "put"), ("outcome", "ok")],
        1
    );
    assert_delta!(
        s0,
        s1,
        operations,
        [("operation", "head"), ("outcome", "error")],
        1
    );
    let errors = "vesper_storage_errors_total";
    assert_delta!(
        s0,
        s1,
        errors,
        [("operation", "head"), ("code", "NOT_FOUND")],
        1
    );
    assert_delta!(s0, s1, errors, [("operation", "put")], 0);
    assert_delta!(
        s0,
        s1,
        "vesper_storage_bytes_written_total",
        [],
        object_bytes
    );
    assert_delta!(
        s0,
        s1,
        "vesper_storage_operation_duration_seconds_count",
        [("operation", "put")],
        1
    );

    let (d0, d1) = (&datasource_before, &datasource_after);
    assert_delta!(
        d0,
        d1,
        grpc,
        [("rpc", "vesper.v1.DataSource/ListUsers"), ("code", "OK")],
        1
    );
    assert_delta!(d0, d1, grpc, [("rpc", "vesper.v1.DataSource/ListUsers")], 1);

    // A batch run against an upstream whose /api/events answers 503 on
    // calls 1, 6 and 11: ten pages in thirteen calls, three of them retries.
    let upstream = UpstreamReplica::with_faults(EventFaults {
        unavailable_every: 5,
        stall_every: 0,
        stall: Duration::ZERO,
    });
    let batch = start(&[
        "batch",
        "serve",
        "--grpc-addr",
        "127.0.0.1:0",
        "--storage-addr",
        &storage_addr,
        "--source-url",
        &upstream.base_url(),
        "--metrics-addr",
        "127.0.0.1:0",
    ]);
    let batch_before = scrape(&batch.metrics_url()).await;
    let storage_before_run = scrape(&storage.metrics_url()).await;
    let mut batch_client = BatchPipelineClient::connect(format!("http://{}", batch.grpc_addr()))
        .await
        .expect("connect to batch");
    let reports = batch_client
        .run(RunRequest {
            pipelines: vec!["events".into()],
        })
        .await
        .expect("run")
        .into_inner()
        .reports;
    let report = &reports[0];
    assert_eq!(report.status, RunStatus::Succeeded as i32, "{report:?}");
    assert_eq!((report.pages, report.retries), (10, 3), "{report:?}");
    let batch_after = scrape(&batch.metrics_url()).await;
    let storage_after_run = scrape(&storage.metrics_url()).await;

    let (b0, b1) = (&batch_before, &batch_after);
    let pipeline = [("pipeline", "events")];
    assert_delta!(
        b0,
        b1,
        "vesper_batch_records_total",
        pipeline,
        report.records
    );
    assert_delta!(b0, b1, "vesper_batch_pages_total", pipeline, 10);
    assert_delta!(b0, b1, "vesper_batch_retries_total", pipeline, 3);
    assert_delta!(
        b0,
        b1,
        "vesper_batch_runs_total",
        [pipeline[0], ("status", "succeeded")],
        1
    );
    assert_delta!(
        b0,
        b1,
        "vesper_batch_request_duration_seconds_count",
        pipeline,
        13
    );
    assert_delta!(
        b0,
        b1,
        grpc,
        [("rpc", "vesper.v1.BatchPipeline/Run"), ("code", "OK")],
        1
    );
    assert_delta!(
        storage_before_run,
        storage_after_run,
        "vesper_storage_operations_total",
        [("operation", "put"), ("outcome", "ok")],
        report.parts.len() + 1
    );

    for scrape in [
        &gateway_after,
        &ingest_after,
        &storage_after,
        &datasource_after,
        &batch_after,
    ] {
        assert_conventions(scrape, &readme);
    }
}
