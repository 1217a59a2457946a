//! Canonical answers -> Anthropic Messages JSON, SSE events and errors.

use crate::api::surface::SurfaceEncoder;
use crate::canonical::{ChatResponse, FinishReason, StreamEvent, Usage};
use serde_json::{json, Value};

/// Anthropic's `stop_reason`: `stop_sequence` when the provider said which sequence
/// ended the answer.
pub fn stop_reason(f: FinishReason, stop_sequence: Option<&str>) -> &'static str {
    match f {
        FinishReason::Stop if stop_sequence.is_some() => "stop_sequence",
        FinishReason::Stop => "end_turn",
        FinishReason::Length => "max_tokens",
        FinishReason::ToolCalls => "tool_use",
        FinishReason::ContentFilter => "refusal",
    }
}

/// Anthropic counts input tokens without cache reads and writes.
pub fn usage_json(u: &Usage) -> Value {
    let uncached = u
        .input_tokens
        .saturating_sub(u.cached_input_tokens + u.cache_write_tokens);
    json!({"input_tokens": uncached, "output_tokens": u.output_tokens,
           "cache_read_input_tokens": u.cached_input_tokens,
           "cache_creation_input_tokens": u.cache_write_tokens})
}

/// A whole answer as an Anthropic `message`.
pub fn message(r: &ChatResponse, id: &str, model: &str) -> Value {
    let mut content = Vec::new();
    for t in &r.thinking {
        match &t.redacted {
            Some(d) => content.push(json!({"type": "redacted_thinking", "data": d})),
            None => content.push(json!({"type": "thinking", "thinking": t.text,
                                        "signature": t.signature.clone().unwrap_or_default()})),
        }
    }
    if let Some(t) = r.text.as_deref().filter(|t| !t.is_empty()) {
        content.push(json!({"type": "text", "text": t}));
    }
    for c in &r.tool_calls {
        let input: Value = serde_json::from_str(&c.arguments).unwrap_or_else(|_| json!({}));
        content.push(json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input}));
    }
    json!({"id": id, "type": "message", "role": "assistant", "model": model,
           "content": content,
           "stop_reason": stop_reason(r.finish, r.stop_sequence.as_deref()),
           "stop_sequence": stop_sequence(r.finish, r.stop_sequence.as_deref()),
           "usage": usage_json(&r.usage.unwrap_or_default())})
}

/// Anthropic's `stop_sequence`: set only when the answer stopped at one.
fn stop_sequence(f: FinishReason, s: Option<&str>) -> Option<&str> {
    s.filter(|_| f == FinishReason::Stop)
}

/// Anthropic's error type for an HTTP status.
pub fn error_type(status: u16) -> &'static str {
    match status {
        400 | 409 | 422 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        504 => "timeout_error",
        _ => "api_error",
    }
}

/// `{"type":"error","error":{"type","message"}}`
pub fn error_body(status: u16, message: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"type": "error",
        "error": {"type": error_type(status), "message": message}}))
    .unwrap_or_default()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Block {
    None,
    Text,
    Thinking,
    Tool(u32),
}

/// Canonical events -> Anthropic's SSE sequence: message_start, ping, content_block_start /
/// delta / stop per block, message_delta (stop_reason, usage), message_stop.
pub struct AnthropicEncoder {
    id: String,
    model: String,
    started: bool,
    block: Block,
    index: u64,
    /// Block index of each tool call, by its canonical index.
    tool_blocks: Vec<(u32, u64)>,
    finish: Option<FinishReason>,
    stop_sequence: Option<String>,
    usage: Usage,
    saw_tool: bool,
}

impl AnthropicEncoder {
    pub fn new(id: String, model: String) -> Self {
        Self {
            id,
            model,
            started: false,
            block: Block::None,
            index: 0,
            tool_blocks: Vec::new(),
            finish: None,
            stop_sequence: None,
            usage: Usage::default(),
            saw_tool: false,
        }
    }

