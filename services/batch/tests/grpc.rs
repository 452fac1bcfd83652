//! `vesper.v1.BatchPipeline` through a real tonic client.

mod support;

use std::sync::Arc;

use support::Lake;
use tonic::Code;
use vesper::{
    Shutdown,
    config::PeerAddr,
    v1::{ListPipelinesRequest, RunRequest, RunStatus, batch_pipeline_client::BatchPipelineClient},
};
use vesper_batch::Pipelines;
use vesper_tests::{EventFaults, UpstreamReplica};

struct Service {
    client: BatchPipelineClient<vesper::grpc::TracedChannel>,
    shutdown: Shutdown,
}

impl Drop for Service {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

async fn start(lake: &Lake, upstream: &UpstreamReplica) -> Service {
    let pipelines = Pipelines::builtin()
        .expect("built-in")
        .with_source_url(&upstream.base_url())
        .expect("URL");
    let engine = Arc::new(lake.engine_for(pipelines));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let peer: PeerAddr = listener
        .local_addr()
        .expect("address")
        .to_string()
        .parse()
        .expect("peer");
    let shutdown = Shutdown::new();
    tokio::spawn(vesper_batch::serve(listener, engine, shutdown.clone()));
    Service {
        client: BatchPipelineClient::new(vesper::grpc::connect_lazy(&peer)),
        shutdown,
    }
}

#[tokio::test]
async fn list_answers_the_declared_pipelines_in_order() {
    let upstream = UpstreamReplica::with_faults(EventFaults::NONE);
    let lake = Lake::start().await;
    let mut service = start(&lake, &upstream).await;
    let pipelines = service
        .client
        .list(ListPipelinesRequest {})
        .await
        .expect("list")
        .into_inner()
        .pipelines;
    let names: Vec<_> = pipelines.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["users", "content", "events"]);
    let users = &pipelines[0];
    assert_eq!(
        users.url,
        format!("{}users?offset=0&limit=200", upstream.base_url())
    );
    assert_eq!(users.pagination, "offset (limit 200)");
    assert_eq!(users.prefix, "users/");
    assert_eq!(users.stop, "");
    assert_eq!(pipelines[2].prefix, "api_events/");
    assert_eq!(pipelines[2].stop, "max 10 pages");
}

#[tokio::test]
async fn run_answers_one_report_per_pipeline_in_the_requested_order() {
    let upstream = UpstreamReplica::with_faults(EventFaults::NONE);
    let lake = Lake::start().await;
    let mut service = start(&lake, &upstream).await;
    let reports = service
        .client
        .run(RunRequest {
            pipelines: vec!["content".into(), "users".into()],
        })
        .await
        .expect("run")
        .into_inner()
        .reports;
    let names: Vec<_> = reports.iter().map(|r| r.pipeline.as_str()).collect();
    assert_eq!(names, ["content", "users"]);
    for report in &reports {
        assert_eq!(report.status(), RunStatus::Succeeded, "{}", report.error);
        assert!(report.error.is_empty());
        assert!(report.manifest_key.ends_with("/_manifest.json"));
        assert!(report.started_at.is_some() && report.finished_at.is_some());
        assert!(report.duration.is_some());
        assert!(report.records_per_second > 0.0);
        assert_eq!(
            report.bytes,
            report.parts.iter().map(|p| p.bytes).sum::<u64>()
        );
    }
    assert_eq!(reports[0].records, 1_000);
    assert_eq!(reports[1].records, 10_000);
    assert_eq!(reports[1].pages, 50);
    assert_eq!(reports[1].parts.len(), 2);
    let latest = lake.latest("users/").await.expect("manifest");
    assert_eq!(latest.run_id, reports[1].run_id);
}

#[tokio::test]
async fn run_refuses_unknown_names_before_running_anything() {
    let upstream = UpstreamReplica::with_faults(EventFaults::NONE);
    let lake = Lake::start().await;
    let mut service = start(&lake, &upstream).await;
    let status = service
        .client
        .run(RunRequest {
            pipelines: vec!["users".into(), "sessions".into()],
        })
        .await
        .expect_err("an unknown name");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "unknown pipeline \"sessions\"; declared: users, content, events"
    );
    assert_eq!(upstream.calls("/api/users"), 0);
}
