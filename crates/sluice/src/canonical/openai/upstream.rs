//! The other direction: canonical request -> OpenAI chat-completions body, and OpenAI
//! answers (JSON and SSE chunks) -> canonical. Used by surfaces that reach OpenAI-format
//! providers (Anthropic Messages and Responses in) and by replay tests of OpenAI-compatible
//! vendors (OpenAI, Groq, Mistral, ...).

use super::super::{
    ChatRequest, ChatResponse, FinishReason, Part, ResponseFormat, Role, StreamEvent, ToolCall,
    ToolChoice, Usage,
};
use crate::providers::native::{DecodeError, SseParser, StreamDecoder};
use serde_json::{json, Value};

/// An OpenAI chat-completions request body for `r`.
pub fn encode_request(r: &ChatRequest) -> Value {
    let mut messages = Vec::with_capacity(r.messages.len());
    for m in &r.messages {
        let role = match m.role {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        };
        // Plain text joins into a string, unless a part carries an Anthropic cache marker,
        // which only survives on its own part.
        let only_text = m.content.iter().all(|p| {
            matches!(
                p,
                Part::Text {
                    cache_control: None,
                    ..
                }
            )
        });
        let content = if m.content.is_empty() {
            Value::Null
        } else if only_text && (m.role != Role::User || m.content.len() == 1) {
            Value::String(m.text())
        } else {
            Value::Array(
                m.content
                    .iter()
                    .map(|p| match p {
                        Part::Text {
                            text,
                            cache_control,
                        } => {
                            let mut t = json!({"type": "text", "text": text});
                            if let Some(cc) = cache_control {
                                t["cache_control"] = cc.clone();
                            }
                            t
                        }
                        Part::Image(i) => {
                            json!({"type": "image_url", "image_url": {"url": i.to_url()}})
                        }
                        Part::Other(v) => v.clone(),
                    })
                    .collect(),
            )
        };
        let mut v = json!({"role": role, "content": content});
        if !m.tool_calls.is_empty() {
            v["tool_calls"] = Value::Array(
                m.tool_calls
                    .iter()
                    .map(|c| {
                        json!({"id": c.id, "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments}})
                    })
                    .collect(),
            );
        }
        if let Some(id) = &m.tool_call_id {
            v["tool_call_id"] = json!(id);
        }
        if let Some(n) = &m.name {
            v["name"] = json!(n);
        }
        if !m.thinking.is_empty() {
            let text: String = m.thinking.iter().map(|t| t.text.as_str()).collect();
            if !text.is_empty() {
                v["reasoning_content"] = json!(text);
            }
            // Signed or redacted thinking must reach the provider that made it intact.
            if m.thinking
                .iter()
                .any(|t| t.signature.is_some() || t.redacted.is_some())
            {
                v["thinking_blocks"] = super::thinking_blocks(&m.thinking);
            }
        }
        messages.push(v);
    }
    let mut o = serde_json::Map::new();
    o.insert("model".into(), json!(r.model));
    o.insert("messages".into(), Value::Array(messages));
    if !r.tools.is_empty() {
        o.insert(
            "tools".into(),
            Value::Array(
                r.tools
                    .iter()
                    .map(|t| {
                        let mut f = json!({"name": t.name, "parameters": t.parameters});
                        if let Some(d) = &t.description {
                            f["description"] = json!(d);
                        }
                        if let Some(s) = t.strict {
                            f["strict"] = json!(s);
                        }
                        json!({"type": "function", "function": f})
                    })
                    .collect(),
            ),
        );
    }
    if let Some(c) = &r.tool_choice {
        o.insert(
            "tool_choice".into(),
            match c {
                ToolChoice::None => json!("none"),
                ToolChoice::Auto => json!("auto"),
                ToolChoice::Required => json!("required"),
                ToolChoice::Named(n) => json!({"type": "function", "function": {"name": n}}),
            },
        );
    }
    if let Some(p) = r.parallel_tool_calls {
        o.insert("parallel_tool_calls".into(), json!(p));
    }
    match &r.response_format {
        None => {}
        Some(ResponseFormat::Text) => {
            o.insert("response_format".into(), json!({"type": "text"}));
        }
        Some(ResponseFormat::JsonObject) => {
            o.insert("response_format".into(), json!({"type": "json_object"}));
        }
        Some(ResponseFormat::JsonSchema {
            name,
            description,
            schema,
            strict,
        }) => {
            let mut js = json!({"name": name, "schema": schema});
            if let Some(d) = description {
                js["description"] = json!(d);
            }
            if let Some(s) = strict {
                js["strict"] = json!(s);
            }
            o.insert(
                "response_format".into(),
                json!({"type": "json_schema", "json_schema": js}),
            );
        }
    }
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            o.insert(k.into(), v);
        }
    };
    put("max_completion_tokens", r.max_tokens.map(|v| json!(v)));
    put("temperature", r.temperature.map(|v| json!(v)));
    put("top_p", r.top_p.map(|v| json!(v)));
    put("top_k", r.top_k.map(|v| json!(v)));
    put("seed", r.seed.map(|v| json!(v)));
    put("frequency_penalty", r.frequency_penalty.map(|v| json!(v)));
    put("presence_penalty", r.presence_penalty.map(|v| json!(v)));
    // A thinking budget (Anthropic clients) becomes the nearest effort: OpenAI has no budget,
    // and translated providers map efforts back to budgets (low 1024, medium 4096, high 16384).
    let effort = r.reasoning_effort.clone().or_else(|| {
        r.thinking_budget.map(|b| {
            match b {
                0..=2048 => "low",
                2049..=8192 => "medium",
                _ => "high",
            }
            .to_string()
        })
    });
    put("reasoning_effort", effort.map(Value::String));
    put("user", r.user.clone().map(Value::String));
    put("stop", (!r.stop.is_empty()).then(|| json!(r.stop)));
    if r.stream {
        o.insert("stream".into(), json!(true));
        if r.include_usage {
            o.insert("stream_options".into(), json!({"include_usage": true}));
        }
    }
    for (k, v) in &r.extra {
        o.entry(k.clone()).or_insert_with(|| v.clone());
    }
    Value::Object(o)
}

