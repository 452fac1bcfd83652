//! Pipeline files: the model a run works from ([`Pipeline`], its retry,
//! part and run limits, its stop rule) and the way in ([`Pipelines`]).
//!
//! Everything that can be checked without calling the API is checked when
//! the file is loaded, and every error names the setting as a dotted path
//! (`pipelines.users.pagination.limit: must be 1 or more`), so that a typo
//! fails at start, not halfway through a run. The file format is in
//! `format` (what serde reads), its validation into this model in `resolve`.

mod format;
mod resolve;

use std::{fmt, path::Path, sync::Arc, time::Duration};

use reqwest::{Url, header::HeaderMap};
use vesper::config::ByteSize;

use self::{
    format::FileToml,
    resolve::{Resolver, parse_base_url},
};
use crate::{
    BatchError,
    field::FieldPath,
    pagination::Pagination,
    redact::{self, Credentials},
    transform::Transform,
};

/// The built-in pipelines (users, content, events), in the file format.
pub const BUILTIN_PIPELINES: &str = include_str!("../../pipelines.toml");

/// Where relative paths point when a file sets no `base_url`: the local
/// gateway's REST API.
pub const DEFAULT_BASE_URL: &str = "http://127.0.0.1:8080/api/";

/// Prefix of the webhook's events in the lake; batch snapshots never go
/// there.
const WEBHOOK_EVENTS_PREFIX: &str = "events/";

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_RETRY: RetryPolicy = RetryPolicy {
    attempts: 5,
    initial_backoff: Duration::from_millis(250),
    max_backoff: Duration::from_secs(10),
    max_retry_after: Duration::from_secs(60),
};
const DEFAULT_PARTS: PartLimits = PartLimits {
    max_records: 5000,
    max_bytes: 16 * 1024 * 1024,
};

/// The highest `rate_limit` (requests per second) accepted.
pub const MAX_RATE_LIMIT: f64 = 10_000.0;

/// The largest file a `${file:PATH}` reference reads: a secret, not data.
pub const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

/// The most attempts a retry policy may make, the first included.
pub const MAX_ATTEMPTS: u32 = 100;
/// The longest backoff, `Retry-After` and request timeout a file may set,
/// so that a run always ends in hours, not days.
pub const MAX_WAIT: Duration = Duration::from_secs(3600);

/// The largest response body a run reads by default.
pub const DEFAULT_MAX_RESPONSE_SIZE: ByteSize = ByteSize::mib(64);
/// Redirects followed per request by default.
pub const DEFAULT_MAX_REDIRECTS: u32 = 5;
/// Pages a run may fetch by default.
pub const DEFAULT_MAX_RUN_PAGES: u64 = 100_000;
/// The highest `max_response_size` accepted: a response is held in memory
/// whole, `--concurrency` of them at once.
pub const MAX_RESPONSE_SIZE_CEILING: ByteSize = ByteSize::mib(1024);
/// The highest `max_redirects` accepted.
pub const MAX_REDIRECTS_CEILING: u32 = 20;
/// The highest `max_pages` accepted: a cursor or link run remembers every
/// token it followed (16 bytes each) to catch loops.
pub const MAX_RUN_PAGES_CEILING: u64 = 1_000_000;

/// Bounds on what one run takes from its API. Past any of them the run
/// fails, publishing nothing, with an error that names the bound: a run
/// that cannot fetch everything never looks complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunLimits {
    /// The largest response body read, in bytes.
    pub max_response_bytes: u64,
    /// Redirects followed per request (to the same origin only).
    pub max_redirects: u32,
    /// Pages a run fetches at most.
    pub max_pages: u64,
}

impl Default for RunLimits {
    fn default() -> Self {
        Self {
            max_response_bytes: DEFAULT_MAX_RESPONSE_SIZE.bytes(),
            max_redirects: DEFAULT_MAX_REDIRECTS,
            max_pages: DEFAULT_MAX_RUN_PAGES,
        }
    }
}

impl RunLimits {
    /// Checks each limit against its range; the error names the limit
    /// (`max_response_size`, `max_redirects`, `max_pages`) and the range.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.max_response_bytes == 0
            || self.max_response_bytes > MAX_RESPONSE_SIZE_CEILING.bytes()
        {
            return Err((
                "max_response_size",
                format!("must be between 1 byte and {MAX_RESPONSE_SIZE_CEILING}"),
            ));
        }
        if self.max_redirects > MAX_REDIRECTS_CEILING {
            return Err((
                "max_redirects",
                format!(
                    "must be between 0 and {MAX_REDIRECTS_CEILING}, got {}",
                    self.max_redirects
                ),
            ));
        }
        if self.max_pages == 0 || self.max_pages > MAX_RUN_PAGES_CEILING {
            return Err((
                "max_pages",
                format!(
                    "must be between 1 and {MAX_RUN_PAGES_CEILING}, got {}",
                    self.max_pages
                ),
            ));
        }
        Ok(())
    }
}

