//! The engine: runs pipelines, page by page, into lake snapshots.

use std::{fmt, num::NonZeroUsize, sync::Arc, time::Instant};

use futures::{StreamExt, stream};
use serde_json::Value;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;
use uuid::Uuid;
use vesper::Shutdown;
use vesper_storage::ObjectStore;

use crate::{
    BatchError, Record, RunReport, RunStatus,
    fetch::{Fetcher, Page, http_client},
    pagination::{PageBudget, PageView, Pager, Plan, Step},
    progress::{LogProgress, Progress, RunObserver},
    snapshot::{Manifest, SnapshotWriter, run_directory},
    spec::{MAX_RATE_LIMIT, Pipeline, Pipelines, RunLimits},
    transform::PageMetadata,
};

/// Pages fetched at once when the total is known, unless told otherwise.
pub const DEFAULT_CONCURRENCY: NonZeroUsize = NonZeroUsize::new(4).expect("4 is not zero");

/// The most pages `--concurrency` fetches at once.
pub const MAX_CONCURRENCY: usize = 64;

/// Runs declared pipelines into the lake.
///
/// ```no_run
/// # async fn example(store: std::sync::Arc<dyn vesper_storage::ObjectStore>) -> Result<(), vesper_batch::BatchError> {
/// use vesper_batch::{BatchEngine, Pipelines};
///
/// let engine = BatchEngine::new(Pipelines::builtin()?, store)?
///     // Custom transformation: keep paying users only.
///     .with_hook("users", |user| {
///         let paid = user.get("status").and_then(|status| status.as_str()) == Some("paid");
///         paid.then_some(user)
///     })?;
/// let reports = engine.run(&["users"], &vesper::Shutdown::new()).await?;
/// assert!(reports[0].succeeded());
/// # Ok(()) }
/// ```
pub struct BatchEngine {
    pipelines: Pipelines,
    store: Arc<dyn ObjectStore>,
    client: reqwest::Client,
    concurrency: NonZeroUsize,
    limits: RunLimits,
    rate_limit: Option<f64>,
    observer: Arc<dyn RunObserver>,
}

impl fmt::Debug for BatchEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchEngine")
            .field("pipelines", &self.pipelines.names())
            .field("store", &self.store.location())
            .field("concurrency", &self.concurrency)
            .field("limits", &self.limits)
            .field("rate_limit", &self.rate_limit)
            .finish_non_exhaustive()
    }
}

impl BatchEngine {
    /// An engine for `pipelines`, writing to `store`, fetching up to
    /// [`DEFAULT_CONCURRENCY`] pages at once, logging progress.
    pub fn new(pipelines: Pipelines, store: Arc<dyn ObjectStore>) -> Result<Self, BatchError> {
        Ok(Self {
            pipelines,
            store,
            client: http_client()?,
            concurrency: DEFAULT_CONCURRENCY,
            limits: RunLimits::default(),
            rate_limit: None,
            observer: Arc::new(LogProgress::default()),
        })
    }

    /// The limits of pipelines whose file does not set its own (what the
    /// `--max-response-size`, `--max-redirects` and `--max-run-pages`
    /// flags set). An error names a limit outside its range.
    pub fn with_limits(mut self, limits: RunLimits) -> Result<Self, BatchError> {
        limits
            .check()
            .map_err(|(limit, reason)| BatchError::Invalid {
                origin: "engine limits".into(),
                field: limit.into(),
                reason,
            })?;
        self.limits = limits;
        Ok(self)
    }

    /// Sends at most `rate` requests per second in each run of a pipeline
    /// whose file sets no `rate_limit` (what `--rate-limit` sets); `None`
    /// for no limit. An error names a rate outside (0, 10000].
    pub fn with_rate_limit(mut self, rate: Option<f64>) -> Result<Self, BatchError> {
        if let Some(rate) = rate
            && (!rate.is_finite() || rate <= 0.0 || rate > MAX_RATE_LIMIT)
        {
            return Err(BatchError::Invalid {
                origin: "engine limits".into(),
                field: "rate_limit".into(),
                reason: format!(
                    "must be more than 0 and at most {MAX_RATE_LIMIT} requests per second, got {rate}"
                ),
            });
        }
        self.rate_limit = rate;
        Ok(self)
    }

    /// Fetches up to `concurrency` pages at once when a run knows its total
    /// after the first page (1 = strictly one page after the other).
    pub fn with_concurrency(mut self, concurrency: NonZeroUsize) -> Self {
        self.concurrency = concurrency;
        self
    }

