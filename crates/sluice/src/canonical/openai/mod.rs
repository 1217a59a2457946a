//! The OpenAI chat-completions wire format <-> canonical types: requests in, answers and
//! stream chunks out (the direction a translated provider needs), and the reverse for
//! surfaces that send to OpenAI-format providers.

use super::{
    ChatRequest, ChatResponse, FinishReason, Image, Message, Part, ResponseFormat, Role,
    StreamEvent, Thinking, Tool, ToolCall, ToolChoice, Usage,
};
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// A request that cannot be understood; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RequestError {
    pub message: String,
    pub param: Option<String>,
}

impl RequestError {
    pub fn new(message: impl Into<String>, param: Option<&str>) -> Self {
        Self {
            message: message.into(),
            param: param.map(str::to_string),
        }
    }
}

#[derive(Deserialize)]
struct WireRequest {
    #[serde(default)]
    model: String,
    #[serde(default)]
    messages: Vec<WireMessage>,
    #[serde(default)]
    tools: Option<Vec<WireTool>>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    parallel_tool_calls: Option<bool>,
    #[serde(default)]
    response_format: Option<Value>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    top_k: Option<u64>,
    #[serde(default)]
    stop: Option<Value>,
    #[serde(default)]
    seed: Option<i64>,
    #[serde(default)]
    frequency_penalty: Option<f64>,
    #[serde(default)]
    presence_penalty: Option<f64>,
    #[serde(default)]
    reasoning_effort: Option<String>,
    #[serde(default)]
    thinking: Option<Value>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<Value>,
    #[serde(default)]
    user: Option<String>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

#[derive(Deserialize)]
struct WireMessage {
    role: String,
    #[serde(default)]
    content: Option<Value>,
    #[serde(default)]
    tool_calls: Option<Vec<WireToolCall>>,
    #[serde(default)]
    tool_call_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    thinking_blocks: Option<Vec<Value>>,
}

#[derive(Deserialize)]
struct WireToolCall {
    #[serde(default)]
    id: String,
    function: WireFunctionCall,
}

#[derive(Deserialize)]
struct WireFunctionCall {
    name: String,
    #[serde(default)]
    arguments: String,
}

#[derive(Deserialize)]
struct WireTool {
    function: WireFunction,
}

#[derive(Deserialize)]
struct WireFunction {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<Value>,
    #[serde(default)]
    strict: Option<bool>,
}

/// Parses an OpenAI chat-completions request body.
pub fn decode_request(body: &[u8]) -> Result<ChatRequest, RequestError> {
    let w: WireRequest = serde_json::from_slice(body).map_err(|e| {
        RequestError::new(
            format!("We could not parse the JSON body of your request: {e}"),
            None,
        )
    })?;
    let mut messages = Vec::with_capacity(w.messages.len());
    for (i, m) in w.messages.into_iter().enumerate() {
        messages.push(decode_message(m, i)?);
    }
    let tool_choice = match w.tool_choice {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(match s.as_str() {
            "none" => ToolChoice::None,
            "auto" => ToolChoice::Auto,
            "required" | "any" => ToolChoice::Required,
            other => {
                return Err(RequestError::new(
                    format!(
                        "Invalid value for tool_choice: '{other}' (expected none, auto, required or a named function)"
                    ),
                    Some("tool_choice"),
                ))
            }
        }),
        Some(v) => match v.pointer("/function/name").and_then(Value::as_str) {
            Some(n) => Some(ToolChoice::Named(n.to_string())),
            None => {
                return Err(RequestError::new(
                    "tool_choice must be \"none\", \"auto\", \"required\" or {\"type\":\"function\",\"function\":{\"name\":...}}",
                    Some("tool_choice"),
                ))
            }
        },
    };
    let response_format = match w.response_format {
        None | Some(Value::Null) => None,
        Some(v) => Some(match v.get("type").and_then(Value::as_str) {
            Some("text") => ResponseFormat::Text,
            Some("json_object") => ResponseFormat::JsonObject,
            Some("json_schema") => {
                let js = v.get("json_schema").cloned().unwrap_or(Value::Null);
                ResponseFormat::JsonSchema {
                    name: js
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("response")
                        .to_string(),
                    description: js
                        .get("description")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    schema: js.get("schema").cloned().unwrap_or_else(|| json!({})),
                    strict: js.get("strict").and_then(Value::as_bool),
                }
            }
            _ => {
                return Err(RequestError::new(
                    "response_format.type must be text, json_object or json_schema",
                    Some("response_format.type"),
                ))
            }
        }),
    };
    let stop = match w.stop {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(a)) => a
            .into_iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        Some(_) => {
            return Err(RequestError::new(
                "stop must be a string or an array of strings",
                Some("stop"),
            ))
        }
    };
    let tools = w
        .tools
        .unwrap_or_default()
        .into_iter()
        .map(|t| Tool {
            name: t.function.name,
            description: t.function.description,
            parameters: t
                .function
                .parameters
                .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            strict: t.function.strict,
        })
        .collect();
    let thinking_budget = w
        .thinking
        .as_ref()
        .and_then(|t| t.get("budget_tokens"))
        .and_then(Value::as_u64);
    let include_usage = w
        .stream_options
        .as_ref()
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        == Some(true);
    Ok(ChatRequest {
        model: w.model,
        messages,
        tools,
        tool_choice,
        parallel_tool_calls: w.parallel_tool_calls,
        response_format,
        max_tokens: w.max_completion_tokens.or(w.max_tokens),
        temperature: w.temperature,
        top_p: w.top_p,
        top_k: w.top_k,
        stop,
        seed: w.seed,
        frequency_penalty: w.frequency_penalty,
        presence_penalty: w.presence_penalty,
        reasoning_effort: w.reasoning_effort,
        thinking_budget,
        stream: w.stream == Some(true),
        include_usage,
        user: w.user,
        extra: w.extra,
    })
}

