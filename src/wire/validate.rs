//! The rules every event satisfies, whichever face it came through.

use super::*;

/// How deep `properties` may nest (the properties object is level 1, each
/// object or array inside it one more). Protobuf decoders stop at 100
/// nested messages and every JSON level costs up to three of them, so this
/// keeps any accepted event decodable by every hop, with room to spare.
pub const MAX_PROPERTIES_DEPTH: usize = 20;

/// Most keys in `properties`, counted at every level.
pub const MAX_PROPERTY_KEYS: usize = 1_000;

/// Longest key in `properties`, in bytes.
pub const MAX_PROPERTY_KEY_BYTES: usize = 256;

/// Event timestamps must fall in these years (UTC), so that every event has
/// a `dt=YYYY-MM-DD` partition the analytics read as a date. Absolute
/// bounds: nothing is checked against the current time.
pub const EVENT_YEARS: std::ops::RangeInclusive<i32> = 1970..=9999;

/// The rules every event must satisfy, whichever face it came through; the
/// problems of the event at `path` (e.g. `events[3]`), empty when valid.
pub fn validate_event(path: impl fmt::Display, event: &Event) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let mut fail = |field: &str, reason: String| {
        errors.push(FieldError::new(format!("{path}.{field}"), reason));
    };
    if !is_canonical_uuid(&event.event_id) {
        fail("event_id", format!("{:?} is not a UUID", event.event_id));
    }
    if event.user_id.trim().is_empty() {
        fail("user_id", "must not be empty".into());
    }
    if let Some(user) = &event.user
        && user.user_id != event.user_id
    {
        fail(
            "user.user_id",
            format!(
                "{:?} does not match user_id {:?}",
                user.user_id, event.user_id
            ),
        );
    }
    let event_type = EventType::try_from(event.event_type)
        .ok()
        .filter(|value| value.wire_name().is_some());
    if event_type.is_none() {
        fail(
            "event_type",
            format!("missing or unknown, expected {}", EventType::expected()),
        );
    }
    if Source::try_from(event.source)
        .ok()
        .and_then(WireEnum::wire_name)
        .is_none()
    {
        fail(
            "source",
            format!("missing or unknown, expected {}", Source::expected()),
        );
    }
    match event.timestamp.as_ref().map(to_datetime) {
        None => fail("timestamp", "missing".into()),
        Some(None) => fail("timestamp", "out of range".into()),
        Some(Some(datetime)) if !EVENT_YEARS.contains(&datetime.year()) => fail(
            "timestamp",
            format!(
                "year {} is outside {}..={}",
                datetime.year(),
                EVENT_YEARS.start(),
                EVENT_YEARS.end()
            ),
        ),
        Some(Some(_)) => {}
    }
    if let Some(extra) = event.properties.as_ref().and_then(|p| p.extra.as_ref()) {
        let mut keys = 0;
        if let Err((field, reason)) = check_struct(extra, 1, &mut keys) {
            let field = if field.is_empty() {
                "properties".to_owned()
            } else {
                format!("properties.{field}")
            };
            fail(&field, reason);
        }
    }
    let typed = event.properties.as_ref().and_then(|p| p.typed.as_ref());
    match (event_type, typed) {
        (Some(EventType::Purchase), Some(Typed::Purchase(purchase))) => {
            if !purchase.amount.is_finite() || purchase.amount < 0.0 {
                fail(
                    "properties.amount",
                    "must be a finite number, 0 or more".into(),
                );
            }
            if purchase.product_id.trim().is_empty() {
                fail("properties.product_id", "must not be empty".into());
            }
        }
        (Some(EventType::Purchase), _) => {
            fail(
                "properties",
                "purchase events need amount and product_id".into(),
            );
        }
        (Some(kind), Some(Typed::Content(content))) if is_content_event(kind) => {
            if content.content_id.trim().is_empty() {
                fail("properties.content_id", "must not be empty".into());
            }
            if enum_name::<MediaType>(content.media_type).is_empty() {
                fail(
                    "properties.media_type",
                    format!("missing or unknown, expected {}", MediaType::expected()),
                );
            }
            if enum_name::<PrayerType>(content.prayer_type).is_empty() {
                fail(
                    "properties.prayer_type",
                    format!("missing or unknown, expected {}", PrayerType::expected()),
                );
            }
        }
        (Some(kind), _) if is_content_event(kind) => {
            fail(
                "properties",
                format!(
                    "{} events need content_id, media_type and prayer_type",
                    kind.wire_name().unwrap_or_default()
                ),
            );
        }
        (Some(kind), Some(_)) => {
            fail(
                "properties",
                format!(
                    "{} events carry no typed properties",
                    kind.wire_name().unwrap_or_default()
                ),
            );
        }
        _ => {}
    }
    errors
}

/// Checks the nesting, key count and key lengths of a `Struct` at `depth`;
/// the first problem as the path below it and the reason.
fn check_struct(fields: &Struct, depth: usize, keys: &mut usize) -> Result<(), (String, String)> {
    for (key, value) in &fields.fields {
        *keys += 1;
        if *keys > MAX_PROPERTY_KEYS {
            return Err((
                String::new(),
                format!("more than {MAX_PROPERTY_KEYS} keys (counted at every level)"),
            ));
        }
        if key.len() > MAX_PROPERTY_KEY_BYTES {
            let shown: String = key.chars().take(16).collect();
            return Err((
                String::new(),
                format!(
                    "key {shown:?}... is {} bytes, over the limit of {MAX_PROPERTY_KEY_BYTES}",
                    key.len()
                ),
            ));
        }
        check_value(value, depth, keys).map_err(|(below, reason)| {
            let path = if below.is_empty() {
                key.clone()
            } else if below.starts_with('[') {
                format!("{key}{below}")
            } else {
                format!("{key}.{below}")
            };
            (path, reason)
        })?;
    }
    Ok(())
}

fn check_value(
    value: &prost_types::Value,
    depth: usize,
    keys: &mut usize,
) -> Result<(), (String, String)> {
    let nested = match &value.kind {
        Some(Kind::StructValue(_) | Kind::ListValue(_)) => depth + 1,
        _ => return Ok(()),
    };
    if nested > MAX_PROPERTIES_DEPTH {
        return Err((
            String::new(),
            format!("nests deeper than {MAX_PROPERTIES_DEPTH} levels"),
        ));
    }
    match &value.kind {
        Some(Kind::StructValue(inner)) => check_struct(inner, nested, keys),
        Some(Kind::ListValue(list)) => {
            for (index, item) in list.values.iter().enumerate() {
                check_value(item, nested, keys).map_err(|(below, reason)| {
                    let path = if below.is_empty() || below.starts_with('[') {
                        format!("[{index}]{below}")
                    } else {
                        format!("[{index}].{below}")
                    };
                    (path, reason)
                })?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The hyphenated 8-4-4-4-12 form every producer sends.
fn is_canonical_uuid(text: &str) -> bool {
    text.len() == 36 && uuid::Uuid::try_parse(text).is_ok()
}
