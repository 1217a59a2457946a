//! `sluice-bench`: builds release binaries, starts a zero-latency upstream (sluice-mock),
//! measures it directly as the baseline, then Sluice and peer gateways against the same
//! upstream, and prints (and writes) the comparison. `--smoke` runs a 2-second version.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a measuring tool: failing loudly is right
#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]

mod load;
mod procs;
mod report;
mod systems;

use anyhow::Context;
use clap::Parser;
use load::{HttpClient, Target};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use systems::System;

#[derive(Parser, Debug, Clone)]
#[command(about = "Sluice benchmark harness")]
pub struct Args {
    /// A ~2 second run of every code path (used by the test suite); no peers, no files written.
    #[arg(long)]
    smoke: bool,
    /// Directory with the sluice and sluice-mock binaries (default: <target>/release, built first).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Skip `cargo build --release`.
    #[arg(long)]
    no_build: bool,
    /// Skip the peer gateways.
    #[arg(long)]
    no_peers: bool,
    /// Seconds per throughput measurement.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Sequential requests for the one-at-a-time latency.
    #[arg(long, default_value_t = 3000)]
    sequential: usize,
    /// Where to write the Markdown report (full runs only).
    #[arg(long, default_value = "bench/RESULTS.md")]
    out: PathBuf,
    /// Internal: only send N sequential requests to URL (used by bench/callgrind.sh).
    #[arg(long, num_args = 2, value_names = ["N", "URL"])]
    drive: Option<Vec<String>>,
}

/// Core for the system under test; the load generator and the upstream share the other.
const GATEWAY_CPU: usize = 0;
const LOAD_CPU: usize = 1;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    pin_self();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

