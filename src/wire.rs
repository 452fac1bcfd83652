//! The public JSON faces of the contract types: the shapes the old upstream
//! and webhook spoke, which vesper keeps so old clients work unchanged.
//!
//! - Encoding: users, content items and events exactly as the old data
//!   server sent them (field order included; an event's `user_id` carries
//!   the whole user object when vesper has the snapshot, as upstream did).
//! - Decoding: a webhook body `{"events":[...]}` into typed events, with
//!   every problem reported as a [`FieldError`] naming the exact path
//!   (`events[3].timestamp: not an RFC 3339 date-time`).
//! - [`validate_event`]: the rules a typed event must satisfy, whichever
//!   face it came through (JSON webhook or gRPC).

use std::fmt;

use prost_types::{Struct, Timestamp, value::Kind};
use serde_json::{Map, Number, Value, json};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use crate::v1::{
    Content, ContentProperties, Event, EventType, MediaType, PrayerType, Properties,
    PurchaseProperties, Source, User, UserStatus, properties::Typed,
};

/// An enum of the contract with lower-case names on the wire ("click").
pub trait WireEnum: Sized + Copy + PartialEq + 'static {
    /// Every valid value with its wire name, in declaration order. The
    /// UNSPECIFIED zero value is not among them.
    const VALUES: &'static [(Self, &'static str)];

    /// The wire name; `None` for UNSPECIFIED.
    fn wire_name(self) -> Option<&'static str> {
        Self::VALUES
            .iter()
            .find(|(value, _)| *value == self)
            .map(|(_, name)| *name)
    }

    /// The value with this wire name.
    fn from_wire(name: &str) -> Option<Self> {
        Self::VALUES
            .iter()
            .find(|(_, wire)| *wire == name)
            .map(|(value, _)| *value)
    }

    /// "one of a, b, c", for error messages.
    fn expected() -> String {
        let names: Vec<_> = Self::VALUES.iter().map(|(_, name)| *name).collect();
        format!("one of {}", names.join(", "))
    }
}

macro_rules! wire_enum {
    ($ty:ident { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl WireEnum for $ty {
            const VALUES: &'static [(Self, &'static str)] = &[$(($ty::$variant, $name)),+];
        }
    };
}

wire_enum!(EventType {
    Click => "click",
    View => "view",
    Purchase => "purchase",
    Signup => "signup",
    Pray => "pray",
    Share => "share",
    Like => "like",
});
wire_enum!(Source {
    Web => "web",
    Apple => "apple",
    Android => "android",
});
wire_enum!(UserStatus {
    Free => "free",
    Paid => "paid",
    Trial => "trial",
});
wire_enum!(MediaType {
    Video => "video",
    Audio => "audio",
    Text => "text",
});
wire_enum!(PrayerType {
    Academic => "academic",
    Podcast => "podcast",
    Reflection => "reflection",
    LectioDivina => "lectio_divina",
    Rosary => "rosary",
    Meditation => "meditation",
});

/// The wire name of a raw enum number, or "" when it names no valid value.
pub fn enum_name<E>(raw: i32) -> &'static str
where
    E: WireEnum + TryFrom<i32>,
{
    E::try_from(raw)
        .ok()
        .and_then(WireEnum::wire_name)
        .unwrap_or("")
}

/// Event types whose properties are a content item (view, like, share).
pub fn is_content_event(event_type: EventType) -> bool {
    matches!(
        event_type,
        EventType::View | EventType::Like | EventType::Share
    )
}

// ---------------------------------------------------------------- time

