//! Anthropic Messages API: canonical request -> `/v1/messages`, answers and SSE events back.
//!
//! System turns move to `system`; tool results become `tool_result` blocks in a user turn;
//! consecutive turns of one role are merged (the API wants them alternating); thinking
//! blocks keep their signatures so a multi-turn conversation with thinking round-trips.
//! `json_schema` output is obtained with a forced tool whose input becomes the answer text.

use super::native::{
    is_context_overflow, leading_system, push_turn, system_context, turns_json, Codec, DecodeCtx,
    DecodeError, Encoded, MappedError, NativeUpstream, SseParser, StreamDecoder, Unhonoured,
};
use crate::canonical::openai::RequestError;
use crate::canonical::{
    ChatRequest, ChatResponse, FinishReason, Image, Message, Part, ResponseFormat, Role,
    StreamEvent, Thinking, ToolCall, ToolChoice, Usage,
};
use crate::config::ProviderConfig;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::{json, Map, Value};
use std::sync::Arc;

pub const DEFAULT_VERSION: &str = "2023-06-01";

/// Request fields Anthropic takes as they are, when a client sends them (`cache_control` at
/// the top level is Anthropic's automatic prompt caching).
const PASSTHROUGH: &[&str] = &[
    "metadata",
    "service_tier",
    "container",
    "mcp_servers",
    "cache_control",
];

pub fn upstream(cfg: &ProviderConfig) -> Result<NativeUpstream, String> {
    let mut headers = HeaderMap::new();
    if let Some(key) = &cfg.api_key {
        let mut v = HeaderValue::from_str(key.expose())
            .map_err(|_| format!("provider {}: api_key has invalid characters", cfg.name))?;
        v.set_sensitive(true);
        headers.insert("x-api-key", v);
    }
    let version = cfg.native.api_version.as_deref().unwrap_or(DEFAULT_VERSION);
    headers.insert(
        "anthropic-version",
        HeaderValue::from_str(version)
            .map_err(|_| format!("provider {}: invalid api_version", cfg.name))?,
    );
    let codec = Anthropic {
        default_max_tokens: cfg.native.default_max_tokens,
        path: "/v1/messages".to_string(),
        model_in_body: true,
    };
    NativeUpstream::new(cfg, Arc::new(codec), headers, None)
}

/// The Messages API codec; also used for Anthropic models on Vertex and Bedrock.
pub struct Anthropic {
    pub default_max_tokens: u64,
    pub path: String,
    /// Vertex takes the model in the URL and `anthropic_version` in the body instead.
    pub model_in_body: bool,
}

const JSON_TOOL: &str = "json_response";

/// Claude's thinking signatures work wherever Claude runs (Anthropic, Vertex, Bedrock).
pub const CLAUDE_SIGNATURES: &str = "claude";

/// A Messages API body, the parameters left out (and which of them change the answer),
/// and what the decoder must know.
pub struct MessagesBody {
    pub body: Map<String, Value>,
    pub dropped: Vec<String>,
    pub refused: Vec<Unhonoured>,
    pub ctx: DecodeCtx,
}

/// Anthropic (and Claude on Bedrock) refuse extended thinking when a tool call is forced.
/// The lenient request leaves the thinking out; by default it is refused.
pub fn thinking_with_forced_tool(req: &ChatRequest, provider: &str) -> Unhonoured {
    let p = req.thinking_param();
    Unhonoured::new(
        p,
        format!(
            "`{p}` together with a forced tool (`tool_choice` required or named, or `response_format: json_schema`): {provider} refuses extended thinking when a tool call is forced"
        ),
    )
}

