//! Events shaped as the upstream sends them to the webhook.

use serde_json::{Value, json};

/// A deterministic UUID for test event `n` of series `series`.
pub fn event_id(series: u32, n: u32) -> String {
    format!("{series:08x}-0000-4000-8000-{n:012x}")
}

/// An event as the upstream sends it (the user object in `user_id`), with
/// the properties its `event_type` carries.
pub fn upstream_event(id: &str, event_type: &str, timestamp: &str) -> Value {
    let properties = match event_type {
        "purchase" => json!({"amount": 12.5, "product_id": "prod_3"}),
        "view" | "like" | "share" => {
            json!({"content_id": "content_9", "media_type": "audio", "prayer_type": "rosary"})
        }
        _ => json!({}),
    };
    json!({
        "event_id": id,
        "user_id": {
            "user_id": "user_42",
            "age": 31,
            "status": "paid",
            "country": "BR",
            "created_at": "2023-05-01T00:00:00Z"
        },
        "event_type": event_type,
        "source": "web",
        "timestamp": timestamp,
        "properties": properties,
    })
}
