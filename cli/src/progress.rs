//! A progress bar of batch runs on a terminal: a [`RunObserver`] that draws
//! what the engine reports.

use std::{sync::Mutex, time::Duration};

use indicatif::{ProgressBar, ProgressStyle};
use vesper_batch::{Progress, RunObserver, RunReport};

/// A progress bar of records and pages on stderr, for terminals.
#[derive(Debug, Default)]
pub(crate) struct BarProgress {
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
    pub(crate) fn new() -> Self {
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
