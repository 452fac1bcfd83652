//! Fetching one page: the HTTP request, the retry policy around it, and
//! taking the records out of the response.
//!
//! Retried: 408, 429 and 5xx answers (but 501 and 505, which do not change),
//! timeouts and connection errors. Everything else fails at once with the
//! URL and the server's message. A 200 whose body is not JSON is not
//! retried: a transfer cut short shows up as a connection error (HTTP
//! framing catches it), so a complete body that does not parse is the
//! server's bug, and asking again only delays the failure.
//!
//! What a server can make the engine do is bounded: a body is read as it
//! arrives and refused past `limits.max_response_size`, and redirects are
//! followed by hand, at most `limits.max_redirects` of them and only to the
//! request's own origin, so that the pipeline's headers and credentials
//! never go to another server.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};
use vesper::wire::json_kind;

use reqwest::{
    Client, RequestBuilder, Response, StatusCode, Url,
    header::{ACCEPT, HeaderMap, LOCATION, RETRY_AFTER},
    redirect,
};
use serde_json::Value;
use time::OffsetDateTime;
use tracing::Instrument;
use vesper::Shutdown;

use crate::{
    BatchError, Record,
    field::FieldPath,
    redact::{self, Credentials},
    spec::{Pipeline, RetryPolicy, RunLimits},
};

/// The User-Agent of every request: `vesper-batch/<version>`.
pub const USER_AGENT: &str = concat!("vesper-batch/", env!("CARGO_PKG_VERSION"));

/// The longest server message quoted in an error.
const MAX_MESSAGE_CHARS: usize = 300;

/// The most of an error response's body read, for its message.
const MAX_ERROR_BODY: u64 = 64 * 1024;

/// The HTTP client the engine shares across runs (one connection pool).
/// It follows no redirect itself: [`Fetcher`] does, within its limits.
/// It trusts `--tls-ca` on top of the system's store, for vesper's own
/// https:// gateway.
pub(crate) fn http_client() -> Result<Client, BatchError> {
    vesper::tls::http_client_builder()
        .user_agent(USER_AGENT)
        .redirect(redirect::Policy::none())
        .build()
        .map_err(|err| BatchError::Client(vesper::error::error_chain(&err)))
}

/// Builds every request the engine sends. It is the one place that does,
/// so what each request must carry (the W3C trace context of its client
/// `span`) is added here and nowhere else.
pub(crate) fn build_request(
    client: &Client,
    url: &Url,
    headers: &HeaderMap,
    credentials: Option<&Credentials>,
    timeout: Duration,
    span: &tracing::Span,
) -> RequestBuilder {
    let mut headers = headers.clone();
    // The upstream sees the run's trace, so a slow page is findable from
    // either side.
    vesper::telemetry::inject_context(span, &mut headers);
    let request = client
        .get(url.clone())
        .header(ACCEPT, "application/json")
        .headers(headers)
        .timeout(timeout);
    match credentials {
        Some(credentials) => {
            request.basic_auth(&credentials.username, credentials.password.as_deref())
        }
        None => request,
    }
}

/// One fetched page.
#[derive(Debug)]
pub(crate) struct Page {
    /// Where it came from.
    pub(crate) url: Url,
    /// When its response was complete.
    pub(crate) received_at: OffsetDateTime,
    /// The response body, the record array taken out of it.
    pub(crate) body: Value,
    /// The records, in the response's order.
    pub(crate) records: Vec<Record>,
    /// The response headers (where some APIs put the next page).
    pub(crate) headers: HeaderMap,
}

/// At most one request every `period`, across every fetch of a run
/// (concurrent ones included); requests are let through in the order they
/// asked, none in a burst.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    period: Duration,
    next: std::sync::Mutex<tokio::time::Instant>,
}

impl RateLimiter {
    /// `rate` requests per second (more than 0).
    pub(crate) fn per_second(rate: f64) -> Self {
        Self {
            period: Duration::from_secs_f64(1.0 / rate),
            next: std::sync::Mutex::new(tokio::time::Instant::now()),
        }
    }

    /// Waits for this request's turn.
    pub(crate) async fn acquire(&self) {
        let at = {
            // A poisoned lock only means a panic elsewhere held it; the
            // instant inside is still a valid schedule.
            let mut next = self
                .next
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let at = (*next).max(tokio::time::Instant::now());
            *next = at + self.period;
            at
        };
        tokio::time::sleep_until(at).await;
    }
}

