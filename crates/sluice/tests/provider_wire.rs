//! What actually goes over the wire to Azure OpenAI, Cohere and Ollama: the real `sluice`
//! binary against a `sluice-mock` server, checking the request the mock recorded
//! (`/_mock/last_request`): URLs, `api-version`, auth headers, and native bodies; and the
//! OpenAI answers (chat, streams, embeddings) the client gets back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use serde_json::{json, Value};

fn config(mock: &str) -> String {
    format!(
        r#"store: {{url: "{{DB}}"}}
providers:
  - {{name: az-key, kind: azure_openai, base_url: "{mock}", api_key: az-secret-key}}
  - {{name: az-entra, kind: azure_openai, base_url: "{mock}", bearer_token: entra-token, api_version: 2025-01-01-preview}}
  - {{name: az-v1, kind: azure_openai, base_url: "{mock}", api_key: az-v1-key, api_version: v1}}
  - {{name: co, kind: cohere, base_url: "{mock}", api_key: co-secret-key}}
  - {{name: ol, kind: ollama, base_url: "{mock}", unsupported_params: drop}}
models:
  - {{name: az, deployments: [{{provider: az-key, model: my-gpt4o-deploy}}]}}
  - {{name: az-emb, deployments: [{{provider: az-key, model: my-embed-deploy}}]}}
  - {{name: entra, deployments: [{{provider: az-entra, model: my-gpt4o-deploy}}]}}
  - {{name: azv1, deployments: [{{provider: az-v1, model: gpt-4o}}]}}
  - {{name: co, deployments: [{{provider: co, model: command-a-03-2025}}]}}
  - {{name: co-emb, deployments: [{{provider: co, model: embed-v4.0}}]}}
  - {{name: ol, deployments: [{{provider: ol, model: llama3.2}}]}}
  - {{name: ol-emb, deployments: [{{provider: ol, model: all-minilm}}]}}
"#
    )
}

async fn last(mock: &str) -> Value {
    request("GET", &format!("{mock}/_mock/last_request"), &[], "")
        .await
        .json()
}

