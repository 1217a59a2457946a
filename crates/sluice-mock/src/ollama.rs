//! Ollama's native API: `POST /api/chat` (JSON with `"stream": false`, otherwise NDJSON —
//! Ollama streams by default — ending in a `done: true` line with `prompt_eval_count` /
//! `eval_count`), `POST /api/embed`, and Ollama error bodies (`{"error": "..."}`).
//!
//! Ollama has no `tool_choice`: like a model given tools, the mock calls the first tool
//! when tools are offered and the conversation holds no tool result yet.

use std::borrow::Cow;

use bytes::Bytes;
use http::HeaderValue;
use serde_json::{json, Value};

use crate::openai::{
    answer_question, pieces, text_tokens, text_vector, Answer, Content, Events, Payload,
    TOOL_ARGUMENTS,
};
use crate::{ApiError, MAX_EMBEDDING_DIMS};

const DEFAULT_DIMS: usize = 16;
const CREATED_AT: &str = "2026-01-01T00:00:00Z";
const NDJSON: HeaderValue = HeaderValue::from_static("application/x-ndjson");

/// `POST /api/chat`
pub(crate) fn chat(body: &[u8], chunks: usize) -> Result<Payload, ApiError> {
    let req: Value = serde_json::from_slice(body).map_err(ApiError::bad_json)?;
    let model = req["model"]
        .as_str()
        .ok_or_else(|| ApiError::invalid("model is required", Some("model")))?;
    let msgs = req["messages"]
        .as_array()
        .ok_or_else(|| ApiError::invalid("messages is required", Some("messages")))?;
    let mut turns = Vec::with_capacity(msgs.len());
    let mut tool_result = false;
    for m in msgs {
        let role = m["role"].as_str().unwrap_or_default();
        if !matches!(role, "system" | "user" | "assistant" | "tool") {
            return Err(ApiError::invalid(
                format!("invalid role: {role}"),
                Some("messages"),
            ));
        }
        if !m["content"].is_string() && !m["content"].is_null() {
            return Err(ApiError::invalid(
                "json: cannot unmarshal array into Go struct field Message.messages.content of type string",
                Some("messages"),
            ));
        }
        for img in m["images"].as_array().into_iter().flatten() {
            if img.as_str().is_none_or(|s| s.starts_with("data:")) {
                return Err(ApiError::invalid(
                    "illegal base64 data in images",
                    Some("messages"),
                ));
            }
        }
        tool_result |= role == "tool";
        let text = m["content"].as_str().unwrap_or_default();
        turns.push((role == "user", Cow::Borrowed(text)));
    }
    let tool = if tool_result {
        None
    } else {
        req["tools"][0]["function"]["name"]
            .as_str()
            .map(str::to_string)
    };
    let answer = answer_question(&turns, tool);
    // Ollama streams unless told not to.
    if req["stream"] == false {
        Ok(Payload::Json(Bytes::from(
            done_line(model, &answer, Some(message(&answer))).to_string(),
        )))
    } else {
        Ok(Payload::Stream(stream(model, &answer, chunks)))
    }
}

fn message(a: &Answer) -> Value {
    match &a.content {
        Content::Text(t) => json!({"role": "assistant", "content": t}),
        Content::ToolCall { name } => {
            let args: Value = serde_json::from_str(TOOL_ARGUMENTS).unwrap_or(Value::Null);
            json!({"role": "assistant", "content": "",
                   "tool_calls": [{"function": {"name": name, "arguments": args}}]})
        }
    }
}

/// The final object: the whole message (JSON answers) or an empty one (end of a stream).
fn done_line(model: &str, a: &Answer, msg: Option<Value>) -> Value {
    json!({"model": model, "created_at": CREATED_AT,
           "message": msg.unwrap_or_else(|| json!({"role": "assistant", "content": ""})),
           "done_reason": "stop", "done": true, "total_duration": 1_000_000,
           "load_duration": 1000, "prompt_eval_count": a.prompt_tokens,
           "prompt_eval_duration": 1000, "eval_count": a.completion_tokens,
           "eval_duration": 1000})
}

