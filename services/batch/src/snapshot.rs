//! Writing a run's snapshot to the lake, crash-safely:
//! `<prefix>dt=YYYY-MM-DD/run=<run_id>/part-NNNNN.ndjson`, each part written
//! once it is full, then `_manifest.json` last. Readers take the greatest
//! run id that has a manifest and only the parts it lists, so a run that
//! fails or dies half-way is never read, and re-running never overwrites.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;
use vesper_storage::{ObjectKey, ObjectStore, PutOptions};

use crate::{BatchError, Record, spec::PartLimits};

/// Content type of the parts.
pub const NDJSON_CONTENT_TYPE: &str = "application/x-ndjson";

/// File name of a run's manifest.
pub const MANIFEST_NAME: &str = "_manifest.json";

/// One written part of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartInfo {
    /// Lake key of the part.
    pub key: String,
    /// Records in the part.
    pub records: u64,
    /// Size in bytes.
    pub bytes: u64,
    /// Hex SHA-256 of the bytes.
    pub sha256: String,
}

impl From<&PartInfo> for vesper::v1::PartInfo {
    fn from(part: &PartInfo) -> Self {
        Self {
            key: part.key.clone(),
            records: part.records,
            bytes: part.bytes,
            sha256: part.sha256.clone(),
        }
    }
}

/// A run's `_manifest.json`: what the run wrote, published last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The pipeline's name.
    pub pipeline: String,
    /// The run id (UUIDv7).
    pub run_id: String,
    /// The first URL the run fetched.
    pub source_url: String,
    /// When the run started, RFC 3339.
    pub started_at: String,
    /// When the last part was written, RFC 3339.
    pub finished_at: String,
    /// Records in all parts.
    pub records: u64,
    /// The parts, in order.
    pub parts: Vec<PartInfo>,
}

/// `<prefix>dt=YYYY-MM-DD/run=<run_id>/`, the directory of one run, dated by
/// its start in UTC.
pub fn run_directory(prefix: &str, started_at: OffsetDateTime, run_id: Uuid) -> String {
    let date = started_at.date();
    format!(
        "{prefix}dt={:04}-{:02}-{:02}/run={run_id}/",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

/// Buffers records into parts and writes each part once it is full. At
/// most one part is held in memory.
#[derive(Debug)]
pub(crate) struct SnapshotWriter {
    store: Arc<dyn ObjectStore>,
    directory: String,
    limits: PartLimits,
    buffer: Vec<u8>,
    buffered_records: u64,
    line: Vec<u8>,
    parts: Vec<PartInfo>,
}

impl SnapshotWriter {
    pub(crate) fn new(store: Arc<dyn ObjectStore>, directory: String, limits: PartLimits) -> Self {
        Self {
            store,
            directory,
            limits,
            buffer: Vec::new(),
            buffered_records: 0,
            line: Vec::new(),
            parts: Vec::new(),
        }
    }

    /// Parts written so far.
    pub(crate) fn parts(&self) -> &[PartInfo] {
        &self.parts
    }

    /// Bytes written so far, parts only.
    pub(crate) fn bytes_written(&self) -> u64 {
        self.parts.iter().map(|part| part.bytes).sum()
    }

    /// Records written or buffered so far.
    pub(crate) fn records(&self) -> u64 {
        self.parts.iter().map(|part| part.records).sum::<u64>() + self.buffered_records
    }

    /// Appends a record as one NDJSON line, writing the current part first
    /// when the line would take it over its byte limit.
    pub(crate) async fn push(&mut self, record: &Record) -> Result<(), BatchError> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, record)
            .map_err(|err| BatchError::Task(err.to_string()))?;
        self.line.push(b'\n');
        let size = u64::try_from(self.buffer.len() + self.line.len()).unwrap_or(u64::MAX);
        if self.buffered_records > 0 && size > self.limits.max_bytes {
            self.flush().await?;
        }
        self.buffer.extend_from_slice(&self.line);
        self.buffered_records += 1;
        if self.buffered_records >= self.limits.max_records {
            self.flush().await?;
        }
        Ok(())
    }

    /// Writes the buffered records as the next part, if there are any.
    async fn flush(&mut self) -> Result<(), BatchError> {
        if self.buffered_records == 0 {
            return Ok(());
        }
        let key = format!("{}part-{:05}.ndjson", self.directory, self.parts.len());
        let body = Bytes::from(std::mem::take(&mut self.buffer));
        let part = PartInfo {
            key: key.clone(),
            records: self.buffered_records,
            bytes: u64::try_from(body.len()).unwrap_or(u64::MAX),
            sha256: hex::encode(Sha256::digest(&body)),
        };
        self.store
            .put(
                &ObjectKey::new(key)?,
                body,
                PutOptions::content_type(NDJSON_CONTENT_TYPE),
            )
            .await?;
        tracing::debug!(key = %part.key, records = part.records, bytes = part.bytes, "part written");
        self.parts.push(part);
        self.buffered_records = 0;
        Ok(())
    }

    /// Writes what is buffered, then the manifest: the run is published.
    /// Returns the manifest's key.
    pub(crate) async fn publish(
        &mut self,
        manifest: impl FnOnce(&[PartInfo]) -> Manifest,
    ) -> Result<String, BatchError> {
        self.flush().await?;
        let manifest = manifest(&self.parts);
        let key = format!("{}{MANIFEST_NAME}", self.directory);
        let body = serde_json::to_vec_pretty(&manifest)
            .map_err(|err| BatchError::Task(err.to_string()))?;
        self.store
            .put(
                &ObjectKey::new(key.clone())?,
                Bytes::from(body),
                PutOptions::content_type("application/json"),
            )
            .await?;
        Ok(key)
    }

    /// Deletes the parts of a run that will not be published. Best effort:
    /// parts left behind (the lake is down, the process dies) are harmless,
    /// since nothing reads a run without a manifest.
    pub(crate) async fn abandon(&mut self) {
        self.buffer.clear();
        self.buffered_records = 0;
        for part in self.parts.drain(..) {
            let deleted = match ObjectKey::new(part.key.clone()) {
                Ok(key) => self.store.delete(&key).await.map_err(|err| err.to_string()),
                Err(err) => Err(err.to_string()),
            };
            if let Err(err) = deleted {
                tracing::warn!(key = %part.key, "cannot delete a part of a failed run (it is never read without a manifest): {err}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn run_directories_are_dated_by_the_start_in_utc() {
        let run_id = Uuid::nil();
        assert_eq!(
            run_directory("users/", datetime!(2026-01-05 23:59:59 UTC), run_id),
            "users/dt=2026-01-05/run=00000000-0000-0000-0000-000000000000/"
        );
    }
}
