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
//!   face it came through (JSON webhook or gRPC), and the bounds on what
//!   an event may hold.
//!
//! This file holds what the three share (the enums' wire names, time, the
//! `Struct` conversions); `wire/encode.rs`, `wire/decode.rs` and
//! `wire/validate.rs` one face each.

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
    fields_to_struct(object.iter())
}

/// Some fields of a JSON object as a protobuf `Struct`.
pub(crate) fn fields_to_struct<'a>(
    fields: impl Iterator<Item = (&'a String, &'a Value)>,
) -> Struct {
    Struct {
        fields: fields
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

mod decode;
mod encode;
mod validate;

pub use decode::*;
pub use encode::*;
pub use validate::*;

#[cfg(test)]
mod tests;
