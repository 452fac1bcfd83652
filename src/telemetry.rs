//! Telemetry, set up in one place for every service: `tracing` to stderr
//! (level from `RUST_LOG`, default `info`), and OpenTelemetry traces over
//! OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set. The standard `OTEL_*`
//! variables apply (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_TRACES_SAMPLER`, `OTEL_BSP_*`, `OTEL_TRACES_EXPORTER=none`,
//! `OTEL_SDK_DISABLED`, `OTEL_EXPORTER_OTLP_PROTOCOL`, the exporter's
//! timeout, header and compression variables). Without an endpoint no
//! exporter, processor or thread is built, and spans cost what plain
//! `tracing` spans cost.
//!
//! The protocol is gRPC unless `OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL` says
//! `http/protobuf`. The specification's default is `http/protobuf`, but
//! every vesper deployment so far points at a collector's gRPC port (4317),
//! and an old setting must not change meaning.
//!
//! `RUST_LOG` filters only what is printed: spans and events at INFO and
//! above are exported whatever it says, so quieting the logs never breaks a
//! trace (a disabled span would also stop the trace context from being
//! passed on).
//!
//! W3C trace context crosses every hop: [`set_parent_from_headers`] on the
//! way in (HTTP requests, gRPC calls), [`inject_context`] on the way out
//! (the gRPC client in [`crate::grpc`], [`http_client_span`] for HTTP
//! clients), and [`current_trace_context`] / [`add_link`] where batching
//! breaks the parent chain.

use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use std::{env, fmt::Display, io::IsTerminal, time::Duration};

use opentelemetry::{
    Context, Key, KeyValue,
    propagation::TextMapPropagator,
    trace::{TraceContextExt, TracerProvider as _},
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing::level_filters::LevelFilter;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{EnvFilter, Layer, filter::Targets, fmt, prelude::*};

/// How long the last export may take when the process ends; a collector
/// that is down must not hold up a shutdown for long.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Keeps telemetry running; dropping it flushes the spans not yet exported.
/// Hold it in `main` until the process ends, inside the tokio runtime.
#[derive(Debug)]
#[must_use = "telemetry stops when the guard is dropped"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Whether spans are exported over OTLP.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(err) = provider.shutdown_with_timeout(FLUSH_TIMEOUT)
        {
            eprintln!("vesper: could not flush the last trace spans: {err}");
        }
    }
}

/// Installs the process-wide subscriber for the service `service_name`
/// ("vesper-storage", ...), which becomes the OpenTelemetry `service.name`
/// unless `OTEL_SERVICE_NAME` (or `service.name` in
/// `OTEL_RESOURCE_ATTRIBUTES`) says otherwise. Call once, first thing,
/// inside the tokio runtime (the OTLP exporter needs it); later calls leave
/// the first subscriber in place.
pub fn init(service_name: &'static str) -> TelemetryGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let stderr = fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(colour_wanted())
        .with_target(false)
        .with_filter(filter);
    let provider = otlp_wanted(|name| env::var(name).ok())
        .then(|| otlp_provider(service_name))
        .flatten();
    let otel = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("vesper"))
            .with_threads(false)
            .with_filter(export_filter())
    });
    let installed = tracing_subscriber::registry()
        .with(stderr)
        .with(otel)
        .try_init()
        .is_ok();
    if !installed {
        return TelemetryGuard { provider: None };
    }
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    if let Some(provider) = &provider {
        opentelemetry::global::set_tracer_provider(provider.clone());
        tracing::info!(service = service_name, "exporting traces over OTLP");
    }
    TelemetryGuard { provider }
}

/// What is exported: spans and events at INFO and above, but none from
/// the HTTP, gRPC and AWS client libraries. Theirs are noise beside
/// vesper's own spans of the same calls, and the transport crates must be
/// left out anyway: the exporter runs on them, so their spans would be
/// exported by exporting, for ever.
fn export_filter() -> Targets {
    Targets::new().with_default(LevelFilter::INFO).with_targets(
        [
            "opentelemetry",
            "tonic",
            "h2",
            "hyper",
            "tower",
            "reqwest",
            "rustls",
            "aws",
        ]
        .map(|target| (target, LevelFilter::OFF)),
    )
}