/// A timestamp as RFC 3339 in UTC: whole seconds as upstream wrote them
/// ("2026-11-25T21:04:05Z"), with a fraction only when there is one.
pub fn format_timestamp(timestamp: &Timestamp) -> String {
    to_datetime(timestamp)
        .and_then(|datetime| datetime.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// A timestamp as a `time` date-time in UTC; `None` when out of range.
pub fn to_datetime(timestamp: &Timestamp) -> Option<OffsetDateTime> {
    let nanos = i128::from(timestamp.seconds) * 1_000_000_000 + i128::from(timestamp.nanos);
    if !(0..1_000_000_000).contains(&timestamp.nanos) {
        return None;
    }
    OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()
}

/// A `time` date-time as a protobuf timestamp.
pub fn from_datetime(datetime: OffsetDateTime) -> Timestamp {
    Timestamp {
        seconds: datetime.unix_timestamp(),
        nanos: i32::try_from(datetime.nanosecond()).unwrap_or(0),
    }
}

/// Parses an RFC 3339 date-time with any offset.
pub fn parse_timestamp(text: &str) -> Option<Timestamp> {
    OffsetDateTime::parse(text, &Rfc3339)
        .ok()
        .map(from_datetime)
}

// ---------------------------------------------------------------- Struct

/// A JSON object as a protobuf `Struct`. Numbers become doubles, as the
/// `Struct` type requires.
pub fn json_to_struct(object: &Map<String, Value>) -> Struct {
    Struct {
        fields: object
            .iter()
            .map(|(key, value)| (key.clone(), json_to_value(value)))
            .collect(),
    }
}

fn json_to_value(value: &Value) -> prost_types::Value {
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(flag) => Kind::BoolValue(*flag),
        Value::Number(number) => Kind::NumberValue(number.as_f64().unwrap_or(f64::NAN)),
        Value::String(text) => Kind::StringValue(text.clone()),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(json_to_value).collect(),
        }),
        Value::Object(object) => Kind::StructValue(json_to_struct(object)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// A protobuf `Struct` as a JSON object; doubles that are whole numbers are
/// written as integers, as the producer most likely sent them. Keys come
/// out sorted (a `Struct` does not keep the producer's order).
pub fn struct_to_json(fields: &Struct) -> Map<String, Value> {
    let mut keys: Vec<_> = fields.fields.keys().collect();
    keys.sort();
    keys.into_iter()
        .map(|key| (key.clone(), value_to_json(&fields.fields[key])))
        .collect()
}

fn value_to_json(value: &prost_types::Value) -> Value {
    match &value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(flag)) => Value::Bool(*flag),
        Some(Kind::NumberValue(number)) => number_to_json(*number),
        Some(Kind::StringValue(text)) => Value::String(text.clone()),
        Some(Kind::ListValue(list)) => {
            Value::Array(list.values.iter().map(value_to_json).collect())
        }
        Some(Kind::StructValue(inner)) => Value::Object(struct_to_json(inner)),
    }
}

/// Exactly representable whole doubles go out as integers.
const MAX_EXACT_INTEGER: f64 = 9_007_199_254_740_992.0;

fn number_to_json(number: f64) -> Value {
    if number.fract() == 0.0 && number.abs() <= MAX_EXACT_INTEGER {
        #[allow(clippy::cast_possible_truncation)]
        return Value::Number(Number::from(number as i64));
    }
    Number::from_f64(number).map_or(Value::Null, Value::Number)
}

// ---------------------------------------------------------------- encode

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

// ---------------------------------------------------------------- decode

/// One problem with one field of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Where: `events[3].properties.amount`.
    pub path: String,
    /// Why: `expected a number`.
    pub reason: String,
}

impl FieldError {
    fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// The fields every webhook event must have, in upstream order.
const REQUIRED_EVENT_FIELDS: [&str; 6] = [
    "event_id",
    "user_id",
    "event_type",
    "source",
    "timestamp",
    "properties",
];

/// Decodes a webhook body, `{"events":[...]}`. Every event is checked and
/// every problem reported, so a client fixes its batch in one round.
pub fn decode_webhook(body: &Value) -> Result<Vec<Event>, Vec<FieldError>> {
    let Some(object) = body.as_object() else {
        return Err(vec![FieldError::new(
            "body",
            format!(
                "expected a JSON object with an array \"events\", got {}",
                kind_of(body)
            ),
        )]);
    };
    let Some(events) = object.get("events") else {
        return Err(vec![FieldError::new("events", "missing")]);
    };
    let Some(events) = events.as_array() else {
        return Err(vec![FieldError::new(
            "events",
            format!("expected an array, got {}", kind_of(events)),
        )]);
    };
    let mut errors = Vec::new();
    let decoded: Vec<_> = events
        .iter()
        .enumerate()
        .filter_map(|(index, event)| decode_event(&format!("events[{index}]"), event, &mut errors))
        .collect();
    if errors.is_empty() {
        Ok(decoded)
    } else {
        Err(errors)
    }
}

/// Default cap of the events in one request, on the webhook and on gRPC
/// `Ingest`: far above what a 1 MiB body of real events holds (about
/// 3,000), far below what a body of empty objects could claim.
pub const DEFAULT_MAX_REQUEST_EVENTS: usize = 10_000;

/// Problems reported for one body at most; the rest are counted.
pub const MAX_REPORTED_PROBLEMS: usize = 100;

/// Why a webhook body was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookRefusal {
    /// More events than one request may hold; nothing was decoded.
    TooManyEvents {
        /// The cap.
        limit: usize,
    },
    /// The body or some events are invalid: up to
    /// [`MAX_REPORTED_PROBLEMS`] problems, and how many more there were.
    Invalid {
        /// The problems, in order.
        problems: Vec<FieldError>,
        /// Problems beyond the list.
        more: usize,
        /// Events the body offered (0 when it was not a list of events).
        offered: usize,
    },
}

