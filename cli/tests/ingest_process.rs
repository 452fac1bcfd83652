//! `vesper ingest` as a real process: SIGKILL in the middle of a stream
//! loses no acknowledged event and duplicates none; a resend after a
//! restart is counted as duplicates; a torn log tail is cut with a warning
//! and the service starts.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::{Value, json};
use vesper::{
    grpc::TracedChannel,
    v1::{Event, FlushRequest, IngestRequest, event_ingest_client::EventIngestClient},
};
use vesper_tests::{
    VesperProcess, assert_each_acknowledged_event_once, eventually, lake_event_ids,
};

const BIN: &str = env!("CARGO_BIN_EXE_vesper");

fn event_id(series: u32, n: u32) -> String {
    format!("{series:08x}-0000-4000-8000-{n:012x}")
}

/// Upstream-shaped events `series`/`range`, decoded as the gateway would.
fn events(series: u32, range: std::ops::Range<u32>) -> Vec<Event> {
    let events: Vec<Value> = range
        .map(|n| {
            json!({
                "event_id": event_id(series, n),
                "user_id": {"user_id": format!("user_{n}"), "age": 30, "status": "free",
                            "country": "IT", "created_at": "2023-01-01T00:00:00Z"},
                "event_type": if n % 2 == 0 { "click" } else { "pray" },
                "source": "apple",
                "timestamp": format!("2026-11-25T{:02}:15:00Z", n % 24),
                "properties": {},
            })
        })
        .collect();
    vesper::wire::decode_webhook(&json!({ "events": events })).expect("valid events")
}

fn start_storage(lake: &Path) -> VesperProcess {
    VesperProcess::start_with(
        Path::new(BIN),
        &[
            "storage",
            "--grpc-addr",
            "127.0.0.1:0",
            "--lake",
            &lake.display().to_string(),
        ],
        &[],
    )
}

fn start_ingest(storage: &VesperProcess, wal: &Path, extra: &[&str]) -> VesperProcess {
    let storage_addr = storage.grpc_addr().to_string();
    let wal = wal.display().to_string();
    let mut args = vec![
        "ingest",
        "--grpc-addr",
        "127.0.0.1:0",
        "--storage-addr",
        &storage_addr,
        "--wal-dir",
        &wal,
    ];
    args.extend_from_slice(extra);
    VesperProcess::start_with(Path::new(BIN), &args, &[("RUST_LOG", "info".into())])
}

