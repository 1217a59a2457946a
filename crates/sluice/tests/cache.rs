//! The exact response cache through the real gateway: hits never reach the upstream, answers
//! replay between JSON and SSE, scopes isolate teams, TTLs expire, Cache-Control is honoured,
//! abandoned streams are not stored, and hits are recorded with what they saved.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::gov::{admin, create_key, MASTER};
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

fn config(mock: &str) -> String {
    format!(
        r#"
server: {{master_key: {MASTER}}}
store: {{url: "{{DB}}"}}
cache: {{ttl: 1h, scope: team}}
providers:
  - name: up
    kind: openai_compatible
    base_url: {mock}/v1
    headers: {{x-mock-chunks: "4", x-mock-chunk-delay-ms: "30"}}
models:
  - name: chat
    deployments: [{{provider: up, model: mock-1}}]
  - name: nocache
    cache: false
    deployments: [{{provider: up, model: mock-1}}]
"#
    )
}

async fn upstream_requests(mock: &str) -> u64 {
    let r = request("GET", &format!("{mock}/_mock/stats"), &[], String::new()).await;
    r.json()["requests"].as_u64().unwrap()
}

fn body(prompt: &str, stream: bool) -> String {
    json!({"model": "chat", "stream": stream, "max_tokens": 20,
           "messages": [{"role": "user", "content": prompt}]})
    .to_string()
}

