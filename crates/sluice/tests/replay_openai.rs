//! Replays of real OpenAI-format transcripts (OpenAI, Groq, Mistral, Cerebras): recorded
//! requests survive OpenAI -> canonical -> OpenAI with their structure; recorded answers
//! (JSON and SSE at any chunk split) decode to what the transcript says, and re-encoding
//! the decoded stream as our own chunks decodes to the same answer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::type_complexity)]

#[path = "replay/cassette.rs"]
mod cassette;

use serde_json::Value;
use sluice::canonical::openai::{
    decode_request, decode_response, encode_request, OpenAiStream, StreamEncoder,
};
use sluice::canonical::{ChatResponse, StreamEvent};
use sluice::providers::native::StreamDecoder;
use sluice::providers::parse_error_body;

fn chat_interactions() -> Vec<(String, cassette::Interaction)> {
    let mut out = Vec::new();
    for dir in ["openai", "groq", "mistral"] {
        for file in cassette::list(dir) {
            for i in cassette::load(&file) {
                if i.uri.ends_with("/chat/completions") {
                    out.push((file.clone(), i));
                }
            }
        }
    }
    out
}

fn decode_stream(bytes: &[u8], split: usize) -> ChatResponse {
    let mut d = OpenAiStream::default();
    let mut events: Vec<StreamEvent> = Vec::new();
    for chunk in bytes.chunks(split.max(1)) {
        d.feed(chunk, &mut events).unwrap();
    }
    d.finish(&mut events).unwrap();
    ChatResponse::from_events(&events)
}

/// (text, thinking) of a `content`: a string, or Mistral's list of `text` and `thinking` parts.
fn listed(c: &Value) -> (String, String) {
    if let Some(s) = c.as_str() {
        return (s.to_string(), String::new());
    }
    let (mut text, mut thinking) = (String::new(), String::new());
    for p in c.as_array().into_iter().flatten() {
        if p["type"] == "text" {
            text.push_str(p["text"].as_str().unwrap());
        }
        for t in p["thinking"].as_array().into_iter().flatten() {
            thinking.push_str(t["text"].as_str().unwrap());
        }
    }
    (text, thinking)
}

/// Folds a recorded stream by hand: text, tool calls (name, arguments) by index, finish.
fn fold_by_hand(body: &[u8]) -> (String, Vec<(String, String)>, Option<String>, Option<u64>) {
    let (mut text, mut calls, mut finish, mut out_tokens) = (
        String::new(),
        std::collections::BTreeMap::<u64, (String, String)>::new(),
        None,
        None,
    );
    for line in String::from_utf8_lossy(body).lines() {
        let Some(d) = line.strip_prefix("data:") else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(d.trim()) else {
            continue;
        };
        if let Some(c) = v["choices"].get(0) {
            text.push_str(&listed(&c["delta"]["content"]).0);
            for tc in c["delta"]["tool_calls"].as_array().into_iter().flatten() {
                let e = calls.entry(tc["index"].as_u64().unwrap()).or_default();
                if let Some(n) = tc["function"]["name"].as_str() {
                    e.0.push_str(n);
                }
                if let Some(a) = tc["function"]["arguments"].as_str() {
                    e.1.push_str(a);
                }
            }
            if let Some(f) = c["finish_reason"].as_str() {
                finish = Some(f.to_string());
            }
        }
        if let Some(n) = v["usage"]["completion_tokens"]
            .as_u64()
            .or(v["x_groq"]["usage"]["completion_tokens"].as_u64())
        {
            out_tokens = Some(n);
        }
    }
    (text, calls.into_values().collect(), finish, out_tokens)
}

#[test]
fn requests_round_trip_through_the_canonical_model() {
    let mut checked = 0;
    for (file, i) in chat_interactions() {
        let rec = &i.request;
        if !rec.is_object() {
            continue;
        }
        let body = serde_json::to_vec(rec).unwrap();
        let canonical = decode_request(&body).unwrap_or_else(|e| panic!("{file}: {e}"));
        let back = encode_request(&canonical);
        assert_eq!(back["model"], rec["model"], "{file}");
        let (a, b) = (
            back["messages"].as_array().unwrap(),
            rec["messages"].as_array().unwrap(),
        );
        assert_eq!(a.len(), b.len(), "{file}");
        for (x, y) in a.iter().zip(b) {
            let role = |r: &Value| match r.as_str() {
                Some("developer") => "system".to_string(),
                Some(s) => s.to_string(),
                None => String::new(),
            };
            assert_eq!(role(&x["role"]), role(&y["role"]), "{file}");
            let text = |m: &Value| match &m["content"] {
                Value::String(s) => s.clone(),
                Value::Array(p) => p
                    .iter()
                    .filter_map(|p| p["text"].as_str())
                    .collect::<String>(),
                _ => String::new(),
            };
            assert_eq!(text(x), text(y), "{file}");
            let images = |m: &Value| {
                m["content"]
                    .as_array()
                    .map_or(0, |p| p.iter().filter(|p| p["type"] == "image_url").count())
            };
            assert_eq!(images(x), images(y), "{file}");
            let calls = |m: &Value| -> Vec<(Value, Value)> {
                m["tool_calls"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| (c["id"].clone(), c["function"]["arguments"].clone()))
                    .collect()
            };
            assert_eq!(calls(x), calls(y), "{file}");
            assert_eq!(x["tool_call_id"], y["tool_call_id"], "{file}");
        }
        let names = |v: &Value| -> Vec<Value> {
            v["tools"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| t["function"]["name"].clone())
                .collect()
        };
        assert_eq!(names(&back), names(rec), "{file}");
        assert_eq!(
            back["stream"].as_bool().unwrap_or(false),
            rec["stream"].as_bool().unwrap_or(false),
            "{file}"
        );
        for k in ["tool_choice", "response_format", "temperature", "seed"] {
            if !rec[k].is_null() {
                assert_eq!(back[k], rec[k], "{file}: {k}");
            }
        }
        checked += 1;
    }
    assert!(checked >= 30, "only {checked} requests");
}

