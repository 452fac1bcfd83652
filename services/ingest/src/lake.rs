//! How events land in the lake: partitions, object names and the record
//! shape. The analytics read `events/**/*.ndjson` with Hive partitioning,
//! so these are a contract.
//!
//! - Key: `events/dt=YYYY-MM-DD/hour=HH/<first-seq>-<last-seq>-<wal-id>.ndjson`,
//!   by the UTC date and hour of each event's own timestamp. The sequence
//!   numbers (20 digits, zero-padded, so names sort) are the first and last
//!   of the write-ahead log range in the object; the log id keeps two logs
//!   from ever writing the same name. A replay writes the same range under
//!   the same name, so it overwrites instead of adding a copy.
//! - Body: one JSON object per line, fields in this order: `event_id`,
//!   `user_id` (the id string), `event_type`, `source`, `timestamp` (RFC
//!   3339, UTC), `properties` (an object), `user` (the user snapshot, only
//!   when the producer sent the user object), `received_at` (RFC 3339, UTC,
//!   microseconds).

use std::fmt;

use prost_types::Timestamp;
use serde_json::{Map, Value};
use time::{OffsetDateTime, format_description::BorrowedFormatItem, macros::format_description};
use vesper::{
    v1::{Event, EventType, Source},
    wire::{self, enum_name},
};

/// The content type of event objects.
pub const CONTENT_TYPE: &str = "application/x-ndjson";

/// Prefix of every event object.
pub const EVENTS_PREFIX: &str = "events/";

/// An hour of event time: the lake partition an event lands in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Partition {
    year: i32,
    month: u8,
    day: u8,
    hour: u8,
}

impl Partition {
    /// The partition of an event time; `None` when it is out of range (a
    /// validated event never is).
    pub fn of(timestamp: &Timestamp) -> Option<Self> {
        let datetime = wire::to_datetime(timestamp)?;
        Some(Self {
            year: datetime.year(),
            month: u8::from(datetime.month()),
            day: datetime.day(),
            hour: datetime.hour(),
        })
    }

    /// The partition of an hour counted from the Unix epoch (the form the
    /// log keeps); `None` out of range.
    pub fn from_unix_hour(hour: i64) -> Option<Self> {
        let seconds = hour.checked_mul(3600)?;
        Self::of(&Timestamp { seconds, nanos: 0 })
    }

    /// Hours from the Unix epoch to the start of this partition.
    pub fn unix_hour(&self) -> i64 {
        let date = time::Date::from_calendar_date(
            self.year,
            time::Month::try_from(self.month).unwrap_or(time::Month::January),
            self.day,
        )
        .unwrap_or(time::Date::MIN);
        let midnight = date.midnight().assume_utc().unix_timestamp();
        midnight.div_euclid(3600) + i64::from(self.hour)
    }

    /// The object key of the events numbered `first..=last` of log `wal_id`
    /// in this partition.
    pub fn object_key(&self, first: u64, last: u64, wal_id: &str) -> String {
        format!("{EVENTS_PREFIX}{self}/{first:020}-{last:020}-{wal_id}.ndjson")
    }
}

impl fmt::Display for Partition {
    /// `dt=YYYY-MM-DD/hour=HH`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "dt={:04}-{:02}-{:02}/hour={:02}",
            self.year, self.month, self.day, self.hour
        )
    }
}

const RECEIVED_AT_FORMAT: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

/// A receive time as RFC 3339 in UTC with microseconds.
pub fn format_received_at(timestamp: &Timestamp) -> String {
    wire::to_datetime(timestamp)
        .map(|datetime| datetime.to_offset(time::UtcOffset::UTC))
        .and_then(|datetime: OffsetDateTime| datetime.format(RECEIVED_AT_FORMAT).ok())
        .unwrap_or_default()
}