fn line(events: &mut Events, v: &Value) {
    let _ = events.push(|buf| {
        serde_json::to_writer(&mut *buf, v)?;
        buf.push(b'\n');
        Ok(())
    });
}

fn stream(model: &str, a: &Answer, chunks: usize) -> Events {
    let mut ev = Events {
        content_type: Some(NDJSON),
        ..Events::default()
    };
    match &a.content {
        Content::Text(t) => {
            for piece in pieces(t, chunks) {
                line(
                    &mut ev,
                    &json!({"model": model, "created_at": CREATED_AT,
                    "message": {"role": "assistant", "content": piece}, "done": false}),
                );
            }
        }
        // Tool calls arrive whole, in one line.
        Content::ToolCall { .. } => line(
            &mut ev,
            &json!({"model": model, "created_at": CREATED_AT, "message": message(a),
                    "done": false}),
        ),
    }
    line(&mut ev, &done_line(model, a, None));
    ev
}

/// `POST /api/embed`: `{model, embeddings: [[...]], prompt_eval_count}`.
pub(crate) fn embed(body: &[u8]) -> Result<Payload, ApiError> {
    let req: Value = serde_json::from_slice(body).map_err(ApiError::bad_json)?;
    let model = req["model"]
        .as_str()
        .ok_or_else(|| ApiError::invalid("model is required", Some("model")))?;
    let inputs: Vec<&str> = match &req["input"] {
        Value::String(s) => vec![s.as_str()],
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if inputs.is_empty() {
        return Err(ApiError::invalid("input is required", Some("input")));
    }
    let dims = req["dimensions"]
        .as_u64()
        .map_or(DEFAULT_DIMS, |d| usize::try_from(d).unwrap_or(DEFAULT_DIMS))
        .clamp(1, MAX_EMBEDDING_DIMS);
    let vectors: Vec<Vec<f32>> = inputs.iter().map(|t| text_vector(t, dims)).collect();
    let tokens: u64 = inputs.iter().map(|t| text_tokens(t)).sum();
    let v = json!({"model": model, "embeddings": vectors, "total_duration": 1000,
                   "load_duration": 100, "prompt_eval_count": tokens});
    Ok(Payload::Json(Bytes::from(v.to_string())))
}

/// `{"error": "..."}`
pub(crate) fn error_body(e: &ApiError) -> Bytes {
    Bytes::from(json!({"error": e.message}).to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn streams_ndjson_by_default_and_json_when_asked() {
        let Payload::Stream(ev) = chat(
            br#"{"model":"llama","messages":[{"role":"user","content":"Say hello"}]}"#,
            3,
        )
        .unwrap() else {
            panic!("NDJSON expected")
        };
        assert_eq!(ev.content_type, Some(NDJSON));
        let text = String::from_utf8(ev.buf).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 4);
        let joined: String = lines
            .iter()
            .map(|l| l["message"]["content"].as_str().unwrap())
            .collect();
        assert_eq!(joined, "Mock reply to: Say hello");
        assert_eq!(lines[3]["done"], true);
        assert_eq!(lines[3]["eval_count"], 5);
        let Payload::Json(b) = chat(
            br#"{"model":"llama","stream":false,"tools":[{"type":"function","function":{"name":"f"}}],
                "messages":[{"role":"user","content":"x"}]}"#,
            3,
        )
        .unwrap() else {
            panic!("JSON expected")
        };
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(
            v["message"]["tool_calls"][0]["function"]["arguments"]["mock"],
            true
        );
    }

    #[test]
    fn rejects_what_ollama_rejects() {
        for body in [
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text"}]}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"x","images":["data:image/png;base64,AA"]}]}"#,
            r#"{"messages":[]}"#,
        ] {
            assert!(chat(body.as_bytes(), 2).is_err(), "{body}");
        }
        let Payload::Json(b) = embed(br#"{"model":"e","input":["a","b"]}"#).unwrap() else {
            panic!("JSON expected")
        };
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["embeddings"].as_array().unwrap().len(), 2);
    }
}
