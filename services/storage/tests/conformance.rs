//! One backend-agnostic suite that every backend passes: the directory
//! backend, S3 (against a real S3-protocol server, moto), and a remote
//! Storage service over gRPC.

use std::{any::Any, sync::Arc};

use aws_config::{BehaviorVersion, Region};
use aws_sdk_s3::config::Credentials;
use bytes::Bytes;
use vesper::{ErrorCode, ServiceError, Shutdown, config::PeerAddr};
use vesper_storage::{
    DEFAULT_CONTENT_TYPE, FsStore, MAX_LIST_KEYS, Metadata, ObjectKey, ObjectStore, PutOptions,
    RemoteStore, S3Store, StorageError,
};
use vesper_tests::{ACCESS_KEY_ID, REGION, S3Server, SECRET_ACCESS_KEY, unique_bucket};

/// A large enough limit for every case but the size-limit one.
const ROOMY: u64 = 8 * 1024 * 1024;
/// The limit the size-limit case runs with.
const TIGHT: u64 = 1024;

/// A store plus whatever keeps it alive (temp dir, server task).
struct Backend {
    store: Arc<dyn ObjectStore>,
    _keep: Vec<Box<dyn Any + Send>>,
}

async fn fs(limit: u64) -> Backend {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = FsStore::open(dir.path(), limit)
        .await
        .expect("open fs lake");
    Backend {
        store: Arc::new(store),
        _keep: vec![Box::new(dir)],
    }
}

async fn s3(limit: u64) -> Backend {
    let server = S3Server::shared();
    let config = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(server.endpoint())
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new(
            ACCESS_KEY_ID,
            SECRET_ACCESS_KEY,
            None,
            None,
            "test",
        ))
        .load()
        .await;
    let bucket = unique_bucket("conformance");
    let store = S3Store::connect_with(&config, &bucket, "lake/root", limit, true)
        .await
        .expect("connect to the S3 test server");
    Backend {
        store: Arc::new(store),
        _keep: Vec::new(),
    }
}

/// Stops the in-process server when the backend is dropped.
struct StopOnDrop(Shutdown);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.trigger();
    }
}

async fn grpc(limit: u64) -> Backend {
    let inner = fs(limit).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let shutdown = Shutdown::new();
    tokio::spawn(vesper_storage::serve(
        listener,
        Arc::clone(&inner.store),
        limit,
        shutdown.signalled(),
    ));
    let peer: PeerAddr = addr.to_string().parse().expect("peer");
    Backend {
        store: Arc::new(RemoteStore::connect_lazy(&peer, limit)),
        _keep: vec![Box::new(inner._keep), Box::new(StopOnDrop(shutdown))],
    }
}

fn key(text: &str) -> ObjectKey {
    ObjectKey::new(text).expect("valid test key")
}

fn code_of(result: Result<impl std::fmt::Debug, StorageError>) -> ErrorCode {
    result.expect_err("expected an error").code()
}

fn md5_hex(body: &[u8]) -> String {
    use md5::{Digest, Md5};
    hex::encode(Md5::digest(body))
}

async fn all_keys(store: &dyn ObjectStore, prefix: &str, page_size: u32) -> Vec<String> {
    let mut keys = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = store
            .list(prefix, token.as_deref(), page_size)
            .await
            .expect("list");
        let limit = if page_size == 0 {
            MAX_LIST_KEYS
        } else {
            page_size
        };
        assert!(page.objects.len() <= limit as usize, "page over its size");
        keys.extend(page.objects.into_iter().map(|object| object.key));
        match page.next_token {
            Some(next) => token = Some(next),
            None => return keys,
        }
    }
}

mod cases {
    use super::*;

