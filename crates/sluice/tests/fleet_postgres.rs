//! Fleet mode on PostgreSQL (issue 16): replicas on one PostgreSQL store see each other's
//! admin writes and usage, and a PostgreSQL outage (a cuttable loopback proxy in this
//! process; the machine's server is never stopped) keeps known keys served while usage
//! spills to disk, replayed exactly once when the store is back. Without PostgreSQL these
//! tests skip (and say so) unless `SLUICE_REQUIRE_SERVICES=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::gov::{admin, chat_as, create_key, MASTER};
use common::testdb;
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn config(store: &str) -> String {
    format!(
        r#"
server: {{master_key: {MASTER}}}
store: {{url: "{store}"}}
usage: {{retry_interval: 200ms}}
providers:
  - {{name: local, kind: mock}}
models:
  - {{name: mock-1, deployments: [{{provider: local, model: mock-1}}]}}
"#
    )
}

async fn ready(gw: &Gateway) -> (u16, Value) {
    let r = request(
        "GET",
        &format!("{}/health/ready", gw.url),
        &[],
        String::new(),
    )
    .await;
    (r.status, r.json())
}

/// Usage records of key `id` in the store at `url`: (records, distinct request ids).
async fn records_of(url: &str, id: &str) -> (usize, usize) {
    let rows = usage_rows_at(url).await;
    let mine: Vec<&Value> = rows.iter().filter(|r| r["key_id"] == id).collect();
    let ids: std::collections::HashSet<&str> = mine
        .iter()
        .map(|r| r["request_id"].as_str().unwrap())
        .collect();
    (mine.len(), ids.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_on_one_postgres_share_keys_usage_and_admin_writes() {
    let Some(db) = testdb::postgres("pg_share").await else {
        return;
    };
    let cfg = config(&db.url);
    let a = Gateway::start(&cfg);
    let b = Gateway::start(&cfg);
    assert_eq!(ready(&a).await.1["store"], "postgres");
    // A key made through one replica works through the other (its store poll sees it).
    let (id, key) = create_key(&a, json!({"name": "shared", "team": null})).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if chat_as(&b, &key, "mock-1", 10).await.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "key never reached replica b");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for gw in [&a, &b, &a] {
        assert_eq!(chat_as(gw, &key, "mock-1", 10).await.status, 200);
    }
    // Usage from both replicas, read back through either.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = admin(
            &b,
            MASTER,
            "GET",
            &format!("/admin/usage?key={id}"),
            Value::Null,
        )
        .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        if r.json()["rows"][0]["requests"] == 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "usage never reached 4: {}",
            r.json()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A revocation through b refuses the key on a.
    let r = admin(
        &b,
        MASTER,
        "POST",
        &format!("/admin/keys/{id}/revoke"),
        Value::Null,
    )
    .await;
    assert!(r.status < 300, "{}", String::from_utf8_lossy(&r.body));
    let deadline = Instant::now() + Duration::from_secs(5);
    while chat_as(&a, &key, "mock-1", 10).await.status != 401 {
        assert!(Instant::now() < deadline, "revoked key still works on a");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The audit log is shared too: both writes, whichever replica took them.
    let log = admin(&a, MASTER, "GET", "/admin/audit", Value::Null)
        .await
        .json();
    let actions: Vec<&str> = log["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["revoke", "create"], "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_outage_serves_known_keys_and_replays_usage_exactly_once() {
    let Some(db) = testdb::postgres("pg_outage").await else {
        return;
    };
    let mut proxy = Proxy::start("127.0.0.1:5432").await;
    let via = db
        .url
        .replace("127.0.0.1:5432", &format!("127.0.0.1:{}", proxy.port));
    let mut gw = Gateway::start(&config(&via));
    let (id, key) = create_key(&gw, json!({"name": "steady"})).await;
    for _ in 0..3 {
        assert_eq!(chat_as(&gw, &key, "mock-1", 10).await.status, 200);
    }

    proxy.cut();
    // Known keys keep being served.
    for i in 0..20 {
        let r = chat_as(&gw, &key, "mock-1", 10).await;
        assert_eq!(r.status, 200, "request {i} during the outage: {:?}", r.body);
    }
    let (status, health) = ready(&gw).await;
    assert_eq!(status, 200, "a degraded replica stays in the load balancer");
    assert_eq!(health["status"], "degraded", "{health}");
    assert!(
        health["degraded"]
            .as_str()
            .unwrap()
            .contains("store unreachable (postgres)"),
        "{health}"
    );
    // Admin writes wait for the store, with a clear 503.
    let r = admin(&gw, MASTER, "POST", "/admin/keys", json!({"name": "later"})).await;
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.json()["error"]["code"],
        "store_unavailable",
        "{}",
        r.json()
    );
    assert!(r.header("retry-after").is_some());
    // Nothing of the outage reached the store yet.
    assert!(records_of(&db.url, &id).await.0 <= 3);

    proxy.restore().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (n, distinct) = records_of(&db.url, &id).await;
        assert_eq!(n, distinct, "a record was written twice");
        if n == 23 {
            break;
        }
        assert!(Instant::now() < deadline, "only {n} of 23 records replayed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(ready(&gw).await.1["status"], "ready");
    // Exactly once, also after the writer's next rounds and a clean stop.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(gw.stop(Duration::from_secs(10)), Some(0));
    assert_eq!(records_of(&db.url, &id).await, (23, 23));
    assert!(
        gw.stderr()
            .matches("refreshing keys and teams failed")
            .count()
            <= 1,
        "the store outage is logged once, not every poll:\n{}",
        gw.stderr()
    );
}
