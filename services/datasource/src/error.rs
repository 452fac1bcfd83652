//! The DataSource error vocabulary and its place in the error-code table.
//!
//! The messages of the request errors are the old data server's words,
//! exactly: the gateway passes them through as `{"error": "<message>"}`,
//! and old clients compare them.

use vesper::{ErrorCode, ServiceError};
use vesper_storage::StorageError;

/// Why a DataSource operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DataSourceError {
    /// The page offset is outside 0..9999.
    #[error("Invalid offset")]
    InvalidOffset,
    /// The page size is below 1.
    #[error("Invalid limit")]
    InvalidLimit,
    /// The number of events asked for is below 1.
    #[error("Invalid count")]
    InvalidCount,
    /// The source filter names no known source.
    #[error("Invalid source")]
    InvalidSource,
    /// The deliberate upstream fault of unfiltered event calls.
    #[error("Service temporarily unavailable")]
    Unavailable,
    /// Writing or reading the sample data in the lake failed.
    #[error("sample data: {0}")]
    Storage(#[from] StorageError),
    /// Rendering the sample data failed (a bug: rendering has no inputs
    /// that can be wrong).
    #[error("rendering the sample data failed: {0}")]
    Render(String),
    /// The generator's HTTP client could not be set up (no TLS backend).
    #[error("cannot set up the generator's HTTP client: {0}")]
    HttpClient(String),
    /// The gRPC server failed.
    #[error(transparent)]
    Serve(#[from] vesper::grpc::ServeError),
}

impl ServiceError for DataSourceError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidOffset | Self::InvalidLimit | Self::InvalidCount | Self::InvalidSource => {
                ErrorCode::InvalidArgument
            }
            Self::Unavailable => ErrorCode::Unavailable,
            Self::Storage(err) => err.code(),
            Self::Render(_) | Self::HttpClient(_) | Self::Serve(_) => ErrorCode::Internal,
        }
    }
}

impl From<DataSourceError> for tonic::Status {
    fn from(err: DataSourceError) -> Self {
        vesper::error::to_status(&err)
    }
}
