//! The usage sink under failure, with the real binary: `kill -9` loses at most one flush
//! interval of records; a locked (down) store makes records spill to the JSONL file and
//! come back once it answers, or at the next start, none lost and none twice.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

fn config(db: &Path, usage: &str) -> String {
    format!(
        r#"
server: {{public_metrics: true}}
store: {{url: "sqlite://{}"}}
usage: {usage}
providers:
  - {{name: local, kind: mock}}
models:
  - {{name: mock-1, deployments: [{{provider: local, model: mock-1}}]}}
"#,
        db.display()
    )
}

async fn ids_in(db: &Path) -> Vec<String> {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let ids: Vec<String> = sqlx::query_scalar("SELECT request_id FROM usage_records")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    ids
}

async fn send(gw: &Gateway, id: &str) {
    let r = request(
        "POST",
        &format!("{}/v1/chat/completions", gw.url),
        &[("content-type", "application/json"), ("x-request-id", id)],
        CHAT,
    )
    .await;
    assert_eq!(r.status, 200);
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.split([' ', '{']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_at_most_one_flush_interval_of_records() {
    const FLUSH: Duration = Duration::from_millis(100);
    // A write takes a few ms; allow generously for a busy machine.
    const SLACK: Duration = Duration::from_millis(400);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("k.db");
    let mut gw = Gateway::start(&config(&db, "{flush_interval: 100ms}"));
    let mut answered: Vec<(String, Instant)> = Vec::new();
    let until = Instant::now() + Duration::from_millis(1500);
    let mut n = 0;
    while Instant::now() < until {
        n += 1;
        let id = format!("k-{n}");
        send(&gw, &id).await;
        answered.push((id, Instant::now()));
    }
    gw.child.kill().unwrap(); // SIGKILL
    let killed = Instant::now();
    gw.child.wait().unwrap();

    let stored: HashSet<String> = ids_in(&db).await.into_iter().collect();
    let lost: Vec<&(String, Instant)> = answered
        .iter()
        .filter(|(id, _)| !stored.contains(id))
        .collect();
    let oldest_lost = lost.iter().map(|(_, at)| killed.duration_since(*at)).max();
    println!(
        "kill -9: {} requests answered, {} records lost, oldest lost answered {:?} before the kill (flush_interval {FLUSH:?})",
        answered.len(),
        lost.len(),
        oldest_lost
    );
    assert!(
        stored.len() > answered.len() / 2,
        "the sink wrote while running"
    );
    if let Some(age) = oldest_lost {
        assert!(
            age <= FLUSH + SLACK,
            "a record answered {age:?} before kill -9 was lost; the bound is the flush interval ({FLUSH:?}) plus one write"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_store_spills_then_replays_and_nothing_is_lost_or_doubled() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let spill = dir.path().join("s.db.usage-spill.jsonl");
    let usage = "{flush_interval: 50ms, store_timeout: 200ms, retry_interval: 200ms}";
    let cfg = config(&db, usage);
    let gw = Gateway::start(&cfg);
    for i in 0..5 {
        send(&gw, &format!("before-{i}")).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ids_in(&db).await.len(), 5);

    // The store goes down: another process holds its write lock.
    let mut lock = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut lock)
        .await
        .unwrap();
    for i in 0..20 {
        send(&gw, &format!("down-{i}")).await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let m = request("GET", &format!("{}/metrics", gw.url), &[], "").await;
    let text = String::from_utf8_lossy(&m.body).to_string();
    assert_eq!(metric(&text, "sluice_usage_spilled_total"), 20.0, "{text}");
    let spilled_lines = [
        spill.clone(),
        dir.path().join("s.db.usage-spill.jsonl.replay"),
    ]
    .iter()
    .filter_map(|p| std::fs::read_to_string(p).ok())
    .map(|t| t.lines().count())
    .sum::<usize>();
    assert_eq!(spilled_lines, 20);

    // It comes back: the spilled records are replayed within a retry interval or two.
    sqlx::query("ROLLBACK").execute(&mut lock).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while ids_in(&db).await.len() < 25 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ids_in(&db).await.len(), 25);
    assert!(!spill.exists());
    let m = request("GET", &format!("{}/metrics", gw.url), &[], "").await;
    let text = String::from_utf8_lossy(&m.body).to_string();
    assert_eq!(metric(&text, "sluice_usage_replayed_total"), 20.0, "{text}");

    // Down again, and the gateway stops meanwhile: shutdown spills what it holds, and the
    // next start replays it.
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut lock)
        .await
        .unwrap();
    for i in 0..10 {
        send(&gw, &format!("at-stop-{i}")).await;
    }
    let mut gw = gw;
    assert_eq!(gw.stop(Duration::from_secs(15)), Some(0), "{}", gw.stderr());
    sqlx::query("ROLLBACK").execute(&mut lock).await.unwrap();
    lock.close().await.unwrap();
    let gw2 = Gateway::start(&cfg);
    let deadline = Instant::now() + Duration::from_secs(10);
    while ids_in(&db).await.len() < 35 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(gw2);
    let ids = ids_in(&db).await;
    let distinct: HashSet<&String> = ids.iter().collect();
    assert_eq!(ids.len(), 35, "every record once");
    assert_eq!(distinct.len(), 35);
}