/// Re-runs this process under `taskset -c LOAD_CPU` once, so the load generator never
/// competes with the gateway for its core.
fn pin_self() {
    if std::env::var_os("SLUICE_BENCH_PINNED").is_some()
        || !std::path::Path::new("/usr/bin/taskset").exists()
    {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let status = std::process::Command::new("/usr/bin/taskset")
        .arg("-c")
        .arg(LOAD_CPU.to_string())
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .env("SLUICE_BENCH_PINNED", "1")
        .status();
    // If taskset cannot run, carry on unpinned.
    if let Ok(s) = status {
        std::process::exit(s.code().unwrap_or(1));
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    if let Some(d) = &args.drive {
        let n: usize = d[0].parse()?;
        // bench/callgrind.sh passes a virtual key for the governance scenario.
        let headers: Vec<(&str, String)> = std::env::var("SLUICE_BENCH_KEY")
            .map(|k| vec![("authorization", format!("Bearer {k}"))])
            .unwrap_or_default();
        let t = Target::new(&d[1], &headers, CHAT_BODY)?;
        // SLUICE_BENCH_RATE=R: open loop at R requests/s instead (N = seconds), for profiling.
        if let Some(rate) = std::env::var("SLUICE_BENCH_RATE")
            .ok()
            .and_then(|r| r.parse().ok())
        {
            let out =
                load::open_loop(&load::client(), &t, rate, Duration::from_secs(n as u64)).await;
            println!(
                "open loop {rate}/s for {n} s: {} ok, {} errors, p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
                out.ok, out.errors, out.ms(0.5), out.ms(0.99), out.ms(0.999), out.hist.max() as f64 / 1e6
            );
            return Ok(());
        }
        let out = load::one_at_a_time(&load::client(), &t, n).await;
        println!("sent {n}: {} ok, {} errors", out.ok, out.errors);
        return Ok(());
    }
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let target_dir =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo.join("target"), PathBuf::from);
    let bin_dir = args
        .bin_dir
        .clone()
        .unwrap_or_else(|| target_dir.join("release"));
    if !args.no_build && args.bin_dir.is_none() {
        eprintln!("building release binaries ...");
        let st = std::process::Command::new("cargo")
            .args(["build", "--release", "-p", "sluice", "-p", "sluice-mock"])
            .current_dir(&repo)
            .status()
            .context("cargo build")?;
        anyhow::ensure!(st.success(), "cargo build --release failed");
    }
    let sluice_bin = bin_dir.join("sluice");
    let mock_bin = bin_dir.join("sluice-mock");
    anyhow::ensure!(
        sluice_bin.exists() && mock_bin.exists(),
        "binaries not found in {}",
        bin_dir.display()
    );
    let plan = Plan::new(&args);
    let tmp = std::env::temp_dir().join(format!("sluice-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;

    // The upstream: sluice-mock on the load generator's core, 64 chunks per stream.
    let mock_args: Vec<String> = [
        "--listen",
        "127.0.0.1:0",
        "--threads",
        "1",
        "--chunks",
        "64",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mock = procs::spawn_announcing(
        "sluice-mock",
        procs::command(&mock_bin, &mock_args, Some(LOAD_CPU)),
        "sluice-mock listening on ",
    )?;
    let client = load::client();
    let mut results = Vec::new();

    // 1. Direct to the upstream: the baseline.
    let direct = System {
        name: "direct (mock)".into(),
        proc: None,
        base: mock.url.clone(),
        headers: vec![],
        model: "bench",
        paced_model: None,
        version: String::new(),
    };
    results.push(
        measure(
            &client,
            &direct,
            &plan,
            Some(("x-mock-chunk-delay-ms", "1")),
        )
        .await,
    );

    // 2. Sluice, pinned to its own core.
    let cfg = tmp.join("sluice.yaml");
    std::fs::write(&cfg, systems::sluice_config(&mock.url, &tmp))?;
    let sluice = systems::start_sluice(&sluice_bin, &cfg, Some(GATEWAY_CPU))?;
    let sluice_sys = System {
        name: "Sluice".into(),
        proc: Some(sluice),
        base: String::new(),
        headers: vec![],
        model: "bench",
        paced_model: Some("bench-paced"),
        version: env!("CARGO_PKG_VERSION").into(),
    };
    let sluice_sys = System {
        base: sluice_sys
            .proc
            .as_ref()
            .map(|p| p.url.clone())
            .unwrap_or_default(),
        ..sluice_sys
    };
    let mut r = measure(&client, &sluice_sys, &plan, None).await;
    r.extras = sluice_extras(&client, &sluice_sys, &plan, &sluice_bin, &cfg).await;
    results.push(r);
    if let Some(p) = sluice_sys.proc {
        p.stop();
    }

    // 2c. Sluice translating: OpenAI client -> Anthropic provider (the mock's /v1/messages).
    match systems::start_sluice(&sluice_bin, &cfg, Some(GATEWAY_CPU)) {
        Ok(p) => {
            let sys = System {
                name: "Sluice (c) OpenAI->Anthropic".into(),
                base: p.url.clone(),
                proc: Some(p),
                headers: vec![],
                model: "bench-anthropic",
                paced_model: Some("bench-anthropic-paced"),
                version: String::new(),
            };
            results.push(measure(&client, &sys, &plan, None).await);
            if let Some(p) = sys.proc {
                p.stop();
            }
        }
        Err(e) => eprintln!("(c) OpenAI->Anthropic: {e:#}"),
    }

    // 2d. Sluice with governance on: virtual key, RPM/TPM limits, budget, usage records.
    let gov_cfg = tmp.join("sluice-governed.yaml");
    std::fs::write(&gov_cfg, systems::sluice_governed_config(&mock.url, &tmp))?;
    let mut skipped = Vec::new();
    match systems::start_sluice(&sluice_bin, &gov_cfg, Some(GATEWAY_CPU)) {
        Ok(p) => match systems::create_bench_key(&client, &p.url).await {
            Ok(key) => {
                let sys = System {
                    name: "Sluice (d) governance".into(),
                    base: p.url.clone(),
                    proc: Some(p),
                    headers: vec![("authorization", format!("Bearer {key}"))],
                    model: "bench",
                    paced_model: None,
                    version: String::new(),
                };
                results.push(measure(&client, &sys, &plan, None).await);
                if let Some(p) = sys.proc {
                    p.stop();
                }
            }
            Err(e) => {
                skipped.push(format!("(d) governance on: {e:#}"));
                p.stop();
            }
        },
        Err(e) => skipped.push(format!("(d) governance on: {e:#}")),
    }

    // 2e. Cache hits: the same route with the response cache on; after the first request
    // every JSON and streamed request of the run is answered from memory, no upstream at all.
    let cache_cfg = tmp.join("sluice-cache.yaml");
    std::fs::write(
        &cache_cfg,
        format!(
            "{}cache: {{ttl: 1h, scope: global}}\n",
            systems::sluice_config(&mock.url, &tmp)
        ),
    )?;
    match systems::start_sluice(&sluice_bin, &cache_cfg, Some(GATEWAY_CPU)) {
        Ok(p) => {
            let sys = System {
                name: "Sluice (e) cache hit".into(),
                base: p.url.clone(),
                proc: Some(p),
                headers: vec![],
                model: "bench",
                paced_model: None,
                version: String::new(),
            };
            results.push(measure(&client, &sys, &plan, None).await);
            if let Some(p) = sys.proc {
                p.stop();
            }
        }
        Err(e) => skipped.push(format!("(e) cache hit: {e:#}")),
    }

    // 2f. Fleet mode: two replicas of (d) on the machine's PostgreSQL and Redis, both on the
    // gateway's core; the key is made through the second and the load goes to the first.
    match fleet(&client, &plan, &sluice_bin, &mock.url, &tmp).await {
        Ok(r) => results.push(r),
        Err(e) => skipped.push(format!("(f) fleet (PostgreSQL + Redis): {e:#}")),
    }

    // 3. Peers, one at a time on the same core, against the same upstream.
    if !args.smoke && !args.no_peers {
        match systems::start_litellm(&mock.url, &tmp, Some(GATEWAY_CPU)).await {
            Ok(sys) => {
                results.push(measure(&client, &sys, &plan, None).await);
                if let Some(p) = sys.proc {
                    p.stop();
                }
            }
            Err(e) => skipped.push(format!("LiteLLM: {e:#}")),
        }
        match systems::start_portkey(&mock.url, Some(GATEWAY_CPU)).await {
            Ok(sys) => {
                results.push(measure(&client, &sys, &plan, None).await);
                if let Some(p) = sys.proc {
                    p.stop();
                }
            }
            Err(e) => skipped.push(format!("Portkey: {e:#}")),
        }
    } else {
        skipped.push("peers: not run in this mode".into());
    }
    let mock_rss = mock.rss_mib();
    mock.stop();

    let rep = report::Report {
        results,
        skipped,
        plan,
        mock_rss,
        smoke: args.smoke,
    };
    let text = rep.render();
    println!("{text}");
    if !args.smoke {
        rep.write(&args.out)?;
        eprintln!("wrote {}", args.out.display());
    }
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}

const FLEET_PG: &str = "postgres://postgres@127.0.0.1:5432/test";
const FLEET_REDIS: &str = "redis://127.0.0.1:6379";

/// Scenario (f): two replicas on PostgreSQL (a schema of this run's own, dropped after) and
/// Redis (a key prefix of this run's own).
async fn fleet(
    client: &HttpClient,
    plan: &Plan,
    sluice_bin: &std::path::Path,
    mock: &str,
    tmp: &std::path::Path,
) -> anyhow::Result<Result1> {
    for (what, addr) in [
        ("PostgreSQL", "127.0.0.1:5432"),
        ("Redis", "127.0.0.1:6379"),
    ] {
        tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| anyhow::anyhow!("{what} at {addr} does not answer"))?
            .with_context(|| format!("no {what} at {addr}"))?;
    }
    let schema = format!("sluice_bench_{}", std::process::id());
    let admin = sqlx::PgPool::connect(FLEET_PG).await?;
    sqlx::raw_sql(&format!("CREATE SCHEMA {schema}"))
        .execute(&admin)
        .await?;
    let store = format!("{FLEET_PG}?options=-c%20search_path%3D{schema}");
    let result = async {
        let mut procs = Vec::new();
        for i in 0..2 {
            let cfg = tmp.join(format!("sluice-fleet-{i}.yaml"));
            std::fs::write(
                &cfg,
                systems::sluice_fleet_config(
                    mock,
                    &store,
                    FLEET_REDIS,
                    &schema,
                    &tmp.join(format!("fleet-{i}.spill.jsonl")),
                ),
            )?;
            procs.push(systems::start_sluice(sluice_bin, &cfg, Some(GATEWAY_CPU))?);
        }
        let other = procs.pop().expect("two replicas");
        let key = systems::create_bench_key(client, &other.url).await?;
        // The first replica learns the key from the store (or Redis's change broadcast).
        tokio::time::sleep(Duration::from_millis(600)).await;
        let first = procs.pop().expect("two replicas");
        let sys = System {
            name: "Sluice (f) fleet: 2 replicas, PostgreSQL + Redis".into(),
            base: first.url.clone(),
            proc: Some(first),
            headers: vec![("authorization", format!("Bearer {key}"))],
            model: "bench",
            paced_model: None,
            version: String::new(),
        };
        let r = measure(client, &sys, plan, None).await;
        if let Some(p) = sys.proc {
            p.stop();
        }
        other.stop();
        anyhow::ensure!(r.max.ok > 0, "no request succeeded");
        Ok(r)
    }
    .await;
    let _ = sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&admin)
        .await;
    forget_redis_prefix(&schema).await;
    result
}

/// Deletes the run's Redis keys (`{prefix}:...`).
async fn forget_redis_prefix(prefix: &str) {
    let Ok(client) = redis::Client::open(FLEET_REDIS) else {
        return;
    };
    let Ok(mut c) = client.get_multiplexed_async_connection().await else {
        return;
    };
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{{{prefix}}}*"))
        .query_async(&mut c)
        .await
        .unwrap_or_default();
    if !keys.is_empty() {
        let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query_async(&mut c).await;
    }
}

pub const CHAT_BODY: &str =
    r#"{"model":"bench","messages":[{"role":"user","content":"Say hello to the benchmark."}]}"#;

fn body(model: &str, stream: bool) -> String {
    format!(
        r#"{{"model":"{model}","stream":{stream},"messages":[{{"role":"user","content":"Say hello to the benchmark."}}]}}"#
    )
}

/// How long and how hard to push.
#[derive(Clone, Debug)]
pub struct Plan {
    pub sequential: usize,
    pub seconds: f64,
    pub rates: Vec<u64>,
    pub stream_sequential: usize,
    pub paced_sequential: usize,
    pub open_streams: usize,
    pub cold_starts: usize,
    pub smoke: bool,
}

impl Plan {
    fn new(a: &Args) -> Self {
        if a.smoke {
            Plan {
                sequential: 50,
                seconds: 0.25,
                rates: vec![200],
                stream_sequential: 10,
                paced_sequential: 2,
                open_streams: 20,
                cold_starts: 1,
                smoke: true,
            }
        } else {
            Plan {
                sequential: a.sequential,
                seconds: a.seconds,
                rates: vec![500, 1000, 2000, 5000],
                stream_sequential: 500,
                paced_sequential: 20,
                open_streams: 1000,
                cold_starts: 5,
                smoke: false,
            }
        }
    }
    fn dur(&self) -> Duration {
        Duration::from_secs_f64(self.seconds)
    }
}

pub struct Result1 {
    pub name: String,
    pub version: String,
    pub sequential: load::Outcome,
    pub max: load::Outcome,
    pub max_conns: usize,
    pub cpu_us_per_req: Option<f64>,
    pub rss_idle: Option<f64>,
    pub rss_load: Option<f64>,
    pub rss_after: Option<f64>,
    pub rates: Vec<(u64, load::Outcome)>,
    pub stream_ttfb_ms: f64,
    pub stream_total_ms: f64,
    pub stream_gap_ms: Option<f64>,
    pub stream_max: load::Outcome,
    pub extras: Vec<(String, String)>,
}

async fn measure(
    client: &HttpClient,
    sys: &System,
    plan: &Plan,
    paced_header: Option<(&'static str, &'static str)>,
) -> Result1 {
    eprintln!("measuring {} ...", sys.name);
    let json = Target::new(&sys.chat_url(), &sys.headers, &body(sys.model, false)).expect("target");
    let stream =
        Target::new(&sys.chat_url(), &sys.headers, &body(sys.model, true)).expect("target");
    // Warm up connections and lazy paths.
    let _ = load::one_at_a_time(client, &json, 200.min(plan.sequential / 4)).await;
    let rss_idle = sys.proc.as_ref().map(procs::Proc::rss_mib);

    let sequential = load::one_at_a_time(client, &json, plan.sequential).await;

    // Max throughput: closed loop; fewer connections until p99 < 10 ms and errors < 1 %.
    let mut conns = 32;
    let (max, cpu_us_per_req, rss_load) = loop {
        let cpu0 = sys.proc.as_ref().map(procs::Proc::cpu);
        let pid = sys.proc.as_ref().map(procs::Proc::pid);
        let sampler = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            pid.map(|p| procs::rss_kib(p) as f64 / 1024.0)
        });
        let out = load::closed_loop(client, &json, conns, plan.dur()).await;
        let rss = sampler.await.ok().flatten();
        let cpu = match (cpu0, sys.proc.as_ref().map(procs::Proc::cpu)) {
            (Some(a), Some(b)) if out.ok > 0 => Some((b - a).as_secs_f64() * 1e6 / out.ok as f64),
            _ => None,
        };
        if (out.ms(0.99) < 10.0 && out.error_rate() < 0.01) || conns <= 1 || plan.smoke {
            break (out, cpu, rss);
        }
        conns /= 2;
    };
    let rss_after = sys.proc.as_ref().map(procs::Proc::rss_mib);

    let mut rates = Vec::new();
    for &rate in &plan.rates {
        if (rate as f64) > max.rps() * 1.5 {
            continue; // far past saturation: the queue only grows
        }
        // Let the previous phase's after-work (e.g. usage records still being written) finish,
        // so a fixed-rate phase measures that rate alone.
        settle_down(sys.proc.as_ref()).await;
        rates.push((rate, load::open_loop(client, &json, rate, plan.dur()).await));
    }

    let mut ttfb = load::histogram();
    let mut total = load::histogram();
    for _ in 0..plan.stream_sequential {
        let s = load::stream_once(client, &stream).await;
        if s.ok {
            let _ = ttfb.record(load::nanos(s.ttfb));
            let _ = total.record(load::nanos(s.total));
        }
    }
    let stream_gap_ms = match (sys.paced_model, paced_header) {
        (Some(m), _) => Some(
            paced_gap(
                client,
                &Target::new(&sys.chat_url(), &sys.headers, &body(m, true)).expect("t"),
                plan,
            )
            .await,
        ),
        (None, Some((k, v))) => {
            let mut h = sys.headers.clone();
            h.push((k, v.to_string()));
            Some(
                paced_gap(
                    client,
                    &Target::new(&sys.chat_url(), &h, &body(sys.model, true)).expect("t"),
                    plan,
                )
                .await,
            )
        }
        _ => None,
    };
    let stream_max = load::closed_loop(client, &stream, conns.min(32), plan.dur()).await;
    Result1 {
        name: sys.name.clone(),
        version: sys.version.clone(),
        sequential,
        max,
        max_conns: conns,
        cpu_us_per_req,
        rss_idle,
        rss_load,
        rss_after,
        rates,
        // NaN (printed "–") when no stream succeeded.
        stream_ttfb_ms: if ttfb.is_empty() {
            f64::NAN
        } else {
            ttfb.value_at_quantile(0.5) as f64 / 1e6
        },
        stream_total_ms: if total.is_empty() {
            f64::NAN
        } else {
            total.value_at_quantile(0.5) as f64 / 1e6
        },
        stream_gap_ms,
        stream_max,
        extras: Vec::new(),
    }
}

