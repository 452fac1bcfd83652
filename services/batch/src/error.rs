//! The batch error vocabulary and its place in the error-code table.

use std::{path::PathBuf, time::Duration};

use vesper::{ErrorCode, ServiceError};
use vesper_storage::StorageError;

/// Why loading pipelines or running one failed.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The pipeline file cannot be read.
    #[error("cannot read the pipeline file {path}: {source}")]
    ReadConfig {
        /// The file.
        path: PathBuf,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
    /// The pipeline file is not valid TOML, or has a key or a value of the
    /// wrong kind (the message shows the line).
    #[error("{origin}: {message}")]
    Syntax {
        /// Where the text came from (a path, or "built-in pipelines").
        origin: String,
        /// The parser's message.
        message: String,
    },
    /// A setting is well-formed but not acceptable.
    #[error("{origin}: {field}: {reason}")]
    Invalid {
        /// Where the text came from.
        origin: String,
        /// The setting, as a dotted path (`pipelines.users.pagination.limit`).
        field: String,
        /// What is wrong and what to write instead.
        reason: String,
    },
    /// A pipeline name that is not declared.
    #[error("unknown pipeline {name:?}; declared: {}", known.join(", "))]
    UnknownPipeline {
        /// The name asked for.
        name: String,
        /// The declared names.
        known: Vec<String>,
    },
    /// The upstream refused a request with a status that a retry cannot
    /// change (a 4xx other than 408 and 429).
    #[error("GET {url}: {}: {message}", status_text(*status))]
    Rejected {
        /// The request's URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The upstream's message (its `{"error": ...}`, or the body).
        message: String,
    },
    /// A request kept failing transiently until the retry policy ran out.
    #[error("GET {url}: gave up after {attempts} attempts; last: {last}")]
    GaveUp {
        /// The request's URL.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// The upstream asked to wait longer than the retry policy allows.
    #[error(
        "GET {url}: the server asked to retry after {}, over retry.max_retry_after ({})",
        humantime::format_duration(*wait),
        humantime::format_duration(*limit)
    )]
    RetryAfterTooLong {
        /// The request's URL.
        url: String,
        /// The wait asked for.
        wait: Duration,
        /// The most the policy waits.
        limit: Duration,
    },
    /// A response does not have the shape the pipeline declares: not JSON,
    /// no record array, a missing pagination field, a record that is not an
    /// object, a cursor that does not move.
    #[error("GET {url}: {problem}")]
    Response {
        /// The request's URL.
        url: String,
        /// What is wrong, with the parser position for malformed JSON.
        problem: String,
    },
    /// The request could not even be built or sent for a reason a retry does
    /// not fix.
    #[error("GET {url}: {message}")]
    Request {
        /// The request's URL.
        url: String,
        /// The client's message.
        message: String,
    },
    /// The lake cannot be reached before a run: nothing was fetched.
    #[error(
        "the lake ({location}) cannot be reached, so no pipeline ran and no API was called: {source}"
    )]
    LakeUnavailable {
        /// Where the lake is ("storage service 127.0.0.1:50051").
        location: String,
        /// What the lake answered.
        #[source]
        source: StorageError,
    },
    /// Writing to the lake failed.
    #[error("lake: {0}")]
    Storage(#[from] StorageError),
    /// The process is shutting down; the run stopped before publishing.
    #[error("stopped by shutdown before the run finished")]
    Cancelled,
    /// The HTTP client could not be set up.
    #[error("cannot set up the HTTP client: {0}")]
    Client(String),
    /// A run task failed unexpectedly (a bug).
    #[error("run task failed: {0}")]
    Task(String),
}

/// "404 Not Found".
fn status_text(status: u16) -> String {
    match reqwest::StatusCode::from_u16(status) {
        Ok(code) => code.to_string(),
        Err(_) => status.to_string(),
    }
}

impl ServiceError for BatchError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::ReadConfig { .. }
            | Self::Syntax { .. }
            | Self::Invalid { .. }
            | Self::UnknownPipeline { .. } => ErrorCode::InvalidArgument,
            Self::Rejected { .. } => ErrorCode::FailedPrecondition,
            Self::GaveUp { .. } | Self::RetryAfterTooLong { .. } => ErrorCode::Unavailable,
            Self::Response { .. } | Self::Request { .. } | Self::Client(_) | Self::Task(_) => {
                ErrorCode::Internal
            }
            Self::Storage(err) => err.code(),
            Self::LakeUnavailable { .. } => ErrorCode::Unavailable,
            Self::Cancelled => ErrorCode::Cancelled,
        }
    }
}

impl From<BatchError> for tonic::Status {
    fn from(err: BatchError) -> Self {
        vesper::error::to_status(&err)
    }
}
