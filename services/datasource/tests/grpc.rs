//! The `vesper.v1.DataSource` contract over a real gRPC connection: the
//! errors and their codes, defaults and caps, the deliberate faults, the
//! generator controls, and a shutdown that cuts stalls short.

use std::{collections::HashSet, sync::Arc, time::Duration};

use tokio::{net::TcpListener, sync::Notify};
use tonic::Code;
use tracing::span;
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

/// Wakes a waiter each time a span named `name` opens: the observable
/// sign that a handler instrumented with it has begun.
struct SpanOpened {
    name: &'static str,
    opened: Arc<Notify>,
}

impl<S: tracing::Subscriber> Layer<S> for SpanOpened {
    fn on_new_span(&self, attrs: &span::Attributes<'_>, _: &span::Id, _: Context<'_, S>) {
        if attrs.metadata().name() == self.name {
            self.opened.notify_one();
        }
    }
}

// One thread: the handler runs where the test's subscriber is in force.
#[tokio::test(flavor = "current_thread")]
async fn shutdown_cuts_a_stall_short() {
    let opened = Arc::new(Notify::new());
    let _subscriber =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(SpanOpened {
            name: "generate_events",
            opened: Arc::clone(&opened),
        }));
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
                count: Some(2),
                source: 0,
            })
            .await
    });
    // The handler has begun, and on this one thread it yields only at
    // its stall.
    tokio::time::timeout(Duration::from_secs(20), opened.notified())
        .await
        .expect("the call reaches the server within 20 s");
    assert!(!call.is_finished());
    server.stop().await;
    let answer = call.await.expect("task").expect("answered, not dropped");
    assert!(answer.into_inner().events.len() >= 2);
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