async fn send(gw: &Gateway, key: &str, body: String, extra: &[(&str, &str)]) -> Reply {
    let auth = format!("Bearer {key}");
    let mut headers = vec![
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    headers.extend_from_slice(extra);
    request(
        "POST",
        &format!("{}/v1/chat/completions", gw.url),
        &headers,
        body,
    )
    .await
}

fn content(r: &Reply) -> String {
    r.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The text of an SSE answer's content deltas.
fn streamed_text(r: &Reply) -> String {
    String::from_utf8_lossy(&r.body)
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

#[tokio::test]
async fn hits_skip_the_upstream_and_replay_in_the_clients_shape() {
    let mock = start_mock().await;
    let gw = Gateway::start(&config(&mock));
    let first = send(&gw, MASTER, body("tell me about caches", false), &[]).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-sluice-cache"), Some("miss"));
    let second = send(&gw, MASTER, body("tell me about caches", false), &[]).await;
    assert_eq!(second.header("x-sluice-cache"), Some("hit"));
    assert!(second.header("age").is_some());
    assert_eq!(content(&first), content(&second));
    assert_eq!(
        upstream_requests(&mock).await,
        1,
        "a hit never reaches the upstream"
    );

    // JSON stored -> replayed as a stream (with the usage chunk when asked).
    let mut b: Value = serde_json::from_str(&body("tell me about caches", true)).unwrap();
    b["stream_options"] = json!({"include_usage": true});
    let streamed = send(&gw, MASTER, b.to_string(), &[]).await;
    assert_eq!(streamed.header("x-sluice-cache"), Some("hit"));
    assert!(streamed
        .header("content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    assert_eq!(streamed_text(&streamed), content(&first));
    assert!(String::from_utf8_lossy(&streamed.body).contains("\"usage\":{"));
    assert_eq!(upstream_requests(&mock).await, 1);

    // A stream stored once it completed -> replayed as JSON.
    let s = send(&gw, MASTER, body("stream me a story", true), &[]).await;
    assert_eq!(s.header("x-sluice-cache"), Some("miss"));
    let text = streamed_text(&s);
    assert!(!text.is_empty());
    let j = send(&gw, MASTER, body("stream me a story", false), &[]).await;
    assert_eq!(
        j.header("x-sluice-cache"),
        Some("hit"),
        "{}",
        String::from_utf8_lossy(&j.body)
    );
    assert_eq!(content(&j), text);
    assert_eq!(upstream_requests(&mock).await, 2);

    // The Anthropic surface goes through the same pipeline: a repeated message is a hit.
    let msg = json!({"model": "chat", "max_tokens": 20,
                     "messages": [{"role": "user", "content": "anthropic asks"}]})
    .to_string();
    let before = upstream_requests(&mock).await;
    let mut outcomes = Vec::new();
    for _ in 0..2 {
        let r = request(
            "POST",
            &format!("{}/v1/messages", gw.url),
            &[("x-api-key", MASTER), ("content-type", "application/json")],
            msg.clone(),
        )
        .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["type"], "message");
        outcomes.push(r.header("x-sluice-cache").map(str::to_string));
    }
    assert_eq!(
        outcomes,
        [Some("miss".to_string()), Some("hit".to_string())]
    );
    assert_eq!(upstream_requests(&mock).await, before + 1);

    // A route with `cache: false` never uses it.
    let mut nb: Value = serde_json::from_str(&body("tell me about caches", false)).unwrap();
    nb["model"] = json!("nocache");
    let n = send(&gw, MASTER, nb.to_string(), &[]).await;
    assert_eq!(n.status, 200);
    assert_eq!(n.header("x-sluice-cache"), None);
    assert_eq!(upstream_requests(&mock).await, 4);

    // Hits are recorded with what they saved; stats and clearing through the admin API.
    let stats = admin(&gw, MASTER, "GET", "/admin/cache", Value::Null)
        .await
        .json();
    assert!(stats["hits"].as_u64().unwrap() >= 3, "{stats}");
    // Usage records are written in batches: wait for all five of `chat` (openai.chat).
    let mut chat = Value::Null;
    for _ in 0..100 {
        let usage = admin(
            &gw,
            MASTER,
            "GET",
            "/admin/usage?group_by=model,surface",
            Value::Null,
        )
        .await
        .json();
        chat = usage["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["model"] == "chat" && r["surface"] == "openai.chat")
            .cloned()
            .unwrap_or(Value::Null);
        if chat["requests"] == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(chat["requests"], 5, "{chat}");
    assert_eq!(chat["cache_hits"], 3, "{chat}");
    assert_eq!(chat["errors"], 0, "{chat}");
    assert!(chat["cost_saved_micro_usd"].as_i64().unwrap() > 0, "{chat}");
    let cleared = admin(
        &gw,
        MASTER,
        "DELETE",
        "/admin/cache?route=chat",
        Value::Null,
    )
    .await;
    assert_eq!(cleared.status, 200);
    let again = send(&gw, MASTER, body("tell me about caches", false), &[]).await;
    assert_eq!(again.header("x-sluice-cache"), Some("miss"));
}

#[tokio::test]
async fn scopes_ttl_cache_control_and_abandoned_streams() {
    let mock = start_mock().await;
    let gw = Gateway::start(&config(&mock));
    for t in ["red", "blue"] {
        let r = admin(&gw, MASTER, "POST", "/admin/teams", json!({"name": t})).await;
        assert_eq!(r.status, 201);
    }
    let (_, red) = create_key(&gw, json!({"team": "red"})).await;
    let (_, red2) = create_key(&gw, json!({"team": "red"})).await;
    let (_, blue) = create_key(&gw, json!({"team": "blue"})).await;
    assert_eq!(
        send(&gw, &red, body("team secret", false), &[])
            .await
            .header("x-sluice-cache"),
        Some("miss")
    );
    assert_eq!(
        send(&gw, &red2, body("team secret", false), &[])
            .await
            .header("x-sluice-cache"),
        Some("hit"),
        "the same team shares entries"
    );
    assert_eq!(
        send(&gw, &blue, body("team secret", false), &[])
            .await
            .header("x-sluice-cache"),
        Some("miss"),
        "another team never sees them"
    );

    // no-store: neither looked up nor stored; no-cache: not looked up, but stored.
    let ns = send(
        &gw,
        &red,
        body("fresh", false),
        &[("cache-control", "no-store")],
    )
    .await;
    assert_eq!(ns.header("x-sluice-cache"), Some("bypass"));
    let nc = send(
        &gw,
        &red,
        body("fresh", false),
        &[("cache-control", "no-cache")],
    )
    .await;
    assert_eq!(nc.header("x-sluice-cache"), Some("bypass"));
    let hit = send(&gw, &red, body("fresh", false), &[]).await;
    assert_eq!(hit.header("x-sluice-cache"), Some("hit"));

    // x-sluice-cache-ttl: the entry expires.
    let short = send(
        &gw,
        &red,
        body("brief", false),
        &[("x-sluice-cache-ttl", "1")],
    )
    .await;
    assert_eq!(short.header("x-sluice-cache"), Some("miss"));
    assert_eq!(
        send(&gw, &red, body("brief", false), &[])
            .await
            .header("x-sluice-cache"),
        Some("hit")
    );
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(
        send(&gw, &red, body("brief", false), &[])
            .await
            .header("x-sluice-cache"),
        Some("miss"),
        "expired after its TTL"
    );
    let bad = send(
        &gw,
        &red,
        body("brief", false),
        &[("x-sluice-cache-ttl", "soon")],
    )
    .await;
    assert_eq!(bad.status, 400);

    // A stream the client abandoned is not stored.
    let url = format!("{}/v1/chat/completions", gw.url);
    let auth = format!("Bearer {red}");
    let _ = tokio::time::timeout(
        Duration::from_millis(60),
        request(
            "POST",
            &url,
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            body("abandon me", true),
        ),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        send(&gw, &red, body("abandon me", true), &[])
            .await
            .header("x-sluice-cache"),
        Some("miss")
    );
}

#[tokio::test]
async fn a_route_can_turn_the_cache_on_without_a_cache_section() {
    let mock = start_mock().await;
    let cfg = format!(
        r#"
server: {{master_key: {MASTER}}}
store: {{url: "{{DB}}"}}
providers:
  - {{name: up, kind: openai_compatible, base_url: {mock}/v1}}
models:
  - name: chat
    cache: {{ttl: 5m}}
    deployments: [{{provider: up, model: mock-1}}]
  - name: plain
    deployments: [{{provider: up, model: mock-1}}]
"#
    );
    let gw = Gateway::start(&cfg);
    let outcomes: Vec<Option<String>> = two_outcomes(&gw, "chat").await;
    assert_eq!(outcomes, [Some("miss".into()), Some("hit".into())]);
    let plain = two_outcomes(&gw, "plain").await;
    assert_eq!(
        plain,
        [None, None],
        "no cache section, no route setting: no cache"
    );
    assert_eq!(upstream_requests(&mock).await, 3);
}

async fn two_outcomes(gw: &Gateway, model: &str) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for _ in 0..2 {
        let mut b: Value = serde_json::from_str(&body("same question", false)).unwrap();
        b["model"] = json!(model);
        let r = send(gw, MASTER, b.to_string(), &[]).await;
        assert_eq!(r.status, 200);
        out.push(r.header("x-sluice-cache").map(str::to_string));
    }
    out
}

/// One entry for every surface: an answer stored through chat completions is a hit for the
/// same request through the Anthropic Messages and Responses surfaces (each in its own shape),
/// without the upstream; a request that differs in anything else does not hit.
#[tokio::test]
async fn the_anthropic_and_responses_surfaces_hit_the_entry_stored_through_chat() {
    let mock = start_mock().await;
    let gw = Gateway::start(&config(&mock));
    let first = send(&gw, MASTER, body("one entry for all", false), &[]).await;
    assert_eq!(first.header("x-sluice-cache"), Some("miss"));
    let answer = content(&first);
    let upstream = upstream_requests(&mock).await;
    let auth = format!("Bearer {MASTER}");
    let post = |path: &'static str, body: Value| {
        let (url, auth) = (format!("{}{path}", gw.url), auth.clone());
        async move {
            request(
                "POST",
                &url,
                &[
                    ("authorization", auth.as_str()),
                    ("content-type", "application/json"),
                    ("anthropic-version", "2023-06-01"),
                ],
                body.to_string(),
            )
            .await
        }
    };
    let messages = post(
        "/v1/messages",
        json!({"model": "chat", "max_tokens": 20,
               "messages": [{"role": "user", "content": [{"type": "text", "text": "one entry for all"}]}]}),
    )
    .await;
    assert_eq!(
        messages.status,
        200,
        "{}",
        String::from_utf8_lossy(&messages.body)
    );
    assert_eq!(messages.header("x-sluice-cache"), Some("hit"));
    assert_eq!(messages.json()["content"][0]["text"], answer.as_str());
    let responses = post(
        "/v1/responses",
        json!({"model": "chat", "max_output_tokens": 20, "input": "one entry for all"}),
    )
    .await;
    assert_eq!(
        responses.status,
        200,
        "{}",
        String::from_utf8_lossy(&responses.body)
    );
    assert_eq!(responses.header("x-sluice-cache"), Some("hit"));
    assert_eq!(
        responses.json()["output"][0]["content"][0]["text"],
        answer.as_str()
    );
    assert_eq!(
        upstream_requests(&mock).await,
        upstream,
        "no upstream for hits"
    );
    // Anything else in the request counts: Anthropic's stop sequences (sent as `stop`).
    let other = post(
        "/v1/messages",
        json!({"model": "chat", "max_tokens": 20, "stop_sequences": ["END"],
               "messages": [{"role": "user", "content": "one entry for all"}]}),
    )
    .await;
    assert_eq!(other.status, 200);
    assert_eq!(other.header("x-sluice-cache"), Some("miss"));

    // `sluice usage cache` shows the route's hits and hit rate, as /admin/usage counts them.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let usage = loop {
        let r = admin(
            &gw,
            MASTER,
            "GET",
            "/admin/usage?group_by=model",
            Value::Null,
        )
        .await;
        let row = r.json()["rows"][0].clone();
        if row["requests"] == 4 || std::time::Instant::now() > deadline {
            break row;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        (usage["requests"].as_u64(), usage["cache_hits"].as_u64()),
        (Some(4), Some(2))
    );
    let (ok, out, err) = common::gov::cli(
        &gw,
        &["usage", "cache", "--by", "model", "--format", "json"],
    );
    assert!(ok, "{err}");
    let printed: Value = serde_json::from_str(&out).unwrap();
    let row = &printed[0];
    assert_eq!(row["model"], "chat", "{out}");
    assert_eq!(row["cache_hits"], 2, "{out}");
    assert_eq!(row["cache_hit_rate"], 0.5, "{out}");
    let (ok, table, _) = common::gov::cli(&gw, &["usage", "cache"]);
    assert!(
        ok && table.contains("CACHE_HITS") && table.contains("COST_SAVED_USD"),
        "{table}"
    );
}