/// Whether the environment (read through `var`) asks for an OTLP export:
/// an endpoint is set, and neither the SDK nor trace export is switched
/// off.
fn otlp_wanted(var: impl Fn(&str) -> Option<String>) -> bool {
    let set = |name: &str| var(name).is_some_and(|value| !value.trim().is_empty());
    let is = |name: &str, expected: &str| {
        var(name).is_some_and(|value| value.trim().eq_ignore_ascii_case(expected))
    };
    let disabled = is("OTEL_SDK_DISABLED", "true") || is("OTEL_TRACES_EXPORTER", "none");
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// The OTLP transports vesper exports over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OtlpProtocol {
    Grpc,
    HttpProtobuf,
}

/// The protocol the environment (read through `var`) asks for: the
/// traces-only variable first, then the general one, gRPC when neither is
/// set. An unsupported value is an error that names the variable.
fn otlp_protocol(var: impl Fn(&str) -> Option<String>) -> Result<OtlpProtocol, String> {
    for name in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        let Some(value) = var(name).filter(|value| !value.trim().is_empty()) else {
            continue;
        };
        return match value.trim().to_ascii_lowercase().as_str() {
            "grpc" => Ok(OtlpProtocol::Grpc),
            "http/protobuf" => Ok(OtlpProtocol::HttpProtobuf),
            _ => Err(format!(
                "{name}={value} is not supported; use grpc or http/protobuf"
            )),
        };
    }
    Ok(OtlpProtocol::Grpc)
}

fn otlp_provider(service_name: &'static str) -> Option<SdkTracerProvider> {
    let builder = opentelemetry_otlp::SpanExporter::builder();
    let exporter = otlp_protocol(|name| env::var(name).ok()).and_then(|protocol| {
        match protocol {
            OtlpProtocol::Grpc => builder.with_tonic().build(),
            OtlpProtocol::HttpProtobuf => builder
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .build(),
        }
        .map_err(|err| err.to_string())
    });
    let exporter = match exporter {
        Ok(exporter) => exporter,
        Err(err) => {
            eprintln!("vesper: OTLP trace export is off: {err}");
            return None;
        }
    };
    Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource(service_name))
            .build(),
    )
}

/// The standard resource (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
/// the SDK's own attributes) with vesper's service name and version where
/// the environment names none.
fn resource(service_name: &'static str) -> Resource {
    let detected = Resource::builder().build();
    let has = |key: &'static str| detected.get(&Key::from_static_str(key)).is_some();
    let named = detected
        .get(&Key::from_static_str("service.name"))
        .is_some_and(|name| !name.as_str().starts_with("unknown_service"));
    let mut builder = Resource::builder();
    if !named {
        builder = builder.with_service_name(service_name);
    }
    if !has("service.version") {
        builder =
            builder.with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    }
    builder.build()
}

/// Colours only on a terminal, and never when `NO_COLOR` is set
/// (<https://no-color.org>).
fn colour_wanted() -> bool {
    env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal()
}

// ---------------------------------------------------------------- propagation

// The carriers are opentelemetry-http's, over `http::HeaderMap`.

/// Makes `span` a child of the W3C trace context in `headers`
/// (`traceparent`, `tracestate`), if there is a valid one. Call right
/// after creating the span of an incoming request or call, before it is
/// entered.
pub fn set_parent_from_headers(span: &tracing::Span, headers: &http::HeaderMap) {
    if headers.get("traceparent").is_none() {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    if parent.span().span_context().is_valid() {
        // Fails only without the OpenTelemetry layer, where there is nothing to link.
        let _ = span.set_parent(parent);
    }
}

/// Makes `span` a child of the span a `traceparent` names (from
/// [`current_trace_context`]), to add to a trace after the fact; ignores a
/// malformed one. Call before the span is entered.
pub fn set_parent_from_traceparent(span: &tracing::Span, traceparent: &str) {
    if let Ok(value) = http::HeaderValue::from_str(traceparent) {
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", value);
        set_parent_from_headers(span, &headers);
    }
}

/// A W3C `traceparent` for a new trace that must not be recorded (its
/// sampled flag is off), for calls nobody wants traced, such as health
/// probes: a service that honours it records nothing of the call, and
/// neither does anything it calls.
pub fn unsampled_traceparent() -> String {
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let span_id = uuid::Uuid::new_v4().simple().to_string();
    format!("00-{trace_id}-{}-00", &span_id[..16])
}

/// Links `span` to `other` (a span of another trace, such as the one that
/// did the work `span` stands for).
pub fn link_to(span: &tracing::Span, other: &tracing::Span) {
    let linked = other.context().span().span_context().clone();
    if linked.is_valid() {
        span.add_link(linked);
    }
}

/// Writes `span`'s trace context into outgoing request headers, so the
/// receiver's span becomes its child. Nothing is written when traces are
/// not recorded.
pub fn inject_context(span: &tracing::Span, headers: &mut http::HeaderMap) {
    let context = span.context();
    if context.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(headers));
    }
}

