//! Cohere v2: canonical request -> `/v2/chat`, answers and SSE events back; `/v2/embed`.
//!
//! Cohere's chat is close to OpenAI's (roles, `tool_calls`, function tools) but differs in
//! the details: sampling is `p`/`k`, `tool_choice` is only `REQUIRED`/`NONE` (a named choice
//! becomes `REQUIRED` with only that tool offered), the answer's `content` is a list of
//! text/thinking blocks, and `tool_plan` (the model's plan before calling tools) is surfaced
//! as reasoning and sent back as `tool_plan` on the next turn.

use super::native::{
    is_context_overflow, openai_error_type, Codec, DecodeCtx, DecodeError, Encoded, MappedError,
    NativeUpstream, SseParser, StreamDecoder,
};
use crate::canonical::openai::RequestError;
use crate::canonical::{
    ChatRequest, ChatResponse, FinishReason, Message, Part, ResponseFormat, Role, StreamEvent,
    Thinking, ToolCall, ToolChoice, Usage,
};
use crate::config::ProviderConfig;
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// Request fields Cohere takes as they are, when a client sends them.
const PASSTHROUGH: &[&str] = &[
    "documents",
    "citation_options",
    "safety_mode",
    "strict_tools",
    "logprobs",
    "priority",
];

pub fn upstream(cfg: &ProviderConfig) -> Result<NativeUpstream, String> {
    let mut headers = HeaderMap::new();
    if let Some(key) = &cfg.api_key {
        let mut v = HeaderValue::from_str(&format!("Bearer {}", key.expose()))
            .map_err(|_| format!("provider {}: api_key has invalid characters", cfg.name))?;
        v.set_sensitive(true);
        headers.insert(AUTHORIZATION, v);
    }
    NativeUpstream::new(cfg, Arc::new(Cohere), headers, None)
}

/// The Cohere v2 codec.
pub struct Cohere;

impl Cohere {
    /// The `/v2/chat` body, and the parameters that were left out.
    pub fn body(req: &ChatRequest) -> Result<(Map<String, Value>, Vec<String>), RequestError> {
        refuse_unmodelled(&req.messages, "Cohere")?;
        let mut dropped = Vec::new();
        let mut b = Map::new();
        b.insert("model".into(), json!(req.model));
        b.insert("messages".into(), Value::Array(messages(&req.messages)));
        // Tools: a named choice offers only that tool and requires it.
        let mut tools: Vec<&crate::canonical::Tool> = req.tools.iter().collect();
        let choice = match &req.tool_choice {
            None | Some(ToolChoice::Auto) => None,
            Some(ToolChoice::Required) => Some("REQUIRED"),
            Some(ToolChoice::None) => Some("NONE"),
            Some(ToolChoice::Named(n)) => {
                tools.retain(|t| &t.name == n);
                if tools.is_empty() {
                    return Err(RequestError::new(
                        format!("tool_choice names `{n}`, which is not in tools"),
                        Some("tool_choice"),
                    ));
                }
                Some("REQUIRED")
            }
        };
        if !tools.is_empty() {
            let defs: Vec<Value> = tools
                .iter()
                .map(|t| {
                    let mut f = json!({"name": t.name, "parameters": t.parameters});
                    if let Some(d) = &t.description {
                        f["description"] = json!(d);
                    }
                    json!({"type": "function", "function": f})
                })
                .collect();
            b.insert("tools".into(), Value::Array(defs));
            if let Some(c) = choice {
                b.insert("tool_choice".into(), json!(c));
            }
        }
        if req.parallel_tool_calls == Some(false) {
            dropped.push("parallel_tool_calls".to_string());
        }
        match &req.response_format {
            None | Some(ResponseFormat::Text) => {}
            Some(ResponseFormat::JsonObject) => {
                b.insert("response_format".into(), json!({"type": "json_object"}));
            }
            Some(ResponseFormat::JsonSchema { schema, .. }) => {
                b.insert(
                    "response_format".into(),
                    json!({"type": "json_object", "json_schema": schema}),
                );
            }
        }
        if let Some(n) = req.max_tokens {
            b.insert("max_tokens".into(), json!(n));
        }
        for (k, v) in [
            ("temperature", req.temperature),
            ("p", req.top_p),
            ("frequency_penalty", req.frequency_penalty),
            ("presence_penalty", req.presence_penalty),
        ] {
            if let Some(v) = v {
                b.insert(k.into(), json!(v));
            }
        }
        if let Some(k) = req.top_k {
            b.insert("k".into(), json!(k));
        }
        if let Some(s) = req.seed {
            b.insert("seed".into(), json!(s));
        }
        if !req.stop.is_empty() {
            b.insert("stop_sequences".into(), json!(req.stop));
        }
        // Reasoning models: `thinking`; an explicit budget wins, `none` turns it off.
        match (req.thinking_budget, req.reasoning_effort.as_deref()) {
            (Some(budget), _) => {
                b.insert(
                    "thinking".into(),
                    json!({"type": "enabled", "token_budget": budget}),
                );
            }
            (None, Some("none")) => {
                b.insert("thinking".into(), json!({"type": "disabled"}));
            }
            (None, Some(_)) => {
                b.insert("thinking".into(), json!({"type": "enabled"}));
            }
            (None, None) => {}
        }
        if req.user.is_some() {
            dropped.push("user".to_string());
        }
        for (k, v) in &req.extra {
            if PASSTHROUGH.contains(&k.as_str()) {
                b.insert(k.clone(), v.clone());
            } else if !(k == "n" && v.as_u64() == Some(1)) {
                dropped.push(k.clone());
            }
        }
        b.insert("stream".into(), json!(req.stream));
        Ok((b, dropped))
    }
}