/// One lake line for an event (without the newline).
pub fn event_record(event: &Event, received_at: &Timestamp) -> Value {
    let mut record = Map::new();
    record.insert("event_id".into(), event.event_id.clone().into());
    record.insert("user_id".into(), event.user_id.clone().into());
    record.insert(
        "event_type".into(),
        enum_name::<EventType>(event.event_type).into(),
    );
    record.insert("source".into(), enum_name::<Source>(event.source).into());
    record.insert(
        "timestamp".into(),
        event
            .timestamp
            .as_ref()
            .map(wire::format_timestamp)
            .unwrap_or_default()
            .into(),
    );
    record.insert(
        "properties".into(),
        Value::Object(wire::properties_json(event.properties.as_ref())),
    );
    if let Some(user) = &event.user {
        record.insert("user".into(), wire::user_json(user));
    }
    record.insert("received_at".into(), format_received_at(received_at).into());
    Value::Object(record)
}

/// One lake line for an event, serialized, without the newline.
pub fn event_line(event: &Event, received_at: &Timestamp) -> Vec<u8> {
    // Serializing a `Value` into a Vec cannot fail.
    serde_json::to_vec(&event_record(event, received_at)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use vesper::v1::{Properties, PurchaseProperties, User, UserStatus, properties::Typed};

    use super::*;

    fn timestamp(text: &str) -> Timestamp {
        wire::parse_timestamp(text).expect("timestamp")
    }

    #[test]
    fn partitions_follow_the_utc_hour_of_the_event() {
        let partition = Partition::of(&timestamp("2026-11-25T23:59:59+02:00")).expect("in range");
        assert_eq!(partition.to_string(), "dt=2026-11-25/hour=21");
        assert_eq!(
            partition.object_key(7, 56, "0123456789abcdef"),
            "events/dt=2026-11-25/hour=21/00000000000000000007-00000000000000000056-0123456789abcdef.ndjson"
        );
        let midnight = Partition::of(&timestamp("2026-01-01T00:00:00Z")).expect("in range");
        assert_eq!(midnight.to_string(), "dt=2026-01-01/hour=00");
        assert!(midnight < partition);
        for partition in [partition, midnight] {
            assert_eq!(
                Partition::from_unix_hour(partition.unix_hour()),
                Some(partition)
            );
        }
    }

    #[test]
    fn records_have_the_documented_fields_in_order() {
        let event = Event {
            event_id: "0b6f5a4e-2f7e-4a47-9a43-3f4a2f0c9d11".into(),
            user_id: "user_42".into(),
            user: Some(User {
                user_id: "user_42".into(),
                age: 31,
                status: UserStatus::Paid as i32,
                country: "BR".into(),
                created_at: Some(timestamp("2023-05-01T00:00:00Z")),
            }),
            event_type: EventType::Purchase as i32,
            source: Source::Android as i32,
            timestamp: Some(timestamp("2026-11-25T21:04:05Z")),
            properties: Some(Properties {
                typed: Some(Typed::Purchase(PurchaseProperties {
                    amount: 19.5,
                    product_id: "prod_7".into(),
                })),
                extra: None,
            }),
        };
        let line = event_record(&event, &timestamp("2026-11-25T21:04:06.5Z")).to_string();
        assert_eq!(
            line,
            r#"{"event_id":"0b6f5a4e-2f7e-4a47-9a43-3f4a2f0c9d11","user_id":"user_42","event_type":"purchase","source":"android","timestamp":"2026-11-25T21:04:05Z","properties":{"amount":19.5,"product_id":"prod_7"},"user":{"user_id":"user_42","age":31,"status":"paid","country":"BR","created_at":"2023-05-01T00:00:00Z"},"received_at":"2026-11-25T21:04:06.500000Z"}"#
        );

        let plain = Event {
            user: None,
            event_type: EventType::Click as i32,
            properties: None,
            ..event
        };
        let line = event_record(&plain, &timestamp("2026-11-25T21:04:06Z")).to_string();
        assert!(!line.contains("\"user\""), "{line}");
        assert!(line.contains(r#""properties":{},"received_at":"2026-11-25T21:04:06.000000Z""#));
    }
}
