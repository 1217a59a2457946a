//! Fleet mode on Redis (issue 16): three real replicas share one Redis (each test its own key
//! prefix) and one store (PostgreSQL; a shared SQLite file where it is down and not required),
//! and behave as one gateway for rate limits, concurrency and budgets.
//! Outages use a loopback proxy in this process that can be cut; the machine's Redis is never
//! stopped. Without Redis these tests skip (and say so) unless `SLUICE_REQUIRE_SERVICES=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::gov::{admin, chat_as, create_key, MASTER};
use common::testdb::{self, TestDb};
use common::*;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

const REDIS: &str = "127.0.0.1:6379";

/// The machine's Redis, or `None` (test skipped) when it is down and not required.
fn redis_or_skip(test: &str) -> Option<()> {
    let up = std::net::TcpStream::connect_timeout(&REDIS.parse().unwrap(), Duration::from_secs(1))
        .is_ok();
    if up {
        return Some(());
    }
    assert!(
        std::env::var("SLUICE_REQUIRE_SERVICES").as_deref() != Ok("1"),
        "{test}: Redis at {REDIS} is down and SLUICE_REQUIRE_SERVICES=1"
    );
    eprintln!("SKIPPED {test}: no Redis at {REDIS} (set SLUICE_REQUIRE_SERVICES=1 to require it)");
    None
}

/// A key prefix of this test's own; its keys are deleted when it ends.
struct Prefix(String);

impl Prefix {
    fn new(test: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        Prefix(format!("t-{test}-{}-{nanos}", std::process::id()))
    }
}

impl Drop for Prefix {
    fn drop(&mut self) {
        self.wipe();
    }
}

impl Prefix {
    /// Deletes every key of this prefix.
    fn wipe(&self) {
        let Ok(client) = redis::Client::open(format!("redis://{REDIS}")) else {
            return;
        };
        let Ok(mut c) = client.get_connection() else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{{{}}}*", self.0))
            .query(&mut c)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut c);
        }
    }
}

fn fleet_config(store: &str, redis: &str, prefix: &str, extra: &str) -> String {
    format!(
        r#"
server: {{master_key: {MASTER}}}
store: {{url: "{store}"}}
redis: {{url: "redis://{redis}", key_prefix: "{prefix}", lease: 2s{extra}}}
providers:
  - {{name: local, kind: mock}}
  - name: slow
    kind: mock
    mock: {{latency: 1500ms}}
  - name: stuck
    kind: mock
    mock: {{latency: 30s}}
models:
  - {{name: mock-1, deployments: [{{provider: local, model: mock-1}}]}}
  - {{name: slow-1, deployments: [{{provider: slow, model: mock-1}}]}}
  - {{name: stuck-1, deployments: [{{provider: stuck, model: mock-1}}]}}
"#
    )
}

/// Three replicas on one store (PostgreSQL, a schema of the test's own) and one Redis prefix.
async fn three(test: &str, extra: &str) -> (TestDb, Prefix, Vec<Gateway>) {
    let db = testdb::fleet(test).await;
    let prefix = Prefix::new(test);
    let cfg = fleet_config(&db.url, REDIS, &prefix.0, extra);
    let gws = (0..3).map(|_| Gateway::start(&cfg)).collect();
    (db, prefix, gws)
}

