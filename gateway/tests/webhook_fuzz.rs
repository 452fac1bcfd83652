//! Property tests of the webhook's decoding: whatever bytes arrive (random
//! bytes, deep nesting, huge numbers, invalid UTF-8, arbitrary JSON), the
//! answer is a 4xx, never a panic or a 5xx. The ingest peer is down, so a
//! request that got past validation would show as a 503.

use std::sync::OnceLock;

use axum::{Router, body::Body};
use http::{Request, StatusCode};
use proptest::prelude::*;
use tower::ServiceExt;
use vesper_gateway::GatewayConfig;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    })
}

fn router() -> Router {
    static ROUTER: OnceLock<Router> = OnceLock::new();
    ROUTER
        .get_or_init(|| {
            let _guard = runtime().enter();
            let dead = vesper_tests::unserved_addr().to_string();
            vesper_gateway::router(GatewayConfig::all_peers_at(dead.parse().expect("peer")))
        })
        .clone()
}

fn status_of(body: Vec<u8>) -> StatusCode {
    runtime().block_on(async {
        let request = Request::post("/webhook/events")
            .header("content-type", "application/json")
            .body(Body::from(body))
            .expect("request");
        router()
            .oneshot(request)
            .await
            .expect("infallible")
            .status()
    })
}

fn assert_client_error(body: Vec<u8>) -> Result<(), TestCaseError> {
    let shown = String::from_utf8_lossy(&body)
        .chars()
        .take(200)
        .collect::<String>();
    let status = status_of(body);
    prop_assert!(status.is_client_error(), "{status} for {shown:?}");
    Ok(())
}

/// Arbitrary JSON values, nested a few levels.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        ".{0,12}".prop_map(serde_json::Value::from),
        prop_oneof![
            Just("click"),
            Just("signup"),
            Just("web"),
            Just("2026-11-25T21:04:05Z"),
            Just("0b6f5a4e-2f7e-4a47-9a43-3f4a2f0c9d11"),
        ]
        .prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("event_id".to_owned()),
                    Just("user_id".to_owned()),
                    Just("event_type".to_owned()),
                    Just("properties".to_owned()),
                    "[a-z_]{1,8}",
                ],
                inner,
                0..6
            )
            .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        // A failure prints its minimal input; nothing is written to the tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_bytes_are_a_client_error(body in prop::collection::vec(any::<u8>(), 0..512)) {
        assert_client_error(body)?;
    }

    #[test]
    fn deep_nesting_is_a_client_error(depth in 1_usize..20_000, object in any::<bool>()) {
        let (open, close) = if object { ("{\"events\":", "}") } else { ("[", "]") };
        let body = format!("{}{}", open.repeat(depth), close.repeat(depth));
        assert_client_error(body.into_bytes())?;
    }

    #[test]
    fn huge_numbers_are_a_client_error(
        // Beyond f64: a number that fits is a valid amount, and no error.
        digits in "[1-9][0-9]{309,1200}",
        exponent in 309_u32..100_000,
        field in prop_oneof![Just("event_id"), Just("timestamp"), Just("amount"), Just("age")],
    ) {
        let huge = [digits.clone(), format!("1e{exponent}"), format!("-{digits}.5e{exponent}")];
        for number in huge {
            let body = format!(
                r#"{{"events":[{{"event_id":"0b6f5a4e-2f7e-4a47-9a43-3f4a2f0c9d11","user_id":"u","event_type":"purchase","source":"web","timestamp":"2026-11-25T21:04:05Z","properties":{{"amount":1,"product_id":"p","{field}":{number}}},"{field}":{number}}}]}}"#
            );
            assert_client_error(body.into_bytes())?;
        }
    }

    #[test]
    fn invalid_utf8_is_a_client_error(
        bad in prop::collection::vec(0x80_u8..=0xff, 1..8),
        at in 0_usize..6,
    ) {
        let mut body = br#"{"events":[{"event_id":""#.to_vec();
        let tail = br#"","user_id":"u","event_type":"click","source":"web","timestamp":"2026-11-25T21:04:05Z","properties":{}}]}"#;
        body.extend_from_slice(&b"abcdef"[..at]);
        body.extend_from_slice(&bad);
        body.extend_from_slice(tail);
        assert_client_error(body)?;
    }

    #[test]
    fn arbitrary_json_events_are_a_client_error(
        events in prop::collection::vec(json_value(), 1..4),
    ) {
        let body = serde_json::json!({ "events": events }).to_string();
        assert_client_error(body.into_bytes())?;
    }
}
