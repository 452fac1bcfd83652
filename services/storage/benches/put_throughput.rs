//! PutObject throughput through gRPC on the directory backend: a Storage
//! server on loopback over a temp dir, one client writing 4 KiB and 1 MiB
//! objects. Every put is durable (temp file, fsync, rename, directory
//! fsync), so this measures the disk's sync latency as much as vesper.
//!
//! Run: `cargo bench -p vesper-storage --bench put_throughput`

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vesper::{Shutdown, config::PeerAddr};
use vesper_storage::{FsStore, ObjectKey, ObjectStore, PutOptions, RemoteStore};

const LIMIT: u64 = 64 * 1024 * 1024;

fn put_throughput(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let lake = tempfile::tempdir().expect("temp dir");
    let shutdown = Shutdown::new();
    let client = runtime.block_on(async {
        let store: Arc<dyn ObjectStore> =
            Arc::new(FsStore::open(lake.path(), LIMIT).await.expect("open lake"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let peer: PeerAddr = listener
            .local_addr()
            .expect("addr")
            .to_string()
            .parse()
            .expect("peer");
        tokio::spawn(vesper_storage::serve(
            listener,
            store,
            LIMIT,
            shutdown.signalled(),
        ));
        RemoteStore::connect_lazy(&peer, LIMIT)
    });

    let mut group = c.benchmark_group("put_object_grpc_fs");
    group.measurement_time(Duration::from_secs(10));
    for (label, size) in [("4KiB", 4 * 1024), ("1MiB", 1024 * 1024)] {
        let body = Bytes::from(vec![b'x'; size]);
        let next = AtomicU64::new(0);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(label, |b| {
            b.to_async(&runtime).iter(|| {
                let n = next.fetch_add(1, Ordering::Relaxed);
                // A new key each time, spread over directories as the lake is.
                let key = ObjectKey::new(format!("bench/{label}/d{}/obj-{n}", n % 64))
                    .expect("valid key");
                let body = body.clone();
                let client = client.clone();
                async move {
                    client
                        .put(
                            &key,
                            body,
                            PutOptions::content_type("application/octet-stream"),
                        )
                        .await
                        .expect("put")
                }
            });
        });
    }
    group.finish();
    // Server and client share this process: the figure covers both.
    eprintln!("put_object_grpc_fs: {}", vesper_tests::peak_rss_line());
    shutdown.trigger();
}

criterion_group!(benches, put_throughput);
criterion_main!(benches);
