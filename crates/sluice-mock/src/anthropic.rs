//! The Anthropic Messages API: `POST /v1/messages`, JSON and SSE with Anthropic's event
//! sequence (message_start, content_block_*, ping, message_delta, message_stop), thinking
//! blocks with signatures when the request enables thinking, and Anthropic error bodies.

use std::borrow::Cow;

use bytes::Bytes;
use serde_json::{json, Value};

use crate::openai::{answer_question, pieces, Answer, Content, Events, Payload, TOOL_ARGUMENTS};
use crate::ApiError;

const THINKING: &str = "The user wants a mock answer; I will give one.";

fn text_of(content: &Value) -> Cow<'_, str> {
    match content {
        Value::String(s) => Cow::Borrowed(s),
        Value::Array(blocks) => {
            let mut out = String::new();
            for b in blocks {
                // Tool results are not what the user said: the reply echoes text blocks.
                if b["type"] == "text" {
                    out.push_str(b["text"].as_str().unwrap_or_default());
                }
            }
            Cow::Owned(out)
        }
        _ => Cow::Borrowed(""),
    }
}

/// `POST /v1/messages/count_tokens`: the prompt tokens the answer would report.
pub(crate) fn count_tokens(body: &[u8]) -> Result<Payload, ApiError> {
    let req: Value = serde_json::from_slice(body).map_err(ApiError::bad_json)?;
    let (turns, _) = question(&req)?;
    let answer = answer_question(&turns, None);
    Ok(Payload::Json(Bytes::from(
        json!({"input_tokens": answer.prompt_tokens}).to_string(),
    )))
}

/// `POST /v1/messages`
pub(crate) fn messages(body: &[u8], number: u64, chunks: usize) -> Result<Payload, ApiError> {
    let req: Value = serde_json::from_slice(body).map_err(ApiError::bad_json)?;
    if req["max_tokens"].as_u64().is_none() {
        return Err(ApiError::invalid(
            "max_tokens: Field required",
            Some("max_tokens"),
        ));
    }
    let (turns, model) = question(&req)?;
    let tool = match req["tool_choice"]["type"].as_str() {
        Some("any") => req["tools"][0]["name"].as_str().map(str::to_string),
        Some("tool") => req["tool_choice"]["name"].as_str().map(str::to_string),
        _ => None,
    };
    let mut answer = answer_question(&turns, tool);
    answer.stop_at(
        req["stop_sequences"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str),
    );
    let thinking = req["thinking"]["type"] == "enabled";
    if req["stream"] == true {
        Ok(Payload::Stream(stream(
            number, model, &answer, chunks, thinking,
        )))
    } else {
        Ok(Payload::Json(Bytes::from(
            message_json(number, model, &answer, thinking).to_string(),
        )))
    }
}

/// A conversation as (is the user speaking, text) turns.
type Turns<'a> = Vec<(bool, Cow<'a, str>)>;

/// The conversation and the model.
fn question(req: &Value) -> Result<(Turns<'_>, &str), ApiError> {
    let model = req["model"]
        .as_str()
        .ok_or_else(|| ApiError::invalid("model: Field required", Some("model")))?;
    let msgs = req["messages"]
        .as_array()
        .filter(|m| !m.is_empty())
        .ok_or_else(|| ApiError::invalid("messages: Field required", Some("messages")))?;
    let mut turns = Vec::with_capacity(msgs.len() + 1);
    if !req["system"].is_null() {
        turns.push((false, text_of(&req["system"])));
    }
    let mut last_role = "";
    for m in msgs {
        let role = m["role"].as_str().unwrap_or_default();
        if role != "user" && role != "assistant" {
            return Err(ApiError::invalid(
                format!("messages: Unexpected role \"{role}\""),
                Some("messages"),
            ));
        }
        if role == last_role {
            return Err(ApiError::invalid(
                "messages: roles must alternate between \"user\" and \"assistant\"",
                Some("messages"),
            ));
        }
        last_role = role;
        turns.push((role == "user", text_of(&m["content"])));
    }
    Ok((turns, model))
}

