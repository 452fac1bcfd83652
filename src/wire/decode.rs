//! Webhook bodies into typed events, every problem named by its path.

use super::*;

/// One problem with one field of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Where: `events[3].properties.amount`.
    pub path: String,
    /// Why: `expected a number`.
    pub reason: String,
}

impl FieldError {
    /// `path` is anything that renders as one: a lazy [`EventPath`] or
    /// field path is rendered only here, when a problem is reported.
    pub(super) fn new(path: impl fmt::Display, reason: impl Into<String>) -> Self {
        Self {
            path: path.to_string(),
            reason: reason.into(),
        }
    }
}

/// The path of a field inside `parent`, rendered only when a problem is
/// reported: a valid event, the common case, costs no path strings.
#[derive(Clone, Copy)]
struct FieldPath<'a, P: fmt::Display> {
    parent: P,
    name: &'a str,
}

impl<P: fmt::Display> fmt::Display for FieldPath<'_, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.parent, self.name)
    }
}

fn field_of<P: fmt::Display>(parent: P, name: &str) -> FieldPath<'_, P> {
    FieldPath { parent, name }
}

/// The path of event `index` of a request, `events[3]`, rendered only
/// when a problem is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPath(pub usize);

impl fmt::Display for EventPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "events[{}]", self.0)
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// The fields every webhook event must have, in upstream order.
pub(super) const REQUIRED_EVENT_FIELDS: [&str; 6] = [
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
                json_kind(body)
            ),
        )]);
    };
    let Some(events) = object.get("events") else {
        return Err(vec![FieldError::new("events", "missing")]);
    };
    let Some(events) = events.as_array() else {
        return Err(vec![FieldError::new(
            "events",
            format!("expected an array, got {}", json_kind(events)),
        )]);
    };
    let mut errors = Vec::new();
    let decoded: Vec<_> = events
        .iter()
        .enumerate()
        .filter_map(|(index, event)| decode_event(EventPath(index), event, &mut errors))
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
        let path = EventPath(index);
        let mut errors = Vec::new();
        match serde_json::from_str::<Value>(raw_event.get()) {
            Ok(value) => {
                if let Some(event) = decode_event(path, &value, &mut errors) {
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
pub fn decode_event(
    path: impl fmt::Display + Copy,
    value: &Value,
    errors: &mut Vec<FieldError>,
) -> Option<Event> {
    let before = errors.len();
    let Some(object) = value.as_object() else {
        errors.push(FieldError::new(
            path,
            format!("expected an object, got {}", json_kind(value)),
        ));
        return None;
    };
    for field in REQUIRED_EVENT_FIELDS {
        if !object.contains_key(field) {
            errors.push(FieldError::new(format!("{path}.{field}"), "missing"));
        }
    }
    let field = |name| field_of(path, name);

    let event_id = object
        .get("event_id")
        .and_then(|value| string_field(field("event_id"), value, errors));
    let (user_id, user) = match object.get("user_id") {
        Some(Value::String(id)) => (Some(id.clone()), None),
        Some(Value::Object(user)) => match decode_user(field("user_id"), user, errors) {
            Some(user) => (Some(user.user_id.clone()), Some(user)),
            None => (None, None),
        },
        Some(other) => {
            errors.push(FieldError::new(
                field("user_id"),
                format!(
                    "expected a string or a user object, got {}",
                    json_kind(other)
                ),
            ));
            (None, None)
        }
        None => (None, None),
    };
    let event_type = object
        .get("event_type")
        .and_then(|value| enum_field::<EventType>(field("event_type"), value, errors));
    let source = object
        .get("source")
        .and_then(|value| enum_field::<Source>(field("source"), value, errors));
    let timestamp = object
        .get("timestamp")
        .and_then(|value| timestamp_field(field("timestamp"), value, errors));
    let properties = match (object.get("properties"), event_type) {
        (Some(Value::Object(properties)), Some(event_type)) => Some(decode_properties(
            field("properties"),
            event_type,
            properties,
            errors,
        )),
        (Some(Value::Object(_)), None) | (None, _) => None,
        (Some(other), _) => {
            errors.push(FieldError::new(
                field("properties"),
                format!("expected an object, got {}", json_kind(other)),
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
    path: impl fmt::Display + Copy,
    object: &Map<String, Value>,
    errors: &mut Vec<FieldError>,
) -> Option<User> {
    let before = errors.len();
    let field = |name| field_of(path, name);
    let user_id = match object.get("user_id") {
        Some(value) => string_field(field("user_id"), value, errors),
        None => {
            errors.push(FieldError::new(field("user_id"), "missing"));
            None
        }
    };
    let age = object.get("age").and_then(|value| match value.as_u64() {
        Some(age) if age <= 150 => u32::try_from(age).ok(),
        _ => {
            errors.push(FieldError::new(
                field("age"),
                "expected a whole number from 0 to 150",
            ));
            None
        }
    });
    let status = object
        .get("status")
        .and_then(|value| enum_field::<UserStatus>(field("status"), value, errors));
    let country = object.get("country").and_then(|value| match value {
        Value::String(country) => Some(country.clone()),
        other => {
            errors.push(FieldError::new(
                field("country"),
                format!("expected a string, got {}", json_kind(other)),
            ));
            None
        }
    });
    let created_at = object
        .get("created_at")
        .and_then(|value| timestamp_field(field("created_at"), value, errors));
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
    path: impl fmt::Display + Copy,
    event_type: EventType,
    object: &Map<String, Value>,
    errors: &mut Vec<FieldError>,
) -> Properties {
    let field = |name| field_of(path, name);
    let mut take = |name: &'static str| -> Option<&Value> {
        let value = object.get(name);
        if value.is_none() {
            errors.push(FieldError::new(field(name), "missing"));
        }
        value
    };
    // The typed properties, and their names, which the rest leaves out.
    let (typed, typed_names): (_, &[&str]) = if event_type == EventType::Purchase {
        let amount = take("amount");
        let product_id = take("product_id");
        let amount = amount.and_then(|value| match value.as_f64() {
            Some(amount) if value.is_number() => Some(amount),
            _ => {
                errors.push(FieldError::new(
                    field("amount"),
                    format!("expected a number, got {}", json_kind(value)),
                ));
                None
            }
        });
        let product_id =
            product_id.and_then(|value| string_field(field("product_id"), value, errors));
        let typed = Typed::Purchase(PurchaseProperties {
            amount: amount.unwrap_or(f64::NAN),
            product_id: product_id.unwrap_or_default(),
        });
        (Some(typed), &["amount", "product_id"])
    } else if is_content_event(event_type) {
        let content_id = take("content_id");
        let media_type = take("media_type");
        let prayer_type = take("prayer_type");
        let content_id =
            content_id.and_then(|value| string_field(field("content_id"), value, errors));
        let media_type = media_type
            .and_then(|value| enum_field::<MediaType>(field("media_type"), value, errors));
        let prayer_type = prayer_type
            .and_then(|value| enum_field::<PrayerType>(field("prayer_type"), value, errors));
        let typed = Typed::Content(ContentProperties {
            content_id: content_id.unwrap_or_default(),
            media_type: media_type.map_or(0, |media| media as i32),
            prayer_type: prayer_type.map_or(0, |prayer| prayer as i32),
        });
        (Some(typed), &["content_id", "media_type", "prayer_type"])
    } else {
        (None, &[])
    };
    // Everything the type does not type, converted straight from the
    // body's tree (no copy of it first).
    let extra = fields_to_struct(
        object
            .iter()
            .filter(|(name, _)| !typed_names.contains(&name.as_str())),
    );
    Properties {
        typed,
        extra: (!extra.fields.is_empty()).then_some(extra),
    }
}

fn string_field(
    path: impl fmt::Display,
    value: &Value,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    match value {
        Value::String(text) if !text.trim().is_empty() => Some(text.clone()),
        Value::String(_) => {
            errors.push(FieldError::new(path, "must not be empty"));
            None
        }
        other => {
            errors.push(FieldError::new(
                path,
                format!("expected a string, got {}", json_kind(other)),
            ));
            None
        }
    }
}

fn enum_field<E: WireEnum>(
    path: impl fmt::Display,
    value: &Value,
    errors: &mut Vec<FieldError>,
) -> Option<E> {
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
                format!("expected a string, got {}", json_kind(other)),
            ));
            None
        }
    }
}

fn timestamp_field(
    path: impl fmt::Display,
    value: &Value,
    errors: &mut Vec<FieldError>,
) -> Option<Timestamp> {
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
                    json_kind(other)
                ),
            ));
            None
        }
    }
}

pub fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
