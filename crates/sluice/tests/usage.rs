//! Usage records end to end: traffic through the real binary (JSON, streams, upstream
//! errors, fallbacks, limit and policy rejections), then every record's fields and costs,
//! the analytics API and CLI against sums computed here, and `/metrics` parsed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::gov::{admin, create_key, MASTER};
use common::*;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

/// An OpenAI-compatible upstream that always reports cached and reasoning tokens.
async fn start_fixed_upstream() -> String {
    use axum::routing::post;
    async fn chat(body: String) -> axum::response::Response {
        use axum::response::IntoResponse;
        let v: Value = serde_json::from_str(&body).unwrap();
        let usage = json!({"prompt_tokens": 1000, "completion_tokens": 200, "total_tokens": 1200,
            "prompt_tokens_details": {"cached_tokens": 400},
            "completion_tokens_details": {"reasoning_tokens": 50}});
        if v["stream"] == json!(true) {
            let chunk = json!({"id": "f1", "object": "chat.completion.chunk", "model": v["model"],
                "choices": [{"index": 0, "delta": {"content": "fixed"}, "finish_reason": null}]});
            let last = json!({"id": "f1", "object": "chat.completion.chunk", "model": v["model"],
                "choices": [], "usage": usage});
            let text = format!("data: {chunk}\n\ndata: {last}\n\ndata: [DONE]\n\n");
            ([(http::header::CONTENT_TYPE, "text/event-stream")], text).into_response()
        } else {
            axum::Json(
                json!({"id": "f1", "object": "chat.completion", "model": v["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "fixed"},
                "finish_reason": "stop"}], "usage": usage}),
            )
            .into_response()
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route("/v1/chat/completions", post(chat));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

fn config(mock: &str, fixed: &str) -> String {
    format!(
        r#"
server: {{master_key: {MASTER}, public_metrics: true}}
store: {{url: "{{DB}}"}}
usage: {{flush_interval: 50ms}}
providers:
  - {{name: local, kind: mock}}
  - {{name: fixed, kind: openai_compatible, base_url: "{fixed}/v1"}}
  - name: broken
    kind: openai_compatible
    base_url: "{mock}/v1"
    headers: {{x-mock-status: "500"}}
models:
  - {{name: mock-1, deployments: [{{provider: local, model: mock-1}}]}}
  - {{name: mock-2, deployments: [{{provider: local, model: mock-2}}]}}
  - {{name: cached, deployments: [{{provider: fixed, model: gpt-4o}}]}}
  - name: broken
    deployments: [{{provider: broken, model: mock-1}}]
    retries: {{max_attempts: 1}}
  - name: rescued
    deployments: [{{provider: broken, model: mock-1}}]
    retries: {{max_attempts: 2, backoff: 1ms}}
    fallbacks: [mock-1]
policies:
  - {{name: no-cards, stage: input, detect: [payment_card], action: block}}
"#
    )
}

async fn chat(gw: &Gateway, key: &str, id: &str, body: Value) -> Reply {
    let auth = format!("Bearer {key}");
    request(
        "POST",
        &format!("{}/v1/chat/completions", gw.url),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
            ("x-request-id", id),
        ],
        body.to_string(),
    )
    .await
}

fn msg(model: &str) -> Value {
    json!({"model": model, "max_tokens": 50, "messages": [{"role": "user", "content": "hello there"}]})
}

/// Every column of every record, by request id.
async fn records(db: &std::path::Path) -> HashMap<String, Value> {
    use sqlx::{Column, Row, ValueRef};
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let rows = sqlx::query("SELECT * FROM usage_records")
        .fetch_all(&pool)
        .await
        .unwrap();
    let mut out = HashMap::new();
    for r in rows {
        let mut m = serde_json::Map::new();
        for (i, c) in r.columns().iter().enumerate() {
            let raw = r.try_get_raw(i).unwrap();
            let v = if raw.is_null() {
                Value::Null
            } else if let Ok(n) = r.try_get::<i64, _>(i) {
                json!(n)
            } else {
                json!(r.try_get::<String, _>(i).unwrap())
            };
            m.insert(c.name().to_string(), v);
        }
        out.insert(
            m["request_id"].as_str().unwrap().to_string(),
            Value::Object(m),
        );
    }
    pool.close().await;
    out
}

/// Prometheus text format: `(name, labels, value)` for every sample line.
fn parse_prometheus(text: &str) -> Vec<(String, HashMap<String, String>, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample line has a value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line}"));
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), HashMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("labels close");
                let mut labels = HashMap::new();
                let mut chars = body.chars().peekable();
                while chars.peek().is_some() {
                    let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
                    assert_eq!(chars.next(), Some('"'), "label value is quoted: {line}");
                    let mut val = String::new();
                    while let Some(c) = chars.next() {
                        match c {
                            '\\' => val.push(chars.next().unwrap()),
                            '"' => break,
                            c => val.push(c),
                        }
                    }
                    if chars.peek() == Some(&',') {
                        chars.next();
                    }
                    labels.insert(key.trim().to_string(), val);
                }
                (name.to_string(), labels)
            }
        };
        out.push((name, labels, value));
    }
    out
}

