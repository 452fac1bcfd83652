//! Fleet mode end to end: the real `vesper` binaries on a real 3-node NATS
//! JetStream cluster on loopback. Replicas share the stream's duplicate
//! window; a NATS node, a lake writer or the whole cluster can be lost
//! without losing an acknowledged event (docs/scaling.md, "Guarantees").

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    path::Path,
    time::Duration,
};

use serde_json::{Value, json};
use vesper_tests::{
    NatsCluster, VesperProcess, event_id, eventually, lake_event_ids, unserved_addr, upstream_event,
};

/// How long the lake may take to hold what was acknowledged: a batch age,
/// a redelivery after the consumer's ack wait, debug builds on 2 cores.
const LAKE_TIMEOUT: Duration = Duration::from_secs(120);
/// The stream's name (the default of `--stream`).
const STREAM: &str = "VESPER_EVENTS";
/// Short batches, so that objects are written while a test runs.
const BATCH_AGE: &str = "200ms";

/// One fleet at a time in this process: a cluster, its replicas and
/// writers are a dozen processes, and 2 cores shared by four fleets make
/// leader elections and publishes slow enough to hit their bounds.
static ONE_FLEET: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn path_arg(path: &Path) -> String {
    path.display().to_string()
}

/// One fleet member: gateway, ingest publishing to the cluster, one
/// embedded lake writer and storage, on `lake`.
fn fleet_member(cluster: &NatsCluster, lake: &Path, wal: &Path) -> VesperProcess {
    VesperProcess::start(
        &[
            "up",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--lake",
            &path_arg(lake),
            "--wal-dir",
            &path_arg(wal),
            "--no-sample-data",
            "--no-pipelines",
            "--no-generator",
            "--max-batch-age",
            BATCH_AGE,
            "--log",
            &cluster.urls(),
        ],
        &[],
    )
}

/// `count` events of one series, and their ids.
fn events(series: u32, range: std::ops::Range<u32>) -> (Value, Vec<String>) {
    let ids: Vec<String> = range.map(|n| event_id(series, n)).collect();
    let events: Vec<Value> = ids
        .iter()
        .map(|id| upstream_event(id, "share", "2026-11-25T10:30:00Z"))
        .collect();
    (json!({ "events": events }), ids)
}

/// What the webhook answered: status, Retry-After, body.
struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: Value,
}

async fn post(http: &reqwest::Client, gateway: SocketAddr, body: &Value) -> Answer {
    let response = http
        .post(format!("http://{gateway}/webhook/events"))
        .json(body)
        .send()
        .await
        .expect("the gateway answers");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let body = response.json().await.unwrap_or(Value::Null);
    Answer {
        status,
        retry_after,
        body,
    }
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        // Longer than ingest's bound of one publish, so a slow answer is
        // the server's answer, not the client giving up.
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client")
}

/// Waits until every id of `acknowledged` is in the lake; returns how
/// often each event id is there.
async fn wait_for_lake(lake: &Path, acknowledged: &BTreeSet<String>) -> BTreeMap<String, usize> {
    eventually(
        format!("{} acknowledged events in the lake", acknowledged.len()),
        LAKE_TIMEOUT,
        async || {
            let in_lake = lake_event_ids(lake);
            acknowledged.iter().all(|id| in_lake.contains_key(id))
        },
    )
    .await;
    lake_event_ids(lake)
}

