//! Gemini and Vertex through the real binary against sluice-mock, for what the shared
//! conformance suite does not cover: what Sluice sends on the wire (paths, auth headers, the
//! Gemini body), thinking with signatures across turns, embeddings, Anthropic models on
//! Vertex, and the parameters it drops.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use serde_json::{json, Value};

fn config(mock: &str, key_file: &str) -> String {
    format!(
        r#"store: {{url: "{{DB}}"}}
providers:
  - name: g
    kind: gemini
    base_url: "{mock}"
    api_key: gemini-test-key
  - name: v
    kind: vertex
    base_url: "{mock}"
    region: europe-west4
    credentials_file: "{key_file}"
models:
  - {{name: flash, deployments: [{{provider: g, model: gemini-2.5-flash}}]}}
  - {{name: embed, deployments: [{{provider: g, model: gemini-embedding-001}}]}}
  - {{name: vflash, deployments: [{{provider: v, model: gemini-2.5-flash}}]}}
  - {{name: vembed, deployments: [{{provider: v, model: text-embedding-005}}]}}
  - {{name: vclaude, deployments: [{{provider: v, model: claude-sonnet-4-5@20250929}}]}}
"#
    )
}

async fn last_request(mock: &str) -> Value {
    let r = request("GET", &format!("{mock}/_mock/last_request"), &[], "").await;
    r.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_and_vertex_end_to_end() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("key.json");
    let mut key: Value =
        serde_json::from_str(include_str!("fixtures/vertex-test-service-account.json")).unwrap();
    key["token_uri"] = json!(format!("{mock}/token"));
    std::fs::write(&key_path, key.to_string()).unwrap();
    let gw = Gateway::start(&config(&mock, &key_path.display().to_string()));
    let chat = format!("{}/v1/chat/completions", gw.url);

    // AI Studio: path, key header, Gemini body; a parameter Gemini has no place for is
    // dropped and named.
    let r = post_json(
        &chat,
        &json!({"model": "flash", "temperature": 0.5, "max_tokens": 50, "logit_bias": {"1": 2},
                "messages": [{"role": "system", "content": "Be brief."},
                             {"role": "user", "content": "Say hello"}]})
        .to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "Mock reply to: Say hello"
    );
    assert_eq!(r.header("x-sluice-dropped-params"), Some("logit_bias"));
    let sent = last_request(&mock).await;
    assert_eq!(
        sent["path"],
        "/v1beta/models/gemini-2.5-flash:generateContent"
    );
    assert_eq!(sent["headers"]["x-goog-api-key"], "gemini-test-key");
    assert_eq!(
        sent["body"]["systemInstruction"],
        json!({"parts": [{"text": "Be brief."}]})
    );
    assert_eq!(
        sent["body"]["generationConfig"],
        json!({"temperature": 0.5, "maxOutputTokens": 50})
    );

    // Thinking, streamed: reasoning and its signature reach the client; sent back, the
    // signature lands on the text part and the thought goes back as a thought.
    let s = stream(
        &chat,
        &json!({"model": "flash", "stream": true, "reasoning_effort": "low",
                "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": "Say hello"}]})
        .to_string(),
    )
    .await;
    assert_eq!(s.status, 200, "{}", s.text());
    let sent = last_request(&mock).await;
    assert_eq!(
        sent["path"],
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    );
    assert_eq!(sent["query"], "alt=sse");
    assert_eq!(
        sent["body"]["generationConfig"]["thinkingConfig"],
        json!({"thinkingBudget": 1024, "includeThoughts": true})
    );
    let events = s.events();
    let reasoning: String = events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["reasoning_content"].as_str())
        .collect();
    let text: String = events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect();
    let signature = events
        .iter()
        .find_map(|e| e["choices"][0]["delta"]["thinking_blocks"][0]["signature"].as_str())
        .unwrap()
        .to_string();
    assert!(!reasoning.is_empty());
    assert_eq!(text, "Mock reply to: Say hello");
    let usage = events.iter().find(|e| e["usage"].is_object()).unwrap();
    assert_eq!(
        usage["usage"]["completion_tokens_details"]["reasoning_tokens"],
        9
    );
    assert_eq!(usage["usage"]["completion_tokens"], 5 + 9);
    let r = post_json(
        &chat,
        &json!({"model": "flash", "messages": [
            {"role": "user", "content": "Say hello"},
            {"role": "assistant", "content": text, "reasoning_content": reasoning,
             "thinking_blocks": [{"type": "thinking", "thinking": reasoning, "signature": signature}]},
            {"role": "user", "content": "Again"}]})
        .to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let sent = last_request(&mock).await;
    let model_turn = &sent["body"]["contents"][1];
    assert_eq!(model_turn["role"], "model");
    assert_eq!(
        model_turn["parts"],
        json!([{"text": reasoning, "thought": true},
               {"text": text,
                "thoughtSignature": signature.strip_prefix("sluice:gemini:").unwrap()}])
    );

    // Embeddings on AI Studio.
    let r = post_json(
        &format!("{}/v1/embeddings", gw.url),
        &json!({"model": "embed", "input": ["one", "two words"], "dimensions": 16}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["data"][1]["embedding"].as_array().unwrap().len(), 16);
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        last_request(&mock).await["path"],
        "/v1beta/models/gemini-embedding-001:batchEmbedContents"
    );

    // Vertex: the token from the exchange, the regional project path.
    let r = post_json(
        &chat,
        &json!({"model": "vflash", "messages": [{"role": "user", "content": "Say hello"}]})
            .to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let sent = last_request(&mock).await;
    assert_eq!(
        sent["path"],
        "/v1/projects/sluice-test-project/locations/europe-west4/publishers/google/models/gemini-2.5-flash:generateContent"
    );
    let bearer = sent["headers"]["authorization"].as_str().unwrap();
    assert!(bearer.starts_with("Bearer mock-token-"), "{bearer}");

    let r = post_json(
        &format!("{}/v1/embeddings", gw.url),
        &json!({"model": "vembed", "input": "hello there"}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["usage"]["prompt_tokens"], 2);
    let sent = last_request(&mock).await;
    assert!(sent["path"]
        .as_str()
        .unwrap()
        .ends_with("text-embedding-005:predict"));
    // The token is cached: the same one is used again.
    assert_eq!(sent["headers"]["authorization"], bearer);

    // Anthropic on Vertex: rawPredict with the Messages body, JSON and streamed, with tools.
    let r = post_json(
        &chat,
        &json!({"model": "vclaude", "messages": [{"role": "user", "content": "Say hello"}]})
            .to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "Mock reply to: Say hello"
    );
    let sent = last_request(&mock).await;
    assert_eq!(
        sent["path"],
        "/v1/projects/sluice-test-project/locations/europe-west4/publishers/anthropic/models/claude-sonnet-4-5@20250929:rawPredict"
    );
    assert_eq!(sent["body"]["anthropic_version"], "vertex-2023-10-16");
    assert!(sent["body"].get("model").is_none());
    let s = stream(
        &chat,
        &json!({"model": "vclaude", "stream": true, "tool_choice": "required",
                "tools": [{"type": "function", "function": {"name": "get_weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
                "messages": [{"role": "user", "content": "Weather?"}]})
        .to_string(),
    )
    .await;
    assert_eq!(s.status, 200, "{}", s.text());
    let args: String = s
        .events()
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap(),
        json!({"mock": true})
    );
    assert!(last_request(&mock).await["path"]
        .as_str()
        .unwrap()
        .ends_with(":streamRawPredict"));
}