fn sum(
    samples: &[(String, HashMap<String, String>, f64)],
    name: &str,
    want: &[(&str, &str)],
) -> f64 {
    samples
        .iter()
        .filter(|(n, l, _)| {
            n == name
                && want
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

fn usage_of(r: &Reply) -> (i64, i64) {
    let v = r.json();
    (
        v["usage"]["prompt_tokens"].as_i64().unwrap(),
        v["usage"]["completion_tokens"].as_i64().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_outcome_is_recorded_with_its_fields_costs_and_metrics() {
    let mock = start_mock().await;
    let fixed = start_fixed_upstream().await;
    let mut gw = Gateway::start(&config(&mock, &fixed));
    let r = admin(&gw, MASTER, "POST", "/admin/teams", json!({"name": "eng"})).await;
    assert_eq!(r.status, 201);
    let r = admin(
        &gw,
        MASTER,
        "POST",
        "/admin/users",
        json!({"name": "ana", "team": "eng"}),
    )
    .await;
    assert_eq!(r.status, 201);
    let (key_id, key) = create_key(
        &gw,
        json!({"team": "eng", "user": "ana", "rpm": 5, "metadata": {"app": "billing"}}),
    )
    .await;

    // 1-5 with the key (rpm 5), 6 is rate limited.
    let json_ok = chat(&gw, &key, "t-json", msg("mock-1")).await;
    assert_eq!(json_ok.status, 200);
    let s = {
        let mut body = msg("mock-1");
        body["stream"] = json!(true);
        let auth = format!("Bearer {key}");
        let req = http::Request::builder()
            .method("POST")
            .uri(format!("{}/v1/chat/completions", gw.url))
            .header("authorization", auth)
            .header("content-type", "application/json")
            .header("x-request-id", "t-stream")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                body.to_string(),
            )))
            .unwrap();
        let resp = client().request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        Streamed {
            status: 200,
            headers: resp.headers().clone(),
            frames: read_frames(resp.into_body()).await,
        }
    };
    assert!(s.text().contains("[DONE]"));
    let cached = chat(&gw, &key, "t-cached", msg("cached")).await;
    assert_eq!(cached.status, 200);
    let broken = chat(&gw, &key, "t-upstream-error", msg("broken")).await;
    assert_eq!(broken.status, 500);
    let rescued = chat(&gw, &key, "t-fallback", msg("rescued")).await;
    assert_eq!(
        rescued.status,
        200,
        "{}",
        String::from_utf8_lossy(&rescued.body)
    );
    let limited = chat(&gw, &key, "t-rate-limited", msg("mock-1")).await;
    assert_eq!(limited.status, 429);
    // With the master key: a policy block and an unknown model.
    let mut card = msg("mock-1");
    card["messages"][0]["content"] = json!("my card is 4111 1111 1111 1111");
    assert_eq!(chat(&gw, MASTER, "t-blocked", card).await.status, 400);
    assert_eq!(
        chat(&gw, MASTER, "t-unknown", msg("nope-9")).await.status,
        404
    );

    // Metrics, scraped while running (after a flush interval, so the sink has written).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let m = request("GET", &format!("{}/metrics", gw.url), &[], "").await;
    let samples = parse_prometheus(&String::from_utf8_lossy(&m.body));

    assert_eq!(gw.stop(Duration::from_secs(10)), Some(0));
    let recs = records(&gw.db_path()).await;
    assert_eq!(recs.len(), 8, "{recs:#?}");

    // Fields common to the key's requests.
    for id in [
        "t-json",
        "t-stream",
        "t-cached",
        "t-upstream-error",
        "t-fallback",
        "t-rate-limited",
    ] {
        let r = &recs[id];
        assert_eq!(r["key_id"], json!(key_id), "{id}");
        assert_eq!(
            r["key_prefix"].as_str().map(|p| key.starts_with(p)),
            Some(true),
            "{id}"
        );
        assert_eq!(r["team"], json!("eng"), "{id}");
        assert_eq!(r["user_name"], json!("ana"), "{id}");
        assert_eq!(r["tags"], json!(r#"{"app":"billing"}"#), "{id}");
        assert_eq!(r["surface"], json!("openai.chat"), "{id}");
        assert!(r["latency_us"].as_i64().unwrap() > 0, "{id}");
        assert!(
            !r.to_string().contains(&key),
            "the key itself is never recorded"
        );
    }

    // JSON success on mock-1: 1 micro-USD per input token, 2 per output token.
    let (pin, pout) = usage_of(&json_ok);
    let r = &recs["t-json"];
    assert_eq!(r["status"], json!(200));
    assert_eq!(r["streamed"], json!(0));
    assert_eq!(
        (r["input_tokens"].as_i64(), r["output_tokens"].as_i64()),
        (Some(pin), Some(pout))
    );
    assert_eq!(r["cost_micro_usd"], json!(pin + 2 * pout));
    assert_eq!(r["catalog_version"], json!("builtin-2026.12"));
    assert_eq!(r["provider"], json!("local"));
    assert_eq!(r["deployment_model"], json!("mock-1"));
    assert_eq!(r["requested_model"], json!("mock-1"));
    assert_eq!(r["attempts"], json!(1));
    assert_eq!(r["route_reason"], json!("single"));
    assert_eq!(r["fallback_reason"], Value::Null);
    assert!(r["overhead_us"].as_i64().unwrap() <= r["latency_us"].as_i64().unwrap());

    // Stream: tokens from the final usage event, time to first token.
    let r = &recs["t-stream"];
    assert_eq!(r["streamed"], json!(1));
    assert_eq!(r["status"], json!(200));
    let (sin, sout) = (
        r["input_tokens"].as_i64().unwrap(),
        r["output_tokens"].as_i64().unwrap(),
    );
    assert!(sin > 0 && sout > 0);
    assert_eq!(r["cost_micro_usd"], json!(sin + 2 * sout));
    let ttft = r["ttft_us"].as_i64().unwrap();
    assert!(ttft > 0 && ttft <= r["latency_us"].as_i64().unwrap());

    // Cached and reasoning tokens at gpt-4o's catalog prices ($2.50 / $1.25 cached / $10 per
    // 1M): 600 * 2.5 + 400 * 1.25 + 200 * 10 = 1500 + 500 + 2000 micro-USD.
    let r = &recs["t-cached"];
    assert_eq!(r["input_tokens"], json!(1000));
    assert_eq!(r["cached_input_tokens"], json!(400));
    assert_eq!(r["reasoning_tokens"], json!(50));
    assert_eq!(r["output_tokens"], json!(200));
    assert_eq!(r["cost_micro_usd"], json!(4000));
    assert_eq!(r["deployment_model"], json!("gpt-4o"));

    // Upstream error: status, class, provider, no tokens, nothing charged.
    let r = &recs["t-upstream-error"];
    assert_eq!(r["status"], json!(500));
    assert_eq!(r["provider"], json!("broken"));
    assert!(
        r["error_class"].as_str().is_some_and(|c| !c.is_empty()),
        "{r}"
    );
    assert_eq!(r["input_tokens"], Value::Null);
    assert_eq!(r["attempts"], json!(1));

    // Fallback: answered by mock-1 after the broken route failed.
    let r = &recs["t-fallback"];
    assert_eq!(r["status"], json!(200));
    assert_eq!(r["provider"], json!("local"));
    assert_eq!(r["attempts"], json!(2));
    assert_eq!(r["fallback_reason"], json!("server_error"));
    assert_eq!(r["route_reason"], json!("fallback_route"));

    // Rejections.
    let r = &recs["t-rate-limited"];
    assert_eq!(
        (r["status"].clone(), r["error_class"].clone()),
        (json!(429), json!("rate_limited"))
    );
    assert_eq!(r["attempts"], json!(0));
    let r = &recs["t-blocked"];
    assert_eq!(r["status"], json!(400));
    assert_eq!(r["error_class"], json!("content_policy_violation"));
    assert_eq!(r["principal"], json!("master"));
    assert!(r["policy_hits"].as_str().unwrap().contains("no-cards"));
    assert!(
        !r.to_string().contains("4111"),
        "matched text is never recorded"
    );
    let r = &recs["t-unknown"];
    assert_eq!(
        (r["status"].clone(), r["error_class"].clone()),
        (json!(404), json!("model_not_found"))
    );

    // Metrics agree with the records.
    let total_cost: i64 = recs
        .values()
        .filter_map(|r| r["cost_micro_usd"].as_i64())
        .sum();
    assert_eq!(
        sum(&samples, "sluice_cost_micro_usd_total", &[]),
        total_cost as f64
    );
    assert_eq!(sum(&samples, "sluice_requests_total", &[]), 8.0);
    assert_eq!(
        sum(&samples, "sluice_requests_total", &[("status", "2xx")]),
        4.0
    );
    assert_eq!(
        sum(&samples, "sluice_tokens_total", &[("kind", "cached_input")]),
        400.0
    );
    assert_eq!(
        sum(&samples, "sluice_tokens_total", &[("kind", "reasoning")]),
        50.0
    );
    let in_tokens: i64 = recs
        .values()
        .filter_map(|r| r["input_tokens"].as_i64())
        .sum();
    assert_eq!(
        sum(&samples, "sluice_tokens_total", &[("kind", "input")]),
        in_tokens as f64
    );
    assert_eq!(
        sum(
            &samples,
            "sluice_rejections_total",
            &[("reason", "rate_limited")]
        ),
        1.0
    );
    assert_eq!(
        sum(
            &samples,
            "sluice_rejections_total",
            &[("reason", "content_policy_violation")]
        ),
        1.0
    );
    assert_eq!(
        sum(
            &samples,
            "sluice_upstream_errors_total",
            &[("provider", "broken")]
        ),
        1.0
    );
    assert_eq!(
        sum(
            &samples,
            "sluice_fallbacks_total",
            &[("reason", "server_error")]
        ),
        1.0
    );
    assert_eq!(sum(&samples, "sluice_retries_total", &[]), 1.0);
    assert_eq!(
        sum(
            &samples,
            "sluice_time_to_first_token_seconds_count",
            &[("model", "mock-1")]
        ),
        1.0
    );
    assert!(samples
        .iter()
        .any(|(n, l, _)| n == "sluice_breaker_state" && l["provider"] == "broken"));
    assert!(samples
        .iter()
        .any(|(n, _, _)| n == "sluice_usage_queue_depth"));
    assert!(samples
        .iter()
        .any(|(n, _, _)| n == "sluice_request_duration_seconds_bucket"));
    assert!(sum(&samples, "sluice_usage_records_written_total", &[]) >= 1.0);
    // Low cardinality: no key ids or request ids in labels.
    assert!(samples
        .iter()
        .all(|(_, l, _)| l.values().all(|v| v != &key_id && !v.starts_with("t-"))));
}

/// Traffic over two teams and two models; the analytics API, the performance view, the
/// request log and the CLI all agree with sums computed from the responses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_group_by_equals_sums_computed_from_the_responses() {
    let mock = start_mock().await;
    let fixed = start_fixed_upstream().await;
    let gw = Gateway::start(&config(&mock, &fixed));
    for t in ["eng", "ops"] {
        assert_eq!(
            admin(&gw, MASTER, "POST", "/admin/teams", json!({"name": t}))
                .await
                .status,
            201
        );
    }
    let (_, eng) = create_key(&gw, json!({"team": "eng"})).await;
    let (_, ops) = create_key(&gw, json!({"team": "ops"})).await;
    let (_, eng_admin) = create_key(&gw, json!({"team": "eng", "role": "team_admin"})).await;

    // (team, model) -> [requests, input, output, cost, errors]
    let mut want: HashMap<(String, String), [i64; 5]> = HashMap::new();
    let plan = [
        ("eng", &eng, "mock-1", 4),
        ("eng", &eng, "mock-2", 3),
        ("ops", &ops, "mock-1", 2),
        ("ops", &ops, "broken", 2),
    ];
    let mut n = 0;
    for (team, key, model, count) in plan {
        for i in 0..count {
            n += 1;
            let mut body = msg(model);
            body["messages"][0]["content"] = json!("x ".repeat(1 + i * 7));
            let r = chat(&gw, key, &format!("a-{n}"), body).await;
            let e = want
                .entry((team.to_string(), model.to_string()))
                .or_default();
            e[0] += 1;
            if r.status == 200 {
                let (pin, pout) = usage_of(&r);
                let (pi, po) = if model == "mock-2" { (3, 6) } else { (1, 2) };
                e[1] += pin;
                e[2] += pout;
                e[3] += pin * pi + pout * po;
            } else {
                e[4] += 1;
            }
        }
    }
    // Records reach the store within the flush interval (50 ms here).
    tokio::time::sleep(Duration::from_millis(400)).await;

    let r = admin(
        &gw,
        MASTER,
        "GET",
        "/admin/usage?group_by=team,model&since=1h",
        Value::Null,
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let rows = r.json()["rows"].as_array().unwrap().clone();
    assert_eq!(rows.len(), want.len(), "{rows:#?}");
    for row in &rows {
        let k = (
            row["team"].as_str().unwrap().to_string(),
            row["model"].as_str().unwrap().to_string(),
        );
        let w = want[&k];
        assert_eq!(row["requests"], json!(w[0]), "{k:?}");
        assert_eq!(row["input_tokens"], json!(w[1]), "{k:?}");
        assert_eq!(row["output_tokens"], json!(w[2]), "{k:?}");
        assert_eq!(row["cost_micro_usd"], json!(w[3]), "{k:?}");
        assert_eq!(row["errors"], json!(w[4]), "{k:?}");
        assert!(row["cost_usd"].as_f64().unwrap() - w[3] as f64 / 1e6 < 1e-9);
        assert!(row["p50_latency_ms"].as_f64().unwrap() <= row["p95_latency_ms"].as_f64().unwrap());
    }

    // Filters and a time bucket: one day row holding everything.
    let r = admin(
        &gw,
        MASTER,
        "GET",
        "/admin/usage?group_by=day&status=error",
        Value::Null,
    )
    .await;
    let rows = r.json()["rows"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["requests"], json!(2));
    assert!(rows[0]["bucket"].as_str().unwrap().ends_with("T00:00:00Z"));
    let r = admin(
        &gw,
        MASTER,
        "GET",
        "/admin/usage?group_by=colour",
        Value::Null,
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.openai_error()["param"], json!("group_by"));
    let r = admin(
        &gw,
        MASTER,
        "GET",
        "/admin/usage?since=yesterday-ish",
        Value::Null,
    )
    .await;
    assert_eq!(r.status, 400);

    // A team_admin sees only its team.
    let r = admin(
        &gw,
        &eng_admin,
        "GET",
        "/admin/usage?group_by=team",
        Value::Null,
    )
    .await;
    assert_eq!(r.status, 200);
    let rows = r.json()["rows"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["team"], json!("eng"));
    assert_eq!(rows[0]["requests"], json!(7));
    assert_eq!(
        admin(&gw, &eng_admin, "GET", "/admin/usage?team=ops", Value::Null)
            .await
            .status,
        403
    );
    assert_eq!(
        admin(&gw, &eng, "GET", "/admin/usage", Value::Null)
            .await
            .status,
        403
    );

    // Performance per deployment.
    let r = admin(&gw, MASTER, "GET", "/admin/performance", Value::Null).await;
    let rows = r.json()["rows"].as_array().unwrap().clone();
    let broken = rows
        .iter()
        .find(|r| r["provider"] == json!("broken"))
        .unwrap();
    assert_eq!(broken["error_rate"], json!(1.0));
    let local = rows
        .iter()
        .find(|r| r["provider"] == json!("local") && r["deployment"] == json!("mock-1"))
        .unwrap();
    assert_eq!(local["requests"], json!(6));
    assert!(local["output_tokens_per_second"].as_f64().unwrap() > 0.0);
    assert!(local.get("cost_usd").is_none());

    // The request log, paged: every request once.
    let mut seen = std::collections::HashSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/admin/requests?limit=4&cursor={c}"),
            None => "/admin/requests?limit=4".to_string(),
        };
        let page = admin(&gw, MASTER, "GET", &path, Value::Null).await.json();
        for d in page["data"].as_array().unwrap() {
            assert!(seen.insert(d["request_id"].as_str().unwrap().to_string()));
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), n);
    let page = admin(
        &gw,
        &eng_admin,
        "GET",
        "/admin/requests?limit=100",
        Value::Null,
    )
    .await
    .json();
    assert_eq!(page["data"].as_array().unwrap().len(), 7);

    // The CLI prints the same numbers (CSV) and a table.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "usage",
            "--by",
            "team,model",
            "--since",
            "7d",
            "--format",
            "csv",
        ])
        .env("SLUICE_URL", &gw.url)
        .env("SLUICE_MASTER_KEY", MASTER)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let mut csv_rows = 0;
    for line in lines {
        let cells: Vec<&str> = line.split(',').collect();
        let k = (
            cells[col("team")].to_string(),
            cells[col("model")].to_string(),
        );
        assert_eq!(cells[col("requests")], want[&k][0].to_string());
        assert_eq!(cells[col("output_tokens")], want[&k][2].to_string());
        csv_rows += 1;
    }
    assert_eq!(csv_rows, want.len());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["usage", "--by", "model"])
        .env("SLUICE_URL", &gw.url)
        .env("SLUICE_MASTER_KEY", MASTER)
        .output()
        .unwrap();
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.starts_with("MODEL"), "{table}");
    assert!(table.contains("mock-2"), "{table}");
}
