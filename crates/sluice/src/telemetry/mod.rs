//! Logging and metrics set-up. Logging: tracing to stderr, filtered by `SLUICE_LOG` (or
//! `RUST_LOG`), `info` by default; `SLUICE_LOG_FORMAT=json` writes one JSON object a line,
//! each request's lines carrying its `request_id` (never secrets, never prompt text).

pub mod metrics;
pub mod otel;

use std::sync::atomic::{AtomicBool, Ordering};
use tracing_subscriber::EnvFilter;

static JSON: AtomicBool = AtomicBool::new(false);

/// True when logs are JSON lines (then every request gets a span carrying its id).
pub fn json_logs() -> bool {
    JSON.load(Ordering::Relaxed)
}

pub fn init() {
    let filter = std::env::var("SLUICE_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let json = std::env::var("SLUICE_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    if json {
        JSON.store(true, Ordering::Relaxed);
        let _ = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_target(false)
            .try_init();
    } else {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_target(false)
            .try_init();
    }
}