fn client(process: &VesperProcess) -> EventIngestClient<TracedChannel> {
    let peer = process.grpc_addr().to_string().parse().expect("peer");
    EventIngestClient::new(vesper::grpc::connect_lazy(&peer))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_and_duplicates_no_acknowledged_event() {
    let lake = tempfile::tempdir().expect("lake");
    let wal = tempfile::tempdir().expect("wal");
    let storage = start_storage(lake.path());
    // Small batches and a short age: objects are being cut, logged, written
    // and confirmed all the time, so the kill lands between those steps.
    let flags = ["--batch-size", "7", "--max-batch-age", "100ms"];
    let mut ingest = start_ingest(&storage, wal.path(), &flags);

    let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
    let mut senders = Vec::new();
    for sender in 0..4_u32 {
        let mut client = client(&ingest);
        let acknowledged = Arc::clone(&acknowledged);
        senders.push(tokio::spawn(async move {
            for batch in 0..400_u32 {
                let first = batch * 5;
                let events = events(sender + 1, first..first + 5);
                let ids: Vec<String> = events.iter().map(|e| e.event_id.clone()).collect();
                match client.ingest(IngestRequest { events }).await {
                    Ok(response) => {
                        assert!(response.get_ref().errors.is_empty());
                        acknowledged.lock().expect("lock").extend(ids);
                    }
                    // The process is gone: an unacknowledged batch may or
                    // may not be in the log, never twice.
                    Err(_) => return,
                }
            }
        }));
    }
    eventually(
        "600 acknowledged events",
        Duration::from_secs(30),
        async || acknowledged.lock().expect("lock").len() >= 600,
    )
    .await;
    ingest.kill();
    for sender in senders {
        sender.await.expect("sender task");
    }
    let acknowledged = acknowledged.lock().expect("lock").clone();
    let before_restart = lake_event_ids(lake.path());

    let ingest = start_ingest(&storage, wal.path(), &flags);
    let flushed = client(&ingest)
        .flush(FlushRequest {})
        .await
        .expect("flush after restart")
        .into_inner();
    let in_lake = assert_each_acknowledged_event_once(lake.path(), &acknowledged);
    assert!(
        in_lake.len() >= acknowledged.len(),
        "{} in the lake, {} acknowledged",
        in_lake.len(),
        acknowledged.len()
    );
    eprintln!(
        "acknowledged {}, in the lake before the restart {}, after {} (flush wrote {} objects)",
        acknowledged.len(),
        before_restart.len(),
        in_lake.len(),
        flushed.objects_written
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_after_sigkill_and_restart_is_counted_as_duplicates() {
    let lake = tempfile::tempdir().expect("lake");
    let wal = tempfile::tempdir().expect("wal");
    let storage = start_storage(lake.path());
    let flags = ["--batch-size", "1000", "--max-batch-age", "1h"];
    let mut ingest = start_ingest(&storage, wal.path(), &flags);
    let mut grpc = client(&ingest);

    // `flushed` reaches the lake and its segment is reclaimed (its ids
    // survive in the snapshot); `logged` is only in the log.
    let flushed = events(7, 0..20);
    let logged = events(7, 20..35);
    let first = grpc
        .ingest(IngestRequest {
            events: flushed.clone(),
        })
        .await
        .expect("ingest")
        .into_inner();
    assert_eq!(first.accepted, 20);
    grpc.flush(FlushRequest {}).await.expect("flush");
    let second = grpc
        .ingest(IngestRequest {
            events: logged.clone(),
        })
        .await
        .expect("ingest")
        .into_inner();
    assert_eq!(second.accepted, 15);
    ingest.kill();

    let ingest = start_ingest(&storage, wal.path(), &flags);
    let mut grpc = client(&ingest);
    let resent = grpc
        .ingest(IngestRequest {
            events: [flushed, logged].concat(),
        })
        .await
        .expect("resend")
        .into_inner();
    assert_eq!((resent.accepted, resent.duplicates), (0, 35));
    grpc.flush(FlushRequest {}).await.expect("flush");
    let in_lake = lake_event_ids(lake.path());
    assert_eq!(in_lake.len(), 35);
    assert!(in_lake.values().all(|count| *count == 1), "{in_lake:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_log_tail_is_cut_with_a_warning_and_complete_records_are_kept() {
    let lake = tempfile::tempdir().expect("lake");
    let wal = tempfile::tempdir().expect("wal");
    let storage = start_storage(lake.path());
    let flags = ["--batch-size", "1000", "--max-batch-age", "1h"];
    let mut ingest = start_ingest(&storage, wal.path(), &flags);
    let mut grpc = client(&ingest);
    for batch in 0..3 {
        let response = grpc
            .ingest(IngestRequest {
                events: events(9, batch * 10..batch * 10 + 10),
            })
            .await
            .expect("ingest")
            .into_inner();
        assert_eq!(response.accepted, 10);
    }
    ingest.kill();

    // A power cut in the middle of the last append: its last bytes never
    // reached the disk.
    let mut segments: Vec<PathBuf> = std::fs::read_dir(wal.path())
        .expect("wal dir")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "wal"))
        .collect();
    segments.sort();
    let last = segments.last().expect("a segment");
    let length = std::fs::metadata(last).expect("segment").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(last)
        .expect("open segment")
        .set_len(length - 5)
        .expect("tear the tail");

    let ingest = start_ingest(&storage, wal.path(), &flags);
    assert!(
        ingest.log().contains("torn write-ahead log tail"),
        "no warning:\n{}",
        ingest.log()
    );
    let mut grpc = client(&ingest);
    grpc.flush(FlushRequest {}).await.expect("flush");
    let in_lake = lake_event_ids(lake.path());
    let expected: BTreeSet<String> = (0..20).map(|n| event_id(9, n)).collect();
    assert_eq!(in_lake.keys().cloned().collect::<BTreeSet<_>>(), expected);

    // The torn batch was never stored, so sending it again is no duplicate.
    let again = grpc
        .ingest(IngestRequest {
            events: events(9, 20..30),
        })
        .await
        .expect("ingest")
        .into_inner();
    assert_eq!((again.accepted, again.duplicates), (10, 0));
}
