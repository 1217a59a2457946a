//! The `sluice-mock` binary: flags and environment into `MockSettings`, a runtime, and `serve`.

use std::io::Write;
use std::net::SocketAddr;
use std::num::NonZeroUsize;

use anyhow::Context;
use clap::Parser;
use sluice_mock::{serve, Mock, MockSettings};
use tracing_subscriber::EnvFilter;

/// A fake AI provider speaking the OpenAI wire format, with latency and fault injection.
/// Every flag can also be set as `SLUICE_MOCK_<FLAG>`; per-request `x-mock-*` headers win.
#[derive(Parser, Debug)]
#[command(name = "sluice-mock", version, about)]
struct Args {
    /// Address to listen on; port 0 picks a free port (the chosen one is printed).
    #[arg(long, env = "SLUICE_MOCK_LISTEN", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Tokio worker threads [default: available parallelism].
    #[arg(long, env = "SLUICE_MOCK_THREADS")]
    threads: Option<NonZeroUsize>,
    /// Delay before response headers, in milliseconds.
    #[arg(long, env = "SLUICE_MOCK_LATENCY_MS", default_value_t = 0)]
    latency_ms: u64,
    /// Streams: delay before the first event, in milliseconds.
    #[arg(long, env = "SLUICE_MOCK_TTFT_MS", default_value_t = 0)]
    ttft_ms: u64,
    /// Streams: number of content pieces.
    #[arg(long, env = "SLUICE_MOCK_CHUNKS", default_value_t = 8)]
    chunks: usize,
    /// Streams: delay between events, in milliseconds.
    #[arg(long, env = "SLUICE_MOCK_CHUNK_DELAY_MS", default_value_t = 0)]
    chunk_delay_ms: u64,
    /// Answer every provider request with this error status.
    #[arg(long, env = "SLUICE_MOCK_STATUS")]
    status: Option<u16>,
    /// Fraction (0..1) of requests that fail with --failure-status.
    #[arg(long, env = "SLUICE_MOCK_FAILURE_RATE", default_value_t = 0.0, value_parser = rate)]
    failure_rate: f64,
    /// Status for --failure-rate failures.
    #[arg(long, env = "SLUICE_MOCK_FAILURE_STATUS", default_value_t = 500)]
    failure_status: u16,
    /// Fraction (0..1) of requests answered with a TCP reset.
    #[arg(long, env = "SLUICE_MOCK_RESET_RATE", default_value_t = 0.0, value_parser = rate)]
    reset_rate: f64,
    /// Stall every request: streams after this many events, JSON replies never.
    #[arg(long, env = "SLUICE_MOCK_STALL_AFTER")]
    stall_after: Option<usize>,
    /// Embedding length when a request does not ask for `dimensions`.
    #[arg(long, env = "SLUICE_MOCK_EMBEDDING_DIMS", default_value_t = 16)]
    embedding_dims: usize,
}

/// A fraction between 0 and 1.
fn rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if (0.0..=1.0).contains(&rate) => Ok(rate),
        _ => Err(format!("expected a number between 0 and 1, got {text:?}")),
    }
}

impl Args {
    fn settings(&self) -> MockSettings {
        MockSettings {
            latency_ms: self.latency_ms,
            ttft_ms: self.ttft_ms,
            chunks: self.chunks,
            chunk_delay_ms: self.chunk_delay_ms,
            status: self.status,
            failure_rate: self.failure_rate,
            failure_status: self.failure_status,
            reset_rate: self.reset_rate,
            stall_after: self.stall_after,
            embedding_dims: self.embedding_dims,
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .init();
    let threads = args
        .threads
        .or_else(|| std::thread::available_parallelism().ok())
        .map_or(1, NonZeroUsize::get);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let mock = Mock::new(args.settings());
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "sluice-mock listening on http://{addr}")?;
        stdout.flush()?;
    }
    tracing::info!(%addr, ?args, "serving");
    tokio::select! {
        result = serve(listener, mock) => result.context("serving"),
        signal = shutdown_signal() => {
            signal?;
            tracing::info!("shutting down");
            Ok(())
        }
    }
}

async fn shutdown_signal() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("waiting for SIGINT"),
        _ = terminate.recv() => Ok(()),
    }
}
