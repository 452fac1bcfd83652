//! Telemetry, set up in one place for every service: `tracing` to stderr
//! (level from `RUST_LOG`, default `info`), and OpenTelemetry traces over
//! OTLP/gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. The standard `OTEL_*`
//! variables apply (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_TRACES_EXPORTER=none`, `OTEL_SDK_DISABLED`, the exporter's own
//! timeout and header variables). Without an endpoint no exporter is built
//! and spans cost what plain `tracing` spans cost.
//!
//! W3C trace context crosses every hop: [`set_parent_from_headers`] on the
//! way in (HTTP requests, gRPC calls), [`inject_headers`] and
//! [`crate::grpc::TraceContextInterceptor`] on the way out, and
//! [`current_trace_context`] / [`add_link`] where batching breaks the
//! parent chain.

use std::{env, io::IsTerminal};

use opentelemetry::{
    Context,
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::{TraceContextExt, TracerProvider as _},
};
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{EnvFilter, Layer, fmt, prelude::*};

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
            && let Err(err) = provider.shutdown()
        {
            eprintln!("vesper: could not flush the last trace spans: {err}");
        }
    }
}

/// Installs the process-wide subscriber for the service `service_name`
/// ("vesper-storage", ...), which becomes the OpenTelemetry `service.name`
/// unless `OTEL_SERVICE_NAME` says otherwise. Call once, first thing, inside
/// the tokio runtime (the OTLP exporter needs it); later calls leave the
/// first subscriber in place.
pub fn init(service_name: &'static str) -> TelemetryGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let stderr = fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(colour_wanted())
        .with_target(false);
    let provider = otlp_wanted().then(|| otlp_provider(service_name)).flatten();
    let otel = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("vesper"))
            .boxed()
    });
    let installed = tracing_subscriber::registry()
        .with(filter)
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

fn otlp_wanted() -> bool {
    let set = |name: &str| env::var(name).is_ok_and(|value| !value.trim().is_empty());
    let disabled = env::var("OTEL_SDK_DISABLED")
        .is_ok_and(|value| value.eq_ignore_ascii_case("true"))
        || env::var("OTEL_TRACES_EXPORTER").is_ok_and(|value| value.eq_ignore_ascii_case("none"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

fn otlp_provider(service_name: &'static str) -> Option<SdkTracerProvider> {
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
    {
        Ok(exporter) => exporter,
        Err(err) => {
            eprintln!("vesper: OTLP trace export is off: {err}");
            return None;
        }
    };
    let mut resource = Resource::builder();
    if env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service_name);
    }
    Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build(),
    )
}

/// Colours only on a terminal, and never when `NO_COLOR` is set
/// (<https://no-color.org>).
fn colour_wanted() -> bool {
    env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal()
}

// ---------------------------------------------------------------- propagation

struct HeaderCarrier<'a>(&'a http::HeaderMap);

impl Extractor for HeaderCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeaderSink<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderSink<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// Makes `span` a child of the W3C trace context in `headers`
/// (`traceparent`, `tracestate`), if there is one. Call right after
/// creating the span of an incoming request or call.
pub fn set_parent_from_headers(span: &tracing::Span, headers: &http::HeaderMap) {
    if headers.get("traceparent").is_none() {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&HeaderCarrier(headers));
    if parent.span().span_context().is_valid() {
        // Fails only without the OpenTelemetry layer, where there is nothing to link.
        let _ = span.set_parent(parent);
    }
}

/// Writes the current span's trace context into outgoing request headers.
pub fn inject_headers(headers: &mut http::HeaderMap) {
    let context = tracing::Span::current().context();
    if context.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&context, &mut HeaderSink(headers));
    }
}

/// The current span's W3C `traceparent`, to carry a trace across a queue
/// (events in the WAL, written later by a flush); `None` when traces are
/// not recorded.
pub fn current_trace_context() -> Option<String> {
    let context = tracing::Span::current().context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut headers = http::HeaderMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut HeaderSink(&mut headers));
    headers
        .get("traceparent")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

/// Links `span` to the span a `traceparent` names (from
/// [`current_trace_context`]); ignores a malformed one.
pub fn add_link(span: &tracing::Span, traceparent: &str) {
    let Ok(value) = http::HeaderValue::from_str(traceparent) else {
        return;
    };
    let mut headers = http::HeaderMap::new();
    headers.insert("traceparent", value);
    let remote: Context = TraceContextPropagator::new().extract(&HeaderCarrier(&headers));
    let linked = remote.span().span_context().clone();
    if linked.is_valid() {
        span.add_link(linked);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let context = TraceContextPropagator::new().extract(&HeaderCarrier(&headers));
        assert!(context.span().span_context().is_valid());
        let mut out = http::HeaderMap::new();
        TraceContextPropagator::new().inject_context(&context, &mut HeaderSink(&mut out));
        assert_eq!(out["traceparent"], traceparent);
    }
}
