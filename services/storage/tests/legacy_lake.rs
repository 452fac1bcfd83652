//! Upgrades: a directory lake written before sidecars were named by hash
//! (`tests/fixtures/legacy-lake/`, sidecars at `.vesper/meta/<key>.json`)
//! reads back unchanged, and takes new writes beside its old sidecars.

use std::{
    fs,
    path::{Path, PathBuf},
};

use bytes::Bytes;
use vesper::{ErrorCode, ServiceError};
use vesper_storage::{DEFAULT_CONTENT_TYPE, FsStore, Metadata, ObjectKey, ObjectStore, PutOptions};

const LIMIT: u64 = 1024 * 1024;

fn key(text: &str) -> ObjectKey {
    ObjectKey::new(text).expect("valid test key")
}

fn md5_hex(body: &[u8]) -> String {
    use md5::{Digest, Md5};
    hex::encode(Md5::digest(body))
}

fn metadata(pairs: &[(&str, &str)]) -> Metadata {
    pairs
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect()
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create");
    for entry in fs::read_dir(from).expect("read fixture") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// A copy of the fixture (opening a lake writes to it).
fn legacy_lake() -> (tempfile::TempDir, PathBuf) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/legacy-lake");
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("lake");
    copy_tree(&fixture, &root);
    (dir, root)
}

async fn all_keys(store: &dyn ObjectStore, prefix: &str, page_size: u32) -> Vec<String> {
    let mut keys = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = store
            .list(prefix, token.as_deref(), page_size)
            .await
            .expect("list");
        keys.extend(page.objects.into_iter().map(|object| object.key));
        match page.next_token {
            Some(next) => token = Some(next),
            None => return keys,
        }
    }
}

const OBJECTS: [&str; 5] = [
    "a",
    "data/users.csv",
    "events/dt=2026-11-25/hour=07/0001.ndjson",
    "manual/readme.md",
    "notes.txt",
];

#[tokio::test]
async fn every_object_and_its_metadata_read_back_unchanged() {
    let (_dir, root) = legacy_lake();
    let store = FsStore::open(&root, LIMIT).await.expect("open");
    let expected: [(&str, &[u8], &str, Metadata); 5] = [
        (
            "a",
            b"plain a",
            "text/plain",
            metadata(&[("role", "collider")]),
        ),
        (
            "data/users.csv",
            b"id,name\n1,ada\n",
            "text/csv",
            metadata(&[("source", "sample-data")]),
        ),
        (
            "events/dt=2026-11-25/hour=07/0001.ndjson",
            b"{\"n\":1}\n{\"n\":2}\n",
            "application/x-ndjson",
            metadata(&[("pipeline", "webhook"), ("run-id", "0190-abc")]),
        ),
        // Put in by hand: no sidecar, the defaults.
        (
            "manual/readme.md",
            b"# by hand\n",
            DEFAULT_CONTENT_TYPE,
            Metadata::new(),
        ),
        (
            "notes.txt",
            b"no options",
            DEFAULT_CONTENT_TYPE,
            Metadata::new(),
        ),
    ];
    for (name, body, content_type, metadata) in &expected {
        let (meta, read) = store.get(&key(name)).await.expect(name);
        assert_eq!(read.as_ref(), *body, "{name}");
        assert_eq!(meta.size, body.len() as u64, "{name}");
        assert_eq!(meta.etag, md5_hex(body), "{name}");
        assert_eq!(meta.content_type, *content_type, "{name}");
        assert_eq!(&meta.metadata, metadata, "{name}");
        let head = store.head(&key(name)).await.expect(name);
        assert_eq!(head.etag, meta.etag, "{name}");
        assert_eq!(head.content_type, meta.content_type, "{name}");
        assert_eq!(head.metadata, meta.metadata, "{name}");
    }

    // Listings show the objects only: not the old sidecars, not the
    // sidecar whose body is gone, not the crashed writer's temp file.
    for page_size in [1, 2, 0] {
        assert_eq!(all_keys(&store, "", page_size).await, OBJECTS);
    }
    let page = store.list("", None, 0).await.expect("list");
    // Listings take the etag from the sidecar (a file put in by hand has
    // none, and a listing does not hash bodies).
    for object in page.objects.iter().filter(|o| o.key != "manual/readme.md") {
        let (_, body) = store.get(&key(&object.key)).await.expect("get");
        assert_eq!(object.etag, md5_hex(&body), "{}", object.key);
    }
    assert_eq!(all_keys(&store, "data/", 0).await, ["data/users.csv"]);
    for internal in [".vesper", ".vesper/", ".vesper/meta/", ".vesper/tmp/"] {
        assert!(all_keys(&store, internal, 0).await.is_empty(), "{internal}");
    }
    assert_eq!(
        store
            .get(&key("data/removed.csv"))
            .await
            .expect_err("its body is gone")
            .code(),
        ErrorCode::NotFound
    );
}

#[tokio::test]
async fn new_writes_go_beside_the_old_sidecars_and_replace_them() {
    let (_dir, root) = legacy_lake();
    let legacy = root.join(".vesper/meta");
    let store = FsStore::open(&root, LIMIT).await.expect("open");

    // The old layout could not hold this key beside "a" (whose sidecar is
    // .vesper/meta/a.json).
    store
        .put(
            &key("a.json/b"),
            Bytes::from_static(b"b"),
            PutOptions::content_type("text/b"),
        )
        .await
        .expect("a.json/b beside the old sidecar of a");
    assert_eq!(
        store
            .head(&key("a.json/b"))
            .await
            .expect("head")
            .content_type,
        "text/b"
    );
    assert_eq!(
        store.head(&key("a")).await.expect("head").content_type,
        "text/plain"
    );

    // Rewriting a key: the new sidecar answers, the old one is gone.
    store
        .put(
            &key("data/users.csv"),
            Bytes::from_static(b"id,name\n1,ada\n"),
            PutOptions {
                content_type: Some("text/csv; header=present".into()),
                metadata: metadata(&[("source", "rewritten")]),
            },
        )
        .await
        .expect("rewrite");
    let head = store.head(&key("data/users.csv")).await.expect("head");
    assert_eq!(head.content_type, "text/csv; header=present");
    assert_eq!(head.metadata, metadata(&[("source", "rewritten")]));
    assert!(!legacy.join("data/users.csv.json").exists());

    // Deleting a key removes its old sidecar and the directories it emptied.
    store
        .delete(&key("events/dt=2026-11-25/hour=07/0001.ndjson"))
        .await
        .expect("delete");
    assert!(!legacy.join("events").exists());
    assert!(!root.join("events").exists());

    // What is left still reads as before.
    let (meta, body) = store.get(&key("a")).await.expect("get a");
    assert_eq!(body, Bytes::from_static(b"plain a"));
    assert_eq!(meta.metadata, metadata(&[("role", "collider")]));
    assert_eq!(
        all_keys(&store, "", 0).await,
        [
            "a",
            "a.json/b",
            "data/users.csv",
            "manual/readme.md",
            "notes.txt"
        ]
    );
}
