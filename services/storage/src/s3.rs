//! The S3 backend (AWS S3, MinIO, any S3-compatible store) through
//! aws-sdk-s3. Endpoint, region and credentials come from the standard AWS
//! environment (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, profiles, ...); addressing is path-style so that
//! MinIO and other self-hosted stores work without DNS tricks. A put is one
//! PutObject, which S3 makes atomic.

use std::{collections::HashMap, time::SystemTime};

use async_trait::async_trait;
use aws_config::{BehaviorVersion, SdkConfig, meta::region::RegionProviderChain};
use aws_sdk_s3::{
    Client,
    config::http::HttpResponse,
    error::{DisplayErrorContext, ProvideErrorMetadata, SdkError},
    primitives::ByteStream,
    types::{BucketLocationConstraint, CreateBucketConfiguration},
};
use bytes::Bytes;

use crate::{
    MAX_KEY_BYTES, ObjectKey, StorageError,
    key::validate_prefix,
    store::{
        ListPage, Metadata, ObjectMeta, ObjectStore, PutOptions, check_put, effective_max_keys,
    },
};

/// The region used when the environment names none (S3-compatible stores
/// mostly ignore it, but request signing needs one).
const FALLBACK_REGION: &str = "us-east-1";

/// A lake in an S3 bucket, optionally under a key prefix.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    /// Empty, or a prefix without slashes at either end.
    prefix: String,
    max_object_size: u64,
}

impl S3Store {
    /// Connects to `bucket` with the AWS configuration of the environment.
    /// A missing bucket is an error unless `create_bucket`; an unreachable
    /// endpoint is only a warning, so the service can start before S3 does.
    pub async fn connect(
        bucket: &str,
        prefix: &str,
        max_object_size: u64,
        create_bucket: bool,
    ) -> Result<Self, StorageError> {
        let region = RegionProviderChain::default_provider().or_else(FALLBACK_REGION);
        let shared = aws_config::defaults(BehaviorVersion::latest())
            .region(region)
            .load()
            .await;
        Self::connect_with(&shared, bucket, prefix, max_object_size, create_bucket).await
    }

    /// Like [`S3Store::connect`], with an explicit AWS configuration instead
    /// of the environment's (embedding, tests).
    pub async fn connect_with(
        shared: &SdkConfig,
        bucket: &str,
        prefix: &str,
        max_object_size: u64,
        create_bucket: bool,
    ) -> Result<Self, StorageError> {
        let config = aws_sdk_s3::config::Builder::from(shared)
            .force_path_style(true)
            .build();
        let store = Self {
            client: Client::from_conf(config),
            bucket: bucket.to_owned(),
            prefix: prefix.trim_matches('/').to_owned(),
            max_object_size,
        };
        store.check_bucket(create_bucket).await?;
        Ok(store)
    }

    async fn check_bucket(&self, create: bool) -> Result<(), StorageError> {
        let probe = self.client.head_bucket().bucket(&self.bucket).send().await;
        let Err(err) = probe else {
            return Ok(());
        };
        match self.classify(err, None) {
            StorageError::NoSuchBucket { .. } if create => self.create_bucket().await,
            err @ StorageError::NoSuchBucket { .. } => Err(err),
            StorageError::Unavailable { message } => {
                tracing::warn!(bucket = %self.bucket, %message, "S3 is not reachable yet; requests fail with UNAVAILABLE until it is");
                Ok(())
            }
            other => Err(other),
        }
    }

    async fn create_bucket(&self) -> Result<(), StorageError> {
        let mut request = self.client.create_bucket().bucket(&self.bucket);
        let region = self.client.config().region().map(|r| r.as_ref().to_owned());
        if let Some(region) = region.filter(|region| region != FALLBACK_REGION) {
            request = request.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(region.as_str()))
                    .build(),
            );
        }
        match request.send().await {
            Ok(_) => {
                tracing::info!(bucket = %self.bucket, "created the lake bucket");
                Ok(())
            }
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_bucket_already_owned_by_you()) =>
            {
                Ok(())
            }
            Err(err) => Err(self.classify(err, None)),
        }
    }

    fn full_key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    /// The bucket key of `key`; refused when the lake's prefix pushes it
    /// past S3's key limit (a key the rules accept may be that long).
    fn object_key(&self, key: &ObjectKey) -> Result<String, StorageError> {
        let full = self.full_key(key.as_str());
        if full.len() > MAX_KEY_BYTES {
            return Err(StorageError::InvalidKey {
                key: key.to_string(),
                reason: format!(
                    "under the lake's prefix {:?} it is an S3 key of {} bytes; S3 keys are at most {MAX_KEY_BYTES} bytes",
                    self.prefix,
                    full.len()
                )
                .into(),
            });
        }
        Ok(full)
    }

    fn lake_key<'a>(&self, full_key: &'a str) -> Option<&'a str> {
        if self.prefix.is_empty() {
            Some(full_key)
        } else {
            full_key
                .strip_prefix(self.prefix.as_str())
                .and_then(|rest| rest.strip_prefix('/'))
        }
    }

    /// Sorts an SDK error into the vocabulary.
    fn classify<E>(&self, err: SdkError<E, HttpResponse>, key: Option<&ObjectKey>) -> StorageError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let message = DisplayErrorContext(&err).to_string();
        match &err {
            SdkError::DispatchFailure(_)
            | SdkError::TimeoutError(_)
            | SdkError::ResponseError(_) => StorageError::Unavailable {
                message: format!("S3 endpoint unreachable: {message}"),
            },
            SdkError::ServiceError(context) => {
                let status = context.raw().status().as_u16();
                let code = context.err().code().unwrap_or_default();
                match (status, code) {
                    (_, "NoSuchBucket") => StorageError::NoSuchBucket {
                        bucket: self.bucket.clone(),
                    },
                    (404, _) | (_, "NoSuchKey" | "NotFound") => match key {
                        Some(key) => StorageError::NotFound {
                            key: key.to_string(),
                        },
                        None => StorageError::NoSuchBucket {
                            bucket: self.bucket.clone(),
                        },
                    },
                    (500..=599, _) | (_, "SlowDown") => StorageError::Unavailable { message },
                    _ => StorageError::S3 { message },
                }
            }
            _ => StorageError::S3 { message },
        }
    }
}