impl Codec for Cohere {
    fn encode(&self, req: &ChatRequest) -> Result<Encoded, RequestError> {
        let (b, dropped) = Self::body(req)?;
        Ok(Encoded {
            path: "/v2/chat".to_string(),
            body: serde_json::to_vec(&Value::Object(b)).unwrap_or_default(),
            headers: Vec::new(),
            dropped,
            refused: Vec::new(),
            ctx: DecodeCtx {
                model: req.model.clone(),
                json_tool: None,
            },
        })
    }

    fn decode(&self, body: &[u8], ctx: &DecodeCtx) -> Result<ChatResponse, DecodeError> {
        decode_chat(body, ctx)
    }

    fn stream_decoder(&self, ctx: &DecodeCtx) -> Box<dyn StreamDecoder> {
        Box::new(CohereStream::new(ctx.clone()))
    }

    fn error(&self, status: StatusCode, body: &[u8]) -> MappedError {
        map_error(status, body)
    }

    fn encode_embeddings(&self, body: &[u8]) -> Option<Result<Encoded, RequestError>> {
        Some(encode_embeddings(body))
    }

    fn decode_embeddings(&self, body: &[u8], ctx: &DecodeCtx) -> Result<Vec<u8>, DecodeError> {
        decode_embeddings(body, ctx)
    }
}

/// Content parts other than text and images (`input_audio`, `file`, ...) have no form in
/// Cohere's or Ollama's chat: a 400 naming the part.
pub(super) fn refuse_unmodelled(msgs: &[Message], provider: &str) -> Result<(), RequestError> {
    for (i, m) in msgs.iter().enumerate() {
        for (j, p) in m.content.iter().enumerate() {
            if let Part::Other(v) = p {
                let kind = v["type"].as_str().unwrap_or("unknown");
                return Err(RequestError::new(
                    format!("{provider} does not take `{kind}` content parts (text and image_url are supported)"),
                    Some(&format!("messages[{i}].content[{j}].type")),
                ));
            }
        }
    }
    Ok(())
}

fn messages(msgs: &[Message]) -> Vec<Value> {
    msgs.iter()
        .map(|m| match m.role {
            Role::System => json!({"role": "system", "content": m.text()}),
            Role::User => json!({"role": "user", "content": content(&m.content)}),
            Role::Tool => json!({"role": "tool",
                "tool_call_id": m.tool_call_id.clone().unwrap_or_default(),
                "content": m.text()}),
            Role::Assistant => assistant(m),
        })
        .collect()
}

/// Plain text stays a string (as Cohere's own clients send it); images make a part list.
fn content(parts: &[Part]) -> Value {
    if parts.iter().all(|p| matches!(p, Part::Text { .. })) {
        let mut s = String::new();
        for p in parts {
            if let Part::Text { text, .. } = p {
                s.push_str(text);
            }
        }
        return json!(s);
    }
    Value::Array(
        parts
            .iter()
            .map(|p| match p {
                Part::Text { text, .. } => json!({"type": "text", "text": text}),
                Part::Image(i) => json!({"type": "image_url", "image_url": {"url": i.to_url()}}),
                // Refused by `refuse_unmodelled` before encoding.
                Part::Other(v) => v.clone(),
            })
            .collect(),
    )
}