    /// Reports progress to `observer` instead of log lines.
    pub fn with_observer(mut self, observer: Arc<dyn RunObserver>) -> Self {
        self.observer = observer;
        self
    }

    /// Adds a custom transformation to a pipeline: it gets every record
    /// (after the declared drop and rename steps, before the run metadata
    /// is added) and returns it changed, or `None` to drop it. Several
    /// hooks run in the order added.
    pub fn with_hook(
        mut self,
        pipeline: &str,
        hook: impl Fn(Record) -> Option<Record> + Send + Sync + 'static,
    ) -> Result<Self, BatchError> {
        let known = self.pipelines.names();
        let target =
            self.pipelines
                .get_mut(pipeline)
                .ok_or_else(|| BatchError::UnknownPipeline {
                    name: pipeline.to_owned(),
                    known,
                })?;
        target.transform.push_hook(Arc::new(hook));
        Ok(self)
    }

    /// The declared pipelines.
    pub fn pipelines(&self) -> &Pipelines {
        &self.pipelines
    }

    /// The pipelines `names` asks for, in that order; every declared one
    /// when `names` is empty. An unknown name is an error.
    pub fn select(&self, names: &[impl AsRef<str>]) -> Result<Vec<&Pipeline>, BatchError> {
        if names.is_empty() {
            return Ok(self.pipelines.iter().collect());
        }
        names
            .iter()
            .map(|name| {
                self.pipelines
                    .get(name.as_ref())
                    .ok_or_else(|| BatchError::UnknownPipeline {
                        name: name.as_ref().to_owned(),
                        known: self.pipelines.names(),
                    })
            })
            .collect()
    }

    /// Runs the pipelines `names` asks for (every declared one when empty),
    /// one after the other, and reports on each. Unknown names are an error
    /// before anything runs; a failed pipeline does not stop the others.
    /// Once `shutdown` is triggered, the run in progress stops without
    /// publishing, and so do the ones after it.
    pub async fn run(
        &self,
        names: &[impl AsRef<str>],
        shutdown: &Shutdown,
    ) -> Result<Vec<RunReport>, BatchError> {
        let selected = self.select(names)?;
        if let Some(first) = selected.first() {
            // A run that cannot write fetches for nothing: find out before
            // the first request to any API.
            self.store
                .list(first.prefix(), None, 1)
                .await
                .map_err(|source| BatchError::LakeUnavailable {
                    location: self.store.location(),
                    source,
                })?;
        }
        let mut reports = Vec::with_capacity(selected.len());
        for pipeline in selected {
            reports.push(self.run_pipeline(pipeline, shutdown).await);
        }
        Ok(reports)
    }

