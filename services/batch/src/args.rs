//! The command-line options of `vesper batch`.

use std::{num::NonZeroUsize, path::PathBuf, sync::Arc};

use vesper_storage::{DEFAULT_MAX_OBJECT_SIZE, ObjectStore, StoragePeerArgs};

use crate::{BatchEngine, BatchError, DEFAULT_CONCURRENCY, Pipelines};

/// Which pipelines there are, and where they pull from.
#[derive(Debug, Clone, clap::Args)]
pub struct PipelineArgs {
    /// A TOML file declaring the pipelines. It replaces the built-in users,
    /// content and events pipelines; the README documents the format.
    #[arg(long = "pipelines", env = "VESPER_PIPELINES", value_name = "FILE")]
    pub pipelines_file: Option<PathBuf>,

    /// The URL the pipelines' paths are relative to, replacing the file's
    /// base_url (pipelines with a base_url of their own keep it). The
    /// built-in pipelines use the local gateway, http://127.0.0.1:8080/api/.
    #[arg(long, env = "VESPER_SOURCE_URL", value_name = "URL")]
    pub source_url: Option<String>,
}

impl PipelineArgs {
    /// The pipelines these options declare.
    pub fn load(&self) -> Result<Pipelines, BatchError> {
        let pipelines = match &self.pipelines_file {
            Some(path) => Pipelines::load(path)?,
            None => Pipelines::builtin()?,
        };
        match &self.source_url {
            Some(source) => pipelines.with_source_url(source),
            None => Ok(pipelines),
        }
    }
}

/// How an engine runs pipelines, wherever it writes: shared by `vesper
/// batch run|serve` and `vesper up`.
#[derive(Debug, Clone, clap::Args)]
pub struct EngineArgs {
    #[command(flatten)]
    pub pipelines: PipelineArgs,

    /// Pages fetched at once when a run knows its total after the first
    /// page (offset paging with a total field); 1 fetches one page after
    /// the other. Pages are written in order either way.
    #[arg(
        long,
        env = "VESPER_CONCURRENCY",
        default_value_t = DEFAULT_CONCURRENCY,
        value_name = "N"
    )]
    pub concurrency: NonZeroUsize,
}

impl EngineArgs {
    /// An engine over the declared pipelines, writing to `store`.
    pub fn engine(&self, store: Arc<dyn ObjectStore>) -> Result<BatchEngine, BatchError> {
        Ok(BatchEngine::new(self.pipelines.load()?, store)?.with_concurrency(self.concurrency))
    }
}

/// Options of the commands that run pipelines.
#[derive(Debug, Clone, clap::Args)]
pub struct BatchArgs {
    #[command(flatten)]
    pub engine: EngineArgs,

    #[command(flatten)]
    pub storage: StoragePeerArgs,
}

impl BatchArgs {
    /// An engine over the declared pipelines, writing through the Storage
    /// service (connected lazily: the engine starts while Storage is down).
    pub fn engine(&self) -> Result<BatchEngine, BatchError> {
        let store = self.storage.connect_lazy(DEFAULT_MAX_OBJECT_SIZE.bytes());
        self.engine.engine(Arc::new(store))
    }
}
