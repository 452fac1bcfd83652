use serde_json::json;

use super::decode::REQUIRED_EVENT_FIELDS;
use super::*;

fn upstream_purchase() -> Value {
    json!({
        "event_id": "5f0c6b7e-8a43-4f0e-9a57-2f4c1d2b9e11",
        "user_id": {
            "user_id": "user_42",
            "age": 31,
            "status": "paid",
            "country": "BR",
            "created_at": "2023-05-01T00:00:00Z"
        },
        "event_type": "purchase",
        "source": "apple",
        "timestamp": "2026-11-25T21:04:05Z",
        "properties": {"amount": 129.99, "product_id": "prod_7"}
    })
}

fn view_with_string_user() -> Value {
    json!({
        "event_id": "0b7e6a7c-1d2e-4f00-8a9b-3c4d5e6f7a8b",
        "user_id": "user_7",
        "event_type": "view",
        "source": "web",
        "timestamp": "2026-11-25T23:59:59+01:00",
        "properties": {
            "content_id": "content_12",
            "media_type": "video",
            "prayer_type": "lectio_divina",
            "referrer": "push"
        }
    })
}

fn decode_one(event: Value) -> Result<Event, Vec<String>> {
    decode_webhook(&json!({ "events": [event] }))
        .map(|mut events| events.remove(0))
        .map_err(|errors| errors.iter().map(ToString::to_string).collect())
}

fn errors_of(event: Value) -> Vec<String> {
    decode_one(event).expect_err("expected the event to be refused")
}

#[test]
fn the_real_upstream_shape_decodes_with_the_user_snapshot() {
    let event = decode_one(upstream_purchase()).expect("valid");
    assert_eq!(event.user_id, "user_42");
    let user = event.user.expect("snapshot kept");
    assert_eq!(user.age, 31);
    assert_eq!(user.status, UserStatus::Paid as i32);
    assert_eq!(user.country, "BR");
    assert_eq!(event.event_type, EventType::Purchase as i32);
    assert_eq!(event.source, Source::Apple as i32);
    let properties = event.properties.expect("properties");
    assert_eq!(
        properties.typed,
        Some(Typed::Purchase(PurchaseProperties {
            amount: 129.99,
            product_id: "prod_7".into()
        }))
    );
    assert!(properties.extra.is_none());
}

#[test]
fn a_string_user_id_and_extra_properties_are_kept() {
    let event = decode_one(view_with_string_user()).expect("valid");
    assert_eq!(event.user_id, "user_7");
    assert!(event.user.is_none());
    // Offsets are normalised to UTC.
    assert_eq!(
        format_timestamp(event.timestamp.as_ref().expect("timestamp")),
        "2026-11-25T22:59:59Z"
    );
    let properties = properties_json(event.properties.as_ref());
    assert_eq!(properties["prayer_type"], "lectio_divina");
    assert_eq!(properties["referrer"], "push");
}

#[test]
fn encoding_follows_the_upstream_field_order_and_round_trips() {
    let event = decode_one(upstream_purchase()).expect("valid");
    let encoded = upstream_event_json(&event);
    let fields: Vec<_> = encoded
        .as_object()
        .expect("object")
        .keys()
        .cloned()
        .collect();
    assert_eq!(fields, REQUIRED_EVENT_FIELDS);
    assert_eq!(encoded, upstream_purchase());
    let user_fields: Vec<_> = encoded["user_id"]
        .as_object()
        .expect("nested user")
        .keys()
        .cloned()
        .collect();
    assert_eq!(
        user_fields,
        ["user_id", "age", "status", "country", "created_at"]
    );
    assert_eq!(decode_one(encoded).expect("round trip"), event);
}

#[test]
fn every_missing_field_is_named() {
    let errors = errors_of(json!({}));
    assert_eq!(
        errors,
        [
            "events[0].event_id: missing",
            "events[0].user_id: missing",
            "events[0].event_type: missing",
            "events[0].source: missing",
            "events[0].timestamp: missing",
            "events[0].properties: missing",
        ]
    );
}