    pub(super) async fn round_trip(store: &dyn ObjectStore) {
        let metadata: Metadata = [
            ("pipeline".to_owned(), "users".to_owned()),
            ("run-id".to_owned(), "0190-abc".to_owned()),
        ]
        .into();
        let body = Bytes::from_static(b"{\"a\":1}\n{\"a\":2}\n");
        let options = PutOptions {
            content_type: Some("application/x-ndjson".into()),
            metadata: metadata.clone(),
        };
        let written = store
            .put(&key("a/b.ndjson"), body.clone(), options)
            .await
            .expect("put");
        assert_eq!(written.key, "a/b.ndjson");
        assert_eq!(written.size, body.len() as u64);
        assert_eq!(written.etag, md5_hex(&body));

        let (meta, read) = store.get(&key("a/b.ndjson")).await.expect("get");
        assert_eq!(read, body);
        assert_eq!(meta.size, body.len() as u64);
        assert_eq!(meta.etag, md5_hex(&body));
        assert_eq!(meta.content_type, "application/x-ndjson");
        assert_eq!(meta.metadata, metadata);

        let head = store.head(&key("a/b.ndjson")).await.expect("head");
        assert_eq!(head.size, meta.size);
        assert_eq!(head.etag, meta.etag);
        assert_eq!(head.content_type, meta.content_type);
        assert_eq!(head.metadata, metadata);
    }

    pub(super) async fn default_content_type(store: &dyn ObjectStore) {
        store
            .put(
                &key("plain"),
                Bytes::from_static(b"x"),
                PutOptions::default(),
            )
            .await
            .expect("put");
        let head = store.head(&key("plain")).await.expect("head");
        assert_eq!(head.content_type, DEFAULT_CONTENT_TYPE);
        assert!(head.metadata.is_empty());
    }

    pub(super) async fn overwrite_replaces_everything(store: &dyn ObjectStore) {
        let first = PutOptions {
            content_type: Some("text/plain".into()),
            metadata: [("version".to_owned(), "1".to_owned())].into(),
        };
        store
            .put(&key("doc.txt"), Bytes::from_static(b"first version"), first)
            .await
            .expect("first put");
        let second = PutOptions {
            content_type: Some("text/csv".into()),
            metadata: [("version".to_owned(), "2".to_owned())].into(),
        };
        store
            .put(&key("doc.txt"), Bytes::from_static(b"second"), second)
            .await
            .expect("second put");
        let (meta, body) = store.get(&key("doc.txt")).await.expect("get");
        assert_eq!(body, Bytes::from_static(b"second"));
        assert_eq!(meta.size, 6);
        assert_eq!(meta.content_type, "text/csv");
        assert_eq!(meta.metadata.get("version").map(String::as_str), Some("2"));
        assert_eq!(all_keys(store, "", 0).await, ["doc.txt"]);
    }

    pub(super) async fn binary_and_empty_bodies(store: &dyn ObjectStore) {
        let binary: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
        store
            .put(
                &key("bin/all-bytes"),
                Bytes::from(binary.clone()),
                PutOptions::default(),
            )
            .await
            .expect("binary put");
        let (_, read) = store.get(&key("bin/all-bytes")).await.expect("binary get");
        assert_eq!(read.as_ref(), binary.as_slice());

        store
            .put(&key("bin/empty"), Bytes::new(), PutOptions::default())
            .await
            .expect("empty put");
        let (meta, read) = store.get(&key("bin/empty")).await.expect("empty get");
        assert!(read.is_empty());
        assert_eq!(meta.size, 0);
    }

    pub(super) async fn list_pages_in_key_order(store: &dyn ObjectStore) {
        let mut expected = Vec::new();
        for i in 0..25 {
            let name = format!("p/item-{i:03}");
            store
                .put(
                    &key(&name),
                    Bytes::from(name.clone()),
                    PutOptions::default(),
                )
                .await
                .expect("put");
            expected.push(name);
        }
        for outside in ["other/x", "p.txt", "q"] {
            store
                .put(
                    &key(outside),
                    Bytes::from_static(b"-"),
                    PutOptions::default(),
                )
                .await
                .expect("put");
        }
        let first = store.list("p/", None, 10).await.expect("first page");
        assert_eq!(first.objects.len(), 10);
        assert!(first.next_token.is_some());
        assert_eq!(first.objects[0].size, "p/item-000".len() as u64);
        assert!(!first.objects[0].etag.is_empty());

        assert_eq!(all_keys(store, "p/", 10).await, expected);
        assert_eq!(all_keys(store, "p/", 25).await, expected);
        assert_eq!(
            all_keys(store, "p/item-01", 0).await,
            expected[10..20].to_vec()
        );
        assert!(all_keys(store, "nothing/here", 0).await.is_empty());
        assert_eq!(all_keys(store, "", 7).await.len(), 28);
    }