/// Fetches the pages of one run. Clones share the run's retry count.
#[derive(Debug, Clone)]
pub(crate) struct Fetcher {
    client: Client,
    pipeline: Arc<str>,
    timeout: Duration,
    retry: RetryPolicy,
    headers: HeaderMap,
    credentials: Option<Credentials>,
    max_response_bytes: u64,
    max_redirects: u32,
    records: Option<FieldPath>,
    retries: Arc<AtomicU64>,
    hidden: Arc<[String]>,
    rate: Option<Arc<RateLimiter>>,
    shutdown: Shutdown,
}

/// Why one attempt failed.
enum Failure {
    /// Worth another attempt.
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Final.
    Fatal(BatchError),
}

impl Fetcher {
    pub(crate) fn new(
        client: Client,
        pipeline: &Pipeline,
        limits: RunLimits,
        rate_limit: Option<f64>,
        shutdown: Shutdown,
    ) -> Self {
        Self {
            client,
            pipeline: Arc::from(pipeline.name.as_str()),
            timeout: pipeline.timeout,
            retry: pipeline.retry,
            headers: pipeline.headers.clone(),
            credentials: pipeline.credentials.clone(),
            max_response_bytes: limits.max_response_bytes,
            max_redirects: limits.max_redirects,
            records: pipeline.records.clone(),
            retries: Arc::new(AtomicU64::new(0)),
            hidden: Arc::clone(&pipeline.secret_params),
            rate: rate_limit.map(|rate| Arc::new(RateLimiter::per_second(rate))),
            shutdown,
        }
    }

    /// `url` as it may be shown.
    fn show(&self, url: &Url) -> String {
        redact::url_hiding(url, &self.hidden)
    }

    /// Requests retried so far in this run.
    pub(crate) fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Fetches the page at `url`, retrying as the policy says, and takes
    /// its records out.
    pub(crate) async fn page(&self, url: Url) -> Result<Page, BatchError> {
        let (mut body, headers) = self.get_json(&url).await?;
        let received_at = OffsetDateTime::now_utc();
        let records = take_records(&mut body, self.records.as_ref()).map_err(|problem| {
            BatchError::Response {
                url: self.show(&url),
                problem,
            }
        })?;
        Ok(Page {
            url,
            received_at,
            body,
            records,
            headers,
        })
    }

    async fn get_json(&self, url: &Url) -> Result<(Value, HeaderMap), BatchError> {
        let mut attempt = 1;
        loop {
            if let Some(rate) = &self.rate {
                tokio::select! {
                    biased;
                    () = self.shutdown.signalled() => return Err(BatchError::Cancelled),
                    () = rate.acquire() => {}
                }
            }
            let started = Instant::now();
            let outcome = tokio::select! {
                biased;
                () = self.shutdown.signalled() => return Err(BatchError::Cancelled),
                outcome = self.attempt(url) => outcome,
            };
            metrics::histogram!("vesper_batch_request_duration_seconds", "pipeline" => self.pipeline.to_string())
                .record(started.elapsed().as_secs_f64());
            let (reason, retry_after) = match outcome {
                Ok(body) => return Ok(body),
                Err(Failure::Fatal(err)) => return Err(err),
                Err(Failure::Transient {
                    reason,
                    retry_after,
                }) => (reason, retry_after),
            };
            if attempt >= self.retry.attempts {
                return Err(BatchError::GaveUp {
                    url: self.show(url),
                    attempts: attempt,
                    last: reason,
                });
            }
            let wait = self.wait_before_retry(url, attempt, retry_after)?;
            tracing::warn!(
                "GET {}: {reason}; retry {attempt} of {} in {}",
                self.show(url),
                self.retry.attempts - 1,
                humantime::format_duration(round_to_millis(wait))
            );
            self.retries.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("vesper_batch_retries_total", "pipeline" => self.pipeline.to_string())
                .increment(1);
            tokio::select! {
                biased;
                () = self.shutdown.signalled() => return Err(BatchError::Cancelled),
                () = tokio::time::sleep(wait) => {}
            }
            attempt += 1;
        }
    }

