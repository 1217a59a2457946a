//! The request ledger: every request closes exactly once and is charged what the provider can
//! bill — on answers, hang-ups before the first byte and mid-stream, and shutdown's drain —
//! and budgets hold under concurrent clients that hang up at random points.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::gov::{admin, create_key, MASTER};
use common::*;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

/// A gateway in front of an external sluice-mock (so its cancel counter can be read), with
/// a priced route whose upstream answers after `latency_ms`.
fn config(mock: &str, latency_ms: u64, extra: &str) -> String {
    format!(
        r#"
server: {{master_key: {MASTER}, drain_timeout: 300ms}}
store: {{url: "{{DB}}"}}
providers:
  - name: up
    kind: openai_compatible
    base_url: {mock}/v1
    headers: {{x-mock-latency-ms: "{latency_ms}", x-mock-chunks: "8", x-mock-chunk-delay-ms: "40"}}
models:
  - name: priced
    deployments: [{{provider: up, model: mock-1, price: {{input: 100, output: 200}}}}]
  - name: free
    deployments: [{{provider: up, model: some-unpriced-model}}]
{extra}
"#
    )
}

/// Every usage record: request id, status, error class, cost, attempt log.
async fn records(db: &std::path::Path) -> Vec<Value> {
    use sqlx::Row;
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let rows = sqlx::query(
        "SELECT request_id, status, error_class, cost_micro_usd, input_tokens, output_tokens, \
         requested_model FROM usage_records ORDER BY rowid",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    rows.iter()
        .map(|r| {
            json!({
                "request_id": r.get::<String, _>(0),
                "status": r.get::<i64, _>(1),
                "error_class": r.get::<Option<String>, _>(2),
                "cost": r.get::<Option<i64>, _>(3),
                "input_tokens": r.get::<Option<i64>, _>(4),
                "output_tokens": r.get::<Option<i64>, _>(5),
                "model": r.get::<String, _>(6),
            })
        })
        .collect()
}

/// Waits until `want` records exist (the sink batches), at most 5 s.
async fn wait_records(db: &std::path::Path, want: usize) -> Vec<Value> {
    let until = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = records(db).await;
        if r.len() >= want || std::time::Instant::now() > until {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn mock_cancelled(mock: &str) -> u64 {
    let r = request("GET", &format!("{mock}/_mock/stats"), &[], String::new()).await;
    r.json()["cancelled"].as_u64().unwrap()
}

fn chat_body(model: &str, stream: bool, max_tokens: Option<u64>) -> String {
    let mut b = json!({"model": model, "stream": stream,
        "messages": [{"role": "user", "content": "tell me a long story about budgets"}]});
    if let Some(n) = max_tokens {
        b["max_tokens"] = json!(n);
    }
    b.to_string()
}

/// Sends a request and gives up on it after `after` (dropping the connection).
async fn hang_up(url: &str, key: &str, id: &str, body: String, after: Duration) {
    let auth = format!("Bearer {key}");
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
        ("x-request-id", id),
    ];
    let _ = tokio::time::timeout(after, request("POST", url, &headers, body)).await;
}

#[tokio::test]
async fn a_hang_up_before_the_first_byte_is_recorded_charged_and_cancelled_upstream() {
    let mock = start_mock().await;
    let gw = Gateway::start(&config(&mock, 600, ""));
    let (_, key) = create_key(&gw, json!({"budget_usd": "10", "budget_period": "monthly"})).await;
    let url = format!("{}/v1/chat/completions", gw.url);
    for (id, stream) in [("hang-json", false), ("hang-stream", true)] {
        hang_up(
            &url,
            &key,
            id,
            chat_body("priced", stream, Some(50)),
            Duration::from_millis(150),
        )
        .await;
    }
    let recs = wait_records(&gw.db_path(), 2).await;
    for id in ["hang-json", "hang-stream"] {
        let mine: Vec<&Value> = recs.iter().filter(|r| r["request_id"] == id).collect();
        assert_eq!(mine.len(), 1, "exactly one record for {id}: {recs:?}");
        let r = mine[0];
        assert_eq!(r["status"], 499, "{r}");
        assert_eq!(r["error_class"], "client_disconnected", "{r}");
        // The prompt reached the provider: it is charged at the input price.
        assert!(r["cost"].as_i64().unwrap() > 0, "{r}");
        assert!(r["input_tokens"].as_i64().unwrap() > 0, "{r}");
    }
    // The upstream requests were cancelled, not left running.
    let until = std::time::Instant::now() + Duration::from_secs(3);
    while mock_cancelled(&mock).await < 2 && std::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(mock_cancelled(&mock).await, 2);
    // And the key's spend counts what was recorded.
    let info = admin(&gw, &key, "GET", "/v1/key/info", Value::Null)
        .await
        .json();
    let spent = micro(&info["budgets"][0]["spend_usd"]);
    let recorded: i64 = recs.iter().filter_map(|r| r["cost"].as_i64()).sum();
    assert_eq!(spent, recorded, "{info}");
}

fn micro(v: &Value) -> i64 {
    let s = v.as_str().map_or_else(|| v.to_string(), str::to_string);
    let (whole, frac) = s.split_once('.').unwrap_or((&s, ""));
    whole.parse::<i64>().unwrap() * 1_000_000 + format!("{frac:0<6}").parse::<i64>().unwrap()
}

#[tokio::test]
async fn a_budget_holds_under_50_clients_that_hang_up_at_random_points() {
    let mock = start_mock().await;
    let gw = Gateway::start(&config(&mock, 250, ""));
    let (_, key) = create_key(
        &gw,
        json!({"budget_usd": "0.50", "budget_period": "monthly"}),
    )
    .await;
    let url = format!("{}/v1/chat/completions", gw.url);
    // Worst case of one request with max_tokens 400: ~15 prompt tokens * 100 + 400 * 200.
    let worst_one: i64 = 120_000;
    let mut tasks = Vec::new();
    for i in 0..50u64 {
        let (url, key) = (url.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let mut sent = 0;
            let mut statuses = Vec::new();
            for round in 0..8u64 {
                let id = format!("c{i}-{round}");
                let stream = (i + round) % 2 == 0;
                // Some clients send no max_tokens (the model's max output is reserved).
                let max = if i % 5 == 0 { None } else { Some(400) };
                let body = chat_body("priced", stream, max);
                sent += 1;
                match (i * 7 + round * 3) % 3 {
                    // A third hang up: before headers, or mid-stream.
                    0 => {
                        // Late enough that the gateway has the request (a connection
                        // dropped before it was read is no request), early enough to
                        // land before the answer (250 ms) or mid-stream (8 x 40 ms).
                        let after = Duration::from_millis(120 + (i * 13 + round * 29) % 300);
                        hang_up(&url, &key, &id, body, after).await;
                        statuses.push(499);
                    }
                    _ => {
                        let auth = format!("Bearer {key}");
                        let r = request(
                            "POST",
                            &url,
                            &[
                                ("authorization", &auth),
                                ("content-type", "application/json"),
                                ("x-request-id", &id),
                            ],
                            body,
                        )
                        .await;
                        statuses.push(r.status);
                    }
                }
            }
            (sent, statuses)
        }));
    }
    let mut ids = 0;
    let mut refused = 0;
    for t in tasks {
        let (n, statuses) = t.await.unwrap();
        ids += n;
        refused += statuses.iter().filter(|s| **s == 429).count();
    }
    assert!(refused > 0, "the budget never refused anything");
    // Let hung-up requests close (the gateway notices the hang-up, upstream answers land).
    tokio::time::sleep(Duration::from_millis(800)).await;
    let recs = wait_records(&gw.db_path(), ids).await;
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for r in &recs {
        *per_id
            .entry(r["request_id"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    for i in 0..50u64 {
        for round in 0..8u64 {
            let id = format!("c{i}-{round}");
            assert_eq!(
                per_id.get(&id).copied().unwrap_or(0),
                1,
                "request {id} must have exactly one record"
            );
        }
    }
    let recorded: i64 = recs.iter().filter_map(|r| r["cost"].as_i64()).sum();
    let info = admin(&gw, &key, "GET", "/v1/key/info", Value::Null)
        .await
        .json();
    let spent = micro(&info["budgets"][0]["spend_usd"]);
    assert_eq!(spent, recorded, "records and the key's spend agree: {info}");
    assert!(
        spent <= 500_000 + worst_one,
        "spend {spent} exceeds the budget by more than one request's worst case"
    );
    // Hang-ups were charged, not free.
    assert!(recs
        .iter()
        .any(|r| r["status"] == 499 && r["cost"].as_i64().unwrap_or(0) > 0));
}

#[tokio::test]
async fn unpriced_models_are_refused_to_budgets_or_recorded_as_unknown() {
    let mock = start_mock().await;
    let gw = Gateway::start(&config(&mock, 0, ""));
    let (_, budgeted) =
        create_key(&gw, json!({"budget_usd": "10", "budget_period": "monthly"})).await;
    let r = common::gov::chat_as(&gw, &budgeted, "free", 10).await;
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    let e = r.openai_error();
    assert_eq!(e["code"], "model_unpriced");
    assert!(e["message"].as_str().unwrap().contains("free"), "{e}");
    // Start-up names the unpriced route.
    assert!(
        gw.stderr()
            .contains("route `free` deployment `up/some-unpriced-model` has no price"),
        "{}",
        gw.stderr()
    );

    let gw2 = Gateway::start(&config(&mock, 0, "governance: {unpriced: allow}"));
    let (_, budgeted) = create_key(
        &gw2,
        json!({"budget_usd": "10", "budget_period": "monthly"}),
    )
    .await;
    let r = common::gov::chat_as(&gw2, &budgeted, "free", 10).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let recs = wait_records(&gw2.db_path(), 1).await;
    let rec = recs.iter().find(|r| r["model"] == "free").unwrap();
    assert!(rec["cost"].is_null(), "unknown, never 0: {rec}");
    assert!(rec["input_tokens"].as_i64().unwrap() > 0);
    let m = request(
        "GET",
        &format!("{}/metrics", gw2.url),
        &[("authorization", &format!("Bearer {MASTER}"))],
        String::new(),
    )
    .await;
    let usage = request(
        "GET",
        &format!("{}/admin/usage?group_by=model", gw2.url),
        &[("authorization", &format!("Bearer {MASTER}"))],
        String::new(),
    )
    .await
    .json();
    let row = usage["rows"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["model"] == "free"))
        .cloned()
        .unwrap_or_else(|| panic!("no row for `free`: {usage}"));
    assert_eq!(row["unpriced_requests"], 1, "{row}");
    assert!(
        String::from_utf8_lossy(&m.body).contains("sluice_unpriced_requests_total"),
        "{}",
        String::from_utf8_lossy(&m.body)
    );
}

#[tokio::test]
async fn output_limits_are_parsed_bounded_and_budgets_refuse_or_cap() {
    let mock = start_mock().await;
    let gw = Gateway::start(&config(&mock, 0, ""));
    let url = format!("{}/v1/chat/completions", gw.url);
    let auth = format!("Bearer {MASTER}");
    let send = |body: String| {
        let (url, auth) = (url.clone(), auth.clone());
        async move {
            request(
                "POST",
                &url,
                &[
                    ("authorization", &auth),
                    ("content-type", "application/json"),
                ],
                body,
            )
            .await
        }
    };
    for ok in [r#"40"#, r#"40.0"#, r#""40""#] {
        let b = format!(
            r#"{{"model":"priced","max_tokens":{ok},"messages":[{{"role":"user","content":"hi"}}]}}"#
        );
        assert_eq!(send(b).await.status, 200, "max_tokens {ok}");
    }
    for bad in [r#"-1"#, r#"4.5"#, r#""lots""#, r#"true"#, r#"1e400"#] {
        let b = format!(
            r#"{{"model":"priced","max_completion_tokens":{bad},"messages":[{{"role":"user","content":"hi"}}]}}"#
        );
        let r = send(b).await;
        assert_eq!(
            r.status,
            400,
            "max_completion_tokens {bad}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.openai_error()["param"], "max_completion_tokens");
    }
    // mock-1's catalog max output is 4096: above it is the client's error, naming both.
    let r = send(chat_body("priced", false, Some(u64::MAX))).await;
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    let msg = r.openai_error()["message"].as_str().unwrap().to_string();
    assert!(msg.contains("max_tokens") && msg.contains("4096"), "{msg}");

    // A budget that cannot pay the worst case: 429 saying what is left and what it could cost.
    let (_, key) = create_key(
        &gw,
        json!({"budget_usd": "0.5", "budget_period": "monthly"}),
    )
    .await;
    let r = common::gov::chat_as(&gw, &key, "priced", 4000).await;
    assert_eq!(r.status, 429, "{}", String::from_utf8_lossy(&r.body));
    let e = r.openai_error();
    assert_eq!(e["code"], "insufficient_quota");
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains("left") && msg.contains("could cost"), "{msg}");

    // cap_output: the same request goes out with a lower limit, and says so.
    let gw2 = Gateway::start(&config(
        &mock,
        0,
        "governance: {when_budget_short: cap_output}",
    ));
    let (_, key) = create_key(
        &gw2,
        json!({"budget_usd": "0.5", "budget_period": "monthly"}),
    )
    .await;
    let r = common::gov::chat_as(&gw2, &key, "priced", 4000).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let capped: u64 = r.header("x-sluice-output-capped").unwrap().parse().unwrap();
    assert!(capped < 4000 && capped > 2000, "{capped}");
    let last = request(
        "GET",
        &format!("{mock}/_mock/last_request"),
        &[],
        String::new(),
    )
    .await;
    assert_eq!(last.json()["body"]["max_tokens"], json!(capped));
}

#[tokio::test]
async fn a_request_still_open_when_the_drain_runs_out_is_recorded() {
    let mock = start_mock().await;
    let mut gw = Gateway::start(&config(&mock, 3000, ""));
    let url = format!("{}/v1/chat/completions", gw.url);
    let body = chat_body("priced", false, Some(20));
    let pending = tokio::spawn(async move {
        request(
            "POST",
            &url,
            &[
                ("authorization", &format!("Bearer {MASTER}")),
                ("content-type", "application/json"),
                ("x-request-id", "in-flight"),
            ],
            body,
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.terminate();
    assert_eq!(gw.wait_exit(Duration::from_secs(10)), Some(0));
    let _ = pending.await;
    let recs = records(&gw.db_path()).await;
    let r = recs
        .iter()
        .find(|r| r["request_id"] == "in-flight")
        .unwrap_or_else(|| panic!("no record for the in-flight request: {recs:?}"));
    assert_eq!(r["error_class"], "drain_timeout", "{r}");
    assert!(r["cost"].as_i64().unwrap() > 0, "the prompt was sent: {r}");
}
