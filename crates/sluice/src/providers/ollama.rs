//! Ollama's native API: canonical request -> `/api/chat`, answers and NDJSON streams back;
//! `/api/embed`. For servers without the OpenAI-compatible `/v1` (or where the native API
//! exposes more: `think`, `keep_alive`, options).
//!
//! Ollama streams unless told otherwise, so `stream` is always sent. Tool calls arrive
//! whole and without ids: we give each one an id, and map a tool result's `tool_call_id`
//! back to the function name Ollama wants (`tool_name`). Images must be inline.

use super::cohere::{embeddings_list, refuse_unmodelled, texts};
use super::native::{
    is_context_overflow, openai_error_type, Codec, DecodeCtx, DecodeError, Encoded, MappedError,
    NativeUpstream, StreamDecoder, Unhonoured,
};
use crate::canonical::openai::RequestError;
use crate::canonical::{
    ChatRequest, ChatResponse, FinishReason, Image, Message, Part, ResponseFormat, Role,
    StreamEvent, ToolChoice, Usage,
};
use crate::config::ProviderConfig;
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// Request fields Ollama takes as they are (`think` also takes `"low"`/`"high"` strings).
const PASSTHROUGH: &[&str] = &["keep_alive", "think"];

pub fn upstream(cfg: &ProviderConfig) -> Result<NativeUpstream, String> {
    // A local Ollama needs no key; one behind a proxy or ollama.com takes a bearer token.
    let mut headers = HeaderMap::new();
    if let Some(key) = &cfg.api_key {
        let mut v = HeaderValue::from_str(&format!("Bearer {}", key.expose()))
            .map_err(|_| format!("provider {}: api_key has invalid characters", cfg.name))?;
        v.set_sensitive(true);
        headers.insert(AUTHORIZATION, v);
    }
    NativeUpstream::new(cfg, Arc::new(Ollama), headers, None)
}

/// The Ollama native codec.
pub struct Ollama;

impl Ollama {
    /// The `/api/chat` body, and the parameters that were left out.
    pub fn body(req: &ChatRequest) -> Result<(Map<String, Value>, Vec<String>), RequestError> {
        refuse_unmodelled(&req.messages, "Ollama")?;
        let mut dropped = Vec::new();
        let mut b = Map::new();
        b.insert("model".into(), json!(req.model));
        b.insert("messages".into(), Value::Array(messages(&req.messages)?));
        // Ollama has no tool_choice: `none` means offering no tools; forcing one cannot be
        // expressed.
        let offer = !req.tools.is_empty() && req.tool_choice != Some(ToolChoice::None);
        if offer {
            let defs: Vec<Value> = req
                .tools
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
            if matches!(
                req.tool_choice,
                Some(ToolChoice::Required | ToolChoice::Named(_))
            ) {
                dropped.push("tool_choice".to_string());
            }
        }
        if req.parallel_tool_calls == Some(false) {
            dropped.push("parallel_tool_calls".to_string());
        }
        match &req.response_format {
            None | Some(ResponseFormat::Text) => {}
            Some(ResponseFormat::JsonObject) => {
                b.insert("format".into(), json!("json"));
            }
            Some(ResponseFormat::JsonSchema { schema, .. }) => {
                b.insert("format".into(), schema.clone());
            }
        }
        let mut options = Map::new();
        if let Some(n) = req.max_tokens {
            options.insert("num_predict".into(), json!(n));
        }
        for (k, v) in [
            ("temperature", req.temperature),
            ("top_p", req.top_p),
            ("frequency_penalty", req.frequency_penalty),
            ("presence_penalty", req.presence_penalty),
        ] {
            if let Some(v) = v {
                options.insert(k.into(), json!(v));
            }
        }
        if let Some(k) = req.top_k {
            options.insert("top_k".into(), json!(k));
        }
        if let Some(s) = req.seed {
            options.insert("seed".into(), json!(s));
        }
        if !req.stop.is_empty() {
            options.insert("stop".into(), json!(req.stop));
        }
        if let Some(e) = req.reasoning_effort.as_deref() {
            b.insert("think".into(), json!(e != "none"));
        } else if req.thinking_budget.is_some() {
            b.insert("think".into(), json!(true));
        }
        if req.user.is_some() {
            dropped.push("user".to_string());
        }
        for (k, v) in &req.extra {
            if PASSTHROUGH.contains(&k.as_str()) {
                b.insert(k.clone(), v.clone());
            } else if k == "options" {
                // Native options a client sends win over the mapped ones.
                for (ok, ov) in v.as_object().into_iter().flatten() {
                    options.insert(ok.clone(), ov.clone());
                }
            } else if !(k == "n" && v.as_u64() == Some(1)) {
                dropped.push(k.clone());
            }
        }
        if !options.is_empty() {
            b.insert("options".into(), Value::Object(options));
        }
        b.insert("stream".into(), json!(req.stream));
        Ok((b, dropped))
    }
}

