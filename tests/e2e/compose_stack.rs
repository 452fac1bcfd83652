//! docker-compose.yml's vesper services, run here as compose runs them but
//! without Docker: the exact command line, environment and health check of
//! every vesper service, read from the model the real compose binary
//! normalizes, with only hosts, ports and paths rewritten. moto stands in
//! for MinIO, an in-test OTLP collector for Jaeger, reserved loopback ports
//! for the containers' ports, temp dirs for the volumes. Services start in
//! depends_on order (one-shot jobs run to completion, servers must pass
//! their health check); then the platform must work on S3 (sample data,
//! batch snapshots and webhook events in the bucket, traces from the
//! services) and stop as `docker compose down` stops it.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::TcpListener,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use aws_config::{BehaviorVersion, Region};
use aws_sdk_s3::config::Credentials;
use serde_json::Value;
use vesper::{
    config::{PeerAddr, parse_duration},
    v1::{FlushRequest, StatsRequest, event_ingest_client::EventIngestClient},
};
use vesper_batch::{MANIFEST_NAME, Manifest};
use vesper_storage::{ObjectKey, ObjectStore, S3Store};
use vesper_tests::{
    OtlpCollector, ReceivedSpan, S3Server, VesperProcess, compose_config, vesper_bin,
};

/// The image of the vesper services in the compose file.
const VESPER_IMAGE: &str = "vesper:local";
/// What Docker gives a container between SIGTERM and SIGKILL by default.
const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);
const OBJECT_LIMIT: u64 = 64 * 1024 * 1024;

/// One service of the normalized compose model.
#[derive(Debug)]
struct Service {
    name: String,
    image: String,
    command: Vec<String>,
    environment: BTreeMap<String, String>,
    /// The health check's command, without the `CMD` marker.
    health: Vec<String>,
    depends_on: BTreeSet<String>,
    /// `restart: "no"`: a job that runs once and exits.
    one_shot: bool,
    /// Where volumes are mounted in the container.
    volumes: Vec<String>,
    stop_grace_period: Duration,
}

impl Service {
    fn from_model(name: &str, model: &Value) -> Self {
        let strings = |value: &Value| -> Vec<String> {
            value
                .as_array()
                .into_iter()
                .flatten()
                .map(|word| word.as_str().expect("a string").to_owned())
                .collect()
        };
        let test = strings(&model["healthcheck"]["test"]);
        let health = match test.split_first() {
            None => Vec::new(),
            Some((marker, words)) if marker == "CMD" => words.to_vec(),
            Some(_) => panic!("{name}: this test runs CMD health checks only, not {test:?}"),
        };
        Self {
            name: name.to_owned(),
            image: model["image"].as_str().unwrap_or_default().to_owned(),
            command: strings(&model["command"]),
            environment: model["environment"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(key, value)| (key.clone(), value.as_str().unwrap_or_default().to_owned()))
                .collect(),
            health,
            depends_on: model["depends_on"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(dependency, _)| dependency.clone())
                .collect(),
            one_shot: model["restart"].as_str() == Some("no"),
            volumes: model["volumes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|volume| volume["target"].as_str().expect("a target").to_owned())
                .collect(),
            stop_grace_period: model["stop_grace_period"]
                .as_str()
                .map_or(DEFAULT_STOP_GRACE, |value| {
                    parse_duration(value).expect("a duration")
                }),
        }
    }

    fn is_vesper(&self) -> bool {
        self.image == VESPER_IMAGE
    }

    /// The value of `--flag=value` (or `--flag value`) in the command.
    fn flag(&self, flag: &str) -> Option<&str> {
        let prefix = format!("{flag}=");
        self.command.iter().enumerate().find_map(|(index, word)| {
            word.strip_prefix(&prefix).or_else(|| {
                (word == flag)
                    .then(|| self.command.get(index + 1).map(String::as_str))
                    .flatten()
            })
        })
    }
}

/// The services of docker-compose.yml, as compose normalizes them.
fn compose_model() -> BTreeMap<String, Service> {
    compose_config()["services"]
        .as_object()
        .expect("the model has services")
        .iter()
        .map(|(name, service)| (name.clone(), Service::from_model(name, service)))
        .collect()
}

/// The vesper services in an order that starts every one after the ones
/// it depends on (the others, MinIO and Jaeger, have stand-ins already up).
fn start_order(services: &BTreeMap<String, Service>) -> Vec<&Service> {
    let mut order: Vec<&Service> = Vec::new();
    let mut pending: Vec<&Service> = services.values().filter(|s| s.is_vesper()).collect();
    while !pending.is_empty() {
        let ready = pending
            .iter()
            .position(|service| {
                service.depends_on.iter().all(|dependency| {
                    !services[dependency].is_vesper()
                        || order.iter().any(|done| &done.name == dependency)
                })
            })
            .expect("depends_on has no cycle");
        order.push(pending.remove(ready));
    }
    order
}

/// A free loopback port, for a container port that compose would publish
/// on the service's own network address.
fn reserve_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// Where each `service:port` of the compose network is on this machine,
/// and where each container path of a volume is.
#[derive(Debug, Default)]
struct Rewrites {
    addresses: HashMap<(String, u16), String>,
    volumes: HashMap<String, PathBuf>,
}

impl Rewrites {
    /// A value of `service`'s command or environment with its hosts, ports
    /// and paths rewritten; any other value (flags, names, durations,
    /// `s3://bucket`, credentials) comes back verbatim.
    fn value(&self, service: &Service, value: &str) -> String {
        if let Some(path) = self.volume_path(service, value) {
            return path;
        }
        let (scheme, rest) = match value.split_once("://") {
            Some((scheme, rest)) => (Some(scheme), rest),
            None => (None, value),
        };
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let Some((host, port)) = authority.rsplit_once(':') else {
            return value.to_owned();
        };
        let Ok(port) = port.parse::<u16>() else {
            return value.to_owned();
        };
        // A wildcard is where the service listens; loopback, where its own
        // health check probes it.
        let owner = if matches!(host, "0.0.0.0" | "127.0.0.1") {
            service.name.as_str()
        } else {
            host
        };
        let address = self
            .addresses
            .get(&(owner.to_owned(), port))
            .unwrap_or_else(|| {
                panic!(
                    "{}: {value:?} names {owner}:{port}, where nothing listens",
                    service.name
                )
            });
        match scheme {
            Some(scheme) => format!("{scheme}://{address}{path}"),
            None => format!("{address}{path}"),
        }
    }

