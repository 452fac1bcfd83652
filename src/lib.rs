//! vesper's protobuf contracts and the small kernel every service shares:
//! one error-code table, telemetry, the shutdown signal, the address, lake
//! and duration conventions, and the gRPC server scaffolding (health,
//! reflection, message limits, the ready line).
//!
//! - [`v1`]: the generated contracts; [`FILE_DESCRIPTOR_SET`] for
//!   reflection.
//! - [`error`]: [`ErrorCode`], the one table from an error's kind to its
//!   gRPC code and its HTTP status, and [`ServiceError`], which every
//!   crate's error enum implements.
//! - [`wire`]: the public JSON shapes (encode, decode, validate) and the
//!   bounds on what an event may hold.
//! - [`grpc`]: the server scaffolding with its limits (docs/limits.md),
//!   and traced clients.
//! - [`tls`]: TLS on every port and every call between services (off
//!   unless asked for), with certificates reloaded without a restart.
//! - [`auth`]: bearer tokens and their rights, the layer that checks
//!   them on every gRPC port (docs/security.md).
//! - [`retry`]: the one backoff schedule (capped, exponential, full
//!   jitter).
//! - [`config`], [`telemetry`], [`metrics`], [`shutdown`], [`signature`]:
//!   conventions every binary shares.
//!
//! The architecture and the guarantees of the whole platform are in
//! docs/architecture.md.

pub mod auth;
pub mod config;
pub mod error;
pub mod grpc;
pub mod metrics;
pub mod retry;
pub mod shutdown;
pub mod signature;
pub mod telemetry;
pub mod tls;
pub mod wire;

/// The generated `vesper.v1` messages, clients and servers.
#[allow(
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    clippy::all,
    clippy::unwrap_used
)]
pub mod v1 {
    tonic::include_proto!("vesper.v1");
}

/// The encoded descriptor set of every contract in `proto/`, for gRPC
/// reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("vesper_descriptor");

pub use error::{ErrorCode, ServiceError};
pub use shutdown::Shutdown;
