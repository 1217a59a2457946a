//! AWS Bedrock: `POST /model/{modelId}/converse` (JSON), `/converse-stream` (binary
//! `application/vnd.amazon.eventstream` frames: messageStart, contentBlockStart/Delta/Stop,
//! messageStop, metadata), `/invoke` for Titan and Cohere embeddings, and Bedrock error
//! bodies (`{"message"}` plus `x-amzn-errortype`). Signatures are not verified, but a request
//! without a SigV4 `Authorization` header is refused the way Bedrock refuses it.

use std::borrow::Cow;

use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue as FrameValue, Message};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use serde_json::{json, Value};

use crate::control::Recorded;
use crate::openai::{
    answer_question, pieces, vector, Answer, Content, Events, Payload, TOOL_ARGUMENTS,
};
use crate::ApiError;

const THINKING: &str = "The user wants a mock answer; I will give one.";
const EVENT_STREAM: HeaderValue = HeaderValue::from_static("application/vnd.amazon.eventstream");
const X_AMZN_ERRORTYPE: HeaderName = HeaderName::from_static("x-amzn-errortype");
/// `x-mock-bedrock-exception: throttlingException`: the stream breaks off after its first
/// content delta with an exception frame of that type (Bedrock's mid-stream errors).
const X_MOCK_BEDROCK_EXCEPTION: HeaderName = HeaderName::from_static("x-mock-bedrock-exception");

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    Converse,
    ConverseStream,
    Invoke,
}

/// `/model/{id}/{action}` -> the action.
pub(crate) fn action_of(path: &str) -> Option<Action> {
    let rest = path.strip_prefix("/model/")?;
    let (id, action) = rest.rsplit_once('/')?;
    if id.is_empty() {
        return None;
    }
    match action {
        "converse" => Some(Action::Converse),
        "converse-stream" => Some(Action::ConverseStream),
        "invoke" => Some(Action::Invoke),
        _ => None,
    }
}

/// The model id from the path, percent-decoded (`us.x-v1%3A0` -> `us.x-v1:0`).
fn model_of(path: &str) -> String {
    let id = path
        .strip_prefix("/model/")
        .and_then(|r| r.rsplit_once('/'))
        .map_or("", |(id, _)| id);
    let bytes = id.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                #[allow(clippy::cast_possible_truncation)]
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn signed(recorded: &Recorded) -> bool {
    recorded
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("AWS4-HMAC-SHA256 Credential=") || v.starts_with("Bearer "))
}

pub(crate) fn answer(
    action: Action,
    recorded: &Recorded,
    number: u64,
    chunks: usize,
) -> Result<Payload, ApiError> {
    if !signed(recorded) {
        return Err(ApiError {
            status: StatusCode::FORBIDDEN,
            message: Cow::Borrowed("Missing Authentication Token"),
            kind: "MissingAuthenticationTokenException",
            param: None,
            code: None,
        });
    }
    let model = model_of(recorded.uri.path());
    match action {
        Action::Invoke => invoke(&recorded.body, &model),
        Action::Converse | Action::ConverseStream => {
            let req: Value = serde_json::from_slice(&recorded.body).map_err(ApiError::bad_json)?;
            let (a, thinking, report_stop) = converse_answer(&req)?;
            if action == Action::ConverseStream {
                let mut events = stream(number, &a, chunks, thinking, report_stop);
                if let Some(kind) = recorded
                    .headers
                    .get(X_MOCK_BEDROCK_EXCEPTION)
                    .and_then(|v| v.to_str().ok())
                {
                    exception_after_first_delta(&mut events, kind);
                }
                Ok(Payload::Stream(events))
            } else {
                Ok(Payload::Json(Bytes::from(
                    converse_json(number, &a, thinking, report_stop).to_string(),
                )))
            }
        }
    }
}

fn invalid(message: impl Into<Cow<'static, str>>) -> ApiError {
    ApiError::invalid(message, None)
}

