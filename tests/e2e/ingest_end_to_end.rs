//! The event path end to end, in process: gateway -> EventIngest ->
//! Storage -> a directory lake.

mod kit;

use std::{collections::BTreeSet, time::Duration};

use kit::{get_json, http_client, ingest_config, spawn_gateway, spawn_ingest, spawn_storage};
use serde_json::{Value, json};
use vesper::v1::{Event, FlushRequest, IngestRequest, StatsRequest};
use vesper_gateway::GatewayConfig;
use vesper_tests::{event_id, eventually, lake_event_ids, lake_records, upstream_event};

#[tokio::test]
async fn accepted_events_land_once_in_the_partition_of_their_own_hour() {
    let lake = tempfile::tempdir().expect("lake");
    let wal = tempfile::tempdir().expect("wal");
    let storage = spawn_storage(lake.path()).await;
    let config = vesper_ingest::IngestConfig {
        batch_size: 4,
        max_batch_age: Duration::from_secs(3600),
        ..ingest_config(wal.path())
    };
    let ingest = spawn_ingest(config, &storage.peer()).await;
    let gateway = spawn_gateway(GatewayConfig::all_peers_at(ingest.peer())).await;
    let http = http_client();

    let hour_a = "2026-11-25T21:04:05Z";
    let hour_b = "2026-11-25T22:59:59+01:00"; // 21:59:59 UTC: still hour 21
    let hour_c = "2026-11-26T00:00:00Z";
    let mut plain_user = upstream_event(&event_id(1, 7), "click", hour_c);
    plain_user["user_id"] = json!("user_7");
    plain_user["properties"] = json!({"screen": "home", "depth": 3});
    let batches = [
        json!({"events": [
            upstream_event(&event_id(1, 1), "view", hour_a),
            upstream_event(&event_id(1, 2), "purchase", hour_a),
            upstream_event(&event_id(1, 2), "purchase", hour_a),
            upstream_event(&event_id(1, 3), "signup", hour_a),
            upstream_event(&event_id(1, 4), "pray", hour_b),
            upstream_event(&event_id(1, 5), "like", "2026-11-25T23:30:00Z"),
        ]}),
        json!({"events": [
            upstream_event(&event_id(1, 1), "view", hour_a),
            upstream_event(&event_id(1, 5), "like", "2026-11-25T23:30:00Z"),
            plain_user,
        ]}),
    ];
    let expected_answers = [(4, 1, 1), (1, 0, 2)];
    for (batch, (accepted, filtered, duplicates)) in batches.iter().zip(expected_answers) {
        // No content type at all: old clients send none.
        let response = http
            .post(gateway.url("/webhook/events"))
            .body(batch.to_string())
            .send()
            .await
            .expect("webhook answers");
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.expect("json");
        assert_eq!(
            body,
            json!({"status": "success", "accepted": accepted, "filtered": filtered, "duplicates": duplicates})
        );
    }

    // A batch with one invalid event is refused whole.
    let mut bad = upstream_event(&event_id(1, 9), "view", "yesterday");
    bad["properties"]["media_type"] = json!("hologram");
    let refused = http
        .post(gateway.url("/webhook/events"))
        .json(&json!({"events": [upstream_event(&event_id(1, 8), "click", hour_a), bad]}))
        .send()
        .await
        .expect("webhook answers");
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["error"], "Invalid payload");
    let details: Vec<&str> = body["details"]
        .as_array()
        .expect("details")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        details.contains(&"events[1].timestamp: not an RFC 3339 date-time"),
        "{details:?}"
    );
    assert!(
        details
            .iter()
            .any(|d| d.starts_with("events[1].properties.media_type: unknown value \"hologram\"")),
        "{details:?}"
    );

    // gRPC callers get the same rules, with index, field and reason.
    let mut client = ingest.client();
    let invalid = client
        .ingest(IngestRequest {
            events: vec![Event {
                event_id: "not-a-uuid".into(),
                ..Event::default()
            }],
        })
        .await
        .expect("ingest answers")
        .into_inner();
    assert_eq!(invalid.accepted, 0);
    let error = &invalid.errors[0];
    assert_eq!(
        (error.index, error.field.as_str()),
        (0, "events[0].event_id")
    );
    assert_eq!(error.reason, "\"not-a-uuid\" is not a UUID");

    let flushed = client
        .flush(FlushRequest {})
        .await
        .expect("flush")
        .into_inner();
    assert_eq!(flushed.events_written, 5);

    let objects = lake_records(lake.path(), "events");
    assert_eq!(
        objects.keys().cloned().collect::<BTreeSet<_>>(),
        flushed.keys.iter().cloned().collect::<BTreeSet<_>>()
    );
    let mut seen = BTreeSet::new();
    for (key, lines) in &objects {
        assert!(
            key.ends_with(&format!("-{}.ndjson", ingest.engine.wal_id())),
            "{key}"
        );
        for line in lines {
            let id = line["event_id"].as_str().expect("id").to_owned();
            assert!(seen.insert(id.clone()), "{id} is in the lake twice");
            let timestamp = vesper::wire::parse_timestamp(line["timestamp"].as_str().expect("ts"))
                .expect("RFC 3339");
            let partition = vesper_ingest::lake::Partition::of(&timestamp).expect("partition");
            assert!(
                key.starts_with(&format!("events/{partition}/")),
                "{key} holds {line}"
            );
        }
    }
    let expected: BTreeSet<String> = [1, 2, 4, 5, 7].map(|n| event_id(1, n)).into();
    assert_eq!(seen, expected, "accepted minus signups minus duplicates");

    // The record shape, field order included.
    let purchase = objects
        .values()
        .flatten()
        .find(|line| line["event_id"] == event_id(1, 2))
        .expect("the purchase");
    let fields: Vec<&str> = purchase
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        fields,
        [
            "event_id",
            "user_id",
            "event_type",
            "source",
            "timestamp",
            "properties",
            "user",
            "received_at"
        ]
    );
    assert_eq!(purchase["user_id"], "user_42");
    assert_eq!(purchase["user"]["country"], "BR");
    assert_eq!(
        purchase["properties"],
        json!({"amount": 12.5, "product_id": "prod_3"})
    );
    assert_eq!(purchase["timestamp"], "2026-11-25T21:04:05Z");
    let received_at = purchase["received_at"].as_str().expect("received_at");
    assert!(
        received_at.ends_with('Z') && received_at.contains('.'),
        "{received_at}"
    );
    let plain = objects
        .values()
        .flatten()
        .find(|line| line["event_id"] == event_id(1, 7))
        .expect("the plain-user click");
    assert_eq!(plain["user_id"], "user_7");
    assert!(plain.get("user").is_none());
    assert_eq!(plain["properties"], json!({"depth": 3, "screen": "home"}));
    assert!(
        objects
            .keys()
            .any(|key| key.starts_with("events/dt=2026-11-26/hour=00/"))
    );

    let stats = client
        .stats(StatsRequest {})
        .await
        .expect("stats")
        .into_inner();
    assert_eq!(
        (
            stats.accepted,
            stats.filtered,
            stats.duplicates,
            stats.rejected
        ),
        (5, 1, 3, 1)
    );
    assert_eq!((stats.flushed_events, stats.buffered_events), (5, 0));
    assert!(stats.storage_healthy);

    let health = get_json(&gateway.url("/health")).await;
    assert_eq!(health["accepted"], 5);
    assert_eq!(health["batch_size"], 4);

    ingest.stop().await;
    storage.stop().await;
}

