//! Replays of the real Cohere v2 transcripts in `crates/sluice/tests/fixtures/wire/cohere/` through the
//! Cohere codec: each recorded answer must decode to what the transcript says (read here
//! independently of the decoder), and the request built from the equivalent OpenAI input
//! must equal the recorded request body.
//!
//! The recordings hold four `/v2/chat` exchanges, all non-streamed and successful (plain
//! text, system prompt, thinking in multi-turn, prompt-cache usage). Streams, tool calls and
//! errors have no recording; the stream decoder is checked here on streams re-framed from
//! the recorded answers (the event shapes of Cohere's API reference), and in the unit tests
//! of `providers/cohere.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "replay/cassette.rs"]
mod cassette;

use serde_json::{json, Value};
use sluice::canonical::openai::{decode_request, encode_response};
use sluice::canonical::{ChatResponse, FinishReason, StreamEvent};
use sluice::providers::cohere::Cohere;
use sluice::providers::native::{Codec, DecodeCtx};

fn ctx() -> DecodeCtx {
    DecodeCtx {
        model: "command".into(),
        json_tool: None,
    }
}

/// Every recorded Cohere chat exchange: (file, interaction).
fn chats() -> Vec<(String, cassette::Interaction)> {
    let mut out = Vec::new();
    for file in cassette::list("cohere") {
        for i in cassette::load(&file) {
            if i.uri.starts_with("https://api.cohere.com/v2/chat") {
                out.push((file.clone(), i));
            }
        }
    }
    out
}

/// Text, thinking, input, output and cached tokens, as the transcript's JSON says.
fn expected(v: &Value) -> (String, String, u64, u64, u64) {
    let (mut text, mut thinking) = (String::new(), String::new());
    for b in v["message"]["content"].as_array().unwrap() {
        match b["type"].as_str().unwrap() {
            "text" => text.push_str(b["text"].as_str().unwrap()),
            "thinking" => thinking.push_str(b["thinking"].as_str().unwrap()),
            other => panic!("unexpected content type {other}"),
        }
    }
    let t = &v["usage"]["tokens"];
    (
        text,
        thinking,
        t["input_tokens"].as_u64().unwrap(),
        t["output_tokens"].as_u64().unwrap(),
        v["usage"]["cached_tokens"].as_u64().unwrap_or(0),
    )
}

