//! Replays of real Anthropic Messages API transcripts through the Anthropic codec: the
//! recorded answer (JSON or SSE) must decode to what the transcript says, split at any
//! chunk size, and requests built from the equivalent OpenAI input must have the recorded
//! request's structure.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "replay/cassette.rs"]
mod cassette;

use serde_json::{json, Value};
use sluice::canonical::openai::decode_request;
use sluice::canonical::{ChatResponse, FinishReason, StreamEvent};
use sluice::providers::anthropic::{map_error, Anthropic};
use sluice::providers::native::{Codec, DecodeCtx};

fn codec() -> Anthropic {
    Anthropic {
        default_max_tokens: 4096,
        path: "/v1/messages".into(),
        model_in_body: true,
    }
}

fn ctx() -> DecodeCtx {
    DecodeCtx {
        model: "claude".into(),
        json_tool: None,
    }
}

/// Decodes a stream feeding it `split` bytes at a time.
fn stream(bytes: &[u8], split: usize) -> ChatResponse {
    let c = codec();
    let mut d = c.stream_decoder(&ctx());
    let mut events: Vec<StreamEvent> = Vec::new();
    for chunk in bytes.chunks(split) {
        d.feed(chunk, &mut events).unwrap();
    }
    d.finish(&mut events).unwrap();
    ChatResponse::from_events(&events)
}

/// What the recorded JSON answer says, read straight from the transcript.
fn expected_from_json(v: &Value) -> (String, Vec<(String, Value)>, u64, u64) {
    let mut text = String::new();
    let mut tools = Vec::new();
    for b in v["content"].as_array().unwrap() {
        match b["type"].as_str().unwrap() {
            "text" => text.push_str(b["text"].as_str().unwrap()),
            "tool_use" => tools.push((b["name"].as_str().unwrap().to_string(), b["input"].clone())),
            _ => {}
        }
    }
    let u = &v["usage"];
    let input = u["input_tokens"].as_u64().unwrap()
        + u["cache_read_input_tokens"].as_u64().unwrap_or(0)
        + u["cache_creation_input_tokens"].as_u64().unwrap_or(0);
    (text, tools, input, u["output_tokens"].as_u64().unwrap())
}

