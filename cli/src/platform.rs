//! The whole platform in one process, as `vesper up` and `vesper demo` run
//! it: Storage, DataSource, EventIngest and BatchPipeline on one gRPC port,
//! the gateway on one HTTP port. Every hop between them is still a real
//! gRPC call over loopback (ingest and batch write through the Storage
//! service, the gateway calls the services, the generator posts to the
//! gateway's webhook), so the one-process platform behaves like the
//! distributed one.

use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context, bail};
use clap::Args;
use reqwest::Url;
use tokio::task::JoinHandle;
use vesper::{
    Shutdown,
    config::{Lake, PeerAddr, bind, defaults},
    grpc::{GrpcLimits, GrpcServices, connect_lazy},
    v1::{
        RunReport, RunRequest, RunStatus, StatsResponse, batch_pipeline_client::BatchPipelineClient,
    },
};
use vesper_batch::{BatchPipelineService, EngineArgs};
use vesper_datasource::{DataSourceArgs, DataSourceService};
use vesper_gateway::{GatewayConfig, GatewayLimits};
use vesper_ingest::{
    IngestEngine, IngestEngineArgs, IngestService,
    fleet::writer::{LakeWriter, WriterArgs},
};
use vesper_storage::{LakeArgs, ObjectStore, RemoteStore, StorageService};

/// The pipelines `up` runs once at start.
const BOOT_PIPELINES: [&str; 2] = ["users", "content"];

/// Options of the one-process platform, shared by `up` and `demo`.
#[derive(Debug, Clone, Args)]
pub(crate) struct PlatformArgs {
    /// Address to serve every gRPC service on (storage, datasource, ingest,
    /// batch; port 0 picks a free port).
    #[arg(
        long,
        env = "VESPER_GRPC_ADDR",
        default_value = defaults::UP_GRPC_ADDR,
        value_name = "HOST:PORT"
    )]
    grpc_addr: SocketAddr,

    /// Address to serve HTTP on: the webhook, the REST API, /health and
    /// /metrics (port 0 picks a free port).
    #[arg(
        long,
        env = "VESPER_HTTP_ADDR",
        default_value = defaults::HTTP_ADDR,
        value_name = "HOST:PORT"
    )]
    http_addr: SocketAddr,

    /// Do not write the sample CSVs (data/*.csv) when they are missing.
    #[arg(long, env = "VESPER_NO_SAMPLE_DATA")]
    no_sample_data: bool,

    /// Do not run the users and content pipelines at start.
    #[arg(long, env = "VESPER_NO_PIPELINES")]
    no_pipelines: bool,

    #[command(flatten)]
    lake: LakeArgs,

    #[command(flatten, next_help_heading = "EventIngest")]
    ingest: IngestEngineArgs,

    /// The embedded lake writer's options (fleet mode only).
    #[command(
        flatten,
        next_help_heading = "Lake writer (fleet mode: --log nats://...)"
    )]
    writer: WriterArgs,

    #[command(flatten, next_help_heading = "DataSource")]
    datasource: DataSourceArgs,

    #[command(flatten, next_help_heading = "Batch pipelines")]
    batch: EngineArgs,

    #[command(flatten, next_help_heading = "Gateway")]
    gateway: GatewayLimits,

    #[command(flatten, next_help_heading = "gRPC limits")]
    grpc_limits: GrpcLimits,
}

impl PlatformArgs {
    /// The lake these options name.
    pub(crate) fn lake(&self) -> &Lake {
        &self.lake.lake
    }
}

/// Where a running platform is.
#[derive(Debug, Clone)]
pub(crate) struct Addresses {
    /// The gRPC port, as bound.
    pub(crate) grpc: SocketAddr,
    /// The HTTP port, as bound.
    pub(crate) http: SocketAddr,
    /// The lake, as a user would open it (directories absolute).
    pub(crate) lake: String,
    /// The write-ahead log directory (absolute).
    pub(crate) wal: PathBuf,
}

/// What a platform did, for the closing summary.
#[derive(Debug, Default)]
pub(crate) struct Summary {
    /// The ingest counters after the final flush.
    pub(crate) ingest: Option<StatsResponse>,
    /// The reports of the pipelines run at start.
    pub(crate) pipelines: Vec<RunReport>,
}

/// A running platform.
#[derive(Debug)]
pub(crate) struct Platform {
    addresses: Addresses,
    /// Stops what must stop first: the generator, batch runs, deliberate
    /// stalls.
    services: Shutdown,
    http_stop: Shutdown,
    grpc_stop: Shutdown,
    http: JoinHandle<std::io::Result<()>>,
    grpc: JoinHandle<Result<(), vesper::grpc::ServeError>>,
    datasource: DataSourceService,
    ingest: IngestEngine,
    /// Fleet mode's embedded lake writer.
    writer: Option<LakeWriter>,
    boot: Option<JoinHandle<Vec<RunReport>>>,
    boot_reports: Vec<RunReport>,
}