impl Anthropic {
    /// The Messages API body (also the body of Anthropic-on-Vertex/Bedrock requests).
    pub fn body(&self, req: &ChatRequest) -> Result<MessagesBody, RequestError> {
        let mut dropped = Vec::new();
        let mut ctx = DecodeCtx {
            model: req.model.clone(),
            json_tool: None,
        };
        let mut b = Map::new();
        if self.model_in_body {
            b.insert("model".into(), json!(req.model));
        }
        // system
        let mut system: Vec<Value> = Vec::new();
        for m in &req.messages[..leading_system(&req.messages)] {
            for p in &m.content {
                if let Part::Text {
                    text,
                    cache_control,
                } = p
                {
                    if text.is_empty() {
                        continue;
                    }
                    let mut block = json!({"type": "text", "text": text});
                    if let Some(cc) = cache_control {
                        block["cache_control"] = cc.clone();
                    }
                    system.push(block);
                }
            }
        }
        if req.response_format == Some(ResponseFormat::JsonObject) {
            system.push(json!({"type": "text",
                "text": "Respond with a single JSON object and nothing else."}));
        }
        if !system.is_empty() {
            let plain = system.iter().all(|s| s.get("cache_control").is_none());
            if plain {
                let joined: Vec<&str> = system
                    .iter()
                    .filter_map(|s| s.get("text").and_then(Value::as_str))
                    .collect();
                b.insert("system".into(), json!(joined.join("\n\n")));
            } else {
                b.insert("system".into(), Value::Array(system));
            }
        }
        b.insert("messages".into(), Value::Array(messages(&req.messages)?));
        // sampling
        let mut refused = Vec::new();
        let mut thinking = req.thinking_budget.or_else(|| {
            req.reasoning_effort.as_deref().and_then(|e| match e {
                "minimal" | "low" => Some(1024),
                "medium" => Some(4096),
                "high" => Some(16384),
                _ => None,
            })
        });
        if thinking.is_some() && req.forces_a_tool() {
            thinking = None;
            dropped.push(req.thinking_param().to_string());
            refused.push(thinking_with_forced_tool(req, "Anthropic"));
        }
        let mut max_tokens = req.max_tokens.unwrap_or(self.default_max_tokens);
        if let Some(budget) = thinking {
            if max_tokens <= budget {
                max_tokens = budget + self.default_max_tokens;
            }
            b.insert(
                "thinking".into(),
                json!({"type": "enabled", "budget_tokens": budget}),
            );
        }
        b.insert("max_tokens".into(), json!(max_tokens));
        if let Some(t) = req.temperature {
            if thinking.is_some() {
                dropped.push("temperature".to_string());
            } else {
                b.insert("temperature".into(), json!(t));
            }
        }
        if let Some(p) = req.top_p {
            b.insert("top_p".into(), json!(p));
        }
        if let Some(k) = req.top_k {
            b.insert("top_k".into(), json!(k));
        }
        if !req.stop.is_empty() {
            b.insert("stop_sequences".into(), json!(req.stop));
        }
        if let Some(u) = &req.user {
            b.insert("metadata".into(), json!({"user_id": u}));
        }
        for (name, set) in [
            ("seed", req.seed.is_some()),
            ("frequency_penalty", req.frequency_penalty.is_some()),
            ("presence_penalty", req.presence_penalty.is_some()),
        ] {
            if set {
                dropped.push(name.to_string());
            }
        }
        // tools
        let mut tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                let mut v = json!({"name": t.name, "input_schema": t.parameters});
                if let Some(d) = &t.description {
                    v["description"] = json!(d);
                }
                v
            })
            .collect();
        let mut choice = match &req.tool_choice {
            None => None,
            Some(ToolChoice::Auto) => Some(json!({"type": "auto"})),
            Some(ToolChoice::Required) => Some(json!({"type": "any"})),
            Some(ToolChoice::None) => Some(json!({"type": "none"})),
            Some(ToolChoice::Named(n)) => Some(json!({"type": "tool", "name": n})),
        };
        if let Some(ResponseFormat::JsonSchema { schema, .. }) = &req.response_format {
            tools.push(json!({"name": JSON_TOOL,
                "description": "Give the final answer in this structure.",
                "input_schema": schema}));
            if choice.is_none() || req.tools.is_empty() {
                choice = Some(json!({"type": "tool", "name": JSON_TOOL}));
            }
            ctx.json_tool = Some(JSON_TOOL.to_string());
        }
        if req.parallel_tool_calls == Some(false) {
            let c = choice.get_or_insert_with(|| json!({"type": "auto"}));
            if c["type"] != "none" {
                c["disable_parallel_tool_use"] = json!(true);
            }
        }
        if !tools.is_empty() {
            b.insert("tools".into(), Value::Array(tools));
        }
        if let Some(c) = choice {
            if !req.tools.is_empty() || ctx.json_tool.is_some() {
                b.insert("tool_choice".into(), c);
            }
        }
        for (k, v) in &req.extra {
            if PASSTHROUGH.contains(&k.as_str()) {
                b.insert(k.clone(), v.clone());
            } else if !(k == "n" && v.as_u64() == Some(1)) {
                dropped.push(k.clone());
            }
        }
        if req.stream {
            b.insert("stream".into(), json!(true));
        }
        Ok(MessagesBody {
            body: b,
            dropped,
            refused,
            ctx,
        })
    }
}

