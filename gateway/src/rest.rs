//! The old data server's REST API, each route one DataSource call:
//! `GET /api/users`, `/api/content`, `/api/events`,
//! `/api/events/source/{source}`, `POST /start-generator`,
//! `/stop-generator`. Bodies, field order, status codes and error messages
//! are the old server's; the inputs it mishandled get a 400 instead
//! (docs/compatibility.md, "Where vesper deliberately differs").
//!
//! Query values are parsed here, not by axum's `Query`, so that every bad
//! value gets the old vocabulary (`{"error":"Invalid offset"}`) rather than
//! a framework's rejection text.

use axum::{
    Json, Router,
    extract::{Path, RawQuery, State, rejection::PathRejection},
    routing::{get, post},
};
use std::sync::Arc;

use serde_json::{Value, json};
use vesper::{
    auth::{Right, TokenTable},
    v1::{
        GenerateEventsRequest, ListContentRequest, ListUsersRequest, Source, StartGeneratorRequest,
        StopGeneratorRequest,
    },
    wire::{WireEnum, content_json, upstream_event_json, user_json},
};

use crate::{
    AppState, GatewayError,
    auth::{Needs, require_right},
};

/// The peer every route here calls.
const PEER: &str = "datasource";

/// The REST routes, each behind the right it needs (when auth is on):
/// reads of the upstream's data need `source:read`, the generator's
/// switches `generator:control`.
pub(crate) fn routes(tokens: Option<Arc<TokenTable>>) -> Router<AppState> {
    let needs = |right| {
        axum::middleware::from_fn_with_state(
            Needs {
                tokens: tokens.clone(),
                right,
            },
            require_right,
        )
    };
    Router::new()
        .route(
            "/api/users",
            get(list_users).route_layer(needs(Right::SourceRead)),
        )
        .route(
            "/api/content",
            get(list_content).route_layer(needs(Right::SourceRead)),
        )
        .route(
            "/api/events",
            get(list_events).route_layer(needs(Right::SourceRead)),
        )
        .route(
            "/api/events/source/{source}",
            get(events_by_source).route_layer(needs(Right::SourceRead)),
        )
        .route(
            "/start-generator",
            post(start_generator).route_layer(needs(Right::GeneratorControl)),
        )
        .route(
            "/stop-generator",
            post(stop_generator).route_layer(needs(Right::GeneratorControl)),
        )
}

