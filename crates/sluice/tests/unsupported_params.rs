//! What a translated provider does with a request it cannot fully honour (issue 18): by
//! default a 400 naming the parameter and the provider when leaving it out would change
//! what the client gets (`n` > 1, `logprobs`, a `tool_choice` mode, a forced tool with
//! extended thinking); `unsupported_params: drop` sends the lenient request and lists what
//! it left out. Through the real binary against sluice-mock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use serde_json::{json, Value};

const CLAUDE_BEDROCK: &str = "us.anthropic.claude-sonnet-4-5-20250929-v1:0";

/// Each provider twice: with the default, and as `<name>-drop` with `unsupported_params: drop`.
fn config(mock: &str) -> String {
    let mut providers = String::new();
    let mut models = String::new();
    for (name, kind, extra, model) in [
        ("ant", "anthropic", "api_key: k", "claude-x"),
        (
            "aws",
            "bedrock",
            "region: us-east-1, aws_access_key_id: AKIDMOCK, aws_secret_access_key: s",
            CLAUDE_BEDROCK,
        ),
        ("gem", "gemini", "api_key: g", "gemini-2.5-flash"),
        ("oll", "ollama", "locality: cloud", "llama3"),
        ("co", "cohere", "api_key: c", "command-a"),
    ] {
        for (suffix, setting) in [("", ""), ("-drop", ", unsupported_params: drop")] {
            providers.push_str(&format!(
                "  - {{name: {name}{suffix}, kind: {kind}, base_url: \"{mock}\", {extra}{setting}}}\n"
            ));
            models.push_str(&format!(
                "  - {{name: {name}{suffix}, deployments: [{{provider: {name}{suffix}, model: \"{model}\"}}]}}\n"
            ));
        }
    }
    format!("store: {{url: \"{{DB}}\"}}\nproviders:\n{providers}models:\n{models}")
}

async fn last_body(mock: &str) -> Value {
    request("GET", &format!("{mock}/_mock/last_request"), &[], "")
        .await
        .json()["body"]
        .clone()
}

fn tools() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}])
}

