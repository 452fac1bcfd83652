//! A write-ahead log written by the first log format (whole protobuf
//! events in `Append` records) is read unchanged by this release: the
//! events the lake had not confirmed arrive with the very lines the old
//! release would have written, and the confirmed ones are not written
//! again. The fixture was written by the first format's code; see
//! `fixtures/wal-v1/events.json` for the events it holds.

use std::{path::Path, sync::Arc};

use vesper_ingest::{IngestConfig, IngestEngine};
use vesper_storage::{FsStore, ObjectStore};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read fixture") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}

#[tokio::test]
async fn a_first_format_log_replays_into_the_same_lake_lines() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wal-v1");
    let scratch = tempfile::tempdir().expect("tempdir");
    let wal_dir = scratch.path().join("wal");
    copy_dir(&fixture.join("wal"), &wal_dir);
    let lake = scratch.path().join("lake");
    let store: Arc<dyn ObjectStore> = Arc::new(
        FsStore::open(&lake, vesper_storage::DEFAULT_MAX_OBJECT_SIZE.bytes())
            .await
            .expect("lake"),
    );

    let engine = IngestEngine::start(IngestConfig::new(&wal_dir), Arc::clone(&store))
        .await
        .expect("the old log opens");
    let flushed = engine.flush().await.expect("flush");
    engine.shutdown().await;

    assert_eq!(flushed.events, 3, "only the unconfirmed events are written");
    let mut lines = Vec::new();
    for key in &flushed.keys {
        let body = std::fs::read_to_string(lake.join(key)).expect("object");
        lines.extend(body.lines().map(str::to_owned));
    }
    lines.sort();
    let expected =
        std::fs::read_to_string(fixture.join("expected-unflushed.ndjson")).expect("expected lines");
    let mut expected: Vec<String> = expected.lines().map(str::to_owned).collect();
    expected.sort();
    assert_eq!(lines, expected);
}
