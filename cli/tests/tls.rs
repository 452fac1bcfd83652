//! TLS operated the way docs/security.md tells people to: certificates
//! from `vesper certs`, the real grpcurl and a real HTTP client. Calls
//! over TLS succeed; plaintext to a TLS port fails; under mutual TLS a
//! client certificate from another CA is refused; a certificate replaced on
//! disk is served to new connections without a restart; no key appears in
//! the logs.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use vesper_tests::{Grpcurl, VesperProcess, eventually_blocking};

const BIN: &str = env!("CARGO_BIN_EXE_vesper");

/// How long a reload may take to show in the log.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// The files `vesper certs` wrote into one directory.
struct Certs {
    dir: PathBuf,
}

impl Certs {
    /// Runs `vesper certs --out DIR/NAME`.
    fn issue(root: &Path, name: &str) -> Self {
        let dir = root.join(name);
        let out = VesperProcess::run_with(
            Path::new(BIN),
            &["certs", "--out", dir.to_str().expect("utf-8 path")],
            &[],
        );
        assert!(
            out.status.success(),
            "vesper certs failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let printed = String::from_utf8_lossy(&out.stdout);
        assert!(printed.contains("VESPER_TLS_CERT="), "{printed}");
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    fn server_flags(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.arg("server.pem"),
            "--tls-key".into(),
            self.arg("server-key.pem"),
        ]
    }

    /// The base64 lines of every key in the directory: none may show up in
    /// a log.
    fn key_lines(&self) -> Vec<String> {
        ["ca-key.pem", "server-key.pem", "client-key.pem"]
            .iter()
            .flat_map(|name| {
                std::fs::read_to_string(self.path(name))
                    .expect("key file")
                    .lines()
                    .filter(|line| !line.starts_with("-----") && line.len() >= 16)
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

fn start(args: &[String], env: &[(&str, String)]) -> VesperProcess {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    VesperProcess::start_with(Path::new(BIN), &args, env)
}

fn storage(lake: &Path, tls: &[String], env: &[(&str, String)]) -> VesperProcess {
    let mut args: Vec<String> = vec![
        "storage".into(),
        "--grpc-addr".into(),
        "127.0.0.1:0".into(),
        "--lake".into(),
        lake.display().to_string(),
    ];
    args.extend_from_slice(tls);
    start(&args, env)
}

fn assert_no_key_in_log(process: &VesperProcess, certs: &[&Certs]) {
    let log = process.log();
    assert!(!log.contains("PRIVATE KEY"), "a key header in the log");
    for certs in certs {
        for line in certs.key_lines() {
            assert!(!log.contains(&line), "key material in the log: {line}");
        }
    }
}

fn health(grpcurl: &Grpcurl) -> Result<serde_json::Value, vesper_tests::GrpcurlError> {
    grpcurl.call("grpc.health.v1.Health/Check", "{}")
}

#[test]
fn grpc_over_tls_works_and_plaintext_is_refused() {
    let root = tempfile::tempdir().expect("temp dir");
    let certs = Certs::issue(root.path(), "certs");
    let other = Certs::issue(root.path(), "other");
    let mut flags = certs.server_flags();
    flags.extend(["--metrics-addr".into(), "127.0.0.1:0".into()]);
    let process = storage(&root.path().join("lake"), &flags, &[]);
    let addr = process.grpc_addr();

    let answer = health(&Grpcurl::tls(addr, &certs.path("ca.pem"))).expect("health over TLS");
    assert_eq!(answer["status"], "SERVING");
    let listed = Grpcurl::tls(addr, &certs.path("ca.pem"))
        .raw(None, &["list"])
        .expect("reflection over TLS");
    assert!(listed.contains("vesper.v1.Storage"), "{listed}");

    let plaintext = health(&Grpcurl::new(addr).connect_timeout_secs(3));
    assert!(plaintext.is_err(), "plaintext to a TLS port answered");
    let untrusted = health(&Grpcurl::tls(addr, &other.path("ca.pem")).connect_timeout_secs(3))
        .expect_err("a server certificate from an untrusted CA was accepted");
    assert!(
        untrusted.stderr.contains("certificate"),
        "{}",
        untrusted.stderr
    );

    // vesper's own client: `vesper healthcheck` to an https:// peer.
    let probe = |ca: &Certs| {
        VesperProcess::run_with(
            Path::new(BIN),
            &[
                "healthcheck",
                "--grpc",
                &format!("https://{addr}"),
                "--tls-ca",
                &ca.arg("ca.pem"),
                "--timeout",
                "10s",
            ],
            &[],
        )
        .status
        .success()
    };
    assert!(probe(&certs), "vesper healthcheck over TLS failed");
    assert!(!probe(&other), "vesper healthcheck trusted another CA");

    // The metrics port of a gRPC-only service is TLS too.
    let metrics = process.metrics_url();
    assert!(metrics.starts_with("https://"), "{metrics}");
    let scraped = https_client(&certs.path("ca.pem"))
        .get(&metrics)
        .send()
        .expect("metrics over TLS")
        .text()
        .expect("metrics text");
    assert!(scraped.contains("vesper_grpc_requests_total"), "{scraped}");
    assert_no_key_in_log(&process, &[&certs]);
}

#[test]
fn mutual_tls_refuses_clients_of_another_ca() {
    let root = tempfile::tempdir().expect("temp dir");
    let certs = Certs::issue(root.path(), "certs");
    let other = Certs::issue(root.path(), "other");
    let mut flags = certs.server_flags();
    flags.extend(["--tls-client-ca".into(), certs.arg("ca.pem")]);
    // Debug logs too: rustls' own logging must not leak a key either.
    let process = storage(
        &root.path().join("lake"),
        &flags,
        &[("RUST_LOG", "debug".to_owned())],
    );
    let addr = process.grpc_addr();
    let trusting = || Grpcurl::tls(addr, &certs.path("ca.pem"));

    let accepted =
        health(&trusting().client_cert(&certs.path("client.pem"), &certs.path("client-key.pem")))
            .expect("a client certificate from the right CA");
    assert_eq!(accepted["status"], "SERVING");

    let foreign = health(
        &trusting()
            .client_cert(&other.path("client.pem"), &other.path("client-key.pem"))
            .connect_timeout_secs(3),
    );
    assert!(
        foreign.is_err(),
        "a client certificate from another CA was accepted"
    );
    let anonymous = health(&trusting().connect_timeout_secs(3));
    assert!(
        anonymous.is_err(),
        "a client without a certificate was accepted"
    );
    assert_no_key_in_log(&process, &[&certs, &other]);
}

#[test]
fn a_certificate_replaced_on_disk_is_served_after_sighup_without_a_restart() {
    let root = tempfile::tempdir().expect("temp dir");
    let live = Certs::issue(root.path(), "live");
    let old_ca = root.path().join("old-ca.pem");
    std::fs::copy(live.path("ca.pem"), &old_ca).expect("keep the old CA");
    let rotated = Certs::issue(root.path(), "rotated");
    // Only SIGHUP reloads within this test's time.
    let mut flags = live.server_flags();
    flags.extend(["--tls-reload-interval".into(), "1h".into()]);
    let process = storage(&root.path().join("lake"), &flags, &[]);
    let addr = process.grpc_addr();
    health(&Grpcurl::tls(addr, &old_ca)).expect("the first certificate");

    // A broken file first: logged, and the old certificate keeps serving.
    std::fs::write(live.path("server.pem"), "not a certificate\n").expect("break");
    process.signal("HUP");
    eventually_blocking("the reload error in the log", RELOAD_TIMEOUT, || {
        process.log().contains("cannot reload the TLS certificate")
    });
    health(&Grpcurl::tls(addr, &old_ca)).expect("the old certificate after a bad file");

    for name in ["server.pem", "server-key.pem"] {
        std::fs::copy(rotated.path(name), live.path(name)).expect("replace");
    }
    process.signal("HUP");
    eventually_blocking("the reload in the log", RELOAD_TIMEOUT, || {
        process.log().contains("reloaded TLS certificate")
    });
    health(&Grpcurl::tls(addr, &rotated.path("ca.pem"))).expect("the new certificate");
    assert!(
        health(&Grpcurl::tls(addr, &old_ca).connect_timeout_secs(3)).is_err(),
        "the old certificate is still served to new connections"
    );
    assert_no_key_in_log(&process, &[&live, &rotated]);
}

fn https_client(ca: &Path) -> reqwest::blocking::Client {
    let pem = std::fs::read(ca).expect("CA");
    reqwest::blocking::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem).expect("CA PEM"))
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

#[test]
fn the_gateway_serves_https_and_picks_up_a_new_certificate_by_itself() {
    let root = tempfile::tempdir().expect("temp dir");
    let live = Certs::issue(root.path(), "live");
    let old_ca = root.path().join("old-ca.pem");
    std::fs::copy(live.path("ca.pem"), &old_ca).expect("keep the old CA");
    let rotated = Certs::issue(root.path(), "rotated");
    let mut args: Vec<String> = vec![
        "gateway".into(),
        "--http-addr".into(),
        "127.0.0.1:0".into(),
        // Peers that are not there: /health answers anyway.
        "--datasource-addr".into(),
        "127.0.0.1:9".into(),
        "--ingest-addr".into(),
        "127.0.0.1:9".into(),
        "--tls-reload-interval".into(),
        "200ms".into(),
    ];
    args.extend(live.server_flags());
    let process = start(&args, &[]);
    let addr = process.http_addr();

    let answer = https_client(&old_ca)
        .get(format!("https://localhost:{}/health", addr.port()))
        .send()
        .expect("https to the gateway");
    assert!(answer.headers().contains_key("x-request-id"), "{answer:?}");
    let plain = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
        .get(format!("http://{addr}/health"))
        .send();
    assert!(
        plain.is_err(),
        "plain http to a TLS port answered: {plain:?}"
    );

    for name in ["server.pem", "server-key.pem"] {
        std::fs::copy(rotated.path(name), live.path(name)).expect("replace");
    }
    eventually_blocking("the reload in the log", RELOAD_TIMEOUT, || {
        process.log().contains("reloaded TLS certificate")
    });
    // A new client, hence a new connection, trusting only the new CA.
    https_client(&rotated.path("ca.pem"))
        .get(format!("https://127.0.0.1:{}/health", addr.port()))
        .send()
        .expect("https with the new certificate");
    assert_no_key_in_log(&process, &[&live, &rotated]);
}

#[test]
fn the_whole_platform_runs_under_mutual_tls() {
    let root = tempfile::tempdir().expect("temp dir");
    let certs = Certs::issue(root.path(), "certs");
    let mut args: Vec<String> = vec![
        "up".into(),
        "--grpc-addr".into(),
        "127.0.0.1:0".into(),
        "--http-addr".into(),
        "127.0.0.1:0".into(),
        "--lake".into(),
        root.path().join("lake").display().to_string(),
        "--wal-dir".into(),
        root.path().join("wal").display().to_string(),
        "--tls-client-ca".into(),
        certs.arg("ca.pem"),
    ];
    args.extend(certs.server_flags());
    // The platform calls itself: it trusts the CA and presents a client
    // certificate, here through the environment as compose does.
    let env = [
        ("VESPER_TLS_CA", certs.arg("ca.pem")),
        ("VESPER_TLS_CLIENT_CERT", certs.arg("client.pem")),
        ("VESPER_TLS_CLIENT_KEY", certs.arg("client-key.pem")),
    ];
    let process = start(&args, &env);
    // Batch pulls the REST API through the gateway and writes through
    // Storage: both hops over mutual TLS.
    eventually_blocking("the start-up pipelines", Duration::from_secs(60), || {
        process.log().contains("pipeline run done pipeline=content")
    });
    let stats = Grpcurl::tls(process.grpc_addr(), &certs.path("ca.pem"))
        .client_cert(&certs.path("client.pem"), &certs.path("client-key.pem"))
        .call("vesper.v1.EventIngest/Stats", "{}")
        .expect("stats under mutual TLS");
    assert!(stats.is_object(), "{stats}");
    assert_no_key_in_log(&process, &[&certs]);
}

#[test]
fn the_platform_without_its_ca_says_what_to_give() {
    let root = tempfile::tempdir().expect("temp dir");
    let certs = Certs::issue(root.path(), "certs");
    let again = VesperProcess::run_with(
        Path::new(BIN),
        &["certs", "--out", &certs.dir.display().to_string()],
        &[],
    );
    assert!(!again.status.success(), "vesper certs overwrote its files");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for (name, mode) in [
            ("ca-key.pem", 0o600),
            ("server-key.pem", 0o600),
            ("client-key.pem", 0o600),
            ("ca.pem", 0o644),
        ] {
            let actual = std::fs::metadata(certs.path(name))
                .expect("file")
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(actual, mode, "{name} has mode {actual:o}");
        }
    }
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));

    let mut args: Vec<String> = vec![
        "up".into(),
        "--grpc-addr".into(),
        "127.0.0.1:0".into(),
        "--http-addr".into(),
        "127.0.0.1:0".into(),
    ];
    args.extend(certs.server_flags());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = VesperProcess::run_with(Path::new(BIN), &args, &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--tls-ca"), "{stderr}");
}
