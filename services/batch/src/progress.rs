//! Progress of runs as they go: plain log lines ([`LogProgress`]), nothing
//! ([`Quiet`]), or anything implementing [`RunObserver`]. The engine only
//! reports; drawing a progress bar on a terminal is the binary's business.

use std::fmt;

use crate::RunReport;

/// Told about each run as it goes. Every method has an empty default.
pub trait RunObserver: Send + Sync + fmt::Debug {
    /// A run started.
    fn started(&self, _pipeline: &str, _run_id: &str) {}

    /// The run now knows how many pages and records to expect (after its
    /// first page, when the API tells the total).
    fn planned(&self, _pipeline: &str, _pages: u64, _records: Option<u64>) {}

    /// A page was written: the run's totals so far.
    fn progressed(&self, _pipeline: &str, _progress: Progress) {}

    /// The run ended (the engine logs the summary itself).
    fn finished(&self, _report: &RunReport) {}
}

/// A run's totals so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Pages fetched.
    pub pages: u64,
    /// Records taken from the API.
    pub records: u64,
    /// Requests retried.
    pub retries: u64,
}

/// Observes nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct Quiet;

impl RunObserver for Quiet {}

/// One info line every `every` pages; for logs and pipes.
#[derive(Debug, Clone, Copy)]
pub struct LogProgress {
    every: u64,
}

impl LogProgress {
    /// A line every `every` pages (at least 1).
    pub fn every(every: u64) -> Self {
        Self {
            every: every.max(1),
        }
    }
}

impl Default for LogProgress {
    fn default() -> Self {
        Self::every(10)
    }
}

impl RunObserver for LogProgress {
    fn progressed(&self, pipeline: &str, progress: Progress) {
        if progress.pages.is_multiple_of(self.every) {
            tracing::info!(
                pipeline,
                pages = progress.pages,
                records = progress.records,
                retries = progress.retries,
                "{pipeline}: {} pages, {} records so far",
                progress.pages,
                progress.records
            );
        }
    }
}