fn decode_message(m: WireMessage, i: usize) -> Result<Message, RequestError> {
    let role = match m.role.as_str() {
        "system" | "developer" => Role::System,
        "user" => Role::User,
        "assistant" => Role::Assistant,
        "tool" | "function" => Role::Tool,
        other => {
            return Err(RequestError::new(
                format!(
                    "Invalid role '{other}' (expected system, developer, user, assistant or tool)"
                ),
                Some(&format!("messages[{i}].role")),
            ))
        }
    };
    let content = decode_content(m.content, i)?;
    let mut msg = Message::new(role, content);
    msg.tool_calls = m
        .tool_calls
        .unwrap_or_default()
        .into_iter()
        .map(|c| ToolCall {
            id: c.id,
            name: c.function.name,
            arguments: c.function.arguments,
        })
        .collect();
    msg.tool_call_id = m.tool_call_id;
    msg.name = m.name;
    if let Some(blocks) = m.thinking_blocks {
        for b in blocks {
            let kind = b.get("type").and_then(Value::as_str).unwrap_or("thinking");
            let s = |k: &str| b.get(k).and_then(Value::as_str).map(str::to_string);
            msg.thinking.push(if kind == "redacted_thinking" {
                Thinking {
                    text: String::new(),
                    signature: None,
                    redacted: s("data"),
                }
            } else {
                Thinking {
                    text: s("thinking").unwrap_or_default(),
                    signature: s("signature"),
                    redacted: None,
                }
            });
        }
    } else if let Some(r) = m.reasoning_content.filter(|r| !r.is_empty()) {
        msg.thinking.push(Thinking {
            text: r,
            signature: None,
            redacted: None,
        });
    }
    if role == Role::Tool && msg.tool_call_id.is_none() {
        return Err(RequestError::new(
            "Missing required parameter: tool messages need 'tool_call_id'",
            Some(&format!("messages[{i}].tool_call_id")),
        ));
    }
    Ok(msg)
}

