//! The command-line options of `vesper batch`.

use std::{num::NonZeroUsize, path::PathBuf, sync::Arc};

use vesper::config::{ByteSize, Lake};
use vesper_storage::{DEFAULT_MAX_OBJECT_SIZE, ObjectStore, StoragePeerArgs, open_lake};

use crate::{
    BatchEngine, BatchError, DEFAULT_CONCURRENCY, DEFAULT_MAX_REDIRECTS, DEFAULT_MAX_RESPONSE_SIZE,
    DEFAULT_MAX_RUN_PAGES, MAX_CONCURRENCY, MAX_RATE_LIMIT, MAX_REDIRECTS_CEILING,
    MAX_RUN_PAGES_CEILING, Pipelines, RunLimits,
};

/// Which pipelines there are, and where they pull from.
#[derive(Debug, Clone, clap::Args)]
pub struct PipelineArgs {
    /// A TOML file declaring the pipelines. It replaces the built-in users,
    /// content and events pipelines; docs/pipelines.md documents the format.
    #[arg(long = "pipelines", env = "VESPER_PIPELINES", value_name = "FILE")]
    pub pipelines_file: Option<PathBuf>,

    /// The URL the pipelines' paths are relative to, replacing the file's
    /// base_url (pipelines with a base_url of their own keep it). The
    /// built-in pipelines use the local gateway, http://127.0.0.1:8080/api/.
    /// Credentials in it (user:password@) are sent as Basic auth and never
    /// shown.
    #[arg(
        long,
        env = "VESPER_SOURCE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub source_url: Option<String>,

    /// A file holding a bearer token sent with the requests of the
    /// pipelines that use the file's base_url or --source-url (never those
    /// with a base_url of their own), e.g. a token with source:read when
    /// they read vesper's gateway with access control on.
    #[arg(long, env = "VESPER_SOURCE_TOKEN_FILE", value_name = "FILE")]
    pub source_token_file: Option<PathBuf>,

    /// A token given by the program rather than a file (`vesper up`'s own,
    /// for its own gateway).
    #[arg(skip)]
    pub source_token: Option<vesper::auth::Token>,
}

impl PipelineArgs {
    /// The pipelines these options declare.
    pub fn load(&self) -> Result<Pipelines, BatchError> {
        let pipelines = match &self.pipelines_file {
            Some(path) => Pipelines::load(path)?,
            None => Pipelines::builtin()?,
        };
        let pipelines = match &self.source_url {
            Some(source) => pipelines.with_source_url(source)?,
            None => pipelines,
        };
        let token = match (&self.source_token, &self.source_token_file) {
            (Some(token), _) => Some(token.clone()),
            (None, Some(path)) => {
                Some(
                    vesper::auth::Token::from_file(path).map_err(|err| BatchError::Invalid {
                        origin: "--source-token-file".into(),
                        field: path.display().to_string(),
                        reason: err.to_string(),
                    })?,
                )
            }
            (None, None) => None,
        };
        Ok(match token {
            Some(token) => pipelines.with_source_token(&token),
            None => pipelines,
        })
    }
}

/// How an engine runs pipelines, wherever it writes: shared by `vesper
/// batch run|serve` and `vesper up`.
#[derive(Debug, Clone, clap::Args)]
pub struct EngineArgs {
    #[command(flatten)]
    pub pipelines: PipelineArgs,

    /// Pages fetched at once when a run knows how many pages remain after
    /// the first (offset paging with a total field, page-number paging with
    /// a total_pages field); 1 fetches one page after the other, at most
    /// 64. Pages are written in order either way.
    #[arg(
        long,
        env = "VESPER_CONCURRENCY",
        default_value_t = DEFAULT_CONCURRENCY,
        value_parser = parse_concurrency,
        value_name = "N"
    )]
    pub concurrency: NonZeroUsize,

    /// The largest response body a run reads (e.g. 64MiB, 512KiB, at most
    /// 1GiB); a larger one fails the run. A pipeline file's
    /// limits.max_response_size wins over it.
    #[arg(
        long,
        env = "VESPER_BATCH_MAX_RESPONSE_SIZE",
        default_value_t = DEFAULT_MAX_RESPONSE_SIZE,
        value_name = "SIZE"
    )]
    pub max_response_size: ByteSize,

    /// Redirects followed per request, to the same origin only; one more
    /// fails the run. A pipeline file's limits.max_redirects wins over it.
    #[arg(
        long,
        env = "VESPER_BATCH_MAX_REDIRECTS",
        default_value_t = DEFAULT_MAX_REDIRECTS,
        value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_REDIRECTS_CEILING)),
        value_name = "N"
    )]
    pub max_redirects: u32,

    /// Pages a run may fetch; a run whose API has more fails (a stop rule
    /// ends a run early on purpose instead). A pipeline file's
    /// limits.max_pages wins over it.
    #[arg(
        long,
        env = "VESPER_BATCH_MAX_RUN_PAGES",
        default_value_t = DEFAULT_MAX_RUN_PAGES,
        value_parser = clap::value_parser!(u64).range(1..=MAX_RUN_PAGES_CEILING),
        value_name = "N"
    )]
    pub max_run_pages: u64,

    /// Requests per second each pipeline run sends at most, retries
    /// included, concurrent fetches shared (e.g. 10, 0.5); none by default.
    /// A pipeline file's rate_limit wins over it.
    #[arg(
        long,
        env = "VESPER_BATCH_RATE_LIMIT",
        value_parser = parse_rate_limit,
        value_name = "PER_SECOND"
    )]
    pub rate_limit: Option<f64>,
}

