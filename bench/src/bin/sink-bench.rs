//! The usage sink at a fixed offered rate: records handed to `UsageSink::record` (what the
//! settle step does) at `--rate` per second for `--seconds`, written by the real writer into a
//! real SQLite file (or the PostgreSQL database of `--store postgres://...`). Prints one row per second (written rate, queue depth, spills, RSS) and
//! fails when the writer falls behind or memory keeps growing.
//!
//! `cargo run --release -p sluice-bench --bin sink-bench -- --rate 100000 --seconds 10`
//! `... --bin sink-bench -- --store postgres://postgres@127.0.0.1:5432/test`

#[path = "../sink_gen.rs"]
mod sink_gen;

use anyhow::{bail, Context};
use clap::Parser;
use sluice::store::Store;
use sluice::store::{SinkConfig, UsageRecord, UsageWriter};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
struct Args {
    /// Records offered per second.
    #[arg(long, default_value_t = 100_000)]
    rate: u64,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// A few-second run (for ./test.sh).
    #[arg(long)]
    smoke: bool,
    /// The store to write into: a fresh SQLite file by default, or a `postgres://` URL (its
    /// `usage_records` table grows by what the run writes).
    #[arg(long)]
    store: Option<String>,
    /// Generator mode: write this many synthetic records (30 days, 1,000 keys) straight
    /// through the store, then time the analytics queries (bench/README.md).
    #[arg(long)]
    generate: Option<u64>,
    /// Records per store transaction in generator mode (the usage writer's default).
    #[arg(long, default_value_t = 4000)]
    batch: usize,
    /// Generator mode: the days the records are spread over, ending now (30 by default; a
    /// fraction of a day shows live density, e.g. 0.01 = 14 minutes).
    #[arg(long, default_value_t = 30.0)]
    days: f64,
    /// Generator mode on SQLite: use (and keep) this database file instead of a fresh one
    /// that is deleted afterwards. `--generate 0 --keep FILE` times the queries again on
    /// what an earlier run left.
    #[arg(long)]
    keep: Option<std::path::PathBuf>,
    /// Generator mode: run the roller while writing (as in service) instead of after, and
    /// report records written and rolled per second.
    #[arg(long)]
    roll_beside: bool,
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// CPU seconds this process used (user + system), from /proc/self/stat.
fn cpu_secs() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
            Some(ticks / 100.0)
        })
        .unwrap_or(0.0)
}