/// An assistant turn: with tool calls, its reasoning goes back as `tool_plan`; without,
/// as `thinking` content blocks ahead of the text (how Cohere's reasoning models want it).
fn assistant(m: &Message) -> Value {
    let mut v = json!({"role": "assistant"});
    let thinking: String = m.thinking.iter().map(|t| t.text.as_str()).collect();
    let text = m.text();
    if m.tool_calls.is_empty() {
        if thinking.is_empty() {
            v["content"] = json!(text);
        } else {
            let mut blocks = vec![json!({"type": "thinking", "thinking": thinking})];
            if !text.is_empty() {
                blocks.push(json!({"type": "text", "text": text}));
            }
            v["content"] = Value::Array(blocks);
        }
        return v;
    }
    if !thinking.is_empty() {
        v["tool_plan"] = json!(thinking);
    }
    if !text.is_empty() {
        v["content"] = json!(text);
    }
    v["tool_calls"] = Value::Array(
        m.tool_calls
            .iter()
            .map(|c| {
                let args = if c.arguments.trim().is_empty() {
                    "{}"
                } else {
                    c.arguments.as_str()
                };
                json!({"id": c.id, "type": "function",
                       "function": {"name": c.name, "arguments": args}})
            })
            .collect(),
    );
    v
}

/// Cohere's finish reasons; `ERROR` and `TIMEOUT` mean the answer failed.
pub fn finish_reason(s: &str) -> Result<FinishReason, DecodeError> {
    match s {
        "MAX_TOKENS" => Ok(FinishReason::Length),
        "TOOL_CALL" => Ok(FinishReason::ToolCalls),
        "ERROR" | "TIMEOUT" | "ERROR_TOXIC" | "ERROR_LIMIT" => Err(DecodeError::new(format!(
            "Cohere ended the answer with finish_reason {s}"
        ))),
        _ => Ok(FinishReason::Stop), // COMPLETE, STOP_SEQUENCE
    }
}

/// `usage.tokens` (what the model processed), `billed_units` when those are missing.
pub fn usage(u: &Value) -> Usage {
    let pick = |k: &str| {
        u["tokens"][k]
            .as_u64()
            .or_else(|| u["billed_units"][k].as_u64())
            .unwrap_or(0)
    };
    let input = pick("input_tokens");
    Usage {
        input_tokens: input,
        output_tokens: pick("output_tokens"),
        cached_input_tokens: u["cached_tokens"].as_u64().unwrap_or(0).min(input),
        reasoning_tokens: 0,
        cache_write_tokens: 0,
    }
}

fn thinking(text: &str) -> Thinking {
    Thinking {
        text: text.to_string(),
        signature: None,
        redacted: None,
    }
}

/// A whole `/v2/chat` answer.
pub fn decode_chat(body: &[u8], ctx: &DecodeCtx) -> Result<ChatResponse, DecodeError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| DecodeError::new(format!("Cohere answer is not JSON: {e}")))?;
    let m = &v["message"];
    let mut r = ChatResponse {
        id: v["id"].as_str().unwrap_or_default().to_string(),
        model: ctx.model.clone(),
        ..ChatResponse::default()
    };
    if let Some(plan) = m["tool_plan"].as_str().filter(|p| !p.is_empty()) {
        r.thinking.push(thinking(plan));
    }
    for block in m["content"].as_array().into_iter().flatten() {
        match block["type"].as_str() {
            Some("text") => r
                .text
                .get_or_insert_with(String::new)
                .push_str(block["text"].as_str().unwrap_or_default()),
            Some("thinking") => r
                .thinking
                .push(thinking(block["thinking"].as_str().unwrap_or_default())),
            _ => {}
        }
    }
    for c in m["tool_calls"].as_array().into_iter().flatten() {
        let f = &c["function"];
        r.tool_calls.push(ToolCall {
            id: c["id"].as_str().unwrap_or_default().to_string(),
            name: f["name"].as_str().unwrap_or_default().to_string(),
            arguments: match &f["arguments"] {
                Value::String(s) => s.clone(),
                Value::Null => "{}".to_string(),
                other => other.to_string(),
            },
        });
    }
    r.finish = finish_reason(v["finish_reason"].as_str().unwrap_or("COMPLETE"))?;
    if v["finish_reason"] == "STOP_SEQUENCE" {
        // Cohere does not say which: resolved from the request (native::TranslateBody).
        r.stop_sequence = Some(String::new());
    }
    if r.finish == FinishReason::Stop && !r.tool_calls.is_empty() {
        r.finish = FinishReason::ToolCalls;
    }
    r.usage = v.get("usage").map(usage);
    Ok(r)
}

