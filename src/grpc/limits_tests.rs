//! The bounds of every gRPC server, driven through a real server on
//! loopback.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::sync::Notify;
use tonic::{Code, Request, Response, Status, transport::Channel};

use super::*;
use crate::{
    Shutdown,
    v1::{
        Event, FlushRequest, FlushResponse, IngestRequest, IngestResponse, StatsRequest,
        StatsResponse,
        event_ingest_client::EventIngestClient,
        event_ingest_server::{EventIngest, EventIngestServer},
    },
};

/// An EventIngest whose `Stats` and `Ingest` never answer (they note that
/// they started), and whose `Flush` answers at once.
#[derive(Debug, Clone, Default)]
struct Stalling {
    entered: Arc<Notify>,
}

#[tonic::async_trait]
impl EventIngest for Stalling {
    async fn ingest(
        &self,
        _request: Request<IngestRequest>,
    ) -> Result<Response<IngestResponse>, Status> {
        self.entered.notify_one();
        std::future::pending().await
    }

    async fn flush(
        &self,
        _request: Request<FlushRequest>,
    ) -> Result<Response<FlushResponse>, Status> {
        Ok(Response::new(FlushResponse::default()))
    }

    async fn stats(
        &self,
        _request: Request<StatsRequest>,
    ) -> Result<Response<StatsResponse>, Status> {
        self.entered.notify_one();
        std::future::pending().await
    }
}

struct Server {
    addr: SocketAddr,
    stalling: Stalling,
    stop: Shutdown,
}

impl Server {
    async fn start(limits: GrpcLimits) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stalling = Stalling::default();
        let stop = Shutdown::new();
        let served = GrpcServices::new()
            .limits(limits)
            .with(EventIngestServer::new(stalling.clone()).max_decoding_message_size(8 << 20))
            .serve(listener, stop.signalled());
        tokio::spawn(served);
        Self {
            addr,
            stalling,
            stop,
        }
    }

    async fn channel(&self) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.addr))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect")
    }

    async fn client(&self) -> EventIngestClient<Channel> {
        EventIngestClient::new(self.channel().await).max_encoding_message_size(8 << 20)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.trigger();
    }
}

fn limits() -> GrpcLimits {
    GrpcLimits {
        grpc_call_timeout: Duration::from_secs(3600),
        ..GrpcLimits::default()
    }
}

fn batch_of(bytes: usize) -> IngestRequest {
    IngestRequest {
        events: vec![Event {
            event_id: "x".repeat(bytes),
            ..Event::default()
        }],
    }
}

#[tokio::test]
async fn a_call_past_its_time_limit_gets_deadline_exceeded() {
    let server = Server::start(GrpcLimits {
        grpc_call_timeout: Duration::from_millis(200),
        ..GrpcLimits::default()
    })
    .await;
    let mut client = server.client().await;
    let status = client.stats(StatsRequest {}).await.expect_err("stalls");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().contains("--grpc-call-timeout"),
        "{status:?}"
    );
    // The long calls are not held to the short limit.
    client.flush(FlushRequest {}).await.expect("flush");
}

#[test]
fn long_calls_get_the_long_limit() {
    let limits = GrpcLimits::default();
    assert_eq!(
        limits.timeout_of("vesper.v1.BatchPipeline/Run"),
        DEFAULT_LONG_CALL_TIMEOUT
    );
    assert_eq!(
        limits.timeout_of("vesper.v1.EventIngest/Flush"),
        DEFAULT_LONG_CALL_TIMEOUT
    );
    assert_eq!(
        limits.timeout_of("vesper.v1.Storage/PutObject"),
        DEFAULT_CALL_TIMEOUT
    );
}

