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
  - {{name: nova, deployments: [{{provider: aws, model: "amazon.nova-micro-v1:0"}}]}}
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_sequence_stop_says_which_sequence() {
    let mock = start_mock().await;
    let gw = Gateway::start(&config(&mock));
    let url = format!("{}/v1/messages", gw.url);
    // The mock's answer is "Mock reply to: <question>", cut at the first stop sequence.
    let body = |model: &str, stream: bool| {
        json!({"model": model, "max_tokens": 64, "stream": stream,
               "stop_sequences": ["NEVER", "STOP"],
               "messages": [{"role": "user", "content": "count to three STOP four"}]})
    };
    for model in ["bedrock-claude", "vertex-claude"] {
        let r = post(&url, &body(model, false)).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let v = r.json();
        assert_eq!(v["stop_reason"], "stop_sequence", "{model}: {v}");
        assert_eq!(v["stop_sequence"], "STOP", "{model}: {v}");
        assert_eq!(
            v["content"][0]["text"], "Mock reply to: count to three ",
            "{v}"
        );

        let r = post(&url, &body(model, true)).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let events = named_sse(&r.body);
        let (_, delta) = events
            .iter()
            .find(|(n, _)| n == "message_delta")
            .expect("message_delta");
        assert_eq!(
            delta["delta"]["stop_reason"], "stop_sequence",
            "{model}: {delta}"
        );
        assert_eq!(delta["delta"]["stop_sequence"], "STOP", "{model}: {delta}");
        // The final usage, input included, is in message_delta (message_start cannot know
        // it on the translated path: docs/anthropic-surface.md).
        assert!(
            delta["usage"]["input_tokens"].as_u64().unwrap() > 0,
            "{delta}"
        );
        assert!(
            delta["usage"]["output_tokens"].as_u64().unwrap() > 0,
            "{delta}"
        );
    }
    // Bedrock is asked to say which sequence stopped Claude.
    post(&url, &body("bedrock-claude", false)).await;
    assert_eq!(
        sent(&mock).await["additionalModelResponseFieldPaths"],
        json!(["/stop_sequence"])
    );
    // OpenAI clients read it where vLLM puts it, `choices[0].stop_reason`.
    let r = request(
        "POST",
        &format!("{}/v1/chat/completions", gw.url),
        &[
            ("authorization", "Bearer sk-master"),
            ("content-type", "application/json"),
        ],
        json!({"model": "vertex-claude", "stop": ["STOP"],
               "messages": [{"role": "user", "content": "one STOP two"}]})
        .to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["choices"][0]["stop_reason"], "STOP", "{v}");
    // Bedrock's other families say only that a stop sequence matched: with one in the
    // request, that is the one; with several, which is unknown.
    let chat = format!("{}/v1/chat/completions", gw.url);
    let auth = [
        ("authorization", "Bearer sk-master"),
        ("content-type", "application/json"),
    ];
    for stream in [false, true] {
        let r = post(
            &url,
            &json!({"model": "nova", "max_tokens": 64, "stream": stream,
            "stop_sequences": ["STOP"],
            "messages": [{"role": "user", "content": "one STOP two"}]}),
        )
        .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let v = if stream {
            named_sse(&r.body)
                .into_iter()
                .find(|(n, _)| n == "message_delta")
                .unwrap()
                .1["delta"]
                .clone()
        } else {
            r.json()
        };
        assert_eq!(
            (&v["stop_reason"], &v["stop_sequence"]),
            (&json!("stop_sequence"), &json!("STOP")),
            "{v}"
        );
    }
    let r = request(
        "POST",
        &chat,
        &auth,
        json!({"model": "nova", "stop": ["STOP", "NEVER"],
               "messages": [{"role": "user", "content": "one STOP two"}]})
        .to_string(),
    )
    .await;
    let v = r.json();
    assert_eq!(
        v["choices"][0]["message"]["content"], "Mock reply to: one ",
        "{v}"
    );
    assert!(v["choices"][0].get("stop_reason").is_none(), "{v}");
    // A natural end stays end_turn with no sequence.
    let r = post(
        &url,
        &json!({"model": "bedrock-claude", "max_tokens": 64, "stop_sequences": ["STOP"],
                "messages": [{"role": "user", "content": "hello"}]}),
    )
    .await;
    let v = r.json();
    assert_eq!(
        (&v["stop_reason"], &v["stop_sequence"]),
        (&json!("end_turn"), &Value::Null)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_in_tool_results_reach_the_provider() {
    let mock = start_mock().await;
    let gw = Gateway::start(&config(&mock));
    let url = format!("{}/v1/messages", gw.url);
    let body = |model: &str| {
        json!({"model": model, "max_tokens": 64,
            "tools": [{"name": "screenshot", "input_schema": {"type": "object"}}],
            "messages": [
                {"role": "user", "content": "Take a screenshot"},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "toolu_1", "name": "screenshot", "input": {}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [
                        {"type": "text", "text": "here it is"},
                        {"type": "image", "source": {"type": "base64",
                            "media_type": "image/png", "data": "iVBORw0KGgo="}}]},
                    {"type": "text", "text": "What do you see?"}]}]})
    };
    let r = post(&url, &body("vertex-claude")).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let b = sent(&mock).await;
    assert_eq!(
        b["messages"][2]["content"][0]["content"],
        json!([{"type": "text", "text": "here it is"},
               {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                            "data": "iVBORw0KGgo="}}]),
        "{b}"
    );
    let r = post(&url, &body("bedrock-claude")).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let b = sent(&mock).await;
    let result = &b["messages"][2]["content"][0]["toolResult"]["content"];
    assert_eq!(result[0], json!({"text": "here it is"}), "{b}");
    assert_eq!(result[1]["image"]["format"], "png", "{b}");
    let r = post(&url, &body("gemini")).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let b = sent(&mock).await;
    assert_eq!(
        b["contents"][2]["parts"][1],
        json!({"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}),
        "{b}"
    );
    // OpenAI tool messages take text only: the image follows them in a user message.
    let r = post(&url, &body("via-openai")).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let b = sent(&mock).await;
    let msgs = b["messages"].as_array().unwrap();
    let roles: Vec<&str> = msgs.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "assistant", "tool", "user", "user"], "{b}");
    assert_eq!(
        msgs[2]["content"],
        json!([{"type": "text", "text": "here it is"}])
    );
    assert_eq!(
        msgs[3]["content"],
        json!([{"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thinking_signatures_go_back_only_to_the_family_that_made_them() {
    let mock = start_mock().await;
    let gw = Gateway::start(&config(&mock));
    let chat = format!("{}/v1/chat/completions", gw.url);
    let auth = [
        ("authorization", "Bearer sk-master"),
        ("content-type", "application/json"),
    ];
    let ask = |model: &str, history: &[Value]| {
        let mut messages = vec![json!({"role": "user", "content": "Think, then say hi"})];
        messages.extend_from_slice(history);
        messages.push(json!({"role": "user", "content": "Again"}));
        json!({"model": model, "reasoning_effort": "low", "messages": messages}).to_string()
    };

    // Claude on Bedrock thinks; the client sees the signature tagged with its family.
    let r = request("POST", &chat, &auth, ask("bedrock-claude", &[])).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let msg = r.json()["choices"][0]["message"].clone();
    let sig = msg["thinking_blocks"][0]["signature"]
        .as_str()
        .unwrap()
        .to_string();
    let bare = sig
        .strip_prefix("sluice:claude:")
        .expect("tagged")
        .to_string();
    let turn = json!({"role": "assistant", "content": msg["content"],
                      "thinking_blocks": msg["thinking_blocks"]});

    // Claude elsewhere (Vertex) takes it back, bare.
    let r = request(
        "POST",
        &chat,
        &auth,
        ask("vertex-claude", std::slice::from_ref(&turn)),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let b = sent(&mock).await;
    assert_eq!(
        b["messages"][1]["content"][0]["signature"],
        bare.as_str(),
        "{b}"
    );

    // Gemini gets the thinking text as a thought, never Claude's signature.
    let r = request(
        "POST",
        &chat,
        &auth,
        ask("gemini", std::slice::from_ref(&turn)),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let b = sent(&mock).await;
    assert!(!b.to_string().contains(&bare), "{b}");
    assert_eq!(b["contents"][1]["parts"][0]["thought"], true, "{b}");

    // A Gemini signature is not sent to Claude: the unsigned thinking is left out.
    let foreign = json!({"role": "assistant", "content": "Hi.",
        "thinking_blocks": [{"type": "thinking", "thinking": "hmm",
                             "signature": "sluice:gemini:CiQBgemini"}]});
    let r = request("POST", &chat, &auth, ask("bedrock-claude", &[foreign])).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let b = sent(&mock).await;
    assert_eq!(b["messages"][1]["content"], json!([{"text": "Hi."}]), "{b}");

    // The Anthropic surface: a history with a tagged signature does not bypass the codec
    // on an Anthropic-only route (Anthropic would refuse the tag), and foreign redacted
    // thinking is left out.
    let r = post(
        &format!("{}/v1/messages", gw.url),
        &json!({"model": "anthropic", "max_tokens": 2000,
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "messages": [
                {"role": "user", "content": "Think, then say hi"},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": sig},
                    {"type": "redacted_thinking", "data": "sluice:gemini:x"},
                    {"type": "text", "text": "Hi."}]},
                {"role": "user", "content": "Again"}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let b = sent(&mock).await;
    assert_eq!(
        b["messages"][1]["content"],
        json!([{"type": "thinking", "thinking": "hmm", "signature": bare},
               {"type": "text", "text": "Hi."}]),
        "{b}"
    );
    let answer = r.json();
    assert!(
        answer["content"][0]["signature"]
            .as_str()
            .is_some_and(|s| s.starts_with("sluice:claude:")),
        "{answer}"
    );
}
