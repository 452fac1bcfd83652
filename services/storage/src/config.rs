//! How a command names its lake, shared by every command that opens one.

use std::sync::Arc;

use vesper::config::{ByteSize, Lake, PeerAddr, defaults};

#[cfg(feature = "s3")]
use crate::S3Store;
use crate::{FsStore, ObjectStore, RemoteStore, StorageError};

/// The default object size limit.
pub const DEFAULT_MAX_OBJECT_SIZE: ByteSize = ByteSize::mib(64);

/// Command-line options that open a lake.
#[derive(Debug, Clone, clap::Args)]
pub struct LakeArgs {
    /// The lake: a directory (created if missing) or s3://BUCKET[/PREFIX].
    /// For S3, endpoint, region and credentials come from the standard AWS
    /// variables (AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY, ...); addressing is path-style, so MinIO works.
    #[arg(
        long,
        env = "VESPER_LAKE",
        default_value = defaults::LAKE,
        value_name = "DIR|s3://BUCKET[/PREFIX]"
    )]
    pub lake: Lake,

    /// The largest object the lake accepts (e.g. 64MiB, 512KiB).
    #[arg(
        long,
        env = "VESPER_MAX_OBJECT_SIZE",
        default_value_t = DEFAULT_MAX_OBJECT_SIZE,
        value_name = "SIZE"
    )]
    pub max_object_size: ByteSize,

    /// Create the S3 bucket when it does not exist (instead of refusing to
    /// start).
    #[arg(long, env = "VESPER_CREATE_BUCKET")]
    pub create_bucket: bool,
}

impl LakeArgs {
    /// Opens the lake these options name.
    pub async fn open(&self) -> Result<Arc<dyn ObjectStore>, StorageError> {
        open_lake(&self.lake, self.max_object_size.bytes(), self.create_bucket).await
    }
}

/// Where the Storage service is, for the services that write the lake
/// through it (ingest, batch).
#[derive(Debug, Clone, clap::Args)]
pub struct StoragePeerArgs {
    /// The Storage gRPC service the lake is written through.
    #[arg(
        long,
        env = "VESPER_STORAGE_ADDR",
        default_value = defaults::STORAGE_GRPC_ADDR,
        value_name = "HOST:PORT"
    )]
    pub storage_addr: PeerAddr,
}

impl StoragePeerArgs {
    /// The Storage service as a store, connected on first use (so the
    /// caller starts while Storage is down) and carrying objects up to
    /// `max_object_size` bytes.
    pub fn connect_lazy(&self, max_object_size: u64) -> RemoteStore {
        RemoteStore::connect_lazy(&self.storage_addr, max_object_size)
    }
}

/// Opens a directory or S3 lake. Built without the `s3` feature, an S3 lake
/// is refused with [`StorageError::S3NotBuilt`].
pub async fn open_lake(
    lake: &Lake,
    max_object_size: u64,
    create_bucket: bool,
) -> Result<Arc<dyn ObjectStore>, StorageError> {
    Ok(match lake {
        Lake::Dir(path) => Arc::new(FsStore::open(path, max_object_size).await?),
        #[cfg(feature = "s3")]
        Lake::S3 { bucket, prefix } => {
            Arc::new(S3Store::connect(bucket, prefix, max_object_size, create_bucket).await?)
        }
        #[cfg(not(feature = "s3"))]
        Lake::S3 { .. } => {
            let _ = create_bucket;
            return Err(StorageError::S3NotBuilt {
                lake: lake.to_string(),
            });
        }
    })
}