/// Decodes a raw webhook body, `{"events":[...]}`, holding at most
/// `max_events` events. The events are counted while the body is parsed,
/// before any is decoded, so a body of many tiny events costs a list of
/// slices, not a tree of values; problems are collected up to a cap.
pub fn decode_webhook_body(raw: &[u8], max_events: usize) -> Result<Vec<Event>, WebhookRefusal> {
    use serde::de::DeserializeSeed;
    let invalid = |problem: FieldError| WebhookRefusal::Invalid {
        problems: vec![problem],
        more: 0,
        offered: 0,
    };
    let mut deserializer = serde_json::Deserializer::from_slice(raw);
    let envelope = match (Envelope { max_events }).deserialize(&mut deserializer) {
        Ok(envelope) => envelope,
        Err(err) if err.to_string().starts_with(TOO_MANY_EVENTS) => {
            return Err(WebhookRefusal::TooManyEvents { limit: max_events });
        }
        Err(err) => return Err(invalid(FieldError::new("body", err.to_string()))),
    };
    if let Err(err) = deserializer.end() {
        return Err(invalid(FieldError::new("body", err.to_string())));
    }
    let events = match envelope {
        EnvelopeShape::NotAnObject(kind) => {
            return Err(invalid(FieldError::new(
                "body",
                format!("expected a JSON object with an array \"events\", got {kind}"),
            )));
        }
        EnvelopeShape::NoEvents => return Err(invalid(FieldError::new("events", "missing"))),
        EnvelopeShape::EventsNotAList(kind) => {
            return Err(invalid(FieldError::new(
                "events",
                format!("expected an array, got {kind}"),
            )));
        }
        EnvelopeShape::Events(events) => events,
    };
    let offered = events.len();
    let mut problems = Vec::new();
    let mut more = 0;
    let mut decoded = Vec::with_capacity(offered);
    for (index, raw_event) in events.into_iter().enumerate() {
        let path = format!("events[{index}]");
        let mut errors = Vec::new();
        match serde_json::from_str::<Value>(raw_event.get()) {
            Ok(value) => {
                if let Some(event) = decode_event(&path, &value, &mut errors) {
                    decoded.push(event);
                }
            }
            Err(err) => errors.push(FieldError::new(path, err.to_string())),
        }
        for error in errors {
            if problems.len() < MAX_REPORTED_PROBLEMS {
                problems.push(error);
            } else {
                more += 1;
            }
        }
    }
    if problems.is_empty() {
        Ok(decoded)
    } else {
        Err(WebhookRefusal::Invalid {
            problems,
            more,
            offered,
        })
    }
}

/// The start of the parse error that a body over the event cap raises.
const TOO_MANY_EVENTS: &str = "vesper: too many events";

/// What the top of a webhook body turned out to be.
enum EnvelopeShape<'a> {
    NotAnObject(&'static str),
    NoEvents,
    EventsNotAList(&'static str),
    Events(Vec<&'a serde_json::value::RawValue>),
}

/// Parses the envelope, keeping each event as an unparsed slice and
/// stopping past `max_events`.
struct Envelope {
    max_events: usize,
}

impl<'de> serde::de::DeserializeSeed<'de> for Envelope {
    type Value = EnvelopeShape<'de>;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

/// The JSON kind a visitor saw, in the words of [`kind_of`].
macro_rules! other_kind {
    ($($method:ident: $type:ty => $kind:literal),* $(,)?) => {
        $(fn $method<E: serde::de::Error>(self, _: $type) -> Result<Self::Value, E> {
            Ok(Self::Value::from_kind($kind))
        })*
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(Self::Value::from_kind("null"))
        }
    };
}

impl EnvelopeShape<'_> {
    fn from_kind(kind: &'static str) -> Self {
        Self::NotAnObject(kind)
    }
}

impl<'de> serde::de::Visitor<'de> for Envelope {
    type Value = EnvelopeShape<'de>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JSON object with an array \"events\"")
    }

    other_kind! {
        visit_bool: bool => "a boolean",
        visit_i64: i64 => "a number",
        visit_u64: u64 => "a number",
        visit_f64: f64 => "a number",
        visit_str: &str => "a string",
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(EnvelopeShape::NotAnObject("an array"))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut shape = EnvelopeShape::NoEvents;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == "events" {
                shape = map.next_value_seed(EventList {
                    max_events: self.max_events,
                })?;
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(shape)
    }
}

/// The value of `"events"`.
struct EventList {
    max_events: usize,
}

impl<'de> serde::de::DeserializeSeed<'de> for EventList {
    type Value = EnvelopeShape<'de>;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for EventList {
    type Value = EnvelopeShape<'de>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("an array of events")
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(EnvelopeShape::EventsNotAList("a boolean"))
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(EnvelopeShape::EventsNotAList("a number"))
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(EnvelopeShape::EventsNotAList("a number"))
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(EnvelopeShape::EventsNotAList("a number"))
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(EnvelopeShape::EventsNotAList("a string"))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(EnvelopeShape::EventsNotAList("null"))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map
            .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
            .is_some()
        {}
        Ok(EnvelopeShape::EventsNotAList("an object"))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut events = Vec::new();
        while let Some(event) = seq.next_element::<&'de serde_json::value::RawValue>()? {
            if events.len() == self.max_events {
                return Err(serde::de::Error::custom(format_args!(
                    "{TOO_MANY_EVENTS}: more than {}",
                    self.max_events
                )));
            }
            events.push(event);
        }
        Ok(EnvelopeShape::Events(events))
    }
}

