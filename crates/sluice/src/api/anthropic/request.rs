//! An Anthropic Messages request -> the canonical request.

use crate::canonical::openai::RequestError;
use crate::canonical::{
    ChatRequest, Image, Message, Part, ResponseFormat, Role, Thinking, Tool, ToolCall, ToolChoice,
};
use serde_json::{json, Value};

fn err(message: impl Into<String>, param: &str) -> RequestError {
    RequestError::new(message, Some(param))
}

/// Parses a `POST /v1/messages` body (also `count_tokens`, which has no `max_tokens`).
pub fn decode(body: &[u8], need_max_tokens: bool) -> Result<ChatRequest, RequestError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| RequestError::new(format!("invalid JSON body: {e}"), None))?;
    let Some(o) = v.as_object() else {
        return Err(RequestError::new("the body must be a JSON object", None));
    };
    let model = o
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| err("model: Field required", "model"))?;
    let max_tokens = match o.get("max_tokens") {
        Some(m) => Some(
            m.as_u64()
                .ok_or_else(|| err("max_tokens: Input should be a valid integer", "max_tokens"))?,
        ),
        None if need_max_tokens => return Err(err("max_tokens: Field required", "max_tokens")),
        None => None,
    };
    let mut messages = Vec::new();
    match o.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => messages.push(Message::new(Role::System, vec![Part::text(s)])),
        Some(Value::Array(blocks)) => {
            let mut parts = Vec::new();
            for (j, b) in blocks.iter().enumerate() {
                if b["type"] != "text" {
                    return Err(err(
                        "system blocks must be text blocks",
                        &format!("system.{j}.type"),
                    ));
                }
                parts.push(Part::Text {
                    text: b["text"].as_str().unwrap_or_default().to_string(),
                    cache_control: b.get("cache_control").cloned(),
                });
            }
            messages.push(Message::new(Role::System, parts));
        }
        Some(_) => {
            return Err(err(
                "system: must be a string or a list of text blocks",
                "system",
            ))
        }
    }
    let msgs = o
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| err("messages: Field required", "messages"))?;
    for (i, m) in msgs.iter().enumerate() {
        decode_message(m, i, &mut messages)?;
    }
    let tools = match o.get("tools") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(ts)) => {
            let mut out = Vec::with_capacity(ts.len());
            for (j, t) in ts.iter().enumerate() {
                let kind = t["type"].as_str().unwrap_or("custom");
                if kind != "custom" {
                    return Err(err(
                        format!(
                            "tools.{j}: server tool `{kind}` is only available when the model is served by Anthropic directly"
                        ),
                        &format!("tools.{j}.type"),
                    ));
                }
                out.push(Tool {
                    name: t["name"]
                        .as_str()
                        .ok_or_else(|| err("tools: name is required", &format!("tools.{j}.name")))?
                        .to_string(),
                    description: t["description"].as_str().map(str::to_string),
                    parameters: t
                        .get("input_schema")
                        .cloned()
                        .unwrap_or_else(|| json!({"type": "object"})),
                    strict: t["strict"].as_bool(),
                });
            }
            out
        }
        Some(_) => return Err(err("tools: must be a list", "tools")),
    };
    let (tool_choice, parallel) = match o.get("tool_choice") {
        None | Some(Value::Null) => (None, None),
        Some(c) => {
            let parallel = c["disable_parallel_tool_use"].as_bool().map(|d| !d);
            let choice = match c["type"].as_str() {
                Some("auto") => ToolChoice::Auto,
                Some("any") => ToolChoice::Required,
                Some("none") => ToolChoice::None,
                Some("tool") => ToolChoice::Named(
                    c["name"]
                        .as_str()
                        .ok_or_else(|| err("tool_choice.name: Field required", "tool_choice.name"))?
                        .to_string(),
                ),
                _ => {
                    return Err(err(
                        "tool_choice.type must be auto, any, tool or none",
                        "tool_choice.type",
                    ))
                }
            };
            (Some(choice), parallel)
        }
    };
    let stop = o
        .get("stop_sequences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let thinking_budget = match o.get("thinking") {
        Some(t) if t["type"] == "enabled" => t["budget_tokens"].as_u64(),
        _ => None,
    };
    let response_format = o
        .get("output_format")
        .filter(|f| f["type"] == "json_schema")
        .map(|f| ResponseFormat::JsonSchema {
            name: "output".into(),
            description: None,
            schema: f["schema"].clone(),
            strict: Some(true),
        });
    Ok(ChatRequest {
        model: model.to_string(),
        messages,
        tools,
        tool_choice,
        parallel_tool_calls: parallel,
        response_format,
        max_tokens,
        temperature: o.get("temperature").and_then(Value::as_f64),
        top_p: o.get("top_p").and_then(Value::as_f64),
        top_k: o.get("top_k").and_then(Value::as_u64),
        stop,
        thinking_budget,
        stream: o.get("stream").and_then(Value::as_bool) == Some(true),
        include_usage: true,
        user: o
            .get("metadata")
            .and_then(|m| m["user_id"].as_str())
            .map(str::to_string),
        ..ChatRequest::default()
    })
}

fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

