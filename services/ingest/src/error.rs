//! The ingest error vocabulary and its place in the error-code table.

use std::{io, path::PathBuf, time::Duration};

use vesper::{ErrorCode, ServiceError, grpc::RETRY_AFTER_METADATA};

/// An event over the size bound, by its place in the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OversizedEvent {
    /// Its index in the call's events.
    pub index: usize,
    /// Bytes of its lake line.
    pub bytes: u64,
}

/// Why an ingest operation failed.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The write-ahead log holds as much as it may (`--max-wal-bytes`)
    /// because storage has not taken the older events yet; nothing of the
    /// batch was stored.
    #[error(
        "the write-ahead log is full ({wal_bytes} of {max_wal_bytes} bytes) while storage catches up; retry later"
    )]
    WalFull {
        /// Bytes in the log, plus bytes queued for it.
        wal_bytes: u64,
        /// The bound.
        max_wal_bytes: u64,
        /// A suggested wait before retrying.
        retry_after: Duration,
    },
    /// Appending to the log failed (disk full, I/O error); the partial write
    /// was cut away and nothing of the batch was stored.
    #[error("cannot write the write-ahead log: {message}; retry later")]
    WalWrite {
        /// The system's words.
        message: String,
    },
    /// Events of the call are larger than `--max-event-bytes` as lake
    /// lines; nothing of the call was stored.
    #[error(
        "{} event(s) over the limit of {limit} bytes as written to the lake (--max-event-bytes); nothing was stored",
        events.len() + more
    )]
    EventsTooLarge {
        /// The first of them.
        events: Vec<OversizedEvent>,
        /// How many more there were.
        more: usize,
        /// The bound.
        limit: u64,
    },
    /// The call holds more events than one call may.
    #[error(
        "{events} events in one call, over the limit of {limit} (--max-request-events); split the batch"
    )]
    TooManyEvents {
        /// Events in the call.
        events: usize,
        /// The bound.
        limit: usize,
    },
    /// An event has no hour to be placed in (validation rules this out).
    #[error("events[{index}] ({event_id}) has no timestamp in range")]
    Unplaceable {
        /// Its index in the call.
        index: usize,
        /// Its id.
        event_id: String,
    },
    /// The settings contradict each other.
    #[error("invalid ingest settings: {message}")]
    Config {
        /// Which bounds clash, by their flags.
        message: String,
    },
    /// The service is shutting down and takes no new events.
    #[error("ingest is shutting down; retry against another instance or later")]
    ShuttingDown,
    /// Storage did not confirm a write; the events stay in the log and are
    /// retried.
    #[error("storage did not take the batch: {message}; the events stay in the write-ahead log")]
    Storage {
        /// What storage said.
        message: String,
        /// Storage refused the object itself (an invalid key, too large):
        /// retrying the same object cannot help.
        permanent: bool,
    },
    /// The write-ahead log directory cannot be opened or read at start.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done ("cannot create", ...).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// The gRPC server failed.
    #[error("{message}")]
    Serve {
        /// The server's words.
        message: String,
    },
    /// A background task of the engine is gone (a bug, or the engine was shut down).
    #[error("the ingest engine stopped")]
    EngineStopped,
    /// Fleet mode: the NATS cluster cannot take or answer now (unreachable,
    /// no quorum, no stream leader, timed out); nothing the call could not
    /// store was acknowledged.
    #[error("the event log (NATS JetStream) is unavailable: {message}; retry later")]
    LogUnavailable {
        /// What failed, naming the servers or the stream.
        message: String,
    },
    /// Fleet mode: the stream holds as much as it may (`--stream-max-bytes`)
    /// while the lake writers catch up; nothing of the call was
    /// acknowledged.
    #[error(
        "stream {stream} is full (--stream-max-bytes {max_bytes}) while the lake writers catch up; retry later"
    )]
    StreamFull {
        /// The stream.
        stream: String,
        /// Its bound.
        max_bytes: u64,
    },
    /// Fleet mode: part of the call was stored before the log failed.
    /// Retrying the whole call is safe: the stored events come back as
    /// duplicates (JetStream drops them by id).
    #[error(
        "{stored} of {total} events of the call were stored before the event log failed ({cause}); retry the call: the stored ones are counted as duplicates"
    )]
    PartiallyStored {
        /// Events JetStream acknowledged.
        stored: usize,
        /// Events the call tried to store.
        total: usize,
        /// Why the rest were not.
        cause: String,
    },
    /// Fleet mode: the stream exists with settings other than the flags
    /// say; it is not changed behind the other members' backs.
    #[error(
        "stream {stream} exists with other settings: {}; start with flags that match it, or change or delete the stream",
        mismatches.join("; ")
    )]
    StreamMismatch {
        /// The stream.
        stream: String,
        /// Every difference, naming the setting and its flag.
        mismatches: Vec<String>,
    },
    /// Fleet mode: Flush waited its bound and the lake writers had not
    /// taken every message up to the sequence of the call.
    #[error(
        "flush timed out after {waited:?} (--flush-timeout): stream {stream} still holds {remaining} message(s) up to sequence {target}; are the lake writers running?"
    )]
    FlushTimeout {
        /// The stream.
        stream: String,
        /// How long the call waited.
        waited: Duration,
        /// The last sequence at the call.
        target: u64,
        /// Messages still in the stream at the end.
        remaining: u64,
    },
    /// Fleet mode: the lake writers' durable consumer exists with settings
    /// that break the writer's guarantees (or contradict its flags); it is
    /// not changed behind the other writers' backs.
    #[error(
        "consumer {consumer} of stream {stream} has settings the lake writer cannot work with: {}; start with flags that match it, or change or delete the consumer",
        mismatches.join("; ")
    )]
    ConsumerMismatch {
        /// The stream.
        stream: String,
        /// The durable consumer.
        consumer: String,
        /// Every problem, naming the setting and the flag behind it.
        mismatches: Vec<String>,
    },
}

