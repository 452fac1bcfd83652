//! [`ObjectStore`] over a remote Storage service: how every other service
//! writes to the lake, and a third backend for the conformance suite.

use async_trait::async_trait;
use bytes::Bytes;
use vesper::{
    config::PeerAddr,
    grpc::TracedChannel,
    v1::{self, storage_client::StorageClient},
};

use crate::{
    ObjectKey, StorageError,
    service::message_limit,
    store::{ListPage, ObjectMeta, ObjectStore, PutOptions},
};

/// A Storage service reached over gRPC.
#[derive(Debug, Clone)]
pub struct RemoteStore {
    client: StorageClient<TracedChannel>,
    location: String,
}

impl RemoteStore {
    /// A store that connects to `peer` on first use (and reconnects after
    /// failures), carrying objects up to `max_object_size` bytes.
    pub fn connect_lazy(peer: &PeerAddr, max_object_size: u64) -> Self {
        Self::with_channel(
            vesper::grpc::connect_lazy(peer),
            peer.to_string(),
            max_object_size,
        )
    }

    /// A store over an existing channel.
    pub fn with_channel(channel: TracedChannel, location: String, max_object_size: u64) -> Self {
        let limit = message_limit(max_object_size);
        Self {
            client: StorageClient::new(channel)
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
            location,
        }
    }

    fn client(&self) -> StorageClient<TracedChannel> {
        self.client.clone()
    }
}

fn object_of(info: Option<v1::ObjectInfo>) -> ObjectMeta {
    info.unwrap_or_default().into()
}

#[async_trait]
impl ObjectStore for RemoteStore {
    fn location(&self) -> String {
        format!("storage service {}", self.location)
    }

    async fn put(
        &self,
        key: &ObjectKey,
        body: Bytes,
        options: PutOptions,
    ) -> Result<ObjectMeta, StorageError> {
        let response = self
            .client()
            .put_object(v1::PutObjectRequest {
                key: key.to_string(),
                body,
                content_type: options.content_type.unwrap_or_default(),
                metadata: options.metadata.into_iter().collect(),
            })
            .await?;
        Ok(object_of(response.into_inner().object))
    }

    async fn get(&self, key: &ObjectKey) -> Result<(ObjectMeta, Bytes), StorageError> {
        let response = self
            .client()
            .get_object(v1::GetObjectRequest {
                key: key.to_string(),
            })
            .await?
            .into_inner();
        Ok((object_of(response.object), response.body))
    }

    async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta, StorageError> {
        let response = self
            .client()
            .head_object(v1::HeadObjectRequest {
                key: key.to_string(),
            })
            .await?;
        Ok(object_of(response.into_inner().object))
    }

    async fn list(
        &self,
        prefix: &str,
        token: Option<&str>,
        max_keys: u32,
    ) -> Result<ListPage, StorageError> {
        let response = self
            .client()
            .list_objects(v1::ListObjectsRequest {
                prefix: prefix.to_owned(),
                continuation_token: token.unwrap_or_default().to_owned(),
                max_keys,
            })
            .await?
            .into_inner();
        Ok(ListPage {
            objects: response.objects.into_iter().map(Into::into).collect(),
            next_token: Some(response.next_continuation_token).filter(|token| !token.is_empty()),
        })
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        self.client()
            .delete_object(v1::DeleteObjectRequest {
                key: key.to_string(),
            })
            .await?;
        Ok(())
    }
}
