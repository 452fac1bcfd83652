//! Errors of the HTTP face, mapped once to HTTP through the kernel's
//! error-code table, and written as the old system wrote them:
//! `{"error": "<message>"}`, plus `details` when there are several problems.

use axum::{
    Json,
    response::{IntoResponse, Response},
};
use http::{HeaderValue, StatusCode, header::RETRY_AFTER, header::WWW_AUTHENTICATE};
use serde_json::json;
use vesper::{ErrorCode, ServiceError, config::PeerAddr, grpc::RETRY_AFTER_METADATA};

/// How long a client should wait before retrying a 503, when the peer did
/// not say.
const DEFAULT_RETRY_AFTER_SECS: u64 = 1;

/// Why an HTTP request failed.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The request is malformed; `message` is what the old system said
    /// ("Invalid offset", "Invalid payload"), `details` name each problem.
    #[error("{message}")]
    BadRequest {
        /// The headline.
        message: String,
        /// One line per problem, e.g. `events[3].timestamp: not an RFC
        /// 3339 date-time`.
        details: Vec<String>,
    },
    /// The body is larger than the limit.
    #[error("request body is over the {limit}-byte limit")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The body holds more events than one request may.
    #[error(
        "the body holds more than {limit} events, the most one request may carry (--webhook-max-events); split the batch"
    )]
    TooManyEvents {
        /// The cap.
        limit: usize,
    },
    /// The body's declared content type is not JSON.
    #[error("unsupported content type {content_type:?}: send application/json")]
    UnsupportedMediaType {
        /// The content type the client declared.
        content_type: String,
    },
    /// The signature is missing, wrong or stale.
    #[error("{message}")]
    Unauthenticated {
        /// What is wrong with it.
        message: String,
    },
    /// The caller's token lacks the right the route needs.
    #[error("{message}")]
    Forbidden {
        /// Which right is missing.
        message: String,
    },
    /// A peer refused the gateway's own token (`--peer-token-file`): a
    /// deployment mistake, not the client's.
    #[error(
        "{peer} refused the gateway's own token ({message}); give the gateway a peer token with the right (--peer-token-file, VESPER_PEER_TOKEN)"
    )]
    PeerRefusedToken {
        /// Which service.
        peer: &'static str,
        /// The peer's words (they name the right).
        message: String,
    },
    /// The client took longer than the body read timeout to send the next
    /// piece of the body.
    #[error(
        "the request body stalled: nothing arrived for {timeout_secs} s (--body-read-timeout, VESPER_BODY_READ_TIMEOUT)"
    )]
    BodyTimeout {
        /// The timeout in whole seconds.
        timeout_secs: u64,
    },
    /// A browser sent a state-changing request from another site.
    #[error("{reason}")]
    CrossSite {
        /// Why, and which flag allows it.
        reason: String,
    },
    /// The gateway is handling as many requests as it may.
    #[error(
        "the gateway is handling its limit of {limit} requests at once (--max-in-flight-requests, VESPER_MAX_IN_FLIGHT_REQUESTS); retry later"
    )]
    Overloaded {
        /// The limit.
        limit: usize,
    },
    /// A peer could not be reached at all (down, restarting, wrong address).
    #[error("{peer} is unavailable at {addr}: {message}")]
    PeerUnreachable {
        /// Which service ("datasource", "ingest").
        peer: &'static str,
        /// Where it was looked for.
        addr: PeerAddr,
        /// The transport's words.
        message: String,
    },
    /// A peer answered with an error; its message is passed on.
    #[error("{}", status.message())]
    Peer {
        /// The peer's status.
        status: tonic::Status,
    },
}

impl GatewayError {
    /// A 400 with one headline and no details (the old REST errors).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest {
            message: message.into(),
            details: Vec::new(),
        }
    }

    /// Sorts a failed gRPC call to `peer`: unreachable, or an answer.
    pub fn from_peer(peer: &'static str, addr: &PeerAddr, status: tonic::Status) -> Self {
        // A status the transport made (no server answered) carries its cause.
        if matches!(
            status.code(),
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
        ) {
            return Self::PeerRefusedToken {
                peer,
                message: status.message().to_owned(),
            };
        }
        if status.code() == tonic::Code::Unavailable && std::error::Error::source(&status).is_some()
        {
            return Self::PeerUnreachable {
                peer,
                addr: addr.clone(),
                message: status.message().to_owned(),
            };
        }
        Self::Peer { status }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            Self::PeerUnreachable { .. } | Self::Overloaded { .. } => {
                Some(DEFAULT_RETRY_AFTER_SECS)
            }
            Self::Peer { status } if self.code().is_transient() => Some(
                status
                    .metadata()
                    .get(RETRY_AFTER_METADATA)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| value.parse().ok())
                    .unwrap_or(DEFAULT_RETRY_AFTER_SECS),
            ),
            _ => None,
        }
    }
}

impl ServiceError for GatewayError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::BadRequest { .. } => ErrorCode::InvalidArgument,
            Self::PayloadTooLarge { .. } | Self::TooManyEvents { .. } => {
                ErrorCode::ResourceExhausted
            }
            Self::UnsupportedMediaType { .. } => ErrorCode::UnsupportedMediaType,
            Self::Unauthenticated { .. } | Self::CrossSite { .. } => ErrorCode::Unauthenticated,
            Self::Forbidden { .. } => ErrorCode::PermissionDenied,
            Self::PeerRefusedToken { .. } => ErrorCode::Internal,
            Self::BodyTimeout { .. } => ErrorCode::DeadlineExceeded,
            Self::Overloaded { .. } | Self::PeerUnreachable { .. } => ErrorCode::Unavailable,
            Self::Peer { status } => ErrorCode::from_grpc(status.code()),
        }
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let code = self.code();
        if code == ErrorCode::Internal {
            tracing::error!(error = %self, "request failed");
        } else if code.is_transient() {
            tracing::warn!(error = %self, "request failed; the client may retry");
        }
        let body = match &self {
            Self::BadRequest { details, .. } if !details.is_empty() => {
                json!({ "error": self.to_string(), "details": details })
            }
            _ => json!({ "error": self.to_string() }),
        };
        // HTTP has closer words than the shared table for these two.
        let status = match &self {
            Self::CrossSite { .. } => StatusCode::FORBIDDEN,
            Self::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            _ => code.http(),
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            // RFC 9110: a 401 names the scheme that would get through.
            response.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static(vesper::auth::CHALLENGE),
            );
        }
        if let Some(seconds) = self.retry_after()
            && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
        {
            response.headers_mut().insert(RETRY_AFTER, value);
        }
        response
    }
}
