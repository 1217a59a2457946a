//! Gemini answers as canonical events. A whole answer and each SSE chunk have the same
//! shape (`GenerateContentResponse`), so one fold serves both. Gemini sends usage on every
//! chunk as a running total (the prompt count can even shrink at the end), so only the last
//! report is passed on, with the finish reason, when the stream ends.

use super::super::native::{DecodeCtx, DecodeError, SseParser, StreamDecoder};
use crate::canonical::{FinishReason, StreamEvent, Usage};
use serde_json::Value;

/// Gemini's `finishReason` in OpenAI's vocabulary.
pub fn finish_reason(s: &str) -> FinishReason {
    match s {
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT"
        | "IMAGE_RECITATION"
        | "MODEL_ARMOR" => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

/// `usageMetadata` -> usage. Thoughts are output tokens (billed as such) and reasoning.
pub fn usage(u: &Value) -> Usage {
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    let thoughts = n("thoughtsTokenCount");
    Usage {
        input_tokens: n("promptTokenCount") + n("toolUsePromptTokenCount"),
        output_tokens: n("candidatesTokenCount") + thoughts,
        cached_input_tokens: n("cachedContentTokenCount"),
        reasoning_tokens: thoughts,
        cache_write_tokens: 0,
    }
}

/// The fold over answer chunks.
pub(super) struct Chunks {
    ctx: DecodeCtx,
    started: bool,
    response_id: String,
    tools: u32,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
}

impl Chunks {
    pub(super) fn new(ctx: DecodeCtx) -> Self {
        Self {
            ctx,
            started: false,
            response_id: String::new(),
            tools: 0,
            finish: None,
            usage: None,
        }
    }

    pub(super) fn on_chunk(
        &mut self,
        v: &Value,
        out: &mut Vec<StreamEvent>,
    ) -> Result<(), DecodeError> {
        if let Some(e) = v.get("error") {
            return Err(DecodeError::new(format!(
                "Gemini stream error ({}): {}",
                e["status"].as_str().unwrap_or("error"),
                e["message"].as_str().unwrap_or("unknown")
            )));
        }
        if !self.started {
            self.started = true;
            self.response_id = v["responseId"].as_str().unwrap_or_default().to_string();
            out.push(StreamEvent::Start {
                id: self.response_id.clone(),
                model: v["modelVersion"]
                    .as_str()
                    .unwrap_or(&self.ctx.model)
                    .to_string(),
            });
        }
        if let Some(u) = v.get("usageMetadata") {
            self.usage = Some(usage(u));
        }
        if v["promptFeedback"]["blockReason"].is_string() {
            self.finish = Some(FinishReason::ContentFilter);
        }
        let Some(cand) = v["candidates"].get(0) else {
            return Ok(());
        };
        for p in cand["content"]["parts"].as_array().into_iter().flatten() {
            self.on_part(p, out);
        }
        if let Some(r) = cand["finishReason"].as_str() {
            self.finish = Some(finish_reason(r));
        }
        Ok(())
    }

    fn on_part(&mut self, p: &Value, out: &mut Vec<StreamEvent>) {
        if let Some(t) = p["text"].as_str() {
            if !t.is_empty() {
                out.push(if p["thought"] == Value::Bool(true) {
                    StreamEvent::Thinking(t.to_string())
                } else {
                    StreamEvent::Text(t.to_string())
                });
            }
        } else if let Some(fc) = p.get("functionCall") {
            let index = self.tools;
            self.tools += 1;
            let id = match fc["id"].as_str() {
                Some(id) if !id.is_empty() => id.to_string(),
                _ if self.response_id.is_empty() => format!("call_{index}"),
                _ => format!("call_{}_{index}", self.response_id),
            };
            out.push(StreamEvent::ToolCallStart {
                index,
                id,
                name: fc["name"].as_str().unwrap_or_default().to_string(),
            });
            let args = match fc.get("args") {
                None | Some(Value::Null) => "{}".to_string(),
                Some(a) => a.to_string(),
            };
            out.push(StreamEvent::ToolCallArgs { index, delta: args });
        }
        if let Some(sig) = p["thoughtSignature"].as_str() {
            out.push(StreamEvent::ThinkingSignature(sig.to_string()));
        }
    }

    /// The finish reason (a function call wins over STOP) and the last usage report.
    pub(super) fn finish(&mut self, out: &mut Vec<StreamEvent>) {
        let f = match self.finish {
            Some(FinishReason::ContentFilter) => FinishReason::ContentFilter,
            _ if self.tools > 0 => FinishReason::ToolCalls,
            other => other.unwrap_or_default(),
        };
        out.push(StreamEvent::Finish(f));
        if let Some(u) = self.usage.take() {
            out.push(StreamEvent::Usage(u));
        }
    }
}

/// `streamGenerateContent?alt=sse` -> canonical events.
pub struct GeminiStream {
    sse: SseParser,
    chunks: Chunks,
    finished: bool,
}

impl GeminiStream {
    pub fn new(ctx: DecodeCtx) -> Self {
        Self {
            sse: SseParser::default(),
            chunks: Chunks::new(ctx),
            finished: false,
        }
    }
}

fn on_data(
    chunks: &mut Chunks,
    data: &[u8],
    out: &mut Vec<StreamEvent>,
) -> Result<(), DecodeError> {
    let data = data.trim_ascii();
    if data.is_empty() || data == b"[DONE]" {
        return Ok(());
    }
    let v: Value = serde_json::from_slice(data)
        .map_err(|e| DecodeError::new(format!("Gemini stream chunk is not JSON: {e}")))?;
    chunks.on_chunk(&v, out)
}

impl StreamDecoder for GeminiStream {
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<StreamEvent>) -> Result<(), DecodeError> {
        let chunks = &mut self.chunks;
        self.sse.feed(bytes, |_, data| on_data(chunks, data, out))
    }

    fn finish(&mut self, out: &mut Vec<StreamEvent>) -> Result<(), DecodeError> {
        let chunks = &mut self.chunks;
        self.sse.finish(|_, data| on_data(chunks, data, out))?;
        if !self.finished {
            self.finished = true;
            if !self.chunks.started {
                return Err(DecodeError::new("Gemini stream ended without an answer"));
            }
            self.chunks.finish(out);
        }
        Ok(())
    }
}