impl Platform {
    /// Opens the lake and the WAL, binds both ports and starts every
    /// service. `shutdown` (the process's signals) also stops the services'
    /// own work at once; the orderly stop is [`Platform::stop`].
    pub(crate) async fn start(args: &PlatformArgs, shutdown: &Shutdown) -> anyhow::Result<Self> {
        let max_object_size = args.lake.max_object_size.bytes();
        let wal = prepare_wal_dir(&args.ingest.wal_dir, &args.lake.lake)?;
        let store = args
            .lake
            .open()
            .await
            .with_context(|| format!("cannot open the lake {}", args.lake.lake))?;
        let grpc_listener = bind(args.grpc_addr).await?;
        let http_listener = bind(args.http_addr).await?;
        let grpc = grpc_listener.local_addr()?;
        let http = http_listener.local_addr()?;
        let grpc_peer: PeerAddr = reachable(grpc).to_string().parse()?;
        let own_api = format!("http://{}/api/", reachable(http));
        let own_webhook: Url = format!("http://{}/webhook/events", reachable(http)).parse()?;

        let services = shutdown.child();
        // Ingest and batch write through the Storage service, as they do
        // when they run apart; the flusher retries until the server below
        // is up.
        let through_storage = || -> Arc<dyn ObjectStore> {
            Arc::new(RemoteStore::connect_lazy(&grpc_peer, max_object_size))
        };
        let ingest_config = args.ingest.config();
        ingest_config.check()?;
        for (what, bytes) in [
            (
                "PutObject (--max-object-size)",
                vesper_storage::message_limit(max_object_size),
            ),
            (
                "Ingest message (derived from --max-event-bytes)",
                ingest_config.max_ingest_message(),
            ),
        ] {
            args.grpc_limits
                .check_fits(what, bytes)
                .map_err(anyhow::Error::msg)?;
        }
        // In fleet mode the store only takes what a local write-ahead log
        // left behind, before the gRPC port below serves: write it to the
        // lake directly, not through the Storage service that is not up yet.
        let ingest_store = match args.ingest.log.fleet() {
            Some(_) => Arc::clone(&store),
            None => through_storage(),
        };
        let ingest = IngestEngine::start_with(&args.ingest, ingest_store)
            .await
            .with_context(|| crate::ingest::describe_log(&args.ingest))?;
        // Fleet mode (`--log nats://...`): this member publishes to the
        // stream, and one lake writer (a consumer of the stream like any
        // `vesper lake-writer`, writing through the Storage service below;
        // its writes retry until it serves) runs beside it.
        let writer = match args.ingest.log.fleet() {
            Some(fleet) => Some(
                crate::lake_writer::start_writer(
                    &fleet,
                    &args.ingest.batch,
                    &args.writer,
                    through_storage(),
                    max_object_size,
                )
                .await
                .context("cannot start the embedded lake writer")?,
            ),
            None => None,
        };
        let datasource_config = args.datasource.config(own_webhook);
        let generator_delay = datasource_config
            .generator
            .autostart
            .then_some(datasource_config.generator.delay);
        let datasource = DataSourceService::new(datasource_config, services.clone())?;
        let mut batch_args = args.batch.clone();
        if batch_args.pipelines.source_url.is_none() {
            batch_args.pipelines.source_url = Some(own_api);
        }
        let batch = Arc::new(batch_args.engine(through_storage())?);

        let grpc_stop = Shutdown::new();
        let grpc_task = tokio::spawn(
            GrpcServices::new()
                .limits(args.grpc_limits.clone())
                .with(StorageService::new(store).into_server(max_object_size))
                .with(datasource.clone().into_server())
                .with(IngestService::new(ingest.clone()).into_server())
                .with(BatchPipelineService::new(batch, services.clone()).into_server())
                .serve(grpc_listener, grpc_stop.signalled()),
        );
        let mut gateway = GatewayConfig::all_peers_at(grpc_peer.clone());
        args.gateway.apply_to(&mut gateway);
        let http_limits = gateway.server.clone();
        let http_stop = Shutdown::new();
        let http_signal = http_stop.signalled();
        let http_task = tokio::spawn(async move {
            vesper_gateway::serve_with(
                http_listener,
                vesper_gateway::router(gateway),
                &http_limits,
                http_signal,
            )
            .await
        });

        if let Some(delay) = generator_delay {
            datasource.generator().start_after(delay);
        }
        let boot = tokio::spawn(boot(
            grpc_peer,
            args.datasource.seed,
            !args.no_sample_data,
            !args.no_pipelines,
        ));

        Ok(Self {
            addresses: Addresses {
                grpc,
                http,
                lake: describe_lake(&args.lake.lake),
                wal,
            },
            services,
            http_stop,
            grpc_stop,
            http: http_task,
            grpc: grpc_task,
            datasource,
            ingest,
            writer,
            boot: Some(boot),
            boot_reports: Vec::new(),
        })
    }