#[test]
fn json_answers_decode_to_what_the_transcript_says() {
    let mut checked = 0;
    for (file, i) in chats() {
        assert_eq!(i.status, 200, "{file}");
        let v = i.response_json();
        let (text, thinking, input, output, cached) = expected(&v);
        let r = Cohere.decode(&i.response, &ctx()).unwrap();
        assert_eq!(r.id, v["id"].as_str().unwrap(), "{file}");
        assert_eq!(r.text.as_deref(), Some(text.as_str()), "{file}");
        let th: String = r.thinking.iter().map(|t| t.text.as_str()).collect();
        assert_eq!(th, thinking, "{file}");
        assert!(r.tool_calls.is_empty(), "{file}");
        assert_eq!(v["finish_reason"], "COMPLETE");
        assert_eq!(r.finish, FinishReason::Stop, "{file}");
        let u = r.usage.unwrap();
        assert_eq!(
            (u.input_tokens, u.output_tokens, u.cached_input_tokens),
            (input, output, cached),
            "{file}"
        );
        // And as the OpenAI answer the client gets.
        let oa = encode_response(&r, 0);
        let msg = &oa["choices"][0]["message"];
        assert_eq!(msg["content"], json!(text), "{file}");
        assert_eq!(oa["usage"]["prompt_tokens"], input, "{file}");
        assert_eq!(oa["usage"]["completion_tokens"], output, "{file}");
        if thinking.is_empty() {
            assert!(msg.get("reasoning_content").is_none(), "{file}");
        } else {
            assert_eq!(msg["reasoning_content"], json!(thinking), "{file}");
        }
        if cached > 0 {
            assert_eq!(
                oa["usage"]["prompt_tokens_details"]["cached_tokens"], cached,
                "{file}"
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 4, "the four recorded Cohere chat answers");
}

/// The OpenAI request a client sends for the recorded exchange: the same turns, with an
/// assistant's thinking blocks as `reasoning_content`.
fn openai_equivalent(rec: &Value) -> Value {
    let msgs: Vec<Value> = rec["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| match &m["content"] {
            Value::String(s) => json!({"role": m["role"], "content": s}),
            Value::Array(blocks) => {
                let pick = |t: &str, k: &str| -> String {
                    blocks
                        .iter()
                        .filter(|b| b["type"] == t)
                        .map(|b| b[k].as_str().unwrap())
                        .collect()
                };
                json!({"role": m["role"], "content": pick("text", "text"),
                       "reasoning_content": pick("thinking", "thinking")})
            }
            other => panic!("unexpected content {other}"),
        })
        .collect();
    json!({"model": rec["model"], "messages": msgs, "stream": rec["stream"]})
}

#[test]
fn requests_equal_the_recorded_bodies() {
    let mut checked = 0;
    for (file, i) in chats() {
        let openai = openai_equivalent(&i.request);
        let req = decode_request(openai.to_string().as_bytes()).unwrap();
        let enc = Cohere.encode(&req).unwrap();
        assert_eq!(enc.path, "/v2/chat");
        assert!(enc.dropped.is_empty(), "{file}: {:?}", enc.dropped);
        let body: Value = serde_json::from_slice(&enc.body).unwrap();
        assert_eq!(body, i.request, "{file}");
        checked += 1;
    }
    assert_eq!(checked, 4);
}

/// A recorded answer re-framed as the Cohere v2 event stream that carries it.
fn as_stream(v: &Value) -> String {
    let mut s = String::new();
    let mut ev = |name: &str, data: Value| {
        s.push_str(&format!("event: {name}\ndata: {data}\n\n"));
    };
    ev(
        "message-start",
        json!({"id": v["id"], "type": "message-start",
               "delta": {"message": {"role": "assistant", "content": [], "tool_plan": "",
                                     "tool_calls": [], "citations": []}}}),
    );
    for (index, b) in v["message"]["content"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let key = if b["type"] == "thinking" {
            "thinking"
        } else {
            "text"
        };
        ev(
            "content-start",
            json!({"type": "content-start", "index": index,
                   "delta": {"message": {"content": {"type": b["type"], key: ""}}}}),
        );
        let whole = b[key].as_str().unwrap();
        let mut piece = String::new();
        for ch in whole.chars() {
            piece.push(ch);
            if ch == ' ' || ch == '\n' {
                ev(
                    "content-delta",
                    json!({"type": "content-delta", "index": index,
                           "delta": {"message": {"content": {key: piece}}}}),
                );
                piece.clear();
            }
        }
        ev(
            "content-delta",
            json!({"type": "content-delta", "index": index,
                   "delta": {"message": {"content": {key: piece}}}}),
        );
        ev(
            "content-end",
            json!({"type": "content-end", "index": index}),
        );
    }
    ev(
        "message-end",
        json!({"type": "message-end",
               "delta": {"finish_reason": v["finish_reason"], "usage": v["usage"]}}),
    );
    s
}

#[test]
fn recorded_answers_streamed_decode_the_same_at_any_split() {
    for (file, i) in chats() {
        let v = i.response_json();
        let whole = Cohere.decode(&i.response, &ctx()).unwrap();
        let sse = as_stream(&v);
        for split in [1, 5, 64, 4096, usize::MAX] {
            let mut d = Cohere.stream_decoder(&ctx());
            let mut events: Vec<StreamEvent> = Vec::new();
            for chunk in sse.as_bytes().chunks(split.min(sse.len())) {
                d.feed(chunk, &mut events).unwrap();
            }
            d.finish(&mut events).unwrap();
            let mut r = ChatResponse::from_events(&events);
            r.model.clone_from(&whole.model);
            assert_eq!(r, whole, "{file} split {split}");
        }
    }
}
