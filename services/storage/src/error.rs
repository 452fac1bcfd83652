//! The storage error vocabulary and its place in the error-code table.

use std::{borrow::Cow, io, path::PathBuf};

use vesper::{ErrorCode, ServiceError};

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The key breaks a key rule.
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey {
        /// The key as given.
        key: String,
        /// Which rule it breaks.
        reason: Cow<'static, str>,
    },
    /// The listing prefix could never start a valid key.
    #[error("invalid prefix {prefix:?}: {reason}")]
    InvalidPrefix {
        /// The prefix as given.
        prefix: String,
        /// Which rule it breaks.
        reason: Cow<'static, str>,
    },
    /// A user metadata entry breaks the metadata rules.
    #[error("invalid metadata {name:?}: {reason}")]
    InvalidMetadata {
        /// The metadata key.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// The continuation token was not issued by this lake.
    #[error("invalid continuation token: {reason}")]
    InvalidToken {
        /// What is wrong with it.
        reason: String,
    },
    /// No object is stored under the key.
    #[error("no object under key {key:?}")]
    NotFound {
        /// The key asked for.
        key: String,
    },
    /// On a directory lake, the key would be a file where other keys need a
    /// directory, or the reverse.
    #[error(
        "key {key:?} clashes with {existing:?}: in a directory lake a key cannot also be the directory of other keys"
    )]
    KeyConflict {
        /// The key being written.
        key: String,
        /// The existing key or key prefix it clashes with.
        existing: String,
    },
    /// The body is over the object size limit.
    #[error("object of {size} bytes is over the {limit}-byte object size limit")]
    TooLarge {
        /// Body length.
        size: u64,
        /// The configured limit.
        limit: u64,
    },
    /// The backend cannot be reached or cannot take writes right now (S3
    /// down, disk full); retrying later may succeed.
    #[error("storage unavailable: {message}")]
    Unavailable {
        /// What went wrong.
        message: String,
    },
    /// The S3 bucket does not exist and was not to be created.
    #[error(
        "bucket {bucket:?} does not exist; create it, or start with --create-bucket to let vesper create it"
    )]
    NoSuchBucket {
        /// The bucket name.
        bucket: String,
    },
    /// The lake is an S3 bucket but this build has no S3 backend (the
    /// `s3` cargo feature of vesper-storage was off).
    #[error(
        "lake {lake}: this build has no S3 backend; build vesper-storage with its `s3` feature (the vesper binary has it)"
    )]
    S3NotBuilt {
        /// The lake as given.
        lake: String,
    },
    /// A local file-system operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done ("cannot write", ...).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// The S3 backend answered with an error vesper does not expect.
    #[error("S3 error: {message}")]
    S3 {
        /// The error as the SDK describes it.
        message: String,
    },
    /// A remote Storage service answered with an error.
    #[error("storage service: {message}")]
    Remote {
        /// The remote status, read back into the vocabulary.
        code: ErrorCode,
        /// The remote message.
        message: String,
    },
}

impl StorageError {
    /// Wraps an I/O error, turning a full disk into [`StorageError::Unavailable`]
    /// (space may come back; the writer should retry, not give up).
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        if is_out_of_space(&source) {
            return Self::Unavailable {
                message: format!("{action} {}: {source}", path.display()),
            };
        }
        Self::Io {
            action,
            path,
            source,
        }
    }
}

fn is_out_of_space(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

impl ServiceError for StorageError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidKey { .. }
            | Self::InvalidPrefix { .. }
            | Self::InvalidMetadata { .. }
            | Self::InvalidToken { .. } => ErrorCode::InvalidArgument,
            Self::NotFound { .. } => ErrorCode::NotFound,
            Self::KeyConflict { .. } => ErrorCode::FailedPrecondition,
            Self::TooLarge { .. } => ErrorCode::ResourceExhausted,
            Self::Unavailable { .. } => ErrorCode::Unavailable,
            Self::NoSuchBucket { .. } => ErrorCode::FailedPrecondition,
            Self::S3NotBuilt { .. } => ErrorCode::Unimplemented,
            Self::Io { .. } | Self::S3 { .. } => ErrorCode::Internal,
            Self::Remote { code, .. } => *code,
        }
    }
}

impl From<StorageError> for tonic::Status {
    fn from(err: StorageError) -> Self {
        vesper::error::to_status(&err)
    }
}

impl From<tonic::Status> for StorageError {
    fn from(status: tonic::Status) -> Self {
        Self::Remote {
            code: ErrorCode::from_grpc(status.code()),
            message: status.message().to_owned(),
        }
    }
}