    #[tracing::instrument(
        name = "batch.run",
        skip_all,
        fields(
            pipeline = %pipeline.name,
            run_id,
            records = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            otel.status_description = tracing::field::Empty,
        )
    )]
    async fn run_pipeline(&self, pipeline: &Pipeline, shutdown: &Shutdown) -> RunReport {
        let run_id = Uuid::now_v7();
        tracing::Span::current().record("run_id", tracing::field::display(run_id));
        let started_at = OffsetDateTime::now_utc();
        let clock = Instant::now();
        let source_url = pipeline.display_url();
        let directory = run_directory(&pipeline.prefix, started_at, run_id);
        tracing::info!(
            "{}: run {run_id} started: {source_url} -> {directory}",
            pipeline.name
        );
        self.observer.started(&pipeline.name, &run_id.to_string());

        let limits = pipeline.limits(self.limits);
        let mut run = Run {
            pipeline,
            limits,
            fetcher: Fetcher::new(
                self.client.clone(),
                pipeline,
                limits,
                pipeline.rate_limit.or(self.rate_limit),
                shutdown.clone(),
            ),
            writer: SnapshotWriter::new(Arc::clone(&self.store), directory, pipeline.parts),
            observer: self.observer.as_ref(),
            concurrency: self.concurrency,
            run_id: Value::String(run_id.to_string()),
            pages: 0,
            extracted: 0,
        };
        let outcome = match run.fetch_all().await {
            Ok(stop_reason) => run
                .writer
                .publish(|parts| Manifest {
                    pipeline: pipeline.name.clone(),
                    run_id: run_id.to_string(),
                    source_url: source_url.clone(),
                    started_at: rfc3339(started_at),
                    finished_at: rfc3339(OffsetDateTime::now_utc()),
                    records: parts.iter().map(|part| part.records).sum(),
                    parts: parts.to_vec(),
                })
                .await
                .map(|manifest_key| (stop_reason, manifest_key)),
            Err(err) => Err(err),
        };
        let bytes = run.writer.bytes_written();
        let records = run.writer.records();
        if outcome.is_err() {
            run.writer.abandon().await;
        }
        let (status, error, stop_reason, manifest_key) = match outcome {
            Ok((stop_reason, manifest_key)) => (
                RunStatus::Succeeded,
                None,
                Some(stop_reason),
                Some(manifest_key),
            ),
            Err(err) => (RunStatus::Failed, Some(err.to_string()), None, None),
        };
        let report = RunReport {
            pipeline: pipeline.name.clone(),
            run_id,
            status,
            error,
            stop_reason,
            source_url,
            started_at,
            finished_at: OffsetDateTime::now_utc(),
            duration: clock.elapsed(),
            pages: run.pages,
            records,
            bytes,
            retries: run.fetcher.retries(),
            manifest_key,
            parts: run.writer.parts().to_vec(),
        };
        let span = tracing::Span::current();
        span.record("records", report.records);
        if let Some(error) = &report.error {
            vesper::telemetry::record_error(&span, error);
        }
        metrics::counter!(
            "vesper_batch_runs_total",
            "pipeline" => pipeline.name.clone(),
            "status" => status.as_str()
        )
        .increment(1);
        self.observer.finished(&report);
        log_summary(&report);
        report
    }
}

/// One run in progress.
struct Run<'e> {
    pipeline: &'e Pipeline,
    limits: RunLimits,
    fetcher: Fetcher,
    writer: SnapshotWriter,
    observer: &'e dyn RunObserver,
    concurrency: NonZeroUsize,
    run_id: Value,
    pages: u64,
    /// Records taken from the API so far (what `stop.max_records` counts).
    extracted: u64,
}

