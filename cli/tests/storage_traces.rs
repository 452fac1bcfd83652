//! With OTEL_EXPORTER_OTLP_ENDPOINT set, `vesper storage` exports its spans
//! over OTLP, continuing the caller's W3C trace context.

use std::{path::Path, time::Duration};

use tonic::metadata::MetadataValue;
use vesper::v1::{HeadObjectRequest, storage_client::StorageClient};
use vesper_tests::{OtlpCollector, VesperProcess};

const BIN: &str = env!("CARGO_BIN_EXE_vesper");
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread")]
async fn a_call_with_a_traceparent_continues_that_trace() {
    let collector = OtlpCollector::start().await;
    let lake = tempfile::tempdir().expect("temp dir");
    let lake_arg = lake.path().to_string_lossy().into_owned();
    let storage = VesperProcess::start_with(
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
    collector.stop();
}