/// Cohere v2 SSE -> canonical events.
pub struct CohereStream {
    sse: SseParser,
    ctx: DecodeCtx,
    /// Cohere's tool-call index -> ours (numbered in the order calls start).
    tools: Vec<(u64, u32)>,
}

impl CohereStream {
    pub fn new(ctx: DecodeCtx) -> Self {
        Self {
            sse: SseParser::default(),
            ctx,
            tools: Vec::new(),
        }
    }

    fn tool_index(&self, cohere: u64) -> Option<u32> {
        self.tools
            .iter()
            .rev()
            .find(|(c, _)| *c == cohere)
            .map(|(_, i)| *i)
    }

    fn on_data(
        &mut self,
        event: &str,
        data: &[u8],
        out: &mut Vec<StreamEvent>,
    ) -> Result<(), DecodeError> {
        let data = data.trim_ascii();
        if data.is_empty() || data == b"[DONE]" {
            return Ok(());
        }
        let v: Value = serde_json::from_slice(data)
            .map_err(|e| DecodeError::new(format!("Cohere stream event is not JSON: {e}")))?;
        let kind = v["type"].as_str().unwrap_or(event);
        let msg = &v["delta"]["message"];
        let s = |x: &Value| x.as_str().unwrap_or_default().to_string();
        match kind {
            "message-start" => out.push(StreamEvent::Start {
                id: s(&v["id"]),
                model: self.ctx.model.clone(),
            }),
            "content-start" | "content-delta" => {
                let c = &msg["content"];
                if let Some(t) = c["thinking"].as_str().filter(|t| !t.is_empty()) {
                    out.push(StreamEvent::Thinking(t.to_string()));
                }
                if let Some(t) = c["text"].as_str().filter(|t| !t.is_empty()) {
                    out.push(StreamEvent::Text(t.to_string()));
                }
            }
            "tool-plan-delta" => {
                if let Some(t) = msg["tool_plan"].as_str().filter(|t| !t.is_empty()) {
                    out.push(StreamEvent::Thinking(t.to_string()));
                }
            }
            "tool-call-start" => {
                let c = &msg["tool_calls"];
                let index = u32::try_from(self.tools.len()).unwrap_or(u32::MAX);
                self.tools.push((v["index"].as_u64().unwrap_or(0), index));
                out.push(StreamEvent::ToolCallStart {
                    index,
                    id: s(&c["id"]),
                    name: s(&c["function"]["name"]),
                });
                if let Some(a) = c["function"]["arguments"]
                    .as_str()
                    .filter(|a| !a.is_empty())
                {
                    out.push(StreamEvent::ToolCallArgs {
                        index,
                        delta: a.to_string(),
                    });
                }
            }
            "tool-call-delta" => {
                let a = s(&msg["tool_calls"]["function"]["arguments"]);
                let cohere = v["index"].as_u64().unwrap_or(0);
                if let (false, Some(index)) = (a.is_empty(), self.tool_index(cohere)) {
                    out.push(StreamEvent::ToolCallArgs { index, delta: a });
                }
            }
            "message-end" => {
                let d = &v["delta"];
                if let Some(f) = d["finish_reason"].as_str() {
                    let mut f = finish_reason(f)?;
                    if f == FinishReason::Stop && !self.tools.is_empty() {
                        f = FinishReason::ToolCalls;
                    }
                    out.push(StreamEvent::Finish(f));
                }
                if d["finish_reason"] == "STOP_SEQUENCE" {
                    out.push(StreamEvent::StopSequence(String::new()));
                }
                if let Some(u) = d.get("usage") {
                    out.push(StreamEvent::Usage(usage(u)));
                }
            }
            _ => {} // content-end, tool-call-end, citation-*, debug
        }
        Ok(())
    }
}