#[test]
fn each_field_rule_has_its_own_message() {
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "event_id",
            json!("not-a-uuid"),
            "events[0].event_id: \"not-a-uuid\" is not a UUID",
        ),
        (
            "event_id",
            json!(7),
            "events[0].event_id: expected a string, got a number",
        ),
        ("user_id", json!(""), "events[0].user_id: must not be empty"),
        (
            "user_id",
            json!(42),
            "events[0].user_id: expected a string or a user object, got a number",
        ),
        (
            "user_id",
            json!({"age": 3}),
            "events[0].user_id.user_id: missing",
        ),
        (
            "user_id",
            json!({"user_id": ""}),
            "events[0].user_id.user_id: must not be empty",
        ),
        (
            "user_id",
            json!({"user_id": "u", "age": -1}),
            "events[0].user_id.age: expected a whole number from 0 to 150",
        ),
        (
            "user_id",
            json!({"user_id": "u", "status": "vip"}),
            "events[0].user_id.status: unknown value \"vip\", expected one of free, paid, trial",
        ),
        (
            "event_type",
            json!("dance"),
            "events[0].event_type: unknown value \"dance\", expected one of click, view, purchase, signup, pray, share, like",
        ),
        (
            "source",
            json!("windows"),
            "events[0].source: unknown value \"windows\", expected one of web, apple, android",
        ),
        (
            "source",
            json!(null),
            "events[0].source: expected a string, got null",
        ),
        (
            "timestamp",
            json!("yesterday"),
            "events[0].timestamp: not an RFC 3339 date-time",
        ),
        (
            "timestamp",
            json!("2026-11-25 21:04:05"),
            "events[0].timestamp: not an RFC 3339 date-time",
        ),
        (
            "timestamp",
            json!(1764104645),
            "events[0].timestamp: expected an RFC 3339 date-time string, got a number",
        ),
        (
            "properties",
            json!([]),
            "events[0].properties: expected an object, got an array",
        ),
    ];
    for (field, value, expected) in cases {
        let mut event = upstream_purchase();
        event[field] = value;
        assert_eq!(errors_of(event), [expected], "{field}");
    }
}

#[test]
fn typed_properties_are_checked_by_event_type() {
    let mut purchase = upstream_purchase();
    purchase["properties"] = json!({"amount": "12.5"});
    assert_eq!(
        errors_of(purchase),
        [
            "events[0].properties.product_id: missing",
            "events[0].properties.amount: expected a number, got a string",
        ]
    );
    let mut negative = upstream_purchase();
    negative["properties"]["amount"] = json!(-3);
    assert_eq!(
        errors_of(negative),
        ["events[0].properties.amount: must be a finite number, 0 or more"]
    );

    let mut view = view_with_string_user();
    view["properties"] =
        json!({"content_id": "content_1", "media_type": "hologram", "prayer_type": "rosary"});
    assert_eq!(
        errors_of(view),
        [
            "events[0].properties.media_type: unknown value \"hologram\", expected one of video, audio, text"
        ]
    );
    let mut like = view_with_string_user();
    like["event_type"] = json!("like");
    like["properties"] = json!({});
    assert_eq!(
        errors_of(like),
        [
            "events[0].properties.content_id: missing",
            "events[0].properties.media_type: missing",
            "events[0].properties.prayer_type: missing",
        ]
    );

    // Untyped events keep whatever they carry.
    let mut click = view_with_string_user();
    click["event_type"] = json!("click");
    click["properties"] = json!({"button": "pray-now", "x": 3});
    let event = decode_one(click).expect("click");
    assert!(event.properties.as_ref().expect("p").typed.is_none());
    assert_eq!(properties_json(event.properties.as_ref())["x"], 3);
}

#[test]
fn the_body_shape_is_checked_first() {
    let check = |body: Value, expected: &str| {
        let errors = decode_webhook(&body).expect_err("refused");
        assert_eq!(errors[0].to_string(), expected);
    };
    check(
        json!([]),
        "body: expected a JSON object with an array \"events\", got an array",
    );
    check(json!({}), "events: missing");
    check(
        json!({"events": {}}),
        "events: expected an array, got an object",
    );
    check(
        json!({"events": [1]}),
        "events[0]: expected an object, got a number",
    );
    assert_eq!(decode_webhook(&json!({"events": []})), Ok(vec![]));
}

