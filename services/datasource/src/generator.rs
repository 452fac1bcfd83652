//! The event generator: a background task that pushes batches of random
//! events to a webhook, as the old data server did. It never retries (a
//! push that fails is counted and logged, and the next batch is new), and
//! stops after its current push.

use std::{
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use rand::Rng;
use serde_json::{Value, json};
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use vesper::{Shutdown, v1::GeneratorStatusResponse, wire::upstream_event_json};

use crate::{DataSet, DataSourceError, GeneratorConfig, generate_events};

/// The most one push may take before it counts as failed.
pub const PUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// While pushes keep failing, at most one warning per this period.
const WARNING_PERIOD: Duration = Duration::from_secs(60);

/// How much of a refusing webhook's answer goes into the warning.
const ANSWER_EXCERPT: usize = 200;

/// A handle on the generator; cheap to clone, every clone controls the same
/// generator.
#[derive(Debug, Clone)]
pub struct Generator {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: GeneratorConfig,
    data: Arc<DataSet>,
    client: reqwest::Client,
    /// Stops every run: the service's shutdown.
    shutdown: Shutdown,
    /// The current run's own stop switch, a child of `shutdown`.
    run: Mutex<Option<Shutdown>>,
    /// Every run task, the stopped ones that finish their push included.
    tasks: TaskTracker,
    batches_delivered: AtomicU64,
    batches_failed: AtomicU64,
    events_delivered: AtomicU64,
}

impl Generator {
    /// A stopped generator for `data`; `shutdown` stops it for good.
    pub fn new(
        config: GeneratorConfig,
        data: Arc<DataSet>,
        shutdown: Shutdown,
    ) -> Result<Self, DataSourceError> {
        // Trusts --tls-ca, for a webhook behind an https:// gateway.
        let client = vesper::tls::http_client_builder()
            .timeout(PUSH_TIMEOUT)
            .build()
            .map_err(|err| DataSourceError::HttpClient(vesper::error::error_chain(&err)))?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                data,
                client,
                shutdown,
                run: Mutex::new(None),
                tasks: TaskTracker::new(),
                batches_delivered: AtomicU64::new(0),
                batches_failed: AtomicU64::new(0),
                events_delivered: AtomicU64::new(0),
            }),
        })
    }

    /// Starts pushing now; `false` when it was already running (not an
    /// error). Must be called inside a tokio runtime.
    pub fn start(&self) -> bool {
        self.start_after(Duration::ZERO)
    }

    /// Starts pushing after `delay` (the generator counts as running during
    /// the delay); `false` when it was already running.
    pub fn start_after(&self, delay: Duration) -> bool {
        let mut run = self.inner.lock_run();
        if run.as_ref().is_some_and(|stop| !stop.is_triggered()) {
            return false;
        }
        if self.inner.shutdown.is_triggered() {
            return false;
        }
        let stop = self.inner.shutdown.child();
        self.inner
            .tasks
            .spawn(Arc::clone(&self.inner).run(stop.clone(), delay));
        *run = Some(stop);
        tracing::info!(
            webhook_url = %self.inner.config.webhook_url,
            delay = ?delay,
            "event generator started"
        );
        true
    }

    /// Stops the generator after its current push; `false` when it was not
    /// running (not an error).
    pub fn stop(&self) -> bool {
        let Some(stop) = self.inner.lock_run().take() else {
            return false;
        };
        let was_running = !stop.is_triggered();
        stop.trigger();
        if was_running {
            tracing::info!("event generator stopped");
        }
        was_running
    }

    /// Whether the generator is pushing (or waiting for its first push).
    pub fn is_running(&self) -> bool {
        self.inner
            .lock_run()
            .as_ref()
            .is_some_and(|stop| !stop.is_triggered())
    }

    /// The generator's state and counters.
    pub fn status(&self) -> GeneratorStatusResponse {
        GeneratorStatusResponse {
            running: self.is_running(),
            webhook_url: self.inner.config.webhook_url.to_string(),
            batches_delivered: self.inner.batches_delivered.load(Ordering::Relaxed),
            batches_failed: self.inner.batches_failed.load(Ordering::Relaxed),
            events_delivered: self.inner.events_delivered.load(Ordering::Relaxed),
        }
    }

    /// Waits until no run is left, that is until the current push (if any)
    /// is over once the generator is stopped or the shutdown is triggered.
    pub async fn join(&self) {
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
        self.inner.tasks.reopen();
    }
}

impl Inner {
    fn lock_run(&self) -> std::sync::MutexGuard<'_, Option<Shutdown>> {
        // The guarded value is a plain switch: a panic elsewhere cannot
        // leave it half-written.
        self.run.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn run(self: Arc<Self>, stop: Shutdown, delay: Duration) {
        let mut failures = FailureLog::default();
        let mut pause = delay;
        loop {
            tokio::select! {
                biased;
                () = stop.signalled() => break,
                () = tokio::time::sleep(pause) => {}
            }
            self.push(&mut failures).await;
            pause = random_between(self.config.interval.min, self.config.interval.max);
        }
    }