    /// Capped exponential backoff with full jitter (a uniform draw between
    /// zero and the cap, which doubles per retry), but never shorter than
    /// the server's `Retry-After`.
    fn wait_before_retry(
        &self,
        url: &Url,
        attempt: u32,
        retry_after: Option<Duration>,
    ) -> Result<Duration, BatchError> {
        if let Some(wait) = retry_after
            && wait > self.retry.max_retry_after
        {
            return Err(BatchError::RetryAfterTooLong {
                url: self.show(url),
                wait,
                limit: self.retry.max_retry_after,
            });
        }
        let bound = vesper::retry::backoff_bound(
            self.retry.initial_backoff,
            self.retry.max_backoff,
            attempt,
        );
        let jittered = vesper::retry::full_jitter(bound);
        Ok(jittered.max(retry_after.unwrap_or_default()))
    }

    /// One request, in a client span of its own (a child of the run's
    /// span) that records the answer or why there was none.
    async fn attempt(&self, url: &Url) -> Result<(Value, HeaderMap), Failure> {
        let span = vesper::telemetry::http_client_span(&reqwest::Method::GET, &self.show(url));
        let outcome = self.exchange(url, &span).instrument(span.clone()).await;
        match &outcome {
            Ok(_) => {}
            Err(Failure::Transient { reason, .. }) => {
                vesper::telemetry::record_error(&span, reason)
            }
            Err(Failure::Fatal(err)) => vesper::telemetry::record_error(&span, err),
        }
        outcome
    }

    async fn exchange(
        &self,
        url: &Url,
        span: &tracing::Span,
    ) -> Result<(Value, HeaderMap), Failure> {
        let response = self.send_following_redirects(url, span).await?;
        let status = response.status();
        vesper::telemetry::record_http_response(span, status);
        let retry_after = matches!(
            status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        )
        .then(|| retry_after(response.headers()))
        .flatten();
        if status.is_success() {
            let headers = response.headers().clone();
            let limit = self.max_response_bytes;
            let too_large = || {
                Failure::Fatal(BatchError::Response {
                    url: self.show(url),
                    problem: format!(
                        "the response body is over {} (limits.max_response_size); raise the limit (--max-response-size) or ask for smaller pages",
                        vesper::config::ByteSize(limit)
                    ),
                })
            };
            if response
                .content_length()
                .is_some_and(|length| length > limit)
            {
                return Err(too_large());
            }
            let (body, complete) = read_capped(response, limit)
                .await
                .map_err(|err| self.transport_failure(url, err))?;
            if !complete {
                return Err(too_large());
            }
            return serde_json::from_slice(&body)
                .map(|body| (body, headers))
                .map_err(|err| {
                    Failure::Fatal(BatchError::Response {
                        url: self.show(url),
                        problem: format!("the response is not valid JSON: {err}"),
                    })
                });
        }
        // Only the start of an error's body is needed, for its message.
        let (body, _) = read_capped(response, MAX_ERROR_BODY.min(self.max_response_bytes))
            .await
            .map_err(|err| self.transport_failure(url, err))?;
        let message = server_message(&body, status);
        if is_transient(status) {
            Err(Failure::Transient {
                reason: format!("{status}: {message}"),
                retry_after,
            })
        } else {
            Err(Failure::Fatal(BatchError::Rejected {
                url: self.show(url),
                status: status.as_u16(),
                message,
            }))
        }
    }

