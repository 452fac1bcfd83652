//! Writes `tests/fixtures/legacy-lake/` with this release's directory
//! backend, so that later releases can prove they still read it. Run once,
//! by hand: `cargo test -p vesper-storage --test write_legacy_fixture -- --ignored`.

use std::{fs, path::PathBuf};

use bytes::Bytes;
use vesper_storage::{FsStore, Metadata, ObjectKey, ObjectStore, PutOptions};

#[tokio::test]
#[ignore = "writes the committed upgrade fixture; run by hand only"]
async fn write_legacy_fixture() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/legacy-lake");
    let _ = fs::remove_dir_all(&root);
    let store = FsStore::open(&root, 1024 * 1024).await.expect("open");
    let objects: [(&str, &[u8], Option<&str>, &[(&str, &str)]); 5] = [
        (
            "events/dt=2026-11-25/hour=07/0001.ndjson",
            b"{\"n\":1}\n{\"n\":2}\n",
            Some("application/x-ndjson"),
            &[("pipeline", "webhook"), ("run-id", "0190-abc")],
        ),
        (
            "data/users.csv",
            b"id,name\n1,ada\n",
            Some("text/csv"),
            &[("source", "sample-data")],
        ),
        // Its sidecar is `.vesper/meta/a.json`: the name the old layout
        // could not give the directory of `a.json/b`'s sidecar.
        ("a", b"plain a", Some("text/plain"), &[("role", "collider")]),
        ("notes.txt", b"no options", None, &[]),
        ("data/removed.csv", b"gone", Some("text/csv"), &[]),
    ];
    for (key, body, content_type, metadata) in objects {
        let options = PutOptions {
            content_type: content_type.map(str::to_owned),
            metadata: metadata
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect::<Metadata>(),
        };
        store
            .put(
                &ObjectKey::new(key).expect("key"),
                Bytes::copy_from_slice(body),
                options,
            )
            .await
            .expect("put");
    }
    // The body file of data/removed.csv vanishes behind the lake's back: its
    // sidecar stays without an object.
    fs::remove_file(root.join("data/removed.csv")).expect("remove body");
    // A file put in by hand has no sidecar.
    fs::create_dir_all(root.join("manual")).expect("manual dir");
    fs::write(root.join("manual/readme.md"), b"# by hand\n").expect("manual file");
    // A crashed writer's temp file.
    fs::write(
        root.join(".vesper/tmp/0192f1a0-0000-7000-8000-000000000000.tmp"),
        b"half a body",
    )
    .expect("temp file");
}
