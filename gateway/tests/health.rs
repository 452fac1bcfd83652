//! The gateway starts and answers while its peers are down.

use std::time::Duration;

use vesper::config::PeerAddr;
use vesper_gateway::{GatewayConfig, REQUEST_ID_HEADER};

/// A peer that is down.
fn dead_peer() -> PeerAddr {
    vesper_tests::unserved_addr()
        .to_string()
        .parse()
        .expect("peer")
}

#[tokio::test]
async fn health_is_degraded_not_failed_when_peers_are_down() {
    let config = GatewayConfig::all_peers_at(dead_peer());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = vesper::Shutdown::new();
    let server = tokio::spawn(vesper_gateway::serve(
        listener,
        vesper_gateway::router(config),
        shutdown.signalled(),
    ));

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let response = client
        .get(format!("http://{addr}/health"))
        .send()
        .await
        .expect("health answers");
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key(REQUEST_ID_HEADER));
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["status"], "degraded");
    assert_eq!(
        body["unavailable"],
        serde_json::json!(["datasource", "ingest"])
    );

    let echoed = client
        .get(format!("http://{addr}/health"))
        .header(REQUEST_ID_HEADER, "trace-me-42")
        .send()
        .await
        .expect("health answers");
    assert_eq!(echoed.headers()[REQUEST_ID_HEADER], "trace-me-42");

    shutdown.trigger();
    server.await.expect("task").expect("server");
}
