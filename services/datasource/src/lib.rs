//! The mock upstream: the `vesper.v1.DataSource` service.
//!
//! It serves what the old data server served (docs/compatibility.md),
//! reproducibly from a seed: 10,000 users and 1,000 content items, pages of
//! users, and random events, the unfiltered ones deliberately unreliable. Its
//! [`Generator`] pushes batches of events to a webhook, as upstream did.
//! The old REST face is the gateway's; this crate speaks gRPC only.
//!
//! It also renders the analytics' sample CSVs ([`write_sample_data`]).
//!
//! The REST face, the data and the deliberate faults are described in
//! docs/rest-api.md; what is kept from the old server and where vesper
//! differs, in docs/compatibility.md.
//!
//! [`serve`] runs it alone. To serve it beside other services on one port,
//! build a [`DataSourceService`] with the process's shutdown, add
//! `service.clone().into_server()` to `vesper::grpc::GrpcServices`, start
//! `service.generator()` with `start_after(delay)` when wanted, and after
//! the server returns, await `generator().join()` so that the last push
//! ends before the process does.

mod config;
mod data;
mod error;
mod events;
mod generator;
mod random;
mod sample;
mod service;

pub use config::{
    DEFAULT_WEBHOOK_URL, DataSourceArgs, DataSourceConfig, FaultPolicy, GeneratorConfig,
    WebhookArgs,
};
pub use data::{DEFAULT_SEED, DataSet, MAX_PAGE, TOTAL_CONTENT, TOTAL_USERS};
pub use error::DataSourceError;
pub use events::{DUPLICATE_RATE, generate_events, random_event};
pub use generator::{Generator, PUSH_TIMEOUT};
pub use sample::{
    CONTENT_CSV, CSV_CONTENT_TYPE, SAMPLE_CONTENT, SAMPLE_SESSIONS, SAMPLE_USERS, SESSIONS_CSV,
    SampleFile, USERS_CSV, WrittenFile, render_sample_data, sample_data_present, write_sample_data,
};
pub use service::{
    DataSourceService, EVENTS_DEFAULT, EVENTS_MAX, GENERATOR_STARTED, GENERATOR_STOPPED,
    SOURCE_EVENTS_DEFAULT, SOURCE_EVENTS_MAX, serve,
};