    /// Where everything is.
    pub(crate) fn addresses(&self) -> &Addresses {
        &self.addresses
    }

    /// Waits for the start-up work (sample data, first pipeline runs) and
    /// returns the pipeline reports.
    pub(crate) async fn booted(&mut self) -> &[RunReport] {
        if let Some(task) = self.boot.take() {
            self.boot_reports = task.await.unwrap_or_default();
        }
        &self.boot_reports
    }

    /// Stops in the order that loses nothing: the generator's last push
    /// lands, the gateway drains its requests, batch runs stop unpublished,
    /// the ingest engine flushes its buffers through the still-running
    /// Storage service, and only then does the gRPC server stop.
    pub(crate) async fn stop(mut self) -> anyhow::Result<Summary> {
        self.datasource.generator().stop();
        self.datasource.generator().join().await;
        self.http_stop.trigger();
        if let Ok(Err(err)) = (&mut self.http).await {
            tracing::warn!("the HTTP server stopped with an error: {err}");
        }
        self.services.trigger();
        self.booted().await;
        let pipelines = std::mem::take(&mut self.boot_reports);
        self.ingest.shutdown().await;
        let ingest = Some(self.ingest.stats());
        // Before Storage stops: the writer writes and acks its open batches
        // through it.
        if let Some(writer) = &self.writer {
            writer.shutdown().await;
        }
        self.grpc_stop.trigger();
        match (&mut self.grpc).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => bail!("the gRPC server failed: {err}"),
            Err(err) => bail!("the gRPC server task failed: {err}"),
        }
        Ok(Summary { ingest, pipelines })
    }
}

/// Sample data when missing, then the users and content pipelines through
/// the BatchPipeline service, so a fresh lake has something to analyse.
async fn boot(grpc: PeerAddr, seed: u64, sample_data: bool, pipelines: bool) -> Vec<RunReport> {
    if sample_data {
        let through_storage =
            RemoteStore::connect_lazy(&grpc, vesper_storage::DEFAULT_MAX_OBJECT_SIZE.bytes());
        match vesper_datasource::sample_data_present(&through_storage).await {
            Ok(true) => tracing::info!("sample data already in the lake"),
            Ok(false) => match vesper_datasource::write_sample_data(&through_storage, seed).await {
                Ok(files) => {
                    tracing::info!(files = files.len(), "wrote the sample data (data/*.csv)")
                }
                Err(err) => tracing::warn!("could not write the sample data: {err}"),
            },
            Err(err) => tracing::warn!("could not look for the sample data: {err}"),
        }
    }
    if !pipelines {
        return Vec::new();
    }
    let mut client = BatchPipelineClient::new(connect_lazy(&grpc));
    let request = RunRequest {
        pipelines: BOOT_PIPELINES
            .iter()
            .map(|name| (*name).to_owned())
            .collect(),
    };
    match client.run(request).await {
        Ok(response) => {
            let reports = response.into_inner().reports;
            for report in &reports {
                if report.status() == RunStatus::Succeeded {
                    tracing::info!(
                        pipeline = %report.pipeline,
                        records = report.records,
                        manifest = %report.manifest_key,
                        "pipeline run done"
                    );
                } else {
                    tracing::warn!(pipeline = %report.pipeline, error = %report.error, "pipeline run failed");
                }
            }
            reports
        }
        Err(status) => {
            tracing::warn!("could not run the start-up pipelines: {}", status.message());
            Vec::new()
        }
    }
}

/// An address this process can call itself on: a wildcard bind is reached
/// through loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(v4) if v4.ip().is_unspecified() => {
            SocketAddr::from((Ipv4Addr::LOCALHOST, v4.port()))
        }
        SocketAddr::V6(v6) if v6.ip().is_unspecified() => {
            SocketAddr::from((Ipv6Addr::LOCALHOST, v6.port()))
        }
        other => other,
    }
}

/// Creates the WAL directory and refuses one inside a directory lake (its
/// files would show up as objects, and a lake wipe would take the WAL).
fn prepare_wal_dir(wal: &Path, lake: &Lake) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(wal)
        .with_context(|| format!("cannot create the WAL directory {}", wal.display()))?;
    let wal = wal
        .canonicalize()
        .with_context(|| format!("cannot resolve the WAL directory {}", wal.display()))?;
    if let Lake::Dir(lake) = lake {
        std::fs::create_dir_all(lake)
            .with_context(|| format!("cannot create the lake directory {}", lake.display()))?;
        let lake = lake.canonicalize()?;
        if wal.starts_with(&lake) {
            bail!(
                "the WAL directory {} is inside the lake {}: give --wal-dir outside it",
                wal.display(),
                lake.display()
            );
        }
    }
    Ok(wal)
}

fn describe_lake(lake: &Lake) -> String {
    match lake {
        Lake::Dir(path) => std::path::absolute(path)
            .unwrap_or_else(|_| path.clone())
            .display()
            .to_string(),
        other => other.to_string(),
    }
}
