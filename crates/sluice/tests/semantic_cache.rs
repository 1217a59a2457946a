//! The semantic cache through the real gateway, with sluice-mock's embeddings (a hashed bag of
//! words and word pairs): a rewording is answered from the cache without the chat upstream;
//! a changed number, name, negation or earlier turn is not; tool turns bypass it; an
//! embedding failure is a bypass; and the labelled set in tests/fixtures/semantic has no false
//! hit at the default threshold.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::gov::MASTER;
use common::*;
use serde_json::{json, Value};

/// Chat and embeddings on separate mocks, so the chat mock counts only chat requests.
fn config(chat: &str, embed: &str, threshold: f64) -> String {
    format!(
        r#"
server: {{master_key: {MASTER}}}
store: {{url: "{{DB}}"}}
cache:
  ttl: 1h
  semantic: {{embedding_model: embed, threshold: {threshold}, dimensions: 256}}
providers:
  - {{name: up, kind: openai_compatible, base_url: "{chat}/v1"}}
  - {{name: vectors, kind: openai_compatible, base_url: "{embed}/v1"}}
models:
  - name: chat
    cache: {{semantic: true}}
    price: {{input: 1, output: 2}}
    deployments: [{{provider: up, model: mock-1}}]
  - name: exact-only
    cache: true
    deployments: [{{provider: up, model: mock-1}}]
  - name: embed
    price: {{input: 0.1, output: 0}}
    deployments: [{{provider: vectors, model: mock-embed}}]
"#
    )
}

async fn chat_requests(mock: &str) -> u64 {
    let r = request("GET", &format!("{mock}/_mock/stats"), &[], String::new()).await;
    r.json()["requests"].as_u64().unwrap()
}

fn convo(system: &str, turns: &[(&str, &str)], stream: bool) -> String {
    let mut messages = vec![json!({"role": "system", "content": system})];
    for (role, text) in turns {
        messages.push(json!({"role": role, "content": text}));
    }
    json!({"model": "chat", "stream": stream, "max_tokens": 16, "messages": messages}).to_string()
}

async fn ask(gw: &Gateway, body: String) -> Reply {
    let auth = format!("Bearer {MASTER}");
    request(
        "POST",
        &format!("{}/v1/chat/completions", gw.url),
        &[
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ],
        body,
    )
    .await
}

