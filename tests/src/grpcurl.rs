//! The real grpcurl binary, for tests that operate vesper the way its
//! README tells people to.

use std::{net::SocketAddr, process::Command};

use crate::tools::tool;

/// The outcome of a failed grpcurl call.
#[derive(Debug)]
pub struct GrpcurlError {
    /// grpcurl's exit code (for an RPC error, 64 + the gRPC code).
    pub exit_code: Option<i32>,
    /// What it printed on stderr (it names the gRPC code and message).
    pub stderr: String,
}

/// grpcurl pointed at one plaintext server.
#[derive(Debug, Clone)]
pub struct Grpcurl {
    addr: SocketAddr,
    headers: Vec<String>,
}

impl Grpcurl {
    /// grpcurl for the server at `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            headers: Vec::new(),
        }
    }

    /// The same grpcurl, sending `header` (`name: value`) on every call,
    /// reflection included (`-H`).
    pub fn with_header(mut self, header: &str) -> Self {
        self.headers.push(header.to_owned());
        self
    }

    /// Runs `grpcurl -plaintext [-d DATA] ADDR ARGS...` and returns stdout.
    pub fn raw(&self, data: Option<&str>, args: &[&str]) -> Result<String, GrpcurlError> {
        let mut command = Command::new(tool("VESPER_GRPCURL", "cli/bin/grpcurl"));
        command.arg("-plaintext").arg("-max-time").arg("60");
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
