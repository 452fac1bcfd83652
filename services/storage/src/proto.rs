//! Conversions between the lake's types and the `vesper.v1` messages.

use std::time::SystemTime;

use vesper::v1;

use crate::store::{Metadata, ObjectMeta};

impl From<ObjectMeta> for v1::ObjectInfo {
    fn from(meta: ObjectMeta) -> Self {
        Self {
            key: meta.key,
            size: meta.size,
            etag: meta.etag,
            content_type: meta.content_type,
            metadata: meta.metadata.into_iter().collect(),
            last_modified: Some(prost_types::Timestamp::from(meta.last_modified)),
        }
    }
}

impl From<v1::ObjectInfo> for ObjectMeta {
    fn from(info: v1::ObjectInfo) -> Self {
        Self {
            key: info.key,
            size: info.size,
            etag: info.etag,
            content_type: info.content_type,
            metadata: info.metadata.into_iter().collect::<Metadata>(),
            last_modified: info
                .last_modified
                .and_then(|time| SystemTime::try_from(time).ok())
                .unwrap_or(SystemTime::UNIX_EPOCH),
        }
    }
}