impl Codec for Ollama {
    fn encode(&self, req: &ChatRequest) -> Result<Encoded, RequestError> {
        let (b, dropped) = Self::body(req)?;
        // Ollama has no way to force a tool call.
        let refused = dropped
            .iter()
            .filter(|p| *p == "tool_choice")
            .map(|p| {
                Unhonoured::new(
                    p.clone(),
                    "`tool_choice` required or named: Ollama cannot force a tool call",
                )
            })
            .collect();
        Ok(Encoded {
            path: "/api/chat".to_string(),
            body: serde_json::to_vec(&Value::Object(b)).unwrap_or_default(),
            headers: Vec::new(),
            dropped,
            refused,
            ctx: DecodeCtx {
                model: req.model.clone(),
                json_tool: None,
            },
        })
    }

    fn decode(&self, body: &[u8], ctx: &DecodeCtx) -> Result<ChatResponse, DecodeError> {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| DecodeError::new(format!("Ollama answer is not JSON: {e}")))?;
        let mut ev = Vec::new();
        let mut s = OllamaStream::new(ctx.clone());
        s.on_object(&v, &mut ev)?;
        s.finish(&mut ev)?;
        Ok(ChatResponse::from_events(&ev))
    }

    fn stream_decoder(&self, ctx: &DecodeCtx) -> Box<dyn StreamDecoder> {
        Box::new(OllamaStream::new(ctx.clone()))
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

fn messages(msgs: &[Message]) -> Result<Vec<Value>, RequestError> {
    let mut out = Vec::with_capacity(msgs.len());
    for (i, m) in msgs.iter().enumerate() {
        let role = match m.role {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        };
        let mut v = json!({"role": role, "content": m.text()});
        let mut images = Vec::new();
        for (j, p) in m.content.iter().enumerate() {
            match p {
                Part::Image(Image::Base64 { data, .. }) => images.push(json!(data)),
                Part::Image(Image::Url(_)) => {
                    return Err(RequestError::new(
                        "Ollama takes inline images only: send a data: URL (base64)",
                        Some(&format!("messages[{i}].content[{j}].image_url")),
                    ))
                }
                Part::Text { .. } | Part::Other(_) => {}
            }
        }
        if !images.is_empty() {
            v["images"] = Value::Array(images);
        }
        let thinking: String = m.thinking.iter().map(|t| t.text.as_str()).collect();
        if !thinking.is_empty() {
            v["thinking"] = json!(thinking);
        }
        if !m.tool_calls.is_empty() {
            let mut calls = Vec::with_capacity(m.tool_calls.len());
            for c in &m.tool_calls {
                let args: Value = if c.arguments.trim().is_empty() {
                    json!({})
                } else {
                    serde_json::from_str(&c.arguments).map_err(|e| {
                        RequestError::new(
                            format!("tool call {} has arguments that are not JSON: {e}", c.id),
                            Some(&format!("messages[{i}].tool_calls")),
                        )
                    })?
                };
                calls.push(json!({"function": {"name": c.name, "arguments": args}}));
            }
            v["tool_calls"] = Value::Array(calls);
        }
        if m.role == Role::Tool {
            // The function this result answers, found by id in the earlier assistant turns.
            let name = m.tool_call_id.as_deref().and_then(|id| {
                msgs[..i]
                    .iter()
                    .rev()
                    .flat_map(|p| p.tool_calls.iter())
                    .find(|c| c.id == id)
                    .map(|c| c.name.clone())
            });
            if let Some(n) = name.or_else(|| m.name.clone()) {
                v["tool_name"] = json!(n);
            }
        }
        out.push(v);
    }
    Ok(out)
}

/// A fresh tool-call id (Ollama sends none).
fn call_id() -> String {
    format!("call_{:016x}", rand::random::<u64>())
}

/// Ollama NDJSON (one JSON object per line) -> canonical events. A non-stream answer is
/// the same object once, with `done: true`.
pub struct OllamaStream {
    buf: Vec<u8>,
    ctx: DecodeCtx,
    started: bool,
    tools: u32,
    ended: bool,
}

impl OllamaStream {
    pub fn new(ctx: DecodeCtx) -> Self {
        Self {
            buf: Vec::new(),
            ctx,
            started: false,
            tools: 0,
            ended: false,
        }
    }

    fn on_object(&mut self, v: &Value, out: &mut Vec<StreamEvent>) -> Result<(), DecodeError> {
        if let Some(e) = v.get("error") {
            let msg = e.as_str().map_or_else(|| e.to_string(), str::to_string);
            return Err(DecodeError::new(format!("Ollama error: {msg}")));
        }
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start {
                id: String::new(),
                model: v["model"].as_str().unwrap_or(&self.ctx.model).to_string(),
            });
        }
        let m = &v["message"];
        if let Some(t) = m["thinking"].as_str().filter(|t| !t.is_empty()) {
            out.push(StreamEvent::Thinking(t.to_string()));
        }
        if let Some(t) = m["content"].as_str().filter(|t| !t.is_empty()) {
            out.push(StreamEvent::Text(t.to_string()));
        }
        for c in m["tool_calls"].as_array().into_iter().flatten() {
            let f = &c["function"];
            let index = self.tools;
            self.tools += 1;
            let id = c["id"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map_or_else(call_id, str::to_string);
            out.push(StreamEvent::ToolCallStart {
                index,
                id,
                name: f["name"].as_str().unwrap_or_default().to_string(),
            });
            let args = match &f["arguments"] {
                Value::String(s) => s.clone(),
                Value::Null => "{}".to_string(),
                other => other.to_string(),
            };
            out.push(StreamEvent::ToolCallArgs { index, delta: args });
        }
        if v["done"].as_bool() == Some(true) {
            self.ended = true;
            let finish = match v["done_reason"].as_str() {
                Some("length") => FinishReason::Length,
                _ if self.tools > 0 => FinishReason::ToolCalls,
                _ => FinishReason::Stop,
            };
            out.push(StreamEvent::Finish(finish));
            let n = |k: &str| v[k].as_u64().unwrap_or(0);
            out.push(StreamEvent::Usage(Usage {
                input_tokens: n("prompt_eval_count"),
                output_tokens: n("eval_count"),
                ..Usage::default()
            }));
        }
        Ok(())
    }

    fn on_line(&mut self, line: &[u8], out: &mut Vec<StreamEvent>) -> Result<(), DecodeError> {
        let line = line.trim_ascii();
        if line.is_empty() {
            return Ok(());
        }
        let v: Value = serde_json::from_slice(line)
            .map_err(|e| DecodeError::new(format!("Ollama stream line is not JSON: {e}")))?;
        self.on_object(&v, out)
    }
}