fn finish(s: &str) -> FinishReason {
    match s {
        "length" => FinishReason::Length,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "content_filter" => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

fn usage(u: &Value) -> Usage {
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    Usage {
        input_tokens: n(&u["prompt_tokens"]),
        output_tokens: n(&u["completion_tokens"]),
        cached_input_tokens: n(&u["prompt_tokens_details"]["cached_tokens"]),
        reasoning_tokens: n(&u["completion_tokens_details"]["reasoning_tokens"]),
        cache_write_tokens: n(&u["prompt_tokens_details"]["cache_write_tokens"]),
    }
}

/// Reasoning text under the names vendors use (`reasoning_content`: DeepSeek and ours;
/// `reasoning`: Groq, OpenRouter).
fn reasoning(v: &Value) -> Option<&str> {
    v["reasoning_content"]
        .as_str()
        .or_else(|| v["reasoning"].as_str())
        .filter(|s| !s.is_empty())
}

/// A message's or delta's `content` as (text, thinking). Mistral's reasoning models
/// (magistral) send a list of parts instead of a string: `{"type": "text", "text"}` and
/// `{"type": "thinking", "thinking": [{"type": "text", "text"}]}`; both are kept.
fn content(c: &Value) -> (Option<String>, String) {
    let Some(parts) = c.as_array() else {
        return (c.as_str().map(str::to_string), String::new());
    };
    let (mut text, mut thinking) = (None::<String>, String::new());
    for p in parts {
        match p["type"].as_str() {
            Some("text") => text
                .get_or_insert_with(String::new)
                .push_str(p["text"].as_str().unwrap_or_default()),
            Some("thinking") => {
                for t in p["thinking"].as_array().into_iter().flatten() {
                    thinking.push_str(t["text"].as_str().unwrap_or_default());
                }
            }
            _ => {}
        }
    }
    (text, thinking)
}

/// Whether `body` may hold a list-shaped `content` (`"content":` then `[`): the cheap test
/// that keeps every string-content answer on the byte passthrough.
pub(crate) fn has_listed_content(body: &[u8]) -> bool {
    const KEY: &[u8] = b"\"content\":";
    let mut rest = body;
    while let Some(i) = rest.windows(KEY.len()).position(|w| w == KEY) {
        rest = &rest[i + KEY.len()..];
        if rest.trim_ascii_start().first() == Some(&b'[') {
            return true;
        }
    }
    false
}

/// A message or stream delta whose `content` is a list of parts (Mistral's reasoning models)
/// said OpenAI's way, as the chat surface says other providers' thinking: `content` the text,
/// the thinking as `reasoning_content` plus one `thinking_blocks` entry (`index` 0 in a
/// stream delta, as [`super::StreamEncoder`] numbers them). False when there was no list.
pub(crate) fn flatten_listed_content(m: &mut Value, delta: bool) -> bool {
    if !m["content"].is_array() {
        return false;
    }
    let (text, thinking) = content(&m["content"]);
    m["content"] = text.map_or(Value::Null, Value::String);
    if !thinking.is_empty() {
        let mut block = json!({"type": "thinking", "thinking": thinking});
        if delta {
            block["index"] = json!(0);
        }
        m["reasoning_content"] = json!(thinking);
        m["thinking_blocks"] = json!([block]);
    }
    true
}

/// Assistant thinking in a chat-completions request body (`reasoning_content`, or the text
/// of `thinking_blocks`) moved into `content` parts, the shape Mistral takes it in:
/// `[{"type":"thinking","thinking":[{"type":"text","text":..}]}, {"type":"text",..}]`.
/// Signatures and redacted blocks are another provider's and are left out. False when no
/// message had any.
pub(crate) fn thinking_as_content_parts(body: &mut Value) -> bool {
    let mut changed = false;
    for m in body["messages"].as_array_mut().into_iter().flatten() {
        if m["role"] != "assistant" {
            continue;
        }
        let Some(o) = m.as_object_mut() else { continue };
        let reasoning = o.remove("reasoning_content");
        let blocks = o.remove("thinking_blocks");
        if reasoning.is_none() && blocks.is_none() {
            continue;
        }
        changed = true;
        let text = match reasoning.as_ref().and_then(Value::as_str) {
            Some(t) => t.to_string(),
            None => blocks
                .iter()
                .flat_map(|b| b.as_array().into_iter().flatten())
                .filter_map(|b| b["thinking"].as_str())
                .collect(),
        };
        if text.is_empty() {
            continue;
        }
        let mut parts =
            vec![json!({"type": "thinking", "thinking": [{"type": "text", "text": text}]})];
        match o.remove("content") {
            Some(Value::String(s)) if !s.is_empty() => {
                parts.push(json!({"type": "text", "text": s}));
            }
            Some(Value::Array(a)) => parts.extend(a),
            _ => {}
        }
        o.insert("content".into(), Value::Array(parts));
    }
    changed
}

/// A whole OpenAI `chat.completion`.
pub fn decode_response(body: &[u8]) -> Result<ChatResponse, DecodeError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| DecodeError::new(format!("answer is not JSON: {e}")))?;
    let c = &v["choices"][0];
    let m = &c["message"];
    let (text, listed_thinking) = content(&m["content"]);
    let mut r = ChatResponse {
        id: v["id"].as_str().unwrap_or_default().to_string(),
        model: v["model"].as_str().unwrap_or_default().to_string(),
        text,
        finish: finish(c["finish_reason"].as_str().unwrap_or("stop")),
        // vLLM's (and our) matched stop sequence; vLLM sends a token id there too.
        stop_sequence: c["stop_reason"].as_str().map(str::to_string),
        ..ChatResponse::default()
    };
    // `thinking_blocks` (ours, LiteLLM's) carry signatures; else plain reasoning text.
    if let Some(blocks) = m["thinking_blocks"].as_array().filter(|b| !b.is_empty()) {
        for b in blocks {
            let s = |k: &str| b[k].as_str().map(str::to_string);
            r.thinking.push(super::super::Thinking {
                text: s("thinking").unwrap_or_default(),
                signature: s("signature").filter(|s| !s.is_empty()),
                redacted: s("data").filter(|_| b["type"] == "redacted_thinking"),
            });
        }
    } else if let Some(t) =
        reasoning(m).or(Some(listed_thinking.as_str()).filter(|t| !t.is_empty()))
    {
        r.thinking.push(super::super::Thinking {
            text: t.to_string(),
            signature: None,
            redacted: None,
        });
    }
    for tc in m["tool_calls"].as_array().into_iter().flatten() {
        r.tool_calls.push(ToolCall {
            id: tc["id"].as_str().unwrap_or_default().to_string(),
            name: tc["function"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            arguments: tc["function"]["arguments"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        });
    }
    r.usage = v.get("usage").filter(|u| u.is_object()).map(usage);
    Ok(r)
}

/// OpenAI `chat.completion.chunk` SSE -> canonical events.
#[derive(Default)]
pub struct OpenAiStream {
    sse: SseParser,
    started: bool,
    /// OpenAI tool-call indices seen, in order; ours are their positions.
    tool_indices: Vec<u64>,
    /// The id of the last tool call delta that had one (for unnumbered deltas).
    last_tool_id: Option<String>,
}

/// Indices given to unnumbered tool calls (far above any a server sends).
const UNNUMBERED: u64 = 1 << 62;

impl OpenAiStream {
    fn on_data(&mut self, data: &[u8], out: &mut Vec<StreamEvent>) -> Result<(), DecodeError> {
        let data = data.trim_ascii();
        if data.is_empty() || data == b"[DONE]" {
            return Ok(());
        }
        let v: Value = serde_json::from_slice(data)
            .map_err(|e| DecodeError::new(format!("stream chunk is not JSON: {e}")))?;
        if let Some(e) = v.get("error").filter(|e| e.is_object()) {
            return Err(DecodeError::new(format!(
                "upstream stream error: {}",
                e["message"].as_str().unwrap_or("unknown")
            )));
        }
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start {
                id: v["id"].as_str().unwrap_or_default().to_string(),
                model: v["model"].as_str().unwrap_or_default().to_string(),
            });
        }
        if let Some(c) = v["choices"].as_array().and_then(|c| c.first()) {
            let d = &c["delta"];
            if let Some(t) = reasoning(d) {
                out.push(StreamEvent::Thinking(t.to_string()));
            }
            // Text comes in reasoning_content; thinking_blocks add signatures and redactions.
            for b in d["thinking_blocks"].as_array().into_iter().flatten() {
                if b["type"] == "redacted_thinking" {
                    if let Some(data) = b["data"].as_str() {
                        out.push(StreamEvent::RedactedThinking(data.to_string()));
                    }
                } else if let Some(sig) = b["signature"].as_str().filter(|s| !s.is_empty()) {
                    out.push(StreamEvent::ThinkingSignature(sig.to_string()));
                }
            }
            let (text, thinking) = content(&d["content"]);
            if !thinking.is_empty() {
                out.push(StreamEvent::Thinking(thinking));
            }
            if let Some(t) = text.filter(|t| !t.is_empty()) {
                out.push(StreamEvent::Text(t));
            }
            for tc in d["tool_calls"].as_array().into_iter().flatten() {
                // Servers that number nothing: a delta with a new id is a new call, one
                // without an id continues the last call.
                let id = tc["id"].as_str().filter(|s| !s.is_empty());
                let oi = match tc["index"].as_u64() {
                    Some(i) => i,
                    None => match (id, self.tool_indices.last()) {
                        (Some(id), last)
                            if last.is_none() || self.last_tool_id.as_deref() != Some(id) =>
                        {
                            UNNUMBERED + self.tool_indices.len() as u64
                        }
                        (_, Some(last)) => *last,
                        (_, None) => 0,
                    },
                };
                if let Some(id) = id {
                    self.last_tool_id = Some(id.to_string());
                }
                let pos = match self.tool_indices.iter().position(|i| *i == oi) {
                    Some(p) => p,
                    None => {
                        self.tool_indices.push(oi);
                        let p = self.tool_indices.len() - 1;
                        out.push(StreamEvent::ToolCallStart {
                            index: u32::try_from(p).unwrap_or(u32::MAX),
                            id: tc["id"].as_str().unwrap_or_default().to_string(),
                            name: tc["function"]["name"]
                                .as_str()
                                .unwrap_or_default()
                                .to_string(),
                        });
                        p
                    }
                };
                if let Some(a) = tc["function"]["arguments"]
                    .as_str()
                    .filter(|a| !a.is_empty())
                {
                    out.push(StreamEvent::ToolCallArgs {
                        index: u32::try_from(pos).unwrap_or(u32::MAX),
                        delta: a.to_string(),
                    });
                }
            }
            if let Some(f) = c["finish_reason"].as_str() {
                out.push(StreamEvent::Finish(finish(f)));
                if let Some(s) = c["stop_reason"].as_str() {
                    out.push(StreamEvent::StopSequence(s.to_string()));
                }
            }
        }
        let u = v
            .get("usage")
            .filter(|u| u.is_object())
            .or_else(|| v["x_groq"].get("usage").filter(|u| u.is_object()));
        if let Some(u) = u {
            out.push(StreamEvent::Usage(usage(u)));
        }
        Ok(())
    }
}

impl StreamDecoder for OpenAiStream {
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<StreamEvent>) -> Result<(), DecodeError> {
        let mut sse = std::mem::take(&mut self.sse);
        let r = sse.feed(bytes, |_, d| self.on_data(d, out));
        self.sse = sse;
        r
    }

    fn finish(&mut self, out: &mut Vec<StreamEvent>) -> Result<(), DecodeError> {
        let mut sse = std::mem::take(&mut self.sse);
        let r = sse.finish(|_, d| self.on_data(d, out));
        self.sse = sse;
        r
    }
}
