//! What only the directory backend has to prove: hostile keys never reach
//! outside the lake root, key/prefix clashes are refused, and its own files
//! never show.

use std::{fs, path::Path, sync::Arc};

use bytes::Bytes;
use tonic::Code;
use vesper::{
    ErrorCode, ServiceError, Shutdown,
    v1::{self, storage_client::StorageClient},
};
use vesper_storage::{FsStore, ObjectKey, ObjectStore, PutOptions};

const LIMIT: u64 = 1024 * 1024;

fn key(text: &str) -> ObjectKey {
    ObjectKey::new(text).expect("valid test key")
}

/// Every file under `dir`, relative, sorted.
fn files_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in fs::read_dir(&current).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let relative = path.strip_prefix(dir).expect("under dir");
                found.push(relative.to_string_lossy().into_owned());
            }
        }
    }
    found.sort();
    found
}

#[tokio::test]
async fn hostile_keys_are_refused_on_every_rpc_and_nothing_escapes() {
    let sandbox = tempfile::tempdir().expect("temp dir");
    let lake = sandbox.path().join("lake");
    let outside = sandbox.path().join("outside");
    fs::create_dir_all(&outside).expect("outside dir");
    fs::write(outside.join("secret"), b"untouched").expect("sentinel");

    let store: Arc<dyn ObjectStore> = Arc::new(FsStore::open(&lake, LIMIT).await.expect("open"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = Shutdown::new();
    let server = tokio::spawn(vesper_storage::serve(
        listener,
        store,
        LIMIT,
        shutdown.signalled(),
    ));
    let mut client = StorageClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");

    let long = "k".repeat(1025);
    let long_segment = format!("a/{}", "s".repeat(256));
    let hostile = [
        "../../etc/passwd",
        "../outside/secret",
        "a/../../outside/secret",
        "/etc/passwd",
        "..",
        ".",
        "a/./b",
        "a\\..\\..\\outside\\secret",
        "a\0b",
        "a\nb",
        "",
        "a//b",
        "trailing/",
        ".vesper/meta/x.json",
        long.as_str(),
        long_segment.as_str(),
    ];
    for bad in hostile {
        let put = client
            .put_object(v1::PutObjectRequest {
                key: bad.to_owned(),
                body: Bytes::from_static(b"pwned"),
                ..Default::default()
            })
            .await
            .expect_err(bad);
        assert_eq!(put.code(), Code::InvalidArgument, "put {bad:?}: {put:?}");
        assert!(put.message().contains("invalid key"), "{}", put.message());
        let get = client
            .get_object(v1::GetObjectRequest {
                key: bad.to_owned(),
            })
            .await
            .expect_err(bad);
        assert_eq!(get.code(), Code::InvalidArgument, "get {bad:?}");
        let head = client
            .head_object(v1::HeadObjectRequest {
                key: bad.to_owned(),
            })
            .await
            .expect_err(bad);
        assert_eq!(head.code(), Code::InvalidArgument, "head {bad:?}");
        let delete = client
            .delete_object(v1::DeleteObjectRequest {
                key: bad.to_owned(),
            })
            .await
            .expect_err(bad);
        assert_eq!(delete.code(), Code::InvalidArgument, "delete {bad:?}");
    }
    let long_prefix = "p".repeat(256);
    for bad_prefix in ["../", "../outside/", "a/../../", "/", long_prefix.as_str()] {
        let list = client
            .list_objects(v1::ListObjectsRequest {
                prefix: bad_prefix.to_owned(),
                ..Default::default()
            })
            .await
            .expect_err(bad_prefix);
        assert_eq!(list.code(), Code::InvalidArgument, "list {bad_prefix:?}");
    }

    assert_eq!(files_under(&outside), ["secret"]);
    assert_eq!(
        fs::read(outside.join("secret")).expect("sentinel"),
        b"untouched"
    );
    let entries: Vec<_> = fs::read_dir(sandbox.path())
        .expect("sandbox")
        .map(|entry| entry.expect("entry").file_name())
        .collect();
    assert_eq!(entries.len(), 2, "nothing new beside the lake: {entries:?}");
    assert!(
        files_under(&lake)
            .iter()
            .all(|file| file.starts_with(".vesper")),
        "no object was written"
    );

    shutdown.trigger();
    server.await.expect("server task").expect("server");
}

#[tokio::test]
async fn a_key_cannot_also_be_a_directory_of_keys() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = FsStore::open(dir.path(), LIMIT).await.expect("open");
    let body = || Bytes::from_static(b"-");

    store
        .put(&key("a"), body(), PutOptions::default())
        .await
        .expect("a");
    let err = store
        .put(&key("a/b"), body(), PutOptions::default())
        .await
        .expect_err("a/b under the object a");
    assert_eq!(err.code(), ErrorCode::FailedPrecondition);
    assert!(err.to_string().contains("\"a\""), "{err}");

    store
        .put(&key("x/y/z"), body(), PutOptions::default())
        .await
        .expect("x/y/z");
    for clash in ["x", "x/y"] {
        let err = store
            .put(&key(clash), body(), PutOptions::default())
            .await
            .expect_err(clash);
        assert_eq!(err.code(), ErrorCode::FailedPrecondition, "{clash}");
    }
    let err = store
        .put(&key("x/y/z/deeper"), body(), PutOptions::default())
        .await
        .expect_err("under the object x/y/z");
    assert_eq!(err.code(), ErrorCode::FailedPrecondition);
    // The refused writes left nothing behind.
    let (_, read) = store.get(&key("a")).await.expect("a still there");
    assert_eq!(read, body());
    let keys: Vec<_> = store
        .list("", None, 0)
        .await
        .expect("list")
        .objects
        .into_iter()
        .map(|object| object.key)
        .collect();
    assert_eq!(keys, ["a", "x/y/z"]);
}

#[tokio::test]
async fn internal_files_never_show_and_temp_files_do_not_linger() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = FsStore::open(dir.path(), LIMIT).await.expect("open");
    for i in 0..5 {
        store
            .put(
                &key(&format!("events/dt=2026-11-25/hour=0{i}/part.ndjson")),
                Bytes::from(format!("{{\"n\":{i}}}\n")),
                PutOptions::content_type("application/x-ndjson"),
            )
            .await
            .expect("put");
    }
    let listed = store.list("", None, 0).await.expect("list");
    assert_eq!(listed.objects.len(), 5);
    assert!(listed.objects.iter().all(|o| !o.key.starts_with(".vesper")));
    assert!(
        fs::read_dir(dir.path().join(".vesper/tmp"))
            .expect("temp dir exists")
            .next()
            .is_none(),
        "temp files are renamed away"
    );
    // A glob over the event layout sees objects only.
    let visible: Vec<_> = files_under(dir.path())
        .into_iter()
        .filter(|file| file.starts_with("events/"))
        .collect();
    assert_eq!(visible.len(), 5);
    assert!(visible.iter().all(|file| file.ends_with(".ndjson")));
}