#[test]
fn every_bad_event_of_a_batch_is_reported() {
    let mut bad = view_with_string_user();
    bad["source"] = json!("fax");
    let body = json!({"events": [upstream_purchase(), bad, {"event_id": 1}]});
    let errors = decode_webhook(&body).expect_err("refused");
    assert!(errors.iter().any(|e| e.path == "events[1].source"));
    assert!(errors.iter().any(|e| e.path == "events[2].event_id"));
    assert!(errors.iter().all(|e| !e.path.starts_with("events[0]")));
}

#[test]
fn typed_events_from_grpc_follow_the_same_rules() {
    let valid = decode_one(upstream_purchase()).expect("valid");
    assert!(validate_event("events[0]", &valid).is_empty());

    let mut unspecified = valid.clone();
    unspecified.event_type = 0;
    unspecified.source = 99;
    let errors: Vec<_> = validate_event("events[4]", &unspecified)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        errors[0].starts_with("events[4].event_type: missing or unknown"),
        "{errors:?}"
    );
    assert!(
        errors[1].starts_with("events[4].source: missing or unknown"),
        "{errors:?}"
    );

    let mut mismatch = valid.clone();
    mismatch.user_id = "user_1".into();
    assert_eq!(
        validate_event("e", &mismatch)[0].to_string(),
        "e.user.user_id: \"user_42\" does not match user_id \"user_1\""
    );

    let mut untyped_purchase = valid.clone();
    untyped_purchase.properties = None;
    assert_eq!(
        validate_event("e", &untyped_purchase)[0].to_string(),
        "e.properties: purchase events need amount and product_id"
    );

    let mut typed_click = valid;
    typed_click.event_type = EventType::Click as i32;
    assert_eq!(
        validate_event("e", &typed_click)[0].to_string(),
        "e.properties: click events carry no typed properties"
    );
}

#[test]
fn users_and_content_encode_like_the_old_server() {
    let user = User {
        user_id: "user_1".into(),
        age: 34,
        status: UserStatus::Trial as i32,
        country: "IT".into(),
        created_at: parse_timestamp("2023-11-08T00:00:00Z"),
    };
    assert_eq!(
        serde_json::to_string(&user_json(&user)).expect("json"),
        r#"{"user_id":"user_1","age":34,"status":"trial","country":"IT","created_at":"2023-11-08T00:00:00Z"}"#
    );
    let content = Content {
        content_id: "content_9".into(),
        media_type: MediaType::Audio as i32,
        prayer_type: PrayerType::Meditation as i32,
        created_at: parse_timestamp("2024-02-29T00:00:00Z"),
    };
    assert_eq!(
        serde_json::to_string(&content_json(&content)).expect("json"),
        r#"{"content_id":"content_9","media_type":"audio","prayer_type":"meditation","created_at":"2024-02-29T00:00:00Z"}"#
    );
}

#[test]
fn timestamps_keep_fractions_only_when_present() {
    let whole = parse_timestamp("2026-11-25T21:04:05Z").expect("whole");
    assert_eq!(format_timestamp(&whole), "2026-11-25T21:04:05Z");
    let fraction = parse_timestamp("2026-11-25T21:04:05.250Z").expect("fraction");
    assert_eq!(fraction.nanos, 250_000_000);
    assert_eq!(format_timestamp(&fraction), "2026-11-25T21:04:05.25Z");
    let broken = Timestamp {
        seconds: 0,
        nanos: -1,
    };
    assert!(to_datetime(&broken).is_none());
}

fn nested_arrays(depth: usize) -> Value {
    let mut value = json!("leaf");
    for _ in 0..depth {
        value = json!([value]);
    }
    value
}

fn click_with(properties: Value) -> Value {
    json!({
        "event_id": "7e8f9a0b-1c2d-4e3f-9a5b-6c7d8e9f0a1b",
        "user_id": "user_3",
        "event_type": "click",
        "source": "web",
        "timestamp": "2026-12-01T00:00:00Z",
        "properties": properties
    })
}