/// More than 0, at most [`MAX_RATE_LIMIT`].
fn parse_rate_limit(text: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .ok()
        .filter(|rate| rate.is_finite() && *rate > 0.0 && *rate <= MAX_RATE_LIMIT)
        .ok_or_else(|| {
            format!(
                "must be a number of requests per second, more than 0 and at most {MAX_RATE_LIMIT}"
            )
        })
}

/// 1 to [`MAX_CONCURRENCY`]: each page in flight may hold a response of
/// up to `--max-response-size`.
fn parse_concurrency(text: &str) -> Result<NonZeroUsize, String> {
    text.parse::<NonZeroUsize>()
        .ok()
        .filter(|n| n.get() <= MAX_CONCURRENCY)
        .ok_or_else(|| format!("must be a whole number from 1 to {MAX_CONCURRENCY}"))
}

impl EngineArgs {
    /// The limits these options set.
    pub fn limits(&self) -> RunLimits {
        RunLimits {
            max_response_bytes: self.max_response_size.bytes(),
            max_redirects: self.max_redirects,
            max_pages: self.max_run_pages,
        }
    }

    /// An engine over the declared pipelines, writing to `store`.
    pub fn engine(&self, store: Arc<dyn ObjectStore>) -> Result<BatchEngine, BatchError> {
        self.limits()
            .check()
            .map_err(|(limit, reason)| BatchError::Invalid {
                origin: "command line".into(),
                field: match limit {
                    "max_response_size" => "--max-response-size",
                    "max_redirects" => "--max-redirects",
                    _ => "--max-run-pages",
                }
                .into(),
                reason,
            })?;
        BatchEngine::new(self.pipelines.load()?, store)?
            .with_concurrency(self.concurrency)
            .with_limits(self.limits())?
            .with_rate_limit(self.rate_limit)
    }
}

/// Options of the commands that run pipelines.
#[derive(Debug, Clone, clap::Args)]
pub struct BatchArgs {
    #[command(flatten)]
    pub engine: EngineArgs,

    #[command(flatten)]
    pub storage: StoragePeerArgs,

    /// Write snapshots straight to this lake, a directory (created if
    /// missing) or s3://BUCKET[/PREFIX], instead of through the Storage
    /// service (--storage-addr). S3 settings come from the standard AWS
    /// variables, as for `vesper storage`.
    #[arg(
        long,
        env = "VESPER_BATCH_LAKE",
        value_name = "DIR|s3://BUCKET[/PREFIX]",
        conflicts_with = "storage_addr"
    )]
    pub lake: Option<Lake>,
}

impl BatchArgs {
    /// Where snapshots go, for messages: the lake, or the Storage service.
    pub fn destination(&self) -> String {
        match &self.lake {
            Some(lake) => format!("the lake {lake} (--lake)"),
            None => format!(
                "the Storage service at {} (--storage-addr)",
                self.storage.storage_addr
            ),
        }
    }

    /// An engine over the declared pipelines, writing to `--lake` when it
    /// is given, else through the Storage service (connected lazily: the
    /// engine starts while Storage is down, and each run checks it before
    /// its first request).
    pub async fn engine(&self) -> Result<BatchEngine, BatchError> {
        let store: Arc<dyn ObjectStore> = match &self.lake {
            Some(lake) => open_lake(lake, DEFAULT_MAX_OBJECT_SIZE.bytes(), false)
                .await
                .map_err(|source| BatchError::LakeUnavailable {
                    location: lake.to_string(),
                    source,
                })?,
            None => Arc::new(self.storage.connect_lazy(DEFAULT_MAX_OBJECT_SIZE.bytes())),
        };
        self.engine.engine(store)
    }
}
