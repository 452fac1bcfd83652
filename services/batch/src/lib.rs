//! Batch pipelines: any paged REST API into manifested lake snapshots.
//!
//! A pipeline is declared in TOML ([`Pipelines`]; the built-in users,
//! content and events pipelines are in `pipelines.toml`): where to fetch,
//! where the records are in a response, how to page, when to stop, how to
//! retry, how to transform each record and where in the lake to write.
//! [`BatchEngine`] runs them: it pages through the API (fetching pages
//! concurrently when their number is known), retries what is worth
//! retrying, transforms the records and writes NDJSON parts through the
//! lake, then a `_manifest.json` last, so that a run is read only once it
//! is complete. [`serve`] offers the engine as `vesper.v1.BatchPipeline`.

mod args;
mod engine;
mod error;
mod fetch;
mod field;
mod pagination;
mod progress;
mod redact;
mod report;
mod service;
mod snapshot;
mod spec;
mod transform;

pub use args::{BatchArgs, EngineArgs, PipelineArgs};
pub use engine::{BatchEngine, DEFAULT_CONCURRENCY, MAX_CONCURRENCY};
pub use error::BatchError;
pub use fetch::USER_AGENT;
pub use field::FieldPath;
pub use progress::{LogProgress, Progress, Quiet, RunObserver};
pub use report::{RunReport, RunStatus};
pub use service::{BatchPipelineService, serve};
pub use snapshot::{MANIFEST_NAME, Manifest, NDJSON_CONTENT_TYPE, PartInfo, run_directory};
pub use spec::{
    BUILTIN_PIPELINES, DEFAULT_BASE_URL, DEFAULT_MAX_REDIRECTS, DEFAULT_MAX_RESPONSE_SIZE,
    DEFAULT_MAX_RUN_PAGES, MAX_ATTEMPTS, MAX_RATE_LIMIT, MAX_REDIRECTS_CEILING,
    MAX_RESPONSE_SIZE_CEILING, MAX_RUN_PAGES_CEILING, MAX_SECRET_FILE_BYTES, MAX_WAIT, PartLimits,
    Pipeline, Pipelines, RetryPolicy, RunLimits, StopRule,
};
pub use transform::{Hook, METADATA_FIELDS, Record};