    pub(super) async fn list_order_is_bytewise(store: &dyn ObjectStore) {
        // '.' < '/' < '0': a directory walk in name order gets this wrong.
        for name in ["a0", "a/b", "a.txt", "a/a", "A"] {
            store
                .put(&key(name), Bytes::from_static(b"-"), PutOptions::default())
                .await
                .expect("put");
        }
        assert_eq!(
            all_keys(store, "", 2).await,
            ["A", "a.txt", "a/a", "a/b", "a0"]
        );
        assert_eq!(all_keys(store, "a", 0).await, ["a.txt", "a/a", "a/b", "a0"]);
    }

    pub(super) async fn missing_objects_are_not_found(store: &dyn ObjectStore) {
        assert_eq!(code_of(store.get(&key("nope")).await), ErrorCode::NotFound);
        assert_eq!(
            code_of(store.head(&key("no/pe")).await),
            ErrorCode::NotFound
        );
        assert_eq!(
            code_of(store.delete(&key("nope")).await),
            ErrorCode::NotFound
        );
        store
            .put(
                &key("dir/file"),
                Bytes::from_static(b"-"),
                PutOptions::default(),
            )
            .await
            .expect("put");
        // A prefix of an object is not an object.
        assert_eq!(code_of(store.get(&key("dir")).await), ErrorCode::NotFound);
        assert_eq!(code_of(store.head(&key("dir")).await), ErrorCode::NotFound);
        assert_eq!(
            code_of(store.get(&key("dir/file/x")).await),
            ErrorCode::NotFound
        );
    }

    pub(super) async fn delete_removes(store: &dyn ObjectStore) {
        store
            .put(
                &key("d/e/f"),
                Bytes::from_static(b"-"),
                PutOptions::default(),
            )
            .await
            .expect("put");
        store.delete(&key("d/e/f")).await.expect("delete");
        assert_eq!(
            code_of(store.head(&key("d/e/f")).await),
            ErrorCode::NotFound
        );
        assert!(all_keys(store, "d", 0).await.is_empty());
        // Nothing is left that would stop "d" becoming an object.
        store
            .put(
                &key("d"),
                Bytes::from_static(b"now a file"),
                PutOptions::default(),
            )
            .await
            .expect("put d");
        assert_eq!(all_keys(store, "", 0).await, ["d"]);
    }

    pub(super) async fn bad_input_is_invalid_argument(store: &dyn ObjectStore) {
        let upper: Metadata = [("Owner".to_owned(), "x".to_owned())].into();
        let put = store
            .put(
                &key("m"),
                Bytes::from_static(b"-"),
                PutOptions {
                    content_type: None,
                    metadata: upper,
                },
            )
            .await;
        assert_eq!(code_of(put), ErrorCode::InvalidArgument);
        let non_ascii: Metadata = [("owner".to_owned(), "José".to_owned())].into();
        let put = store
            .put(
                &key("m"),
                Bytes::from_static(b"-"),
                PutOptions {
                    content_type: None,
                    metadata: non_ascii,
                },
            )
            .await;
        assert_eq!(code_of(put), ErrorCode::InvalidArgument);
        assert_eq!(
            code_of(store.list("../", None, 0).await),
            ErrorCode::InvalidArgument
        );
        assert_eq!(
            code_of(store.list("a/../../", None, 0).await),
            ErrorCode::InvalidArgument
        );
        assert_eq!(code_of(store.head(&key("m")).await), ErrorCode::NotFound);
    }