    /// One push, the root of its own trace: the webhook call carries its
    /// context, so the gateway's and ingest's spans of this push join it.
    #[tracing::instrument(name = "generator.push", parent = None, skip_all, fields(events))]
    async fn push(&self, failures: &mut FailureLog) {
        let events = {
            let batch = self.config.batch;
            let mut rng = rand::rng();
            let size = rng.random_range(batch.min..=batch.max);
            generate_events(
                &self.data,
                usize::try_from(size).unwrap_or(usize::MAX),
                None,
                &mut rng,
            )
        };
        tracing::Span::current().record("events", events.len());
        let body = json!({
            "events": events.iter().map(upstream_event_json).collect::<Vec<Value>>(),
        })
        .to_string();
        let url = &self.config.webhook_url;
        let span = vesper::telemetry::http_client_span(&reqwest::Method::POST, url.as_str());
        let mut headers = reqwest::header::HeaderMap::new();
        vesper::telemetry::inject_context(&span, &mut headers);
        headers.insert(
            reqwest::header::CONTENT_TYPE,
            reqwest::header::HeaderValue::from_static("application/json"),
        );
        if let Some(secret) = &self.config.signing
            && let Ok(signature) = reqwest::header::HeaderValue::from_str(
                &secret.sign(vesper::signature::unix_now(), body.as_bytes()),
            )
        {
            headers.insert(vesper::signature::SIGNATURE_HEADER, signature);
        }
        // The process's own token (events:write at the gateway), if it has
        // one: with auth on, a signature or a token gets the push in.
        if let Some(token) = vesper::auth::client_token() {
            headers.insert(reqwest::header::AUTHORIZATION, token.authorization());
        }
        let outcome = async {
            match self
                .client
                .post(url.clone())
                .headers(headers)
                .body(body)
                .send()
                .await
            {
                Ok(response) => {
                    vesper::telemetry::record_http_response(&span, response.status());
                    if response.status() == reqwest::StatusCode::OK {
                        return Ok(());
                    }
                    let status = response.status();
                    let answer = response.text().await.unwrap_or_default();
                    Err(format!(
                        "webhook answered {status}: {}",
                        excerpt(&answer, ANSWER_EXCERPT)
                    ))
                }
                Err(err) => {
                    let reason =
                        format!("webhook unreachable: {}", vesper::error::error_chain(&err));
                    vesper::telemetry::record_error(&span, &reason);
                    Err(reason)
                }
            }
        }
        .instrument(span.clone())
        .await;
        match outcome {
            Ok(()) => {
                self.batches_delivered.fetch_add(1, Ordering::Relaxed);
                self.events_delivered.fetch_add(
                    u64::try_from(events.len()).unwrap_or(u64::MAX),
                    Ordering::Relaxed,
                );
                metrics::counter!("vesper_datasource_generator_pushes_total", "result" => "delivered")
                    .increment(1);
                failures.delivered(&self.config.webhook_url);
            }
            Err(reason) => {
                self.batches_failed.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("vesper_datasource_generator_pushes_total", "result" => "failed")
                    .increment(1);
                failures.failed(&self.config.webhook_url, &reason);
            }
        }
    }
}

/// Keeps a webhook that is down for hours from filling the log: the first
/// failure of a streak is logged, then one summary per [`WARNING_PERIOD`],
/// and the recovery once.
#[derive(Debug, Default)]
struct FailureLog {
    streak: u64,
    last_warning: Option<Instant>,
}

impl FailureLog {
    fn failed(&mut self, url: &reqwest::Url, reason: &str) {
        self.streak += 1;
        let due = self
            .last_warning
            .is_none_or(|last| self.streak == 1 || last.elapsed() >= WARNING_PERIOD);
        if due {
            tracing::warn!(
                webhook_url = %url,
                failed_in_a_row = self.streak,
                "event push failed, not retried: {reason}"
            );
            self.last_warning = Some(Instant::now());
        }
    }

    fn delivered(&mut self, url: &reqwest::Url) {
        if self.streak > 0 {
            tracing::info!(
                webhook_url = %url,
                failed_in_a_row = self.streak,
                "event pushes are delivered again"
            );
        }
        self.streak = 0;
    }
}

/// A uniformly random duration in `min..=max`.
fn random_between(min: Duration, max: Duration) -> Duration {
    if max <= min {
        return min;
    }
    let span = max - min;
    let nanos = rand::rng().random_range(0..=span.as_nanos());
    min + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// The first `limit` characters of `text`, on one line.
fn excerpt(text: &str, limit: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(limit)
        .collect();
    if text.chars().count() > limit {
        format!("{flat}...")
    } else {
        flat
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_stay_in_their_range() {
        let (min, max) = (Duration::from_millis(2), Duration::from_millis(6));
        for _ in 0..1_000 {
            let pause = random_between(min, max);
            assert!((min..=max).contains(&pause), "{pause:?}");
        }
        assert_eq!(random_between(max, max), max);
    }

    #[test]
    fn excerpts_are_short_and_on_one_line() {
        assert_eq!(excerpt("a\nb", 10), "a b");
        assert_eq!(excerpt("abcdef", 3), "abc...");
    }
}