fn sample_record(n: u64, shared: &[Arc<str>; 7]) -> UsageRecord {
    let [provider, model, key_id, prefix, team, tags, catalog] = shared;
    UsageRecord {
        request_id: format!("req_{n:016x}"),
        ts_ms: 1_790_000_000_000 + i64::try_from(n / 100).unwrap_or(0),
        surface: "openai.chat",
        principal: "key".into(),
        requested_model: "chat".into(),
        provider: Some(provider.clone()),
        deployment_model: Some(model.clone()),
        status: 200,
        streamed: n.is_multiple_of(3),
        input_tokens: Some(120 + n % 50),
        output_tokens: Some(40 + n % 30),
        cached_input_tokens: Some(0),
        reasoning_tokens: Some(0),
        latency_us: 250_000 + n % 1000,
        ttft_us: Some(80_000),
        overhead_us: Some(180),
        attempts: 1,
        route_reason: Some("weighted"),
        key_id: Some(key_id.clone()),
        key_prefix: Some(prefix.clone()),
        team: Some(team.clone()),
        tags: Some(tags.clone()),
        cost_micro_usd: Some(42),
        catalog_version: Some(catalog.clone()),
        ..UsageRecord::default()
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.smoke {
        args.rate = args.rate.min(20_000);
        args.seconds = 2;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let dir = tempfile_dir()?;
    let db = dir.join("bench.db");
    if let Some(n) = args.generate {
        let n = if args.smoke { n.min(20_000) } else { n };
        let result = match &args.store {
            // A schema of its own, so the database's other tables are left alone.
            Some(pg) => {
                let admin = sqlx::PgPool::connect(pg).await?;
                sqlx::raw_sql(
                    "DROP SCHEMA IF EXISTS sink_bench_gen CASCADE; CREATE SCHEMA sink_bench_gen",
                )
                .execute(&admin)
                .await?;
                let sep = if pg.contains('?') { '&' } else { '?' };
                let url = format!("{pg}{sep}options=-c%20search_path%3Dsink_bench_gen");
                let r = sink_gen::generate(&url, None, n, args.batch, args.days, args.roll_beside)
                    .await;
                sqlx::raw_sql("DROP SCHEMA IF EXISTS sink_bench_gen CASCADE")
                    .execute(&admin)
                    .await?;
                r
            }
            None => {
                let db = args.keep.clone().unwrap_or(db);
                sink_gen::generate(
                    &format!("sqlite://{}", db.display()),
                    Some(&db),
                    n,
                    args.batch,
                    args.days,
                    args.roll_beside,
                )
                .await
            }
        };
        let _ = std::fs::remove_dir_all(&dir);
        return result;
    }
    let url = args
        .store
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", db.display()));
    let store = Store::open(&url).await.context("opening the store")?;
    println!("store: {}", store.pool().engine());
    let tracker = tokio_util::task::TaskTracker::new();
    let cfg = SinkConfig {
        spill_path: Some(dir.join("bench.db.usage-spill.jsonl")),
        batch_size: std::env::var("SINK_BENCH_BATCH")
            .ok()
            .and_then(|b| b.parse().ok())
            .unwrap_or(SinkConfig::default().batch_size),
        ..SinkConfig::default()
    };
    println!(
        "usage sink: {} records/s offered for {} s; batch {}, flush {:?}, queue {}",
        args.rate, args.seconds, cfg.batch_size, cfg.flush_interval, cfg.queue_capacity
    );
    let spill_path = cfg.spill_path.clone();
    let (sink, writer) = UsageWriter::start(store.clone(), &tracker, cfg);

    let shared: [Arc<str>; 7] = [
        Arc::from("openai"),
        Arc::from("gpt-4o-mini"),
        Arc::from("key_0123456789abcdef"),
        Arc::from("sk-sluice-abc1"),
        Arc::from("eng"),
        Arc::from(r#"{"app":"billing"}"#),
        Arc::from("builtin-2026.12"),
    ];

    // The store alone: 100k rows in batches of 1000, straight into the database.
    let probe_rows: u64 = if args.smoke { 10_000 } else { 100_000 };
    {
        use sluice::store::{UsageRow, UsageStore};
        let probe_url = args
            .store
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", dir.join("probe.db").display()));
        let probe = Store::open(&probe_url).await?;
        let rows: Vec<UsageRow> = (0..probe_rows)
            .map(|n| UsageRow::from(sample_record(n, &shared)))
            .collect();
        let (t0, c0) = (Instant::now(), cpu_secs());
        for chunk in rows.chunks(1000) {
            probe.write_batch(chunk).await?;
        }
        let (wall, cpu) = (t0.elapsed().as_secs_f64(), cpu_secs() - c0);
        let n = probe_rows as f64;
        println!(
            "store alone: {probe_rows} rows in {wall:.2} s = {:.0} rows/s wall; {:.1} us CPU per row ({:.0} rows per CPU-second)",
            n / wall,
            cpu * 1e6 / n,
            n / cpu.max(1e-9)
        );
    }

    // The producer: one task, a tick every millisecond, rate/1000 records a tick.
    let per_tick = (args.rate / 1000).max(1);
    let total = per_tick * 1000 * args.seconds;
    let cpu0 = cpu_secs();
    let producer = {
        let sink = sink.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut n: u64 = 0;
            while n < total {
                tick.tick().await;
                for _ in 0..per_tick {
                    n += 1;
                    sink.record(sample_record(n, &shared));
                }
            }
            n
        })
    };

    println!(
        "\n{:>4}  {:>10}  {:>12}  {:>12}  {:>11}  {:>9}  {:>8}",
        "s", "offered", "written", "written/s", "queue", "spilled", "RSS MiB"
    );
    let base = store.usage_count().await?;
    let start = Instant::now();
    let mut last_written = 0i64;
    let mut rss = Vec::new();
    let mut rates = Vec::new();
    for s in 1..=args.seconds {
        tokio::time::sleep_until(tokio::time::Instant::from_std(
            start + Duration::from_secs(s),
        ))
        .await;
        let written = store.usage_count().await? - base;
        let spilled = spill_path.as_ref().map_or(0, |p| {
            let replay = std::path::PathBuf::from(format!("{}.replay", p.display()));
            [p.clone(), replay]
                .iter()
                .filter_map(|f| std::fs::read_to_string(f).ok())
                .map(|t| t.lines().count())
                .sum::<usize>()
        });
        let r = rss_mib();
        rss.push(r);
        rates.push(written - last_written);
        println!(
            "{s:>4}  {:>10}  {written:>12}  {:>12}  {:>11}  {spilled:>9}  {r:>8.1}",
            per_tick * 1000 * s,
            written - last_written,
            sink.depth(),
        );
        last_written = written;
    }
    let offered = producer.await?;
    let drain = Instant::now();
    writer.close().await;
    let written = store.usage_count().await? - base;
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "CPU: {:.1} us per record end to end (record + queue + batch + store client), {:.2} cores at the offered rate",
        (cpu_secs() - cpu0) * 1e6 / offered as f64,
        (cpu_secs() - cpu0) / elapsed
    );
    // Spilled records wait in the spill file (or its `.replay` twin) for the next start.
    let spilled = spill_path.as_ref().map_or(0, |p| {
        let replay = std::path::PathBuf::from(format!("{}.replay", p.display()));
        [p.clone(), replay]
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .map(|t| t.lines().count() as u64)
            .sum()
    });
    let written = u64::try_from(written).unwrap_or(0);
    println!(
        "\noffered {offered} records in {elapsed:.2} s: {written} written to the store ({:.0} records/s), {spilled} spilled, drain at close {:?}",
        written as f64 / elapsed,
        drain.elapsed()
    );
    let _ = std::fs::remove_dir_all(&dir);
    if written + spilled != offered {
        bail!("{offered} offered but {written} written and {spilled} spilled: records lost");
    }
    if spilled > 0 && !args.smoke {
        bail!("the store did not keep up: {spilled} records went to the spill file");
    }
    // Memory must level off: the last second's RSS within 32 MiB of the second second's.
    if rss.len() >= 4 {
        let growth = rss[rss.len() - 1] - rss[1];
        println!("RSS growth from second 2 to the end: {growth:+.1} MiB");
        if growth > 32.0 && !args.smoke {
            bail!("memory kept growing ({growth:+.1} MiB)");
        }
    }
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let d = std::env::temp_dir().join(format!("sluice-sink-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