fn hello(model: &str) -> String {
    json!({"model": model, "messages": [{"role": "user", "content": "Say hello"}]}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_cohere_and_ollama_requests_on_the_wire() {
    let mock = start_mock().await;
    let gw = Gateway::start(&config(&mock));
    let chat = format!("{}/v1/chat/completions", gw.url);
    let embeddings = format!("{}/v1/embeddings", gw.url);

    // Azure, api-key: the deployment URL with api-version; the key in `api-key` only.
    let r = post_json(&chat, &hello("az")).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "Mock reply to: Say hello"
    );
    let l = last(&mock).await;
    assert_eq!(
        l["path"],
        "/openai/deployments/my-gpt4o-deploy/chat/completions"
    );
    assert_eq!(l["query"], "api-version=2024-10-21");
    assert_eq!(l["headers"]["api-key"], "az-secret-key");
    assert!(l["headers"].get("authorization").is_none(), "{l}");

    let r = post_json(
        &embeddings,
        &json!({"model": "az-emb", "input": ["a", "b"]}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["data"].as_array().unwrap().len(), 2);
    let l = last(&mock).await;
    assert_eq!(l["path"], "/openai/deployments/my-embed-deploy/embeddings");
    assert_eq!(l["query"], "api-version=2024-10-21");

    // Azure, Entra ID: a bearer token, no api-key; the configured api-version.
    let r = post_json(&chat, &hello("entra")).await;
    assert_eq!(r.status, 200);
    let l = last(&mock).await;
    assert_eq!(l["headers"]["authorization"], "Bearer entra-token");
    assert!(l["headers"].get("api-key").is_none(), "{l}");
    assert_eq!(l["query"], "api-version=2025-01-01-preview");

    // Azure v1 API: /openai/v1, the model in the body, no api-version.
    let r = post_json(&chat, &hello("azv1")).await;
    assert_eq!(r.status, 200);
    let l = last(&mock).await;
    assert_eq!(l["path"], "/openai/v1/chat/completions");
    assert!(l["query"].is_null(), "{l}");
    assert_eq!(l["body"]["model"], "gpt-4o");
    assert_eq!(l["headers"]["api-key"], "az-v1-key");

    // Cohere: /v2/chat with a bearer key; `user` has no Cohere form and is reported dropped.
    let r = post_json(
        &chat,
        &json!({"model": "co", "user": "u-1", "top_p": 0.5, "max_tokens": 50,
                "messages": [{"role": "system", "content": "Be brief."},
                             {"role": "user", "content": "Say hello"}]})
        .to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-sluice-dropped-params"), Some("user"));
    let v = r.json();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "Mock reply to: Say hello"
    );
    assert_eq!(v["model"], "command-a-03-2025");
    let l = last(&mock).await;
    assert_eq!(l["path"], "/v2/chat");
    assert_eq!(l["headers"]["authorization"], "Bearer co-secret-key");
    assert_eq!(
        l["body"],
        json!({"model": "command-a-03-2025", "stream": false, "p": 0.5, "max_tokens": 50,
               "messages": [{"role": "system", "content": "Be brief."},
                            {"role": "user", "content": "Say hello"}]})
    );

    let r = post_json(
        &embeddings,
        &json!({"model": "co-emb", "input": "hello", "dimensions": 8}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 8);
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    let l = last(&mock).await;
    assert_eq!(l["path"], "/v2/embed");
    assert_eq!(
        l["body"],
        json!({"model": "embed-v4.0", "texts": ["hello"], "input_type": "search_document",
               "embedding_types": ["float"], "output_dimension": 8})
    );

    // Ollama: /api/chat with `stream: false` said out loud, options, inline images.
    let r = post_json(
        &chat,
        &json!({"model": "ol", "temperature": 0.2, "seed": 3,
                "messages": [{"role": "user", "content": [
                    {"type": "text", "text": "Say hello"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]})
        .to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "Mock reply to: Say hello"
    );
    let l = last(&mock).await;
    assert_eq!(l["path"], "/api/chat");
    assert_eq!(
        l["body"],
        json!({"model": "llama3.2", "stream": false,
               "options": {"temperature": 0.2, "seed": 3},
               "messages": [{"role": "user", "content": "Say hello",
                             "images": ["iVBORw0KGgo="]}]})
    );

    // Ollama streams NDJSON; the client gets OpenAI SSE. A forced tool cannot be forced: with
    // `unsupported_params: drop` the tools are offered and the choice is listed as dropped.
    let s = stream(
        &chat,
        &json!({"model": "ol", "stream": true, "tool_choice": "required",
                "tools": [{"type": "function", "function": {"name": "f",
                           "parameters": {"type": "object"}}}],
                "messages": [{"role": "user", "content": "Use f"}]})
        .to_string(),
    )
    .await;
    assert_eq!(s.status, 200, "{}", s.text());
    assert_eq!(
        s.headers
            .get("x-sluice-dropped-params")
            .and_then(|v| v.to_str().ok()),
        Some("tool_choice")
    );
    let calls: Vec<Value> = s
        .events()
        .iter()
        .flat_map(|e| {
            e["choices"][0]["delta"]["tool_calls"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(calls[0]["function"]["name"], "f", "{}", s.text());
    assert!(calls[0]["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(calls[1]["function"]["arguments"], "{\"mock\":true}");
    assert_eq!(last(&mock).await["body"]["stream"], true);

    let r = post_json(
        &embeddings,
        &json!({"model": "ol-emb", "input": ["a", "b", "c"]}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["data"].as_array().unwrap().len(), 3);
    assert_eq!(last(&mock).await["path"], "/api/embed");

    let logs = gw.stderr();
    for secret in ["az-secret-key", "entra-token", "az-v1-key", "co-secret-key"] {
        assert!(!logs.contains(secret), "a secret reached the logs");
    }
}

/// A gateway with a `mistral` preset (model `mi`) and a `groq` preset (model `gq`) on `mock`.
fn mistral_and_groq(mock: &str) -> Gateway {
    Gateway::start(&format!(
        r#"store: {{url: "{{DB}}"}}
providers:
  - {{name: mi, kind: openai_compatible, preset: mistral, base_url: "{mock}/v1", api_key: k}}
  - {{name: gq, kind: openai_compatible, preset: groq, base_url: "{mock}/v1", api_key: k}}
models:
  - {{name: mi, deployments: [{{provider: mi, model: mistral-small-latest}}]}}
  - {{name: gq, deployments: [{{provider: gq, model: llama-3.3-70b-versatile}}]}}
"#
    ))
}

/// Preset quirks, checked on the wire: Mistral (like the recorded Mistral requests, which
/// never carry `stream_options`) gets no `stream_options` even when the client sends one;
/// Groq takes it, so Sluice asks for usage on the client's behalf.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presets_send_only_what_the_vendor_accepts() {
    let mock = start_mock().await;
    let gw = mistral_and_groq(&mock);
    let chat = format!("{}/v1/chat/completions", gw.url);
    for body in [
        json!({"model": "mi", "stream": true, "stream_options": {"include_usage": true},
               "messages": [{"role": "user", "content": "Say hello"}]}),
        json!({"stream_options": {"include_usage": false}, "model": "mi", "stream": true,
               "messages": [{"role": "user", "content": "Say hello"}]}),
    ] {
        let s = stream(&chat, &body.to_string()).await;
        assert_eq!(s.status, 200, "{}", s.text());
        let l = last(&mock).await;
        assert_eq!(l["body"]["model"], "mistral-small-latest", "{l}");
        assert!(l["body"].get("stream_options").is_none(), "{l}");
        assert_eq!(l["body"]["stream"], true);
    }
    let s = stream(
        &chat,
        &json!({"model": "gq", "stream": true,
                "messages": [{"role": "user", "content": "Say hello"}]})
        .to_string(),
    )
    .await;
    assert_eq!(s.status, 200);
    assert_eq!(
        last(&mock).await["body"]["stream_options"],
        json!({"include_usage": true})
    );
    assert!(s.events().iter().all(|e| !e["usage"].is_object()));
}

/// Thinking history goes to Mistral as content parts (the shape its API takes and its
/// reasoning models answer in), and to every other OpenAI-compatible vendor as it came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thinking_history_goes_to_mistral_as_content_parts_only() {
    let mock = start_mock().await;
    let gw = mistral_and_groq(&mock);
    let chat = format!("{}/v1/chat/completions", gw.url);
    let history = |model: &str| {
        json!({"model": model, "messages": [
            {"role": "user", "content": "How do I cross the street?"},
            {"role": "assistant", "content": "Look both ways.", "reasoning_content": "Safety first."},
            {"role": "user", "content": "And a river?"}
        ]})
        .to_string()
    };
    let r = post_json(&chat, &history("mi")).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let sent = last(&mock).await["body"]["messages"][1].clone();
    assert_eq!(
        sent,
        json!({"role": "assistant", "content": [
            {"type": "thinking", "thinking": [{"type": "text", "text": "Safety first."}]},
            {"type": "text", "text": "Look both ways."}
        ]})
    );
    let r = post_json(&chat, &history("gq")).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let sent = last(&mock).await["body"]["messages"][1].clone();
    assert_eq!(
        sent,
        json!({"role": "assistant", "content": "Look both ways.", "reasoning_content": "Safety first."})
    );
}
