//! The gateway's bounds against slow, greedy and cross-site clients,
//! driven over real HTTP on loopback.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use vesper::{Shutdown, config::PeerAddr};
use vesper_gateway::GatewayConfig;

/// The longest any step here may take before the test gives up; a guard
/// against hanging, never what a test decides on.
const GUARD: Duration = Duration::from_secs(20);

/// A peer that is down.
fn dead_peer() -> PeerAddr {
    vesper_tests::unserved_addr()
        .to_string()
        .parse()
        .expect("peer")
}

struct Gateway {
    addr: std::net::SocketAddr,
    stop: Shutdown,
}

impl Gateway {
    async fn start(config: GatewayConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = Shutdown::new();
        let limits = config.server.clone();
        let signal = stop.signalled();
        tokio::spawn(async move {
            vesper_gateway::serve_with(listener, vesper_gateway::router(config), &limits, signal)
                .await
        });
        Self { addr, stop }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop.trigger();
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(GUARD)
        .build()
        .expect("client")
}

/// Reads until the server closes the connection; the time it took.
async fn time_until_closed(stream: &mut TcpStream) -> Duration {
    let started = Instant::now();
    let mut sink = Vec::new();
    tokio::time::timeout(GUARD, stream.read_to_end(&mut sink))
        .await
        .expect("the server closed the connection")
        .ok();
    started.elapsed()
}

#[tokio::test]
async fn a_half_sent_header_loses_its_connection_after_the_header_timeout() {
    let mut config = GatewayConfig::all_peers_at(dead_peer());
    config.server.header_read_timeout = Duration::from_millis(300);
    config.server.idle_timeout = Duration::from_secs(3600);
    let gateway = Gateway::start(config).await;

    // Enough bytes for the server to know it is HTTP/1.1, then silence.
    let mut half = TcpStream::connect(gateway.addr).await.expect("connect");
    half.write_all(b"GET /health HTTP/1.1\r\nHost: gateway\r\nX-Slow: 1\r\n")
        .await
        .expect("write");
    let waited = time_until_closed(&mut half).await;
    assert!(
        waited >= Duration::from_millis(250),
        "closed after {waited:?}"
    );

    // Fewer bytes than tell HTTP/1.1 from HTTP/2, then silence.
    let mut barely = TcpStream::connect(gateway.addr).await.expect("connect");
    barely.write_all(b"GE").await.expect("write");
    let waited = time_until_closed(&mut barely).await;
    assert!(
        waited >= Duration::from_millis(250),
        "closed after {waited:?}"
    );

    // A connection that sends nothing at all.
    let mut silent = TcpStream::connect(gateway.addr).await.expect("connect");
    time_until_closed(&mut silent).await;

    // A whole request still gets its answer.
    let response = client()
        .get(gateway.url("/metrics"))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_stalled_body_gets_408_naming_the_flag() {
    let mut config = GatewayConfig::all_peers_at(dead_peer());
    config.body_read_timeout = Duration::from_millis(300);
    let gateway = Gateway::start(config).await;
    let mut stream = TcpStream::connect(gateway.addr).await.expect("connect");
    stream
        .write_all(
            b"POST /webhook/events HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"events\":",
        )
        .await
        .expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(GUARD, stream.read_to_end(&mut answer))
        .await
        .expect("an answer")
        .ok();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("--body-read-timeout"), "{answer}");
}

#[tokio::test]
async fn requests_past_the_in_flight_limit_get_503_with_retry_after() {
    // A peer that accepts connections and never answers: a request to it
    // stays in flight.
    let silent = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let silent_addr: PeerAddr = silent
        .local_addr()
        .expect("addr")
        .to_string()
        .parse()
        .expect("peer");
    let mut config = GatewayConfig::all_peers_at(silent_addr);
    config.max_in_flight_requests = 1;
    let gateway = Gateway::start(config).await;

    let first = tokio::spawn(client().get(gateway.url("/api/content")).send());
    // The first request is in flight once it reaches the peer.
    let (_held, _) = tokio::time::timeout(GUARD, silent.accept())
        .await
        .expect("the first request reaches the peer")
        .expect("accept");

    let response = client()
        .post(gateway.url("/webhook/events"))
        .body(r#"{"events":[]}"#)
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.expect("json");
    let error = body["error"].as_str().expect("error");
    assert!(error.contains("--max-in-flight-requests"), "{error}");
    assert!(error.contains("limit of 1 "), "{error}");
    first.abort();
}

#[tokio::test]
async fn cross_site_posts_are_refused_and_other_clients_are_not() {
    let mut config = GatewayConfig::all_peers_at(dead_peer());
    config.allowed_origins = vec!["https://dashboard.example".parse().expect("origin")];
    let gateway = Gateway::start(config).await;
    let client = client();

    for (path, header, value) in [
        ("/stop-generator", "sec-fetch-site", "cross-site"),
        ("/start-generator", "origin", "https://evil.example"),
        ("/webhook/events", "origin", "https://evil.example"),
        ("/webhook/events", "sec-fetch-site", "same-site"),
    ] {
        let response = client
            .post(gateway.url(path))
            .header(header, value)
            .body(r#"{"events":[]}"#)
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status(), 403, "{path} {header}: {value}");
        let body: Value = response.json().await.expect("json");
        let error = body["error"].as_str().expect("error");
        assert!(error.contains("cross-site"), "{error}");
        assert!(error.contains("--allowed-origins"), "{error}");
    }

    // No Content-Type and no Origin (an old client, curl): not refused.
    let old_client = client
        .post(gateway.url("/webhook/events"))
        .body(r#"{"events":[]}"#)
        .send()
        .await
        .expect("answer");
    assert_eq!(old_client.status(), 200, "an empty batch needs no peer");

    // The gateway's own origin, and an allowed one, pass.
    let own = format!("http://{}", gateway.addr);
    for origin in [own.as_str(), "https://dashboard.example"] {
        let response = client
            .post(gateway.url("/webhook/events"))
            .header("origin", origin)
            .header("content-type", "application/json")
            .body(r#"{"events":[]}"#)
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status(), 200, "{origin}");
    }

    // Reading is not state-changing: a cross-site GET is not refused here.
    let read = client
        .get(gateway.url("/metrics"))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .expect("answer");
    assert_eq!(read.status(), 200);
}

#[tokio::test]
async fn random_methods_do_not_create_metric_series() {
    let gateway = Gateway::start(GatewayConfig::all_peers_at(dead_peer())).await;
    let client = client();
    for n in 0..100 {
        let method = reqwest::Method::from_bytes(format!("RANDOM{n}").as_bytes()).expect("method");
        client
            .request(method, gateway.url("/health"))
            .send()
            .await
            .expect("answer");
        client
            .get(gateway.url(&format!("/random/path/{n}")))
            .send()
            .await
            .expect("answer");
    }
    let metrics = client
        .get(gateway.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let series: Vec<&str> = metrics
        .lines()
        .filter(|line| line.starts_with("vesper_http_requests_total{"))
        .collect();
    assert!(
        series
            .iter()
            .all(|line| !line.contains("RANDOM") && !line.contains("/random/")),
        "{series:#?}"
    );
    assert!(
        series
            .iter()
            .any(|line| line.contains(r#"method="OTHER""#) && line.contains(r#"route="/health""#)),
        "{series:#?}"
    );
    assert!(series.len() < 20, "{series:#?}");
}