    fn volume_path(&self, service: &Service, value: &str) -> Option<String> {
        service.volumes.iter().find_map(|target| {
            let rest = value.strip_prefix(target.as_str())?;
            (rest.is_empty() || rest.starts_with('/')).then(|| {
                let key = format!("{}:{target}", service.name);
                format!("{}{rest}", self.volumes[&key].display())
            })
        })
    }

    /// A command line, each `--flag=value` and bare word rewritten.
    fn words(&self, service: &Service, words: &[String]) -> Vec<String> {
        words
            .iter()
            .map(|word| match word.split_once('=') {
                Some((flag, value)) if flag.starts_with("--") => {
                    format!("{flag}={}", self.value(service, value))
                }
                _ if word.starts_with('-') => word.clone(),
                _ => self.value(service, word),
            })
            .collect()
    }

    fn environment(&self, service: &Service) -> Vec<(String, String)> {
        service
            .environment
            .iter()
            .map(|(key, value)| (key.clone(), self.value(service, value)))
            .collect()
    }
}

fn as_strs(words: &[String]) -> Vec<&str> {
    words.iter().map(String::as_str).collect()
}

fn as_env(env: &[(String, String)]) -> Vec<(&str, String)> {
    env.iter()
        .map(|(key, value)| (key.as_str(), value.clone()))
        .collect()
}

/// Runs the service's health check (rewritten) the way Docker does, until
/// it passes or the budget runs out.
fn wait_healthy(bin: &Path, service: &Service, rewrites: &Rewrites, env: &[(String, String)]) {
    let words = rewrites.words(service, &service.health);
    assert_eq!(
        words.first().map(String::as_str),
        Some("vesper"),
        "{}: the health check runs the vesper binary",
        service.name
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let output = VesperProcess::run_with(bin, &as_strs(&words[1..]), &as_env(env));
        if output.status.success() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: the health check `{}` keeps failing: {}",
            service.name,
            words.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every object under `prefix`, all pages.
async fn keys(lake: &S3Store, prefix: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut token = None;
    loop {
        let page = lake
            .list(prefix, token.as_deref(), 0)
            .await
            .expect("list the bucket");
        keys.extend(page.objects.into_iter().map(|object| object.key));
        match page.next_token {
            Some(next) => token = Some(next),
            None => return keys,
        }
    }
}

async fn body(lake: &S3Store, key: &str) -> Vec<u8> {
    let key = ObjectKey::new(key.to_owned()).expect("a lake key");
    lake.get(&key).await.expect("get an object").1.to_vec()
}

/// The manifest of the one run of `pipeline` in the bucket.
async fn manifest(lake: &S3Store, pipeline: &str) -> Manifest {
    let manifests: Vec<String> = keys(lake, &format!("{pipeline}/"))
        .await
        .into_iter()
        .filter(|key| key.ends_with(MANIFEST_NAME))
        .collect();
    assert_eq!(
        manifests.len(),
        1,
        "one manifested {pipeline} run: {manifests:?}"
    );
    serde_json::from_slice(&body(lake, &manifests[0]).await).expect("a manifest")
}

fn has_span(spans: &[ReceivedSpan], service: &str, name: &str) -> bool {
    spans
        .iter()
        .any(|span| span.service == service && span.span.name == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_services_run_as_written_against_s3() {
    let services = compose_model();
    let bin = vesper_bin();
    let s3 = S3Server::start();
    let collector = OtlpCollector::start().await;
    let volumes = tempfile::tempdir().expect("temp dir");

    // Every address of the compose network, on this machine: the stand-ins
    // for MinIO and Jaeger, and a reserved port for each one a vesper
    // service listens on (reserved up front: datasource and gateway name
    // each other).
    let mut rewrites = Rewrites::default();
    let moto = s3.endpoint().trim_start_matches("http://").to_owned();
    rewrites.addresses.insert(("minio".into(), 9000), moto);
    let jaeger = collector
        .endpoint()
        .trim_start_matches("http://")
        .to_owned();
    rewrites.addresses.insert(("jaeger".into(), 4317), jaeger);
    for service in services.values().filter(|s| s.is_vesper()) {
        for flag in ["--grpc-addr", "--http-addr", "--metrics-addr"] {
            if let Some(listen) = service.flag(flag) {
                let port = listen
                    .rsplit_once(':')
                    .and_then(|(_, port)| port.parse::<u16>().ok())
                    .expect("a listen address with a port");
                let local = format!("127.0.0.1:{}", reserve_port());
                rewrites
                    .addresses
                    .insert((service.name.clone(), port), local);
            }
        }
        for target in &service.volumes {
            let dir = volumes
                .path()
                .join(format!("{}{}", service.name, target.replace('/', "-")));
            std::fs::create_dir_all(&dir).expect("a volume dir");
            rewrites
                .volumes
                .insert(format!("{}:{target}", service.name), dir);
        }
    }

    // Only for speed, and only settings the compose file could carry too:
    // spans are exported every 100 ms, and the generator pushes at once and
    // often instead of after 5 s and every 2-6 s.
    let speed_ups = |service: &Service| -> Vec<(String, String)> {
        let mut extra = vec![("OTEL_BSP_SCHEDULE_DELAY", "100")];
        if service.command.first().map(String::as_str) == Some("datasource") {
            extra.push(("VESPER_GENERATOR_DELAY", "0s"));
            extra.push(("VESPER_GENERATOR_INTERVAL", "100ms-300ms"));
        }
        for (key, _) in &extra {
            assert!(
                !service.environment.contains_key(*key),
                "{}: {key} is the compose file's to set",
                service.name
            );
        }
        extra
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value.to_owned()))
            .collect()
    };

    let order = start_order(&services);
    let running: Vec<(&Service, VesperProcess)> = tokio::task::block_in_place(|| {
        let mut running = Vec::new();
        for service in &order {
            let args = rewrites.words(service, &service.command);
            let mut env = rewrites.environment(service);
            env.extend(speed_ups(service));
            if service.one_shot {
                let output = VesperProcess::run_with(&bin, &as_strs(&args), &as_env(&env));
                assert!(
                    output.status.success(),
                    "{}: `vesper {}` failed: {}",
                    service.name,
                    args.join(" "),
                    String::from_utf8_lossy(&output.stderr)
                );
            } else {
                let process = VesperProcess::start_with(&bin, &as_strs(&args), &as_env(&env));
                wait_healthy(&bin, service, &rewrites, &env);
                running.push((*service, process));
            }
        }
        running
    });

    // The bucket, read directly with the credentials of .env.example.
    let storage = &services["storage"];
    let bucket = storage
        .flag("--lake")
        .and_then(|lake| lake.strip_prefix("s3://"))
        .expect("storage's lake is in S3");
    let config = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(s3.endpoint())
        .region(Region::new(storage.environment["AWS_REGION"].clone()))
        .credentials_provider(Credentials::new(
            storage.environment["AWS_ACCESS_KEY_ID"].clone(),
            storage.environment["AWS_SECRET_ACCESS_KEY"].clone(),
            None,
            None,
            ".env.example",
        ))
        .load()
        .await;
    let lake = S3Store::connect_with(&config, bucket, "", OBJECT_LIMIT, false)
        .await
        .expect("minio-setup created the bucket");

    // minio-setup loaded the sample data.
    assert_eq!(
        keys(&lake, "data/").await,
        ["data/content.csv", "data/sessions.csv", "data/users.csv"]
    );
    // batch-job left one manifested snapshot of each pipeline.
    assert_eq!(manifest(&lake, "users").await.records, 10_000);
    assert_eq!(manifest(&lake, "content").await.records, 1_000);

    // The generator's pushes go datasource -> gateway -> ingest; Flush
    // writes what ingest holds through storage into the bucket.
    let (_, ingest_process) = running
        .iter()
        .find(|(service, _)| service.name == "ingest")
        .expect("ingest runs");
    let peer: PeerAddr = ingest_process
        .grpc_addr()
        .to_string()
        .parse()
        .expect("a peer");
    let mut ingest = EventIngestClient::new(vesper::grpc::connect_lazy(&peer));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stats = ingest
            .stats(StatsRequest {})
            .await
            .expect("ingest stats")
            .into_inner();
        if stats.accepted > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no pushed event reached ingest: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ingest
        .flush(FlushRequest {})
        .await
        .expect("flush to the lake");
    let events = keys(&lake, "events/").await;
    assert!(!events.is_empty(), "webhook events in the bucket");
    for key in &events {
        let parts: Vec<&str> = key.split('/').collect();
        assert!(
            parts.len() == 4
                && parts[1].strip_prefix("dt=").is_some_and(|d| d.len() == 10)
                && parts[2].strip_prefix("hour=").is_some_and(|h| h.len() == 2)
                && parts[3].ends_with(".ndjson"),
            "events/dt=YYYY-MM-DD/hour=HH/<name>.ndjson, not {key}"
        );
    }
    let first = body(&lake, &events[0]).await;
    for line in first.split(|b| *b == b'\n').filter(|line| !line.is_empty()) {
        let event: Value = serde_json::from_slice(line).expect("an NDJSON event");
        assert!(event["event_id"].is_string(), "{event}");
        assert_ne!(event["event_type"], "signup");
    }

    // Traces reach "Jaeger" as docs/observability.md describes them: a webhook call's
    // trace runs from the gateway into ingest; each write of its events to
    // the lake is a trace of its own (ingest's flush and storage's
    // PutObject), linked to the calls' traces. The health checks' probes,
    // every few seconds, leave none.
    let flush_traces = |spans: &[ReceivedSpan]| -> BTreeSet<String> {
        spans
            .iter()
            .filter(|s| s.service == "vesper-ingest" && s.span.name == "ingest.flush")
            .map(ReceivedSpan::trace_id)
            .collect()
    };
    let spans = collector
        .wait_for(Duration::from_secs(15), |spans| {
            let flushes = flush_traces(spans);
            has_span(spans, "vesper-gateway", "POST /webhook/events")
                && has_span(spans, "vesper-ingest", "vesper.v1.EventIngest/Ingest")
                && spans.iter().any(|s| {
                    s.service == "vesper-storage"
                        && s.span.name == "vesper.v1.Storage/PutObject"
                        && flushes.contains(&s.trace_id())
                })
        })
        .await;
    let webhooks: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.service == "vesper-gateway" && s.span.name == "POST /webhook/events")
        .collect();
    let webhook_traces: BTreeSet<String> = webhooks.iter().map(|s| s.trace_id()).collect();
    assert!(
        spans.iter().any(|s| s.service == "vesper-ingest"
            && s.span.name == "vesper.v1.EventIngest/Ingest"
            && webhook_traces.contains(&s.trace_id())),
        "a webhook call's trace continues into ingest"
    );
    assert!(
        spans.iter().any(|s| s.span.name == "ingest.flush"
            && s.linked_trace_ids()
                .iter()
                .any(|t| webhook_traces.contains(t))),
        "a flush links to the webhook calls whose events it writes"
    );
    // docs/observability.md finds a call's trace by its x-request-id.
    assert!(
        webhooks
            .iter()
            .all(|s| s.span.attributes.iter().any(|a| a.key == "request_id")),
        "webhook spans carry the request_id attribute"
    );
    let probes: Vec<(&str, &str)> = spans
        .iter()
        .filter(|s| {
            matches!(
                s.span.name.as_str(),
                "grpc.health.v1.Health/Check"
                    | "GET /health"
                    | "vesper.v1.DataSource/GeneratorStatus"
            )
        })
        .map(|s| (s.service.as_str(), s.span.name.as_str()))
        .collect();
    assert!(probes.is_empty(), "health probes were traced: {probes:?}");

    // `docker compose down`: dependents first, SIGTERM, and each must exit
    // cleanly within its stop_grace_period.
    tokio::task::block_in_place(|| {
        for (service, mut process) in running.into_iter().rev() {
            process.signal("TERM");
            let status = process
                .wait_exit(service.stop_grace_period)
                .unwrap_or_else(|| {
                    panic!(
                        "{} did not stop within its stop_grace_period ({:?}); log:\n{}",
                        service.name,
                        service.stop_grace_period,
                        process.log()
                    )
                });
            assert!(status.success(), "{} exited with {status}", service.name);
        }
    });
    collector.stop();
}