impl Codec for Anthropic {
    fn encode(&self, req: &ChatRequest) -> Result<Encoded, RequestError> {
        let MessagesBody {
            body,
            dropped,
            refused,
            ctx,
        } = self.body(req)?;
        Ok(Encoded {
            path: self.path.clone(),
            body: serde_json::to_vec(&Value::Object(body)).unwrap_or_default(),
            headers: Vec::new(),
            dropped,
            refused,
            ctx,
        })
    }

    fn decode(&self, body: &[u8], ctx: &DecodeCtx) -> Result<ChatResponse, DecodeError> {
        decode_message(body, ctx)
    }

    fn stream_decoder(&self, ctx: &DecodeCtx) -> Box<dyn StreamDecoder> {
        Box::new(AnthropicStream::new(ctx.clone()))
    }

    fn error(&self, status: StatusCode, body: &[u8]) -> MappedError {
        map_error(status, body)
    }

    fn signature_family(&self, _model: &str) -> Option<&'static str> {
        Some(CLAUDE_SIGNATURES)
    }

    fn messages_path(&self) -> Option<&str> {
        // Anthropic's own API (Vertex takes its own body shape and URL).
        self.model_in_body.then_some(self.path.as_str())
    }
}

fn messages(msgs: &[Message]) -> Result<Vec<Value>, RequestError> {
    let mut out = Vec::new();
    let lead = leading_system(msgs);
    for m in &msgs[lead..] {
        let (role, blocks) = match m.role {
            // Later system messages keep their place, as system context in a user turn.
            Role::System => ("user", content_blocks(&system_context(&m.content))?),
            Role::User => ("user", content_blocks(&m.content)?),
            Role::Tool => {
                let content = content_blocks(&m.content)?;
                let mut block = json!({"type": "tool_result",
                    "tool_use_id": m.tool_call_id.clone().unwrap_or_default()});
                if !content.is_empty() {
                    block["content"] = Value::Array(content);
                }
                ("user", vec![block])
            }
            Role::Assistant => {
                let mut blocks = Vec::new();
                for t in &m.thinking {
                    if let Some(d) = &t.redacted {
                        blocks.push(json!({"type": "redacted_thinking", "data": d}));
                    } else if let Some(sig) = &t.signature {
                        // Unsigned thinking (from another provider) cannot be sent back.
                        blocks.push(
                            json!({"type": "thinking", "thinking": t.text, "signature": sig}),
                        );
                    }
                }
                blocks.extend(content_blocks(&m.content)?);
                for c in &m.tool_calls {
                    let input: Value = if c.arguments.trim().is_empty() {
                        json!({})
                    } else {
                        serde_json::from_str(&c.arguments).map_err(|e| {
                            RequestError::new(
                                format!("tool call {} has arguments that are not JSON: {e}", c.id),
                                Some("messages"),
                            )
                        })?
                    };
                    blocks.push(
                        json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input}),
                    );
                }
                ("assistant", blocks)
            }
        };
        push_turn(&mut out, role, blocks);
    }
    Ok(turns_json(out, "content"))
}