/// Waits (at most 20 s) until the process uses less than 2 % of a core.
async fn settle_down(p: Option<&procs::Proc>) {
    let Some(p) = p else { return };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = p.cpu();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = p.cpu();
        if now.saturating_sub(last) <= Duration::from_millis(10) {
            return;
        }
        last = now;
    }
}

/// Mean gap between chunks when the upstream paces them 1 ms apart.
async fn paced_gap(client: &HttpClient, t: &Target, plan: &Plan) -> f64 {
    let mut gaps = Vec::new();
    for _ in 0..plan.paced_sequential {
        let s = load::stream_once(client, t).await;
        // Skip the first gap (role chunk to first content chunk has no pacing guarantee).
        gaps.extend(s.gaps.iter().skip(1).map(|g| g.as_secs_f64() * 1e3));
    }
    if gaps.is_empty() {
        return f64::NAN;
    }
    gaps.iter().sum::<f64>() / gaps.len() as f64
}

/// Sluice-only figures: RSS with many open streams, cold start, binary size.
async fn sluice_extras(
    client: &HttpClient,
    sys: &System,
    plan: &Plan,
    bin: &std::path::Path,
    cfg: &std::path::Path,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    // Open streams on a fresh gateway: the process that just served the load phases keeps
    // freed heap (glibc returns it lazily), which would be counted against the streams.
    if sys.proc.is_some() {
        if let Ok(p) = systems::start_sluice(bin, cfg, Some(GATEWAY_CPU)) {
            let url = format!("{}/v1/chat/completions", p.url);
            let hold = Target::new(&url, &[], &body("bench-hold", true)).expect("t");
            let mut tasks = Vec::new();
            for _ in 0..plan.open_streams {
                let c = client.clone();
                let t = hold.clone();
                tasks.push(tokio::spawn(
                    async move { load::stream_once(&c, &t).await.ok },
                ));
            }
            tokio::time::sleep(Duration::from_millis(if plan.smoke { 200 } else { 1500 })).await;
            let rss = p.rss_mib();
            let mut ok = 0;
            for t in tasks {
                if matches!(t.await, Ok(true)) {
                    ok += 1;
                }
            }
            out.push((
                format!(
                    "RSS with {} open streams (fresh process)",
                    plan.open_streams
                ),
                format!("{rss:.1} MiB ({ok} completed)"),
            ));
            p.stop();
        }
    }
    // The same gateway on the load generator's core: what is left of the added latency
    // when no request has to wake another core (cross-core wake-ups dominate otherwise).
    if let Ok(p) = systems::start_sluice(bin, cfg, Some(LOAD_CPU)) {
        let t = Target::new(
            &format!("{}/v1/chat/completions", p.url),
            &[],
            &body("bench", false),
        )
        .expect("t");
        let _ = load::one_at_a_time(client, &t, plan.sequential / 4).await;
        let o = load::one_at_a_time(client, &t, plan.sequential).await;
        out.push((
            "one at a time, gateway on the client's core: p50 / p99".into(),
            format!("{:.3} / {:.3} ms", o.ms(0.5), o.ms(0.99)),
        ));
        // Routing cost: the same, to a 10-deployment group (weighted, then cheapest_capable,
        // which also parses the body for the request's needs).
        for (model, label) in [
            ("bench-10", "10-deployment group, weighted"),
            ("bench-10-cc", "10-deployment group, cheapest_capable"),
        ] {
            let t = Target::new(
                &format!("{}/v1/chat/completions", p.url),
                &[],
                &body(model, false),
            )
            .expect("t");
            let _ = load::one_at_a_time(client, &t, plan.sequential / 4).await;
            let o = load::one_at_a_time(client, &t, plan.sequential).await;
            out.push((
                format!("one at a time, gateway on the client's core, {label}: p50 / p99"),
                format!(
                    "{:.3} / {:.3} ms ({} errors)",
                    o.ms(0.5),
                    o.ms(0.99),
                    o.errors
                ),
            ));
        }
        p.stop();
    }
    // Cold start: exec to the first 200 from /health/ready, median of a few.
    let mut starts = Vec::new();
    for _ in 0..plan.cold_starts {
        let t0 = Instant::now();
        if let Ok(p) = systems::start_sluice(bin, cfg, Some(GATEWAY_CPU)) {
            let uri: http::Uri = format!("{}/health/ready", p.url).parse().expect("uri");
            loop {
                let req = http::Request::get(uri.clone())
                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                    .expect("req");
                if let Ok(r) = client.request(req).await {
                    if r.status().is_success() {
                        break;
                    }
                }
                if t0.elapsed() > Duration::from_secs(10) {
                    break;
                }
            }
            starts.push(t0.elapsed().as_secs_f64() * 1e3);
            p.stop();
        }
    }
    starts.sort_by(f64::total_cmp);
    if let Some(m) = starts.get(starts.len() / 2) {
        out.push(("cold start (exec to ready)".into(), format!("{m:.1} ms")));
    }
    if let Ok(meta) = std::fs::metadata(bin) {
        out.push((
            "binary size".into(),
            format!("{:.1} MiB", meta.len() as f64 / 1048576.0),
        ));
    }
    out
}