#[test]
fn json_answers_decode_to_what_the_transcript_says() {
    let mut checked = 0;
    for file in cassette::list("anthropic") {
        for i in cassette::load(&file) {
            if i.status != 200 || !i.content_type().starts_with("application/json") {
                continue;
            }
            if !i.uri.contains("/v1/messages") || i.uri.contains("count_tokens") {
                continue;
            }
            let v = i.response_json();
            let r = codec().decode(&i.response, &ctx()).unwrap();
            let (text, tools, input, output) = expected_from_json(&v);
            assert_eq!(r.text.clone().unwrap_or_default(), text, "{file}");
            assert_eq!(r.tool_calls.len(), tools.len(), "{file}");
            for (c, (name, input)) in r.tool_calls.iter().zip(&tools) {
                assert_eq!(&c.name, name, "{file}");
                let args: Value = serde_json::from_str(&c.arguments).unwrap();
                assert_eq!(&args, input, "{file}");
            }
            let u = r.usage.unwrap();
            assert_eq!((u.input_tokens, u.output_tokens), (input, output), "{file}");
            let want = match v["stop_reason"].as_str().unwrap() {
                "tool_use" => FinishReason::ToolCalls,
                "max_tokens" => FinishReason::Length,
                "refusal" => FinishReason::ContentFilter,
                _ => FinishReason::Stop,
            };
            assert_eq!(r.finish, want, "{file}");
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} JSON transcripts checked");
}

/// Folds a recorded SSE stream by hand (independently of the decoder).
fn expected_from_sse(body: &[u8]) -> (String, String, Vec<(String, String)>, u64, Option<String>) {
    let text = String::from_utf8_lossy(body);
    let (mut out, mut thinking, mut tools, mut output, mut stop) = (
        String::new(),
        String::new(),
        Vec::<(String, String)>::new(),
        0,
        None,
    );
    let mut kinds = std::collections::HashMap::new();
    for line in text.lines() {
        let Some(data) = line.strip_prefix("data:") else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(data.trim()) else {
            continue;
        };
        match v["type"].as_str().unwrap_or("") {
            "content_block_start" => {
                let b = &v["content_block"];
                let k = b["type"].as_str().unwrap().to_string();
                if k == "tool_use" {
                    tools.push((b["name"].as_str().unwrap().to_string(), String::new()));
                }
                kinds.insert(v["index"].as_u64().unwrap(), k);
            }
            "content_block_delta" => {
                let d = &v["delta"];
                match d["type"].as_str().unwrap() {
                    "text_delta" => out.push_str(d["text"].as_str().unwrap()),
                    "thinking_delta" => thinking.push_str(d["thinking"].as_str().unwrap()),
                    "input_json_delta"
                        if kinds.get(&v["index"].as_u64().unwrap()).map(String::as_str)
                            == Some("tool_use") =>
                    {
                        tools
                            .last_mut()
                            .unwrap()
                            .1
                            .push_str(d["partial_json"].as_str().unwrap());
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                output = v["usage"]["output_tokens"].as_u64().unwrap_or(0);
                stop = v["delta"]["stop_reason"].as_str().map(str::to_string);
            }
            _ => {}
        }
    }
    (out, thinking, tools, output, stop)
}

#[test]
fn streams_decode_to_what_the_transcript_says_at_any_split() {
    let mut checked = 0;
    for file in cassette::list("anthropic") {
        for i in cassette::load(&file) {
            if i.status != 200 || !i.content_type().starts_with("text/event-stream") {
                continue;
            }
            let (text, thinking, tools, output, stop) = expected_from_sse(&i.response);
            for split in [1, 7, 64, usize::MAX] {
                let r = stream(&i.response, split.min(i.response.len().max(1)));
                assert_eq!(
                    r.text.clone().unwrap_or_default(),
                    text,
                    "{file} split {split}"
                );
                let th: String = r.thinking.iter().map(|t| t.text.as_str()).collect();
                assert_eq!(th, thinking, "{file}");
                if !thinking.is_empty() {
                    assert!(
                        r.thinking.iter().any(|t| t.signature.is_some()),
                        "{file}: thinking signature kept"
                    );
                }
                let got: Vec<(String, String)> = r
                    .tool_calls
                    .iter()
                    .map(|c| (c.name.clone(), c.arguments.clone()))
                    .collect();
                assert_eq!(got, tools, "{file}");
                assert_eq!(r.usage.unwrap().output_tokens, output, "{file}");
                if stop.as_deref() == Some("tool_use") && !tools.is_empty() {
                    assert_eq!(r.finish, FinishReason::ToolCalls, "{file}");
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} stream transcripts checked");
}

#[test]
fn errors_keep_status_and_message() {
    let mut checked = 0;
    for file in cassette::list("anthropic") {
        for i in cassette::load(&file) {
            if i.status < 400 {
                continue;
            }
            let m = map_error(http::StatusCode::from_u16(i.status).unwrap(), &i.response);
            let v = i.response_json();
            assert_eq!(m.message, v["error"]["message"].as_str().unwrap(), "{file}");
            let want = if i.status == 529 { 503 } else { i.status };
            assert_eq!(m.status.as_u16(), want, "{file}");
            checked += 1;
        }
    }
    assert!(checked >= 1, "no error transcripts");
    let over = map_error(
        http::StatusCode::from_u16(529).unwrap(),
        br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
    );
    assert_eq!(over.status.as_u16(), 503);
}

/// The OpenAI request a client would send for the recorded exchange, encoded, has the
/// recorded request's essential structure.
#[test]
fn requests_have_the_recorded_structure() {
    let i = &cassette::load("anthropic/test_multiple_parallel_tool_calls.yaml")[0];
    let rec = &i.request;
    let openai = json!({
        "model": rec["model"],
        "max_tokens": rec["max_tokens"],
        "messages": [
            {"role": "system", "content": rec["system"]},
            {"role": "user", "content": rec["messages"][0]["content"][0]["text"]},
        ],
        "tools": rec["tools"].as_array().unwrap().iter().map(|t| json!({
            "type": "function",
            "function": {"name": t["name"], "description": t["description"], "parameters": t["input_schema"]}
        })).collect::<Vec<_>>(),
        "tool_choice": "auto",
    });
    let req = decode_request(openai.to_string().as_bytes()).unwrap();
    let enc = codec().encode(&req).unwrap();
    let body: Value = serde_json::from_slice(&enc.body).unwrap();
    assert_eq!(enc.path, "/v1/messages");
    for k in ["model", "max_tokens", "system", "tools", "tool_choice"] {
        assert_eq!(body[k], rec[k], "field {k}");
    }
    assert_eq!(body["messages"], rec["messages"]);

    // A multi-turn tool conversation: tool results go back as user tool_result blocks.
    let turns = cassette::load("anthropic/test_multiple_parallel_tool_calls.yaml");
    let second = &turns[1].request;
    let first_answer = turns[0].response_json();
    let mut msgs = vec![
        json!({"role": "system", "content": rec["system"]}),
        json!({"role": "user", "content": rec["messages"][0]["content"][0]["text"]}),
    ];
    let calls: Vec<Value> = first_answer["content"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["type"] == "tool_use")
        .map(|b| {
            json!({"id": b["id"], "type": "function",
            "function": {"name": b["name"], "arguments": b["input"].to_string()}})
        })
        .collect();
    let text = first_answer["content"][0]["text"].clone();
    msgs.push(json!({"role": "assistant", "content": text, "tool_calls": calls}));
    for b in second["messages"][2]["content"].as_array().unwrap() {
        if b["type"] == "tool_result" {
            let content = match &b["content"] {
                Value::String(s) => s.clone(),
                Value::Array(a) => a[0]["text"].as_str().unwrap().to_string(),
                _ => String::new(),
            };
            msgs.push(
                json!({"role": "tool", "tool_call_id": b["tool_use_id"], "content": content}),
            );
        }
    }
    let req = decode_request(
        json!({"model": rec["model"], "max_tokens": 4096, "messages": msgs, "tools": openai["tools"]})
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    let body: Value = serde_json::from_slice(&codec().encode(&req).unwrap().body).unwrap();
    let got = body["messages"].as_array().unwrap();
    let want = second["messages"].as_array().unwrap();
    assert_eq!(
        got.len(),
        want.len(),
        "{}",
        serde_json::to_string_pretty(&body).unwrap()
    );
    assert_eq!(got[1]["role"], "assistant");
    let ids = |m: &Value, t: &str, k: &str| -> Vec<Value> {
        m["content"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["type"] == t)
            .map(|b| b[k].clone())
            .collect()
    };
    assert_eq!(
        ids(&got[1], "tool_use", "id"),
        ids(&want[1], "tool_use", "id")
    );
    assert_eq!(
        ids(&got[1], "tool_use", "input"),
        ids(&want[1], "tool_use", "input")
    );
    assert_eq!(
        ids(&got[2], "tool_result", "tool_use_id"),
        ids(&want[2], "tool_result", "tool_use_id")
    );
}
