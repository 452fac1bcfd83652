//! What the gateway tells about each request: its span, in OpenTelemetry's
//! HTTP server conventions, continuing the caller's W3C trace context; and
//! its metrics, per route (the route template, not the raw path, so ids in
//! paths do not explode the series count) and per method (the standard
//! methods by name, any other as `OTHER`, so a client cannot create series
//! at will).
//!
//! - `vesper_http_requests_total{method,route,status}`
//! - `vesper_http_request_duration_seconds{method,route}`

use std::time::{Duration, Instant};

use axum::{extract::MatchedPath, extract::Request, middleware::Next, response::Response};
use tower_http::trace::{DefaultOnResponse, OnResponse};

use crate::REQUEST_ID_HEADER;

/// The span of one request. Its name is `METHOD /path`; the route
/// template (`http.route`) is recorded once routing has found it.
pub(crate) fn request_span<B>(request: &http::Request<B>) -> tracing::Span {
    let request_id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|id| id.to_str().ok())
        .unwrap_or_default();
    let span = tracing::info_span!(
        "http.server",
        otel.name = %format_args!("{} {}", request.method(), request.uri().path()),
        otel.kind = "server",
        http.request.method = %request.method(),
        url.path = %request.uri().path(),
        url.query = request.uri().query(),
        http.route = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        request_id,
        enduser.id = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
    );
    vesper::telemetry::set_parent_from_headers(&span, request.headers());
    span
}

/// Records the answer on the request's span: its status, and a failure for
/// a 5xx (a 4xx is the client's doing, not the server's, by the
/// conventions).
pub(crate) fn record_response<B>(
    response: &http::Response<B>,
    latency: Duration,
    span: &tracing::Span,
) {
    let status = response.status();
    // Integers go out as OpenTelemetry ints only when they are i64.
    span.record("http.response.status_code", i64::from(status.as_u16()));
    if status.is_server_error() {
        vesper::telemetry::record_error(span, status);
    }
    DefaultOnResponse::default().on_response(response, latency, span);
}

/// Counts and times each routed request, and names its route on the
/// request's span.
pub(crate) async fn record_http_metrics(
    route: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let route = route.map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    // Runs inside the request's span (the trace layer is outside the router).
    tracing::Span::current().record("http.route", route.as_str());
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    metrics::counter!(
        "vesper_http_requests_total",
        "method" => method,
        "route" => route.clone(),
        "status" => response.status().as_u16().to_string(),
    )
    .increment(1);
    metrics::histogram!(
        "vesper_http_request_duration_seconds",
        "method" => method,
        "route" => route,
    )
    .record(started.elapsed().as_secs_f64());
    response
}

/// The `method` label: a standard method's name, else `OTHER`.
fn method_label(method: &http::Method) -> &'static str {
    use http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::CONNECT => "CONNECT",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::PATCH => "PATCH",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_standard_methods_keep_their_name() {
        assert_eq!(method_label(&http::Method::POST), "POST");
        let odd = http::Method::from_bytes(b"FROBNICATE").expect("method");
        assert_eq!(method_label(&odd), "OTHER");
    }
}