/// Checks the request as Bedrock does (alternating roles, no blank text, a toolConfig when
/// tool blocks are present) and gives the deterministic answer.
fn converse_answer(req: &Value) -> Result<(Answer, bool, bool), ApiError> {
    let msgs = req["messages"]
        .as_array()
        .filter(|m| !m.is_empty())
        .ok_or_else(|| invalid("A conversation must start with a user message. Try again with a conversation that starts with a user message."))?;
    let mut turns = Vec::with_capacity(msgs.len() + 1);
    for s in req["system"].as_array().into_iter().flatten() {
        if let Some(t) = s["text"].as_str() {
            turns.push((false, Cow::Borrowed(t)));
        }
    }
    let has_tool_config = req["toolConfig"]["tools"]
        .as_array()
        .is_some_and(|t| !t.is_empty());
    let mut last_role = "";
    for (i, m) in msgs.iter().enumerate() {
        let role = m["role"].as_str().unwrap_or_default();
        if role != "user" && role != "assistant" {
            return Err(invalid(format!(
                "1 validation error detected: Value '{role}' at 'messages.{i}.member.role' failed to satisfy constraint: Member must satisfy enum value set: [user, assistant]"
            )));
        }
        if role == last_role {
            return Err(invalid(
                "A conversation must alternate between user and assistant roles. Make sure the conversation alternates between user and assistant roles and try again.",
            ));
        }
        last_role = role;
        let mut text = String::new();
        for (j, b) in m["content"].as_array().into_iter().flatten().enumerate() {
            if let Some(t) = b["text"].as_str() {
                if t.trim().is_empty() {
                    return Err(invalid(format!(
                        "The text field in the ContentBlock object at messages.{i}.content.{j} is blank. Add text to the text field, and try again."
                    )));
                }
                text.push_str(t);
            }
            if (b.get("toolUse").is_some() || b.get("toolResult").is_some()) && !has_tool_config {
                return Err(invalid(
                    "The toolConfig field must be defined when using toolUse and toolResult content blocks.",
                ));
            }
        }
        turns.push((role == "user", Cow::Owned(text)));
    }
    let tc = &req["toolConfig"];
    let tool = if tc["toolChoice"].get("any").is_some() {
        tc["tools"][0]["toolSpec"]["name"]
            .as_str()
            .map(str::to_string)
    } else {
        tc["toolChoice"]["tool"]["name"]
            .as_str()
            .map(str::to_string)
    };
    let thinking = req["additionalModelRequestFields"]["thinking"]["type"] == "enabled";
    let mut answer = answer_question(&turns, tool);
    answer.stop_at(
        req["inferenceConfig"]["stopSequences"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str),
    );
    // Which sequence matched is only told when asked for (Claude's `/stop_sequence`).
    let asked = req["additionalModelResponseFieldPaths"]
        .as_array()
        .is_some_and(|p| p.iter().any(|p| p == "/stop_sequence"));
    Ok((answer, thinking, asked))
}

/// `stopReason`, and `additionalModelResponseFields` when the request asked for them.
fn stop_fields(a: &Answer, stop: &str, report_stop_sequence: bool) -> Value {
    let mut v = json!({"stopReason": stop});
    if report_stop_sequence {
        v["additionalModelResponseFields"] = json!({"stop_sequence": a.stop_sequence});
    }
    v
}

fn usage(a: &Answer) -> Value {
    json!({"inputTokens": a.prompt_tokens, "outputTokens": a.completion_tokens,
           "totalTokens": a.prompt_tokens + a.completion_tokens,
           "cacheReadInputTokens": 0, "cacheWriteInputTokens": 0})
}

fn tool_id(number: u64) -> String {
    format!("tooluse_mock_{number}")
}