#[tokio::test]
async fn batches_flush_at_their_size_and_at_their_age() {
    let lake = tempfile::tempdir().expect("lake");
    let wal = tempfile::tempdir().expect("wal");
    let storage = spawn_storage(lake.path()).await;
    let config = vesper_ingest::IngestConfig {
        batch_size: 3,
        max_batch_age: Duration::from_millis(400),
        ..ingest_config(wal.path())
    };
    let ingest = spawn_ingest(config, &storage.peer()).await;
    let gateway = spawn_gateway(GatewayConfig::all_peers_at(ingest.peer())).await;
    let http = http_client();
    let send = |ids: Vec<u32>| {
        let body = json!({"events": ids
            .iter()
            .map(|n| upstream_event(&event_id(2, *n), "click", "2026-11-25T08:00:00Z"))
            .collect::<Vec<_>>()});
        let request = http.post(gateway.url("/webhook/events")).json(&body).send();
        async move { assert_eq!(request.await.expect("webhook").status(), 200) }
    };

    send(vec![1, 2, 3]).await;
    eventually(
        "a full batch to be written at once",
        Duration::from_secs(2),
        async || lake_event_ids(lake.path()).len() == 3,
    )
    .await;
    send(vec![4]).await;
    assert_eq!(
        lake_event_ids(lake.path()).len(),
        3,
        "a lone event waits for its batch"
    );
    eventually(
        "an old batch to be written however small",
        Duration::from_secs(5),
        async || lake_event_ids(lake.path()).len() == 4,
    )
    .await;
    ingest.stop().await;
    storage.stop().await;
}

#[tokio::test]
async fn the_webhook_refuses_bad_requests_with_the_right_status() {
    let wal = tempfile::tempdir().expect("wal");
    let lake = tempfile::tempdir().expect("lake");
    let storage = spawn_storage(lake.path()).await;
    let ingest = spawn_ingest(ingest_config(wal.path()), &storage.peer()).await;
    let mut config = GatewayConfig::all_peers_at(ingest.peer());
    config.body_limit = vesper::config::ByteSize(2048);
    let gateway = spawn_gateway(config).await;
    let url = gateway.url("/webhook/events");
    let http = http_client();

    let big = json!({"events": [], "pad": "x".repeat(4096)}).to_string();
    let response = http.post(&url).body(big).send().await.expect("answer");
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"], "request body is over the 2048-byte limit");

    let response = http
        .post(&url)
        .header("content-type", "text/plain")
        .body("{\"events\":[]}")
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 415);

    let response = http
        .post(&url)
        .header("content-type", "application/json; charset=utf-8")
        .body("{\"events\": [\n  {\"event_id\": }")
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    let detail = body["details"][0].as_str().expect("detail");
    assert!(
        detail.starts_with("body: ") && detail.contains("line 2 column"),
        "{detail}"
    );

    let response = http
        .post(&url)
        .json(&json!({"events": "no"}))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    assert_eq!(
        body["details"],
        json!(["events: expected an array, got a string"])
    );

    let response = http
        .post(&url)
        .json(&json!({"events": []}))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 200);

    gateway.stop().await;
    ingest.stop().await;
    storage.stop().await;
}