/// The stream's cluster as JetStream reports it, through one node.
async fn stream_cluster(url: &str) -> Option<async_nats::jetstream::stream::ClusterInfo> {
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(2))
        .connect(url)
        .await
        .ok()?;
    let context = async_nats::jetstream::new(client);
    let mut stream = context.get_stream(STREAM).await.ok()?;
    let info = stream.info().await.ok()?;
    info.cluster.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_store_one_copy_and_the_resend_is_reported_as_duplicates() {
    let _one_fleet = ONE_FLEET.lock().await;
    let cluster = NatsCluster::start(3);
    let lake = tempfile::tempdir().expect("lake");
    let (wal_a, wal_b) = (
        tempfile::tempdir().expect("wal"),
        tempfile::tempdir().expect("wal"),
    );
    let a = fleet_member(&cluster, lake.path(), wal_a.path());
    let b = fleet_member(&cluster, lake.path(), wal_b.path());
    let http = http_client();
    let (body, ids) = events(1, 0..20);

    let first = post(&http, a.http_addr(), &body).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.body["accepted"], 20, "{}", first.body);
    assert_eq!(first.body["duplicates"], 0, "{}", first.body);
    // The same events through the other replica: the stream's duplicate
    // window knows them, whichever replica published them first.
    let second = post(&http, b.http_addr(), &body).await;
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(second.body["accepted"], 0, "{}", second.body);
    assert_eq!(second.body["duplicates"], 20, "{}", second.body);

    let acknowledged: BTreeSet<String> = ids.into_iter().collect();
    let in_lake = wait_for_lake(lake.path(), &acknowledged).await;
    let copies: Vec<_> = in_lake.iter().filter(|(_, count)| **count > 1).collect();
    assert!(copies.is_empty(), "events in the lake twice: {copies:?}");
    assert_eq!(in_lake.len(), 20, "{in_lake:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_node_killed_under_load_loses_nothing_and_rejoins() {
    let _one_fleet = ONE_FLEET.lock().await;
    let mut cluster = NatsCluster::start(3);
    let lake = tempfile::tempdir().expect("lake");
    let wal = tempfile::tempdir().expect("wal");
    let member = fleet_member(&cluster, lake.path(), wal.path());
    let http = http_client();
    let mut acknowledged = BTreeSet::new();
    let mut next = 0_u32;
    let mut send = async |acknowledged: &mut BTreeSet<String>, phase: &str| {
        let (body, ids) = events(2, next..next + 10);
        next += 10;
        let answer = post(&http, member.http_addr(), &body).await;
        // A quorum (2 of 3) runs throughout: every call must be taken.
        assert_eq!(answer.status, 200, "{phase}: {}", answer.body);
        acknowledged.extend(ids);
    };

    for _ in 0..20 {
        send(&mut acknowledged, "all nodes up").await;
    }
    // The node the member's first URL names: the one its connection most
    // likely uses, so the client must move to another.
    cluster.kill(0);
    for _ in 0..60 {
        send(&mut acknowledged, "one node down").await;
    }
    cluster.restart(0);
    for _ in 0..20 {
        send(&mut acknowledged, "the node back").await;
    }

    // The restarted node catches up: JetStream reports every replica of
    // the stream current, asked through that node itself.
    let url = cluster.url(0);
    eventually(
        "the restarted node to be a current replica of the stream",
        LAKE_TIMEOUT,
        async || {
            stream_cluster(&url).await.is_some_and(|info| {
                let peers: Vec<_> = info.replicas.iter().collect();
                peers.len() == 2
                    && peers.iter().all(|peer| peer.current && !peer.offline)
                    && (info.leader.as_deref() == Some("n1")
                        || peers.iter().any(|peer| peer.name == "n1"))
            })
        },
    )
    .await;

    let in_lake = wait_for_lake(lake.path(), &acknowledged).await;
    assert_eq!(acknowledged.len(), 1_000);
    // The one failure (the node, perhaps with acks of the writer on it)
    // allows one more copy at most (docs/scaling.md).
    let beyond: Vec<_> = in_lake.iter().filter(|(_, count)| **count > 2).collect();
    assert!(
        beyond.is_empty(),
        "events in the lake more than twice: {beyond:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_cluster_down_is_503_then_recovers_without_a_restart() {
    let _one_fleet = ONE_FLEET.lock().await;
    let mut cluster = NatsCluster::start(3);
    let lake = tempfile::tempdir().expect("lake");
    let wal = tempfile::tempdir().expect("wal");
    let member = fleet_member(&cluster, lake.path(), wal.path());
    let http = http_client();
    let mut acknowledged = BTreeSet::new();
    let mut next = 0_u32;
    let mut send = async |acknowledged: &mut BTreeSet<String>| {
        let (body, ids) = events(3, next..next + 10);
        next += 10;
        let answer = post(&http, member.http_addr(), &body).await;
        if answer.status == 200 {
            acknowledged.extend(ids);
        }
        answer
    };

    for _ in 0..10 {
        let answer = send(&mut acknowledged).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    cluster.kill_all();
    // Calls in flight when the cluster went may still have been taken;
    // the next ones are refused with a 503 that says when to come back.
    let mut refused = None;
    for _ in 0..20 {
        let answer = send(&mut acknowledged).await;
        match answer.status {
            200 => {}
            503 => {
                refused = Some(answer);
                break;
            }
            other => panic!("unexpected {other}: {}", answer.body),
        }
    }
    let refused = refused.expect("a call refused while the whole cluster is down");
    let retry_after: u64 = refused
        .retry_after
        .as_deref()
        .expect("a 503 carries Retry-After")
        .parse()
        .expect("whole seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let again = send(&mut acknowledged).await;
    assert_eq!(again.status, 503, "{}", again.body);

    for index in 0..cluster.len() {
        cluster.restart(index);
    }
    // The same vesper process, never restarted, takes calls again.
    eventually(
        "calls to be taken again after the cluster is back",
        LAKE_TIMEOUT,
        async || send(&mut acknowledged).await.status == 200,
    )
    .await;
    for _ in 0..10 {
        let answer = send(&mut acknowledged).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    let in_lake = wait_for_lake(lake.path(), &acknowledged).await;
    assert!(in_lake.len() >= acknowledged.len());
    drop(member);
}

/// A lake writer of its own, with batches and an ack wait short enough
/// for a test (the ack wait must exceed batch age + write timeout + retry
/// wait, which the writer checks).
fn lake_writer(cluster: &NatsCluster, storage: SocketAddr) -> VesperProcess {
    VesperProcess::start(
        &[
            "lake-writer",
            "--http-addr",
            "127.0.0.1:0",
            "--storage-addr",
            &storage.to_string(),
            "--log",
            &cluster.urls(),
            "--max-batch-age",
            "1s",
            "--write-timeout",
            "2s",
            "--flush-retry-max",
            "1s",
            "--ack-wait",
            "6s",
        ],
        &[],
    )
}

/// How many messages a lake writer holds (in open batches or writes), by
/// its `/health`.
async fn held_messages(http: &reqwest::Client, writer: &VesperProcess) -> u64 {
    let Ok(response) = http
        .get(format!("http://{}/health", writer.http_addr()))
        .send()
        .await
    else {
        return 0;
    };
    let health: Value = response.json().await.unwrap_or(Value::Null);
    health["writer"]["held_messages"].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lake_writers_killed_mid_batch_lose_nothing_and_copy_within_the_bound() {
    let _one_fleet = ONE_FLEET.lock().await;
    const KILLS: usize = 3;
    let cluster = NatsCluster::start(3);
    let lake = tempfile::tempdir().expect("lake");
    let wal = tempfile::tempdir().expect("wal");
    let storage = VesperProcess::start(
        &[
            "storage",
            "--grpc-addr",
            "127.0.0.1:0",
            "--lake",
            &path_arg(lake.path()),
        ],
        &[],
    );
    let ingest = VesperProcess::start(
        &[
            "ingest",
            "--grpc-addr",
            "127.0.0.1:0",
            "--storage-addr",
            &storage.grpc_addr().to_string(),
            "--wal-dir",
            &path_arg(wal.path()),
            "--log",
            &cluster.urls(),
        ],
        &[],
    );
    let gateway = VesperProcess::start(
        &[
            "gateway",
            "--http-addr",
            "127.0.0.1:0",
            "--ingest-addr",
            &ingest.grpc_addr().to_string(),
            "--datasource-addr",
            &unserved_addr().to_string(),
        ],
        &[],
    );
    // One writer stays up throughout; the other is killed mid-batch and
    // replaced, again and again.
    let _steady = lake_writer(&cluster, storage.grpc_addr());
    let mut victim = lake_writer(&cluster, storage.grpc_addr());
    let http = http_client();
    let mut acknowledged = BTreeSet::new();
    let mut next = 0_u32;
    for round in 0..KILLS {
        for _ in 0..30 {
            let (body, ids) = events(4, next..next + 10);
            next += 10;
            let answer = post(&http, gateway.http_addr(), &body).await;
            assert_eq!(answer.status, 200, "round {round}: {}", answer.body);
            acknowledged.extend(ids);
        }
        eventually(
            format!("round {round}: the writer to hold messages of an open batch"),
            LAKE_TIMEOUT,
            async || held_messages(&http, &victim).await > 0,
        )
        .await;
        victim.signal("KILL");
        assert!(
            victim.wait_exit(Duration::from_secs(10)).is_some(),
            "the killed writer did not exit"
        );
        victim = lake_writer(&cluster, storage.grpc_addr());
    }

    let in_lake = wait_for_lake(lake.path(), &acknowledged).await;
    // docs/scaling.md: at most 1 + F copies, F the failures between an
    // object's write and its ack; each kill is at most one such failure.
    let beyond: Vec<_> = in_lake
        .iter()
        .filter(|(_, count)| **count > 1 + KILLS)
        .collect();
    assert!(
        beyond.is_empty(),
        "events in the lake more than 1 + {KILLS} times: {beyond:?}"
    );
    // What the analytics count: one row per event id.
    let distinct: BTreeSet<&String> = in_lake.keys().collect();
    assert_eq!(distinct.len(), acknowledged.len(), "{in_lake:?}");
}

/// A NATS server that asks for TLS and a token: fleet mode reaches it with
/// `--log-ca` and `--log-token-file`, is refused without them (naming the
/// cause within `--log-start-timeout`), and never logs the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_mode_reaches_nats_over_tls_with_a_token_and_never_logs_it() {
    let _one = ONE_FLEET.lock().await;
    let work = tempfile::tempdir().expect("a work dir");
    let certs = work.path().join("certs");
    let made = VesperProcess::run(&["certs", "--out", &path_arg(&certs)], &[]);
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    const TOKEN: &str = "nats-token-9f1c2e7d4b";
    let token_file = work.path().join("nats.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("write the token file");
    let cluster = NatsCluster::start_with(
        1,
        &format!(
            "tls {{ cert_file: \"{}\", key_file: \"{}\" }}\nauthorization {{ token: \"{TOKEN}\" }}\n",
            path_arg(&certs.join("server.pem")),
            path_arg(&certs.join("server-key.pem")),
        ),
    );
    let ingest_args = |wal: &str, extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [
            "ingest",
            "--grpc-addr",
            "127.0.0.1:0",
            "--storage-addr",
            &unserved_addr().to_string(),
            "--log",
            &cluster.urls(),
            "--stream-replicas",
            "1",
            "--log-start-timeout",
            "3s",
            "--wal-dir",
        ]
        .iter()
        .map(|arg| (*arg).to_owned())
        .collect();
        args.push(path_arg(&work.path().join(wal)));
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        args
    };

    // Without the CA the server's certificate is not trusted; without the
    // token the server refuses the connection.
    let ca = path_arg(&certs.join("ca.pem"));
    let token = path_arg(&token_file);
    for (wal, extra) in [
        ("wal-no-ca", vec!["--log-token-file", token.as_str()]),
        ("wal-no-token", vec!["--log-ca", ca.as_str()]),
    ] {
        let args = ingest_args(wal, &extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let refused = VesperProcess::run(&args, &[]);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success(), "started without {wal}: {stderr}");
        assert!(stderr.contains(&cluster.url(0)), "{wal}: {stderr}");
        assert!(!stderr.contains(TOKEN), "{wal} logged the token: {stderr}");
    }

    let args = ingest_args(
        "wal",
        &["--log-ca", ca.as_str(), "--log-token-file", token.as_str()],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let ingest = VesperProcess::start(&args, &[("RUST_LOG", "debug".to_owned())]);
    let answer = vesper_tests::Grpcurl::new(ingest.grpc_addr())
        .call(
            "vesper.v1.EventIngest/Ingest",
            r#"{"events":[
                {"eventId":"6a1f0c3e-2b4d-4e8f-9a0b-1c2d3e4f5a6b","userId":"user_7",
                 "eventType":"EVENT_TYPE_PURCHASE","source":"SOURCE_WEB",
                 "timestamp":"2026-11-25T21:04:05Z",
                 "properties":{"purchase":{"amount":12.5,"productId":"prod_7"}}}]}"#,
        )
        .expect("an Ingest call over the TLS connection");
    assert_eq!(answer["accepted"], 1, "{answer}");
    // Stats reads the stream's state over the same connection, once a second.
    let grpcurl = vesper_tests::Grpcurl::new(ingest.grpc_addr());
    eventually(
        "Stats to show the event in the stream",
        Duration::from_secs(30),
        async || {
            grpcurl
                .call("vesper.v1.EventIngest/Stats", "{}")
                .is_ok_and(|stats| stats["streamMessages"] == "1")
        },
    )
    .await;
    assert!(
        !ingest.log().contains(TOKEN),
        "the token is in the log:\n{}",
        ingest.log()
    );
}