fn converse_json(number: u64, a: &Answer, thinking: bool, report_stop: bool) -> Value {
    let mut content = Vec::new();
    if thinking {
        content.push(json!({"reasoningContent": {"reasoningText": {
            "text": THINKING, "signature": format!("sig_mock_{number}")}}}));
    }
    let stop = match &a.content {
        Content::Text(t) => {
            content.push(json!({"text": t}));
            a.text_stop_reason()
        }
        Content::ToolCall { name } => {
            let input: Value = serde_json::from_str(TOOL_ARGUMENTS).unwrap_or(Value::Null);
            content.push(
                json!({"toolUse": {"toolUseId": tool_id(number), "name": name, "input": input}}),
            );
            "tool_use"
        }
    };
    let mut v = stop_fields(a, stop, report_stop);
    v["output"] = json!({"message": {"role": "assistant", "content": content}});
    v["usage"] = usage(a);
    v["metrics"] = json!({"latencyMs": 0});
    v
}

/// One event frame, as Bedrock sends it.
fn event(events: &mut Events, name: &'static str, payload: &Value) {
    let _ = events.push(|buf| {
        let message = Message::new(serde_json::to_vec(payload)?)
            .add_header(Header::new(":event-type", FrameValue::String(name.into())))
            .add_header(Header::new(
                ":content-type",
                FrameValue::String("application/json".into()),
            ))
            .add_header(Header::new(
                ":message-type",
                FrameValue::String("event".into()),
            ));
        write_message_to(&message, buf)
            .map_err(|e| <serde_json::Error as serde::ser::Error>::custom(e.to_string()))
    });
}

fn stream(number: u64, a: &Answer, chunks: usize, thinking: bool, report_stop: bool) -> Events {
    let mut ev = Events {
        content_type: Some(EVENT_STREAM),
        ..Events::default()
    };
    event(&mut ev, "messageStart", &json!({"role": "assistant"}));
    let mut index = 0;
    if thinking {
        for piece in pieces(THINKING, 2) {
            event(
                &mut ev,
                "contentBlockDelta",
                &json!({"contentBlockIndex": index,
                        "delta": {"reasoningContent": {"text": piece}}}),
            );
        }
        event(
            &mut ev,
            "contentBlockDelta",
            &json!({"contentBlockIndex": index,
                    "delta": {"reasoningContent": {"signature": format!("sig_mock_{number}")}}}),
        );
        event(
            &mut ev,
            "contentBlockStop",
            &json!({"contentBlockIndex": index}),
        );
        index += 1;
    }
    let stop = match &a.content {
        Content::Text(t) => {
            for piece in pieces(t, chunks) {
                event(
                    &mut ev,
                    "contentBlockDelta",
                    &json!({"contentBlockIndex": index, "delta": {"text": piece}}),
                );
            }
            a.text_stop_reason()
        }
        Content::ToolCall { name } => {
            event(
                &mut ev,
                "contentBlockStart",
                &json!({"contentBlockIndex": index,
                        "start": {"toolUse": {"toolUseId": tool_id(number), "name": name}}}),
            );
            for piece in pieces(TOOL_ARGUMENTS, chunks.clamp(2, TOOL_ARGUMENTS.len())) {
                event(
                    &mut ev,
                    "contentBlockDelta",
                    &json!({"contentBlockIndex": index, "delta": {"toolUse": {"input": piece}}}),
                );
            }
            "tool_use"
        }
    };
    event(
        &mut ev,
        "contentBlockStop",
        &json!({"contentBlockIndex": index}),
    );
    event(&mut ev, "messageStop", &stop_fields(a, stop, report_stop));
    event(
        &mut ev,
        "metadata",
        &json!({"usage": usage(a), "metrics": {"latencyMs": 0}}),
    );
    ev
}