fn usage(a: &Answer) -> Value {
    json!({"input_tokens": a.prompt_tokens, "output_tokens": a.completion_tokens,
           "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0})
}

fn message_json(number: u64, model: &str, a: &Answer, thinking: bool) -> Value {
    let mut content = Vec::new();
    if thinking {
        content.push(json!({"type": "thinking", "thinking": THINKING,
                            "signature": format!("sig_mock_{number}")}));
    }
    let stop = match &a.content {
        Content::Text(t) => {
            content.push(json!({"type": "text", "text": t}));
            a.text_stop_reason()
        }
        Content::ToolCall { name } => {
            let input: Value = serde_json::from_str(TOOL_ARGUMENTS).unwrap_or(Value::Null);
            content.push(
                json!({"type": "tool_use", "id": format!("toolu_mock_{number}"),
                                "name": name, "input": input}),
            );
            "tool_use"
        }
    };
    json!({"id": format!("msg_mock_{number}"), "type": "message", "role": "assistant",
           "model": model, "content": content, "stop_reason": stop,
           "stop_sequence": a.stop_sequence, "usage": usage(a)})
}

fn event(events: &mut Events, name: &str, data: &Value) {
    let _ = events.push(|buf| {
        buf.extend_from_slice(b"event: ");
        buf.extend_from_slice(name.as_bytes());
        buf.extend_from_slice(b"\ndata: ");
        serde_json::to_writer(&mut *buf, data)?;
        buf.extend_from_slice(b"\n\n");
        Ok(())
    });
}

fn stream(number: u64, model: &str, a: &Answer, chunks: usize, thinking: bool) -> Events {
    let mut ev = Events::default();
    let mut start = message_json(number, model, a, false);
    start["content"] = json!([]);
    start["stop_reason"] = Value::Null;
    start["usage"]["output_tokens"] = json!(1);
    event(
        &mut ev,
        "message_start",
        &json!({"type": "message_start", "message": start}),
    );
    let mut index = 0;
    if thinking {
        event(
            &mut ev,
            "content_block_start",
            &json!({"type": "content_block_start",
            "index": index, "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
        );
        for piece in pieces(THINKING, 2) {
            event(
                &mut ev,
                "content_block_delta",
                &json!({"type": "content_block_delta",
                "index": index, "delta": {"type": "thinking_delta", "thinking": piece}}),
            );
        }
        event(
            &mut ev,
            "content_block_delta",
            &json!({"type": "content_block_delta",
            "index": index, "delta": {"type": "signature_delta",
            "signature": format!("sig_mock_{number}")}}),
        );
        event(
            &mut ev,
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": index}),
        );
        index += 1;
    }
    event(&mut ev, "ping", &json!({"type": "ping"}));
    let stop = match &a.content {
        Content::Text(t) => {
            event(
                &mut ev,
                "content_block_start",
                &json!({"type": "content_block_start",
                "index": index, "content_block": {"type": "text", "text": ""}}),
            );
            for piece in pieces(t, chunks) {
                event(
                    &mut ev,
                    "content_block_delta",
                    &json!({"type": "content_block_delta",
                    "index": index, "delta": {"type": "text_delta", "text": piece}}),
                );
            }
            a.text_stop_reason()
        }
        Content::ToolCall { name } => {
            event(
                &mut ev,
                "content_block_start",
                &json!({"type": "content_block_start",
                "index": index, "content_block": {"type": "tool_use",
                "id": format!("toolu_mock_{number}"), "name": name, "input": {}}}),
            );
            for piece in pieces(TOOL_ARGUMENTS, chunks.clamp(2, TOOL_ARGUMENTS.len())) {
                event(
                    &mut ev,
                    "content_block_delta",
                    &json!({"type": "content_block_delta",
                    "index": index, "delta": {"type": "input_json_delta", "partial_json": piece}}),
                );
            }
            "tool_use"
        }
    };
    event(
        &mut ev,
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": index}),
    );
    event(
        &mut ev,
        "message_delta",
        &json!({"type": "message_delta",
        "delta": {"stop_reason": stop, "stop_sequence": a.stop_sequence},
        "usage": {"output_tokens": a.completion_tokens}}),
    );
    event(&mut ev, "message_stop", &json!({"type": "message_stop"}));
    ev
}

/// `{"type":"error","error":{"type","message"}}` with Anthropic's error types.
pub(crate) fn error_body(e: &ApiError) -> Bytes {
    let kind = match e.status.as_u16() {
        400 | 413 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        529 | 503 => "overloaded_error",
        _ => "api_error",
    };
    Bytes::from(json!({"type": "error", "error": {"type": kind, "message": e.message}}).to_string())
}