impl StreamDecoder for CohereStream {
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<StreamEvent>) -> Result<(), DecodeError> {
        let mut sse = std::mem::take(&mut self.sse);
        let r = sse.feed(bytes, |e, data| self.on_data(e, data, out));
        self.sse = sse;
        r
    }

    fn finish(&mut self, out: &mut Vec<StreamEvent>) -> Result<(), DecodeError> {
        let mut sse = std::mem::take(&mut self.sse);
        let r = sse.finish(|e, data| self.on_data(e, data, out));
        self.sse = sse;
        r
    }
}

/// Cohere's error body (`{"message": ...}`, sometimes with an `id`) in OpenAI's vocabulary.
/// The status is kept as it is (429 stays 429; the transport keeps `Retry-After`).
pub fn map_error(status: StatusCode, body: &[u8]) -> MappedError {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let message = v["message"].as_str().map_or_else(
        || String::from_utf8_lossy(body).chars().take(500).collect(),
        str::to_string,
    );
    // 498 (invalid token) and 499 (client closed) are Cohere's own.
    let status = match status.as_u16() {
        498 => StatusCode::UNAUTHORIZED,
        499 => StatusCode::BAD_REQUEST,
        _ => status,
    };
    MappedError {
        status,
        kind: openai_error_type(status),
        code: is_context_overflow(&message).then_some("context_length_exceeded"),
        message,
    }
}

/// OpenAI embeddings body -> `/v2/embed` (documents by default; a client may send Cohere's
/// `input_type`). Floats are asked for, and returned as floats.
pub fn encode_embeddings(body: &[u8]) -> Result<Encoded, RequestError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        RequestError::new(
            format!("We could not parse the JSON body of your request: {e}"),
            None,
        )
    })?;
    let model = v["model"].as_str().unwrap_or_default().to_string();
    let texts = texts(&v["input"])?;
    let mut b = json!({
        "model": model,
        "texts": texts,
        "input_type": v["input_type"].as_str().unwrap_or("search_document"),
        "embedding_types": ["float"],
    });
    let mut dropped = Vec::new();
    if let Some(d) = v["dimensions"].as_u64() {
        b["output_dimension"] = json!(d);
    }
    if let Some(t) = v["truncate"].as_str() {
        b["truncate"] = json!(t);
    }
    if v.get("user").is_some() {
        dropped.push("user".to_string());
    }
    Ok(Encoded {
        path: "/v2/embed".to_string(),
        body: serde_json::to_vec(&b).unwrap_or_default(),
        headers: Vec::new(),
        dropped,
        refused: Vec::new(),
        ctx: DecodeCtx {
            model,
            json_tool: None,
        },
    })
}

/// OpenAI's `input`: a string or a list of strings (token arrays have no Cohere form).
pub fn texts(input: &Value) -> Result<Vec<String>, RequestError> {
    let bad = || {
        RequestError::new(
            "input must be a string or an array of strings for this provider",
            Some("input"),
        )
    };
    match input {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(a) if !a.is_empty() => a
            .iter()
            .map(|x| x.as_str().map(str::to_string).ok_or_else(bad))
            .collect(),
        _ => Err(bad()),
    }
}

/// An OpenAI embeddings `list` from vectors and the input token count.
pub fn embeddings_list(vectors: &[Value], model: &str, prompt_tokens: u64) -> Vec<u8> {
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(i, e)| json!({"object": "embedding", "index": i, "embedding": e}))
        .collect();
    serde_json::to_vec(&json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }))
    .unwrap_or_default()
}

