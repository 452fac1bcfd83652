//! An OpenTelemetry collector inside the test: an OTLP trace receiver on
//! loopback, over gRPC or over HTTP (`http/protobuf`), that keeps every
//! span it receives.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, HeaderName, StatusCode, header::CONTENT_TYPE},
    routing::post,
};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{AnyValue, any_value::Value},
    trace::v1::{Span, span::SpanKind, status::StatusCode as SpanStatusCode},
};
use prost::Message;

/// One received span with the `service.name` of the process that sent it.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// `service.name` of the exporting resource.
    pub service: String,
    /// The span as exported.
    pub span: Span,
}

impl ReceivedSpan {
    /// The trace id as lower-case hex.
    pub fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }

    /// The span id as lower-case hex.
    pub fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }

    /// The parent span id as lower-case hex ("" for a root span).
    pub fn parent_span_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }

    /// The trace ids this span links to.
    pub fn linked_trace_ids(&self) -> Vec<String> {
        self.links().into_iter().map(|(trace, _)| trace).collect()
    }

    /// The (trace id, span id) of every span this span links to.
    pub fn links(&self) -> Vec<(String, String)> {
        self.span
            .links
            .iter()
            .map(|link| (hex(&link.trace_id), hex(&link.span_id)))
            .collect()
    }

    /// The span's name.
    pub fn name(&self) -> &str {
        &self.span.name
    }

    /// The span kind: "server", "client", "internal", ...
    pub fn kind(&self) -> &'static str {
        match SpanKind::try_from(self.span.kind) {
            Ok(SpanKind::Server) => "server",
            Ok(SpanKind::Client) => "client",
            Ok(SpanKind::Internal) => "internal",
            Ok(SpanKind::Producer) => "producer",
            Ok(SpanKind::Consumer) => "consumer",
            Ok(SpanKind::Unspecified) | Err(_) => "unspecified",
        }
    }

    /// Whether the span's status is ERROR.
    pub fn is_error(&self) -> bool {
        self.span
            .status
            .as_ref()
            .is_some_and(|status| status.code == SpanStatusCode::Error as i32)
    }

    /// An attribute's value as text (numbers and booleans formatted), if
    /// the span has it.
    pub fn attribute(&self, key: &str) -> Option<String> {
        self.span
            .attributes
            .iter()
            .find(|attribute| attribute.key == key)
            .and_then(|attribute| attribute.value.as_ref())
            .map(text)
    }
}

fn text(value: &AnyValue) -> String {
    match &value.value {
        Some(Value::StringValue(text)) => text.clone(),
        Some(Value::IntValue(number)) => number.to_string(),
        Some(Value::DoubleValue(number)) => number.to_string(),
        Some(Value::BoolValue(flag)) => flag.to_string(),
        other => format!("{other:?}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, Clone, Default)]
struct Sink {
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
}

impl Sink {
    fn keep(&self, request: ExportTraceServiceRequest) {
        let mut spans = self.spans.lock().expect("collector lock");
        for resource_spans in request.resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|resource| &resource.attributes)
                .find(|attribute| attribute.key == "service.name")
                .and_then(|attribute| attribute.value.as_ref())
                .map(text)
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    spans.push(ReceivedSpan {
                        service: service.clone(),
                        span,
                    });
                }
            }
        }
    }
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.keep(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// OTLP/HTTP's trace export: a protobuf `ExportTraceServiceRequest` posted
/// to `/v1/traces`, answered with a protobuf response.
async fn export_over_http(
    State(sink): State<Sink>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<([(HeaderName, &'static str); 1], Vec<u8>), (StatusCode, String)> {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    if content_type != PROTOBUF {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("expected {PROTOBUF}, got {content_type:?}"),
        ));
    }
    let request = ExportTraceServiceRequest::decode(body)
        .map_err(|err| (StatusCode::BAD_REQUEST, err.to_string()))?;
    sink.keep(request);
    Ok((
        [(CONTENT_TYPE, PROTOBUF)],
        ExportTraceServiceResponse::default().encode_to_vec(),
    ))
}

const PROTOBUF: &str = "application/x-protobuf";

/// The transport a collector receives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpTransport {
    /// OTLP/gRPC, vesper's default.
    Grpc,
    /// OTLP/HTTP with protobuf bodies.
    HttpProtobuf,
}

/// A running in-test OTLP collector.
#[derive(Debug)]
pub struct OtlpCollector {
    addr: SocketAddr,
    transport: OtlpTransport,
    sink: Sink,
    stop: tokio::sync::oneshot::Sender<()>,
}

impl OtlpCollector {
    /// Starts an OTLP/gRPC collector on 127.0.0.1 with a free port (inside
    /// a tokio runtime).
    pub async fn start() -> Self {
        Self::start_with(OtlpTransport::Grpc).await
    }

    /// Starts a collector for `transport` on 127.0.0.1 with a free port
    /// (inside a tokio runtime).
    pub async fn start_with(transport: OtlpTransport) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the collector");
        let addr = listener.local_addr().expect("collector address");
        let sink = Sink::default();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let stopped = async {
            let _ = stopped.await;
        };
        match transport {
            OtlpTransport::Grpc => {
                let service = TraceServiceServer::new(sink.clone());
                tokio::spawn(async move {
                    let incoming = tonic::transport::server::TcpIncoming::from(listener);
                    let _ = tonic::transport::Server::builder()
                        .add_service(service)
                        .serve_with_incoming_shutdown(incoming, stopped)
                        .await;
                });
            }
            OtlpTransport::HttpProtobuf => {
                let app = Router::new()
                    .route("/v1/traces", post(export_over_http))
                    .with_state(sink.clone());
                tokio::spawn(async move {
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(stopped)
                        .await;
                });
            }
        }
        Self {
            addr,
            transport,
            sink,
            stop,
        }
    }

    /// The endpoint for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The environment that points a vesper process at this collector and
    /// makes it export promptly.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", self.endpoint()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        ];
        if self.transport == OtlpTransport::HttpProtobuf {
            env.push(("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".to_owned()));
        }
        env
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.sink.spans.lock().expect("collector lock").clone()
    }

    /// Waits until `done` holds for the received spans, or panics with what
    /// arrived after `timeout`.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        let mut seen = Vec::new();
        crate::eventually(SpansSoFar(self), timeout, async || {
            seen = self.spans();
            done(&seen)
        })
        .await;
        seen
    }

    /// Stops the collector.
    pub fn stop(self) {
        let _ = self.stop.send(());
    }
}

/// What a collector received, for the message of a wait that timed out.
struct SpansSoFar<'a>(&'a OtlpCollector);

impl std::fmt::Display for SpansSoFar<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let spans = self.0.spans();
        let received: Vec<_> = spans
            .iter()
            .map(|s| (&s.service, &s.span.name, s.trace_id()))
            .collect();
        write!(f, "the expected spans; got: {received:#?}")
    }
}