impl StreamDecoder for OllamaStream {
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<StreamEvent>) -> Result<(), DecodeError> {
        // Lines complete within this chunk are parsed in place; only a tail is buffered.
        let mut rest = bytes;
        if !self.buf.is_empty() {
            let Some(nl) = memchr::memchr(b'\n', rest) else {
                self.buf.extend_from_slice(rest);
                return Ok(());
            };
            let mut line = std::mem::take(&mut self.buf);
            line.extend_from_slice(&rest[..nl]);
            rest = &rest[nl + 1..];
            let r = self.on_line(&line, out);
            line.clear();
            self.buf = line;
            r?;
        }
        while let Some(nl) = memchr::memchr(b'\n', rest) {
            self.on_line(&rest[..nl], out)?;
            rest = &rest[nl + 1..];
        }
        self.buf.extend_from_slice(rest);
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<StreamEvent>) -> Result<(), DecodeError> {
        let rest = std::mem::take(&mut self.buf);
        self.on_line(&rest, out)?;
        if !self.ended {
            return Err(DecodeError::new(
                "Ollama stream ended before its final (done) line",
            ));
        }
        Ok(())
    }
}

/// Ollama's `{"error": "..."}` in OpenAI's vocabulary; the status is kept.
pub fn map_error(status: StatusCode, body: &[u8]) -> MappedError {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let message = v["error"].as_str().map_or_else(
        || String::from_utf8_lossy(body).chars().take(500).collect(),
        str::to_string,
    );
    let code = if status == StatusCode::NOT_FOUND && message.contains("not found") {
        Some("model_not_found")
    } else if is_context_overflow(&message) {
        Some("context_length_exceeded")
    } else {
        None
    };
    MappedError {
        status,
        kind: openai_error_type(status),
        code,
        message,
    }
}