#[tokio::test]
async fn calls_past_the_in_flight_limit_are_shed() {
    let server = Server::start(GrpcLimits {
        grpc_max_in_flight_calls: 1,
        ..limits()
    })
    .await;
    let entered = server.stalling.entered.notified();
    let mut first = server.client().await;
    let holding = tokio::spawn(async move { first.stats(StatsRequest {}).await });
    entered.await;
    let mut second = server.client().await;
    let entered = server.stalling.entered.notified();
    let status = tokio::select! {
        answer = second.stats(StatsRequest {}) => answer.expect_err("shed"),
        () = entered => panic!("a call past the limit reached the handler"),
    };
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("--grpc-max-in-flight-calls"),
        "{status:?}"
    );
    assert_eq!(
        status
            .metadata()
            .get(RETRY_AFTER_METADATA)
            .and_then(|value| value.to_str().ok()),
        Some("1")
    );
    // Health checks are not shed.
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health answers under load");
    holding.abort();
}

#[tokio::test]
async fn request_bytes_in_flight_are_capped_per_port() {
    let server = Server::start(GrpcLimits {
        grpc_max_in_flight_bytes: ByteSize::mib(1),
        ..limits()
    })
    .await;
    let mut client = server.client().await;
    let entered = server.stalling.entered.notified();
    let status = tokio::select! {
        answer = client.ingest(batch_of(1536 * 1024)) => answer.expect_err("over the budget alone"),
        () = entered => panic!("a call over the budget reached the handler"),
    };
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("--grpc-max-in-flight-bytes"),
        "{status:?}"
    );

    // A call within the budget holds its bytes while it runs, so a second
    // one that would go past it is refused ...
    let entered = server.stalling.entered.notified();
    let mut first = server.client().await;
    let mut holding = tokio::spawn(async move { first.ingest(batch_of(700 * 1024)).await });
    tokio::select! {
        () = entered => {}
        answer = &mut holding => panic!("refused within the budget: {answer:?}"),
    }
    let entered = server.stalling.entered.notified();
    let status = tokio::select! {
        answer = client.ingest(batch_of(700 * 1024)) => answer.expect_err("the budget is taken"),
        () = entered => panic!("a call past the budget reached the handler"),
    };
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    // ... and the bytes come back when the call is over.
    holding.abort();
    let _ = holding.await;
    let entered = server.stalling.entered.notified();
    let mut third = server.client().await;
    let mut again = tokio::spawn(async move { third.ingest(batch_of(700 * 1024)).await });
    tokio::select! {
        () = entered => again.abort(),
        answer = &mut again => panic!("refused after the budget came back: {answer:?}"),
    }
}

#[tokio::test]
async fn random_paths_share_one_metric_label() {
    let handle = crate::metrics::install();
    let server = Server::start(limits()).await;
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    for n in 0..100 {
        grpc.ready().await.expect("ready");
        let path = http::uri::PathAndQuery::try_from(format!("/random{n}.Service/Method{n}"))
            .expect("path");
        let answer: Result<Response<FlushResponse>, Status> = grpc
            .unary(
                Request::new(FlushRequest {}),
                path,
                tonic_prost::ProstCodec::default(),
            )
            .await;
        assert_eq!(
            answer.expect_err("no such method").code(),
            Code::Unimplemented
        );
    }
    let rendered = handle.render();
    let series: Vec<&str> = rendered
        .lines()
        .filter(|line| line.starts_with("vesper_grpc_requests_total{"))
        .collect();
    assert!(!series.is_empty(), "{rendered}");
    assert!(
        series.iter().all(|line| !line.contains("random")),
        "{series:#?}"
    );
    assert!(
        series
            .iter()
            .any(|line| line.contains(r#"rpc="unknown""#) && line.ends_with(" 100")),
        "{series:#?}"
    );
}

#[test]
fn the_known_rpcs_are_the_served_ones_and_the_built_in_ones() {
    let known = known_rpcs(&["vesper.v1.Storage"]);
    assert!(known.contains("vesper.v1.Storage/PutObject"));
    assert!(known.contains("grpc.health.v1.Health/Check"));
    assert!(
        !known.contains("vesper.v1.EventIngest/Ingest"),
        "not served"
    );
}