#[test]
fn answers_decode_to_what_the_transcript_says() {
    let (mut json_checked, mut sse_checked, mut errors) = (0, 0, 0);
    for (file, i) in chat_interactions() {
        if i.status >= 400 {
            let (message, ..) = parse_error_body(&i.response);
            let v: Value = serde_json::from_slice(&i.response).unwrap_or(Value::Null);
            let want = v["error"]["message"].as_str().or(v["message"].as_str());
            if let Some(want) = want {
                assert_eq!(message, want, "{file}");
            }
            errors += 1;
            continue;
        }
        if i.content_type().starts_with("text/event-stream") {
            let in_band_error = String::from_utf8_lossy(&i.response)
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
                .find_map(|v| v["error"]["message"].as_str().map(str::to_string));
            if let Some(message) = in_band_error {
                // An error inside the stream surfaces as a decode error carrying its message.
                let mut d = OpenAiStream::default();
                let mut events = Vec::new();
                let r = d
                    .feed(&i.response, &mut events)
                    .and_then(|()| d.finish(&mut events));
                let e = r.expect_err("an in-stream error must not pass silently");
                assert!(e.message.contains(&message), "{file}: {e}");
                errors += 1;
                continue;
            }
            let (text, calls, finish, out_tokens) = fold_by_hand(&i.response);
            for split in [1, 5, 64, usize::MAX] {
                let r = decode_stream(&i.response, split.min(i.response.len()));
                assert_eq!(
                    r.text.clone().unwrap_or_default(),
                    text,
                    "{file} split {split}"
                );
                let got: Vec<(String, String)> = r
                    .tool_calls
                    .iter()
                    .map(|c| (c.name.clone(), c.arguments.clone()))
                    .collect();
                assert_eq!(got, calls, "{file}");
                if let Some(f) = &finish {
                    assert_eq!(r.finish.as_openai(), f, "{file}");
                }
                assert_eq!(r.usage.map(|u| u.output_tokens), out_tokens, "{file}");
            }
            // Re-encoded as our chunks, the stream decodes to the same answer.
            let r = decode_stream(&i.response, usize::MAX);
            let mut d = OpenAiStream::default();
            let mut events = Vec::new();
            d.feed(&i.response, &mut events).unwrap();
            d.finish(&mut events).unwrap();
            let mut enc = StreamEncoder::new("x".into(), "m".into(), 0, true);
            let mut bytes = Vec::new();
            for e in &events {
                enc.event(e, &mut bytes);
            }
            enc.finish(&mut bytes);
            let again = decode_stream(&bytes, 3);
            assert_eq!(again.text, r.text, "{file}");
            assert_eq!(again.tool_calls, r.tool_calls, "{file}");
            assert_eq!(again.finish, r.finish, "{file}");
            sse_checked += 1;
        } else {
            // (One cassette recorded a test double's plain-text echo, not OpenAI.)
            let Ok(v) = serde_json::from_slice::<Value>(&i.response) else {
                continue;
            };
            let r = decode_response(&i.response).unwrap();
            let m = &v["choices"][0]["message"];
            let (text, thinking) = listed(&m["content"]);
            assert_eq!(r.text.unwrap_or_default(), text, "{file}");
            if !thinking.is_empty() {
                let got: String = r.thinking.iter().map(|t| t.text.as_str()).collect();
                assert_eq!(got, thinking, "{file}");
            }
            assert_eq!(
                r.tool_calls.len(),
                m["tool_calls"].as_array().map_or(0, Vec::len),
                "{file}"
            );
            if let Some(f) = v["choices"][0]["finish_reason"].as_str() {
                assert_eq!(r.finish.as_openai(), f, "{file}");
            }
            assert_eq!(
                r.usage.map(|u| u.input_tokens),
                v["usage"]["prompt_tokens"].as_u64(),
                "{file}"
            );
            json_checked += 1;
        }
    }
    assert!(json_checked >= 10, "only {json_checked} JSON answers");
    assert!(sse_checked >= 3, "only {sse_checked} streams");
    assert!(errors >= 1, "no error transcripts");
}
