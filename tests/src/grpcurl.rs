//! The real grpcurl binary, for tests that operate vesper the way its
//! README tells people to.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
};

use crate::tools::tool;

/// The outcome of a failed grpcurl call.
#[derive(Debug)]
pub struct GrpcurlError {
    /// grpcurl's exit code (for an RPC error, 64 + the gRPC code).
    pub exit_code: Option<i32>,
    /// What it printed on stderr (it names the gRPC code and message).
    pub stderr: String,
}

/// grpcurl pointed at one server, in plaintext or over TLS.
#[derive(Debug, Clone)]
pub struct Grpcurl {
    addr: SocketAddr,
    tls: Option<Tls>,
    connect_timeout_secs: u32,
    headers: Vec<String>,
}

/// What grpcurl trusts and presents over TLS.
#[derive(Debug, Clone)]
struct Tls {
    ca: PathBuf,
    identity: Option<(PathBuf, PathBuf)>,
}

impl Grpcurl {
    /// grpcurl for the plaintext server at `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            tls: None,
            connect_timeout_secs: 10,
            headers: Vec::new(),
        }
    }

    /// The same grpcurl, sending `header` (`name: value`) on every call,
    /// reflection included (`-H`).
    pub fn with_header(mut self, header: &str) -> Self {
        self.headers.push(header.to_owned());
        self
    }

    /// grpcurl for the TLS server at `addr`, trusting the CA in `ca`
    /// (`-cacert`).
    pub fn tls(addr: SocketAddr, ca: &Path) -> Self {
        Self {
            tls: Some(Tls {
                ca: ca.to_owned(),
                identity: None,
            }),
            ..Self::new(addr)
        }
    }

    /// Presents this client certificate and key (`-cert`, `-key`).
    pub fn client_cert(mut self, cert: &Path, key: &Path) -> Self {
        if let Some(tls) = &mut self.tls {
            tls.identity = Some((cert.to_owned(), key.to_owned()));
        }
        self
    }

    /// How long grpcurl tries to connect (`-connect-timeout`; default
    /// 10s): calls expected to fail at the handshake fail this fast.
    pub fn connect_timeout_secs(mut self, seconds: u32) -> Self {
        self.connect_timeout_secs = seconds;
        self
    }

    /// Runs `grpcurl -plaintext [-d DATA] ADDR ARGS...` (or with `-cacert`
    /// and maybe `-cert`/`-key` over TLS) and returns stdout.
    pub fn raw(&self, data: Option<&str>, args: &[&str]) -> Result<String, GrpcurlError> {
        let mut command = Command::new(tool("VESPER_GRPCURL", "cli/bin/grpcurl"));
        match &self.tls {
            None => {
                command.arg("-plaintext");
            }
            Some(tls) => {
                command.arg("-cacert").arg(&tls.ca);
                if let Some((cert, key)) = &tls.identity {
                    command.arg("-cert").arg(cert).arg("-key").arg(key);
                }
            }
        }
        command
            .arg("-connect-timeout")
            .arg(self.connect_timeout_secs.to_string())
            .arg("-max-time")
            .arg("60");
        for header in &self.headers {
            command.arg("-H").arg(header);
        }
        if let Some(data) = data {
            command.arg("-d").arg(data);
        }
        command.arg(self.addr.to_string()).args(args);
        let output = command.output().expect("cannot run grpcurl");
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(GrpcurlError {
                exit_code: output.status.code(),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            })
        }
    }

    /// Calls `method` ("vesper.v1.Storage/GetObject") with a JSON request and
    /// parses the JSON answer.
    pub fn call(&self, method: &str, request: &str) -> Result<serde_json::Value, GrpcurlError> {
        let stdout = self.raw(Some(request), &[method])?;
        Ok(serde_json::from_str(&stdout).unwrap_or_else(|err| {
            panic!("grpcurl printed no JSON for {method} ({err}):\n{stdout}")
        }))
    }
}
