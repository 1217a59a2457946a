//! Replays of the Ollama transcripts in `crates/sluice/tests/fixtures/wire/ollama/` against the native
//! `/api/chat` codec.
//!
//! Those four recordings were made against Ollama's OpenAI-compatible `/v1` (local and
//! ollama.com), not the native API, so there is no recorded native body to compare with
//! byte for byte. What they do pin down is the OpenAI input a client sends and what Ollama
//! answered: the native request built from that input must carry the same turns, model,
//! tools and output format in `/api/chat`'s shape, and the recorded answer, in the native
//! shape (`message.content`/`thinking`/`tool_calls`, `done_reason`, `prompt_eval_count`,
//! `eval_count`) as JSON and as NDJSON split anywhere, must decode to the same text,
//! reasoning, tool calls, finish reason and usage.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "replay/cassette.rs"]
mod cassette;

use serde_json::{json, Value};
use sluice::canonical::openai::decode_request;
use sluice::canonical::{ChatResponse, FinishReason, StreamEvent};
use sluice::providers::native::{Codec, DecodeCtx};
use sluice::providers::ollama::Ollama;

fn ctx() -> DecodeCtx {
    DecodeCtx {
        model: "ollama".into(),
        json_tool: None,
    }
}

fn exchanges() -> Vec<(String, cassette::Interaction)> {
    let mut out = Vec::new();
    for file in cassette::list("ollama") {
        for i in cassette::load(&file) {
            out.push((file.clone(), i));
        }
    }
    out
}

#[test]
fn native_requests_carry_the_recorded_input() {
    let mut checked = 0;
    for (file, i) in exchanges() {
        let rec = &i.request;
        // Sluice's clients send reasoning back as `reasoning_content` (what Sluice answers
        // with); the recording's `reasoning` is Ollama /v1's own name for it.
        let mut openai = rec.clone();
        for m in openai["messages"].as_array_mut().unwrap() {
            if let Some(r) = m.as_object_mut().unwrap().remove("reasoning") {
                m["reasoning_content"] = r;
            }
        }
        let req = decode_request(openai.to_string().as_bytes()).unwrap();
        let enc = Ollama.encode(&req).unwrap();
        assert_eq!(enc.path, "/api/chat");
        let body: Value = serde_json::from_slice(&enc.body).unwrap();
        assert_eq!(body["model"], rec["model"], "{file}");
        assert_eq!(
            body["stream"], false,
            "{file}: stream:false sent explicitly"
        );
        let (got, want) = (
            body["messages"].as_array().unwrap(),
            rec["messages"].as_array().unwrap(),
        );
        assert_eq!(got.len(), want.len(), "{file}");
        for (g, w) in got.iter().zip(want) {
            assert_eq!(g["role"], w["role"], "{file}");
            assert_eq!(g["content"], w["content"], "{file}");
            // The /v1 field `reasoning` is `thinking` natively.
            if let Some(r) = w.get("reasoning") {
                assert_eq!(&g["thinking"], r, "{file}");
            }
        }
        match rec["response_format"]["type"].as_str() {
            Some("json_object") => assert_eq!(body["format"], "json", "{file}"),
            Some("json_schema") => assert_eq!(
                body["format"], rec["response_format"]["json_schema"]["schema"],
                "{file}"
            ),
            _ => assert!(body.get("format").is_none(), "{file}"),
        }
        if let Some(tools) = rec["tools"].as_array() {
            assert_eq!(&body["tools"], &Value::Array(tools.clone()), "{file}");
        }
        assert!(enc.dropped.is_empty(), "{file}: {:?}", enc.dropped);
        checked += 1;
    }
    assert_eq!(checked, 4, "four recorded Ollama exchanges");
}

/// The recorded answer in Ollama's native shape: NDJSON lines (content in word-sized
/// pieces, thinking first, tool calls whole, then the `done` line); joined into one
/// object for the non-streamed form.
fn native_answer(v: &Value) -> (Vec<Value>, Value) {
    let m = &v["choices"][0]["message"];
    let model = v["model"].clone();
    let line = |msg: Value| {
        json!({"model": model, "created_at": "2026-01-01T00:00:00Z",
                                   "message": msg, "done": false})
    };
    let mut lines = Vec::new();
    let pieces = |s: &str| -> Vec<String> { s.split_inclusive(' ').map(str::to_string).collect() };
    for p in pieces(m["reasoning"].as_str().unwrap_or_default()) {
        lines.push(line(
            json!({"role": "assistant", "content": "", "thinking": p}),
        ));
    }
    for p in pieces(m["content"].as_str().unwrap_or_default()) {
        lines.push(line(json!({"role": "assistant", "content": p})));
    }
    let calls: Vec<Value> = m["tool_calls"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let args: Value =
                serde_json::from_str(c["function"]["arguments"].as_str().unwrap()).unwrap();
            json!({"function": {"name": c["function"]["name"], "arguments": args}})
        })
        .collect();
    if !calls.is_empty() {
        lines.push(line(
            json!({"role": "assistant", "content": "", "tool_calls": calls}),
        ));
    }
    let reason = match v["choices"][0]["finish_reason"].as_str() {
        Some("length") => "length",
        _ => "stop",
    };
    let u = &v["usage"];
    let done = json!({"model": model, "created_at": "2026-01-01T00:00:00Z",
        "message": {"role": "assistant", "content": ""}, "done": true, "done_reason": reason,
        "prompt_eval_count": u["prompt_tokens"], "eval_count": u["completion_tokens"]});
    lines.push(done.clone());
    let mut whole = done;
    whole["message"] = json!({"role": "assistant",
        "content": m["content"].as_str().unwrap_or_default()});
    if let Some(r) = m["reasoning"].as_str() {
        whole["message"]["thinking"] = json!(r);
    }
    if !calls.is_empty() {
        whole["message"]["tool_calls"] = Value::Array(calls);
    }
    (lines, whole)
}