/// OpenAI embeddings body -> `/api/embed`.
pub fn encode_embeddings(body: &[u8]) -> Result<Encoded, RequestError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        RequestError::new(
            format!("We could not parse the JSON body of your request: {e}"),
            None,
        )
    })?;
    let model = v["model"].as_str().unwrap_or_default().to_string();
    let mut b = json!({"model": model, "input": texts(&v["input"])?});
    if let Some(d) = v["dimensions"].as_u64() {
        b["dimensions"] = json!(d);
    }
    for k in ["keep_alive", "truncate"] {
        if let Some(x) = v.get(k) {
            b[k] = x.clone();
        }
    }
    let dropped = if v.get("user").is_some() {
        vec!["user".to_string()]
    } else {
        Vec::new()
    };
    Ok(Encoded {
        path: "/api/embed".to_string(),
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

pub fn decode_embeddings(body: &[u8], ctx: &DecodeCtx) -> Result<Vec<u8>, DecodeError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| DecodeError::new(format!("Ollama embed answer is not JSON: {e}")))?;
    let vectors = v["embeddings"]
        .as_array()
        .ok_or_else(|| DecodeError::new("Ollama embed answer has no embeddings"))?;
    let model = v["model"].as_str().unwrap_or(&ctx.model);
    Ok(embeddings_list(
        vectors,
        model,
        v["prompt_eval_count"].as_u64().unwrap_or(0),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::canonical::openai::decode_request;

    fn encode(openai: &Value) -> (Value, Vec<String>) {
        let req = decode_request(openai.to_string().as_bytes()).unwrap();
        let e = Ollama.encode(&req).unwrap();
        assert_eq!(e.path, "/api/chat");
        (serde_json::from_slice(&e.body).unwrap(), e.dropped)
    }

    #[test]
    fn encodes_options_images_tools_and_format() {
        let (b, dropped) = encode(&json!({
            "model": "llama3.2", "max_tokens": 9, "temperature": 0.5, "top_p": 0.9,
            "top_k": 4, "stop": "END", "seed": 7, "reasoning_effort": "high",
            "keep_alive": "5m", "tool_choice": "required",
            "response_format": {"type": "json_object"},
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "see"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
                {"role": "assistant", "content": "", "tool_calls": [{"id": "c1",
                    "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "42"}],
            "tools": [{"type": "function", "function": {"name": "f",
                "parameters": {"type": "object"}}}],
        }));
        assert_eq!(b["stream"], false, "stream false must be explicit");
        assert_eq!(
            b["options"],
            json!({"num_predict": 9, "temperature": 0.5, "top_p": 0.9, "top_k": 4,
                   "seed": 7, "stop": ["END"]})
        );
        assert_eq!(b["format"], "json");
        assert_eq!(b["think"], true);
        assert_eq!(b["keep_alive"], "5m");
        let m = &b["messages"];
        assert_eq!(m[1]["content"], "see");
        assert_eq!(m[1]["images"], json!(["AAAA"]));
        assert_eq!(
            m[2]["tool_calls"],
            json!([{"function": {"name": "f", "arguments": {"a": 1}}}])
        );
        assert_eq!(
            m[3],
            json!({"role": "tool", "content": "42", "tool_name": "f"})
        );
        assert_eq!(b["tools"][0]["function"]["name"], "f");
        assert_eq!(dropped, vec!["tool_choice".to_string()]);
        let (b, _) = encode(&json!({"model": "m", "messages": [], "response_format":
            {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
            "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "none"}));
        assert_eq!(b["format"], json!({"type": "object"}));
        assert!(b.get("tools").is_none(), "tool_choice none offers no tools");
        let req = decode_request(
            br#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://x/y.png"}}]}]}"#,
        )
        .unwrap();
        let e = Ollama.encode(&req).err().unwrap();
        assert_eq!(e.param.as_deref(), Some("messages[0].content[0].image_url"));
    }

    pub const STREAM: &str = concat!(
        "{\"model\":\"qwen3\",\"created_at\":\"t\",\"message\":{\"role\":\"assistant\",\"content\":\"\",\"thinking\":\"Let me \"},\"done\":false}\n",
        "{\"model\":\"qwen3\",\"created_at\":\"t\",\"message\":{\"role\":\"assistant\",\"content\":\"\",\"thinking\":\"think.\"},\"done\":false}\n",
        "{\"model\":\"qwen3\",\"created_at\":\"t\",\"message\":{\"role\":\"assistant\",\"content\":\"Hel\"},\"done\":false}\n",
        "{\"model\":\"qwen3\",\"created_at\":\"t\",\"message\":{\"role\":\"assistant\",\"content\":\"lo\"},\"done\":false}\n",
        "{\"model\":\"qwen3\",\"created_at\":\"t\",\"message\":{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"function\":{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\"}}},{\"function\":{\"name\":\"get_time\",\"arguments\":{}}}]},\"done\":false}\n",
        "{\"model\":\"qwen3\",\"created_at\":\"t\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done_reason\":\"stop\",\"done\":true,\"total_duration\":1,\"prompt_eval_count\":26,\"eval_count\":12}\n",
    );

    #[test]
    fn ndjson_at_any_split() {
        for split in 1..80 {
            let mut d = OllamaStream::new(DecodeCtx::default());
            let mut ev = Vec::new();
            for c in STREAM.as_bytes().chunks(split) {
                d.feed(c, &mut ev).unwrap();
            }
            d.finish(&mut ev).unwrap();
            let r = ChatResponse::from_events(&ev);
            assert_eq!(r.model, "qwen3");
            assert_eq!(r.text.as_deref(), Some("Hello"), "split {split}");
            assert_eq!(r.thinking[0].text, "Let me think.");
            assert_eq!(r.tool_calls.len(), 2);
            assert_eq!(r.tool_calls[0].arguments, "{\"city\":\"Paris\"}");
            assert_eq!(r.tool_calls[1].name, "get_time");
            assert_ne!(r.tool_calls[0].id, r.tool_calls[1].id);
            assert!(r.tool_calls[0].id.starts_with("call_"));
            assert_eq!(r.finish, FinishReason::ToolCalls);
            let u = r.usage.unwrap();
            assert_eq!((u.input_tokens, u.output_tokens), (26, 12));
        }
    }

    #[test]
    fn truncated_stream_and_error_lines_fail() {
        let mut d = OllamaStream::new(DecodeCtx::default());
        let mut ev = Vec::new();
        d.feed(STREAM.lines().next().unwrap().as_bytes(), &mut ev)
            .unwrap();
        assert!(d.finish(&mut ev).is_err());
        let mut d = OllamaStream::new(DecodeCtx::default());
        let e = d
            .feed(b"{\"error\":\"model runner crashed\"}\n", &mut ev)
            .unwrap_err();
        assert!(e.message.contains("model runner crashed"));
    }

    #[test]
    fn json_answer_with_length() {
        let body = br#"{"model":"llama3.2","message":{"role":"assistant","content":"Hi"},
            "done":true,"done_reason":"length","prompt_eval_count":3,"eval_count":4}"#;
        let r = Ollama.decode(body, &DecodeCtx::default()).unwrap();
        assert_eq!(r.text.as_deref(), Some("Hi"));
        assert_eq!(r.finish, FinishReason::Length);
        assert_eq!(r.usage.unwrap().output_tokens, 4);
    }

    #[test]
    fn errors_and_embeddings() {
        let m = map_error(
            StatusCode::NOT_FOUND,
            br#"{"error":"model 'nope' not found"}"#,
        );
        assert_eq!(m.status, StatusCode::NOT_FOUND);
        assert_eq!(m.message, "model 'nope' not found");
        assert_eq!(m.code, Some("model_not_found"));
        let e = encode_embeddings(br#"{"model":"all-minilm","input":"hi"}"#).unwrap();
        assert_eq!(e.path, "/api/embed");
        let b: Value = serde_json::from_slice(&e.body).unwrap();
        assert_eq!(b, json!({"model": "all-minilm", "input": ["hi"]}));
        let out = decode_embeddings(
            br#"{"model":"all-minilm","embeddings":[[0.5,0.25]],"prompt_eval_count":1}"#,
            &e.ctx,
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["data"][0]["embedding"], json!([0.5, 0.25]));
        assert_eq!(v["usage"]["total_tokens"], 1);
    }

    /// Mangled streams (bytes flipped, cut, newlines and quotes thrown in) fed at random
    /// splits: the decoder may refuse them, but never panics.
    #[test]
    fn mangled_streams_never_panic() {
        crate::providers::native::feed_mangled(STREAM.as_bytes(), || {
            OllamaStream::new(DecodeCtx::default())
        });
    }
}
