//! `GET /health`: both old health shapes at once, filled from whatever
//! peers answer.

use std::time::Duration;

use axum::{Json, extract::State};
use serde_json::{Map, Value, json};
use vesper::v1::{GeneratorStatusRequest, StatsRequest};

use crate::AppState;

/// How long health waits for a peer before reporting it unavailable.
const PEER_TIMEOUT: Duration = Duration::from_secs(2);

/// The old data server's `{"status","generator_running"}` and the old
/// webhook handler's `{"status","buffer_size","batch_size"}`, merged, plus
/// the ingest counters. `status` is "healthy" when every peer answered and
/// "degraded" otherwise (with `unavailable` naming the missing ones); the
/// gateway itself is up either way, so the HTTP status is always 200.
pub(crate) async fn health(State(state): State<AppState>) -> Json<Value> {
    let peers = state.peers();
    let mut datasource = peers.datasource();
    let mut ingest = peers.ingest();
    let (generator, stats) = tokio::join!(
        tokio::time::timeout(
            PEER_TIMEOUT,
            datasource.generator_status(GeneratorStatusRequest {})
        ),
        tokio::time::timeout(PEER_TIMEOUT, ingest.stats(StatsRequest {})),
    );
    let mut body = Map::new();
    let mut unavailable = Vec::new();
    body.insert("status".into(), json!("healthy"));
    match generator {
        Ok(Ok(status)) => {
            body.insert("generator_running".into(), json!(status.get_ref().running));
        }
        _ => unavailable.push("datasource"),
    }
    match stats {
        Ok(Ok(stats)) => {
            let stats = stats.into_inner();
            for (key, value) in [
                ("buffer_size", json!(stats.buffered_events)),
                ("batch_size", json!(stats.batch_size)),
                ("wal_bytes", json!(stats.wal_bytes)),
                ("max_wal_bytes", json!(stats.max_wal_bytes)),
                ("accepted", json!(stats.accepted)),
                ("filtered", json!(stats.filtered)),
                ("duplicates", json!(stats.duplicates)),
                (
                    "rejected",
                    json!(stats.rejected.saturating_add(state.webhook_rejected())),
                ),
                ("flushed_objects", json!(stats.flushed_objects)),
                ("flushed_events", json!(stats.flushed_events)),
                ("refused_batches", json!(stats.refused_batches)),
                ("batch_bytes", json!(stats.batch_bytes)),
                ("buffered_bytes", json!(stats.buffered_bytes)),
                ("max_buffered_bytes", json!(stats.max_buffered_bytes)),
                ("backlog_events", json!(stats.backlog_events)),
                ("dead_lettered_objects", json!(stats.dead_lettered_objects)),
                ("max_event_bytes", json!(stats.max_event_bytes)),
                ("storage_healthy", json!(stats.storage_healthy)),
            ] {
                body.insert(key.into(), value);
            }
            if !stats.log.is_empty() {
                body.insert("log".into(), json!(stats.log));
            }
            // Fleet mode: the stream stands where the write-ahead log does.
            if stats.log == "nats" {
                for (key, value) in [
                    ("log_connected", json!(stats.log_connected)),
                    ("stream_bytes", json!(stats.stream_bytes)),
                    ("stream_messages", json!(stats.stream_messages)),
                    ("stream_max_bytes", json!(stats.stream_max_bytes)),
                    ("consumer_pending", json!(stats.consumer_pending)),
                    ("consumer_ack_pending", json!(stats.consumer_ack_pending)),
                    ("pending_publishes", json!(stats.pending_publishes)),
                    ("last_log_error", json!(stats.last_log_error)),
                ] {
                    body.insert(key.into(), value);
                }
            }
        }
        _ => unavailable.push("ingest"),
    }
    if !unavailable.is_empty() {
        body.insert("status".into(), json!("degraded"));
        body.insert("unavailable".into(), json!(unavailable));
    }
    Json(Value::Object(body))
}
