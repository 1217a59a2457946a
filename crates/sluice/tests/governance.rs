//! Governance end to end against the real binary: key lifecycle and replicas, model access,
//! each limit at its exact threshold under concurrency, budgets (hard stop under 50 concurrent
//! clients, period reset with the test clock, threshold webhooks).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::gov::*;
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

#[tokio::test]
async fn key_lifecycle_create_use_revoke_rotate() {
    let gw = Gateway::start(&config());
    let r = admin(&gw, MASTER, "POST", "/admin/teams", json!({"name": "eng"})).await;
    assert_eq!(r.status, 201);
    let r = admin(
        &gw,
        MASTER,
        "POST",
        "/admin/users",
        json!({"name": "ada", "team": "eng"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let (id, key) = create_key(
        &gw,
        json!({"name": "ci", "team": "eng", "user": "ada", "metadata": {"env": "ci"}}),
    )
    .await;
    assert!(
        key.starts_with("sk-sluice-") && key.len() >= 10 + 64,
        "{key}"
    );
    assert_eq!(chat_as(&gw, &key, "mock-1", 20).await.status, 200);
    assert_eq!(
        chat_as(&gw, "sk-sluice-nope", "mock-1", 20).await.status,
        401
    );

    // Listings show the prefix, never the key.
    let list = admin(&gw, MASTER, "GET", "/admin/keys", Value::Null).await;
    assert_eq!(list.status, 200);
    let text = String::from_utf8_lossy(&list.body).to_string();
    assert!(!text.contains(&key));
    assert!(text.contains(&key[..18]));

    // Rotate with a grace period: both keys work, then only the new one.
    let r = admin(
        &gw,
        MASTER,
        "POST",
        &format!("/admin/keys/{id}/rotate"),
        json!({"grace_period": "1500ms"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let new_key = r.json()["key"].as_str().unwrap().to_string();
    assert_ne!(new_key, key);
    assert_eq!(chat_as(&gw, &key, "mock-1", 20).await.status, 200);
    assert_eq!(chat_as(&gw, &new_key, "mock-1", 20).await.status, 200);
    tokio::time::sleep(Duration::from_millis(1700)).await;
    assert_eq!(chat_as(&gw, &key, "mock-1", 20).await.status, 401);
    assert_eq!(chat_as(&gw, &new_key, "mock-1", 20).await.status, 200);

    // Revoke: 401 within a second.
    let r = admin(
        &gw,
        MASTER,
        "POST",
        &format!("/admin/keys/{id}/revoke"),
        Value::Null,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "revoked");
    let start = Instant::now();
    loop {
        let s = chat_as(&gw, &new_key, "mock-1", 20).await.status;
        if s == 401 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "still {s} after revoke"
        );
    }

    // An expired key is refused with its own message.
    let (_, old) = create_key(&gw, json!({"expires_at": 1_000_000})).await;
    let r = chat_as(&gw, &old, "mock-1", 20).await;
    assert_eq!(r.status, 401);
    assert!(r.openai_error()["message"]
        .as_str()
        .unwrap()
        .contains("expired"));

    let mut gw = gw;
    assert_eq!(gw.stop(Duration::from_secs(10)), Some(0));
    let rows = usage_with_keys(&gw.db_path()).await;
    let mine: Vec<&Value> = rows.iter().filter(|r| r["key_id"] == json!(id)).collect();
    assert_eq!(mine.len(), 4, "{rows:?}");
    let ok = mine.iter().find(|r| r["status"] == 200).unwrap();
    assert_eq!(ok["team"], "eng");
    assert_eq!(ok["user_name"], "ada");
    assert_eq!(ok["tags"], r#"{"env":"ci"}"#);
    let version = ok["catalog_version"].as_str().unwrap();
    assert!(version.starts_with("builtin-2026.12+config."), "{version}");
    // mock-1 costs 1 micro-USD per input token and 2 per output token.
    let expect = ok["input_tokens"].as_i64().unwrap() + 2 * ok["output_tokens"].as_i64().unwrap();
    assert_eq!(ok["cost_micro_usd"], expect);
}

async fn usage_with_keys(db: &std::path::Path) -> Vec<Value> {
    use sqlx::Row;
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let rows = sqlx::query(
        "SELECT key_id, key_prefix, team, user_name, tags, cost_micro_usd, catalog_version, \
         status, input_tokens, output_tokens, requested_model FROM usage_records ORDER BY rowid",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    rows.iter()
        .map(|r| {
            json!({
                "key_id": r.get::<Option<String>, _>(0),
                "key_prefix": r.get::<Option<String>, _>(1),
                "team": r.get::<Option<String>, _>(2),
                "user_name": r.get::<Option<String>, _>(3),
                "tags": r.get::<Option<String>, _>(4),
                "cost_micro_usd": r.get::<Option<i64>, _>(5),
                "catalog_version": r.get::<Option<String>, _>(6),
                "status": r.get::<i64, _>(7),
                "input_tokens": r.get::<Option<i64>, _>(8),
                "output_tokens": r.get::<Option<i64>, _>(9),
                "requested_model": r.get::<String, _>(10),
            })
        })
        .collect()
}

#[tokio::test]
async fn another_replica_sees_new_and_revoked_keys_within_a_second() {
    let a = Gateway::start(&config());
    let shared = config().replace("{DB}", &format!("sqlite://{}", a.db_path().display()));
    let b = Gateway::start(&shared);
    let (id, key) = create_key(&a, json!({})).await;
    let seen = |want: u16| {
        let b = &b;
        let key = key.clone();
        async move {
            let start = Instant::now();
            loop {
                if chat_as(b, &key, "mock-1", 5).await.status == want {
                    return start.elapsed();
                }
                assert!(
                    start.elapsed() < Duration::from_secs(1),
                    "not {want} within 1 s"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    seen(200).await;
    let r = admin(
        &a,
        MASTER,
        "POST",
        &format!("/admin/keys/{id}/revoke"),
        Value::Null,
    )
    .await;
    assert_eq!(r.status, 200);
    seen(401).await;
}

#[tokio::test]
async fn models_outside_the_key_or_team_list_get_403_naming_the_model() {
    let gw = Gateway::start(&config());
    let r = admin(
        &gw,
        MASTER,
        "POST",
        "/admin/teams",
        json!({"name": "t", "models": ["mock-*", "slow-*"]}),
    )
    .await;
    assert_eq!(r.status, 201);
    let (_, key) = create_key(&gw, json!({"team": "t", "models": ["mock-1", "priced"]})).await;
    assert_eq!(chat_as(&gw, &key, "mock-1", 5).await.status, 200);
    let r = chat_as(&gw, &key, "mock-2", 5).await;
    assert_eq!(r.status, 403);
    let e = r.openai_error();
    assert!(e["message"].as_str().unwrap().contains("mock-2"), "{e}");
    assert_eq!(e["param"], "model");
    // Allowed by the key, not by its team: the intersection applies.
    let r = chat_as(&gw, &key, "priced", 5).await;
    assert_eq!(r.status, 403);
    assert!(r.openai_error()["message"]
        .as_str()
        .unwrap()
        .contains("team"));
}

/// Fires `n` requests at once; returns the replies.
async fn burst(gw: &Gateway, key: &str, model: &str, n: usize) -> Vec<Reply> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let url = gw.url.clone();
        let key = key.to_string();
        let model = model.to_string();
        set.spawn(async move {
            let auth = format!("Bearer {key}");
            let body = json!({"model": model, "max_tokens": 5,
                "messages": [{"role": "user", "content": "hi"}]});
            request(
                "POST",
                &format!("{url}/v1/chat/completions"),
                &[
                    ("authorization", &auth),
                    ("content-type", "application/json"),
                ],
                body.to_string(),
            )
            .await
        });
    }
    set.join_all().await
}

fn count(replies: &[Reply], status: u16) -> usize {
    replies.iter().filter(|r| r.status == status).count()
}

#[tokio::test]
async fn rpm_admits_exactly_the_limit_under_concurrency() {
    let gw = Gateway::start(&config());
    let (_, key) = create_key(&gw, json!({"rpm": 100})).await;
    let mut replies = Vec::new();
    for _ in 0..3 {
        replies.extend(burst(&gw, &key, "mock-1", 50).await);
    }
    assert_eq!(count(&replies, 200), 100);
    assert_eq!(count(&replies, 429), 50);
    let ok = replies.iter().find(|r| r.status == 200).unwrap();
    assert_eq!(ok.header("x-ratelimit-limit-requests"), Some("100"));
    assert!(ok.header("x-ratelimit-remaining-requests").is_some());
    let limited = replies.iter().find(|r| r.status == 429).unwrap();
    let retry: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(limited.header("x-ratelimit-remaining-requests"), Some("0"));
    assert!(limited
        .header("x-ratelimit-reset-requests")
        .unwrap()
        .ends_with("ms"));
    let e = limited.openai_error();
    assert_eq!(e["code"], "rate_limit_exceeded");
    assert!(e["message"]
        .as_str()
        .unwrap()
        .contains("100 requests per minute"));
    // A team limit applies to all its keys together.
    admin(
        &gw,
        MASTER,
        "POST",
        "/admin/teams",
        json!({"name": "small", "rpm": 10}),
    )
    .await;
    let (_, k1) = create_key(&gw, json!({"team": "small"})).await;
    let (_, k2) = create_key(&gw, json!({"team": "small"})).await;
    let mut both = burst(&gw, &k1, "mock-1", 8).await;
    both.extend(burst(&gw, &k2, "mock-1", 8).await);
    assert_eq!(count(&both, 200), 10);
    // A per-model limit within a team counts only that model.
    let r = admin(
        &gw,
        MASTER,
        "POST",
        "/admin/teams",
        json!({"name": "pm", "model_limits": {"mock-1": {"rpm": 3}}}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let (_, pk) = create_key(&gw, json!({"team": "pm"})).await;
    assert_eq!(count(&burst(&gw, &pk, "mock-1", 5).await, 200), 3);
    assert_eq!(count(&burst(&gw, &pk, "mock-2", 5).await, 200), 5);
    // So does a user's, across the user's keys.
    let r = admin(
        &gw,
        MASTER,
        "POST",
        "/admin/users",
        json!({"name": "bob", "rpm": 6}),
    )
    .await;
    assert_eq!(r.status, 201);
    let (_, u1) = create_key(&gw, json!({"user": "bob"})).await;
    let (_, u2) = create_key(&gw, json!({"user": "bob"})).await;
    let mut both = burst(&gw, &u1, "mock-1", 5).await;
    both.extend(burst(&gw, &u2, "mock-1", 5).await);
    assert_eq!(count(&both, 200), 6);
    let limited = both.iter().find(|r| r.status == 429).unwrap();
    assert!(limited.openai_error()["message"]
        .as_str()
        .unwrap()
        .contains("user \"bob\""));
}

#[tokio::test]
async fn tpm_reserves_the_estimate_and_settles_actual_usage() {
    let gw = Gateway::start(&config());
    // Estimate per request: ceil(prompt bytes / 4) + max_tokens(100), about 110 tokens.
    let (_, key) = create_key(&gw, json!({"tpm": 400})).await;
    let mut used = 0;
    for i in 0..6 {
        let r = chat_as(&gw, &key, "mock-1", 100).await;
        assert_eq!(
            r.status, 200,
            "request {i}: only ~3 would fit without settling"
        );
        let remaining: i64 = r
            .header("x-ratelimit-remaining-tokens")
            .unwrap()
            .parse()
            .unwrap();
        let u = &r.json()["usage"];
        let estimate = 400 - used - remaining;
        assert!((100..=130).contains(&estimate), "estimate {estimate}");
        used += u["prompt_tokens"].as_i64().unwrap() + u["completion_tokens"].as_i64().unwrap();
    }
    // A request that alone exceeds the limit is refused, with no Retry-After that could help.
    let r = chat_as(&gw, &key, "mock-1", 1000).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("x-ratelimit-limit-tokens"), Some("400"));
    assert!(r.openai_error()["message"]
        .as_str()
        .unwrap()
        .contains("tokens per minute"));
}

#[tokio::test]
async fn concurrency_limit_is_exact_and_released() {
    let gw = Gateway::start(&config());
    let (_, key) = create_key(&gw, json!({"max_concurrency": 3})).await;
    let replies = burst(&gw, &key, "slow-1", 10).await;
    assert_eq!(count(&replies, 200), 3);
    assert_eq!(count(&replies, 429), 7);
    // Every slot came back.
    let replies = burst(&gw, &key, "slow-1", 3).await;
    assert_eq!(count(&replies, 200), 3);
}

async fn spend_of(gw: &Gateway, key: &str) -> Value {
    let auth = format!("Bearer {key}");
    let r = request(
        "GET",
        &format!("{}/v1/key/info", gw.url),
        &[("authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    r.json()
}

fn micro(v: &Value) -> i64 {
    let s = v.as_str().unwrap();
    let (w, f) = s.split_once('.').unwrap_or((s, ""));
    w.parse::<i64>().unwrap() * 1_000_000 + format!("{f:0<6}").parse::<i64>().unwrap()
}

#[tokio::test]
async fn budget_hard_stop_under_50_concurrent_clients() {
    let gw = Gateway::start(&config());
    // mock-1: 1 micro-USD per input token, 2 per output; worst case per request here is
    // ceil(bytes/4) input + 50 output tokens = about 110 micro-USD.
    let limit = 3000;
    let (id, key) = create_key(
        &gw,
        json!({"budget_usd": "0.003", "budget_period": "monthly"}),
    )
    .await;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let url = gw.url.clone();
        let key = key.clone();
        set.spawn(async move {
            let auth = format!("Bearer {key}");
            let body = json!({"model": "mock-1", "max_tokens": 50,
                "messages": [{"role": "user", "content": "hello there"}]});
            let mut spent = 0;
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
                    return (spent, r);
                }
                assert_eq!(r.status, 200);
                let u = &r.json()["usage"];
                spent += u["prompt_tokens"].as_i64().unwrap()
                    + 2 * u["completion_tokens"].as_i64().unwrap();
            }
            panic!("the budget never stopped this client (spent {spent})");
        });
    }
    let results = set.join_all().await;
    let total: i64 = results.iter().map(|(s, _)| s).sum();
    // The reservation counts every body byte (about 88 here, so 22 tokens) plus 50 output.
    let worst = 22 + 2 * 50;
    assert!(total <= limit + worst, "spent {total} > {limit} + {worst}");
    assert!(total >= limit - worst, "stopped early at {total}");
    let (_, last) = &results[0];
    let e = last.openai_error();
    assert_eq!(e["type"], "insufficient_quota");
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.contains("monthly budget") && msg.contains("resets at"),
        "{msg}"
    );
    assert!(msg.contains(&id), "{msg}");
    assert!(last.header("retry-after").is_some());
    let info = spend_of(&gw, &key).await;
    assert_eq!(micro(&info["spend_usd"]), total);
    assert_eq!(
        micro(&info["budgets"][0]["remaining_usd"]),
        (limit - total).max(0)
    );

    // A second budgeted key with spend of its own: a restart seeds both in one read.
    let (_, key2) = create_key(&gw, json!({"budget_usd": "1", "budget_period": "monthly"})).await;
    let mut total2 = 0;
    for _ in 0..3 {
        let r = chat_as(&gw, &key2, "mock-1", 20).await;
        assert_eq!(r.status, 200);
        let u = &r.json()["usage"];
        total2 +=
            u["prompt_tokens"].as_i64().unwrap() + 2 * u["completion_tokens"].as_i64().unwrap();
    }
    assert!(total2 > 0);

    // The spend survives a restart (reloaded from the usage records).
    let mut gw = gw;
    assert_eq!(gw.stop(Duration::from_secs(10)), Some(0));
    let again = config().replace("{DB}", &format!("sqlite://{}", gw.db_path().display()));
    let gw2 = Gateway::start(&again);
    assert_eq!(chat_as(&gw2, &key, "mock-1", 50).await.status, 429);
    assert_eq!(micro(&spend_of(&gw2, &key).await["spend_usd"]), total);
    assert_eq!(micro(&spend_of(&gw2, &key2).await["spend_usd"]), total2);
}

#[tokio::test]
async fn budget_period_resets_on_the_injected_clock() {
    let dir = tempfile::tempdir().unwrap();
    let clock = dir.path().join("clock");
    std::fs::write(&clock, "0").unwrap();
    let gw = Gateway::start_with(
        Some(&config()),
        &[],
        &[("SLUICE_TEST_CLOCK_FILE", clock.to_str().unwrap())],
    );
    admin(
        &gw,
        MASTER,
        "POST",
        "/admin/teams",
        json!({"name": "ops", "budget_usd": 0.0001, "budget_period": "daily"}),
    )
    .await;
    let (_, key) = create_key(&gw, json!({"team": "ops"})).await;
    let mut ok = 0;
    while chat_as(&gw, &key, "mock-1", 5).await.status == 200 {
        ok += 1;
        assert!(ok < 50, "the team budget never stopped the key");
    }
    let r = chat_as(&gw, &key, "mock-1", 5).await;
    assert_eq!(r.status, 429);
    assert!(r.openai_error()["message"]
        .as_str()
        .unwrap()
        .contains("team \"ops\""));
    // One day later the team's daily budget starts again.
    std::fs::write(&clock, "86400").unwrap();
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(chat_as(&gw, &key, "mock-1", 5).await.status, 200);
}

#[tokio::test]
async fn budget_thresholds_post_a_webhook_with_retries() {
    use std::sync::{Arc, Mutex};
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let app = {
        let got = got.clone();
        let hits = hits.clone();
        axum::Router::new().route(
            "/hook",
            axum::routing::post(move |axum::Json(v): axum::Json<Value>| {
                let got = got.clone();
                let hits = hits.clone();
                async move {
                    // The very first delivery fails: the gateway must retry it.
                    if hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                        return http::StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    got.lock().unwrap().push(v);
                    http::StatusCode::NO_CONTENT
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let cfg = config().replace(
        "providers:",
        &format!(
            "governance: {{alert_webhook: \"{hook}\", alert_thresholds: [50, 80]}}\nproviders:"
        ),
    );
    let gw = Gateway::start(&cfg);
    let (id, key) = create_key(
        &gw,
        json!({"budget_usd": "0.0002", "budget_period": "weekly"}),
    )
    .await;
    let mut n = 0;
    while chat_as(&gw, &key, "mock-1", 5).await.status == 200 {
        n += 1;
        assert!(n < 100, "the budget never stopped the key");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.lock().unwrap().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "alerts: {:?}",
            got.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let alerts = got.lock().unwrap().clone();
    let thresholds: Vec<&Value> = alerts.iter().map(|a| &a["threshold_percent"]).collect();
    // The budget stops the key once the next worst case no longer fits (past 80 %).
    assert_eq!(thresholds, [&json!(50), &json!(80)], "{alerts:?}");
    assert_eq!(alerts[0]["event"], "budget.threshold");
    assert!(alerts[0]["scope"].as_str().unwrap().contains(&id));
    assert_eq!(alerts[0]["budget_usd"], "0.0002");
    assert_eq!(alerts[0]["period"], "weekly");
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "one retry"
    );
    assert!(gw.stderr().contains("budget threshold reached"));
}

#[tokio::test]
async fn a_stream_abandoned_by_its_client_releases_its_slot_and_is_charged() {
    use http_body_util::{BodyExt, Full};
    let gw = Gateway::start(&config());
    let (id, key) = create_key(
        &gw,
        json!({"max_concurrency": 1, "tpm": 100000, "budget_usd": 1}),
    )
    .await;
    let body = json!({"model": "trickle-1", "stream": true, "max_tokens": 10,
        "messages": [{"role": "user", "content": "tell me a long story"}]});
    let req = http::Request::post(format!("{}/v1/chat/completions", gw.url))
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from(body.to_string())))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("x-ratelimit-remaining-tokens").is_some());
    let mut stream = resp.into_body();
    let first = stream.frame().await.unwrap().unwrap();
    assert!(first.is_data());
    // While the stream runs, its slot is taken.
    assert_eq!(chat_as(&gw, &key, "mock-1", 5).await.status, 429);
    drop(stream);
    let start = Instant::now();
    loop {
        let s = chat_as(&gw, &key, "mock-1", 5).await.status;
        if s == 200 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "slot never released ({s})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut gw = gw;
    assert_eq!(gw.stop(Duration::from_secs(10)), Some(0));
    let rows = usage_with_keys(&gw.db_path()).await;
    let abandoned = rows
        .iter()
        .find(|r| r["requested_model"] == "trickle-1")
        .unwrap();
    assert_eq!(abandoned["status"], 499);
    assert_eq!(abandoned["key_id"], json!(id));
    // No usage arrived: the prompt estimate (the whole body, about 30 tokens at 1 micro-USD)
    // plus the output streamed before the hang-up (2 micro-USD a token) is charged.
    let charged = abandoned["cost_micro_usd"].as_i64().unwrap();
    assert!((25..=45).contains(&charged), "{abandoned}");
}
