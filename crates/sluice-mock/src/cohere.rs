//! Cohere v2: `POST /v2/chat` (JSON, and SSE with Cohere's event sequence: message-start,
//! content-start/delta/end, tool-plan-delta, tool-call-start/delta/end, message-end),
//! `POST /v2/embed`, and Cohere error bodies (`{"id", "message"}`).

use std::borrow::Cow;

use bytes::Bytes;
use serde_json::{json, Value};

use crate::openai::{
    answer_question, pieces, text_tokens, text_vector, Answer, Content, Events, Payload,
    TOOL_ARGUMENTS,
};
use crate::{ApiError, MAX_EMBEDDING_DIMS};

/// Embedding length when the request gives no `output_dimension`.
const DEFAULT_DIMS: usize = 16;

fn text_of(content: &Value) -> Cow<'_, str> {
    match content {
        Value::String(s) => Cow::Borrowed(s),
        Value::Array(parts) => {
            let mut out = String::new();
            for p in parts {
                if p["type"] == "text" {
                    out.push_str(p["text"].as_str().unwrap_or_default());
                }
            }
            Cow::Owned(out)
        }
        _ => Cow::Borrowed(""),
    }
}

/// `POST /v2/chat`
pub(crate) fn chat(body: &[u8], number: u64, chunks: usize) -> Result<Payload, ApiError> {
    let req: Value = serde_json::from_slice(body).map_err(ApiError::bad_json)?;
    if req["model"].as_str().is_none() {
        return Err(ApiError::invalid("model is required", Some("model")));
    }
    let msgs = req["messages"]
        .as_array()
        .filter(|m| !m.is_empty())
        .ok_or_else(|| ApiError::invalid("messages is required", Some("messages")))?;
    let mut turns = Vec::with_capacity(msgs.len());
    for m in msgs {
        let role = m["role"].as_str().unwrap_or_default();
        if !matches!(role, "system" | "user" | "assistant" | "tool") {
            return Err(ApiError::invalid(
                format!("invalid role \"{role}\": expected system, user, assistant or tool"),
                Some("messages"),
            ));
        }
        if role == "tool" && m["tool_call_id"].as_str().is_none() {
            return Err(ApiError::invalid(
                "tool messages need tool_call_id",
                Some("messages"),
            ));
        }
        turns.push((role == "user", text_of(&m["content"])));
    }
    // `REQUIRED` calls the first tool offered (a named choice arrives as the only one).
    let tool = match req["tool_choice"].as_str() {
        Some("REQUIRED") => req["tools"][0]["function"]["name"]
            .as_str()
            .map(str::to_string),
        _ => None,
    };
    let answer = answer_question(&turns, tool);
    if req["stream"] == true {
        Ok(Payload::Stream(stream(number, &answer, chunks)))
    } else {
        Ok(Payload::Json(Bytes::from(
            chat_json(number, &answer).to_string(),
        )))
    }
}

fn usage(a: &Answer) -> Value {
    let tokens = json!({"input_tokens": a.prompt_tokens, "output_tokens": a.completion_tokens});
    json!({"billed_units": tokens, "tokens": tokens})
}

fn plan(name: &str) -> String {
    format!("I will call {name}.")
}

fn call_id(name: &str, number: u64) -> String {
    format!("{name}_mock_{number}")
}

fn chat_json(number: u64, a: &Answer) -> Value {
    let (message, finish) = match &a.content {
        Content::Text(t) => (
            json!({"role": "assistant", "content": [{"type": "text", "text": t}]}),
            "COMPLETE",
        ),
        Content::ToolCall { name } => (
            json!({"role": "assistant", "tool_plan": plan(name), "tool_calls": [
                {"id": call_id(name, number), "type": "function",
                 "function": {"name": name, "arguments": TOOL_ARGUMENTS}}]}),
            "TOOL_CALL",
        ),
    };
    json!({"id": format!("mock-{number}"), "message": message, "finish_reason": finish,
           "usage": usage(a)})
}

fn event(events: &mut Events, data: &Value) {
    let _ = events.push(|buf| {
        buf.extend_from_slice(b"event: ");
        buf.extend_from_slice(data["type"].as_str().unwrap_or_default().as_bytes());
        buf.extend_from_slice(b"\ndata: ");
        serde_json::to_writer(&mut *buf, data)?;
        buf.extend_from_slice(b"\n\n");
        Ok(())
    });
}

