//! The analytics' sample CSVs: exact headers, row counts and text formats,
//! distributions within tolerant bounds of the ratios in docs/compatibility.md, the `IF`
//! defect, and writing them into a lake.

use std::collections::HashMap;

use vesper_datasource::{
    CONTENT_CSV, CSV_CONTENT_TYPE, DEFAULT_SEED, SESSIONS_CSV, SampleFile, USERS_CSV,
    render_sample_data, sample_data_present, write_sample_data,
};
use vesper_storage::{FsStore, ObjectKey, ObjectStore};

/// The rows of a CSV, split on commas (the files never need quoting),
/// after checking the header.
fn rows<'a>(file: &'a SampleFile, header: &str) -> Vec<Vec<&'a str>> {
    let mut lines = file.csv.lines();
    assert_eq!(lines.next(), Some(header), "{}", file.key);
    assert!(file.csv.ends_with('\n'));
    let rows: Vec<Vec<&str>> = lines.map(|line| line.split(',').collect()).collect();
    let columns = header.split(',').count();
    assert!(rows.iter().all(|row| row.len() == columns), "{}", file.key);
    assert!(!file.csv.contains('"'), "no quoting in {}", file.key);
    assert_eq!(rows.len(), file.rows as usize);
    rows
}

/// `2023-04-16 14:38:01.803442` in the given year.
fn assert_timestamp(text: &str, year: &str) {
    let bytes = text.as_bytes();
    assert_eq!(bytes.len(), 26, "{text}");
    assert!(text.starts_with(year), "{text}");
    for (index, byte) in bytes.iter().enumerate() {
        let separator = match index {
            4 | 7 => Some(b'-'),
            10 => Some(b' '),
            13 | 16 => Some(b':'),
            19 => Some(b'.'),
            _ => None,
        };
        match separator {
            Some(separator) => assert_eq!(*byte, separator, "{text}"),
            None => assert!(byte.is_ascii_digit(), "{text}"),
        }
    }
    let iso = format!("{}T{}Z", &text[..10], &text[11..]);
    assert!(vesper::wire::parse_timestamp(&iso).is_some(), "{text}");
}

/// Shares of each value of column `column`, checked against `expected`
/// ratios within `tolerance` (absolute share).
fn assert_shares(rows: &[Vec<&str>], column: usize, expected: &[(&str, f64)], tolerance: f64) {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for row in rows {
        *counts.entry(row[column]).or_default() += 1;
    }
    let total: f64 = expected.iter().map(|(_, weight)| weight).sum();
    assert_eq!(counts.len(), expected.len(), "{counts:?}");
    for (value, weight) in expected {
        let share = counts.get(value).copied().unwrap_or(0) as f64 / rows.len() as f64;
        let target = weight / total;
        assert!(
            (share - target).abs() <= tolerance,
            "{value}: {share:.3} vs {target:.3} ({counts:?})"
        );
    }
}

fn ids_are_one_to_n(rows: &[Vec<&str>]) {
    for (index, row) in rows.iter().enumerate() {
        assert_eq!(row[0], (index + 1).to_string());
    }
}

fn whole(text: &str) -> u32 {
    text.parse()
        .unwrap_or_else(|_| panic!("not a number: {text}"))
}

#[test]
fn users_csv_has_the_old_columns_and_distributions() {
    let [users, _, _] = render_sample_data(DEFAULT_SEED);
    assert_eq!(users.key, USERS_CSV);
    let rows = rows(&users, "id,age,status,country,created_at");
    assert_eq!(rows.len(), 10_000);
    ids_are_one_to_n(&rows);
    let ages: Vec<u32> = rows.iter().map(|row| whole(row[1])).collect();
    assert!(ages.iter().all(|age| (18..=98).contains(age)));
    assert_eq!(ages.iter().min(), Some(&18));
    assert_eq!(ages.iter().max(), Some(&98));
    // Roughly uniform: each decade of ages holds its share.
    let young = ages.iter().filter(|age| **age < 58).count() as f64 / 10_000.0;
    assert!((0.45..0.53).contains(&young), "{young}");
    assert_shares(
        &rows,
        2,
        &[("free", 6.0), ("paid", 2.0), ("trial", 2.0)],
        0.03,
    );
    assert_shares(
        &rows,
        3,
        &[("US", 5.0), ("BR", 3.0), ("IF", 1.0), ("FR", 1.0)],
        0.03,
    );
    assert!(
        !rows.iter().any(|row| row[3] == "IT"),
        "IF is the defect, not IT"
    );
    rows.iter()
        .for_each(|row| assert_timestamp(row[4], "2023-"));
}