/// Decodes one upstream-shaped event at `path`, appending its problems to
/// `errors`; `None` when it has any.
pub fn decode_event(path: &str, value: &Value, errors: &mut Vec<FieldError>) -> Option<Event> {
    let before = errors.len();
    let Some(object) = value.as_object() else {
        errors.push(FieldError::new(
            path,
            format!("expected an object, got {}", kind_of(value)),
        ));
        return None;
    };
    for field in REQUIRED_EVENT_FIELDS {
        if !object.contains_key(field) {
            errors.push(FieldError::new(format!("{path}.{field}"), "missing"));
        }
    }
    let field = |name: &str| format!("{path}.{name}");

    let event_id = object
        .get("event_id")
        .and_then(|value| string_field(&field("event_id"), value, errors));
    let (user_id, user) = match object.get("user_id") {
        Some(Value::String(id)) => (Some(id.clone()), None),
        Some(Value::Object(user)) => match decode_user(&field("user_id"), user, errors) {
            Some(user) => (Some(user.user_id.clone()), Some(user)),
            None => (None, None),
        },
        Some(other) => {
            errors.push(FieldError::new(
                field("user_id"),
                format!("expected a string or a user object, got {}", kind_of(other)),
            ));
            (None, None)
        }
        None => (None, None),
    };
    let event_type = object
        .get("event_type")
        .and_then(|value| enum_field::<EventType>(&field("event_type"), value, errors));
    let source = object
        .get("source")
        .and_then(|value| enum_field::<Source>(&field("source"), value, errors));
    let timestamp = object
        .get("timestamp")
        .and_then(|value| timestamp_field(&field("timestamp"), value, errors));
    let properties = match (object.get("properties"), event_type) {
        (Some(Value::Object(properties)), Some(event_type)) => Some(decode_properties(
            &field("properties"),
            event_type,
            properties,
            errors,
        )),
        (Some(Value::Object(_)), None) | (None, _) => None,
        (Some(other), _) => {
            errors.push(FieldError::new(
                field("properties"),
                format!("expected an object, got {}", kind_of(other)),
            ));
            None
        }
    };
    if errors.len() > before {
        return None;
    }
    let event = Event {
        event_id: event_id?,
        user_id: user_id?,
        user,
        event_type: event_type? as i32,
        source: source? as i32,
        timestamp: Some(timestamp?),
        properties: Some(properties?),
    };
    // Decoding checked shapes; the shared rules check the rest (UUID, ...).
    errors.extend(validate_event(path, &event));
    (errors.len() == before).then_some(event)
}