#[test]
fn nesting_past_the_bound_is_refused_naming_the_field() {
    // The properties object is level 1: 19 arrays inside it is level 20.
    let deepest = click_with(json!({ "x": nested_arrays(MAX_PROPERTIES_DEPTH - 1) }));
    let event = decode_one(deepest).expect("the deepest allowed nesting is accepted");
    // ...and survives a protobuf round trip through every hop's decoder.
    let request = crate::v1::IngestRequest {
        events: vec![event.clone()],
    };
    let bytes = prost::Message::encode_to_vec(&request);
    let decoded: crate::v1::IngestRequest =
        prost::Message::decode(bytes.as_slice()).expect("decodes within the recursion limit");
    assert_eq!(decoded.events, [event]);

    let errors = errors_of(click_with(json!({ "x": nested_arrays(48) })));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("events[0].properties.x[0]")
            && errors[0].contains("nests deeper than 20 levels"),
        "{errors:?}"
    );
}

#[test]
fn too_many_or_too_long_keys_are_refused() {
    let mut many = Map::new();
    for n in 0..=MAX_PROPERTY_KEYS {
        many.insert(format!("k{n}"), json!(n));
    }
    let errors = errors_of(click_with(Value::Object(many)));
    assert!(errors[0].contains("more than 1000 keys"), "{errors:?}");

    let long_key = "k".repeat(MAX_PROPERTY_KEY_BYTES + 1);
    let errors = errors_of(click_with(json!({ "outer": { long_key: 1 } })));
    assert!(
        errors[0].starts_with("events[0].properties.outer:") && errors[0].contains("257 bytes"),
        "{errors:?}"
    );
}

#[test]
fn timestamps_outside_1970_to_9999_are_refused() {
    for (timestamp, ok) in [
        ("1970-01-01T00:00:00Z", true),
        ("9999-12-31T23:59:59Z", true),
        ("1969-12-31T23:59:59Z", false),
    ] {
        let mut event = click_with(json!({}));
        event["timestamp"] = json!(timestamp);
        assert_eq!(decode_one(event).is_ok(), ok, "{timestamp}");
    }
    // Over gRPC a timestamp can say anything the type holds: year -1.
    let mut event = decode_one(click_with(json!({}))).expect("valid");
    event.timestamp = Some(Timestamp {
        seconds: -62_198_755_200,
        nanos: 0,
    });
    let errors: Vec<String> = validate_event("events[0]", &event)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        errors,
        ["events[0].timestamp: year -1 is outside 1970..=9999"]
    );
}

#[test]
fn a_body_past_the_event_cap_is_refused_before_decoding() {
    let body = format!("{{\"events\":[{}]}}", vec!["{}"; 350_000].join(","));
    assert_eq!(
        decode_webhook_body(body.as_bytes(), 10_000),
        Err(WebhookRefusal::TooManyEvents { limit: 10_000 })
    );
    // Under the cap, problems are collected up to their own cap.
    let body = format!("{{\"events\":[{}]}}", vec!["{}"; 5_000].join(","));
    let Err(WebhookRefusal::Invalid {
        problems,
        more,
        offered,
    }) = decode_webhook_body(body.as_bytes(), 10_000)
    else {
        panic!("expected a refusal");
    };
    assert_eq!(problems.len(), MAX_REPORTED_PROBLEMS);
    assert_eq!(offered, 5_000);
    assert_eq!(more, 5_000 * 6 - MAX_REPORTED_PROBLEMS);
}

#[test]
fn the_raw_body_decoder_keeps_the_old_messages() {
    let refusal = |body: &str| match decode_webhook_body(body.as_bytes(), 10) {
        Err(WebhookRefusal::Invalid { problems, .. }) => problems[0].to_string(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        refusal("[1]"),
        "body: expected a JSON object with an array \"events\", got an array"
    );
    assert_eq!(refusal("{}"), "events: missing");
    assert_eq!(
        refusal("{\"events\":{}}"),
        "events: expected an array, got an object"
    );
    assert!(
        refusal("{\"events\":[").starts_with("body: EOF"),
        "{}",
        refusal("{\"events\":[")
    );
    let one = serde_json::to_string(&json!({ "events": [click_with(json!({}))] })).expect("json");
    assert_eq!(
        decode_webhook_body(one.as_bytes(), 10).map(|e| e.len()),
        Ok(1)
    );
}