/// Keeps messageStart and the first delta, then ends with an exception frame.
fn exception_after_first_delta(ev: &mut Events, kind: &str) {
    let keep = ev.lens.len().min(2);
    let cut: usize = ev.lens[..keep].iter().sum();
    ev.buf.truncate(cut);
    ev.lens.truncate(keep);
    let kind = kind.to_string();
    let _ = ev.push(|buf| {
        let payload = json!({"message": format!("mock {kind} in the stream")});
        let message = Message::new(serde_json::to_vec(&payload)?)
            .add_header(Header::new(
                ":exception-type",
                FrameValue::String(kind.into()),
            ))
            .add_header(Header::new(
                ":content-type",
                FrameValue::String("application/json".into()),
            ))
            .add_header(Header::new(
                ":message-type",
                FrameValue::String("exception".into()),
            ));
        write_message_to(&message, buf)
            .map_err(|e| <serde_json::Error as serde::ser::Error>::custom(e.to_string()))
    });
}

fn seed(text: &str) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(PRIME)
    })
}

/// InvokeModel for embedding models: Titan (`inputText`, one text) and Cohere (`texts`).
fn invoke(body: &[u8], model: &str) -> Result<Payload, ApiError> {
    let req: Value = serde_json::from_slice(body).map_err(ApiError::bad_json)?;
    let out = if model.contains("cohere.embed") {
        let texts = req["texts"]
            .as_array()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| invalid("Malformed input request: #: required key [texts] not found, please reformat your input and try again."))?;
        let vectors: Vec<Vec<f32>> = texts
            .iter()
            .map(|t| vector(seed(t.as_str().unwrap_or_default()), 1024))
            .collect();
        json!({"id": "mock", "embeddings": vectors, "texts": texts, "response_type": "embeddings_floats"})
    } else if model.contains("titan-embed") {
        let text = req["inputText"]
            .as_str()
            .ok_or_else(|| invalid("Malformed input request: #: required key [inputText] not found, please reformat your input and try again."))?;
        let dims = usize::try_from(req["dimensions"].as_u64().unwrap_or(1024))
            .unwrap_or(1024)
            .min(crate::MAX_EMBEDDING_DIMS);
        json!({"embedding": vector(seed(text), dims),
               "inputTextTokenCount": text.chars().count().div_ceil(4)})
    } else {
        return Err(invalid(format!(
            "The mock answers InvokeModel only for embedding models, not {model}"
        )));
    };
    Ok(Payload::Json(Bytes::from(out.to_string())))
}

/// Bedrock's error type for a status.
fn error_type(e: &ApiError) -> &'static str {
    match e.status.as_u16() {
        400 | 413 | 422 => "ValidationException",
        401 | 403 if e.kind.ends_with("Exception") => e.kind,
        401 | 403 => "AccessDeniedException",
        404 => "ResourceNotFoundException",
        408 => "ModelTimeoutException",
        424 => "ModelErrorException",
        429 => "ThrottlingException",
        503 => "ServiceUnavailableException",
        _ => "InternalServerException",
    }
}

/// `{"message": ...}`
pub(crate) fn error_body(e: &ApiError) -> Bytes {
    Bytes::from(json!({"message": e.message}).to_string())
}

/// `x-amzn-errortype: ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/`
pub(crate) fn error_headers(e: &ApiError) -> Vec<(HeaderName, HeaderValue)> {
    let value = format!(
        "{}:http://internal.amazon.com/coral/com.amazon.bedrock/",
        error_type(e)
    );
    HeaderValue::from_str(&value)
        .map(|v| vec![(X_AMZN_ERRORTYPE, v)])
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_model_ids() {
        assert_eq!(
            action_of("/model/us.a-v1%3A0/converse"),
            Some(Action::Converse)
        );
        assert_eq!(
            action_of("/model/arn%3Aaws%3Ax%2Fy/converse-stream"),
            Some(Action::ConverseStream)
        );
        assert_eq!(action_of("/model//converse"), None);
        assert_eq!(action_of("/v1/messages"), None);
        assert_eq!(model_of("/model/arn%3Aaws%3Ax%2Fy/converse"), "arn:aws:x/y");
        assert_eq!(model_of("/model/bad%2/converse"), "bad%2");
    }
}