fn decode_user(
    path: &str,
    object: &Map<String, Value>,
    errors: &mut Vec<FieldError>,
) -> Option<User> {
    let before = errors.len();
    let user_id = match object.get("user_id") {
        Some(value) => string_field(&format!("{path}.user_id"), value, errors),
        None => {
            errors.push(FieldError::new(format!("{path}.user_id"), "missing"));
            None
        }
    };
    let age = object.get("age").and_then(|value| match value.as_u64() {
        Some(age) if age <= 150 => u32::try_from(age).ok(),
        _ => {
            errors.push(FieldError::new(
                format!("{path}.age"),
                "expected a whole number from 0 to 150",
            ));
            None
        }
    });
    let status = object
        .get("status")
        .and_then(|value| enum_field::<UserStatus>(&format!("{path}.status"), value, errors));
    let country = object.get("country").and_then(|value| match value {
        Value::String(country) => Some(country.clone()),
        other => {
            errors.push(FieldError::new(
                format!("{path}.country"),
                format!("expected a string, got {}", kind_of(other)),
            ));
            None
        }
    });
    let created_at = object
        .get("created_at")
        .and_then(|value| timestamp_field(&format!("{path}.created_at"), value, errors));
    if errors.len() > before {
        return None;
    }
    Some(User {
        user_id: user_id?,
        age: age.unwrap_or(0),
        status: status.map_or(0, |status| status as i32),
        country: country.unwrap_or_default(),
        created_at,
    })
}

fn decode_properties(
    path: &str,
    event_type: EventType,
    object: &Map<String, Value>,
    errors: &mut Vec<FieldError>,
) -> Properties {
    let mut extra = object.clone();
    let mut take = |name: &str| -> Option<Value> {
        let value = extra.remove(name);
        if value.is_none() {
            errors.push(FieldError::new(format!("{path}.{name}"), "missing"));
        }
        value
    };
    let typed = if event_type == EventType::Purchase {
        let amount = take("amount");
        let product_id = take("product_id");
        let amount = amount.and_then(|value| match value.as_f64() {
            Some(amount) if value.is_number() => Some(amount),
            _ => {
                errors.push(FieldError::new(
                    format!("{path}.amount"),
                    format!("expected a number, got {}", kind_of(&value)),
                ));
                None
            }
        });
        let product_id = product_id
            .and_then(|value| string_field(&format!("{path}.product_id"), &value, errors));
        Some(Typed::Purchase(PurchaseProperties {
            amount: amount.unwrap_or(f64::NAN),
            product_id: product_id.unwrap_or_default(),
        }))
    } else if is_content_event(event_type) {
        let content_id = take("content_id");
        let media_type = take("media_type");
        let prayer_type = take("prayer_type");
        let content_id = content_id
            .and_then(|value| string_field(&format!("{path}.content_id"), &value, errors));
        let media_type = media_type.and_then(|value| {
            enum_field::<MediaType>(&format!("{path}.media_type"), &value, errors)
        });
        let prayer_type = prayer_type.and_then(|value| {
            enum_field::<PrayerType>(&format!("{path}.prayer_type"), &value, errors)
        });
        Some(Typed::Content(ContentProperties {
            content_id: content_id.unwrap_or_default(),
            media_type: media_type.map_or(0, |media| media as i32),
            prayer_type: prayer_type.map_or(0, |prayer| prayer as i32),
        }))
    } else {
        None
    };
    Properties {
        typed,
        extra: (!extra.is_empty()).then(|| json_to_struct(&extra)),
    }
}

fn string_field(path: &str, value: &Value, errors: &mut Vec<FieldError>) -> Option<String> {
    match value {
        Value::String(text) if !text.trim().is_empty() => Some(text.clone()),
        Value::String(_) => {
            errors.push(FieldError::new(path, "must not be empty"));
            None
        }
        other => {
            errors.push(FieldError::new(
                path,
                format!("expected a string, got {}", kind_of(other)),
            ));
            None
        }
    }
}

fn enum_field<E: WireEnum>(path: &str, value: &Value, errors: &mut Vec<FieldError>) -> Option<E> {
    match value {
        Value::String(name) => match E::from_wire(name) {
            Some(known) => Some(known),
            None => {
                errors.push(FieldError::new(
                    path,
                    format!("unknown value {name:?}, expected {}", E::expected()),
                ));
                None
            }
        },
        other => {
            errors.push(FieldError::new(
                path,
                format!("expected a string, got {}", kind_of(other)),
            ));
            None
        }
    }
}

fn timestamp_field(path: &str, value: &Value, errors: &mut Vec<FieldError>) -> Option<Timestamp> {
    match value {
        Value::String(text) => match parse_timestamp(text) {
            Some(timestamp) => Some(timestamp),
            None => {
                errors.push(FieldError::new(path, "not an RFC 3339 date-time"));
                None
            }
        },
        other => {
            errors.push(FieldError::new(
                path,
                format!(
                    "expected an RFC 3339 date-time string, got {}",
                    kind_of(other)
                ),
            ));
            None
        }
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

// ---------------------------------------------------------------- validate

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
pub fn validate_event(path: &str, event: &Event) -> Vec<FieldError> {
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

#[cfg(test)]
mod tests;