pub fn decode_embeddings(body: &[u8], ctx: &DecodeCtx) -> Result<Vec<u8>, DecodeError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| DecodeError::new(format!("Cohere embed answer is not JSON: {e}")))?;
    // v2 answers `embeddings: {float: [...]}`; v1-style `embeddings: [...]` is taken too.
    let vectors = v["embeddings"]["float"]
        .as_array()
        .or_else(|| v["embeddings"].as_array())
        .ok_or_else(|| DecodeError::new("Cohere embed answer has no float embeddings"))?;
    let tokens = v["meta"]["billed_units"]["input_tokens"]
        .as_u64()
        .unwrap_or(0);
    Ok(embeddings_list(vectors, &ctx.model, tokens))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::canonical::openai::decode_request;

    fn encode(openai: &Value) -> (Value, Vec<String>) {
        let req = decode_request(openai.to_string().as_bytes()).unwrap();
        let e = Cohere.encode(&req).unwrap();
        assert_eq!(e.path, "/v2/chat");
        (serde_json::from_slice(&e.body).unwrap(), e.dropped)
    }

    #[test]
    fn encodes_tools_images_sampling_and_turns() {
        let (b, dropped) = encode(&json!({
            "model": "command-a", "stream": true, "max_tokens": 9, "temperature": 0.5,
            "top_p": 0.9, "top_k": 4, "stop": ["END"], "seed": 7, "user": "u1",
            "frequency_penalty": 0.1, "presence_penalty": 0.2, "logit_bias": {"1": 1},
            "response_format": {"type": "json_schema", "json_schema": {"name": "x",
                "schema": {"type": "object"}}},
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "see"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
                {"role": "assistant", "content": null, "reasoning_content": "I will look",
                 "tool_calls": [{"id": "c1", "type": "function",
                    "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "42"}],
            "tools": [{"type": "function", "function": {"name": "f", "description": "d",
                "parameters": {"type": "object"}}},
                {"type": "function", "function": {"name": "g"}}],
            "tool_choice": {"type": "function", "function": {"name": "f"}},
        }));
        assert_eq!(b["stream"], true);
        assert_eq!(b["max_tokens"], 9);
        assert_eq!((b["p"].clone(), b["k"].clone()), (json!(0.9), json!(4)));
        assert_eq!(b["stop_sequences"], json!(["END"]));
        assert_eq!(b["seed"], 7);
        assert_eq!(b["presence_penalty"], 0.2);
        assert_eq!(
            b["response_format"],
            json!({"type": "json_object", "json_schema": {"type": "object"}})
        );
        assert_eq!(b["tool_choice"], "REQUIRED");
        assert_eq!(
            b["tools"].as_array().unwrap().len(),
            1,
            "only the named tool"
        );
        assert_eq!(b["tools"][0]["function"]["name"], "f");
        let m = &b["messages"];
        assert_eq!(m[0], json!({"role": "system", "content": "be brief"}));
        assert_eq!(m[1]["content"][1]["type"], "image_url");
        assert_eq!(
            m[1]["content"][1]["image_url"]["url"],
            "data:image/png;base64,AAAA"
        );
        assert_eq!(m[2]["tool_plan"], "I will look");
        assert_eq!(m[2]["tool_calls"][0]["function"]["arguments"], "{\"a\":1}");
        assert_eq!(
            m[3],
            json!({"role": "tool", "tool_call_id": "c1", "content": "42"})
        );
        assert_eq!(dropped, vec!["user".to_string(), "logit_bias".to_string()]);
    }

    #[test]
    fn unmodelled_parts_are_refused_by_name() {
        let req = decode_request(
            br#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"x"},
                {"type":"input_audio","input_audio":{"data":"AA","format":"wav"}}]}]}"#,
        )
        .unwrap();
        let e = Cohere.encode(&req).err().unwrap();
        assert_eq!(e.param.as_deref(), Some("messages[0].content[1].type"));
        assert!(e.message.contains("input_audio"), "{}", e.message);
        let e = crate::providers::ollama::Ollama.encode(&req).err().unwrap();
        assert_eq!(e.param.as_deref(), Some("messages[0].content[1].type"));
    }

    #[test]
    fn tool_choice_none_and_auto() {
        let tools = json!([{"type": "function", "function": {"name": "f"}}]);
        let msgs = json!([{"role": "user", "content": "x"}]);
        let (b, _) =
            encode(&json!({"model": "m", "messages": msgs, "tools": tools, "tool_choice": "none"}));
        assert_eq!(b["tool_choice"], "NONE");
        let (b, _) =
            encode(&json!({"model": "m", "messages": msgs, "tools": tools, "tool_choice": "auto"}));
        assert!(b.get("tool_choice").is_none());
        assert_eq!(b["stream"], false, "stream is always explicit");
        let req = decode_request(
            json!({"model": "m", "messages": msgs, "tools": tools,
                   "tool_choice": {"type": "function", "function": {"name": "zz"}}})
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        let e = Cohere.encode(&req).err().unwrap();
        assert_eq!(e.param.as_deref(), Some("tool_choice"));
    }

    #[test]
    fn decodes_tool_calls_plan_and_usage() {
        let body = json!({"id": "r1", "finish_reason": "TOOL_CALL", "message": {
            "role": "assistant", "tool_plan": "I will call f",
            "tool_calls": [{"id": "f_1", "type": "function",
                "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
            "usage": {"billed_units": {"input_tokens": 1, "output_tokens": 2},
                      "tokens": {"input_tokens": 10, "output_tokens": 20}, "cached_tokens": 4}});
        let r = decode_chat(body.to_string().as_bytes(), &DecodeCtx::default()).unwrap();
        assert_eq!(r.finish, FinishReason::ToolCalls);
        assert_eq!(r.tool_calls[0].id, "f_1");
        assert_eq!(r.tool_calls[0].arguments, "{\"a\":1}");
        assert_eq!(r.thinking[0].text, "I will call f");
        let u = r.usage.unwrap();
        assert_eq!(
            (u.input_tokens, u.output_tokens, u.cached_input_tokens),
            (10, 20, 4)
        );
        let billed = usage(&json!({"billed_units": {"input_tokens": 3, "output_tokens": 5}}));
        assert_eq!((billed.input_tokens, billed.output_tokens), (3, 5));
        for (f, want) in [
            ("MAX_TOKENS", FinishReason::Length),
            ("STOP_SEQUENCE", FinishReason::Stop),
        ] {
            assert_eq!(finish_reason(f).unwrap(), want);
        }
        assert!(finish_reason("ERROR").is_err());
        assert!(finish_reason("TIMEOUT").is_err());
    }

    /// A Cohere v2 stream in the shape of the API reference's example.
    pub const STREAM: &str = concat!(
        "event: message-start\ndata: {\"id\":\"s1\",\"type\":\"message-start\",\"delta\":{\"message\":{\"role\":\"assistant\",\"content\":[],\"tool_plan\":\"\",\"tool_calls\":[],\"citations\":[]}}}\n\n",
        "event: tool-plan-delta\ndata: {\"type\":\"tool-plan-delta\",\"delta\":{\"message\":{\"tool_plan\":\"I will \"}}}\n\n",
        "event: tool-plan-delta\ndata: {\"type\":\"tool-plan-delta\",\"delta\":{\"message\":{\"tool_plan\":\"look.\"}}}\n\n",
        "event: tool-call-start\ndata: {\"type\":\"tool-call-start\",\"index\":0,\"delta\":{\"message\":{\"tool_calls\":{\"id\":\"get_weather_a\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}}}}\n\n",
        "event: tool-call-delta\ndata: {\"type\":\"tool-call-delta\",\"index\":0,\"delta\":{\"message\":{\"tool_calls\":{\"function\":{\"arguments\":\"{\\\"city\\\"\"}}}}}\n\n",
        "event: tool-call-delta\ndata: {\"type\":\"tool-call-delta\",\"index\":0,\"delta\":{\"message\":{\"tool_calls\":{\"function\":{\"arguments\":\": \\\"Paris\\\"}\"}}}}}\n\n",
        "event: tool-call-end\ndata: {\"type\":\"tool-call-end\",\"index\":0}\n\n",
        "event: tool-call-start\ndata: {\"type\":\"tool-call-start\",\"index\":1,\"delta\":{\"message\":{\"tool_calls\":{\"id\":\"get_weather_b\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}}}}\n\n",
        "event: tool-call-delta\ndata: {\"type\":\"tool-call-delta\",\"index\":1,\"delta\":{\"message\":{\"tool_calls\":{\"function\":{\"arguments\":\"{\\\"city\\\": \\\"Rome\\\"}\"}}}}}\n\n",
        "event: tool-call-end\ndata: {\"type\":\"tool-call-end\",\"index\":1}\n\n",
        "event: message-end\ndata: {\"type\":\"message-end\",\"delta\":{\"finish_reason\":\"TOOL_CALL\",\"usage\":{\"billed_units\":{\"input_tokens\":5,\"output_tokens\":6},\"tokens\":{\"input_tokens\":50,\"output_tokens\":60}}}}\n\n",
    );

    #[test]
    fn stream_at_any_split() {
        for split in 1..64 {
            let mut d = CohereStream::new(DecodeCtx::default());
            let mut ev = Vec::new();
            for c in STREAM.as_bytes().chunks(split) {
                d.feed(c, &mut ev).unwrap();
            }
            d.finish(&mut ev).unwrap();
            let r = ChatResponse::from_events(&ev);
            assert_eq!(r.id, "s1");
            assert_eq!(r.thinking[0].text, "I will look.");
            let calls: Vec<(&str, &str)> = r
                .tool_calls
                .iter()
                .map(|c| (c.id.as_str(), c.arguments.as_str()))
                .collect();
            assert_eq!(
                calls,
                vec![
                    ("get_weather_a", "{\"city\": \"Paris\"}"),
                    ("get_weather_b", "{\"city\": \"Rome\"}")
                ],
                "split {split}"
            );
            assert_eq!(r.finish, FinishReason::ToolCalls);
            assert_eq!(r.usage.unwrap().output_tokens, 60);
        }
    }

    #[test]
    fn stream_text_thinking_and_error_finish() {
        let text = "event: content-start\ndata: {\"type\":\"content-start\",\"index\":0,\"delta\":{\"message\":{\"content\":{\"type\":\"thinking\",\"thinking\":\"\"}}}}\n\n\
            data: {\"type\":\"content-delta\",\"index\":0,\"delta\":{\"message\":{\"content\":{\"thinking\":\"hmm\"}}}}\n\n\
            data: {\"type\":\"content-delta\",\"index\":1,\"delta\":{\"message\":{\"content\":{\"text\":\"Hi\"}}}}\n\n\
            data: {\"type\":\"message-end\",\"delta\":{\"finish_reason\":\"MAX_TOKENS\"}}\n\n";
        let mut d = CohereStream::new(DecodeCtx::default());
        let mut ev = Vec::new();
        d.feed(text.as_bytes(), &mut ev).unwrap();
        let r = ChatResponse::from_events(&ev);
        assert_eq!(r.text.as_deref(), Some("Hi"));
        assert_eq!(r.thinking[0].text, "hmm");
        assert_eq!(r.finish, FinishReason::Length);
        let mut d = CohereStream::new(DecodeCtx::default());
        let err = d.feed(
            b"data: {\"type\":\"message-end\",\"delta\":{\"finish_reason\":\"ERROR\"}}\n\n",
            &mut ev,
        );
        assert!(err.is_err());
    }

    #[test]
    fn errors_keep_status_and_message() {
        let m = map_error(
            StatusCode::TOO_MANY_REQUESTS,
            br#"{"id":"x","message":"trial key rate limit"}"#,
        );
        assert_eq!(m.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(m.kind, "rate_limit_error");
        assert_eq!(m.message, "trial key rate limit");
        let m = map_error(
            StatusCode::BAD_REQUEST,
            br#"{"message":"too many tokens: total number of tokens in the prompt cannot exceed 128000"}"#,
        );
        assert_eq!(m.code, Some("context_length_exceeded"));
        let m = map_error(StatusCode::BAD_GATEWAY, b"upstream gone");
        assert_eq!(m.message, "upstream gone");
    }

    #[test]
    fn embeddings_round_trip() {
        let e = encode_embeddings(br#"{"model":"embed-v4.0","input":["a","b"],"dimensions":256}"#)
            .unwrap();
        let b: Value = serde_json::from_slice(&e.body).unwrap();
        assert_eq!(e.path, "/v2/embed");
        assert_eq!(b["texts"], json!(["a", "b"]));
        assert_eq!(b["input_type"], "search_document");
        assert_eq!(b["embedding_types"], json!(["float"]));
        assert_eq!(b["output_dimension"], 256);
        let out = decode_embeddings(
            br#"{"id":"e","embeddings":{"float":[[0.1,0.2],[0.3,0.4]]},"texts":["a","b"],
                "meta":{"billed_units":{"input_tokens":2}}}"#,
            &e.ctx,
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["object"], "list");
        assert_eq!(v["data"][1]["index"], 1);
        assert_eq!(v["data"][1]["embedding"], json!([0.3, 0.4]));
        assert_eq!(v["model"], "embed-v4.0");
        assert_eq!(v["usage"]["prompt_tokens"], 2);
        assert!(encode_embeddings(br#"{"model":"m","input":[[1,2]]}"#).is_err());
    }

    /// Mangled streams (bytes flipped, cut, newlines and quotes thrown in) fed at random
    /// splits: the decoder may refuse them, but never panics.
    #[test]
    fn mangled_streams_never_panic() {
        crate::providers::native::feed_mangled(STREAM.as_bytes(), || {
            CohereStream::new(DecodeCtx::default())
        });
    }
}