#[test]
fn sessions_csv_has_the_old_columns_and_distributions() {
    let [_, sessions, _] = render_sample_data(DEFAULT_SEED);
    assert_eq!(sessions.key, SESSIONS_CSV);
    let rows = rows(&sessions, "id,user_id,content_id,is_complete,created_at");
    assert_eq!(rows.len(), 100_000);
    ids_are_one_to_n(&rows);
    assert!(rows.iter().all(|row| (1..=10_000).contains(&whole(row[1]))));
    assert!(rows.iter().all(|row| (1..=1_000).contains(&whole(row[2]))));
    assert_shares(&rows, 3, &[("true", 1.0), ("false", 1.0)], 0.02);
    rows.iter()
        .for_each(|row| assert_timestamp(row[4], "2024-"));
    // The whole year is covered, leap day included.
    let months: std::collections::BTreeSet<_> = rows.iter().map(|row| &row[4][..7]).collect();
    assert_eq!(months.len(), 12);
    assert!(rows.iter().any(|row| row[4].starts_with("2024-02-29")));
}

#[test]
fn content_csv_has_the_old_columns_and_distributions() {
    let [_, _, content] = render_sample_data(DEFAULT_SEED);
    assert_eq!(content.key, CONTENT_CSV);
    let rows = rows(&content, "id,media_type,prayer_type,created_at");
    assert_eq!(rows.len(), 1_000);
    ids_are_one_to_n(&rows);
    assert_shares(
        &rows,
        1,
        &[("video", 3.0), ("audio", 6.0), ("text", 1.0)],
        0.06,
    );
    assert_shares(
        &rows,
        2,
        &[
            ("academic", 1.0),
            ("podcast", 1.0),
            ("reflection", 2.0),
            ("lectio_divina", 2.0),
            ("rosary", 3.0),
            ("meditation", 1.0),
        ],
        0.05,
    );
    rows.iter()
        .for_each(|row| assert_timestamp(row[3], "2023-"));
}

#[tokio::test]
async fn the_csvs_are_written_into_a_lake_once_present() {
    let lake = tempfile::tempdir().expect("temp dir");
    let store = FsStore::open(lake.path(), 64 << 20).await.expect("lake");
    assert!(!sample_data_present(&store).await.expect("head"));

    let written = write_sample_data(&store, DEFAULT_SEED)
        .await
        .expect("write");
    let summary: Vec<_> = written.iter().map(|file| (file.key, file.rows)).collect();
    assert_eq!(
        summary,
        [
            (USERS_CSV, 10_000),
            (SESSIONS_CSV, 100_000),
            (CONTENT_CSV, 1_000)
        ]
    );
    assert!(sample_data_present(&store).await.expect("head"));

    for (file, rendered) in written.iter().zip(render_sample_data(DEFAULT_SEED)) {
        let (meta, body) = store
            .get(&ObjectKey::new(file.key).expect("key"))
            .await
            .expect("get");
        assert_eq!(meta.content_type, CSV_CONTENT_TYPE);
        assert_eq!(body.len(), file.bytes);
        assert_eq!(body, rendered.csv.as_bytes());
        // A plain file under the lake, for DuckDB and anyone else.
        let on_disk = std::fs::read(lake.path().join(file.key)).expect("file");
        assert_eq!(on_disk, rendered.csv.as_bytes());
    }

    // One file missing is "not present", so a later start writes them again.
    store
        .delete(&ObjectKey::new(SESSIONS_CSV).expect("key"))
        .await
        .expect("delete");
    assert!(!sample_data_present(&store).await.expect("head"));
}

#[tokio::test]
async fn the_csvs_go_through_the_storage_service_too() {
    let lake = tempfile::tempdir().expect("temp dir");
    let backend: std::sync::Arc<dyn ObjectStore> =
        std::sync::Arc::new(FsStore::open(lake.path(), 64 << 20).await.expect("lake"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let peer = listener
        .local_addr()
        .expect("addr")
        .to_string()
        .parse()
        .expect("peer");
    let shutdown = vesper::Shutdown::new();
    let server = tokio::spawn(vesper_storage::serve(
        listener,
        backend,
        64 << 20,
        shutdown.signalled(),
    ));
    let remote = vesper_storage::RemoteStore::connect_lazy(&peer, 64 << 20);
    assert!(!sample_data_present(&remote).await.expect("head"));
    write_sample_data(&remote, DEFAULT_SEED)
        .await
        .expect("write");
    assert!(sample_data_present(&remote).await.expect("head"));
    let (meta, _) = remote
        .get(&ObjectKey::new(CONTENT_CSV).expect("key"))
        .await
        .expect("get");
    assert_eq!(meta.content_type, CSV_CONTENT_TYPE);
    let [_, sessions, _] = render_sample_data(DEFAULT_SEED);
    assert_eq!(
        std::fs::read(lake.path().join(SESSIONS_CSV)).expect("file"),
        sessions.csv.as_bytes()
    );
    shutdown.trigger();
    server.await.expect("task").expect("storage served");
}
