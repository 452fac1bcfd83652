//! Storage's Prometheus series move by exactly the traffic sent. (Its own
//! test binary: the recorder is process-wide.)

use std::sync::Arc;

use bytes::Bytes;
use vesper::{Shutdown, config::PeerAddr};
use vesper_storage::{FsStore, ObjectKey, ObjectStore, PutOptions, RemoteStore};

/// The value of the series `name{labels}` in Prometheus text, 0 if absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn operations_errors_and_rpcs_are_counted() {
    let handle = vesper::metrics::install();
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn ObjectStore> =
        Arc::new(FsStore::open(dir.path(), 1024).await.expect("open"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let peer: PeerAddr = listener
        .local_addr()
        .expect("addr")
        .to_string()
        .parse()
        .expect("peer");
    let shutdown = Shutdown::new();
    tokio::spawn(vesper_storage::serve(
        listener,
        store,
        1024,
        shutdown.signalled(),
    ));
    let client = RemoteStore::connect_lazy(&peer, 1024);

    for i in 0..3 {
        let key = ObjectKey::new(format!("m/{i}")).expect("key");
        client
            .put(&key, Bytes::from_static(b"12345"), PutOptions::default())
            .await
            .expect("put");
    }
    let missing = ObjectKey::new("m/none").expect("key");
    client.get(&missing).await.expect_err("missing");
    client
        .put(&missing, Bytes::from(vec![0; 2048]), PutOptions::default())
        .await
        .expect_err("too large");

    let text = handle.render();
    let ops = |op: &str, outcome: &str| {
        sample(
            &text,
            &format!("vesper_storage_operations_total{{operation=\"{op}\",outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(ops("put", "ok"), 3.0, "{text}");
    assert_eq!(ops("put", "error"), 1.0, "{text}");
    assert_eq!(ops("get", "error"), 1.0, "{text}");
    assert_eq!(sample(&text, "vesper_storage_bytes_written_total"), 15.0);
    assert_eq!(
        sample(
            &text,
            "vesper_storage_errors_total{operation=\"get\",code=\"NOT_FOUND\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "vesper_grpc_requests_total{rpc=\"vesper.v1.Storage/PutObject\",code=\"OK\"}"
        ),
        3.0,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "vesper_grpc_requests_total{rpc=\"vesper.v1.Storage/PutObject\",code=\"RESOURCE_EXHAUSTED\"}"
        ),
        1.0,
        "{text}"
    );
    assert!(text.contains("vesper_grpc_request_duration_seconds_bucket"));
    shutdown.trigger();
}
