//! Analytics from rollups, end to end through the real binary: the roller folds answered
//! requests into the rollups, `/admin/usage` and feedback read them, and raw records past
//! `usage.retention` go from the request log while the analytics keep counting them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::gov::{admin, chat_as, config, MASTER};
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn scalar(db: &std::path::Path, sql: &str) -> i64 {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let v: i64 = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
    pool.close().await;
    v
}

async fn usage(gw: &Gateway, query: &str) -> Value {
    let r = admin(
        gw,
        MASTER,
        "GET",
        &format!("/admin/usage?{query}"),
        Value::Null,
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()
}

/// Polls `check` every 100 ms for up to 20 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t = Instant::now();
    while !check().await {
        assert!(t.elapsed() < Duration::from_secs(20), "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn analytics_read_rollups_that_outlive_raw_retention() {
    let cfg = format!(
        "{}usage:\n  flush_interval: 20ms\n  maintenance_interval: 100ms\n  rollup_delay: 50ms\n  retention: 3s\n",
        config()
    );
    let gw = Gateway::start(&cfg);
    let db = gw.db_path();
    let mut ids = Vec::new();
    for (model, n) in [("mock-1", 5), ("mock-2", 3)] {
        for _ in 0..n {
            let r = chat_as(&gw, MASTER, model, 16).await;
            assert_eq!(r.status, 200);
            ids.push(r.header("x-request-id").unwrap().to_string());
        }
    }
    // Read as soon as written (records after the horizon are read raw) and once rolled:
    // the same figures.
    let counts = |v: &Value| -> Vec<(String, i64)> {
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["model"].as_str().unwrap().to_string(),
                    r["requests"].as_i64().unwrap(),
                )
            })
            .collect()
    };
    let want: Vec<(String, i64)> = vec![("mock-1".into(), 5), ("mock-2".into(), 3)];
    eventually("the records are written", || async {
        scalar(&db, "SELECT COUNT(*) FROM usage_records").await == 8
    })
    .await;
    let fresh = usage(&gw, "group_by=model").await;
    assert_eq!(fresh["source"], "rollups");
    eventually("the roller folds every record", || async {
        scalar(&db, "SELECT COUNT(*) FROM usage_segments WHERE cuboid = 2").await > 0
            && scalar(&db, "SELECT horizon FROM usage_rollup_state").await
                > scalar(&db, "SELECT MAX(ts_ms) FROM usage_records").await
    })
    .await;
    let rolled = usage(&gw, "group_by=model").await;
    assert_eq!(counts(&fresh), want);
    assert_eq!(counts(&rolled), counts(&fresh));
    // Feedback on a folded record reaches the rollups; a second score replaces the first.
    for score in [0.2, 0.8] {
        let r = request(
            "POST",
            &format!("{}/v1/feedback", gw.url),
            &[
                ("authorization", &format!("Bearer {MASTER}")),
                ("content-type", "application/json"),
            ],
            json!({"request_id": ids[0], "score": score}).to_string(),
        )
        .await;
        assert!(r.status < 300, "{}", String::from_utf8_lossy(&r.body));
    }
    let v = usage(&gw, "group_by=model&model=mock-1").await;
    assert_eq!(v["rows"][0]["feedback_count"], 1, "{v}");
    assert_eq!(v["rows"][0]["mean_score"], 0.8, "{v}");
    // Raw retention (3 s here): the request log empties, the analytics still count all.
    eventually("raw records past usage.retention are deleted", || async {
        scalar(&db, "SELECT COUNT(*) FROM usage_records").await == 0
    })
    .await;
    let log = admin(&gw, MASTER, "GET", "/admin/requests", Value::Null)
        .await
        .json();
    assert_eq!(log["data"].as_array().map(Vec::len), Some(0), "{log}");
    let total = usage(&gw, "").await;
    assert_eq!(total["rows"][0]["requests"], 8, "{total}");
    let by_model = usage(&gw, "group_by=model&since=1h").await;
    assert_eq!(counts(&by_model), counts(&rolled));
}
