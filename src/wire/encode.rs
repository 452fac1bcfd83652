//! Contract types as the old upstream sent them.

use super::*;

/// A user as the old data server sent it:
/// `{"user_id","age","status","country","created_at"}`.
pub fn user_json(user: &User) -> Value {
    json!({
        "user_id": user.user_id,
        "age": user.age,
        "status": enum_name::<UserStatus>(user.status),
        "country": user.country,
        "created_at": user.created_at.as_ref().map(format_timestamp).unwrap_or_default(),
    })
}

/// A content item as the old data server sent it:
/// `{"content_id","media_type","prayer_type","created_at"}`.
pub fn content_json(content: &Content) -> Value {
    json!({
        "content_id": content.content_id,
        "media_type": enum_name::<MediaType>(content.media_type),
        "prayer_type": enum_name::<PrayerType>(content.prayer_type),
        "created_at": content.created_at.as_ref().map(format_timestamp).unwrap_or_default(),
    })
}

/// An event's properties as one JSON object: the typed part first, in the
/// upstream's field order, then every extra property.
pub fn properties_json(properties: Option<&Properties>) -> Map<String, Value> {
    let mut object = Map::new();
    let Some(properties) = properties else {
        return object;
    };
    match &properties.typed {
        Some(Typed::Purchase(purchase)) => {
            object.insert("amount".into(), number_to_json(purchase.amount));
            object.insert("product_id".into(), purchase.product_id.clone().into());
        }
        Some(Typed::Content(content)) => {
            object.insert("content_id".into(), content.content_id.clone().into());
            object.insert(
                "media_type".into(),
                enum_name::<MediaType>(content.media_type).into(),
            );
            object.insert(
                "prayer_type".into(),
                enum_name::<PrayerType>(content.prayer_type).into(),
            );
        }
        None => {}
    }
    if let Some(extra) = &properties.extra {
        for (key, value) in struct_to_json(extra) {
            object.entry(key).or_insert(value);
        }
    }
    object
}

/// An event as the upstream sent it, fields in its order: `event_id,
/// user_id, event_type, source, timestamp, properties`. Like upstream,
/// `user_id` holds the whole user object when the event has the snapshot.
pub fn upstream_event_json(event: &Event) -> Value {
    let user_id = match &event.user {
        Some(user) => user_json(user),
        None => Value::String(event.user_id.clone()),
    };
    json!({
        "event_id": event.event_id,
        "user_id": user_id,
        "event_type": enum_name::<EventType>(event.event_type),
        "source": enum_name::<Source>(event.source),
        "timestamp": event.timestamp.as_ref().map(format_timestamp).unwrap_or_default(),
        "properties": properties_json(event.properties.as_ref()),
    })
}