/// Writes the current span's trace context into outgoing request headers.
pub fn inject_headers(headers: &mut http::HeaderMap) {
    inject_context(&tracing::Span::current(), headers);
}

/// The current span's W3C `traceparent`, to carry a trace across a queue
/// (events in the WAL, written later by a flush); `None` when traces are
/// not recorded.
pub fn current_trace_context() -> Option<String> {
    let mut headers = http::HeaderMap::new();
    inject_headers(&mut headers);
    headers
        .get("traceparent")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

/// Links `span` to the span a `traceparent` names (from
/// [`current_trace_context`]); ignores a malformed one. Call before the
/// span is entered, so the link is part of it from the start (samplers
/// see it).
pub fn add_link(span: &tracing::Span, traceparent: &str) {
    let Ok(value) = http::HeaderValue::from_str(traceparent) else {
        return;
    };
    let mut headers = http::HeaderMap::new();
    headers.insert("traceparent", value);
    let remote: Context = TraceContextPropagator::new().extract(&HeaderExtractor(&headers));
    let linked = remote.span().span_context().clone();
    if linked.is_valid() {
        span.add_link(linked);
    }
}

// ------------------------------------------------------------- span helpers

/// Marks `span` as failed (`otel.status_code = "ERROR"`) with a
/// description. The span must declare `otel.status_code` and
/// `otel.status_description` (as `tracing::field::Empty`), as every span
/// made here does.
pub fn record_error(span: &tracing::Span, description: impl Display) {
    span.record("otel.status_code", "ERROR");
    span.record(
        "otel.status_description",
        tracing::field::display(description),
    );
}

/// A client span for one outgoing HTTP request (OpenTelemetry's HTTP
/// client conventions: named after the method, `url.full` without
/// credentials, `server.address`, `server.port`). Send the request inside
/// it, with [`inject_context`] on its headers, then
/// [`record_http_response`] or [`record_error`].
pub fn http_client_span(method: &http::Method, url: &str) -> tracing::Span {
    let parsed = url.parse::<http::Uri>().ok();
    let host = parsed
        .as_ref()
        .and_then(http::Uri::host)
        .unwrap_or_default();
    let port = parsed
        .as_ref()
        .and_then(|url| {
            url.port_u16().or(match url.scheme_str() {
                Some("https") => Some(443),
                Some("http") => Some(80),
                _ => None,
            })
        })
        .unwrap_or_default();
    let full = parsed
        .as_ref()
        .map_or_else(|| url.to_owned(), without_credentials);
    tracing::info_span!(
        "http.client",
        otel.name = method.as_str(),
        otel.kind = "client",
        http.request.method = method.as_str(),
        url.full = full,
        server.address = host,
        server.port = i64::from(port),
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
    )
}

/// Records an HTTP client span's answer; 4xx and 5xx mark it failed, as
/// the client conventions say.
pub fn record_http_response(span: &tracing::Span, status: http::StatusCode) {
    // Integers go out as OpenTelemetry ints only when they are i64.
    span.record("http.response.status_code", i64::from(status.as_u16()));
    if status.is_client_error() || status.is_server_error() {
        record_error(span, status);
    }
}

/// `url` with any `user:password@` taken out, as `url.full` requires.
fn without_credentials(url: &http::Uri) -> String {
    let text = url.to_string();
    match url.authority() {
        Some(authority) if authority.as_str().contains('@') => {
            let host = authority
                .as_str()
                .rsplit_once('@')
                .map_or(authority.as_str(), |(_, host)| host);
            text.replacen(authority.as_str(), host, 1)
        }
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        move |name| vars.get(name).cloned()
    }

    #[test]
    fn an_endpoint_turns_export_on_and_the_standard_switches_turn_it_off() {
        assert!(!otlp_wanted(env_of(&[])));
        assert!(!otlp_wanted(env_of(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            " "
        )])));
        assert!(!otlp_wanted(env_of(&[("OTEL_SERVICE_NAME", "x")])));
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317");
        assert!(otlp_wanted(env_of(&[endpoint])));
        assert!(otlp_wanted(env_of(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://127.0.0.1:4317"
        )])));
        assert!(!otlp_wanted(env_of(&[
            endpoint,
            ("OTEL_SDK_DISABLED", "TRUE")
        ])));
        assert!(!otlp_wanted(env_of(&[
            endpoint,
            ("OTEL_TRACES_EXPORTER", "none")
        ])));
        assert!(otlp_wanted(env_of(&[
            endpoint,
            ("OTEL_SDK_DISABLED", "false")
        ])));
    }

    #[test]
    fn the_protocol_is_grpc_unless_the_environment_asks_for_http() {
        assert_eq!(otlp_protocol(env_of(&[])), Ok(OtlpProtocol::Grpc));
        assert_eq!(
            otlp_protocol(env_of(&[("OTEL_EXPORTER_OTLP_PROTOCOL", " ")])),
            Ok(OtlpProtocol::Grpc)
        );
        assert_eq!(
            otlp_protocol(env_of(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "HTTP/Protobuf")])),
            Ok(OtlpProtocol::HttpProtobuf)
        );
        assert_eq!(
            otlp_protocol(env_of(&[
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
            ])),
            Ok(OtlpProtocol::Grpc),
            "the traces-only variable wins"
        );
        assert_eq!(
            otlp_protocol(env_of(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")])),
            Err(
                "OTEL_EXPORTER_OTLP_PROTOCOL=http/json is not supported; use grpc or http/protobuf"
                    .into()
            )
        );
    }

    #[test]
    fn the_export_filter_leaves_the_transport_crates_out() {
        let filter = export_filter();
        let enabled = |target: &str, level: tracing::Level| filter.would_enable(target, &level);
        assert!(enabled("vesper_gateway", tracing::Level::INFO));
        assert!(enabled("vesper", tracing::Level::WARN));
        assert!(!enabled("vesper_ingest::engine", tracing::Level::DEBUG));
        for noisy in [
            "h2::proto",
            "hyper_util::client",
            "tonic::transport",
            "opentelemetry_sdk",
        ] {
            assert!(!enabled(noisy, tracing::Level::ERROR), "{noisy}");
        }
    }

    #[test]
    fn without_the_otel_layer_nothing_is_injected_or_linked() {
        let span = tracing::info_span!("plain");
        let _entered = span.enter();
        assert_eq!(current_trace_context(), None);
        let mut headers = http::HeaderMap::new();
        inject_headers(&mut headers);
        assert!(headers.is_empty());
        add_link(&span, "not a traceparent");
        add_link(
            &span,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        );
    }

    #[test]
    fn a_traceparent_header_is_read_and_written_back() {
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", http::HeaderValue::from_static(traceparent));
        let context = TraceContextPropagator::new().extract(&HeaderExtractor(&headers));
        assert!(context.span().span_context().is_valid());
        let mut out = http::HeaderMap::new();
        TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(&mut out));
        assert_eq!(out["traceparent"], traceparent);
    }

    #[test]
    fn unsampled_traceparents_are_valid_and_not_sampled() {
        let traceparent = unsampled_traceparent();
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "traceparent",
            http::HeaderValue::from_str(&traceparent).expect("ascii"),
        );
        let context = TraceContextPropagator::new().extract(&HeaderExtractor(&headers));
        let span = context.span();
        assert!(span.span_context().is_valid(), "{traceparent}");
        assert!(!span.span_context().is_sampled(), "{traceparent}");
        assert_ne!(traceparent, unsampled_traceparent());
    }

    #[test]
    fn credentials_never_reach_url_full() {
        let url: http::Uri = "http://user:secret@api.example.com:8080/v2/users?page=2"
            .parse()
            .expect("uri");
        assert_eq!(
            without_credentials(&url),
            "http://api.example.com:8080/v2/users?page=2"
        );
        let plain: http::Uri = "http://127.0.0.1:8080/api/users".parse().expect("uri");
        assert_eq!(
            without_credentials(&plain),
            "http://127.0.0.1:8080/api/users"
        );
    }
}