fn decode_content(c: Option<Value>, i: usize) -> Result<Vec<Part>, RequestError> {
    match c {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![Part::text(s)]),
        Some(Value::Array(parts)) => {
            let mut out = Vec::with_capacity(parts.len());
            for (j, p) in parts.into_iter().enumerate() {
                let kind = p.get("type").and_then(Value::as_str).unwrap_or("");
                match kind {
                    "text" | "input_text" => out.push(Part::Text {
                        text: p
                            .get("text")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                        cache_control: p.get("cache_control").cloned(),
                    }),
                    "image_url" => {
                        let url = p
                            .get("image_url")
                            .and_then(|u| u.get("url").or(Some(u)))
                            .and_then(Value::as_str)
                            .ok_or_else(|| {
                                RequestError::new(
                                    "image_url parts need image_url.url",
                                    Some(&format!("messages[{i}].content[{j}].image_url")),
                                )
                            })?;
                        out.push(Part::Image(Image::from_url(url)));
                    }
                    "" => {
                        return Err(RequestError::new(
                            "content parts need a type",
                            Some(&format!("messages[{i}].content[{j}].type")),
                        ))
                    }
                    _ => out.push(Part::Other(p)),
                }
            }
            Ok(out)
        }
        Some(_) => Err(RequestError::new(
            "Message content must be a string or an array of content parts",
            Some(&format!("messages[{i}].content")),
        )),
    }
}

fn usage_json(u: &Usage) -> Value {
    let mut v = json!({
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.input_tokens + u.output_tokens,
    });
    if u.cached_input_tokens > 0 || u.cache_write_tokens > 0 {
        v["prompt_tokens_details"] = json!({
            "cached_tokens": u.cached_input_tokens,
            "cache_write_tokens": u.cache_write_tokens,
        });
    }
    if u.reasoning_tokens > 0 {
        v["completion_tokens_details"] = json!({"reasoning_tokens": u.reasoning_tokens});
    }
    v
}

pub(crate) fn thinking_blocks(th: &[Thinking]) -> Value {
    Value::Array(
        th.iter()
            .map(|t| match &t.redacted {
                Some(d) => json!({"type": "redacted_thinking", "data": d}),
                None => {
                    let mut b = json!({"type": "thinking", "thinking": t.text});
                    if let Some(s) = &t.signature {
                        b["signature"] = json!(s);
                    }
                    b
                }
            })
            .collect(),
    )
}

fn tool_calls_json(calls: &[ToolCall]) -> Value {
    Value::Array(
        calls
            .iter()
            .map(|c| {
                json!({"id": c.id, "type": "function",
                       "function": {"name": c.name, "arguments": c.arguments}})
            })
            .collect(),
    )
}

/// An OpenAI `chat.completion` object for a whole answer.
pub fn encode_response(r: &ChatResponse, created: u64) -> Value {
    let mut choices = vec![choice_json(r, 0)];
    for (i, c) in r.choices.iter().enumerate() {
        choices.push(choice_json(c, i + 1));
    }
    let mut v = json!({
        "id": r.id,
        "object": "chat.completion",
        "created": created,
        "model": r.model,
        "choices": choices,
    });
    if let Some(u) = &r.usage {
        v["usage"] = usage_json(u);
    }
    v
}

