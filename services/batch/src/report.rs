//! What a run did.

use std::time::Duration;

use time::OffsetDateTime;
use uuid::Uuid;

use crate::snapshot::PartInfo;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// Every part and the manifest were written.
    Succeeded,
    /// The run stopped on an error; no manifest was written.
    Failed,
}

impl RunStatus {
    /// "succeeded" or "failed", as in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }
}

/// The report of one pipeline run.
///
/// A failed run publishes nothing and deletes the parts it wrote, so its
/// `parts` is empty; `pages`, `records` and `bytes` still say how far it
/// got.
#[derive(Debug, Clone, PartialEq)]
pub struct RunReport {
    /// The pipeline's name.
    pub pipeline: String,
    /// The run's id, a UUIDv7: ids sort by start time.
    pub run_id: Uuid,
    /// How the run ended.
    pub status: RunStatus,
    /// Why it failed.
    pub error: Option<String>,
    /// Why paging ended ("has_more is false", "max_pages 10"); `None` when
    /// the run failed.
    pub stop_reason: Option<String>,
    /// The first URL fetched.
    pub source_url: String,
    /// When the run started.
    pub started_at: OffsetDateTime,
    /// When it ended.
    pub finished_at: OffsetDateTime,
    /// Wall time.
    pub duration: Duration,
    /// Pages fetched.
    pub pages: u64,
    /// Records written (after transforms; a hook may drop some).
    pub records: u64,
    /// Bytes of parts written.
    pub bytes: u64,
    /// Requests retried.
    pub retries: u64,
    /// Lake key of the manifest; `None` when the run failed.
    pub manifest_key: Option<String>,
    /// The parts, in order.
    pub parts: Vec<PartInfo>,
}

impl RunReport {
    /// Whether the run published its snapshot.
    pub fn succeeded(&self) -> bool {
        self.status == RunStatus::Succeeded
    }

    /// Records per second of wall time.
    pub fn records_per_second(&self) -> f64 {
        let seconds = self.duration.as_secs_f64();
        if seconds > 0.0 {
            self.records as f64 / seconds
        } else {
            0.0
        }
    }
}

impl From<&RunReport> for vesper::v1::RunReport {
    fn from(report: &RunReport) -> Self {
        let status = match report.status {
            RunStatus::Succeeded => vesper::v1::RunStatus::Succeeded,
            RunStatus::Failed => vesper::v1::RunStatus::Failed,
        };
        Self {
            pipeline: report.pipeline.clone(),
            run_id: report.run_id.to_string(),
            status: status.into(),
            error: report.error.clone().unwrap_or_default(),
            source_url: report.source_url.clone(),
            started_at: Some(vesper::wire::from_datetime(report.started_at)),
            finished_at: Some(vesper::wire::from_datetime(report.finished_at)),
            duration: prost_types::Duration::try_from(report.duration).ok(),
            pages: report.pages,
            records: report.records,
            bytes: report.bytes,
            retries: report.retries,
            records_per_second: report.records_per_second(),
            manifest_key: report.manifest_key.clone().unwrap_or_default(),
            parts: report.parts.iter().map(Into::into).collect(),
        }
    }
}
