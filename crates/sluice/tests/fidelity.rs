//! What a request keeps on the translated path (issue 18): the settings and the order a
//! client sends reach each provider in that provider's own spelling, checked on the request
//! `sluice-mock` received through the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use serde_json::{json, Value};

const CLAUDE_BEDROCK: &str = "us.anthropic.claude-sonnet-4-5-20250929-v1:0";

fn config(mock: &str) -> String {
    format!(
        r#"
server: {{master_key: sk-master}}
store: {{url: "{{DB}}"}}
providers:
  - {{name: oai, kind: openai_compatible, base_url: "{mock}/v1"}}
  - {{name: aws, kind: bedrock, base_url: "{mock}", region: us-east-1, aws_access_key_id: AKIDMOCK, aws_secret_access_key: mock-secret}}
  - {{name: vtx, kind: vertex, base_url: "{mock}", region: us-central1, project: p, api_key: test-token}}
  - {{name: gem, kind: gemini, base_url: "{mock}", api_key: g}}
  - {{name: co, kind: cohere, base_url: "{mock}", api_key: c}}
  - {{name: oll, kind: ollama, base_url: "{mock}"}}
  - {{name: ant, kind: anthropic, base_url: "{mock}", api_key: k}}
models:
  - {{name: via-openai, deployments: [{{provider: oai, model: m}}]}}
  - {{name: bedrock-claude, deployments: [{{provider: aws, model: "{CLAUDE_BEDROCK}"}}]}}
  - {{name: vertex-claude, deployments: [{{provider: vtx, model: "claude-sonnet-4-5@20250929"}}]}}
  - {{name: gemini, deployments: [{{provider: gem, model: gemini-2.5-flash}}]}}
  - {{name: cohere, deployments: [{{provider: co, model: command-a}}]}}
  - {{name: ollama, deployments: [{{provider: oll, model: llama3}}]}}
  - {{name: anthropic, deployments: [{{provider: ant, model: claude-x}}]}}
"#
    )
}

const AUTH: (&str, &str) = ("x-api-key", "sk-master");

async fn post(url: &str, body: &Value) -> Reply {
    post_anthropic(url, AUTH.1, body).await
}

/// The body of the last request the mock received.
async fn sent(mock: &str) -> Value {
    request("GET", &format!("{mock}/_mock/last_request"), &[], "")
        .await
        .json()["body"]
        .clone()
}

/// A Claude Code-like request: cached system prompt and last turn, and `top_k`.
fn cached_request(model: &str) -> Value {
    json!({"model": model, "max_tokens": 64, "top_k": 7,
        "system": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "first part"},
            {"type": "text", "text": "Say hello", "cache_control": {"type": "ephemeral"}}]}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_control_and_top_k_reach_every_provider_that_takes_them() {
    let mock = start_mock().await;
    let gw = Gateway::start(&config(&mock));
    let url = format!("{}/v1/messages", gw.url);

    // Claude on Bedrock: a cachePoint after each marked block, top_k in the Anthropic fields.
    let r = post(&url, &cached_request("bedrock-claude")).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let b = sent(&mock).await;
    assert_eq!(
        b["system"],
        json!([{"text": "You are terse."}, {"cachePoint": {"type": "default"}}])
    );
    assert_eq!(
        b["messages"][0]["content"],
        json!([{"text": "first part"}, {"text": "Say hello"}, {"cachePoint": {"type": "default"}}]),
        "{b}"
    );
    assert_eq!(b["additionalModelRequestFields"]["top_k"], 7, "{b}");

    // Claude on Vertex: the markers stay on their blocks, top_k as it is.
    let r = post(&url, &cached_request("vertex-claude")).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let b = sent(&mock).await;
    assert_eq!(
        b["system"],
        json!([{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}])
    );
    assert_eq!(
        b["messages"][0]["content"][1],
        json!({"type": "text", "text": "Say hello", "cache_control": {"type": "ephemeral"}}),
        "{b}"
    );
    assert_eq!(b["top_k"], 7);

    // Gemini, Cohere and Ollama take top_k under their own names; nothing of cache_control.
    let r = post(&url, &cached_request("gemini")).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let b = sent(&mock).await;
    assert_eq!(b["generationConfig"]["topK"], 7, "{b}");
    assert!(!b.to_string().contains("cache"), "{b}");
    let r = post(&url, &cached_request("cohere")).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(sent(&mock).await["k"], 7);
    let r = post(&url, &cached_request("ollama")).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(sent(&mock).await["options"]["top_k"], 7);

    // An OpenAI-format upstream gets neither (OpenAI refuses unknown fields).
    let r = post(&url, &cached_request("via-openai")).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let b = sent(&mock).await;
    assert!(b.get("top_k").is_none(), "{b}");
    assert!(!b.to_string().contains("cache_control"), "{b}");
    assert_eq!(b["messages"][1]["content"][1]["text"], "Say hello", "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_system_message_in_the_middle_keeps_its_place() {
    let mock = start_mock().await;
    let gw = Gateway::start(&config(&mock));
    let url = format!("{}/v1/chat/completions", gw.url);
    let body = |model: &str| {
        json!({"model": model, "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "developer", "content": "From now on answer in French."},
            {"role": "user", "content": "How are you?"}]})
        .to_string()
    };
    let wrapped = "<system>\nFrom now on answer in French.\n</system>";
    let auth = [
        ("authorization", "Bearer sk-master"),
        ("content-type", "application/json"),
    ];

    // Anthropic and Claude on Vertex: the top one is the system prompt, the later one a
    // block of the user turn at its place, before the user's next words.
    for model in ["anthropic", "vertex-claude"] {
        let r = request("POST", &url, &auth, body(model)).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let b = sent(&mock).await;
        assert_eq!(b["system"], "Be terse.", "{b}");
        assert_eq!(b["messages"].as_array().unwrap().len(), 3, "{b}");
        assert_eq!(
            b["messages"][2],
            json!({"role": "user", "content": [{"type": "text", "text": wrapped},
                                               {"type": "text", "text": "How are you?"}]}),
            "{b}"
        );
    }
    let r = request("POST", &url, &auth, body("gemini")).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let b = sent(&mock).await;
    assert_eq!(
        b["systemInstruction"],
        json!({"parts": [{"text": "Be terse."}]})
    );
    assert_eq!(
        b["contents"][2],
        json!({"role": "user", "parts": [{"text": wrapped}, {"text": "How are you?"}]}),
        "{b}"
    );
    let r = request("POST", &url, &auth, body("bedrock-claude")).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let b = sent(&mock).await;
    assert_eq!(b["system"], json!([{"text": "Be terse."}]));
    assert_eq!(
        b["messages"][2],
        json!({"role": "user", "content": [{"text": wrapped}, {"text": "How are you?"}]}),
        "{b}"
    );
}
