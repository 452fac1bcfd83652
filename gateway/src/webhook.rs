//! `POST /webhook/events`: the old webhook handler's contract, made
//! durable. The body `{"events":[...]}` is read within the body limit,
//! checked against its signature or bearer token when those are on, decoded and validated
//! (`vesper::wire`), and handed to EventIngest; the 200 comes only after
//! ingest has the events fsynced in its write-ahead log.
//!
//! | answer | when |
//! | --- | --- |
//! | 200 `{"status":"success","accepted","filtered","duplicates"}` | the events are durable (or were signups / duplicates) |
//! | 400 `{"error":"Invalid payload","details":[...]}` | malformed JSON (with line and column) or any invalid event; nothing of the batch is stored |
//! | 401 `{"error":...}` | signing is on and the signature is missing, malformed, wrong or stale; or auth is on and the request is neither signed nor carries a known bearer token |
//! | 403 `{"error":...}` | a browser posts from another site whose origin is not allowed; or auth is on and the token lacks `events:write` |
//! | 408 `{"error":...}` | the body stalled for longer than the body read timeout |
//! | 413 `{"error":...}` | the body is over the byte limit, or holds more events than one request may |
//! | 415 `{"error":...}` | an explicit content type that is not JSON |
//! | 503 `{"error":...}` + `Retry-After` | the gateway is at its in-flight limit, ingest is unreachable, its log is full while storage is down, or its disk is full |

mod signature;

use axum::{Json, Router, body::Body, extract::State, routing::post};
use http::{HeaderMap, header::CONTENT_LENGTH, header::CONTENT_TYPE};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::{Value, json};
use vesper::{v1::IngestRequest, wire::WebhookRefusal};

use vesper::{auth::Right, signature::SIGNATURE_HEADER};

use crate::{AppState, GatewayConfig, GatewayError, auth};

/// Where the webhook is served.
pub(crate) const WEBHOOK_PATH: &str = "/webhook/events";

/// Problems listed in one 400 at most; the rest are counted.
const MAX_DETAILS: usize = 50;

/// The webhook route.
pub(crate) fn routes() -> Router<AppState> {
    Router::new().route(WEBHOOK_PATH, post(receive))
}

#[tracing::instrument(name = "webhook", skip_all, fields(bytes, events))]
async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, GatewayError> {
    if let Some(content_type) = unsupported_content_type(&headers) {
        return Err(GatewayError::UnsupportedMediaType { content_type });
    }
    let config = state.config();
    // With auth on, a signed request is authenticated by its signature
    // (senders of the old system cannot send tokens); any other needs a
    // token with events:write, checked before the body is read.
    let signing = config
        .webhook_signing
        .as_ref()
        .filter(|_| config.auth.is_none() || headers.contains_key(SIGNATURE_HEADER));
    if let Some(tokens) = &config.auth
        && signing.is_none()
    {
        tokens
            .authorize(&headers, Right::EventsWrite)
            .map_err(|refusal| {
                let refused = auth::refused(&refusal, "POST /webhook/events", Right::EventsWrite);
                match refused {
                    GatewayError::Unauthenticated { message }
                        if config.webhook_signing.is_some() =>
                    {
                        GatewayError::Unauthenticated {
                            message: format!("{message} (or sign it: X-Vesper-Signature)"),
                        }
                    }
                    other => other,
                }
            })?;
    }
    let raw = read_body(body, &headers, config).await?;
    tracing::Span::current().record("bytes", raw.len());
    if let Some(signing) = signing {
        signature::verify(signing, &headers, &raw, std::time::SystemTime::now())?;
    }
    let events = vesper::wire::decode_webhook_body(&raw, state.config().max_request_events)
        .map_err(|refusal| match refusal {
            WebhookRefusal::TooManyEvents { limit } => GatewayError::TooManyEvents { limit },
            WebhookRefusal::Invalid {
                problems,
                more,
                offered,
            } => {
                state.count_webhook_rejected(u64::try_from(offered).unwrap_or(u64::MAX));
                let mut details: Vec<String> = problems.iter().map(ToString::to_string).collect();
                if more > 0 {
                    details.push(format!("... and {more} more problems"));
                }
                invalid_payload(details)
            }
        })?;
    tracing::Span::current().record("events", events.len());
    if events.is_empty() {
        return Ok(success(0, 0, 0));
    }
    let peers = state.peers();
    let response = peers
        .ingest()
        .ingest(IngestRequest { events })
        .await
        .map_err(|status| GatewayError::from_peer("ingest", peers.ingest_addr(), status))?
        .into_inner();
    // Decoding validated already, but ingest is the authority.
    if !response.errors.is_empty() {
        return Err(invalid_payload(
            response
                .errors
                .iter()
                .map(|error| format!("{}: {}", error.field, error.reason)),
        ));
    }
    Ok(success(
        response.accepted,
        response.filtered,
        response.duplicates,
    ))
}

