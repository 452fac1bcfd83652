//! Signed webhooks through the whole path: the right signature is
//! accepted; a wrong, missing, malformed or stale one is a 401 and nothing
//! is stored.

mod kit;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kit::{http_client, ingest_config, spawn_gateway, spawn_ingest, spawn_storage};
use serde_json::{Value, json};
use vesper::v1::StatsRequest;
use vesper_gateway::{
    GatewayConfig, SIGNATURE_HEADER, WebhookSecret, WebhookSigning, sign_webhook,
};
use vesper_tests::{event_id, upstream_event};

const SECRET: &[u8] = b"correct horse battery staple";

/// The gateway's tolerance in this test.
const TOLERANCE_SECS: i64 = 300;

/// A signature this far from now is stale whatever the clock does during
/// the test.
const STALE_SECS: i64 = TOLERANCE_SECS + 30;

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

#[tokio::test]
async fn only_correctly_signed_fresh_webhooks_are_accepted() {
    let lake = tempfile::tempdir().expect("lake");
    let wal = tempfile::tempdir().expect("wal");
    let storage = spawn_storage(lake.path()).await;
    let ingest = spawn_ingest(ingest_config(wal.path()), &storage.peer()).await;
    let signing = WebhookSigning {
        secret: WebhookSecret::new(SECRET).expect("secret"),
        tolerance: Duration::from_secs(TOLERANCE_SECS.unsigned_abs()),
    };
    let mut config = GatewayConfig::all_peers_at(ingest.peer());
    config.webhook_signing = Some(signing);
    let gateway = spawn_gateway(config).await;
    let http = http_client();
    let body =
        json!({"events": [upstream_event(&event_id(6, 1), "click", "2026-11-25T10:00:00Z")]})
            .to_string();
    let post = |signature: Option<String>| {
        let mut request = http
            .post(gateway.url("/webhook/events"))
            .header("content-type", "application/json")
            .body(body.clone());
        if let Some(signature) = signature {
            request = request.header(SIGNATURE_HEADER, signature);
        }
        async move {
            let response = request.send().await.expect("answer");
            let status = response.status().as_u16();
            let body: Value = response.json().await.expect("json");
            (
                status,
                body["error"].as_str().unwrap_or_default().to_owned(),
            )
        }
    };

    let refusals = [
        (None, "missing"),
        (Some("t=abc,v1=00".to_owned()), "malformed"),
        (
            Some(sign_webhook(b"another secret", now(), body.as_bytes())),
            "wrong",
        ),
        (
            Some(sign_webhook(SECRET, now(), b"{\"events\":[]}")),
            "wrong",
        ),
        // Past the tolerance by more than the seconds the clock can tick
        // between signing here and checking there (at +301 s, one tick
        // brought a signature back within it).
        (
            Some(sign_webhook(SECRET, now() - STALE_SECS, body.as_bytes())),
            "stale",
        ),
        (
            Some(sign_webhook(SECRET, now() + STALE_SECS, body.as_bytes())),
            "stale",
        ),
    ];
    for (signature, why) in refusals {
        let (status, error) = post(signature.clone()).await;
        assert_eq!(status, 401, "{signature:?}");
        assert!(error.starts_with(why), "{signature:?}: {error}");
    }
    let stats = ingest
        .client()
        .stats(StatsRequest {})
        .await
        .expect("stats")
        .into_inner();
    assert_eq!(stats.accepted, 0, "nothing of a refused call is stored");

    let (status, error) = post(Some(sign_webhook(SECRET, now(), body.as_bytes()))).await;
    assert_eq!((status, error.as_str()), (200, ""));
    gateway.stop().await;
    ingest.stop().await;
    storage.stop().await;
}
