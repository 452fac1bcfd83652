//! The one table that maps vesper's error vocabulary to gRPC codes and to
//! HTTP statuses. Every crate's error enum names an [`ErrorCode`] per
//! variant; the servers turn it into a `tonic::Status` here and the gateway
//! turns a peer's status back into HTTP here, so the two faces never
//! disagree.

use http::StatusCode;
use tonic::Code;

/// What kind of failure an error is, independent of the protocol that
/// reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The caller sent something malformed (bad key, bad field, bad page).
    InvalidArgument,
    /// The thing asked for does not exist.
    NotFound,
    /// The request is valid but the current state forbids it (an fs key
    /// clashing with a directory of other keys).
    FailedPrecondition,
    /// The request is over a size limit.
    ResourceExhausted,
    /// The request body is in a format the endpoint does not read (an
    /// explicit non-JSON content type). gRPC has no such code; it travels
    /// as INVALID_ARGUMENT.
    UnsupportedMediaType,
    /// The caller is not authenticated (bad or missing signature or
    /// token).
    Unauthenticated,
    /// The caller is known but lacks the right the request needs.
    PermissionDenied,
    /// A dependency cannot be reached or the service is shedding load; retry
    /// later.
    Unavailable,
    /// The operation did not finish in time.
    DeadlineExceeded,
    /// The caller went away or the server is shutting down.
    Cancelled,
    /// The operation is not offered.
    Unimplemented,
    /// A bug or an unexpected environment failure (disk error, ...).
    Internal,
}

impl ErrorCode {
    /// The gRPC status code for this error.
    pub const fn grpc(self) -> Code {
        match self {
            Self::InvalidArgument => Code::InvalidArgument,
            Self::NotFound => Code::NotFound,
            Self::FailedPrecondition => Code::FailedPrecondition,
            Self::ResourceExhausted => Code::ResourceExhausted,
            Self::UnsupportedMediaType => Code::InvalidArgument,
            Self::Unauthenticated => Code::Unauthenticated,
            Self::PermissionDenied => Code::PermissionDenied,
            Self::Unavailable => Code::Unavailable,
            Self::DeadlineExceeded => Code::DeadlineExceeded,
            Self::Cancelled => Code::Cancelled,
            Self::Unimplemented => Code::Unimplemented,
            Self::Internal => Code::Internal,
        }
    }

    /// The HTTP status for this error, after Google's API design guide
    /// (FAILED_PRECONDITION is a 409 here: the request was fine, the state
    /// of the target is not).
    pub const fn http(self) -> StatusCode {
        match self {
            Self::InvalidArgument => StatusCode::BAD_REQUEST,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::FailedPrecondition => StatusCode::CONFLICT,
            Self::ResourceExhausted => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::PermissionDenied => StatusCode::FORBIDDEN,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Self::Cancelled => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Reads a peer's gRPC code back into the vocabulary. Codes vesper never
    /// sends on purpose are folded into the nearest kind.
    pub const fn from_grpc(code: Code) -> Self {
        match code {
            Code::InvalidArgument | Code::OutOfRange => Self::InvalidArgument,
            Code::NotFound => Self::NotFound,
            Code::FailedPrecondition | Code::AlreadyExists | Code::Aborted => {
                Self::FailedPrecondition
            }
            Code::ResourceExhausted => Self::ResourceExhausted,
            Code::Unauthenticated => Self::Unauthenticated,
            Code::PermissionDenied => Self::PermissionDenied,
            Code::Unavailable => Self::Unavailable,
            Code::DeadlineExceeded => Self::DeadlineExceeded,
            Code::Cancelled => Self::Cancelled,
            Code::Unimplemented => Self::Unimplemented,
            Code::Ok | Code::Unknown | Code::Internal | Code::DataLoss => Self::Internal,
        }
    }

    /// Whether a caller may retry the same request later and expect it to
    /// succeed.
    pub const fn is_transient(self) -> bool {
        matches!(
            self,
            Self::Unavailable | Self::DeadlineExceeded | Self::Cancelled
        )
    }
}

/// An error that knows which [`ErrorCode`] it is. Every library crate's
/// error enum implements this, and converts into `tonic::Status` through
/// [`to_status`].
/// An error with its causes, `outer: inner: root`, leaving out a cause
/// whose text the message already holds (reqwest's and hyper's own
/// messages leave out why a request failed, e.g. "connection refused").
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

pub trait ServiceError: std::error::Error {
    /// The kind of failure.
    fn code(&self) -> ErrorCode;
}

/// The gRPC status for a service error: its code from the table, its
/// `Display` text as the message. Internal errors are logged here, once,
/// because the caller only sees the message.
pub fn to_status<E: ServiceError + ?Sized>(err: &E) -> tonic::Status {
    let code = err.code();
    if code == ErrorCode::Internal {
        tracing::error!(error = %err, "internal error");
    }
    tonic::Status::new(code.grpc(), err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [ErrorCode; 12] = [
        ErrorCode::InvalidArgument,
        ErrorCode::NotFound,
        ErrorCode::FailedPrecondition,
        ErrorCode::ResourceExhausted,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::Unauthenticated,
        ErrorCode::PermissionDenied,
        ErrorCode::Unavailable,
        ErrorCode::DeadlineExceeded,
        ErrorCode::Cancelled,
        ErrorCode::Unimplemented,
        ErrorCode::Internal,
    ];

    #[test]
    fn every_code_survives_a_grpc_round_trip() {
        for code in ALL {
            let expected = match code {
                // An HTTP-only distinction: it travels as INVALID_ARGUMENT.
                ErrorCode::UnsupportedMediaType => ErrorCode::InvalidArgument,
                other => other,
            };
            assert_eq!(ErrorCode::from_grpc(code.grpc()), expected, "{code:?}");
        }
    }

    #[test]
    fn client_errors_are_4xx_and_server_errors_5xx() {
        for code in ALL {
            let status = code.http();
            let client_fault = matches!(
                code,
                ErrorCode::InvalidArgument
                    | ErrorCode::NotFound
                    | ErrorCode::FailedPrecondition
                    | ErrorCode::ResourceExhausted
                    | ErrorCode::UnsupportedMediaType
                    | ErrorCode::Unauthenticated
                    | ErrorCode::PermissionDenied
            );
            assert_eq!(
                status.is_client_error(),
                client_fault,
                "{code:?} -> {status}"
            );
            assert_eq!(
                status.is_server_error(),
                !client_fault,
                "{code:?} -> {status}"
            );
        }
    }

    #[test]
    fn only_transient_failures_invite_a_retry() {
        let transient: Vec<_> = ALL.into_iter().filter(|c| c.is_transient()).collect();
        assert_eq!(
            transient,
            [
                ErrorCode::Unavailable,
                ErrorCode::DeadlineExceeded,
                ErrorCode::Cancelled
            ]
        );
    }
}