/// One `choices[]` entry of a whole answer.
fn choice_json(r: &ChatResponse, index: usize) -> Value {
    let mut message = json!({"role": "assistant", "content": r.text, "refusal": null});
    if !r.tool_calls.is_empty() {
        message["tool_calls"] = tool_calls_json(&r.tool_calls);
    }
    if !r.thinking.is_empty() {
        let text: String = r.thinking.iter().map(|t| t.text.as_str()).collect();
        message["reasoning_content"] = json!(text);
        message["thinking_blocks"] = thinking_blocks(&r.thinking);
    }
    let mut c = json!({"index": index, "message": message, "logprobs": r.logprobs,
                       "finish_reason": r.finish.as_openai()});
    // The matched stop sequence, where vLLM puts it (OpenAI itself does not say).
    if let Some(s) = r
        .stop_sequence
        .as_ref()
        .filter(|_| r.finish == FinishReason::Stop)
    {
        c["stop_reason"] = json!(s);
    }
    c
}

/// Turns canonical stream events into OpenAI `chat.completion.chunk` SSE frames.
pub struct StreamEncoder {
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    started: bool,
    finish: Option<FinishReason>,
    /// The stop sequence the answer ended at, sent as the finish chunk's `stop_reason`.
    stop_sequence: Option<String>,
    usage: Option<Usage>,
    saw_tool_call: bool,
    /// Tool calls started, and whether each got an argument delta (a call with none gets
    /// `{}` before the finish, so that clients never parse an empty string).
    tool_args_seen: Vec<bool>,
    /// The thinking block the next thinking delta belongs to, and whether it has text yet;
    /// every `thinking_blocks` delta carries its block's `index`, so that clients that merge
    /// deltas by index (openai-python's stream helper) rebuild each signed block whole.
    thinking_index: u32,
    thinking_open: bool,
    done: bool,
    /// `data: {"id":..,"object":..,"created":..,"model":..,"choices":[{"index":0,"delta":`,
    /// rendered once when the stream starts (text deltas then cost one string escape).
    prefix: Vec<u8>,
}

const CHUNK_TAIL: &[u8] = b",\"logprobs\":null,\"finish_reason\":null}]}\n\n";

impl StreamEncoder {
    pub fn new(id: String, model: String, created: u64, include_usage: bool) -> Self {
        Self {
            id,
            model,
            created,
            include_usage,
            started: false,
            finish: None,
            stop_sequence: None,
            usage: None,
            saw_tool_call: false,
            tool_args_seen: Vec::new(),
            thinking_index: 0,
            thinking_open: false,
            done: false,
            prefix: Vec::new(),
        }
    }

    fn chunk(&self, out: &mut Vec<u8>, delta: &Value, finish: Option<&str>) {
        out.extend_from_slice(&self.prefix);
        let _ = serde_json::to_writer(&mut *out, delta);
        match finish {
            None => out.extend_from_slice(CHUNK_TAIL),
            Some(f) => {
                out.extend_from_slice(b",\"logprobs\":null,\"finish_reason\":\"");
                out.extend_from_slice(f.as_bytes());
                out.push(b'"');
                if let Some(s) = self.stop_sequence.as_ref().filter(|_| f == "stop") {
                    out.extend_from_slice(b",\"stop_reason\":");
                    let _ = serde_json::to_writer(&mut *out, s);
                }
                out.extend_from_slice(b"}]}\n\n");
            }
        }
    }