/// The limits a pipeline file sets; the unset ones come from the engine
/// (its flags).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LimitOverrides {
    max_response_bytes: Option<u64>,
    max_redirects: Option<u32>,
    max_pages: Option<u64>,
}

impl LimitOverrides {
    /// These over `base`.
    pub(crate) fn over(&self, base: RunLimits) -> RunLimits {
        RunLimits {
            max_response_bytes: self.max_response_bytes.unwrap_or(base.max_response_bytes),
            max_redirects: self.max_redirects.unwrap_or(base.max_redirects),
            max_pages: self.max_pages.unwrap_or(base.max_pages),
        }
    }

    /// `self`, with what `more` sets replacing it.
    fn then(self, more: Self) -> Self {
        Self {
            max_response_bytes: more.max_response_bytes.or(self.max_response_bytes),
            max_redirects: more.max_redirects.or(self.max_redirects),
            max_pages: more.max_pages.or(self.max_pages),
        }
    }
}

/// How a request that failed transiently (429, 5xx, a timeout, a broken
/// connection) is retried: capped exponential backoff with full jitter, and
/// at least as long as the server's `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = never retry).
    pub attempts: u32,
    /// The backoff cap before the first retry; it doubles for each retry.
    pub initial_backoff: Duration,
    /// The most the backoff cap grows to.
    pub max_backoff: Duration,
    /// The longest `Retry-After` honoured; a server asking for more ends
    /// the run instead of stalling it.
    pub max_retry_after: Duration,
}

/// When a snapshot part is closed and a new one started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartLimits {
    /// Records in a part, at most.
    pub max_records: u64,
    /// Bytes in a part, at most (a single larger record gets a part of its
    /// own). A part is held in memory until written, so this bounds a run's
    /// memory too.
    pub max_bytes: u64,
}

/// Where a run stops besides the API saying so.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StopRule {
    /// Pages fetched, at most.
    pub max_pages: Option<u64>,
    /// Records taken from the API, at most (the last page is cut to fit).
    pub max_records: Option<u64>,
}

impl StopRule {
    fn is_set(&self) -> bool {
        self.max_pages.is_some() || self.max_records.is_some()
    }

    /// "max 10 pages", "max 10 pages or 2000 records", "" for none.
    pub fn describe(&self) -> String {
        match (self.max_pages, self.max_records) {
            (None, None) => String::new(),
            (Some(pages), None) => format!("max {pages} pages"),
            (None, Some(records)) => format!("max {records} records"),
            (Some(pages), Some(records)) => format!("max {pages} pages or {records} records"),
        }
    }
}

/// One declared pipeline, validated.
#[derive(Clone)]
pub struct Pipeline {
    pub(crate) name: String,
    /// The endpoint with the declared query, before any paging parameter.
    pub(crate) endpoint: Url,
    pub(crate) path: String,
    pub(crate) query: Vec<(String, String)>,
    pub(crate) own_base_url: bool,
    pub(crate) records: Option<FieldPath>,
    pub(crate) prefix: String,
    pub(crate) timeout: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) headers: HeaderMap,
    /// The userinfo of the base URL, sent as Basic auth.
    pub(crate) credentials: Option<Credentials>,
    /// Query parameters whose value came from a secret reference: masked
    /// wherever a URL is shown, whatever their name.
    pub(crate) secret_params: Arc<[String]>,
    /// Requests per second, at most; `None` leaves it to the engine.
    pub(crate) rate_limit: Option<f64>,
    pub(crate) limits: LimitOverrides,
    pub(crate) pagination: Pagination,
    pub(crate) stop: StopRule,
    pub(crate) transform: Transform,
    pub(crate) parts: PartLimits,
}

impl fmt::Debug for Pipeline {
    /// The endpoint as it may be shown (its query can hold an API key).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("name", &self.name)
            .field("endpoint", &self.show_url(&self.endpoint))
            .field("own_base_url", &self.own_base_url)
            .field("records", &self.records)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .field("headers", &self.headers)
            .field("credentials", &self.credentials)
            .field("rate_limit", &self.rate_limit)
            .field("limits", &self.limits)
            .field("pagination", &self.pagination)
            .field("stop", &self.stop)
            .field("transform", &self.transform)
            .field("parts", &self.parts)
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// The pipeline's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The URL of the first request (credentials in the base URL are not
    /// part of it: they are sent as a header).
    pub fn first_url(&self) -> Url {
        self.pagination.first_url(&self.endpoint)
    }

    /// The URL of the first request as logs and reports show it: secret
    /// query values masked.
    pub fn display_url(&self) -> String {
        self.show_url(&self.first_url())
    }

