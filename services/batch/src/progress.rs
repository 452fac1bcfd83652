//! Progress of runs as they go: a progress bar on a terminal, plain log
//! lines elsewhere, or anything implementing [`RunObserver`].

use std::{fmt, sync::Mutex, time::Duration};

use indicatif::{ProgressBar, ProgressStyle};

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

/// A progress bar of records and pages on stderr, for terminals.
#[derive(Debug, Default)]
pub struct BarProgress {
    current: Mutex<Option<Bar>>,
}

#[derive(Debug)]
struct Bar {
    bar: ProgressBar,
    planned_pages: Option<u64>,
}

impl Bar {
    fn show(&self, progress: Progress) {
        self.bar.set_position(progress.records);
        let pages = match self.planned_pages {
            Some(planned) => format!("{}/{planned} pages", progress.pages),
            None => format!("{} pages", progress.pages),
        };
        let retries = match progress.retries {
            0 => String::new(),
            1 => ", 1 retry".to_owned(),
            n => format!(", {n} retries"),
        };
        self.bar.set_message(format!("{pages}{retries}"));
    }
}

impl BarProgress {
    /// No bar until a run starts.
    pub fn new() -> Self {
        Self::default()
    }

    fn with_bar(&self, apply: impl FnOnce(&mut Bar)) {
        if let Ok(mut current) = self.current.lock()
            && let Some(bar) = current.as_mut()
        {
            apply(bar);
        }
    }
}

const SPINNER_TEMPLATE: &str = "{spinner} {prefix:.bold} {pos} records, {msg} [{elapsed}]";
const BAR_TEMPLATE: &str =
    "{spinner} {prefix:.bold} [{bar:30}] {pos}/{len} records, {msg} [{elapsed}, eta {eta}]";

impl RunObserver for BarProgress {
    fn started(&self, pipeline: &str, _run_id: &str) {
        let bar = ProgressBar::new_spinner().with_prefix(pipeline.to_owned());
        if let Ok(style) = ProgressStyle::with_template(SPINNER_TEMPLATE) {
            bar.set_style(style);
        }
        bar.enable_steady_tick(Duration::from_millis(120));
        let bar = Bar {
            bar,
            planned_pages: None,
        };
        bar.show(Progress {
            pages: 0,
            records: 0,
            retries: 0,
        });
        if let Ok(mut current) = self.current.lock() {
            *current = Some(bar);
        }
    }

    fn planned(&self, _pipeline: &str, pages: u64, records: Option<u64>) {
        self.with_bar(|bar| {
            bar.planned_pages = Some(pages);
            if let Some(records) = records {
                bar.bar.set_length(records);
                if let Ok(style) = ProgressStyle::with_template(BAR_TEMPLATE) {
                    bar.bar.set_style(style.progress_chars("=> "));
                }
            }
        });
    }

    fn progressed(&self, _pipeline: &str, progress: Progress) {
        self.with_bar(|bar| bar.show(progress));
    }

    fn finished(&self, _report: &RunReport) {
        if let Ok(mut current) = self.current.lock()
            && let Some(bar) = current.take()
        {
            bar.bar.finish_and_clear();
        }
    }
}