#[tokio::test]
async fn the_body_file_is_the_truth_when_a_sidecar_disagrees() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = FsStore::open(dir.path(), LIMIT).await.expect("open");
    store
        .put(
            &key("data/users.csv"),
            Bytes::from_static(b"id\n1\n"),
            PutOptions::content_type("text/csv"),
        )
        .await
        .expect("put");
    // As after a crash between the sidecar and the body rename, or a file
    // replaced by hand.
    fs::write(dir.path().join("data/users.csv"), b"id\n1\n2\n").expect("overwrite");
    let (meta, body) = store.get(&key("data/users.csv")).await.expect("get");
    assert_eq!(body, Bytes::from_static(b"id\n1\n2\n"));
    assert_eq!(meta.content_type, vesper_storage::DEFAULT_CONTENT_TYPE);
    let head = store.head(&key("data/users.csv")).await.expect("head");
    assert_eq!(head.etag, meta.etag);
    assert_eq!(head.size, 7);

    // A file dropped into the lake by hand is an object too.
    fs::create_dir_all(dir.path().join("manual")).expect("dir");
    fs::write(dir.path().join("manual/notes.txt"), b"hi").expect("write");
    let (meta, body) = store.get(&key("manual/notes.txt")).await.expect("get");
    assert_eq!(body, Bytes::from_static(b"hi"));
    assert_eq!(meta.size, 2);
}

