//! The real `vesper` binary, run as a child process.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex, OnceLock, mpsc},
    time::{Duration, Instant},
};

/// How long a debug build may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The `vesper` binary: `$VESPER_BIN` when set, else built once per test
/// process with the same cargo that runs the tests.
pub fn vesper_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("VESPER_BIN") {
            return PathBuf::from(bin);
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let output = Command::new(cargo)
            .args([
                "build",
                "-p",
                "vesper-cli",
                "--bin",
                "vesper",
                "--message-format=json",
            ])
            .current_dir(crate::workspace_root())
            .stderr(Stdio::inherit())
            .output()
            .expect("cannot run cargo to build the vesper binary");
        assert!(output.status.success(), "building the vesper binary failed");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|line| line.contains("\"executable\":\""))
            .filter_map(|line| {
                let start = line.find("\"executable\":\"")? + "\"executable\":\"".len();
                let end = line[start..].find('"')? + start;
                Some(PathBuf::from(&line[start..end]))
            })
            .find(|path| path.file_name().is_some_and(|name| name == "vesper"))
            .expect("cargo did not report the vesper executable")
    })
    .clone()
}

/// A running `vesper` process. Its stderr is echoed (prefixed) to the test's
/// output and kept for assertions; it is killed when dropped.
#[derive(Debug)]
pub struct VesperProcess {
    child: Child,
    grpc: Option<SocketAddr>,
    http: Option<SocketAddr>,
    log: Arc<Mutex<Vec<String>>>,
}

impl VesperProcess {
    /// Starts `vesper ARGS` with extra environment and waits for its ready
    /// line (`listening grpc=... http=...`).
    pub fn start(args: &[&str], env: &[(&str, String)]) -> Self {
        Self::start_with(&vesper_bin(), args, env)
    }

    /// Like [`VesperProcess::start`] with an explicit binary.
    pub fn start_with(bin: &Path, args: &[&str], env: &[(&str, String)]) -> Self {
        let mut child = Self::command(bin, args, env)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {}: {err}", bin.display()));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("stderr is piped");
        let sink = Arc::clone(&log);
        let label = args.first().copied().unwrap_or("vesper").to_owned();
        std::thread::spawn(move || {
            let mut ready = Some(ready_tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("[{label}] {line}");
                if line.contains("listening ")
                    && let Some(tx) = ready.take()
                {
                    let _ = tx.send(line.clone());
                }
                sink.lock().expect("log lock").push(line);
            }
        });
        let ready = match ready_rx.recv_timeout(READY_TIMEOUT) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().ok();
                panic!(
                    "vesper {args:?} printed no ready line within {READY_TIMEOUT:?} (exit: {status:?}); log:\n{}",
                    log.lock().expect("log lock").join("\n")
                );
            }
        };
        Self {
            child,
            grpc: address_after(&ready, "grpc="),
            http: address_after(&ready, "http="),
            log,
        }
    }

    /// Runs `vesper ARGS` to completion and returns its status and output.
    pub fn run(args: &[&str], env: &[(&str, String)]) -> std::process::Output {
        Self::run_with(&vesper_bin(), args, env)
    }

    /// Like [`VesperProcess::run`] with an explicit binary.
    pub fn run_with(bin: &Path, args: &[&str], env: &[(&str, String)]) -> std::process::Output {
        Self::command(bin, args, env)
            .stdin(Stdio::null())
            .output()
            .expect("cannot run vesper")
    }

    fn command(bin: &Path, args: &[&str], env: &[(&str, String)]) -> Command {
        let mut command = Command::new(bin);
        command
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("NO_COLOR", "1")
            .env_remove("VESPER_GRPC_ADDR")
            .env_remove("VESPER_HTTP_ADDR")
            .env_remove("VESPER_LAKE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    /// The gRPC address from the ready line.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc.expect("the process announced no gRPC address")
    }

    /// The HTTP address from the ready line.
    pub fn http_addr(&self) -> SocketAddr {
        self.http.expect("the process announced no HTTP address")
    }

    /// Where a service started with `--metrics-addr` serves its metrics:
    /// the `serving metrics=http://ADDR/metrics` line, logged before the
    /// ready line.
    pub fn metrics_url(&self) -> String {
        let log = self.log.lock().expect("log lock");
        log.iter()
            .find_map(|line| {
                let start = line.find("serving metrics=")? + "serving metrics=".len();
                line[start..].split_whitespace().next().map(str::to_owned)
            })
            .expect("the process announced no metrics address (was it given --metrics-addr?)")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name ("INT", "TERM", "KILL").
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("cannot run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the process at once (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Everything the process logged so far.
    pub fn log(&self) -> String {
        self.log.lock().expect("log lock").join("\n")
    }
}

impl Drop for VesperProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn address_after(line: &str, marker: &str) -> Option<SocketAddr> {
    let start = line.find(marker)? + marker.len();
    line[start..].split_whitespace().next()?.parse().ok()
}
