//! Random events of the upstream's shape: a random user (whose snapshot the
//! event carries, so the JSON face nests it in `user_id` as upstream did),
//! a random type and source, the current second, and properties by type.
//! About 3% of them are sent twice in the same batch, as upstream did.

use std::time::{SystemTime, UNIX_EPOCH};

use prost_types::Timestamp;
use rand::Rng;
use vesper::v1::{
    ContentProperties, Event, EventType, Properties, PurchaseProperties, Source, properties::Typed,
};

use crate::{DataSet, random::pick};

/// The share of generated events that are sent a second time in the same
/// batch (same event_id, same body).
pub const DUPLICATE_RATE: f64 = 0.03;

/// Products of purchase events: "prod_1" .. "prod_100".
const PRODUCTS: u32 = 100;
/// Purchase amounts in cents: 5.00 .. 500.00.
const AMOUNT_CENTS: std::ops::RangeInclusive<u32> = 500..=50_000;

const EVENT_TYPES: [EventType; 7] = [
    EventType::Click,
    EventType::View,
    EventType::Purchase,
    EventType::Signup,
    EventType::Pray,
    EventType::Share,
    EventType::Like,
];
const SOURCES: [Source; 3] = [Source::Web, Source::Apple, Source::Android];

/// `count` distinct random events from `source` (any source when `None`),
/// plus the duplicates, each placed at a random position after its
/// original.
pub fn generate_events(
    data: &DataSet,
    count: usize,
    source: Option<Source>,
    rng: &mut impl Rng,
) -> Vec<Event> {
    let now = now();
    let mut events: Vec<Event> = (0..count)
        .map(|_| random_event(data, source, now, rng))
        .collect();
    // Walking backwards, an insertion only moves events after the current
    // one, so every index still ahead of us stays valid.
    for index in (0..count).rev() {
        if rng.random_bool(DUPLICATE_RATE) {
            let position = rng.random_range(index + 1..=events.len());
            let copy = events[index].clone();
            events.insert(position, copy);
        }
    }
    metrics::counter!("vesper_datasource_events_generated_total")
        .increment(u64::try_from(events.len()).unwrap_or(u64::MAX));
    events
}

/// One random event at `timestamp`.
pub fn random_event(
    data: &DataSet,
    source: Option<Source>,
    timestamp: Timestamp,
    rng: &mut impl Rng,
) -> Event {
    let user = pick(rng, data.users()).clone();
    let event_type = *pick(rng, &EVENT_TYPES);
    let source = source.unwrap_or_else(|| *pick(rng, &SOURCES));
    let typed = match event_type {
        EventType::Purchase => Some(Typed::Purchase(PurchaseProperties {
            amount: f64::from(rng.random_range(AMOUNT_CENTS)) / 100.0,
            product_id: format!("prod_{}", rng.random_range(1..=PRODUCTS)),
        })),
        EventType::View | EventType::Like | EventType::Share => {
            let item = pick(rng, data.content());
            Some(Typed::Content(ContentProperties {
                content_id: item.content_id.clone(),
                media_type: item.media_type,
                prayer_type: item.prayer_type,
            }))
        }
        _ => None,
    };
    Event {
        event_id: uuid::Builder::from_random_bytes(rng.random())
            .into_uuid()
            .to_string(),
        user_id: user.user_id.clone(),
        user: Some(user),
        event_type: event_type as i32,
        source: source as i32,
        timestamp: Some(timestamp),
        properties: Some(Properties { typed, extra: None }),
    }
}

/// The current second: upstream's timestamps have no fraction.
fn now() -> Timestamp {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    Timestamp {
        seconds: i64::try_from(seconds).unwrap_or(i64::MAX),
        nanos: 0,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use vesper::wire::{upstream_event_json, validate_event};

    use super::*;
    use crate::{DEFAULT_SEED, random::Stream, random::seeded};

    #[test]
    fn every_event_is_valid_and_duplicates_follow_their_original() {
        let data = DataSet::generate(DEFAULT_SEED);
        let mut rng = seeded(1, Stream::SampleUsers);
        let events = generate_events(&data, 5_000, None, &mut rng);
        let mut first_seen = HashMap::new();
        let mut duplicates = 0;
        for (index, event) in events.iter().enumerate() {
            let problems = validate_event("event", event);
            assert!(problems.is_empty(), "{problems:?}");
            match first_seen.get(&event.event_id) {
                None => {
                    first_seen.insert(event.event_id.clone(), index);
                }
                Some(&original) => {
                    duplicates += 1;
                    assert!(original < index);
                    assert_eq!(&events[original], event);
                }
            }
        }
        assert_eq!(first_seen.len(), 5_000);
        // 3% of 5,000 is 150; the bounds leave many standard deviations.
        assert!((90..=210).contains(&duplicates), "{duplicates}");
    }

    #[test]
    fn properties_follow_the_event_type() {
        let data = DataSet::generate(DEFAULT_SEED);
        let mut rng = seeded(2, Stream::SampleUsers);
        let events = generate_events(&data, 2_000, Some(Source::Android), &mut rng);
        let mut seen_types = std::collections::BTreeSet::new();
        for event in &events {
            let json = upstream_event_json(event);
            assert_eq!(json["source"], "android");
            let properties = json["properties"].as_object().expect("object");
            let event_type = json["event_type"].as_str().expect("type").to_owned();
            match event_type.as_str() {
                "purchase" => {
                    let amount = properties["amount"].as_f64().expect("amount");
                    assert!((5.0..=500.0).contains(&amount), "{amount}");
                    assert_eq!((amount * 100.0).round() / 100.0, amount);
                    let product = properties["product_id"].as_str().expect("product");
                    let n: u32 = product
                        .strip_prefix("prod_")
                        .and_then(|n| n.parse().ok())
                        .expect("prod_N");
                    assert!((1..=100).contains(&n));
                }
                "view" | "like" | "share" => {
                    let keys: Vec<_> = properties.keys().map(String::as_str).collect();
                    assert_eq!(keys, ["content_id", "media_type", "prayer_type"]);
                }
                _ => assert!(properties.is_empty(), "{json}"),
            }
            seen_types.insert(event_type);
        }
        assert_eq!(seen_types.len(), 7, "{seen_types:?}");
    }
}