/// `GET /api/users?offset=O&limit=L`: one page of users.
#[tracing::instrument(skip_all)]
async fn list_users(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, GatewayError> {
    let query = QueryParams::parse(query.as_deref());
    let offset = query.whole("offset", "Invalid offset")?.unwrap_or(0);
    let limit = query.positive("limit", "Invalid limit")?;
    let page = state
        .peers()
        .datasource()
        .list_users(ListUsersRequest {
            offset: saturate(offset),
            limit: limit.map(saturate),
        })
        .await
        .map_err(|status| peer_error(&state, status))?
        .into_inner();
    Ok(Json(json!({
        "users": page.users.iter().map(user_json).collect::<Vec<_>>(),
        "count": page.count,
        "total_users": page.total_users,
        "offset": page.offset,
        "limit": page.limit,
        "has_more": page.has_more,
        "next_offset": page.next_offset,
    })))
}

/// `GET /api/content`: the whole catalogue.
#[tracing::instrument(skip_all)]
async fn list_content(State(state): State<AppState>) -> Result<Json<Value>, GatewayError> {
    let catalogue = state
        .peers()
        .datasource()
        .list_content(ListContentRequest {})
        .await
        .map_err(|status| peer_error(&state, status))?
        .into_inner();
    Ok(Json(json!({
        "content": catalogue.content.iter().map(content_json).collect::<Vec<_>>(),
        "count": catalogue.count,
        "total_content": catalogue.total_content,
    })))
}

/// `GET /api/events?count=C`: random events from any source, with the
/// upstream's deliberate 503s and stalls.
#[tracing::instrument(skip_all)]
async fn list_events(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, GatewayError> {
    let query = QueryParams::parse(query.as_deref());
    let count = query.positive("count", "Invalid count")?;
    let batch = generate(&state, count, Source::Unspecified).await?;
    Ok(Json(json!({
        "events": batch.events,
        "total_count": batch.total_count,
        "has_more": batch.has_more,
    })))
}

/// `GET /api/events/source/{source}?count=C`: random events from one
/// source, reliably.
#[tracing::instrument(skip_all)]
async fn events_by_source(
    State(state): State<AppState>,
    source: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, GatewayError> {
    let source = source
        .ok()
        .and_then(|Path(name)| Source::from_wire(&name))
        .ok_or_else(|| GatewayError::bad_request("Invalid source"))?;
    let query = QueryParams::parse(query.as_deref());
    let count = query.positive("count", "Invalid count")?;
    let batch = generate(&state, count, source).await?;
    Ok(Json(json!({ "events": batch.events })))
}

/// `POST /start-generator`.
#[tracing::instrument(skip_all)]
async fn start_generator(State(state): State<AppState>) -> Result<Json<Value>, GatewayError> {
    let answer = state
        .peers()
        .datasource()
        .start_generator(StartGeneratorRequest {})
        .await
        .map_err(|status| peer_error(&state, status))?
        .into_inner();
    Ok(Json(json!({ "message": answer.message })))
}

/// `POST /stop-generator`.
#[tracing::instrument(skip_all)]
async fn stop_generator(State(state): State<AppState>) -> Result<Json<Value>, GatewayError> {
    let answer = state
        .peers()
        .datasource()
        .stop_generator(StopGeneratorRequest {})
        .await
        .map_err(|status| peer_error(&state, status))?
        .into_inner();
    Ok(Json(json!({ "message": answer.message })))
}

/// Generated events in their upstream JSON shape.
struct EventBatch {
    events: Vec<Value>,
    total_count: u32,
    has_more: bool,
}

async fn generate(
    state: &AppState,
    count: Option<i64>,
    source: Source,
) -> Result<EventBatch, GatewayError> {
    let answer = state
        .peers()
        .datasource()
        .generate_events(GenerateEventsRequest {
            count: count.map(saturate),
            source: source as i32,
        })
        .await
        .map_err(|status| peer_error(state, status))?
        .into_inner();
    Ok(EventBatch {
        events: answer.events.iter().map(upstream_event_json).collect(),
        total_count: answer.total_count,
        has_more: answer.has_more,
    })
}

fn peer_error(state: &AppState, status: tonic::Status) -> GatewayError {
    GatewayError::from_peer(PEER, state.peers().datasource_addr(), status)
}

/// A number as the contract's `int32`: values past its range stay past
/// every limit (an offset too large is still too large, a limit too large
/// is still capped).
fn saturate(value: i64) -> i32 {
    i32::try_from(value).unwrap_or(if value < 0 { i32::MIN } else { i32::MAX })
}

/// A query string's parameters, in order. Like the old server (Go's
/// `Query().Get`), the first of repeated parameters wins, and unknown
/// parameters are ignored.
struct QueryParams(Vec<(String, String)>);

impl QueryParams {
    fn parse(query: Option<&str>) -> Self {
        Self(
            form_urlencoded::parse(query.unwrap_or_default().as_bytes())
                .into_owned()
                .collect(),
        )
    }

    fn first(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// A whole number, if given; anything else given is `error`.
    fn whole(&self, name: &str, error: &'static str) -> Result<Option<i64>, InvalidParam> {
        self.first(name)
            .map(|text| parse_whole(text).ok_or(InvalidParam(error)))
            .transpose()
    }

    /// A whole number of at least 1, if given; anything else given is
    /// `error`.
    fn positive(&self, name: &str, error: &'static str) -> Result<Option<i64>, InvalidParam> {
        match self.whole(name, error)? {
            Some(value) if value < 1 => Err(InvalidParam(error)),
            other => Ok(other),
        }
    }
}

/// A query value that is not what its parameter takes; the message is the
/// old server's ("Invalid limit").
#[derive(Debug)]
struct InvalidParam(&'static str);

impl From<InvalidParam> for GatewayError {
    fn from(InvalidParam(message): InvalidParam) -> Self {
        Self::bad_request(message)
    }
}

/// A decimal whole number with an optional sign, as Go's `strconv.Atoi`
/// reads it; magnitudes beyond `i64` saturate, since they are out of every
/// range anyway. `None` for anything else, the empty string included.
fn parse_whole(text: &str) -> Option<i64> {
    let (negative, digits) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let magnitude = digits.bytes().fold(0i64, |value, digit| {
        value
            .saturating_mul(10)
            .saturating_add(i64::from(digit - b'0'))
    });
    Some(if negative { -magnitude } else { magnitude })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_numbers_are_read_like_the_old_server_read_them() {
        assert_eq!(parse_whole("0"), Some(0));
        assert_eq!(parse_whole("9990"), Some(9990));
        assert_eq!(parse_whole("+5"), Some(5));
        assert_eq!(parse_whole("-5"), Some(-5));
        assert_eq!(parse_whole("99999999999999999999999"), Some(i64::MAX));
        for bad in ["", "-", "+", "abc", "1.5", "1e3", " 1", "0x10", "１"] {
            assert_eq!(parse_whole(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_first_of_repeated_parameters_wins() {
        let query = QueryParams::parse(Some("limit=5&offset=abc&limit=7&x"));
        assert_eq!(query.first("limit"), Some("5"));
        assert_eq!(query.first("x"), Some(""));
        assert_eq!(query.first("count"), None);
        assert!(query.whole("offset", "Invalid offset").is_err());
        assert_eq!(query.positive("limit", "Invalid limit").ok(), Some(Some(5)));
        let zero = QueryParams::parse(Some("limit=0"));
        assert!(zero.positive("limit", "Invalid limit").is_err());
    }

    #[test]
    fn out_of_range_numbers_stay_out_of_range() {
        assert_eq!(saturate(i64::MAX), i32::MAX);
        assert_eq!(saturate(i64::MIN), i32::MIN);
        assert_eq!(saturate(200), 200);
    }
}
