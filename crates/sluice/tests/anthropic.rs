//! The Anthropic provider through the real binary, beyond the conformance suite: what it does
//! with parameters it cannot take, the defaults it must send, structured output, overload.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use serde_json::{json, Value};

fn config(mock: &str) -> String {
    format!(
        r#"
store: {{url: "{{DB}}"}}
providers:
  - {{name: a, kind: anthropic, base_url: "{mock}", api_key: sk-ant-1, default_max_tokens: 777}}
  - {{name: strict, kind: anthropic, base_url: "{mock}", api_key: sk-ant-1, unsupported_params: reject}}
  - {{name: busy, kind: anthropic, base_url: "{mock}", api_key: sk-ant-1, headers: {{x-mock-status: "529"}}}}
models:
  - {{name: a, deployments: [{{provider: a, model: claude-x}}]}}
  - {{name: strict, deployments: [{{provider: strict, model: claude-x}}]}}
  - {{name: busy, deployments: [{{provider: busy, model: claude-x}}]}}
  - {{name: busy-then-a, deployments: [{{provider: busy, model: claude-x}}], fallbacks: [a]}}
"#
    )
}

async fn last_request(mock: &str) -> Value {
    let r = request("GET", &format!("{mock}/_mock/last_request"), &[], "").await;
    r.json()["body"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_specifics() {
    let mock = start_mock().await;
    let gw = Gateway::start(&config(&mock));
    let url = format!("{}/v1/chat/completions", gw.url);

    // Parameters Anthropic cannot take are dropped and named; the defaults it needs are sent.
    let r = post_json(
        &url,
        &json!({"model": "a", "seed": 7, "logit_bias": {"50256": -100}, "stop": ["END"],
                "temperature": 0.2, "user": "u-1",
                "messages": [{"role": "system", "content": "S1"}, {"role": "system", "content": "S2"},
                             {"role": "user", "content": "one"}, {"role": "user", "content": "two"}]})
        .to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let dropped = r.header("x-sluice-dropped-params").unwrap();
    assert!(
        dropped.contains("seed") && dropped.contains("logit_bias"),
        "{dropped}"
    );
    let sent = last_request(&mock).await;
    assert_eq!(sent["max_tokens"], 777);
    assert_eq!(sent["system"], "S1\n\nS2");
    assert_eq!(sent["stop_sequences"], json!(["END"]));
    assert_eq!(sent["metadata"], json!({"user_id": "u-1"}));
    assert!(sent.get("seed").is_none() && sent.get("logit_bias").is_none());
    // Consecutive user turns are merged (Anthropic wants alternation).
    assert_eq!(sent["messages"].as_array().unwrap().len(), 1);
    assert_eq!(sent["messages"][0]["content"].as_array().unwrap().len(), 2);

    // ... or refused, per provider setting.
    let r = post_json(
        &url,
        &json!({"model": "strict", "seed": 7, "messages": [{"role": "user", "content": "x"}]})
            .to_string(),
    )
    .await;
    assert_eq!(r.status, 400);
    let e = r.openai_error();
    assert!(e["message"].as_str().unwrap().contains("seed"), "{e}");

    // json_schema: a forced tool whose input becomes the answer text.
    let schema = json!({"type": "object", "properties": {"mock": {"type": "boolean"}}});
    let r = post_json(
        &url,
        &json!({"model": "a", "messages": [{"role": "user", "content": "give json"}],
                "response_format": {"type": "json_schema",
                                    "json_schema": {"name": "answer", "schema": schema}}})
        .to_string(),
    )
    .await;
    assert_eq!(r.status, 200);
    let v = r.json();
    let content: Value =
        serde_json::from_str(v["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert_eq!(content, json!({"mock": true}));
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(v["choices"][0]["message"]["tool_calls"].is_null());
    let sent = last_request(&mock).await;
    assert_eq!(sent["tool_choice"]["type"], "tool");
    assert_eq!(sent["tools"][0]["input_schema"], schema);

    // The same, streamed: the tool's JSON arrives as content deltas.
    let s = stream(
        &url,
        &json!({"model": "a", "stream": true, "messages": [{"role": "user", "content": "json"}],
                "response_format": {"type": "json_schema",
                                    "json_schema": {"name": "answer", "schema": schema}}})
        .to_string(),
    )
    .await;
    let text: String = s
        .events()
        .iter()
        .filter_map(|e| {
            e["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        json!({"mock": true})
    );

    // 529 overloaded -> 503 for the client, and it is a fallback-able error.
    let r = post_json(
        &url,
        &json!({"model": "busy", "messages": [{"role": "user", "content": "x"}]}).to_string(),
    )
    .await;
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    let r = post_json(
        &url,
        &json!({"model": "busy-then-a", "messages": [{"role": "user", "content": "x"}]})
            .to_string(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-sluice-fallback-reason"), Some("overloaded"));
    assert_eq!(r.header("x-sluice-provider"), Some("a"));

    // The client's key is never forwarded; the provider's is, as x-api-key.
    let r = request("GET", &format!("{mock}/_mock/last_request"), &[], "").await;
    let headers = &r.json()["headers"];
    assert_eq!(headers["x-api-key"], "sk-ant-1", "{headers}");
    assert_eq!(headers["anthropic-version"], "2023-06-01");
}