    /// `url` as logs, errors, reports and records show it: no userinfo,
    /// secret query values masked (by name, and those from a secret
    /// reference).
    pub(crate) fn show_url(&self, url: &Url) -> String {
        redact::url_hiding(url, &self.secret_params)
    }

    /// Its rate limit, in requests per second, if its file sets one.
    pub fn rate_limit(&self) -> Option<f64> {
        self.rate_limit
    }

    /// Its limits, where `base` gives those its file does not set.
    pub fn limits(&self, base: RunLimits) -> RunLimits {
        self.limits.over(base)
    }

    /// The lake prefix the snapshots go under ("users/").
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// How it pages, e.g. "offset (limit 200)".
    pub fn describe_pagination(&self) -> String {
        self.pagination.describe()
    }

    /// Its stop rule.
    pub fn stop(&self) -> StopRule {
        self.stop
    }

    /// Its retry policy.
    pub fn retry(&self) -> RetryPolicy {
        self.retry
    }

    /// Its per-request timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// As the gRPC contract lists it.
    pub fn info(&self) -> vesper::v1::PipelineInfo {
        vesper::v1::PipelineInfo {
            name: self.name.clone(),
            url: self.display_url(),
            pagination: self.describe_pagination(),
            prefix: self.prefix.clone(),
            stop: self.stop.describe(),
        }
    }
}

/// The declared pipelines, in declaration order.
#[derive(Debug, Clone)]
pub struct Pipelines {
    origin: String,
    pipelines: Vec<Pipeline>,
}

impl Pipelines {
    /// The built-in users, content and events pipelines.
    pub fn builtin() -> Result<Self, BatchError> {
        Self::from_toml(BUILTIN_PIPELINES, "built-in pipelines")
    }

    /// Reads and validates a pipeline file.
    pub fn load(path: &Path) -> Result<Self, BatchError> {
        let text = std::fs::read_to_string(path).map_err(|source| BatchError::ReadConfig {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// Parses and validates pipelines written in the file format; `origin`
    /// names the text in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, BatchError> {
        let file: FileToml = toml::from_str(text).map_err(|err| BatchError::Syntax {
            origin: origin.to_owned(),
            message: err.to_string().trim_end().to_owned(),
        })?;
        Resolver { origin }.resolve(file)
    }

    /// Points every pipeline that has no `base_url` of its own at `source`
    /// instead of the file's `base_url` (what `--source-url` does).
    pub fn with_source_url(mut self, source: &str) -> Result<Self, BatchError> {
        let resolver = Resolver {
            origin: &self.origin,
        };
        let (base, credentials) = parse_base_url(source).map_err(|reason| BatchError::Invalid {
            origin: "--source-url".into(),
            field: redact::text(source),
            reason,
        })?;
        for pipeline in self.pipelines.iter_mut().filter(|p| !p.own_base_url) {
            pipeline.endpoint = resolver.endpoint(
                &base,
                &pipeline.path,
                &pipeline.query,
                &format!("pipelines.{}.path", pipeline.name),
            )?;
            pipeline.credentials = credentials.clone();
            resolver.check_one_authorization(pipeline, "--source-url")?;
        }
        Ok(self)
    }

    /// Sends `token` as `Authorization: Bearer` with every pipeline that
    /// has no `base_url` of its own (they fetch from the file's base_url or
    /// `--source-url`, e.g. vesper's gateway) and no `Authorization` header
    /// or credentials of its own. A pipeline with its own base_url never
    /// gets it, so a vesper token cannot reach another API.
    pub fn with_source_token(mut self, token: &vesper::auth::Token) -> Self {
        for pipeline in self.pipelines.iter_mut().filter(|p| {
            !p.own_base_url
                && p.credentials.is_none()
                && !p.headers.contains_key(reqwest::header::AUTHORIZATION)
        }) {
            pipeline
                .headers
                .insert(reqwest::header::AUTHORIZATION, token.authorization());
        }
        self
    }

    /// The pipeline called `name`.
    pub fn get(&self, name: &str) -> Option<&Pipeline> {
        self.pipelines.iter().find(|pipeline| pipeline.name == name)
    }

    pub(crate) fn get_mut(&mut self, name: &str) -> Option<&mut Pipeline> {
        self.pipelines
            .iter_mut()
            .find(|pipeline| pipeline.name == name)
    }

    /// Every pipeline, in declaration order.
    pub fn iter(&self) -> impl Iterator<Item = &Pipeline> {
        self.pipelines.iter()
    }

    /// The declared names, in order.
    pub fn names(&self) -> Vec<String> {
        self.pipelines.iter().map(|p| p.name.clone()).collect()
    }

    /// Where they were loaded from.
    pub fn origin(&self) -> &str {
        &self.origin
    }
}

#[cfg(test)]
mod tests;
