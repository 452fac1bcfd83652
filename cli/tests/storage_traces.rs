//! With OTEL_EXPORTER_OTLP_ENDPOINT set, `vesper storage` exports its spans
//! over OTLP (gRPC by default, HTTP when OTEL_EXPORTER_OTLP_PROTOCOL says
//! so), continuing the caller's W3C trace context, and exits cleanly.

use std::{path::Path, time::Duration};

use tonic::metadata::MetadataValue;
use vesper::v1::{HeadObjectRequest, storage_client::StorageClient};
use vesper_tests::{OtlpCollector, OtlpTransport, VesperProcess};

const BIN: &str = env!("CARGO_BIN_EXE_vesper");
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";

async fn a_call_with_a_traceparent_continues_that_trace(transport: OtlpTransport) {
    let collector = OtlpCollector::start_with(transport).await;
    let lake = tempfile::tempdir().expect("temp dir");
    let lake_arg = lake.path().to_string_lossy().into_owned();
    let mut storage = VesperProcess::start_with(
        Path::new(BIN),
        &["storage", "--grpc-addr", "127.0.0.1:0", "--lake", &lake_arg],
        &collector.env(),
    );
    let mut client = StorageClient::connect(format!("http://{}", storage.grpc_addr()))
        .await
        .expect("connect");
    let mut request = tonic::Request::new(HeadObjectRequest {
        key: "no/such/object".into(),
    });
    request.metadata_mut().insert(
        "traceparent",
        MetadataValue::try_from(format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01")).expect("ascii"),
    );
    let status = client.head_object(request).await.expect_err("missing");
    assert_eq!(status.code(), tonic::Code::NotFound);

    let spans = collector
        .wait_for(Duration::from_secs(20), |spans| {
            spans.iter().any(|span| span.trace_id() == TRACE_ID)
        })
        .await;
    let server_span = spans
        .iter()
        .find(|span| {
            span.trace_id() == TRACE_ID && span.span.name == "vesper.v1.Storage/HeadObject"
        })
        .expect("the rpc span, named after the rpc");
    assert_eq!(server_span.service, "vesper-storage");
    assert_eq!(server_span.parent_span_id(), PARENT_SPAN_ID);

    // The exporter's last flush on the way out must not break the exit.
    storage.signal("INT");
    let exit = storage
        .wait_exit(Duration::from_secs(15))
        .expect("storage exits after SIGINT");
    assert!(exit.success(), "{exit:?}\n{}", storage.log());
    assert!(
        !storage.log().contains("trace export is off"),
        "{}",
        storage.log()
    );
    collector.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn over_grpc_a_call_with_a_traceparent_continues_that_trace() {
    a_call_with_a_traceparent_continues_that_trace(OtlpTransport::Grpc).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn over_http_a_call_with_a_traceparent_continues_that_trace() {
    a_call_with_a_traceparent_continues_that_trace(OtlpTransport::HttpProtobuf).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unsupported_protocol_is_named_and_the_service_still_runs() {
    let lake = tempfile::tempdir().expect("temp dir");
    let lake_arg = lake.path().to_string_lossy().into_owned();
    let mut storage = VesperProcess::start_with(
        Path::new(BIN),
        &["storage", "--grpc-addr", "127.0.0.1:0", "--lake", &lake_arg],
        &[
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "http://127.0.0.1:9".to_owned(),
            ),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json".to_owned()),
        ],
    );
    assert!(
        storage.log().contains(
            "OTLP trace export is off: OTEL_EXPORTER_OTLP_PROTOCOL=http/json is not supported; use grpc or http/protobuf"
        ),
        "{}",
        storage.log()
    );
    storage.signal("INT");
    let exit = storage
        .wait_exit(Duration::from_secs(15))
        .expect("storage exits after SIGINT");
    assert!(exit.success(), "{exit:?}");
}