impl Run<'_> {
    /// Fetches and writes every page; answers why paging ended.
    async fn fetch_all(&mut self) -> Result<String, BatchError> {
        let pipeline = self.pipeline;
        let budget = PageBudget {
            limit: self.limits.max_pages,
            stop_pages: pipeline.stop.max_pages,
            stop_records: pipeline.stop.max_records,
        };
        let mut pager = Pager::new(&pipeline.pagination, &pipeline.endpoint, budget)
            .hiding(&pipeline.secret_params);
        let mut url = pager.first_url();
        loop {
            let page = self.fetcher.page(url).await?;
            let page_url = pipeline.show_url(&page.url);
            let step = pager
                .after(PageView {
                    url: &page.url,
                    headers: &page.headers,
                    body: &page.body,
                    records: &page.records,
                })
                .map_err(|problem| BatchError::Response {
                    url: page_url.clone(),
                    problem,
                })?;
            if let Some(stop) = self.accept(page).await? {
                return Ok(stop);
            }
            match step {
                Step::Done(reason) => return Ok(reason),
                Step::Next(_) if self.pages >= self.limits.max_pages => {
                    // The API has more, and the run may not fetch it:
                    // failing is the only answer that does not pass a
                    // partial pull off as a complete one.
                    return Err(BatchError::Response {
                        url: page_url,
                        problem: format!(
                            "the API has more pages after page {}, the run's page limit (limits.max_pages); the run would not fetch everything, so it fails instead: raise limits.max_pages (--max-run-pages), or set stop.max_pages or stop.max_records to take only part",
                            self.pages
                        ),
                    });
                }
                Step::Next(next) => url = next,
                Step::Remaining {
                    plan,
                    full_page,
                    records,
                    done,
                } => return self.fetch_planned(plan, full_page, records, done).await,
            }
        }
    }

    /// Fetches pages known in advance, up to `concurrency` at once, and
    /// writes them in order. Each fetch is a task of its own, so fetching
    /// goes on while a part is being written; dropping the stream (on an
    /// error or a stop rule) aborts the fetches still running.
    async fn fetch_planned(
        &mut self,
        plan: Box<Plan>,
        full_page: u64,
        records: Option<u64>,
        done: String,
    ) -> Result<String, BatchError> {
        let stop = self.pipeline.stop;
        // The pager already cut the plan to the stop rules and checked it
        // against the page limit.
        let last = plan.pages();
        let planned_pages = self.pages.saturating_add(last);
        // A plan cut short by a stop rule brings fewer records than the
        // API's total.
        let expected_records = match (records, stop.max_records) {
            (Some(records), Some(max)) => Some(records.min(max)),
            (records, _) => records,
        }
        .map(|records| records.min(planned_pages.saturating_mul(full_page)));
        self.observer
            .planned(&self.pipeline.name, planned_pages, expected_records);

        let fetcher = self.fetcher.clone();
        let mut pages = stream::iter((*plan).into_urls())
            .map(move |url| {
                let fetcher = fetcher.clone();
                let fetch = async move { fetcher.page(url).await };
                AbortOnDropHandle::new(tokio::spawn(fetch.in_current_span()))
            })
            .buffered(self.concurrency.get());
        let mut index = 0;
        while let Some(fetched) = pages.next().await {
            let page = fetched.map_err(|err| BatchError::Task(err.to_string()))??;
            index += 1;
            let records = u64::try_from(page.records.len()).unwrap_or(u64::MAX);
            if records == 0 {
                return Ok("empty page".into());
            }
            if index < last && records < full_page {
                return Err(BatchError::Response {
                    url: self.pipeline.show_url(&page.url),
                    problem: format!(
                        "{records} records where a full page of {full_page} was expected: the server caps its page size below the declared one (lower it), or the data changed during the run"
                    ),
                });
            }
            if let Some(stop) = self.accept(page).await? {
                return Ok(stop);
            }
        }
        Ok(done)
    }

    /// Transforms and writes a page's records, applying the stop rule;
    /// answers why the run must stop, if it must.
    async fn accept(&mut self, page: Page) -> Result<Option<String>, BatchError> {
        let pipeline = self.pipeline;
        self.pages += 1;
        metrics::counter!("vesper_batch_pages_total", "pipeline" => pipeline.name.clone())
            .increment(1);
        let mut records = page.records;
        let mut stop = None;
        if let Some(max) = pipeline.stop.max_records {
            let room = max.saturating_sub(self.extracted);
            if u64::try_from(records.len()).unwrap_or(u64::MAX) >= room {
                records.truncate(usize::try_from(room).unwrap_or(usize::MAX));
                stop = Some(format!("max_records {max}"));
            }
        }
        self.extracted += u64::try_from(records.len()).unwrap_or(u64::MAX);
        let metadata = PageMetadata {
            extracted_at: Value::String(rfc3339(page.received_at)),
            run_id: self.run_id.clone(),
            source_url: Value::String(pipeline.show_url(&page.url)),
        };
        let written_before = self.writer.records();
        for record in records {
            if let Some(record) = pipeline.transform.apply(record, &metadata) {
                self.writer.push(&record).await?;
            }
        }
        metrics::counter!("vesper_batch_records_total", "pipeline" => pipeline.name.clone())
            .increment(self.writer.records() - written_before);
        if stop.is_none()
            && let Some(max) = pipeline.stop.max_pages
            && self.pages >= max
        {
            stop = Some(format!("max_pages {max}"));
        }
        self.observer.progressed(
            &pipeline.name,
            Progress {
                pages: self.pages,
                records: self.extracted,
                retries: self.fetcher.retries(),
            },
        );
        Ok(stop)
    }
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}

fn log_summary(report: &RunReport) {
    let took = humantime::format_duration(std::time::Duration::from_millis(
        u64::try_from(report.duration.as_millis()).unwrap_or(u64::MAX),
    ));
    match (&report.manifest_key, &report.error) {
        (Some(manifest), _) => tracing::info!(
            pages = report.pages,
            records = report.records,
            bytes = report.bytes,
            retries = report.retries,
            "{} succeeded: {} records in {} pages, {} bytes in {took} ({:.0} records/s), {} retries; stopped on {}; manifest {manifest}",
            report.pipeline,
            report.records,
            report.pages,
            report.bytes,
            report.records_per_second(),
            report.retries,
            report.stop_reason.as_deref().unwrap_or("-"),
        ),
        (None, error) => tracing::warn!(
            pages = report.pages,
            records = report.records,
            retries = report.retries,
            "{} failed after {} pages and {} records in {took}; no manifest published: {}",
            report.pipeline,
            report.pages,
            report.records,
            error.as_deref().unwrap_or("unknown error"),
        ),
    }
}
