//! The `vesper.v1.DataSource` contract over a real gRPC connection: the
//! errors and their codes, defaults and caps, the deliberate faults, the
//! generator controls, and a shutdown that cuts stalls short.

use std::{
    collections::HashSet,
    sync::{Arc, OnceLock},
    time::Duration,
};

use tokio::{net::TcpListener, sync::Notify};
use tonic::Code;
use tracing::{
    field::{Field, Visit},
    span,
};
use tracing_subscriber::{
    layer::{Context, Layer},
    prelude::*,
};
use vesper::grpc::TracedChannel;
use vesper::{
    Shutdown,
    v1::{
        GenerateEventsRequest, GeneratorStatusRequest, ListContentRequest, ListUsersRequest,
        Source, StartGeneratorRequest, StopGeneratorRequest, data_source_client::DataSourceClient,
    },
};
use vesper_datasource::{DataSourceConfig, FaultPolicy, GeneratorConfig};

struct Server {
    client: DataSourceClient<TracedChannel>,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<Result<(), vesper_datasource::DataSourceError>>,
}

async fn serve(faults: FaultPolicy) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let config = DataSourceConfig {
        seed: 42,
        faults,
        generator: GeneratorConfig {
            webhook_url: "http://127.0.0.1:9/webhook/events".parse().expect("url"),
            delay: Duration::from_secs(3600),
            autostart: false,
            ..GeneratorConfig::default()
        },
    };
    let shutdown = Shutdown::new();
    let task = tokio::spawn(vesper_datasource::serve(
        listener,
        config,
        shutdown.signalled(),
    ));
    let peer = addr.to_string().parse().expect("peer");
    Server {
        client: DataSourceClient::new(vesper::grpc::connect_lazy(&peer)),
        shutdown,
        task,
    }
}

impl Server {
    async fn stop(self) {
        self.shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("serve returns")
            .expect("task")
            .expect("served");
    }
}

fn assert_refused(result: Result<impl std::fmt::Debug, tonic::Status>, code: Code, message: &str) {
    let status = result.expect_err("refused");
    assert_eq!((status.code(), status.message()), (code, message));
}