fn success(accepted: u32, filtered: u32, duplicates: u32) -> Json<Value> {
    Json(json!({
        "status": "success",
        "accepted": accepted,
        "filtered": filtered,
        "duplicates": duplicates,
    }))
}

/// The old handler's 400, with every problem (up to [`MAX_DETAILS`]).
fn invalid_payload(problems: impl IntoIterator<Item = String>) -> GatewayError {
    let mut details: Vec<String> = Vec::new();
    let mut more = 0_usize;
    for problem in problems {
        if details.len() < MAX_DETAILS {
            details.push(problem);
        } else {
            more += 1;
        }
    }
    if more > 0 {
        details.push(format!("... and {more} more problems"));
    }
    GatewayError::BadRequest {
        message: "Invalid payload".into(),
        details,
    }
}

/// The declared content type when it is not JSON. A missing content type
/// is read as JSON (old clients send none); an explicit one must be
/// `application/json` with any parameters, or any `+json` type.
fn unsupported_content_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(CONTENT_TYPE)?;
    let text = String::from_utf8_lossy(value.as_bytes());
    (!is_json(&text)).then(|| text.into_owned())
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind == "application" && (subtype == "json" || subtype.ends_with("+json"))
}

/// The whole body, or 413 as soon as it is known to be over `limit`.
async fn read_body(
    body: Body,
    headers: &HeaderMap,
    config: &GatewayConfig,
) -> Result<bytes::Bytes, GatewayError> {
    let limit = config.body_limit.bytes();
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(GatewayError::PayloadTooLarge { limit });
    }
    let limit_usize = usize::try_from(limit).unwrap_or(usize::MAX);
    match Limited::new(body, limit_usize).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => {
            Err(GatewayError::PayloadTooLarge { limit })
        }
        Err(err) if stalled(err.as_ref()) => Err(GatewayError::BodyTimeout {
            timeout_secs: config.body_read_timeout.as_secs(),
        }),
        Err(err) => Err(GatewayError::bad_request(format!(
            "cannot read the request body: {err}"
        ))),
    }
}

/// Whether a body failed because the client stopped sending it (the body
/// read timeout), wherever that sits in the error's chain.
fn stalled(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(err) = current {
        if err.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        current = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types_are_recognised() {
        for json in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/vnd.vesper.events+json",
            " application/json ;v=1",
        ] {
            assert!(is_json(json), "{json}");
        }
        for other in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/jsonp",
            "multipart/form-data; boundary=x",
            "json",
            "",
        ] {
            assert!(!is_json(other), "{other}");
        }
    }

    #[test]
    fn a_missing_content_type_is_json_and_an_explicit_other_is_refused() {
        assert_eq!(unsupported_content_type(&HeaderMap::new()), None);
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, "text/csv".parse().expect("header"));
        assert_eq!(
            unsupported_content_type(&headers).as_deref(),
            Some("text/csv")
        );
    }

    #[test]
    fn invalid_payloads_list_problems_up_to_a_cap() {
        let GatewayError::BadRequest { message, details } =
            invalid_payload((0..120).map(|n| format!("events[{n}].event_id: missing")))
        else {
            panic!("not a bad request");
        };
        assert_eq!(message, "Invalid payload");
        assert_eq!(details.len(), MAX_DETAILS + 1);
        assert_eq!(details[0], "events[0].event_id: missing");
        assert_eq!(details[MAX_DETAILS], "... and 70 more problems");
    }
}
