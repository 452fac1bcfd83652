//! The built-in users pipeline end to end: 10,000 users in 50 pages of 200
//! from a replica of the old upstream on loopback, through the engine, into
//! a directory lake through the Storage gRPC service (two parts, each
//! written durably, then the manifest). Sequential (one page at a time) and
//! concurrent (4 pages at a time), on bare loopback and with 20 ms added to
//! every answer, as a remote API would have.
//!
//! Run: `cargo bench -p vesper-batch --bench users_pipeline`

use std::{num::NonZeroUsize, sync::Arc, time::Duration};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vesper::{Shutdown, config::PeerAddr};
use vesper_batch::{BatchEngine, Pipelines, Quiet};
use vesper_storage::{FsStore, ObjectStore, RemoteStore};
use vesper_tests::{ReplicaOptions, USERS, UpstreamReplica};

const LIMIT: u64 = 64 * 1024 * 1024;

fn users_pipeline(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let lake = tempfile::tempdir().expect("temp dir");
    let shutdown = Shutdown::new();
    let store: Arc<dyn ObjectStore> = runtime.block_on(async {
        let fs: Arc<dyn ObjectStore> = Arc::new(
            FsStore::open(lake.path(), LIMIT)
                .await
                .expect("open the lake"),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let peer: PeerAddr = listener
            .local_addr()
            .expect("address")
            .to_string()
            .parse()
            .expect("peer");
        tokio::spawn(vesper_storage::serve(
            listener,
            fs,
            LIMIT,
            shutdown.signalled(),
        ));
        Arc::new(RemoteStore::connect_lazy(&peer, LIMIT))
    });

    for (network, latency) in [
        ("loopback", Duration::ZERO),
        ("latency_20ms", Duration::from_millis(20)),
    ] {
        let upstream = UpstreamReplica::with_options(ReplicaOptions {
            latency,
            ..ReplicaOptions::default()
        });
        let pipelines = Pipelines::builtin()
            .expect("built-in pipelines")
            .with_source_url(&upstream.base_url())
            .expect("the replica's URL");
        let mut group = c.benchmark_group(format!("users_pipeline/{network}"));
        group.sample_size(10);
        group.measurement_time(Duration::from_secs(20));
        group.throughput(Throughput::Elements(USERS));
        for (label, concurrency) in [("sequential", 1), ("concurrent_4", 4)] {
            let engine = BatchEngine::new(pipelines.clone(), Arc::clone(&store))
                .expect("engine")
                .with_observer(Arc::new(Quiet))
                .with_concurrency(NonZeroUsize::new(concurrency).expect("not zero"));
            group.bench_function(label, |b| {
                b.to_async(&runtime).iter(|| async {
                    let reports = engine
                        .run(&["users"], &Shutdown::new())
                        .await
                        .expect("users is declared");
                    assert!(reports[0].succeeded(), "{:?}", reports[0].error);
                    assert_eq!(reports[0].records, USERS);
                });
            });
        }
        group.finish();
    }
    // The upstream replica, the engine and Storage share this process.
    eprintln!("users_pipeline: {}", vesper_tests::peak_rss_line());
    shutdown.trigger();
}

criterion_group!(benches, users_pipeline);
criterion_main!(benches);