fn outcome(r: &Reply) -> String {
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.header("x-sluice-cache").unwrap_or("none").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewordings_hit_and_near_misses_never_do() {
    let (chat, embed) = (start_mock().await, start_mock().await);
    let mut gw = Gateway::start(&config(&chat, &embed, 0.92));
    let sys = "You are the support desk of a shop.";
    let first = ask(
        &gw,
        convo(sys, &[("user", "Track order 48213 for me")], false),
    )
    .await;
    assert_eq!(outcome(&first), "miss");
    let upstream = chat_requests(&chat).await;

    // A rewording: answered from the cache, the chat upstream never asked.
    let again = ask(
        &gw,
        convo(sys, &[("user", "track order 48213 for me.")], false),
    )
    .await;
    assert_eq!(outcome(&again), "semantic-hit");
    assert_eq!(
        again.json()["id"],
        first.json()["id"],
        "the stored answer itself"
    );
    assert_eq!(chat_requests(&chat).await, upstream);
    // ... and as a stream, for a streaming client.
    let streamed = ask(
        &gw,
        convo(sys, &[("user", "Track order 48213 for me!")], true),
    )
    .await;
    assert_eq!(outcome(&streamed), "semantic-hit");
    assert!(String::from_utf8_lossy(&streamed.body).ends_with("data: [DONE]\n\n"));
    assert_eq!(chat_requests(&chat).await, upstream);

    // Near-misses go to the provider: another number, a negation, another earlier turn.
    for (label, body) in [
        (
            "a changed number",
            convo(sys, &[("user", "Track order 48231 for me")], false),
        ),
        (
            "an added negation",
            convo(sys, &[("user", "Do not track order 48213 for me")], false),
        ),
        (
            "a different earlier turn",
            convo(
                sys,
                &[
                    ("user", "hi"),
                    ("assistant", "Hello! How can I help?"),
                    ("user", "Track order 48213 for me"),
                ],
                false,
            ),
        ),
        (
            "another system prompt",
            convo("Be terse.", &[("user", "Track order 48213 for me")], false),
        ),
    ] {
        let before = chat_requests(&chat).await;
        let r = ask(&gw, body).await;
        assert_eq!(outcome(&r), "miss", "{label}");
        assert_eq!(
            chat_requests(&chat).await,
            before + 1,
            "{label} reached the provider"
        );
    }

    // A tool result as the last turn: no semantic lookup (the route did not opt in).
    let tool_turn = json!({"model": "chat", "max_tokens": 16, "messages": [
        {"role": "system", "content": sys},
        {"role": "user", "content": "Track order 48213 for me"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
            "function": {"name": "track", "arguments": "{\"order\":48213}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "shipped"}]})
    .to_string();
    let before = chat_requests(&chat).await;
    assert_eq!(outcome(&ask(&gw, tool_turn.clone()).await), "miss");
    let reworded_tool = tool_turn.replace("\"shipped\"", "\"shipped.\"");
    assert_eq!(outcome(&ask(&gw, reworded_tool).await), "miss");
    assert_eq!(chat_requests(&chat).await, before + 2);

    // The hit's record: cache outcome, the saving, no provider cost but the embedding's.
    let stats = common::gov::admin(&gw, MASTER, "GET", "/admin/cache", Value::Null)
        .await
        .json();
    assert_eq!(stats["semantic_hits"], 2, "{stats}");
    assert_eq!(gw.stop(std::time::Duration::from_secs(10)), Some(0));
    let rows = usage_rows_at(&format!("sqlite://{}", gw.db_path().display())).await;
    let hit = rows
        .iter()
        .find(|r| r["cache"] == "semantic-hit")
        .expect("a semantic-hit record");
    assert!(hit["cost_saved_micro_usd"].as_i64().unwrap() > 0, "{hit}");
    let lines = hit["attempt_log"].as_array().unwrap();
    assert_eq!(lines.len(), 1, "{hit}");
    assert_eq!(lines[0]["outcome"], "semantic_cache_embedding");
    assert_eq!(hit["cost_micro_usd"], lines[0]["cost_micro_usd"], "{hit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedding_failure_is_a_bypass_and_the_request_is_served() {
    let chat = start_mock().await;
    // Nothing listens on the embedding route's port.
    let gw = Gateway::start(&config(&chat, "http://127.0.0.1:9", 0.92));
    let r = ask(&gw, convo("s", &[("user", "hello there")], false)).await;
    assert_eq!(outcome(&r), "bypass");
    let stats = common::gov::admin(&gw, MASTER, "GET", "/admin/cache", Value::Null)
        .await
        .json();
    assert_eq!(stats["semantic_hits"], 0, "{stats}");
    assert!(
        gw.stderr()
            .matches("the semantic cache cannot embed")
            .count()
            == 1,
        "logged once: {}",
        gw.stderr()
    );
    // The exact cache still works for the route: the same request again is a hit.
    let again = ask(&gw, convo("s", &[("user", "hello there")], false)).await;
    assert_eq!(outcome(&again), "hit");
}

/// The labelled set (tests/fixtures/semantic/pairs.jsonl): each pair's first request is
/// stored, its second asked; a hit on a near-miss is a false hit. Each pair runs in a context
/// of its own (its own system prompt). Prints precision and recall by kind (docs/cache.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_labelled_set_has_no_false_hits_at_the_default_threshold() {
    let (chat, embed) = (start_mock().await, start_mock().await);
    let gw = Gateway::start(&config(&chat, &embed, 0.92));
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/semantic/pairs.jsonl"
    ))
    .unwrap();
    let pairs: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(pairs.len() >= 200, "{} pairs", pairs.len());
    let (mut tp, mut fp, mut fn_, mut tn) = (0u32, 0u32, 0u32, 0u32);
    let mut false_hits = Vec::new();
    let mut by_kind: std::collections::BTreeMap<String, (u32, u32)> = Default::default();
    for (i, p) in pairs.iter().enumerate() {
        let sys = format!("pair {i}");
        let a = p["a"].as_str().unwrap();
        let b = p["b"].as_str().unwrap();
        assert_eq!(
            outcome(&ask(&gw, convo(&sys, &[("user", a)], false)).await),
            "miss"
        );
        let hit = outcome(&ask(&gw, convo(&sys, &[("user", b)], false)).await) == "semantic-hit";
        let same = p["same"].as_bool().unwrap();
        let k = by_kind
            .entry(p["kind"].as_str().unwrap().to_string())
            .or_default();
        k.0 += 1;
        k.1 += u32::from(hit);
        match (same, hit) {
            (true, true) => tp += 1,
            (true, false) => fn_ += 1,
            (false, true) => {
                fp += 1;
                false_hits.push(format!("{a:?} -> {b:?}"));
            }
            (false, false) => tn += 1,
        }
    }
    let precision = f64::from(tp) / f64::from((tp + fp).max(1));
    let recall = f64::from(tp) / f64::from((tp + fn_).max(1));
    println!(
        "labelled set: {} pairs; tp {tp}, fp {fp}, fn {fn_}, tn {tn}",
        pairs.len()
    );
    println!("precision {precision:.3}, recall {recall:.3}");
    for (kind, (n, hits)) in &by_kind {
        println!("  {kind}: {n} pairs, {hits} hits");
    }
    assert!(false_hits.is_empty(), "false hits: {false_hits:#?}");
    // A floor, so that a change that makes the cache useless fails too.
    assert!(recall >= 0.6, "recall {recall:.3}");
}