/// A request that is refused by default (400 naming `param` and the provider) and goes
/// through with `unsupported_params: drop`, listing `param` as dropped.
async fn refused_then_dropped(url: &str, model: &str, body: Value, param: &str) -> Reply {
    let mut b = body.clone();
    b["model"] = json!(model);
    let r = post_json(url, &b.to_string()).await;
    assert_eq!(
        r.status,
        400,
        "{model}: {}",
        String::from_utf8_lossy(&r.body)
    );
    let e = r.openai_error();
    assert_eq!(e["type"], "invalid_request_error", "{e}");
    assert_eq!(e["param"], param, "{e}");
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.contains(&format!("provider `{model}`")) && msg.contains(param),
        "{msg}"
    );
    assert!(msg.contains("unsupported_params: drop"), "{msg}");

    b["model"] = json!(format!("{model}-drop"));
    let r = post_json(url, &b.to_string()).await;
    assert_eq!(
        r.status,
        200,
        "{model}-drop: {}",
        String::from_utf8_lossy(&r.body)
    );
    let dropped = r.header("x-sluice-dropped-params").unwrap_or_default();
    assert!(dropped.split(',').any(|p| p == param), "{dropped}");
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lossy_parameters_are_refused_unless_the_provider_drops_them() {
    let mock = start_mock().await;
    let gw = Gateway::start(&config(&mock));
    let url = format!("{}/v1/chat/completions", gw.url);
    let hello = json!([{"role": "user", "content": "hello"}]);

    // n > 1 and logprobs: no native provider here returns them.
    for model in ["ant", "aws", "oll"] {
        refused_then_dropped(&url, model, json!({"messages": hello, "n": 2}), "n").await;
    }
    for model in ["ant", "aws", "oll"] {
        refused_then_dropped(
            &url,
            model,
            json!({"messages": hello, "logprobs": true}),
            "logprobs",
        )
        .await;
    }
    // Gemini returns several choices and log probabilities in whole answers (a stream
    // carries one choice and none).
    let r = post_json(
        &url,
        &json!({"model": "gem", "messages": hello, "n": 2, "logprobs": true}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let g = &last_body(&mock).await["generationConfig"];
    assert_eq!(
        (&g["candidateCount"], &g["responseLogprobs"]),
        (&json!(2), &json!(true))
    );
    for param in ["n", "logprobs"] {
        let mut b = json!({"messages": hello, "stream": true, "n": 2, "logprobs": true});
        b.as_object_mut()
            .unwrap()
            .remove(if param == "n" { "logprobs" } else { "n" });
        refused_then_dropped(&url, "gem", b, param).await;
    }
    // Cohere returns log probabilities: passed on, not refused.
    let r = post_json(
        &url,
        &json!({"model": "co", "messages": hello, "logprobs": true}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(last_body(&mock).await["logprobs"], true);
    // n: 1 and logprobs: false ask for nothing more.
    let r = post_json(
        &url,
        &json!({"model": "ant", "messages": hello, "n": 1}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // Parameters that do not change the answer's shape are still left out and listed.
    let r = post_json(
        &url,
        &json!({"model": "ant", "messages": hello, "seed": 7, "logprobs": false}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-sluice-dropped-params"), Some("seed,logprobs"));

    // A forced tool with extended thinking (Anthropic, and Claude on Bedrock): the lenient
    // request keeps the forced tool and leaves the thinking out.
    let forced = json!({"messages": hello, "tools": tools(), "tool_choice": "required",
                        "reasoning_effort": "low"});
    refused_then_dropped(&url, "ant", forced.clone(), "reasoning_effort").await;
    let sent = last_body(&mock).await;
    assert_eq!(sent["tool_choice"]["type"], "any", "{sent}");
    assert!(sent.get("thinking").is_none(), "{sent}");
    refused_then_dropped(&url, "aws", forced, "reasoning_effort").await;
    let sent = last_body(&mock).await;
    assert_eq!(
        sent["toolConfig"]["toolChoice"],
        json!({"any": {}}),
        "{sent}"
    );
    assert!(
        sent["additionalModelRequestFields"]["thinking"].is_null(),
        "{sent}"
    );
    let schema = json!({"messages": hello, "thinking": {"type": "enabled", "budget_tokens": 2048},
        "response_format": {"type": "json_schema",
                            "json_schema": {"name": "a", "schema": {"type": "object"}}}});
    refused_then_dropped(&url, "ant", schema.clone(), "thinking").await;
    refused_then_dropped(&url, "aws", schema, "thinking").await;
    // Gemini forces function calls with thinking on: no refusal there.
    let r = post_json(
        &url,
        &json!({"model": "gem", "messages": hello, "tools": tools(),
                "tool_choice": "required", "reasoning_effort": "low"})
        .to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));

    // Bedrock: `none` with tool calls in the history cannot be expressed.
    let history = json!([
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]);
    refused_then_dropped(
        &url,
        "aws",
        json!({"messages": history, "tools": tools(), "tool_choice": "none"}),
        "tool_choice",
    )
    .await;
    // Without tool history, `none` is the tools left out: honoured.
    let r = post_json(
        &url,
        &json!({"model": "aws", "messages": hello, "tools": tools(), "tool_choice": "none"})
            .to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(last_body(&mock).await.get("toolConfig").is_none());

    // Ollama cannot force a tool call.
    for choice in [
        json!("required"),
        json!({"type": "function", "function": {"name": "get_weather"}}),
    ] {
        refused_then_dropped(
            &url,
            "oll",
            json!({"messages": hello, "tools": tools(), "tool_choice": choice}),
            "tool_choice",
        )
        .await;
    }

    // On the Anthropic surface the refusal is Anthropic-shaped.
    let r = post_anthropic(
        &format!("{}/v1/messages", gw.url),
        "unused",
        &json!({"model": "aws", "max_tokens": 100,
                "thinking": {"type": "enabled", "budget_tokens": 1024},
                "tool_choice": {"type": "any"},
                "tools": [{"name": "f", "input_schema": {"type": "object"}}],
                "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("forced tool"),
        "{v}"
    );
}