    /// On a directory lake, `a`'s sidecar once was the directory that
    /// `a.json/b`'s sidecar needed.
    pub(super) async fn keys_that_once_shared_a_sidecar_path(store: &dyn ObjectStore) {
        let put = |name: &'static str, role: &'static str| {
            let options = PutOptions {
                content_type: Some(format!("text/{role}")),
                metadata: [("role".to_owned(), role.to_owned())].into(),
            };
            async move {
                store
                    .put(&key(name), Bytes::from(name), options)
                    .await
                    .unwrap_or_else(|err| panic!("put {name}: {err}"))
            }
        };
        // Both orders: the file first, then the one whose path passes through it.
        put("a", "first").await;
        put("a.json/b", "second").await;
        put("c.json/d", "first").await;
        put("c", "second").await;
        for (name, role) in [
            ("a", "first"),
            ("a.json/b", "second"),
            ("c.json/d", "first"),
            ("c", "second"),
        ] {
            let (meta, body) = store.get(&key(name)).await.expect("get");
            assert_eq!(body, Bytes::from(name));
            assert_eq!(meta.content_type, format!("text/{role}"), "{name}");
            assert_eq!(
                meta.metadata.get("role").map(String::as_str),
                Some(role),
                "{name}"
            );
            let head = store.head(&key(name)).await.expect("head");
            assert_eq!(head.content_type, meta.content_type, "{name}");
            assert_eq!(head.metadata, meta.metadata, "{name}");
        }
        assert_eq!(
            all_keys(store, "", 0).await,
            ["a", "a.json/b", "c", "c.json/d"]
        );
        store.delete(&key("a")).await.expect("delete a");
        let (meta, _) = store.get(&key("a.json/b")).await.expect("get");
        assert_eq!(meta.content_type, "text/second");
    }

    /// A segment of 255 bytes (the longest the key rules allow, the usual
    /// file-name limit) works everywhere, alone and nested.
    pub(super) async fn longest_segments(store: &dyn ObjectStore) {
        let long = |c: char| c.to_string().repeat(vesper_storage::MAX_SEGMENT_BYTES);
        let names = [
            long('a'),
            format!("{}/{}", long('b'), long('c')),
            format!("d/{}x/e", "é".repeat(127)),
        ];
        let metadata: Metadata = [("long".to_owned(), "yes".to_owned())].into();
        for name in &names {
            store
                .put(
                    &key(name),
                    Bytes::from(name.clone()),
                    PutOptions {
                        content_type: Some("text/plain".into()),
                        metadata: metadata.clone(),
                    },
                )
                .await
                .unwrap_or_else(|err| panic!("put {} bytes: {err}", name.len()));
        }
        for name in &names {
            let (meta, body) = store.get(&key(name)).await.expect("get");
            assert_eq!(body, Bytes::from(name.clone()));
            assert_eq!(meta.content_type, "text/plain");
            assert_eq!(meta.metadata, metadata);
            let head = store.head(&key(name)).await.expect("head");
            assert_eq!(head.metadata, metadata);
            assert_eq!(head.size, name.len() as u64);
        }
        let mut expected: Vec<String> = names.to_vec();
        expected.sort();
        assert_eq!(all_keys(store, "", 1).await, expected);
        assert_eq!(all_keys(store, &long('b'), 0).await, [names[1].clone()]);
        for name in &names {
            store.delete(&key(name)).await.expect("delete");
            assert_eq!(code_of(store.head(&key(name)).await), ErrorCode::NotFound);
        }
        assert!(all_keys(store, "", 0).await.is_empty());
    }

    /// Listing resumes at every position of a deep tree, with prefixes
    /// ending mid-segment and at segment ends, in bytewise order.
    pub(super) async fn list_resumes_anywhere_in_a_deep_tree(store: &dyn ObjectStore) {
        let mut all: Vec<String> = [
            "t/a/b/c/1",
            "t/a/b/c/2",
            "t/a/b/c.d/e",
            "t/a/b/c0",
            "t/a/b.txt",
            "t/a/b0/x",
            "t/a.x/y/z",
            "t/a0",
            "t/ab/c/d/e/f",
            "t/b",
            "u",
        ]
        .iter()
        .map(|name| (*name).to_owned())
        .collect();
        for name in &all {
            store
                .put(&key(name), Bytes::from_static(b"-"), PutOptions::default())
                .await
                .expect("put");
        }
        all.sort();
        for prefix in [
            "",
            "t",
            "t/",
            "t/a",
            "t/a/",
            "t/a/b",
            "t/a/b/",
            "t/a/b/c",
            "t/ab/c/d/",
        ] {
            let expected: Vec<String> = all
                .iter()
                .filter(|name| name.starts_with(prefix))
                .cloned()
                .collect();
            for page_size in [1, 2, 3, 0] {
                assert_eq!(
                    all_keys(store, prefix, page_size).await,
                    expected,
                    "prefix {prefix:?}, pages of {page_size}"
                );
            }
        }
    }

