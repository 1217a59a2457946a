//! Logging and metrics set-up. Logging: tracing to stderr, filtered by `SLUICE_LOG` (or `RUST_LOG`), `info` by default.

pub mod metrics;

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = std::env::var("SLUICE_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
