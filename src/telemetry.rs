//! Telemetry, set up once per process: a `tracing` subscriber writing to
//! stderr, with the level from `RUST_LOG` (default `info`).

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Keeps telemetry running; dropping it flushes what is buffered. Hold it
/// in `main` until the process ends.
#[derive(Debug)]
#[must_use = "telemetry stops when the guard is dropped"]
pub struct TelemetryGuard {
    _private: (),
}

/// Installs the process-wide subscriber for the service `service_name`
/// ("vesper-storage", ...). Call once, first thing in `main`; later calls
/// leave the first subscriber in place.
pub fn init(service_name: &'static str) -> TelemetryGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(
            fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(colour_wanted())
                .with_target(false),
        )
        .try_init()
        .is_ok();
    if installed {
        tracing::debug!(service = service_name, "telemetry ready");
    }
    TelemetryGuard { _private: () }
}

/// Colours only on a terminal, and never when `NO_COLOR` is set
/// (<https://no-color.org>).
fn colour_wanted() -> bool {
    use std::io::IsTerminal;
    std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal()
}