fn content_blocks(parts: &[Part]) -> Result<Vec<Value>, RequestError> {
    let mut out = Vec::with_capacity(parts.len());
    for p in parts {
        out.push(match p {
            Part::Text {
                text,
                cache_control,
            } => {
                if text.is_empty() {
                    continue;
                }
                let mut v = json!({"type": "text", "text": text});
                if let Some(cc) = cache_control {
                    v["cache_control"] = cc.clone();
                }
                v
            }
            Part::Image(Image::Base64 { media_type, data }) => json!({"type": "image",
                "source": {"type": "base64", "media_type": media_type, "data": data}}),
            Part::Image(Image::Url(u)) => {
                json!({"type": "image", "source": {"type": "url", "url": u}})
            }
            Part::Other(v) => document(v)?,
        });
    }
    Ok(out)
}

/// An OpenAI `file` part (inline PDF or text) as an Anthropic `document` block.
fn document(v: &Value) -> Result<Value, RequestError> {
    let kind = v["type"].as_str().unwrap_or_default();
    if kind == "file" {
        if let Some(Image::Base64 { media_type, data }) =
            v["file"]["file_data"].as_str().map(Image::from_url)
        {
            return Ok(json!({"type": "document",
                "source": {"type": "base64", "media_type": media_type, "data": data}}));
        }
    }
    Err(RequestError::new(
        format!(
            "content part type '{kind}' cannot be sent to Anthropic (text, image_url and inline file parts can)"
        ),
        Some("messages"),
    ))
}

pub fn finish_reason(s: &str) -> FinishReason {
    match s {
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

pub fn usage(u: &Value) -> Usage {
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    let read = n("cache_read_input_tokens");
    let write = n("cache_creation_input_tokens");
    Usage {
        input_tokens: n("input_tokens") + read + write,
        output_tokens: n("output_tokens"),
        cached_input_tokens: read,
        reasoning_tokens: 0,
        cache_write_tokens: write,
    }
}

/// A whole Messages API answer.
pub fn decode_message(body: &[u8], ctx: &DecodeCtx) -> Result<ChatResponse, DecodeError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| DecodeError::new(format!("Anthropic answer is not JSON: {e}")))?;
    let mut r = ChatResponse {
        id: v["id"].as_str().unwrap_or_default().to_string(),
        model: v["model"].as_str().unwrap_or(&ctx.model).to_string(),
        ..ChatResponse::default()
    };
    for block in v["content"].as_array().into_iter().flatten() {
        match block["type"].as_str() {
            Some("text") => r
                .text
                .get_or_insert_with(String::new)
                .push_str(block["text"].as_str().unwrap_or_default()),
            Some("thinking") => r.thinking.push(Thinking {
                text: block["thinking"].as_str().unwrap_or_default().to_string(),
                signature: block["signature"].as_str().map(str::to_string),
                redacted: None,
            }),
            Some("redacted_thinking") => r.thinking.push(Thinking {
                text: String::new(),
                signature: None,
                redacted: block["data"].as_str().map(str::to_string),
            }),
            Some("tool_use") => {
                let name = block["name"].as_str().unwrap_or_default();
                let args = block
                    .get("input")
                    .map_or_else(|| "{}".to_string(), Value::to_string);
                if ctx.json_tool.as_deref() == Some(name) {
                    r.text = Some(args);
                } else {
                    r.tool_calls.push(ToolCall {
                        id: block["id"].as_str().unwrap_or_default().to_string(),
                        name: name.to_string(),
                        arguments: args,
                    });
                }
            }
            _ => {}
        }
    }
    r.finish = finish_reason(v["stop_reason"].as_str().unwrap_or("end_turn"));
    r.stop_sequence = v["stop_sequence"].as_str().map(str::to_string);
    if ctx.json_tool.is_some() && r.finish == FinishReason::ToolCalls && r.tool_calls.is_empty() {
        r.finish = FinishReason::Stop;
    }
    r.usage = v.get("usage").map(usage);
    Ok(r)
}