fn system_time(time: Option<&aws_sdk_s3::primitives::DateTime>) -> SystemTime {
    time.and_then(|time| SystemTime::try_from(*time).ok())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

fn bare_etag(etag: Option<&str>) -> String {
    etag.unwrap_or_default().trim_matches('"').to_owned()
}

fn size_of(length: Option<i64>) -> u64 {
    length.and_then(|len| u64::try_from(len).ok()).unwrap_or(0)
}

#[async_trait]
impl ObjectStore for S3Store {
    fn location(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    async fn put(
        &self,
        key: &ObjectKey,
        body: Bytes,
        options: PutOptions,
    ) -> Result<ObjectMeta, StorageError> {
        check_put(body.len(), self.max_object_size, &options)?;
        let size = body.len() as u64;
        let content_type = options.effective_content_type().to_owned();
        let output = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.object_key(key)?)
            .content_type(&content_type)
            .set_metadata(Some(options.metadata.clone().into_iter().collect()))
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|err| self.classify(err, Some(key)))?;
        Ok(ObjectMeta {
            key: key.to_string(),
            size,
            etag: bare_etag(output.e_tag()),
            content_type,
            metadata: options.metadata,
            last_modified: SystemTime::now(),
        })
    }

    async fn get(&self, key: &ObjectKey) -> Result<(ObjectMeta, Bytes), StorageError> {
        let output = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.object_key(key)?)
            .send()
            .await
            .map_err(|err| self.classify(err, Some(key)))?;
        let meta = ObjectMeta {
            key: key.to_string(),
            size: size_of(output.content_length()),
            etag: bare_etag(output.e_tag()),
            content_type: output.content_type().unwrap_or_default().to_owned(),
            metadata: metadata_of(output.metadata()),
            last_modified: system_time(output.last_modified()),
        };
        let body = output
            .body
            .collect()
            .await
            .map_err(|err| StorageError::Unavailable {
                message: format!("reading {key} from S3 broke off: {err}"),
            })?
            .into_bytes();
        Ok((
            ObjectMeta {
                size: body.len() as u64,
                ..meta
            },
            body,
        ))
    }

    async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta, StorageError> {
        let output = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.object_key(key)?)
            .send()
            .await
            .map_err(|err| self.classify(err, Some(key)))?;
        Ok(ObjectMeta {
            key: key.to_string(),
            size: size_of(output.content_length()),
            etag: bare_etag(output.e_tag()),
            content_type: output.content_type().unwrap_or_default().to_owned(),
            metadata: metadata_of(output.metadata()),
            last_modified: system_time(output.last_modified()),
        })
    }

    async fn list(
        &self,
        prefix: &str,
        token: Option<&str>,
        max_keys: u32,
    ) -> Result<ListPage, StorageError> {
        validate_prefix(prefix)?;
        let max_keys = effective_max_keys(max_keys);
        let full_prefix = self.full_key(prefix);
        if full_prefix.len() > MAX_KEY_BYTES {
            // Longer than any key of the bucket: nothing starts with it.
            return Ok(ListPage::default());
        }
        let output = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(full_prefix)
            .max_keys(i32::try_from(max_keys).unwrap_or(i32::MAX))
            .set_continuation_token(token.map(str::to_owned))
            .send()
            .await
            .map_err(|err| self.classify(err, None))?;
        let objects = output
            .contents()
            .iter()
            .filter_map(|object| {
                let key = self.lake_key(object.key()?)?;
                Some(ObjectMeta {
                    key: key.to_owned(),
                    size: size_of(object.size()),
                    etag: bare_etag(object.e_tag()),
                    content_type: String::new(),
                    metadata: Metadata::new(),
                    last_modified: system_time(object.last_modified()),
                })
            })
            .collect();
        let next_token = if output.is_truncated().unwrap_or(false) {
            output.next_continuation_token().map(str::to_owned)
        } else {
            None
        };
        Ok(ListPage {
            objects,
            next_token,
        })
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        // S3 deletes are idempotent; vesper's contract says NOT_FOUND, so ask
        // first. A concurrent delete between the two calls is harmless.
        self.head(key).await?;
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.object_key(key)?)
            .send()
            .await
            .map_err(|err| self.classify(err, Some(key)))?;
        Ok(())
    }
}

fn metadata_of(metadata: Option<&HashMap<String, String>>) -> Metadata {
    metadata
        .map(|metadata| {
            metadata
                .iter()
                .map(|(name, value)| (name.to_ascii_lowercase(), value.clone()))
                .collect()
        })
        .unwrap_or_default()
}