    fn ensure_started(&mut self, out: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            let mut p = Vec::with_capacity(128 + self.id.len() + self.model.len());
            p.extend_from_slice(b"data: {\"id\":");
            let _ = serde_json::to_writer(&mut p, &self.id);
            p.extend_from_slice(b",\"object\":\"chat.completion.chunk\",\"created\":");
            p.extend_from_slice(self.created.to_string().as_bytes());
            p.extend_from_slice(b",\"model\":");
            let _ = serde_json::to_writer(&mut p, &self.model);
            p.extend_from_slice(b",\"choices\":[{\"index\":0,\"delta\":");
            self.prefix = p;
            out.extend_from_slice(&self.prefix);
            out.extend_from_slice(b"{\"role\":\"assistant\",\"content\":\"\"}");
            out.extend_from_slice(CHUNK_TAIL);
        }
    }

    /// Appends the SSE frames for `e` to `out`.
    pub fn event(&mut self, e: &StreamEvent, out: &mut Vec<u8>) {
        match e {
            StreamEvent::Start { id, model } => {
                if !id.is_empty() && !self.started {
                    self.id.clone_from(id);
                }
                if !model.is_empty() && !self.started {
                    self.model.clone_from(model);
                }
                self.ensure_started(out);
            }
            StreamEvent::Text(t) => {
                if t.is_empty() {
                    return;
                }
                self.ensure_started(out);
                out.extend_from_slice(&self.prefix);
                out.extend_from_slice(b"{\"content\":");
                let _ = serde_json::to_writer(&mut *out, t);
                out.push(b'}');
                out.extend_from_slice(CHUNK_TAIL);
            }
            StreamEvent::Thinking(t) => {
                if t.is_empty() {
                    return;
                }
                self.ensure_started(out);
                self.thinking_open = true;
                let i = self.thinking_index;
                self.chunk(
                    out,
                    &json!({"reasoning_content": t,
                            "thinking_blocks": [{"index": i, "type": "thinking", "thinking": t}]}),
                    None,
                );
            }
            StreamEvent::ThinkingSignature(s) => {
                self.ensure_started(out);
                // The signature closes its block: the next thinking text is a new one.
                let i = self.thinking_index;
                self.thinking_index += 1;
                self.thinking_open = false;
                self.chunk(
                    out,
                    &json!({"thinking_blocks": [{"index": i, "type": "thinking", "thinking": "", "signature": s}]}),
                    None,
                );
            }
            StreamEvent::RedactedThinking(d) => {
                self.ensure_started(out);
                if self.thinking_open {
                    self.thinking_index += 1;
                    self.thinking_open = false;
                }
                let i = self.thinking_index;
                self.thinking_index += 1;
                self.chunk(
                    out,
                    &json!({"thinking_blocks": [{"index": i, "type": "redacted_thinking", "data": d}]}),
                    None,
                );
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                self.ensure_started(out);
                self.saw_tool_call = true;
                let slot = *index as usize;
                if self.tool_args_seen.len() <= slot {
                    self.tool_args_seen.resize(slot + 1, true);
                }
                self.tool_args_seen[slot] = false;
                self.chunk(
                    out,
                    &json!({"tool_calls": [{"index": index, "id": id, "type": "function",
                                            "function": {"name": name, "arguments": ""}}]}),
                    None,
                );
            }
            StreamEvent::ToolCallArgs { index, delta } => {
                if delta.is_empty() {
                    return;
                }
                self.ensure_started(out);
                if let Some(seen) = self.tool_args_seen.get_mut(*index as usize) {
                    *seen = true;
                }
                self.chunk(
                    out,
                    &json!({"tool_calls": [{"index": index, "function": {"arguments": delta}}]}),
                    None,
                );
            }
            StreamEvent::Finish(f) => self.finish = Some(*f),
            StreamEvent::StopSequence(s) => self.stop_sequence = Some(s.clone()),
            StreamEvent::Usage(u) => {
                // Providers may send usage in parts (input first, output at the end).
                let prev = self.usage.unwrap_or_default();
                self.usage = Some(prev.merge(u));
            }
        }
    }

    /// The closing frames: finish reason, usage (when asked), `[DONE]`.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        self.done = true;
        self.ensure_started(out);
        // A call that streamed no arguments takes none: `{}`, never an empty string.
        for i in 0..self.tool_args_seen.len() {
            if !self.tool_args_seen[i] {
                self.tool_args_seen[i] = true;
                self.chunk(
                    out,
                    &json!({"tool_calls": [{"index": i, "function": {"arguments": "{}"}}]}),
                    None,
                );
            }
        }
        let f = self.finish.unwrap_or(if self.saw_tool_call {
            FinishReason::ToolCalls
        } else {
            FinishReason::Stop
        });
        self.chunk(out, &json!({}), Some(f.as_openai()));
        if self.include_usage {
            let v = json!({
                "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "choices": [],
                "usage": self.usage.as_ref().map(usage_json),
            });
            frame(out, &v);
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
    }

    pub fn is_done(&self) -> bool {
        self.done
    }
}