    pub(super) async fn size_limit(store: &dyn ObjectStore) {
        let at_limit = Bytes::from(vec![b'x'; TIGHT as usize]);
        store
            .put(&key("fits"), at_limit, PutOptions::default())
            .await
            .expect("an object at the limit fits");
        let over = Bytes::from(vec![b'x'; TIGHT as usize + 1]);
        let put = store
            .put(&key("too-big"), over, PutOptions::default())
            .await;
        assert_eq!(code_of(put), ErrorCode::ResourceExhausted);
        assert_eq!(
            code_of(store.head(&key("too-big")).await),
            ErrorCode::NotFound
        );
    }
}

macro_rules! conformance {
    ($backend:ident) => {
        mod $backend {
            use super::*;

            conformance!(@case $backend, round_trip, ROOMY);
            conformance!(@case $backend, default_content_type, ROOMY);
            conformance!(@case $backend, overwrite_replaces_everything, ROOMY);
            conformance!(@case $backend, binary_and_empty_bodies, ROOMY);
            conformance!(@case $backend, list_pages_in_key_order, ROOMY);
            conformance!(@case $backend, list_order_is_bytewise, ROOMY);
            conformance!(@case $backend, missing_objects_are_not_found, ROOMY);
            conformance!(@case $backend, delete_removes, ROOMY);
            conformance!(@case $backend, bad_input_is_invalid_argument, ROOMY);
            conformance!(@case $backend, keys_that_once_shared_a_sidecar_path, ROOMY);
            conformance!(@case $backend, longest_segments, ROOMY);
            conformance!(@case $backend, list_resumes_anywhere_in_a_deep_tree, ROOMY);
            conformance!(@case $backend, size_limit, TIGHT);
        }
    };
    (@case $backend:ident, $case:ident, $limit:expr) => {
        #[tokio::test]
        async fn $case() {
            let backend = super::$backend($limit).await;
            cases::$case(&*backend.store).await;
        }
    };
}

conformance!(fs);
conformance!(s3);
conformance!(grpc);

/// What only the S3 backend has: a key prefix of the lake's own, which
/// takes room from S3's 1024-byte key limit.
mod s3_only {
    use super::*;

    #[tokio::test]
    async fn a_key_the_lake_prefix_pushes_past_the_s3_limit_is_invalid() {
        let backend = s3(ROOMY).await;
        let store = &*backend.store;
        // The lake's prefix is "lake/root/": 10 bytes.
        let segment = "k".repeat(vesper_storage::MAX_SEGMENT_BYTES);
        let fits = format!("{segment}/{segment}/{segment}/{}", "k".repeat(246));
        assert_eq!(fits.len(), 1014);
        store
            .put(&key(&fits), Bytes::from_static(b"-"), PutOptions::default())
            .await
            .expect("a 1024-byte S3 key");
        let (_, body) = store.get(&key(&fits)).await.expect("get");
        assert_eq!(body, Bytes::from_static(b"-"));
        assert_eq!(all_keys(store, "", 0).await, vec![fits.clone()]);

        let over = format!("{fits}k");
        let err = store
            .put(&key(&over), Bytes::from_static(b"-"), PutOptions::default())
            .await
            .expect_err("a 1025-byte S3 key");
        assert_eq!(err.code(), ErrorCode::InvalidArgument);
        assert!(
            err.to_string().contains("S3 keys are at most 1024 bytes"),
            "{err}"
        );
        assert_eq!(
            code_of(store.head(&key(&over)).await),
            ErrorCode::InvalidArgument
        );
        assert!(all_keys(store, &over, 0).await.is_empty());
    }
}