/// Waits until every replica knows key `id` (they poll the shared store).
async fn known_everywhere(gws: &[Gateway], id: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    for gw in gws {
        loop {
            let r = admin(gw, MASTER, "GET", &format!("/admin/keys/{id}"), Value::Null).await;
            if r.status == 200 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "key {id} never reached {}",
                gw.url
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rpm_30_holds_across_three_replicas() {
    let Some(()) = redis_or_skip("rpm_30_holds_across_three_replicas") else {
        return;
    };
    let (_dir, _prefix, gws) = three("rpm", "").await;
    let (id, key) = create_key(&gws[0], json!({"rpm": 30})).await;
    known_everywhere(&gws, &id).await;
    let mut set = tokio::task::JoinSet::new();
    for i in 0..100 {
        let url = gws[i % 3].url.clone();
        let key = key.clone();
        set.spawn(async move {
            let gw_url = url;
            let auth = format!("Bearer {key}");
            request(
                "POST",
                &format!("{gw_url}/v1/chat/completions"),
                &[
                    ("authorization", &auth),
                    ("content-type", "application/json"),
                ],
                CHAT.to_string(),
            )
            .await
            .status
        });
    }
    let statuses = set.join_all().await;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((ok, limited), (30, 70), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrency_5_holds_across_three_replicas() {
    let Some(()) = redis_or_skip("concurrency_5_holds_across_three_replicas") else {
        return;
    };
    let (_dir, _prefix, gws) = three("conc", "").await;
    let (id, key) = create_key(&gws[0], json!({"max_concurrency": 5})).await;
    known_everywhere(&gws, &id).await;
    let mut set = tokio::task::JoinSet::new();
    // 30 at once on a 1.5 s model: only 5 can be in flight together, whichever replica.
    for i in 0..30 {
        let url = gws[i % 3].url.clone();
        let key = key.clone();
        set.spawn(async move {
            let auth = format!("Bearer {key}");
            let body = json!({"model": "slow-1", "messages": [{"role": "user", "content": "hi"}]});
            let r = request(
                "POST",
                &format!("{url}/v1/chat/completions"),
                &[
                    ("authorization", &auth),
                    ("content-type", "application/json"),
                ],
                body.to_string(),
            )
            .await;
            r.status
        });
    }
    let statuses = set.join_all().await;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(ok, 5, "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    // The slots are free again once those 5 settled.
    let r = chat_as(&gws[1], &key, "mock-1", 10).await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn budget_across_replicas_overspends_at_most_one_worst_case() {
    let Some(()) = redis_or_skip("budget_across_replicas") else {
        return;
    };
    let (_dir, _prefix, gws) = three("budget", "").await;
    // mock-1: 1 micro-USD per input token, 2 per output (see tests/governance.rs).
    let limit = 3000;
    let (id, key) = create_key(
        &gws[0],
        json!({"budget_usd": "0.003", "budget_period": "monthly"}),
    )
    .await;
    known_everywhere(&gws, &id).await;
    let mut set = tokio::task::JoinSet::new();
    for c in 0..50 {
        let url = gws[c % 3].url.clone();
        let key = key.clone();
        set.spawn(async move {
            let auth = format!("Bearer {key}");
            let body = json!({"model": "mock-1", "max_tokens": 50,
                "messages": [{"role": "user", "content": "hello there"}]});
            let mut spent = 0;
            let mut refused = false;
            for _ in 0..100 {
                let r = request(
                    "POST",
                    &format!("{url}/v1/chat/completions"),
                    &[
                        ("authorization", &auth),
                        ("content-type", "application/json"),
                    ],
                    body.to_string(),
                )
                .await;
                if r.status == 429 {
                    // Settles reach Redis just after the answer (pipelined, off the request
                    // path): a refusal at the edge may still count holds of requests that
                    // have ended. Once they settled, a second refusal is final.
                    if refused {
                        return spent;
                    }
                    refused = true;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                refused = false;
                assert_eq!(r.status, 200);
                let u = &r.json()["usage"];
                spent += u["prompt_tokens"].as_i64().unwrap()
                    + 2 * u["completion_tokens"].as_i64().unwrap();
            }
            panic!("the budget never stopped this client (spent {spent})");
        });
    }
    let total: i64 = set.join_all().await.iter().sum();
    let worst = 22 + 2 * 50;
    // Three separate budgets would let up to 3x through.
    assert!(total <= limit + worst, "spent {total} > {limit} + {worst}");
    assert!(total >= limit - worst, "stopped early at {total}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slots_of_a_killed_replica_come_back_within_the_lease() {
    let Some(()) = redis_or_skip("slots_of_a_killed_replica") else {
        return;
    };
    let (_dir, _prefix, mut gws) = three("kill", "").await;
    let (id, key) = create_key(&gws[0], json!({"max_concurrency": 2})).await;
    known_everywhere(&gws, &id).await;
    // Two requests that will not finish hold both slots on replica A.
    for _ in 0..2 {
        let url = gws[0].url.clone();
        let key = key.clone();
        tokio::spawn(async move {
            let auth = format!("Bearer {key}");
            let body = json!({"model": "stuck-1", "messages": [{"role": "user", "content": "hi"}]});
            let _ = request(
                "POST",
                &format!("{url}/v1/chat/completions"),
                &[
                    ("authorization", &auth),
                    ("content-type", "application/json"),
                ],
                body.to_string(),
            )
            .await;
        });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A renews its leases (2 s) while it lives: still held after more than a lease.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(chat_as(&gws[1], &key, "mock-1", 10).await.status, 429);
    gws[0].child.kill().unwrap();
    let killed = Instant::now();
    gws[0].child.wait().unwrap();
    loop {
        let r = chat_as(&gws[2], &key, "mock-1", 10).await;
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 429);
        assert!(
            killed.elapsed() < Duration::from_millis(3500),
            "slots still held {:?} after kill -9",
            killed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn ready(gw: &Gateway) -> Value {
    request(
        "GET",
        &format!("{}/health/ready", gw.url),
        &[],
        String::new(),
    )
    .await
    .json()
}

async fn metrics(gw: &Gateway) -> String {
    let r = admin(gw, MASTER, "GET", "/metrics", Value::Null).await;
    String::from_utf8_lossy(&r.body).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_outage_degrades_as_configured_and_recovers() {
    let Some(()) = redis_or_skip("redis_outage") else {
        return;
    };
    let mut proxy = Proxy::start(REDIS).await;
    let via = format!("127.0.0.1:{}", proxy.port);
    let db = testdb::fleet("outage").await;
    let prefix = Prefix::new("outage");
    let closed = Gateway::start(&fleet_config(
        &db.url,
        &via,
        &prefix.0,
        ", on_failure: closed, timeout: 200ms",
    ));
    let local = Gateway::start(&fleet_config(
        &db.url,
        &via,
        &prefix.0,
        ", on_failure: local, replicas: 2, timeout: 200ms",
    ));
    let mut gws = [closed, local];
    let (id, key) = create_key(&gws[0], json!({"rpm": 10})).await;
    known_everywhere(&gws, &id).await;
    // Shared: 4 on each replica, 8 of the 10 used.
    for gw in &gws {
        for _ in 0..4 {
            assert_eq!(chat_as(gw, &key, "mock-1", 10).await.status, 200);
        }
    }
    assert_eq!(ready(&gws[0]).await["status"], "ready");

    proxy.cut();
    // closed: limited keys are refused while Redis is unreachable.
    let r = chat_as(&gws[0], &key, "mock-1", 10).await;
    assert_eq!(r.status, 429, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        r.openai_error()["message"]
            .as_str()
            .unwrap()
            .contains("unreachable"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let health = ready(&gws[0]).await;
    assert_eq!(health["status"], "degraded", "{health}");
    assert!(health["degraded"].as_str().unwrap().contains("closed"));
    assert!(metrics(&gws[0]).await.contains("sluice_redis_degraded 1"));
    // local: this replica's share of rpm 10 over 2 replicas is 5, counted from zero.
    let mut ok = 0;
    for _ in 0..8 {
        if chat_as(&gws[1], &key, "mock-1", 10).await.status == 200 {
            ok += 1;
        }
    }
    assert_eq!(ok, 5);
    assert_eq!(ready(&gws[1]).await["status"], "degraded");
    assert!(gws[1].stderr().contains("redis unreachable"));

    proxy.restore().await;
    // Back to the shared window (8 used before the outage): within a few seconds (the
    // degraded replica retries Redis once a second), 2 more pass, then 429.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = chat_as(&gws[0], &key, "mock-1", 10).await;
        if r.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "never recovered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(ready(&gws[0]).await["status"], "ready");
    assert_eq!(chat_as(&gws[0], &key, "mock-1", 10).await.status, 200);
    assert_eq!(chat_as(&gws[0], &key, "mock-1", 10).await.status, 429);
    assert!(metrics(&gws[0]).await.contains("sluice_redis_degraded 0"));
    // No usage record was lost to the outage: 8 before, 5 during (local), 2 after.
    for gw in &mut gws {
        assert_eq!(gw.stop(Duration::from_secs(10)), Some(0));
    }
    let rows = usage_rows_at(&db.url).await;
    assert_eq!(rows.iter().filter(|r| r["status"] == 200).count(), 15);
}

fn micro(v: &Value) -> i64 {
    let s = v.as_str().unwrap();
    let (w, f) = s.split_once('.').unwrap_or((s, ""));
    w.parse::<i64>().unwrap() * 1_000_000 + format!("{f:0<6}").parse::<i64>().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spend_is_rebuilt_from_the_store_when_redis_lost_its_state() {
    let Some(()) = redis_or_skip("spend_is_rebuilt") else {
        return;
    };
    let (_dir, prefix, gws) = three("rebuild", "").await;
    let (id, key) = create_key(
        &gws[0],
        json!({"budget_usd": "1", "budget_period": "monthly"}),
    )
    .await;
    known_everywhere(&gws, &id).await;
    let mut spent = 0;
    for gw in &gws {
        let r = chat_as(gw, &key, "mock-1", 50).await;
        assert_eq!(r.status, 200);
        let u = &r.json()["usage"];
        spent +=
            u["prompt_tokens"].as_i64().unwrap() + 2 * u["completion_tokens"].as_i64().unwrap();
    }
    let spend = |gw: &Gateway| {
        let url = format!("/admin/keys/{id}");
        let gw_url = gw.url.clone();
        async move {
            let r = request(
                "GET",
                &format!("{gw_url}{url}"),
                &[("authorization", &format!("Bearer {MASTER}"))],
                String::new(),
            )
            .await;
            micro(&r.json()["spend_usd"])
        }
    };
    assert_eq!(spend(&gws[1]).await, spent, "the fleet's spend, from Redis");
    // Let the usage records reach the store, then Redis forgets everything (as a restart
    // without persistence would).
    tokio::time::sleep(Duration::from_millis(500)).await;
    prefix.wipe();
    assert_eq!(spend(&gws[1]).await, 0, "the state is gone");
    // The next admission notices and every replica loads the spend from the store again.
    assert_eq!(chat_as(&gws[2], &key, "mock-1", 50).await.status, 200);
    let deadline = Instant::now() + Duration::from_secs(3);
    while spend(&gws[0]).await < spent {
        assert!(Instant::now() < deadline, "spend never rebuilt");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_revoked_through_one_replica_fails_on_the_others_within_a_second() {
    let Some(()) = redis_or_skip("revoked_key") else {
        return;
    };
    let db = testdb::fleet("fleet").await;
    let prefix = Prefix::new("revoke");
    let cfg = fleet_config(&db.url, REDIS, &prefix.0, "");
    // The store poll is slowed to 10 s: only the pub/sub announcement can be this fast.
    let gws: Vec<Gateway> = (0..3)
        .map(|_| Gateway::start_with(Some(&cfg), &[], &[("SLUICE_TEST_GOV_POLL_MS", "10000")]))
        .collect();
    // Let every replica subscribe.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (id, key) = create_key(&gws[0], json!({})).await;
    let created = Instant::now();
    known_everywhere(&gws, &id).await;
    assert!(
        created.elapsed() < Duration::from_secs(1),
        "{:?}",
        created.elapsed()
    );
    for gw in &gws {
        assert_eq!(chat_as(gw, &key, "mock-1", 10).await.status, 200);
    }
    let r = admin(
        &gws[0],
        MASTER,
        "POST",
        &format!("/admin/keys/{id}/revoke"),
        Value::Null,
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let revoked = Instant::now();
    for gw in &gws[1..] {
        loop {
            let status = chat_as(gw, &key, "mock-1", 10).await.status;
            if status == 401 {
                break;
            }
            assert_eq!(status, 200);
            assert!(
                revoked.elapsed() < Duration::from_secs(1),
                "still accepted on {} after {:?}",
                gw.url,
                revoked.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// `sluice config check FILE`'s `config hash:` line.
fn checked_hash(path: &std::path::Path) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["config", "check"])
        .arg(path)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines()
        .find_map(|l| l.strip_prefix("config hash: "))
        .unwrap_or_else(|| panic!("no hash in {text}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_replicas_lists_live_replicas_with_their_config_hash() {
    let Some(()) = redis_or_skip("admin_replicas") else {
        return;
    };
    let db = testdb::fleet("fleet").await;
    let prefix = Prefix::new("replicas");
    let cfg = fleet_config(&db.url, REDIS, &prefix.0, "");
    let a = Gateway::start(&cfg);
    let b = Gateway::start(&cfg);
    let mut c = Gateway::start(&format!("{cfg}# drifted\n"));
    let list = || async {
        let r = admin(&a, MASTER, "GET", "/admin/replicas", Value::Null).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let v = loop {
        let v = list().await;
        if v["data"].as_array().unwrap().len() == 3 {
            break v;
        }
        assert!(Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let hashes: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["config_hash"].as_str().unwrap())
        .collect();
    let (same, drifted) = (
        checked_hash(&a.config_path()),
        checked_hash(&c.config_path()),
    );
    assert_ne!(same, drifted);
    assert_eq!(hashes.iter().filter(|h| **h == same).count(), 2, "{v}");
    assert_eq!(hashes.iter().filter(|h| **h == drifted).count(), 1, "{v}");
    assert_eq!(v["config_drift"], true);
    let me: Vec<&Value> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["this"] == true)
        .collect();
    assert_eq!(me.len(), 1);
    assert_eq!(me[0]["version"], env!("CARGO_PKG_VERSION"));
    assert!(me[0]["uptime_s"].as_i64().unwrap() >= 0);
    let _ = &b;
    // A replica that stops leaves the list.
    assert_eq!(c.stop(Duration::from_secs(10)), Some(0));
    let v = list().await;
    assert_eq!(v["data"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v["config_drift"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn budget_thresholds_fire_once_for_the_fleet() {
    use std::sync::Mutex;
    let Some(()) = redis_or_skip("budget_thresholds") else {
        return;
    };
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let app = {
        let got = got.clone();
        axum::Router::new().route(
            "/hook",
            axum::routing::post(move |axum::Json(v): axum::Json<Value>| {
                let got = got.clone();
                async move {
                    got.lock().unwrap().push(v);
                    http::StatusCode::NO_CONTENT
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let db = testdb::fleet("fleet").await;
    let prefix = Prefix::new("alerts");
    let cfg = fleet_config(&db.url, REDIS, &prefix.0, "").replace(
        "providers:",
        &format!(
            "governance: {{alert_webhook: \"{hook}\", alert_thresholds: [25, 50, 80]}}\nproviders:"
        ),
    );
    let gws: Vec<Gateway> = (0..3).map(|_| Gateway::start(&cfg)).collect();
    let (id, key) = create_key(
        &gws[0],
        json!({"budget_usd": "0.0004", "budget_period": "weekly"}),
    )
    .await;
    known_everywhere(&gws, &id).await;
    let mut n = 0;
    while chat_as(&gws[n % 3], &key, "mock-1", 5).await.status == 200 {
        n += 1;
        assert!(n < 100, "the budget never stopped the key");
    }
    assert!(n >= 3, "the spend must be spread over the replicas: {n}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let alerts = got.lock().unwrap().clone();
    let mut thresholds: Vec<i64> = alerts
        .iter()
        .map(|a| a["threshold_percent"].as_i64().unwrap())
        .collect();
    thresholds.sort_unstable();
    // Each threshold once, whichever replica's request crossed it (per-replica spend would
    // never reach 50 % on any one of them).
    assert_eq!(thresholds, [25, 50, 80], "{alerts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn usage_records_from_every_replica_sum_exactly() {
    let Some(()) = redis_or_skip("usage_records_sum") else {
        return;
    };
    let (db, _prefix, mut gws) = three("usage", "").await;
    let (id, key) = create_key(&gws[0], json!({"rpm": 1000})).await;
    known_everywhere(&gws, &id).await;
    let mut set = tokio::task::JoinSet::new();
    for i in 0..60 {
        let url = gws[i % 3].url.clone();
        let key = key.clone();
        set.spawn(async move {
            let auth = format!("Bearer {key}");
            let r = request(
                "POST",
                &format!("{url}/v1/chat/completions"),
                &[
                    ("authorization", &auth),
                    ("content-type", "application/json"),
                ],
                CHAT.to_string(),
            )
            .await;
            assert_eq!(r.status, 200);
            let u = &r.json()["usage"];
            (
                r.json()["id"].as_str().unwrap().to_string(),
                u["prompt_tokens"].as_i64().unwrap(),
                u["completion_tokens"].as_i64().unwrap(),
            )
        });
    }
    let answers = set.join_all().await;
    for gw in &mut gws {
        assert_eq!(gw.stop(Duration::from_secs(10)), Some(0));
    }
    let rows = usage_rows_at(&db.url).await;
    let ok: Vec<&Value> = rows.iter().filter(|r| r["status"] == 200).collect();
    assert_eq!(ok.len(), 60, "one record per answered request");
    let sum = |f: &str| ok.iter().map(|r| r[f].as_i64().unwrap()).sum::<i64>();
    assert_eq!(
        sum("input_tokens"),
        answers.iter().map(|a| a.1).sum::<i64>()
    );
    assert_eq!(
        sum("output_tokens"),
        answers.iter().map(|a| a.2).sum::<i64>()
    );
    let ids: std::collections::HashSet<&str> = ok
        .iter()
        .map(|r| r["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 60, "no record twice");
}

/// `redis.share_breakers`: a breaker opened by failures on one replica is open within a
/// second on the replicas that share breakers (which then refuse without trying), not on one
/// that does not share them; when the deployment is back and the first replica's probe
/// succeeds, the breaker closes on the others too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shared_breakers_open_and_close_on_every_replica_that_shares_them() {
    let Some(()) = redis_or_skip("shared_breakers") else {
        return;
    };
    let db = testdb::fleet("breakers").await;
    let prefix = Prefix::new("breakers");
    // An OpenAI-compatible upstream (the mock) behind a proxy this test can cut; the route's
    // breaker opens after two failures for 1.5 s.
    let upstream: &'static str = Box::leak(
        start_mock()
            .await
            .trim_start_matches("http://")
            .to_string()
            .into_boxed_str(),
    );
    let mut proxy = Proxy::start(upstream).await;
    let routes = "  - name: flaky-1\n    breaker: {failures: 2, cooldown: 1500ms}\n    \
                  deployments: [{provider: flaky, model: mock-1}]\n";
    let provider = format!(
        "  - {{name: flaky, kind: openai_compatible, base_url: \"http://127.0.0.1:{}/v1\", api_key: x}}\n",
        proxy.port
    );
    let make = |share: &str| {
        fleet_config(&db.url, REDIS, &prefix.0, share)
            .replace("providers:\n", &format!("providers:\n{provider}"))
            .replace("models:\n", &format!("models:\n{routes}"))
    };
    let a = Gateway::start(&make(", share_breakers: true"));
    let b = Gateway::start(&make(", share_breakers: true"));
    let lone = Gateway::start(&make(""));
    let state = |gw| breaker_state(gw, "flaky");
    assert_eq!(chat_as(&a, MASTER, "flaky-1", 5).await.status, 200);
    proxy.cut();
    for _ in 0..2 {
        let r = chat_as(&a, MASTER, "flaky-1", 5).await;
        assert!(r.status >= 500, "{}", r.status);
    }
    assert_eq!(state(&a).await, "open");
    let deadline = Instant::now() + Duration::from_secs(1);
    while state(&b).await != "open" {
        assert!(
            Instant::now() < deadline,
            "b never heard that the breaker opened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        state(&lone).await,
        "closed",
        "a replica without share_breakers"
    );
    // b refuses at once, without trying the deployment: the breaker is open there too.
    let r = chat_as(&b, MASTER, "flaky-1", 5).await;
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));

    // The upstream is back; after the cooldown a's next request is the probe, and closes it.
    proxy.restore().await;
    tokio::time::sleep(Duration::from_millis(1800)).await;
    assert_eq!(state(&b).await, "half_open");
    assert_eq!(chat_as(&a, MASTER, "flaky-1", 5).await.status, 200);
    assert_eq!(state(&a).await, "closed");
    let deadline = Instant::now() + Duration::from_secs(1);
    while state(&b).await != "closed" {
        assert!(
            Instant::now() < deadline,
            "b never heard that the breaker closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The breaker state `gw` shows for `provider`'s deployment.
async fn breaker_state(gw: &Gateway, provider: &str) -> String {
    let r = admin(gw, MASTER, "GET", "/admin/routing", Value::Null).await;
    r.json()["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["provider"] == provider)
        .map(|d| d["breaker"].as_str().unwrap().to_string())
        .unwrap()
}

/// A replica stopped (SIGTERM) while its last requests are still running sends their settles
/// to Redis before it exits: the key's concurrency slots are free at once on the other
/// replicas, not after the 30 s lease. The stopping replica reaches Redis through a proxy that
/// delays every answer by 400 ms, and its two requests end 60 ms apart: the second settle
/// waits in the queue while the first is answered, so without the flush at shutdown the
/// process may be gone before it is sent (with the flush removed this failed 1 run in 3 here:
/// the rest of the shutdown also talks to Redis and sometimes gives the queue time).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopping_replica_settles_its_last_requests_before_exit() {
    let Some(()) = redis_or_skip("stop_settles") else {
        return;
    };
    let db = testdb::fleet("stop_settles").await;
    let prefix = Prefix::new("stop_settles");
    let lagging = Proxy::start_delayed(REDIS, Duration::from_millis(400)).await;
    let via = format!("127.0.0.1:{}", lagging.port);
    let cfg = |redis: &str| {
        fleet_config(&db.url, redis, &prefix.0, ", timeout: 2s").replace("lease: 2s", "lease: 30s")
    };
    let mut gws: Vec<Gateway> = vec![Gateway::start(&cfg(&via)), Gateway::start(&cfg(REDIS))];
    let (id, key) = create_key(&gws[0], json!({"max_concurrency": 2})).await;
    known_everywhere(&gws, &id).await;
    let slow_on = |gw: &Gateway| {
        let (url, key) = (gw.url.clone(), key.clone());
        tokio::spawn(async move { chat_url(&url, &key, "slow-1").await })
    };
    let first = slow_on(&gws[0]);
    tokio::time::sleep(Duration::from_millis(60)).await;
    let second = slow_on(&gws[0]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Both slots are taken fleet-wide.
    assert_eq!(chat_as(&gws[1], &key, "mock-1", 5).await.status, 429);
    gws[0].terminate();
    for r in [first, second] {
        assert_eq!(
            r.await.unwrap(),
            200,
            "running requests finish in the drain"
        );
    }
    assert_eq!(gws[0].wait_exit(Duration::from_secs(10)), Some(0));
    // Both slots are free on the other replica: two requests at once are admitted.
    let both = [slow_on(&gws[1]), slow_on(&gws[1])];
    for r in both {
        assert_eq!(
            r.await.unwrap(),
            200,
            "a slot is still held after the replica exited"
        );
    }
}

async fn chat_url(base: &str, key: &str, model: &str) -> u16 {
    let auth = format!("Bearer {key}");
    let body = json!({"model": model, "max_tokens": 5,
        "messages": [{"role": "user", "content": "hello"}]});
    request(
        "POST",
        &format!("{base}/v1/chat/completions"),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        body.to_string(),
    )
    .await
    .status
}

/// `cache.backend: redis`: an answer stored through one replica is a hit through another
/// (the same answer, id included); `DELETE /admin/cache` through either clears it for both
/// within a second; with Redis cut, requests are served (`bypass`) and nothing errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_redis_cache_is_shared_by_replicas_and_an_outage_is_a_bypass() {
    let Some(()) = redis_or_skip("redis_cache") else {
        return;
    };
    let db = testdb::fleet("redis_cache").await;
    let prefix = Prefix::new("redis_cache");
    let mut proxy = Proxy::start(REDIS).await;
    let via = format!("127.0.0.1:{}", proxy.port);
    let cfg = format!(
        "{}cache: {{backend: redis, ttl: 10m}}\n",
        fleet_config(&db.url, &via, &prefix.0, ", timeout: 200ms")
    );
    let a = Gateway::start(&cfg);
    let b = Gateway::start(&cfg);
    let first = chat_as(&a, MASTER, "mock-1", 7).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-sluice-cache"), Some("miss"));
    // The store to Redis is in the background: give it a moment.
    let deadline = Instant::now() + Duration::from_secs(2);
    let again = loop {
        let r = chat_as(&b, MASTER, "mock-1", 7).await;
        if r.header("x-sluice-cache") == Some("hit") || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        again.header("x-sluice-cache"),
        Some("hit"),
        "b never hit a's entry"
    );
    assert_eq!(
        again.json()["id"],
        first.json()["id"],
        "the stored answer itself"
    );
    let stats = admin(&b, MASTER, "GET", "/admin/cache", Value::Null)
        .await
        .json();
    assert_eq!(stats["backend"], "redis", "{stats}");

    // Cleared through b: a's near cache forgets it within a second, Redis at once.
    let r = admin(&b, MASTER, "DELETE", "/admin/cache", Value::Null).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        r.json()["shared_entries_deleted"].as_u64().unwrap() >= 1,
        "{}",
        r.json()
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let after = chat_as(&a, MASTER, "mock-1", 7).await;
    assert_eq!(after.header("x-sluice-cache"), Some("miss"));

    // Redis cut: a new request is answered by the provider, marked bypass.
    proxy.cut();
    let r = chat_as(&a, MASTER, "mock-1", 9).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-sluice-cache"), Some("bypass"));
    let stats = admin(&a, MASTER, "GET", "/admin/cache", Value::Null)
        .await
        .json();
    assert!(stats["errors"].as_u64().unwrap() >= 1, "{stats}");
    proxy.restore().await;
}

/// The semantic cache across replicas (`backend: redis`): a rewording asked through one
/// replica is answered with what another replica stored, and a replica started afterwards
/// loads the index from Redis; a changed number still misses.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rewording_through_another_replica_is_a_semantic_hit() {
    let Some(()) = redis_or_skip("semantic_fleet") else {
        return;
    };
    let db = testdb::fleet("semantic_fleet").await;
    let prefix = Prefix::new("semantic_fleet");
    let cfg = format!(
        "{}cache: {{backend: redis, semantic: {{embedding_model: embed, dimensions: 256}}}}\n",
        fleet_config(&db.url, REDIS, &prefix.0, "")
    )
    .replace(
        "models:\n",
        "models:\n  - {name: support, cache: {semantic: true}, deployments: [{provider: local, model: mock-1}]}\n  - {name: embed, deployments: [{provider: local, model: mock-embed}]}\n",
    );
    let a = Gateway::start(&cfg);
    let b = Gateway::start(&cfg);
    let ask = |gw: &Gateway, text: &str| {
        let (url, body) = (
            gw.url.clone(),
            json!({"model": "support", "max_tokens": 8,
                   "messages": [{"role": "user", "content": text}]})
            .to_string(),
        );
        async move {
            let auth = format!("Bearer {MASTER}");
            let r = request(
                "POST",
                &format!("{url}/v1/chat/completions"),
                &[
                    ("authorization", &auth),
                    ("content-type", "application/json"),
                ],
                body,
            )
            .await;
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
            (
                r.header("x-sluice-cache").unwrap_or_default().to_string(),
                r.json()["id"].clone(),
            )
        }
    };
    let (first, id) = ask(&a, "Track order 48213 for me").await;
    assert_eq!(first, "miss");
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut n = 0;
    let (outcome, hit_id) = loop {
        // Another exact request each try (a miss stores its own answer).
        n += 1;
        let r = ask(&b, &format!("track order 48213 for me{}", ".".repeat(n))).await;
        if r.0 == "semantic-hit" || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(outcome, "semantic-hit", "b never found a's answer");
    assert_eq!(hit_id, id);
    assert_eq!(ask(&b, "Track order 48231 for me").await.0, "miss");
    // A replica that starts now loads the index from Redis.
    let c = Gateway::start(&cfg);
    let deadline = Instant::now() + Duration::from_secs(2);
    for n in 1.. {
        // Another exact request each time: a miss stores its own answer, which must not
        // turn the next try into an exact hit.
        let r = ask(&c, &format!("Track order 48213 for me{}", "!".repeat(n))).await;
        if r.0 == "semantic-hit" {
            assert_eq!(r.1, id);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "c never loaded the index: {}",
            r.0
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