fn frame(out: &mut Vec<u8>, v: &Value) {
    out.extend_from_slice(b"data: ");
    // Writing a `Value` into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, v);
    out.extend_from_slice(b"\n\n");
}

/// An OpenAI error body.
pub fn error_body(message: &str, kind: &str, code: Option<&str>) -> Vec<u8> {
    serde_json::to_vec(
        &json!({"error": {"message": message, "type": kind, "param": null, "code": code}}),
    )
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_full_request() {
        let r = decode_request(
            br#"{"model":"m","messages":[
                {"role":"system","content":"be brief"},
                {"role":"user","content":[{"type":"text","text":"what is"},
                  {"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]},
                {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function",
                  "function":{"name":"f","arguments":"{\"a\":1}"}}]},
                {"role":"tool","tool_call_id":"c1","content":"42"}],
              "tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],
              "tool_choice":{"type":"function","function":{"name":"f"}},
              "max_completion_tokens":50,"stop":"x","stream":true,
              "stream_options":{"include_usage":true},"logit_bias":{"1":2}}"#,
        )
        .unwrap();
        assert_eq!(r.messages.len(), 4);
        assert_eq!(r.messages[0].role, Role::System);
        assert_eq!(
            r.messages[1].content[1],
            Part::Image(Image::Base64 {
                media_type: "image/png".into(),
                data: "AAAA".into()
            })
        );
        assert_eq!(r.messages[2].tool_calls[0].arguments, "{\"a\":1}");
        assert_eq!(r.messages[3].tool_call_id.as_deref(), Some("c1"));
        assert_eq!(r.tool_choice, Some(ToolChoice::Named("f".into())));
        assert_eq!(r.max_tokens, Some(50));
        assert_eq!(r.stop, vec!["x".to_string()]);
        assert!(r.stream && r.include_usage);
        assert!(r.extra.contains_key("logit_bias"));
        assert!(!r.extra.contains_key("stream_options"));
    }

    #[test]
    fn bad_requests_name_the_field() {
        let e = decode_request(br#"{"model":"m","messages":[{"role":"robot","content":"x"}]}"#)
            .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[0].role"));
        let e = decode_request(br#"{"model":"m","messages":[{"role":"tool","content":"x"}]}"#)
            .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[0].tool_call_id"));
        let e = decode_request(
            br#"{"model":"m","messages":[{"role":"user","content":[{"text":"x"}]}]}"#,
        )
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[0].content[0].type"));
    }

    #[test]
    fn stream_encoder_emits_openai_chunks() {
        let mut enc = StreamEncoder::new("id1".into(), "m".into(), 1, true);
        let mut out = Vec::new();
        for e in [
            StreamEvent::Text("Hi".into()),
            StreamEvent::ToolCallStart {
                index: 0,
                id: "c".into(),
                name: "f".into(),
            },
            StreamEvent::ToolCallArgs {
                index: 0,
                delta: "{}".into(),
            },
            StreamEvent::Usage(Usage {
                input_tokens: 3,
                output_tokens: 4,
                ..Usage::default()
            }),
        ] {
            enc.event(&e, &mut out);
        }
        enc.finish(&mut out);
        let text = String::from_utf8(out).unwrap();
        let frames: Vec<&str> = text.split("\n\n").filter(|f| !f.is_empty()).collect();
        assert_eq!(frames.len(), 7, "{text}");
        assert!(frames[4].contains("\"finish_reason\":\"tool_calls\""));
        assert!(text.contains("\"usage\":{\"completion_tokens\":4"));
        assert!(text.ends_with("data: [DONE]\n\n"));
    }

    fn frames_of(events: &[StreamEvent]) -> Vec<Value> {
        let mut enc = StreamEncoder::new("c".into(), "m".into(), 1, false);
        let mut out = Vec::new();
        for e in events {
            enc.event(e, &mut out);
        }
        enc.finish(&mut out);
        String::from_utf8(out)
            .unwrap()
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }

    #[test]
    fn streamed_thinking_blocks_carry_their_block_index() {
        let frames = frames_of(&[
            StreamEvent::Thinking("a".into()),
            StreamEvent::Thinking("b".into()),
            StreamEvent::ThinkingSignature("s1".into()),
            StreamEvent::Thinking("c".into()),
            StreamEvent::ThinkingSignature("s2".into()),
            StreamEvent::RedactedThinking("r".into()),
            StreamEvent::Text("hi".into()),
        ]);
        let indices: Vec<u64> = frames
            .iter()
            .filter_map(|f| f["choices"][0]["delta"]["thinking_blocks"][0]["index"].as_u64())
            .collect();
        assert_eq!(indices, [0, 0, 0, 1, 1, 2]);
    }

    #[test]
    fn a_streamed_tool_call_without_argument_deltas_takes_empty_object_arguments() {
        let frames = frames_of(&[
            StreamEvent::ToolCallStart {
                index: 0,
                id: "c1".into(),
                name: "now".into(),
            },
            StreamEvent::ToolCallStart {
                index: 1,
                id: "c2".into(),
                name: "f".into(),
            },
            StreamEvent::ToolCallArgs {
                index: 1,
                delta: "{\"a\":1}".into(),
            },
        ]);
        let mut args = [String::new(), String::new()];
        for f in &frames {
            for tc in f["choices"][0]["delta"]["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let i = usize::try_from(tc["index"].as_u64().unwrap()).unwrap();
                args[i].push_str(tc["function"]["arguments"].as_str().unwrap_or(""));
            }
        }
        assert_eq!(args, ["{}", "{\"a\":1}"]);
        let folded = ChatResponse::from_events(&[StreamEvent::ToolCallStart {
            index: 0,
            id: "c1".into(),
            name: "now".into(),
        }]);
        assert_eq!(folded.tool_calls[0].arguments, "{}");
    }

    #[test]
    fn unnumbered_streamed_tool_calls_stay_apart() {
        let mut dec = OpenAiStream::default();
        let mut events = Vec::new();
        let chunk = |d: Value| {
            format!(
                "data: {}\n\n",
                json!({"id": "x", "model": "m", "choices": [{"index": 0, "delta": d}]})
            )
        };
        let sse = [
            chunk(json!({"tool_calls": [{"id": "c1", "type": "function", "function": {"name": "a", "arguments": ""}}]})),
            chunk(json!({"tool_calls": [{"function": {"arguments": "{\"x\":"}}]})),
            chunk(json!({"tool_calls": [{"function": {"arguments": "1}"}}]})),
            chunk(json!({"tool_calls": [{"id": "c2", "type": "function", "function": {"name": "b", "arguments": "{}"}}]})),
        ]
        .concat();
        crate::providers::native::StreamDecoder::feed(&mut dec, sse.as_bytes(), &mut events)
            .unwrap();
        crate::providers::native::StreamDecoder::finish(&mut dec, &mut events).unwrap();
        let r = ChatResponse::from_events(&events);
        let calls: Vec<(&str, &str, &str)> = r
            .tool_calls
            .iter()
            .map(|c| (c.id.as_str(), c.name.as_str(), c.arguments.as_str()))
            .collect();
        assert_eq!(calls, [("c1", "a", "{\"x\":1}"), ("c2", "b", "{}")]);
    }
}

mod upstream;
pub use upstream::{decode_response, encode_request, OpenAiStream};
pub(crate) use upstream::{flatten_listed_content, has_listed_content, thinking_as_content_parts};