fn check(file: &str, r: &ChatResponse, v: &Value) {
    let m = &v["choices"][0]["message"];
    let content = m["content"].as_str().unwrap_or_default();
    assert_eq!(
        r.text.as_deref().unwrap_or_default(),
        content,
        "{file}: text"
    );
    let th: String = r.thinking.iter().map(|t| t.text.as_str()).collect();
    assert_eq!(th, m["reasoning"].as_str().unwrap_or_default(), "{file}");
    let want: Vec<(String, Value)> = m["tool_calls"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["function"]["name"].as_str().unwrap().to_string(),
                serde_json::from_str(c["function"]["arguments"].as_str().unwrap()).unwrap(),
            )
        })
        .collect();
    let got: Vec<(String, Value)> = r
        .tool_calls
        .iter()
        .map(|c| {
            assert!(!c.id.is_empty(), "{file}: tool calls get ids");
            (c.name.clone(), serde_json::from_str(&c.arguments).unwrap())
        })
        .collect();
    assert_eq!(got, want, "{file}");
    let finish = match v["choices"][0]["finish_reason"].as_str().unwrap() {
        "tool_calls" => FinishReason::ToolCalls,
        "length" => FinishReason::Length,
        _ => FinishReason::Stop,
    };
    assert_eq!(r.finish, finish, "{file}");
    let u = r.usage.unwrap();
    assert_eq!(
        (u.input_tokens, u.output_tokens),
        (
            v["usage"]["prompt_tokens"].as_u64().unwrap(),
            v["usage"]["completion_tokens"].as_u64().unwrap()
        ),
        "{file}"
    );
}

#[test]
fn recorded_answers_decode_as_json_and_as_ndjson_at_any_split() {
    let mut checked = 0;
    for (file, i) in exchanges() {
        let v = i.response_json();
        let (lines, whole) = native_answer(&v);
        let r = Ollama.decode(whole.to_string().as_bytes(), &ctx()).unwrap();
        check(&file, &r, &v);
        let mut ndjson = String::new();
        for l in &lines {
            ndjson.push_str(&l.to_string());
            ndjson.push('\n');
        }
        for split in [1, 3, 17, 256, usize::MAX] {
            let mut d = Ollama.stream_decoder(&ctx());
            let mut events: Vec<StreamEvent> = Vec::new();
            for chunk in ndjson.as_bytes().chunks(split.min(ndjson.len())) {
                d.feed(chunk, &mut events).unwrap();
            }
            d.finish(&mut events).unwrap();
            check(&file, &ChatResponse::from_events(&events), &v);
        }
        checked += 1;
    }
    assert_eq!(checked, 4);
}

#[test]
fn a_tool_result_turn_names_the_function_it_answers() {
    // The second turn of the tool transcript, continued with the call and its result.
    let turns = cassette::load("ollama/test_ollama_cloud_tool_output.yaml");
    let answer = turns[1].response_json();
    let call = &answer["choices"][0]["message"]["tool_calls"][0];
    let mut rec = turns[1].request.clone();
    let msgs = rec["messages"].as_array_mut().unwrap();
    msgs.push(json!({"role": "assistant", "content": "", "tool_calls": [call]}));
    msgs.push(json!({"role": "tool", "tool_call_id": call["id"], "content": "ok"}));
    let req = decode_request(rec.to_string().as_bytes()).unwrap();
    let body: Value = serde_json::from_slice(&Ollama.encode(&req).unwrap().body).unwrap();
    let m = body["messages"].as_array().unwrap();
    let n = m.len();
    assert_eq!(
        m[n - 2]["tool_calls"][0]["function"]["arguments"],
        json!({"city": "Paris", "country": "France"}),
        "arguments go as an object"
    );
    assert_eq!(
        m[n - 1],
        json!({"role": "tool", "content": "ok", "tool_name": "final_result"})
    );
}