impl IngestError {
    /// A storage failure, permanent when storage refused the object itself.
    pub(crate) fn storage(err: &vesper_storage::StorageError) -> Self {
        Self::Storage {
            message: err.to_string(),
            permanent: matches!(
                err.code(),
                ErrorCode::InvalidArgument | ErrorCode::ResourceExhausted
            ),
        }
    }

    /// Retrying the same object cannot succeed.
    pub(crate) fn is_permanent(&self) -> bool {
        matches!(
            self,
            Self::Storage {
                permanent: true,
                ..
            }
        )
    }

    /// The same error for another waiter (the system errors inside are not
    /// `Clone`; their text is kept).
    pub(crate) fn duplicate(&self) -> Self {
        match self {
            Self::WalFull {
                wal_bytes,
                max_wal_bytes,
                retry_after,
            } => Self::WalFull {
                wal_bytes: *wal_bytes,
                max_wal_bytes: *max_wal_bytes,
                retry_after: *retry_after,
            },
            Self::WalWrite { message } => Self::WalWrite {
                message: message.clone(),
            },
            Self::ShuttingDown => Self::ShuttingDown,
            Self::Storage { message, permanent } => Self::Storage {
                message: message.clone(),
                permanent: *permanent,
            },
            Self::EventsTooLarge {
                events,
                more,
                limit,
            } => Self::EventsTooLarge {
                events: events.clone(),
                more: *more,
                limit: *limit,
            },
            Self::TooManyEvents { events, limit } => Self::TooManyEvents {
                events: *events,
                limit: *limit,
            },
            Self::Unplaceable { index, event_id } => Self::Unplaceable {
                index: *index,
                event_id: event_id.clone(),
            },
            Self::Config { message } => Self::Config {
                message: message.clone(),
            },
            Self::LogUnavailable { message } => Self::LogUnavailable {
                message: message.clone(),
            },
            Self::StreamFull { stream, max_bytes } => Self::StreamFull {
                stream: stream.clone(),
                max_bytes: *max_bytes,
            },
            Self::PartiallyStored {
                stored,
                total,
                cause,
            } => Self::PartiallyStored {
                stored: *stored,
                total: *total,
                cause: cause.clone(),
            },
            Self::StreamMismatch { stream, mismatches } => Self::StreamMismatch {
                stream: stream.clone(),
                mismatches: mismatches.clone(),
            },
            Self::FlushTimeout {
                stream,
                waited,
                target,
                remaining,
            } => Self::FlushTimeout {
                stream: stream.clone(),
                waited: *waited,
                target: *target,
                remaining: *remaining,
            },
            Self::ConsumerMismatch {
                stream,
                consumer,
                mismatches,
            } => Self::ConsumerMismatch {
                stream: stream.clone(),
                consumer: consumer.clone(),
                mismatches: mismatches.clone(),
            },
            Self::Io { .. } | Self::Serve { .. } | Self::EngineStopped => Self::Storage {
                message: self.to_string(),
                permanent: false,
            },
        }
    }

    /// How long a client should wait before retrying, when that is the
    /// remedy.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::WalFull { retry_after, .. } => Some(*retry_after),
            Self::WalWrite { .. }
            | Self::ShuttingDown
            | Self::Storage { .. }
            | Self::LogUnavailable { .. }
            | Self::PartiallyStored { .. } => Some(Duration::from_secs(1)),
            // The writers drain a full stream at lake speed: give them time.
            Self::StreamFull { .. } => Some(Duration::from_secs(5)),
            Self::Io { .. }
            | Self::Serve { .. }
            | Self::EngineStopped
            | Self::EventsTooLarge { .. }
            | Self::TooManyEvents { .. }
            | Self::Unplaceable { .. }
            | Self::Config { .. }
            | Self::StreamMismatch { .. }
            | Self::ConsumerMismatch { .. }
            | Self::FlushTimeout { .. } => None,
        }
    }
}

impl ServiceError for IngestError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::WalFull { .. }
            | Self::WalWrite { .. }
            | Self::ShuttingDown
            | Self::Storage { .. }
            | Self::LogUnavailable { .. }
            | Self::StreamFull { .. }
            | Self::PartiallyStored { .. } => ErrorCode::Unavailable,
            Self::FlushTimeout { .. } => ErrorCode::DeadlineExceeded,
            Self::StreamMismatch { .. } | Self::ConsumerMismatch { .. } => {
                ErrorCode::FailedPrecondition
            }
            Self::EventsTooLarge { .. } | Self::Unplaceable { .. } => ErrorCode::InvalidArgument,
            Self::TooManyEvents { .. } => ErrorCode::ResourceExhausted,
            Self::Config { .. } | Self::Io { .. } | Self::Serve { .. } | Self::EngineStopped => {
                ErrorCode::Internal
            }
        }
    }
}

impl From<IngestError> for tonic::Status {
    fn from(err: IngestError) -> Self {
        let mut status = vesper::error::to_status(&err);
        if let Some(wait) = err.retry_after() {
            // Whole seconds, rounded up, and never 0: "retry at once" would
            // only feed the overload.
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            if let Ok(value) = seconds.max(1).to_string().parse() {
                status.metadata_mut().insert(RETRY_AFTER_METADATA, value);
            }
        }
        status
    }
}