    /// Sends the request for `url`, following redirects to the same
    /// origin, at most `max_redirects` of them, all within the request's
    /// timeout. A redirect elsewhere fails: the request carries the
    /// pipeline's headers and credentials, which are for `url`'s server
    /// only.
    async fn send_following_redirects(
        &self,
        url: &Url,
        span: &tracing::Span,
    ) -> Result<Response, Failure> {
        let deadline = Instant::now() + self.timeout;
        let mut current = url.clone();
        let mut redirects = 0;
        loop {
            let timeout = deadline.saturating_duration_since(Instant::now());
            if timeout.is_zero() {
                return Err(self.timed_out());
            }
            let response = build_request(
                &self.client,
                &current,
                &self.headers,
                self.credentials.as_ref(),
                timeout,
                span,
            )
            .send()
            .await
            .map_err(|err| self.transport_failure(url, err))?;
            let status = response.status();
            if !matches!(
                status,
                StatusCode::MOVED_PERMANENTLY
                    | StatusCode::FOUND
                    | StatusCode::SEE_OTHER
                    | StatusCode::TEMPORARY_REDIRECT
                    | StatusCode::PERMANENT_REDIRECT
            ) {
                return Ok(response);
            }
            let refuse = |problem: String| {
                Failure::Fatal(BatchError::Response {
                    url: self.show(url),
                    problem,
                })
            };
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|value| value.to_str().ok())
                .ok_or_else(|| refuse(format!("{status} without a usable Location header")))?;
            let mut target = current.join(location).map_err(|err| {
                refuse(format!(
                    "{status} to {:?}, which is not a URL: {err}",
                    redact::shorten(&redact::text(location), MAX_MESSAGE_CHARS)
                ))
            })?;
            if !matches!(target.scheme(), "http" | "https") {
                return Err(refuse(format!(
                    "{status} to a {}: URL; only http and https are followed",
                    target.scheme()
                )));
            }
            if target.origin() != url.origin() {
                return Err(refuse(format!(
                    "{status} to another origin ({}); the pipeline's headers and credentials are for {} only, so the redirect is not followed (point the pipeline's base_url at the other server if that is where the API lives)",
                    target.origin().ascii_serialization(),
                    url.origin().ascii_serialization()
                )));
            }
            if redirects >= self.max_redirects {
                return Err(refuse(format!(
                    "{status} to {}: more than {} redirects (limits.max_redirects)",
                    self.show(&target),
                    self.max_redirects
                )));
            }
            // Credentials come from the pipeline file, never from a server.
            let _ = target.set_username("");
            let _ = target.set_password(None);
            redirects += 1;
            current = target;
        }
    }

    fn timed_out(&self) -> Failure {
        Failure::Transient {
            reason: format!(
                "no complete response within {}",
                humantime::format_duration(self.timeout)
            ),
            retry_after: None,
        }
    }

    fn transport_failure(&self, url: &Url, err: reqwest::Error) -> Failure {
        if err.is_builder() || err.is_redirect() {
            return Failure::Fatal(BatchError::Request {
                url: self.show(url),
                message: vesper::error::error_chain(&err.without_url()),
            });
        }
        if err.is_timeout() {
            return self.timed_out();
        }
        Failure::Transient {
            reason: vesper::error::error_chain(&err.without_url()),
            retry_after: None,
        }
    }
}

/// Reads `response`'s body as it arrives, up to `cap` bytes; says whether
/// the body ended within them (the rest is not read).
async fn read_capped(mut response: Response, cap: u64) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let cap = usize::try_from(cap).unwrap_or(usize::MAX);
    let expected = response
        .content_length()
        .and_then(|length| usize::try_from(length).ok())
        .unwrap_or(0);
    // Content-Length is the server's word: trust it only so far.
    let mut body = Vec::with_capacity(expected.min(cap).min(1 << 20));
    while let Some(chunk) = response.chunk().await? {
        let room = cap - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, false));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, true))
}

/// 408, 429 and 5xx but 501 (Not Implemented) and 505 (HTTP Version Not
/// Supported), which a retry does not change.
fn is_transient(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS
    ) || (status.is_server_error()
        && !matches!(
            status,
            StatusCode::NOT_IMPLEMENTED | StatusCode::HTTP_VERSION_NOT_SUPPORTED
        ))
}