/// Anthropic SSE -> canonical events.
pub struct AnthropicStream {
    sse: SseParser,
    ctx: DecodeCtx,
    /// Per content-block index: `Some(tool index)` for tool_use blocks, and whether the
    /// block is the structured-output tool (its JSON is the answer text).
    blocks: Vec<(u64, BlockKind)>,
    tools: u32,
    in_usage: Usage,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum BlockKind {
    Text,
    Thinking,
    Tool(u32),
    JsonAnswer,
    Other,
}

impl AnthropicStream {
    pub fn new(ctx: DecodeCtx) -> Self {
        Self {
            sse: SseParser::default(),
            ctx,
            blocks: Vec::new(),
            tools: 0,
            in_usage: Usage::default(),
        }
    }

    fn kind(&self, index: u64) -> BlockKind {
        self.blocks
            .iter()
            .rev()
            .find(|(i, _)| *i == index)
            .map_or(BlockKind::Other, |(_, k)| *k)
    }

    /// One decoded event (also used by the Bedrock decoder for Anthropic-on-Bedrock).
    pub fn on_event(&mut self, v: &Value, out: &mut Vec<StreamEvent>) -> Result<(), DecodeError> {
        match v["type"].as_str().unwrap_or_default() {
            "message_start" => {
                let m = &v["message"];
                out.push(StreamEvent::Start {
                    id: m["id"].as_str().unwrap_or_default().to_string(),
                    model: m["model"].as_str().unwrap_or(&self.ctx.model).to_string(),
                });
                if let Some(u) = m.get("usage") {
                    self.in_usage = usage(u);
                    out.push(StreamEvent::Usage(self.in_usage));
                }
            }
            "content_block_start" => {
                let index = v["index"].as_u64().unwrap_or(0);
                let b = &v["content_block"];
                let kind = match b["type"].as_str() {
                    Some("text") => {
                        if let Some(t) = b["text"].as_str().filter(|t| !t.is_empty()) {
                            out.push(StreamEvent::Text(t.to_string()));
                        }
                        BlockKind::Text
                    }
                    Some("thinking") => BlockKind::Thinking,
                    Some("redacted_thinking") => {
                        out.push(StreamEvent::RedactedThinking(
                            b["data"].as_str().unwrap_or_default().to_string(),
                        ));
                        BlockKind::Other
                    }
                    Some("tool_use") => {
                        let name = b["name"].as_str().unwrap_or_default();
                        if self.ctx.json_tool.as_deref() == Some(name) {
                            BlockKind::JsonAnswer
                        } else {
                            let i = self.tools;
                            self.tools += 1;
                            out.push(StreamEvent::ToolCallStart {
                                index: i,
                                id: b["id"].as_str().unwrap_or_default().to_string(),
                                name: name.to_string(),
                            });
                            BlockKind::Tool(i)
                        }
                    }
                    _ => BlockKind::Other,
                };
                self.blocks.push((index, kind));
            }
            "content_block_delta" => {
                let index = v["index"].as_u64().unwrap_or(0);
                let d = &v["delta"];
                let s = |k: &str| d[k].as_str().unwrap_or_default().to_string();
                match (d["type"].as_str().unwrap_or_default(), self.kind(index)) {
                    ("text_delta", _) => out.push(StreamEvent::Text(s("text"))),
                    ("thinking_delta", _) => out.push(StreamEvent::Thinking(s("thinking"))),
                    ("signature_delta", _) => {
                        out.push(StreamEvent::ThinkingSignature(s("signature")));
                    }
                    ("input_json_delta", BlockKind::Tool(i)) => {
                        out.push(StreamEvent::ToolCallArgs {
                            index: i,
                            delta: s("partial_json"),
                        });
                    }
                    ("input_json_delta", BlockKind::JsonAnswer) => {
                        out.push(StreamEvent::Text(s("partial_json")));
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(r) = v["delta"]["stop_reason"].as_str() {
                    let mut f = finish_reason(r);
                    if f == FinishReason::ToolCalls && self.tools == 0 {
                        f = FinishReason::Stop;
                    }
                    out.push(StreamEvent::Finish(f));
                }
                if let Some(s) = v["delta"]["stop_sequence"].as_str() {
                    out.push(StreamEvent::StopSequence(s.to_string()));
                }
                if let Some(u) = v.get("usage") {
                    let mut merged = usage(u);
                    // message_delta repeats input counts only sometimes.
                    if merged.input_tokens == 0 {
                        merged.input_tokens = self.in_usage.input_tokens;
                        merged.cached_input_tokens = self.in_usage.cached_input_tokens;
                        merged.cache_write_tokens = self.in_usage.cache_write_tokens;
                    }
                    out.push(StreamEvent::Usage(merged));
                }
            }
            "error" => {
                let e = &v["error"];
                return Err(DecodeError::new(format!(
                    "Anthropic stream error ({}): {}",
                    e["type"].as_str().unwrap_or("error"),
                    e["message"].as_str().unwrap_or("unknown")
                )));
            }
            _ => {} // ping, content_block_stop, message_stop
        }
        Ok(())
    }
}

impl StreamDecoder for AnthropicStream {
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<StreamEvent>) -> Result<(), DecodeError> {
        let mut sse = std::mem::take(&mut self.sse);
        let r = sse.feed(bytes, |_, data| self.on_data(data, out));
        self.sse = sse;
        r
    }

    fn finish(&mut self, out: &mut Vec<StreamEvent>) -> Result<(), DecodeError> {
        let mut sse = std::mem::take(&mut self.sse);
        let r = sse.finish(|_, data| self.on_data(data, out));
        self.sse = sse;
        r
    }
}

impl AnthropicStream {
    fn on_data(&mut self, data: &[u8], out: &mut Vec<StreamEvent>) -> Result<(), DecodeError> {
        let data = data.trim_ascii();
        if data.is_empty() {
            return Ok(());
        }
        // Hot path: text and tool-argument deltas, read without building a JSON tree.
        if data.starts_with(b"{\"type\":\"content_block_delta\"") {
            if let Ok(d) = serde_json::from_slice::<FastDelta<'_>>(data) {
                match (d.delta.kind, self.kind(d.index)) {
                    ("text_delta", _) => {
                        out.push(StreamEvent::Text(
                            d.delta.text.unwrap_or_default().into_owned(),
                        ));
                        return Ok(());
                    }
                    ("input_json_delta", BlockKind::Tool(i)) => {
                        out.push(StreamEvent::ToolCallArgs {
                            index: i,
                            delta: d.delta.partial_json.unwrap_or_default().into_owned(),
                        });
                        return Ok(());
                    }
                    _ => {}
                }
            }
        }
        let v: Value = serde_json::from_slice(data)
            .map_err(|e| DecodeError::new(format!("Anthropic stream event is not JSON: {e}")))?;
        self.on_event(&v, out)
    }
}

#[derive(serde::Deserialize)]
struct FastDelta<'a> {
    index: u64,
    #[serde(borrow)]
    delta: FastInner<'a>,
}

#[derive(serde::Deserialize)]
struct FastInner<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(borrow, default)]
    text: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    partial_json: Option<std::borrow::Cow<'a, str>>,
}

/// Anthropic's error body and status, in OpenAI's vocabulary: 529 overloaded -> 503.
pub fn map_error(status: StatusCode, body: &[u8]) -> MappedError {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let kind = v["error"]["type"].as_str().unwrap_or_default();
    let message = v["error"]["message"].as_str().map_or_else(
        || String::from_utf8_lossy(body).chars().take(500).collect(),
        str::to_string,
    );
    let status = if status.as_u16() == 529 || kind == "overloaded_error" {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        status
    };
    let code = if is_context_overflow(&message) {
        Some("context_length_exceeded")
    } else {
        None
    };
    MappedError {
        status,
        kind: super::native::openai_error_type(status),
        message,
        code,
    }
}