fn stream(number: u64, a: &Answer, chunks: usize) -> Events {
    let mut ev = Events::default();
    event(
        &mut ev,
        &json!({"id": format!("mock-{number}"), "type": "message-start",
        "delta": {"message": {"role": "assistant", "content": [], "tool_plan": "",
                              "tool_calls": [], "citations": []}}}),
    );
    let finish = match &a.content {
        Content::Text(t) => {
            event(
                &mut ev,
                &json!({"type": "content-start", "index": 0,
                "delta": {"message": {"content": {"type": "text", "text": ""}}}}),
            );
            for piece in pieces(t, chunks) {
                event(
                    &mut ev,
                    &json!({"type": "content-delta", "index": 0,
                    "delta": {"message": {"content": {"text": piece}}}}),
                );
            }
            event(&mut ev, &json!({"type": "content-end", "index": 0}));
            "COMPLETE"
        }
        Content::ToolCall { name } => {
            event(
                &mut ev,
                &json!({"type": "tool-plan-delta",
                "delta": {"message": {"tool_plan": plan(name)}}}),
            );
            event(
                &mut ev,
                &json!({"type": "tool-call-start", "index": 0,
                "delta": {"message": {"tool_calls": {"id": call_id(name, number),
                    "type": "function", "function": {"name": name, "arguments": ""}}}}}),
            );
            for piece in pieces(TOOL_ARGUMENTS, chunks.clamp(2, TOOL_ARGUMENTS.len())) {
                event(
                    &mut ev,
                    &json!({"type": "tool-call-delta", "index": 0,
                    "delta": {"message": {"tool_calls": {"function": {"arguments": piece}}}}}),
                );
            }
            event(&mut ev, &json!({"type": "tool-call-end", "index": 0}));
            "TOOL_CALL"
        }
    };
    event(
        &mut ev,
        &json!({"type": "message-end",
        "delta": {"finish_reason": finish, "usage": usage(a)}}),
    );
    ev
}

/// `POST /v2/embed`: `{embeddings: {float: [...]}, meta: {billed_units}}`.
pub(crate) fn embed(body: &[u8], number: u64) -> Result<Payload, ApiError> {
    let req: Value = serde_json::from_slice(body).map_err(ApiError::bad_json)?;
    let texts = req["texts"]
        .as_array()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::invalid("texts is required", Some("texts")))?;
    if req["input_type"].as_str().is_none() {
        return Err(ApiError::invalid(
            "input_type is required for embed v3+ models",
            Some("input_type"),
        ));
    }
    let dims = req["output_dimension"]
        .as_u64()
        .map_or(DEFAULT_DIMS, |d| usize::try_from(d).unwrap_or(DEFAULT_DIMS))
        .clamp(1, MAX_EMBEDDING_DIMS);
    let (mut vectors, mut tokens) = (Vec::with_capacity(texts.len()), 0);
    for t in texts {
        let t = t
            .as_str()
            .ok_or_else(|| ApiError::invalid("texts must be strings", Some("texts")))?;
        vectors.push(text_vector(t, dims));
        tokens += text_tokens(t);
    }
    let v = json!({"id": format!("mock-{number}"), "embeddings": {"float": vectors},
                   "texts": texts, "meta": {"billed_units": {"input_tokens": tokens}},
                   "response_type": "embeddings_by_type"});
    Ok(Payload::Json(Bytes::from(v.to_string())))
}

/// `{"id": ..., "message": ...}`
pub(crate) fn error_body(e: &ApiError) -> Bytes {
    Bytes::from(json!({"id": "mock-error", "message": e.message}).to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn required_calls_the_first_tool_and_streams_its_arguments() {
        let body = br#"{"model":"c","stream":true,"tool_choice":"REQUIRED",
            "tools":[{"type":"function","function":{"name":"f","parameters":{}}}],
            "messages":[{"role":"user","content":"x"}]}"#;
        let Payload::Stream(ev) = chat(body, 3, 4).unwrap() else {
            panic!("stream expected")
        };
        let text = String::from_utf8(ev.buf).unwrap();
        assert!(text.starts_with("event: message-start\n"));
        assert!(text.contains("\"id\":\"f_mock_3\""));
        assert!(text.contains("\"finish_reason\":\"TOOL_CALL\""));
        let args: String = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|d| serde_json::from_str::<Value>(d).unwrap())
            .filter(|v| v["type"] == "tool-call-delta")
            .map(|v| {
                v["delta"]["message"]["tool_calls"]["function"]["arguments"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(args, TOOL_ARGUMENTS);
    }

    #[test]
    fn text_json_and_bad_requests() {
        let Payload::Json(b) = chat(
            br#"{"model":"c","messages":[{"role":"user","content":"Say hello"}]}"#,
            1,
            4,
        )
        .unwrap() else {
            panic!("json expected")
        };
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(
            v["message"]["content"][0]["text"],
            "Mock reply to: Say hello"
        );
        assert_eq!(v["finish_reason"], "COMPLETE");
        assert_eq!(v["usage"]["tokens"]["output_tokens"], 5);
        let e = chat(br#"{"model":"c","messages":[{"role":"robot"}]}"#, 1, 4)
            .err()
            .unwrap();
        assert_eq!(e.status.as_u16(), 400);
        let e = embed(br#"{"model":"e","texts":["a"]}"#, 1).err().unwrap();
        assert_eq!(e.param, Some("input_type"));
        let Payload::Json(b) = embed(
            br#"{"model":"e","texts":["a","b"],"input_type":"search_document","output_dimension":8}"#,
            1,
        )
        .unwrap() else {
            panic!("json expected")
        };
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["embeddings"]["float"][1].as_array().unwrap().len(), 8);
    }
}