fn image(b: &Value, path: &str) -> Result<Part, RequestError> {
    let s = &b["source"];
    match s["type"].as_str() {
        Some("base64") => Ok(Part::Image(Image::Base64 {
            media_type: s["media_type"].as_str().unwrap_or("image/png").to_string(),
            data: s["data"].as_str().unwrap_or_default().to_string(),
        })),
        Some("url") => Ok(Part::Image(Image::Url(
            s["url"].as_str().unwrap_or_default().to_string(),
        ))),
        _ => Err(err(
            "image source must be base64 or url",
            &format!("{path}.source.type"),
        )),
    }
}

fn decode_message(m: &Value, i: usize, out: &mut Vec<Message>) -> Result<(), RequestError> {
    let path = format!("messages.{i}");
    let role = match m["role"].as_str() {
        Some("user") => Role::User,
        Some("assistant") => Role::Assistant,
        _ => {
            return Err(err(
                format!("{path}.role: Input should be 'user' or 'assistant'"),
                &format!("{path}.role"),
            ))
        }
    };
    let blocks: Vec<Value> = match &m["content"] {
        Value::String(s) => vec![json!({"type": "text", "text": s})],
        Value::Array(a) => a.clone(),
        _ => {
            return Err(err(
                format!("{path}.content: Field required"),
                &format!("{path}.content"),
            ))
        }
    };
    let mut msg = Message::new(role, Vec::new());
    let mut tool_results = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        let bpath = format!("{path}.content.{j}");
        match b["type"].as_str().unwrap_or_default() {
            "text" => msg.content.push(Part::Text {
                text: b["text"].as_str().unwrap_or_default().to_string(),
                cache_control: b.get("cache_control").cloned(),
            }),
            "image" => msg.content.push(image(b, &bpath)?),
            "document" => {
                let s = &b["source"];
                if s["type"] == "base64" {
                    let url = format!(
                        "data:{};base64,{}",
                        s["media_type"].as_str().unwrap_or("application/pdf"),
                        s["data"].as_str().unwrap_or_default()
                    );
                    msg.content.push(Part::Other(
                        json!({"type": "file", "file": {"file_data": url}}),
                    ));
                } else if s["type"] == "text" {
                    msg.content
                        .push(Part::text(s["data"].as_str().unwrap_or_default()));
                } else {
                    return Err(err("document source must be base64 or text", &bpath));
                }
            }
            "tool_use" if role == Role::Assistant => msg.tool_calls.push(ToolCall {
                id: b["id"].as_str().unwrap_or_default().to_string(),
                name: b["name"].as_str().unwrap_or_default().to_string(),
                arguments: b.get("input").map_or_else(|| "{}".into(), Value::to_string),
            }),
            // An empty signature is none: it is what this surface hands out for unsigned
            // reasoning (Ollama, DeepSeek, Mistral, ...), and sent on as a signature it would
            // make Claude refuse the turn and other providers get a `thinking_blocks` field.
            "thinking" if role == Role::Assistant => msg.thinking.push(Thinking {
                text: b["thinking"].as_str().unwrap_or_default().to_string(),
                signature: b["signature"]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
                redacted: None,
            }),
            "redacted_thinking" if role == Role::Assistant => msg.thinking.push(Thinking {
                text: String::new(),
                signature: None,
                redacted: b["data"].as_str().map(str::to_string),
            }),
            "tool_result" if role == Role::User => {
                let mut content = text_of(&b["content"]);
                if b["is_error"] == true {
                    content = format!("Error: {content}");
                }
                let mut parts = vec![Part::text(content)];
                // Images a tool returned (a screenshot, a chart) go on with the result.
                for (k, ib) in b["content"].as_array().into_iter().flatten().enumerate() {
                    if ib["type"] == "image" {
                        parts.push(image(ib, &format!("{bpath}.content.{k}"))?);
                    }
                }
                let mut t = Message::new(Role::Tool, parts);
                t.tool_call_id = Some(
                    b["tool_use_id"]
                        .as_str()
                        .ok_or_else(|| err("tool_use_id: Field required", &bpath))?
                        .to_string(),
                );
                tool_results.push(t);
            }
            other => {
                return Err(err(
                    format!(
                        "{bpath}.type: unsupported content block `{other}` in a {} message",
                        m["role"].as_str().unwrap_or("")
                    ),
                    &format!("{bpath}.type"),
                ))
            }
        }
    }
    // OpenAI wants tool results right after the assistant turn, before any new user text.
    out.extend(tool_results);
    if !msg.content.is_empty() || !msg.tool_calls.is_empty() || !msg.thinking.is_empty() {
        out.push(msg);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn an_empty_thinking_signature_is_no_signature() {
        let body = br#"{"model": "m", "max_tokens": 10, "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": ""},
                {"type": "thinking", "thinking": "so", "signature": "sig"},
                {"type": "text", "text": "hello"}]},
            {"role": "user", "content": "again"}]}"#;
        let r = decode(body, true).unwrap();
        let sigs: Vec<Option<&str>> = r.messages[1]
            .thinking
            .iter()
            .map(|t| t.signature.as_deref())
            .collect();
        assert_eq!(sigs, [None, Some("sig")]);
    }
}