    fn emit(out: &mut Vec<u8>, name: &str, data: &Value) {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\ndata: ");
        let _ = serde_json::to_writer(&mut *out, data);
        out.extend_from_slice(b"\n\n");
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        Self::emit(
            out,
            "message_start",
            &json!({"type": "message_start", "message": {"id": self.id, "type": "message",
                "role": "assistant", "model": self.model, "content": [], "stop_reason": null,
                "stop_sequence": null, "usage": usage_json(&self.usage)}}),
        );
        Self::emit(out, "ping", &json!({"type": "ping"}));
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if self.block != Block::None {
            Self::emit(
                out,
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": self.index}),
            );
            self.index += 1;
            self.block = Block::None;
        }
    }

    fn open(&mut self, out: &mut Vec<u8>, block: Block, content_block: &Value) {
        self.close(out);
        self.block = block;
        Self::emit(
            out,
            "content_block_start",
            &json!({"type": "content_block_start", "index": self.index,
                    "content_block": content_block}),
        );
    }

    fn delta(&self, out: &mut Vec<u8>, index: u64, delta: &Value) {
        Self::emit(
            out,
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index, "delta": delta}),
        );
    }
}

impl SurfaceEncoder for AnthropicEncoder {
    fn event(&mut self, e: &StreamEvent, out: &mut Vec<u8>) {
        self.start(out);
        match e {
            StreamEvent::Start { .. } => {}
            StreamEvent::Text(t) => {
                if t.is_empty() {
                    return;
                }
                if self.block != Block::Text {
                    self.open(out, Block::Text, &json!({"type": "text", "text": ""}));
                }
                self.delta(out, self.index, &json!({"type": "text_delta", "text": t}));
            }
            StreamEvent::Thinking(t) => {
                if self.block != Block::Thinking {
                    self.open(
                        out,
                        Block::Thinking,
                        &json!({"type": "thinking", "thinking": "", "signature": ""}),
                    );
                }
                if !t.is_empty() {
                    self.delta(
                        out,
                        self.index,
                        &json!({"type": "thinking_delta", "thinking": t}),
                    );
                }
            }
            StreamEvent::ThinkingSignature(s) => {
                if self.block != Block::Thinking {
                    self.open(
                        out,
                        Block::Thinking,
                        &json!({"type": "thinking", "thinking": "", "signature": ""}),
                    );
                }
                self.delta(
                    out,
                    self.index,
                    &json!({"type": "signature_delta", "signature": s}),
                );
            }
            StreamEvent::RedactedThinking(d) => {
                self.open(
                    out,
                    Block::Thinking,
                    &json!({"type": "redacted_thinking", "data": d}),
                );
                self.close(out);
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                self.saw_tool = true;
                self.open(
                    out,
                    Block::Tool(*index),
                    &json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                );
                self.tool_blocks.push((*index, self.index));
            }
            StreamEvent::ToolCallArgs { index, delta } => {
                let at = self
                    .tool_blocks
                    .iter()
                    .rev()
                    .find(|(i, _)| i == index)
                    .map_or(self.index, |(_, b)| *b);
                self.delta(
                    out,
                    at,
                    &json!({"type": "input_json_delta", "partial_json": delta}),
                );
            }
            StreamEvent::Finish(f) => self.finish = Some(*f),
            StreamEvent::StopSequence(s) => self.stop_sequence = Some(s.clone()),
            StreamEvent::Usage(u) => self.usage = self.usage.merge(u),
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        self.start(out);
        self.close(out);
        let f = self.finish.unwrap_or(if self.saw_tool {
            FinishReason::ToolCalls
        } else {
            FinishReason::Stop
        });
        Self::emit(
            out,
            "message_delta",
            &json!({"type": "message_delta",
                    "delta": {"stop_reason": stop_reason(f, self.stop_sequence.as_deref()),
                              "stop_sequence": stop_sequence(f, self.stop_sequence.as_deref())},
                    "usage": usage_json(&self.usage)}),
        );
        Self::emit(out, "message_stop", &json!({"type": "message_stop"}));
    }

    fn error(&mut self, message: &str, out: &mut Vec<u8>) {
        Self::emit(
            out,
            "error",
            &json!({"type": "error", "error": {"type": "api_error", "message": message}}),
        );
    }
}
