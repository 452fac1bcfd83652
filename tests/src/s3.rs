//! A real S3-protocol server for tests: moto in server mode.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::Duration,
};

use crate::tools::tool;

/// moto, run by a Python launcher that stops the server when its stdin
/// closes, so the server never outlives the test process, however that
/// process ends.
const LAUNCHER: &str = r#"
import sys
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
host, port = server.get_host_and_port()
print(f"ready {port}", flush=True)
sys.stdin.read()
server.stop()
"#;

/// The credentials and region the test server accepts (moto accepts any).
pub const ACCESS_KEY_ID: &str = "vesper-test";
/// See [`ACCESS_KEY_ID`].
pub const SECRET_ACCESS_KEY: &str = "vesper-test-secret";
/// See [`ACCESS_KEY_ID`].
pub const REGION: &str = "us-east-1";

/// A running S3-protocol server on loopback.
#[derive(Debug)]
pub struct S3Server {
    endpoint: String,
    _process: Child,
}

impl S3Server {
    /// Starts a server of its own (for a test that stops it).
    pub fn start() -> Self {
        let python = tool("VESPER_MOTO_PYTHON", "moto/bin/python");
        let mut process = Command::new(&python)
            .args(["-c", LAUNCHER])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start moto with {}: {err}", python.display()));
        let stdout = process.stdout.take().expect("moto stdout is piped");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let port = lines
                .next()
                .and_then(Result::ok)
                .and_then(|line| line.strip_prefix("ready ").map(str::to_owned));
            let _ = ready_tx.send(port);
            // Keep draining so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let port = ready_rx
            .recv_timeout(Duration::from_secs(60))
            .ok()
            .flatten()
            .expect("moto did not report its port within 60 s");
        Self {
            endpoint: format!("http://127.0.0.1:{port}"),
            _process: process,
        }
    }

    /// One server shared by every test of this test binary; tests keep out
    /// of each other's way with [`unique_bucket`].
    pub fn shared() -> &'static Self {
        static SHARED: OnceLock<S3Server> = OnceLock::new();
        SHARED.get_or_init(Self::start)
    }

    /// The endpoint URL, e.g. `http://127.0.0.1:41234`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The standard AWS variables that point a client at this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY.to_owned()),
            ("AWS_REGION", REGION.to_owned()),
        ]
    }
}

/// A bucket name no other test uses.
pub fn unique_bucket(purpose: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let purpose: String = purpose
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(30)
        .collect();
    format!("t-{purpose}-{}-{n}", std::process::id())
}
