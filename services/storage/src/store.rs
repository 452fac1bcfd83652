//! The one trait every backend implements, and the rules they share.

use std::{collections::BTreeMap, fmt, time::SystemTime};

use async_trait::async_trait;
use bytes::Bytes;

use crate::{ObjectKey, StorageError};

/// The content type recorded when a writer gives none.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// Listing page size when the caller asks for 0, and the most one page holds.
pub const MAX_LIST_KEYS: u32 = 1000;

/// User metadata: lower-case names, printable ASCII values.
pub type Metadata = BTreeMap<String, String>;

/// What the lake knows about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The object's key.
    pub key: String,
    /// Body length in bytes.
    pub size: u64,
    /// Version tag of the body: the hex MD5 of the body for objects written
    /// in one piece (as S3 does).
    pub etag: String,
    /// MIME type recorded at write time.
    pub content_type: String,
    /// User metadata recorded at write time (empty in listings).
    pub metadata: Metadata,
    /// When the object was last written.
    pub last_modified: SystemTime,
}

/// How to write an object besides its key and body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// MIME type; `None` records [`DEFAULT_CONTENT_TYPE`].
    pub content_type: Option<String>,
    /// User metadata to record.
    pub metadata: Metadata,
}

impl PutOptions {
    /// Options with a content type and no metadata.
    pub fn content_type(content_type: impl Into<String>) -> Self {
        Self {
            content_type: Some(content_type.into()),
            metadata: Metadata::new(),
        }
    }

    /// The content type to record.
    pub fn effective_content_type(&self) -> &str {
        match self.content_type.as_deref() {
            Some(content_type) if !content_type.is_empty() => content_type,
            _ => DEFAULT_CONTENT_TYPE,
        }
    }
}

/// One page of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPage {
    /// Objects in ascending bytewise key order.
    pub objects: Vec<ObjectMeta>,
    /// Token for the next page; `None` on the last page.
    pub next_token: Option<String>,
}

/// An object store holding the lake. Implementations are the local
/// directory ([`crate::FsStore`]), S3 (`S3Store`, behind the `s3` feature) and a remote
/// Storage service ([`crate::RemoteStore`]); every one passes the same
/// conformance suite.
#[async_trait]
pub trait ObjectStore: Send + Sync + fmt::Debug {
    /// Where the objects live, for logs ("directory ./lake", "s3://datalake").
    fn location(&self) -> String;

    /// Writes `body` under `key` atomically, replacing any previous object.
    async fn put(
        &self,
        key: &ObjectKey,
        body: Bytes,
        options: PutOptions,
    ) -> Result<ObjectMeta, StorageError>;

    /// Reads an object and its metadata.
    async fn get(&self, key: &ObjectKey) -> Result<(ObjectMeta, Bytes), StorageError>;

    /// Reads an object's metadata.
    async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta, StorageError>;

    /// Lists up to `max_keys` objects (0 means [`MAX_LIST_KEYS`]) whose keys
    /// start with `prefix`, after the position `token` names.
    async fn list(
        &self,
        prefix: &str,
        token: Option<&str>,
        max_keys: u32,
    ) -> Result<ListPage, StorageError>;

    /// Deletes an object; [`StorageError::NotFound`] when there is none.
    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError>;
}

/// The page size a listing request really gets.
pub(crate) fn effective_max_keys(max_keys: u32) -> u32 {
    match max_keys {
        0 => MAX_LIST_KEYS,
        n => n.min(MAX_LIST_KEYS),
    }
}

/// The checks every backend makes before a write: size limit and metadata
/// rules (S3's, so that metadata round-trips on every backend alike).
pub(crate) fn check_put(size: usize, limit: u64, options: &PutOptions) -> Result<(), StorageError> {
    let size = u64::try_from(size).unwrap_or(u64::MAX);
    if size > limit {
        return Err(StorageError::TooLarge { size, limit });
    }
    for (name, value) in &options.metadata {
        let invalid = |reason| StorageError::InvalidMetadata {
            name: name.clone(),
            reason,
        };
        if name.is_empty() {
            return Err(invalid("a metadata name cannot be empty"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return Err(invalid(
                "a metadata name is lower-case ASCII letters, digits, '-' and '_'",
            ));
        }
        if !value.bytes().all(|b| (b' '..=b'~').contains(&b)) {
            return Err(invalid("a metadata value is printable ASCII"));
        }
    }
    let total: usize = options
        .metadata
        .iter()
        .map(|(name, value)| name.len() + value.len())
        .sum();
    if total > MAX_METADATA_BYTES {
        return Err(StorageError::InvalidMetadata {
            name: String::new(),
            reason: "user metadata is at most 2 KiB in all (the S3 limit)",
        });
    }
    Ok(())
}

const MAX_METADATA_BYTES: usize = 2048;

/// Hex MD5 of a body: the etag S3 gives single-part objects.
pub(crate) fn md5_hex(body: &[u8]) -> String {
    use md5::{Digest, Md5};
    hex::encode(Md5::digest(body))
}