#[test]
fn long_segments_are_refused_naming_the_segment_and_the_limit() {
    let err = ObjectKey::new(format!("events/{}.ndjson", "x".repeat(250)))
        .expect_err("a 257-byte segment");
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
    let message = err.to_string();
    assert!(
        message.contains("segment 2 (\"xxxxxxxxxxxxxxxx...\") is 257 bytes"),
        "{message}"
    );
    assert!(message.contains("at most 255 bytes"), "{message}");
}

#[tokio::test]
async fn sidecar_names_are_bounded_whatever_the_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = FsStore::open(dir.path(), LIMIT).await.expect("open");
    let long = |c: &str| c.repeat(vesper_storage::MAX_SEGMENT_BYTES);
    for name in [
        long("l"),
        format!("{}/{}/{}", long("m"), long("n"), long("o")),
        "a".into(),
    ] {
        store
            .put(
                &key(&name),
                Bytes::from(name.clone()),
                PutOptions::content_type("text/x"),
            )
            .await
            .expect("put");
    }
    let internal = files_under(&dir.path().join(".vesper"));
    assert_eq!(internal.len(), 3, "{internal:?}");
    for file in &internal {
        // sidecars/<2 hex>/<64 hex>.json
        assert!(file.starts_with("sidecars/"), "{file}");
        assert_eq!(file.len(), "sidecars/".len() + 3 + 64 + 5, "{file}");
    }
}

/// 5,000 objects in a tree of uneven depth, listed page by page: every key
/// exactly once, in bytewise order, whatever the page size and prefix.
#[tokio::test]
async fn a_large_lake_lists_every_key_once_in_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut expected = Vec::new();
    for i in 0..5000 {
        let name = match i % 4 {
            0 => format!(
                "events/dt=2026-11-{:02}/hour={:02}/{i:05}.ndjson",
                i % 30,
                i % 24
            ),
            1 => format!("data/{i:05}.csv"),
            2 => format!("data.{i:05}"),
            _ => format!("z/{}/{}/{i}", i % 7, i % 3),
        };
        expected.push(name);
    }
    // Written by hand: a put fsyncs twice, and only the walk is under test.
    for name in &expected {
        let path = dir.path().join(name);
        fs::create_dir_all(path.parent().expect("parent")).expect("dirs");
        fs::write(&path, name).expect("write");
    }
    expected.sort();
    let store = FsStore::open(dir.path(), LIMIT).await.expect("open");

    for (prefix, page_size) in [
        ("", 0),
        ("", 7),
        ("", 999),
        ("data", 100),
        ("data/", 33),
        ("events/dt=2026-11-1", 50),
        ("z/3/", 1),
    ] {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = store
                .list(prefix, token.as_deref(), page_size)
                .await
                .expect("list");
            let limit = if page_size == 0 { 1000 } else { page_size };
            assert!(page.objects.len() <= limit as usize);
            keys.extend(page.objects.into_iter().map(|object| object.key));
            match page.next_token {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        let wanted: Vec<_> = expected
            .iter()
            .filter(|name| name.starts_with(prefix))
            .cloned()
            .collect();
        assert!(!wanted.is_empty(), "{prefix}");
        assert_eq!(keys, wanted, "prefix {prefix:?}, pages of {page_size}");
    }
}
