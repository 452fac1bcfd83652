//! `vesper batch run` without a Storage service: it refuses before the
//! first API request when the Storage service is not there, naming the
//! address and the way out; with `--lake DIR` it writes the lake itself.
//! A token from the environment reaches the API and nowhere else.

use std::{
    io::{BufRead, BufReader, Write},
    net::TcpListener,
    path::Path,
    sync::{Arc, Mutex},
};

use vesper_tests::VesperProcess;

const BIN: &str = env!("CARGO_BIN_EXE_vesper");
const TOKEN: &str = "env-token-7d1f0c9b";

/// An HTTP/1.1 API on a thread: every request gets the same JSON page,
/// and its request line and headers are kept.
struct Api {
    addr: std::net::SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Api {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&requests);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
                seen.lock().expect("requests").push(head);
                let body = r#"{"items":[{"id":1},{"id":2}]}"#;
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Self { addr, requests }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("requests").clone()
    }
}

fn pipelines(dir: &Path, api: &Api) -> String {
    let file = dir.join("pipelines.toml");
    std::fs::write(
        &file,
        format!(
            "base_url = \"http://{}/\"\n[pipelines.items]\npath = \"items\"\nrecords = \"items\"\nheaders = {{ Authorization = \"Bearer ${{env:API_TOKEN}}\" }}\n",
            api.addr
        ),
    )
    .expect("write the pipeline file");
    file.to_string_lossy().into_owned()
}

#[test]
fn batch_run_checks_storage_first_and_writes_a_lake_directly() {
    let api = Api::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let file = pipelines(dir.path(), &api);
    let env = [("API_TOKEN", TOKEN.to_owned())];

    // No Storage service there: a port that was just free.
    let closed = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .to_string();
    let output = VesperProcess::run_with(
        Path::new(BIN),
        &[
            "batch",
            "run",
            "--pipelines",
            &file,
            "--storage-addr",
            &closed,
        ],
        &env,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the lake (storage service http://{closed}) cannot be reached, so no pipeline ran and no API was called"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("--lake DIR|s3://BUCKET") && stderr.contains("--storage-addr"),
        "{stderr}"
    );
    assert!(
        api.requests().is_empty(),
        "no request before the lake is known"
    );

    // Straight to a directory lake.
    let lake = dir.path().join("lake");
    let output = VesperProcess::run_with(
        Path::new(BIN),
        &[
            "batch",
            "run",
            "--pipelines",
            &file,
            "--lake",
            &lake.to_string_lossy(),
            "--rate-limit",
            "50",
        ],
        &env,
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("items     succeeded        2"), "{stdout}");
    let requests = api.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert!(
        requests[0]
            .to_ascii_lowercase()
            .contains(&format!("authorization: bearer {TOKEN}")),
        "the token from the environment was sent: {}",
        requests[0]
    );
    assert!(!stdout.contains(TOKEN) && !stderr.contains(TOKEN));
    let mut files = 0;
    let mut pending = vec![lake];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("a lake directory").flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files += 1;
                let text = std::fs::read_to_string(&path).expect("a lake file");
                assert!(!text.contains(TOKEN), "{} holds the token", path.display());
            }
        }
    }
    assert!(files >= 2, "a part and a manifest");

    // --lake and --storage-addr together are two answers to one question.
    let output = VesperProcess::run_with(
        Path::new(BIN),
        &[
            "batch",
            "run",
            "--pipelines",
            &file,
            "--lake",
            "x",
            "--storage-addr",
            &closed,
        ],
        &env,
    );
    assert_eq!(output.status.code(), Some(2));
}