#[tokio::test]
async fn requests_are_checked_with_the_old_messages() {
    let server = serve(FaultPolicy::NONE).await;
    let mut client = server.client.clone();
    for offset in [-1, 10_000] {
        assert_refused(
            client
                .list_users(ListUsersRequest {
                    offset,
                    limit: None,
                })
                .await,
            Code::InvalidArgument,
            "Invalid offset",
        );
    }
    assert_refused(
        client
            .list_users(ListUsersRequest {
                offset: 0,
                limit: Some(0),
            })
            .await,
        Code::InvalidArgument,
        "Invalid limit",
    );
    assert_refused(
        client
            .generate_events(GenerateEventsRequest {
                count: Some(0),
                source: 0,
            })
            .await,
        Code::InvalidArgument,
        "Invalid count",
    );
    assert_refused(
        client
            .generate_events(GenerateEventsRequest {
                count: None,
                source: 99,
            })
            .await,
        Code::InvalidArgument,
        "Invalid source",
    );

    let page = client
        .list_users(ListUsersRequest {
            offset: 100,
            limit: Some(1_000),
        })
        .await
        .expect("page")
        .into_inner();
    assert_eq!((page.count, page.limit, page.next_offset), (200, 200, 300));
    assert_eq!(page.users[0].user_id, "user_101");

    let catalogue = client
        .list_content(ListContentRequest {})
        .await
        .expect("content")
        .into_inner();
    assert_eq!((catalogue.count, catalogue.total_content), (1000, 1000));

    for (count, source, distinct) in [
        (None, Source::Unspecified, 50),
        (Some(1_000), Source::Unspecified, 200),
        (None, Source::Apple, 20),
        (Some(1_000), Source::Apple, 100),
    ] {
        let answer = client
            .generate_events(GenerateEventsRequest {
                count,
                source: source as i32,
            })
            .await
            .expect("events")
            .into_inner();
        let ids: HashSet<_> = answer.events.iter().map(|e| e.event_id.clone()).collect();
        assert_eq!(ids.len(), distinct, "{count:?} {source:?}");
        assert_eq!(answer.total_count as usize, answer.events.len());
        assert!(answer.has_more);
        if source != Source::Unspecified {
            assert!(answer.events.iter().all(|e| e.source == source as i32));
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn unfiltered_events_fail_at_the_fault_rate() {
    let server = serve(FaultPolicy {
        fault_rate: 1.0,
        stall_rate: 0.0,
        stall: Duration::ZERO,
    })
    .await;
    let mut client = server.client.clone();
    assert_refused(
        client
            .generate_events(GenerateEventsRequest::default())
            .await,
        Code::Unavailable,
        "Service temporarily unavailable",
    );
    // Client errors are reported as such even then.
    assert_refused(
        client
            .generate_events(GenerateEventsRequest {
                count: Some(-3),
                source: 0,
            })
            .await,
        Code::InvalidArgument,
        "Invalid count",
    );
    client
        .generate_events(GenerateEventsRequest {
            count: None,
            source: Source::Web as i32,
        })
        .await
        .expect("filtered calls are reliable");
    server.stop().await;
}

/// The count the stalled call asks for, which no other test asks for.
const STALLED_COUNT: i32 = 7;

/// Wakes [`stalled_call_began`]'s waiter when a `generate_events` handler
/// for [`STALLED_COUNT`] events has begun.
struct StalledCallProbe(Arc<Notify>);

impl<S: tracing::Subscriber> Layer<S> for StalledCallProbe {
    fn on_new_span(&self, attrs: &span::Attributes<'_>, _: &span::Id, _: Context<'_, S>) {
        if attrs.metadata().name() != "generate_events" {
            return;
        }
        let mut count = CountField(None);
        attrs.record(&mut count);
        if count.0 == Some(i64::from(STALLED_COUNT)) {
            self.0.notify_one();
        }
    }
}

struct CountField(Option<i64>);

impl Visit for CountField {
    fn record_i64(&mut self, field: &Field, value: i64) {
        if field.name() == "count" {
            self.0 = Some(value);
        }
    }

    fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
}

/// Notified once the stalled call's handler has begun. The subscriber is
/// the process's global one: a scoped one can miss spans of handlers
/// whose callsites other tests' threads registered first.
fn stalled_call_began() -> Arc<Notify> {
    static BEGAN: OnceLock<Arc<Notify>> = OnceLock::new();
    Arc::clone(BEGAN.get_or_init(|| {
        let began = Arc::new(Notify::new());
        tracing::subscriber::set_global_default(
            tracing_subscriber::registry().with(StalledCallProbe(Arc::clone(&began))),
        )
        .expect("no other global subscriber in this test process");
        began
    }))
}

#[tokio::test]
async fn shutdown_cuts_a_stall_short() {
    let began = stalled_call_began();
    let server = serve(FaultPolicy {
        fault_rate: 0.0,
        stall_rate: 1.0,
        stall: Duration::from_secs(3600),
    })
    .await;
    let mut client = server.client.clone();
    // Connect first, so that the stalled call surely reaches the server.
    client
        .list_content(ListContentRequest {})
        .await
        .expect("connected");
    let call = tokio::spawn(async move {
        client
            .generate_events(GenerateEventsRequest {
                count: Some(STALLED_COUNT),
                source: 0,
            })
            .await
    });
    tokio::time::timeout(Duration::from_secs(20), began.notified())
        .await
        .expect("the call reaches the server within 20 s");
    assert!(!call.is_finished());
    server.stop().await;
    let answer = call.await.expect("task").expect("answered, not dropped");
    assert!(answer.into_inner().events.len() >= STALLED_COUNT as usize);
}

#[tokio::test]
async fn the_generator_is_controlled_over_grpc() {
    let server = serve(FaultPolicy::NONE).await;
    let mut client = server.client.clone();
    let status = client
        .generator_status(GeneratorStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert!(!status.running);
    assert_eq!(status.webhook_url, "http://127.0.0.1:9/webhook/events");

    let started = client
        .start_generator(StartGeneratorRequest {})
        .await
        .expect("start")
        .into_inner();
    assert_eq!(started.message, "Event generator started");
    assert!(started.status.expect("status").running);
    let again = client
        .start_generator(StartGeneratorRequest {})
        .await
        .expect("start again")
        .into_inner();
    assert!(again.status.expect("status").running);

    let stopped = client
        .stop_generator(StopGeneratorRequest {})
        .await
        .expect("stop")
        .into_inner();
    assert_eq!(stopped.message, "Event generator stopped");
    assert!(!stopped.status.expect("status").running);
    client
        .stop_generator(StopGeneratorRequest {})
        .await
        .expect("stopping twice is fine");
    server.stop().await;
}
