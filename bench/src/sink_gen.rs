//! `sink-bench --generate N`: N synthetic usage records with a realistic spread (1,000 keys
//! in 50 teams with 300 users, 30 models over 8 providers, each key using three of them, 30
//! days ending now, 3 % errors, 10 % cache hits) written straight through the store in time
//! order, in batches of the usage writer's size. Then the rollups are compacted and a fixed
//! set of analytics queries is timed (median of 5), with the disk bytes per record.

use sluice::store::db::Pool;
use sluice::store::gov::{GovStore, SpendScope};
use sluice::store::query::{self, Bucket, Cursor, Dim, Filter};
use sluice::store::rollup::{self, Kept};
use sluice::store::{Store, UsageRow, UsageStore};
use std::time::Instant;

const KEYS: u64 = 1000;
const TEAMS: u64 = 50;
const USERS: u64 = 300;
const MODELS: u64 = 30;
const DAY: i64 = 86_400_000;

fn row(i: u64, n: u64, now: i64, span: i64, x: &mut u64) -> UsageRow {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    let r = *x;
    let key = r % KEYS;
    // Each key uses three models, the first most.
    let model = (key * 7 + [0, 0, 0, 1, 1, 2][((r >> 10) % 6) as usize] * 11) % MODELS;
    let status = match (r >> 14) % 100 {
        0 => 429,
        1 | 2 => 500,
        _ => 200,
    };
    let cache = match (r >> 21) % 10 {
        0 => Some("hit"),
        1..=4 => Some("miss"),
        _ => None,
    };
    let ts = now - span + i64::try_from(i * u64::try_from(span).unwrap_or(0) / n).unwrap_or(0);
    UsageRow {
        request_id: format!("req_{i:016x}"),
        ts_ms: ts,
        surface: if (r >> 30).is_multiple_of(5) {
            "anthropic.messages"
        } else {
            "openai.chat"
        }
        .into(),
        principal: format!("key_{key:04}"),
        requested_model: format!("model-{model:02}"),
        provider: Some(format!("provider-{}", model % 8)),
        deployment_model: Some(format!("deployment-{model:02}")),
        status,
        error_class: (status >= 400).then(|| {
            if status == 429 {
                "rate_limited".into()
            } else {
                "upstream_error".into()
            }
        }),
        streamed: (r >> 33).is_multiple_of(2),
        input_tokens: Some(50 + (r >> 35) % 3000),
        output_tokens: Some(10 + (r >> 40) % 800),
        cached_input_tokens: Some(0),
        reasoning_tokens: Some(0),
        latency_us: 80_000 + (r >> 20) % 4_000_000,
        ttft_us: Some(20_000 + (r >> 24) % 400_000),
        overhead_us: Some(150),
        attempts: 1,
        route_reason: Some("weighted".into()),
        key_id: Some(format!("key_{key:04}")),
        key_prefix: Some(format!("sk-sluice-{key:04}")),
        team: Some(format!("team-{:02}", key % TEAMS)),
        user: Some(format!("user-{:03}", key % USERS)),
        tags: Some(r#"{"app":"billing"}"#.into()),
        cost_micro_usd: Some(i64::try_from((r >> 44) % 20_000).unwrap_or(0)),
        catalog_version: Some("builtin-2026.12".into()),
        cache: cache.map(str::to_string),
        cost_saved_micro_usd: cache.filter(|c| *c == "hit").map(|_| 900),
        request_hash: Some(i64::try_from(r >> 2).unwrap_or(0)),
        ..UsageRow::default()
    }
}

async fn disk_bytes(store: &Store, sqlite_file: Option<&std::path::Path>) -> anyhow::Result<u64> {
    match (store.pool(), sqlite_file) {
        (Pool::Sqlite(p), Some(f)) => {
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(p)
                .await?;
            let mut n = 0;
            for suffix in ["", "-wal"] {
                n += std::fs::metadata(format!("{}{suffix}", f.display())).map_or(0, |m| m.len());
            }
            Ok(n)
        }
        (Pool::Postgres(p), _) => {
            let n: i64 = sqlx::query_scalar(
                "SELECT CAST(COALESCE(SUM(pg_total_relation_size(c.oid)), 0) AS BIGINT) \
                 FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace \
                 WHERE s.nspname = current_schema() AND c.relkind IN ('r', 'p')",
            )
            .fetch_one(p)
            .await?;
            Ok(u64::try_from(n).unwrap_or(0))
        }
        _ => Ok(0),
    }
}

async fn rollup_rows(store: &Store) -> anyhow::Result<i64> {
    Ok(match store.pool() {
        Pool::Sqlite(p) => {
            sqlx::query_scalar("SELECT COUNT(*) FROM usage_segments")
                .fetch_one(p)
                .await?
        }
        Pool::Postgres(p) => {
            sqlx::query_scalar("SELECT COUNT(*) FROM usage_segments")
                .fetch_one(p)
                .await?
        }
    })
}

/// Median of 5 runs, in milliseconds, and what the last run returned (rows).
async fn timed<F, Fut>(mut f: F) -> anyhow::Result<(f64, usize)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<usize>>,
{
    let mut ms = Vec::new();
    let mut rows = 0;
    for _ in 0..5 {
        let t = Instant::now();
        rows = f().await?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    Ok((ms[2], rows))
}

pub async fn generate(
    url: &str,
    sqlite_file: Option<&std::path::Path>,
    n: u64,
    batch: usize,
    days: f64,
    roll_beside: bool,
) -> anyhow::Result<()> {
    #[allow(clippy::cast_possible_truncation)]
    let span = ((days * DAY as f64) as i64).max(1);
    let store = Store::open(url).await?;
    let now = sluice::app::unix_ms();
    println!(
        "generating {n} records: {KEYS} keys, {TEAMS} teams, {USERS} users, {MODELS} models, {days} days; \
         batches of {batch}; store {}",
        store.pool().engine()
    );
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    // With `roll_beside`, the roller runs while the records are written, as in service
    // (there every `usage.maintenance_interval`, up to `usage.rollup_delay` behind): here
    // every 200 ms, up to the newest record written.
    let written = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(i64::MIN));
    let roller = roll_beside.then(|| {
        let (store, written) = (store.clone(), written.clone());
        tokio::spawn(async move {
            let mut rolled = 0u64;
            loop {
                let upto = written.load(std::sync::atomic::Ordering::Acquire);
                if upto == i64::MAX {
                    return Ok::<u64, anyhow::Error>(rolled + rollup::roll(&store, now + 1).await?);
                }
                if upto > i64::MIN {
                    rolled += rollup::roll(&store, upto).await?;
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        })
    });
    let t0 = Instant::now();
    let mut i = 0;
    while i < n {
        let rows: Vec<UsageRow> = (i..(i + batch as u64).min(n))
            .map(|j| row(j, n, now, span, &mut x))
            .collect();
        store.write_batch(&rows).await?;
        i += rows.len() as u64;
        if let Some(last) = rows.last() {
            written.store(last.ts_ms, std::sync::atomic::Ordering::Release);
        }
    }
    let write_s = t0.elapsed().as_secs_f64();
    written.store(i64::MAX, std::sync::atomic::Ordering::Release);
    let tr = Instant::now();
    let rolled = match roller {
        Some(task) => task.await??,
        None => rollup::roll(&store, now + 1).await?,
    };
    let roll_s = tr.elapsed().as_secs_f64();
    if roll_beside {
        let all_s = t0.elapsed().as_secs_f64();
        println!(
            "\nwritten and rolled (the roller beside the writer): {n} records in {all_s:.1} s = \
             {:.0} records/s; the roller finished {roll_s:.1} s after the last write",
            n as f64 / all_s
        );
    }
    let before_compaction = rollup_rows(&store).await?;
    let t1 = Instant::now();
    let mut buckets = 0;
    loop {
        let done = rollup::compact(&store, now + DAY, 5000).await?;
        buckets += done;
        if done == 0 {
            break;
        }
    }
    let compact_s = t1.elapsed().as_secs_f64();
    // The default retentions: minute rollups 2 days (raw 30 days and hour/day rollups 2 years
    // keep everything generated).
    let purged = rollup::purge(&store, now - 2 * DAY, now - 730 * DAY, 5000).await?;
    // What the engines' own upkeep does in service (autovacuum / autoanalyze on PostgreSQL):
    // reclaim what compaction deleted, refresh the planner's statistics. (Nothing written:
    // `--keep` timing an earlier run's store again.)
    match store.pool() {
        _ if n == 0 => {}
        Pool::Sqlite(p) => {
            sqlx::query("VACUUM").execute(p).await?;
        }
        Pool::Postgres(p) => {
            sqlx::raw_sql("VACUUM ANALYZE").execute(p).await?;
        }
    }
    let rollups = rollup_rows(&store).await?;
    let bytes = disk_bytes(&store, sqlite_file).await?;
    println!(
        "\nwrite: {n} records in {write_s:.1} s = {:.0} records/s (raw records, one transaction per batch)",
        n as f64 / write_s
    );
    if roll_beside {
        println!("roll: {rolled} records, beside the writer (above)");
    } else {
        println!(
            "roll: {rolled} records into the rollups in {roll_s:.1} s = {:.0} records/s",
            rolled as f64 / roll_s
        );
    }
    println!(
        "compaction: {buckets} buckets in {compact_s:.1} s; rollup segments {before_compaction} -> {rollups} ({:.3} per record) after {purged} minute segments older than 2 days went",
        rollups as f64 / n as f64
    );
    println!(
        "disk: {:.1} MB = {:.0} bytes per record (raw records, indexes and rollups)",
        bytes as f64 / 1e6,
        bytes as f64 / n as f64
    );

    let kept = Kept {
        minutes_from_ms: now - 2 * DAY,
    };
    let since = |d: i64| Filter {
        since_ms: Some(now - d),
        ..Filter::default()
    };
    println!(
        "\n{:<44} {:>10} {:>8}  from",
        "query (median of 5)", "ms", "rows"
    );
    let agg = |f: Filter, g: Vec<Dim>, b: Option<Bucket>| {
        let store = store.clone();
        move || {
            let (store, f, g) = (store.clone(), f.clone(), g.clone());
            async move { Ok(query::aggregate(&store, &f, &g, b, kept).await?.0.len()) }
        }
    };
    let set: Vec<(&str, Filter, Vec<Dim>, Option<Bucket>)> = vec![
        ("30 days by team", since(30 * DAY), vec![Dim::Team], None),
        (
            "7 days by model per hour",
            since(7 * DAY),
            vec![Dim::Model],
            Some(Bucket::Hour),
        ),
        (
            "one key's day by model",
            Filter {
                eq: vec![(Dim::Key, "key_0042".into())],
                ..since(DAY)
            },
            vec![Dim::Model],
            None,
        ),
        (
            "performance view, 30 days",
            since(30 * DAY),
            vec![Dim::Provider, Dim::Deployment],
            None,
        ),
        (
            "30 days by team and model",
            since(30 * DAY),
            vec![Dim::Team, Dim::Model],
            None,
        ),
        ("30 days by key", since(30 * DAY), vec![Dim::Key], None),
    ];
    for (name, f, g, b) in set {
        let source = match query::aggregate(&store, &f, &g, b, kept).await?.1 {
            rollup::Source::Rollups { cuboid, .. } => format!("rollups (set {cuboid})"),
            rollup::Source::Records => "raw records".to_string(),
        };
        let (ms, rows) = timed(agg(f, g, b)).await?;
        println!("{name:<44} {ms:>10.1} {rows:>8}  {source}");
    }
    // The request log: the newest page, a page 15 days deep (keyset cursor), one key's.
    let key = Filter {
        eq: vec![(Dim::Key, "key_0042".into())],
        ..Filter::default()
    };
    let deep = Some(Cursor {
        ts_ms: now - 15 * DAY,
        rowid: i64::MAX,
    });
    for (name, filter, cursor) in [
        ("request log, newest 50", Filter::default(), None),
        ("request log, 50 from 15 days deep", Filter::default(), deep),
        ("request log, one key's newest 50", key.clone(), None),
        ("request log, one key's 50 from 15 days deep", key, deep),
    ] {
        let (ms, rows) = timed(|| {
            let (store, filter) = (store.clone(), filter.clone());
            async move {
                Ok(query::requests(&store, &filter, cursor, 50, false)
                    .await?
                    .0
                    .len())
            }
        })
        .await?;
        println!("{name:<44} {ms:>10.1} {rows:>8}");
    }
    let month = now - 30 * DAY;
    let (ms, _) = timed(|| {
        let store = store.clone();
        async move {
            store
                .spend_since(SpendScope::Key, &["key_0042".to_string()], month)
                .await?;
            Ok(1)
        }
    })
    .await?;
    println!(
        "{:<44} {ms:>10.1} {:>8}",
        "budget seed: one key's 30-day spend", 1
    );
    // What a start seeds: every key's budget at once.
    let keys: Vec<String> = (0..KEYS).map(|k| format!("key_{k:04}")).collect();
    let (ms, n) = timed(|| {
        let (store, keys) = (store.clone(), keys.clone());
        async move {
            Ok(store
                .spend_since(SpendScope::Key, &keys, month)
                .await?
                .len())
        }
    })
    .await?;
    println!(
        "{:<44} {ms:>10.1} {n:>8}",
        "budget seed: every key's 30-day spend"
    );
    Ok(())
}
