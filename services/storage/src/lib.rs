//! The lake: the `vesper.v1.Storage` service and the backends behind it.
//!
//! Every backend implements [`ObjectStore`] and passes the same conformance
//! suite (`tests/conformance.rs`): a local directory ([`FsStore`], the
//! default), an S3 bucket (`S3Store`, behind the cargo feature `s3`), and a
//! remote Storage service ([`RemoteStore`], which is how the other services
//! write to the lake).
//!
//! The S3 backend is a feature so that a crate which only talks to Storage
//! over gRPC does not compile the AWS SDK; the `vesper` binary enables it.
//!
//! # Guarantees
//!
//! A put is atomic on every backend (a reader sees the old object or the
//! new one, never a part); a confirmed put is durable (fsync of the file
//! and its directory on the directory backend). Keys follow one set of
//! rules on every backend, so no key names anything outside the lake.
//! Listings are in key order and never show temporary files or metadata.
//! docs/storage.md has the key rules, the directory layout and the limits.

mod config;
mod error;
mod fs;
mod key;
mod proto;
mod remote;
#[cfg(feature = "s3")]
mod s3;
mod service;
mod store;

pub use config::{DEFAULT_MAX_OBJECT_SIZE, LakeArgs, StoragePeerArgs, open_lake};
pub use error::StorageError;
pub use fs::FsStore;
pub use key::{MAX_KEY_BYTES, MAX_SEGMENT_BYTES, ObjectKey, RESERVED_SEGMENT, validate_prefix};
pub use remote::RemoteStore;
#[cfg(feature = "s3")]
pub use s3::S3Store;
pub use service::{StorageService, message_limit, serve};
pub use store::{
    DEFAULT_CONTENT_TYPE, ListPage, MAX_LIST_KEYS, Metadata, ObjectMeta, ObjectStore, PutOptions,
};