/// `Retry-After` as whole seconds or an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(text).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// The server's explanation: its `{"error": ...}` (the upstream's shape) or
/// `{"message": ...}`, else the start of the body, else the status reason.
fn server_message(body: &[u8], status: StatusCode) -> String {
    if let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(body) {
        for key in ["error", "message", "detail"] {
            if let Some(Value::String(message)) = object.get(key) {
                return truncate(message);
            }
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        status.canonical_reason().unwrap_or("no message").to_owned()
    } else {
        truncate(text)
    }
}

/// The start of a server's text, with control characters (newlines,
/// terminal escapes) as spaces: it ends up in log lines and on terminals.
fn truncate(text: &str) -> String {
    let text: String = text
        .chars()
        .take(MAX_MESSAGE_CHARS + 1)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    redact::shorten(&text, MAX_MESSAGE_CHARS)
}

fn round_to_millis(duration: Duration) -> Duration {
    Duration::from_millis(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

/// Moves the record array out of a response: the array at `path`, or the
/// whole body when no path is declared. A `null` there is an empty page
/// (the old upstream answered `"events": null` for no events).
fn take_records(body: &mut Value, path: Option<&FieldPath>) -> Result<Vec<Record>, String> {
    let array = match path {
        Some(path) => path.take(body).ok_or_else(|| {
            format!(
                "the response has no {path} (records = {:?})",
                path.to_string()
            )
        })?,
        None => body.take(),
    };
    let items = match array {
        Value::Array(items) => items,
        Value::Null => Vec::new(),
        other => {
            let place = path.map_or_else(|| "the response".to_owned(), |path| path.to_string());
            return Err(format!(
                "{place} is {}, not an array of records",
                json_kind(&other)
            ));
        }
    };
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| match item {
            Value::Object(record) => Ok(record),
            other => Err(format!(
                "record {index} is {}; a record must be a JSON object",
                json_kind(&other)
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_rate_limiter_spaces_requests_evenly_even_when_they_come_at_once() {
        let limiter = Arc::new(RateLimiter::per_second(4.0));
        let start = tokio::time::Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..5 {
            let limiter = Arc::clone(&limiter);
            tasks.push(tokio::spawn(async move {
                limiter.acquire().await;
                start.elapsed()
            }));
        }
        let mut times = Vec::new();
        for task in tasks {
            times.push(task.await.expect("a task").as_millis());
        }
        times.sort_unstable();
        assert_eq!(times, [0, 250, 500, 750, 1000]);
        // Idle time is not saved up for a burst.
        tokio::time::advance(Duration::from_secs(10)).await;
        let later = tokio::time::Instant::now();
        limiter.acquire().await;
        limiter.acquire().await;
        assert_eq!(later.elapsed().as_millis(), 250);
    }

    #[test]
    fn transient_statuses() {
        for code in [408, 429, 500, 502, 503, 504] {
            assert!(
                is_transient(StatusCode::from_u16(code).expect("status")),
                "{code}"
            );
        }
        for code in [400, 401, 403, 404, 422, 501, 505] {
            assert!(
                !is_transient(StatusCode::from_u16(code).expect("status")),
                "{code}"
            );
        }
    }

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, "7".parse().expect("header"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        let later = SystemTime::now() + Duration::from_secs(30);
        headers.insert(
            RETRY_AFTER,
            httpdate::fmt_http_date(later).parse().expect("header"),
        );
        let wait = retry_after(&headers).expect("a date");
        assert!(
            wait <= Duration::from_secs(30) && wait >= Duration::from_secs(28),
            "{wait:?}"
        );
        headers.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().expect("header"),
        );
        assert_eq!(
            retry_after(&headers),
            Some(Duration::ZERO),
            "a past date means now"
        );
        headers.insert(RETRY_AFTER, "soon".parse().expect("header"));
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn server_messages_prefer_the_error_field() {
        let status = StatusCode::BAD_REQUEST;
        assert_eq!(
            server_message(br#"{"error":"Invalid offset"}"#, status),
            "Invalid offset"
        );
        assert_eq!(server_message(b"plain words\n", status), "plain words");
        assert_eq!(server_message(b"", status), "Bad Request");
        assert_eq!(
            server_message(b"{\"error\":\"forged\\n2026 INFO ok\\u001b[2J\"}", status),
            "forged 2026 INFO ok [2J",
            "no line or escape of the server's own in a log line"
        );
        let long = "x".repeat(1000);
        assert_eq!(
            server_message(long.as_bytes(), status).len(),
            MAX_MESSAGE_CHARS + 3
        );
    }

    #[test]
    fn records_must_be_an_array_of_objects() {
        let users = FieldPath::parse("users").expect("path");
        let mut body = json!({"users": [{"id": 1}], "count": 1});
        assert_eq!(
            take_records(&mut body, Some(&users))
                .expect("records")
                .len(),
            1
        );
        assert_eq!(
            body["count"], 1,
            "the rest of the body stays for the paginator"
        );
        let mut null = json!({"users": null});
        assert!(
            take_records(&mut null, Some(&users))
                .expect("empty")
                .is_empty()
        );
        let err = take_records(&mut json!({"count": 0}), Some(&users)).expect_err("missing");
        assert!(err.contains("has no users"), "{err}");
        let err = take_records(&mut json!({"users": [1]}), Some(&users)).expect_err("scalar");
        assert!(err.contains("record 0 is a number"), "{err}");
        let err = take_records(&mut json!({"users": {}}), Some(&users)).expect_err("object");
        assert!(err.contains("not an array"), "{err}");
        assert_eq!(
            take_records(&mut json!([{"a": 1}]), None)
                .expect("bare array")
                .len(),
            1
        );
    }
}
