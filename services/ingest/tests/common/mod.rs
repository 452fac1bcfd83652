//! What the ingest tests share beyond the test kit.

#![allow(dead_code, unreachable_pub)]

use std::{path::Path, time::Duration};

use vesper_ingest::IngestConfig;

/// An engine config for tests: the log in `wal_dir`, quick retries.
pub fn test_config(wal_dir: &Path) -> IngestConfig {
    IngestConfig {
        retry_initial: Duration::from_millis(50),
        retry_max: Duration::from_millis(500),
        ..IngestConfig::new(wal_dir)
    }
}
