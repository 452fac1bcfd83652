//! Compiles the protobuf contracts in `proto/` with protox (pure Rust, so no
//! system `protoc` is needed) and generates the tonic clients and servers.
//! The encoded descriptor set is written next to the generated code so that
//! every server can offer gRPC reflection.

use std::{env, error::Error, fs, path::PathBuf};

use prost::Message;

const PROTO_ROOT: &str = "proto";

fn main() -> Result<(), Box<dyn Error>> {
    let protos = proto_files()?;
    println!("cargo:rerun-if-changed={PROTO_ROOT}");

    let file_descriptors = protox::compile(&protos, [PROTO_ROOT])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("vesper_descriptor.bin"),
        file_descriptors.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Object bodies can be tens of MiB; `Bytes` avoids a copy per hop.
        .bytes(".vesper.v1")
        .compile_fds(file_descriptors)?;
    Ok(())
}

/// Every `.proto` under `proto/`, sorted so the build is deterministic.
fn proto_files() -> Result<Vec<PathBuf>, Box<dyn Error>> {
    let mut found = Vec::new();
    let mut pending = vec![PathBuf::from(PROTO_ROOT)];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "proto") {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}
