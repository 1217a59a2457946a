//! Google Gemini (AI Studio `generateContent`): canonical request -> contents/parts, answers
//! and `streamGenerateContent?alt=sse` chunks back. Vertex AI speaks the same body at other
//! paths with OAuth (`vertex.rs`); both share this codec.
//!
//! Gemini has no tool-call ids, so answers get stable generated ones and a tool result finds
//! its function name from the assistant turn that made the call. Thought signatures ride on
//! the part after the thinking (text or the first function call); they come back as
//! signed thinking blocks and are put back on the same kind of part.

mod schema;
mod stream;
pub mod vertex;

pub use stream::{finish_reason, usage, GeminiStream};

use super::native::{
    is_context_overflow, leading_system, openai_error_type, push_turn, system_context, turns_json,
    Codec, DecodeCtx, DecodeError, Encoded, MappedError, NativeUpstream, StreamDecoder,
};
use crate::canonical::openai::RequestError;
use crate::canonical::{
    ChatRequest, ChatResponse, Image, Message, Part, ResponseFormat, Role, ToolChoice,
};
use crate::config::ProviderConfig;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// Request fields Gemini takes as they are, when a client sends them (either spelling).
const PASSTHROUGH: &[(&str, &str)] = &[
    ("safetySettings", "safetySettings"),
    ("safety_settings", "safetySettings"),
    ("cachedContent", "cachedContent"),
    ("cached_content", "cachedContent"),
    ("labels", "labels"),
];

pub fn upstream(cfg: &ProviderConfig) -> Result<NativeUpstream, String> {
    let mut headers = HeaderMap::new();
    if let Some(key) = &cfg.api_key {
        let mut v = HeaderValue::from_str(key.expose())
            .map_err(|_| format!("provider {}: api_key has invalid characters", cfg.name))?;
        v.set_sensitive(true);
        headers.insert("x-goog-api-key", v);
    }
    NativeUpstream::new(cfg, Arc::new(Gemini::ai_studio()), headers, None)
}

/// Google's documented stand-in for a missing thought signature on a function call.
const BYPASS_SIGNATURE: &str = "skip_thought_signature_validator";

/// A built body, the parameters left out, and what the decoder needs.
pub type BodyParts = (Map<String, Value>, Vec<String>, DecodeCtx);

/// The `generateContent` codec. `prefix` is the path up to the model name.
pub struct Gemini {
    pub prefix: String,
}

impl Gemini {
    /// Google AI Studio: `/v1beta/models/{model}:generateContent`.
    pub fn ai_studio() -> Self {
        Self {
            prefix: "/v1beta/models/".to_string(),
        }
    }

    /// The path of `op` (`generateContent`, ...) for a model.
    pub fn path(&self, model: &str, op: &str) -> String {
        format!(
            "{}{}:{op}",
            self.prefix,
            crate::providers::url::segment_keep_at(model)
        )
    }

    /// The `generateContent` body (also sent to Vertex).
    pub fn body(&self, req: &ChatRequest) -> Result<BodyParts, RequestError> {
        let mut dropped = Vec::new();
        let ctx = DecodeCtx {
            model: req.model.clone(),
            json_tool: None,
        };
        let mut b = Map::new();
        let unsigned_calls_need_bypass = req.model.contains("gemini-3");
        b.insert(
            "contents".into(),
            Value::Array(contents(&req.messages, unsigned_calls_need_bypass)?),
        );
        let system: Vec<Value> = req.messages[..leading_system(&req.messages)]
            .iter()
            .flat_map(|m| &m.content)
            .filter_map(|p| match p {
                Part::Text { text, .. } if !text.is_empty() => Some(json!({"text": text})),
                _ => None,
            })
            .collect();
        if !system.is_empty() {
            b.insert("systemInstruction".into(), json!({"parts": system}));
        }
        if !req.tools.is_empty() {
            let decls: Vec<Value> = req
                .tools
                .iter()
                .map(|t| {
                    let mut d = json!({"name": t.name,
                        "parametersJsonSchema": schema::clean(&t.parameters)});
                    if let Some(desc) = &t.description {
                        d["description"] = json!(desc);
                    }
                    d
                })
                .collect();
            b.insert("tools".into(), json!([{"functionDeclarations": decls}]));
            if let Some(choice) = &req.tool_choice {
                let fcc = match choice {
                    ToolChoice::None => json!({"mode": "NONE"}),
                    ToolChoice::Auto => json!({"mode": "AUTO"}),
                    ToolChoice::Required => json!({"mode": "ANY"}),
                    ToolChoice::Named(n) => json!({"mode": "ANY", "allowedFunctionNames": [n]}),
                };
                b.insert("toolConfig".into(), json!({"functionCallingConfig": fcc}));
            }
        }
        if req.parallel_tool_calls == Some(false) && !req.tools.is_empty() {
            dropped.push("parallel_tool_calls".to_string());
        }
        let g = generation_config(req, &mut dropped);
        if !g.is_empty() {
            b.insert("generationConfig".into(), Value::Object(g));
        }
        for (k, v) in &req.extra {
            if let Some((_, to)) = PASSTHROUGH.iter().find(|(from, _)| from == k) {
                b.insert((*to).to_string(), v.clone());
            } else if !(choices_and_logprobs(req, k) || k == "n" && v.as_u64() == Some(1)) {
                dropped.push(k.clone());
            }
        }
        if req.user.is_some() {
            dropped.push("user".to_string());
        }
        Ok((b, dropped, ctx))
    }

    /// `batchEmbedContents` for an OpenAI embeddings body.
    pub fn embeddings(&self, body: &[u8]) -> Result<Encoded, RequestError> {
        let v: Value = serde_json::from_slice(body).map_err(|e| {
            RequestError::new(
                format!("We could not parse the JSON body of your request: {e}"),
                None,
            )
        })?;
        let model = v["model"]
            .as_str()
            .ok_or_else(|| RequestError::new("model is required", Some("model")))?;
        let inputs: Vec<&str> = match &v["input"] {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) if a.iter().all(Value::is_string) && !a.is_empty() => {
                a.iter().filter_map(Value::as_str).collect()
            }
            _ => {
                return Err(RequestError::new(
                    "input must be a string or a non-empty array of strings (token arrays are not supported by Gemini)",
                    Some("input"),
                ))
            }
        };
        let dims = v["dimensions"].as_u64();
        let requests: Vec<Value> = inputs
            .iter()
            .map(|t| {
                let mut r = json!({"model": format!("models/{model}"),
                    "content": {"parts": [{"text": t}]}});
                if let Some(d) = dims {
                    r["outputDimensionality"] = json!(d);
                }
                r
            })
            .collect();
        let mut dropped = Vec::new();
        if v["encoding_format"].as_str().is_some_and(|f| f != "float") {
            dropped.push("encoding_format".to_string());
        }
        // Gemini reports no usage for embeddings: a rough estimate (4 bytes a token).
        let estimate: usize = inputs.iter().map(|t| t.len().div_ceil(4)).sum();
        Ok(Encoded {
            path: self.path(model, "batchEmbedContents"),
            body: serde_json::to_vec(&json!({ "requests": requests })).unwrap_or_default(),
            headers: Vec::new(),
            dropped,
            refused: Vec::new(),
            ctx: DecodeCtx {
                model: model.to_string(),
                // No tool is involved in embeddings; the slot carries the usage estimate.
                json_tool: Some(estimate.to_string()),
            },
        })
    }
}

impl Codec for Gemini {
    fn encode(&self, req: &ChatRequest) -> Result<Encoded, RequestError> {
        let (b, dropped, ctx) = self.body(req)?;
        let path = if req.stream {
            self.path(&req.model, "streamGenerateContent?alt=sse")
        } else {
            self.path(&req.model, "generateContent")
        };
        Ok(Encoded {
            path,
            body: serde_json::to_vec(&Value::Object(b)).unwrap_or_default(),
            headers: Vec::new(),
            dropped,
            refused: Vec::new(),
            ctx,
        })
    }

    fn signature_family(&self, _model: &str) -> Option<&'static str> {
        Some("gemini")
    }

    fn decode(&self, body: &[u8], ctx: &DecodeCtx) -> Result<ChatResponse, DecodeError> {
        decode_response(body, ctx)
    }

    fn stream_decoder(&self, ctx: &DecodeCtx) -> Box<dyn StreamDecoder> {
        Box::new(GeminiStream::new(ctx.clone()))
    }

    fn error(&self, status: StatusCode, body: &[u8]) -> MappedError {
        map_error(status, body)
    }

    fn encode_embeddings(&self, body: &[u8]) -> Option<Result<Encoded, RequestError>> {
        Some(self.embeddings(body))
    }

    fn decode_embeddings(&self, body: &[u8], ctx: &DecodeCtx) -> Result<Vec<u8>, DecodeError> {
        decode_embeddings(body, ctx)
    }
}

fn generation_config(req: &ChatRequest, dropped: &mut Vec<String>) -> Map<String, Value> {
    let mut g = Map::new();
    if let Some(n) = req.max_tokens {
        g.insert("maxOutputTokens".into(), json!(n));
    }
    if let Some(t) = req.temperature {
        g.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.top_p {
        g.insert("topP".into(), json!(p));
    }
    if let Some(k) = req.top_k {
        g.insert("topK".into(), json!(k));
    }
    if !req.stop.is_empty() {
        g.insert("stopSequences".into(), json!(req.stop));
    }
    if let Some(s) = req.seed {
        g.insert("seed".into(), json!(s));
    }
    if let Some(p) = req.presence_penalty {
        g.insert("presencePenalty".into(), json!(p));
    }
    if let Some(p) = req.frequency_penalty {
        g.insert("frequencyPenalty".into(), json!(p));
    }
    match &req.response_format {
        Some(ResponseFormat::JsonObject) => {
            g.insert("responseMimeType".into(), json!("application/json"));
        }
        Some(ResponseFormat::JsonSchema { schema, .. }) => {
            g.insert("responseMimeType".into(), json!("application/json"));
            g.insert("responseJsonSchema".into(), schema::clean(schema));
        }
        Some(ResponseFormat::Text) | None => {}
    }
    if let Some(t) = thinking_config(req, dropped) {
        g.insert("thinkingConfig".into(), t);
    }
    // Several choices and log probabilities, in whole answers (a stream carries one choice).
    for (from, to) in [
        ("n", "candidateCount"),
        ("logprobs", "responseLogprobs"),
        ("top_logprobs", "logprobs"),
    ] {
        if let Some(v) = req
            .extra
            .get(from)
            .filter(|_| choices_and_logprobs(req, from))
        {
            g.insert(to.into(), v.clone());
        }
    }
    g
}

/// `n` (→ `candidateCount`), `logprobs` (→ `responseLogprobs`) and `top_logprobs` (→
/// `logprobs`) map for JSON answers; streamed, they are left out (and refused by default).
fn choices_and_logprobs(req: &ChatRequest, key: &str) -> bool {
    !req.stream
        && match key {
            "n" => req
                .extra
                .get("n")
                .and_then(Value::as_u64)
                .is_some_and(|n| n > 1),
            "logprobs" => req.extra.get("logprobs").and_then(Value::as_bool).is_some(),
            "top_logprobs" => req
                .extra
                .get("top_logprobs")
                .and_then(Value::as_u64)
                .is_some(),
            _ => false,
        }
}

/// `thinkingConfig` from an explicit budget or `reasoning_effort`. Gemini 3 takes a level
/// (low / high) rather than a budget.
fn thinking_config(req: &ChatRequest, dropped: &mut Vec<String>) -> Option<Value> {
    if let Some(budget) = req.thinking_budget {
        return Some(json!({"thinkingBudget": budget, "includeThoughts": budget > 0}));
    }
    let effort = req.reasoning_effort.as_deref()?;
    if req.model.contains("gemini-3") {
        let level = match effort {
            "none" | "minimal" | "low" => "low",
            "medium" | "high" => "high",
            _ => {
                dropped.push("reasoning_effort".to_string());
                return None;
            }
        };
        return Some(json!({"thinkingLevel": level, "includeThoughts": true}));
    }
    let budget: u64 = match effort {
        "none" => 0,
        "minimal" => 512,
        "low" => 1024,
        "medium" => 8192,
        "high" => 24576,
        _ => {
            dropped.push("reasoning_effort".to_string());
            return None;
        }
    };
    Some(json!({"thinkingBudget": budget, "includeThoughts": budget > 0}))
}

/// `bypass`: the model refuses function calls in history without a thought signature
/// (Gemini 3); calls that come back unsigned (history from another provider, or a client that
/// dropped `thinking_blocks`) get Google's documented placeholder signature instead.
fn contents(msgs: &[Message], bypass: bool) -> Result<Vec<Value>, RequestError> {
    let mut out = Vec::new();
    let lead = leading_system(msgs);
    for (i, m) in msgs.iter().enumerate().skip(lead) {
        let (role, parts) = match m.role {
            // Later system messages keep their place, as system context in a user turn.
            Role::System => ("user", content_parts(&system_context(&m.content))?),
            Role::User => ("user", content_parts(&m.content)?),
            Role::Tool => {
                // Images the tool returned follow its response in the same turn.
                let mut parts = vec![function_response(msgs, i, m)?];
                let images: Vec<Part> = m
                    .content
                    .iter()
                    .filter(|p| matches!(p, Part::Image(_)))
                    .cloned()
                    .collect();
                parts.extend(content_parts(&images)?);
                ("user", parts)
            }
            Role::Assistant => ("model", model_parts(m, bypass)?),
        };
        push_turn(&mut out, role, parts);
    }
    Ok(turns_json(out, "parts"))
}

fn content_parts(parts: &[Part]) -> Result<Vec<Value>, RequestError> {
    let mut out = Vec::with_capacity(parts.len());
    for p in parts {
        out.push(match p {
            Part::Text { text, .. } if text.is_empty() => continue,
            Part::Text { text, .. } => json!({ "text": text }),
            Part::Image(Image::Base64 { media_type, data }) => {
                json!({"inlineData": {"mimeType": media_type, "data": data}})
            }
            Part::Image(Image::Url(u)) => {
                json!({"fileData": {"mimeType": mime_from_url(u), "fileUri": u}})
            }
            Part::Other(v) => other_part(v)?,
        });
    }
    Ok(out)
}

/// OpenAI `file` (inline data) and `input_audio` parts as inline data; Gemini reads PDFs,
/// text and audio.
fn other_part(v: &Value) -> Result<Value, RequestError> {
    let kind = v["type"].as_str().unwrap_or_default();
    match kind {
        "file" => {
            if let Some(Image::Base64 { media_type, data }) =
                v["file"]["file_data"].as_str().map(Image::from_url)
            {
                return Ok(json!({"inlineData": {"mimeType": media_type, "data": data}}));
            }
        }
        "input_audio" => {
            let a = &v["input_audio"];
            if let (Some(data), Some(format)) = (a["data"].as_str(), a["format"].as_str()) {
                return Ok(
                    json!({"inlineData": {"mimeType": format!("audio/{format}"), "data": data}}),
                );
            }
        }
        _ => {}
    }
    Err(RequestError::new(
        format!(
            "content part type '{kind}' cannot be sent to Gemini (text, image_url, input_audio and inline file parts can)"
        ),
        Some("messages"),
    ))
}

/// The media type of a file URL, from its extension (Gemini needs one for `fileData`).
pub fn mime_from_url(url: &str) -> &'static str {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let ext = path
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        "mp3" => "audio/mp3",
        "wav" => "audio/wav",
        "mp4" => "video/mp4",
        "txt" => "text/plain",
        _ => "image/jpeg",
    }
}

/// An assistant turn: thoughts, text, function calls; signatures go back on the first
/// function call parts in order, or on the last text part when there are no calls.
fn model_parts(m: &Message, bypass: bool) -> Result<Vec<Value>, RequestError> {
    let mut parts = Vec::new();
    for t in &m.thinking {
        if !t.text.is_empty() && t.redacted.is_none() {
            parts.push(json!({"text": t.text, "thought": true}));
        }
    }
    parts.extend(content_parts(&m.content)?);
    let first_call = parts.len();
    for c in &m.tool_calls {
        let args: Value = if c.arguments.trim().is_empty() {
            json!({})
        } else {
            serde_json::from_str(&c.arguments).map_err(|e| {
                RequestError::new(
                    format!("tool call {} has arguments that are not JSON: {e}", c.id),
                    Some("messages"),
                )
            })?
        };
        let mut call = json!({"name": c.name, "args": args});
        if !c.id.is_empty() {
            call["id"] = json!(c.id);
        }
        parts.push(json!({"functionCall": call}));
    }
    let mut sigs = m.thinking.iter().filter_map(|t| t.signature.as_deref());
    if m.tool_calls.is_empty() {
        // The last part: the last text, or the last thought when there is no text.
        if let (Some(sig), Some(p)) = (sigs.next(), parts.last_mut()) {
            p["thoughtSignature"] = json!(sig);
        }
    } else {
        let mut signed = false;
        for (p, sig) in parts[first_call..].iter_mut().zip(sigs) {
            p["thoughtSignature"] = json!(sig);
            signed = true;
        }
        if bypass && !signed {
            if let Some(p) = parts.get_mut(first_call) {
                p["thoughtSignature"] = json!(BYPASS_SIGNATURE);
            }
        }
    }
    Ok(parts)
}

/// A tool result: Gemini wants the function's name, found from the call it answers. The call
/// and its result both carry the call's id (Gemini's own, which Gemini 3 and Vertex hand out
/// and expect back, or any other: the recorded exchanges show both APIs taking ids they did
/// not make), so parallel calls of one function stay matched to their results.
fn function_response(msgs: &[Message], i: usize, m: &Message) -> Result<Value, RequestError> {
    let id = m.tool_call_id.as_deref().unwrap_or_default();
    let name = msgs[..i]
        .iter()
        .rev()
        .filter(|p| p.role == Role::Assistant)
        .flat_map(|p| &p.tool_calls)
        .find(|c| c.id == id)
        .map(|c| c.name.clone())
        .or_else(|| m.name.clone())
        .ok_or_else(|| {
            RequestError::new(
                format!("tool message answers tool_call_id {id:?}, which no earlier assistant message made (Gemini needs the function name)"),
                Some(&format!("messages[{i}].tool_call_id")),
            )
        })?;
    let text = m.text();
    let response = match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(o)) => Value::Object(o),
        Ok(other) if !text.trim().is_empty() => json!({ "output": other }),
        _ => json!({ "output": text }),
    };
    let mut fr = json!({"name": name, "response": response});
    if !id.is_empty() {
        fr["id"] = json!(id);
    }
    Ok(json!({"functionResponse": fr}))
}

/// A whole `generateContent` answer (or the array `streamGenerateContent` sends without SSE).
pub fn decode_response(body: &[u8], ctx: &DecodeCtx) -> Result<ChatResponse, DecodeError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| DecodeError::new(format!("Gemini answer is not JSON: {e}")))?;
    let mut s = stream::Chunks::new(ctx.clone());
    let mut events = Vec::new();
    match &v {
        Value::Array(chunks) => {
            for c in chunks {
                s.on_chunk(c, &mut events)?;
            }
        }
        one => s.on_chunk(one, &mut events)?,
    }
    s.finish(&mut events);
    let mut r = ChatResponse::from_events(&events);
    if r.model.is_empty() {
        r.model.clone_from(&ctx.model);
    }
    if let Value::Object(o) = &v {
        let cands = o.get("candidates").and_then(Value::as_array);
        r.logprobs = cands
            .and_then(|c| c.first())
            .and_then(|c| c.get("logprobsResult"))
            .map(logprobs);
        // `candidateCount` > 1: the other candidates are the other choices.
        for cand in cands.into_iter().flatten().skip(1) {
            let mut one = o.clone();
            one.insert("candidates".into(), json!([cand]));
            let mut s = stream::Chunks::new(ctx.clone());
            let mut events = Vec::new();
            s.on_chunk(&Value::Object(one), &mut events)?;
            s.finish(&mut events);
            let mut choice = ChatResponse::from_events(&events);
            choice.usage = None;
            choice.logprobs = cand.get("logprobsResult").map(logprobs);
            r.choices.push(choice);
        }
    }
    Ok(r)
}

/// Gemini's `logprobsResult` as OpenAI's `choices[].logprobs`: per chosen token its log
/// probability and the top candidates at that position.
fn logprobs(l: &Value) -> Value {
    let entry = |c: &Value| {
        let token = c["token"].as_str().unwrap_or_default();
        json!({"token": token, "logprob": c["logProbability"].as_f64().unwrap_or(0.0),
               "bytes": token.as_bytes()})
    };
    let tops = l["topCandidates"].as_array();
    let content: Vec<Value> = l["chosenCandidates"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| {
            let mut e = entry(c);
            e["top_logprobs"] = Value::Array(
                tops.and_then(|t| t.get(i))
                    .and_then(|t| t["candidates"].as_array())
                    .into_iter()
                    .flatten()
                    .map(entry)
                    .collect(),
            );
            e
        })
        .collect();
    json!({"content": content, "refusal": null})
}

/// `batchEmbedContents` answer -> OpenAI embeddings list.
pub fn decode_embeddings(body: &[u8], ctx: &DecodeCtx) -> Result<Vec<u8>, DecodeError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| DecodeError::new(format!("Gemini embeddings answer is not JSON: {e}")))?;
    let list = v["embeddings"]
        .as_array()
        .ok_or_else(|| DecodeError::new("Gemini embeddings answer has no `embeddings`"))?;
    let data: Vec<Value> = list
        .iter()
        .enumerate()
        .map(|(i, e)| json!({"object": "embedding", "index": i, "embedding": e["values"]}))
        .collect();
    let tokens: u64 = ctx
        .json_tool
        .as_deref()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let out = json!({"object": "list", "data": data, "model": ctx.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}});
    Ok(serde_json::to_vec(&out).unwrap_or_default())
}

/// Google's error body (`{"error":{"code","message","status"}}`, sometimes inside an array)
/// in OpenAI's vocabulary; the HTTP status is kept.
pub fn map_error(status: StatusCode, body: &[u8]) -> MappedError {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let e = match &v {
        Value::Array(a) => a.first().map_or(&Value::Null, |x| &x["error"]),
        o => &o["error"],
    };
    let message = e["message"].as_str().map_or_else(
        || String::from_utf8_lossy(body).chars().take(500).collect(),
        str::to_string,
    );
    let code = if is_context_overflow(&message) {
        Some("context_length_exceeded")
    } else {
        match e["status"].as_str() {
            Some("RESOURCE_EXHAUSTED") => Some("rate_limit_exceeded"),
            _ => None,
        }
    };
    MappedError {
        status,
        kind: openai_error_type(status),
        message,
        code,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::native::Codec;

    fn encode(body: Value) -> (Value, Vec<String>) {
        let req = crate::canonical::openai::decode_request(body.to_string().as_bytes()).unwrap();
        let e = Gemini::ai_studio().encode(&req).unwrap();
        (serde_json::from_slice(&e.body).unwrap(), e.dropped)
    }

    #[test]
    fn several_choices_and_logprobs_map_to_candidates() {
        let (b, dropped) = encode(
            json!({"model": "gemini-2.5-flash", "n": 2, "logprobs": true,
            "top_logprobs": 2, "messages": [{"role": "user", "content": "hi"}]}),
        );
        assert_eq!(
            (
                &b["generationConfig"]["candidateCount"],
                &b["generationConfig"]["responseLogprobs"],
                &b["generationConfig"]["logprobs"]
            ),
            (&json!(2), &json!(true), &json!(2)),
            "{b}"
        );
        assert!(dropped.is_empty(), "{dropped:?}");
        // Streamed answers carry one choice and no log probabilities: left out (refused
        // by default).
        let (b, dropped) = encode(json!({"model": "gemini-2.5-flash", "n": 2, "stream": true,
            "logprobs": true, "messages": [{"role": "user", "content": "hi"}]}));
        assert!(b["generationConfig"].get("candidateCount").is_none(), "{b}");
        assert_eq!(dropped, ["logprobs", "n"]);

        // The answer: two candidates, the first with its log probabilities.
        let answer = json!({"responseId": "r1", "modelVersion": "gemini-2.5-flash",
            "candidates": [
                {"content": {"role": "model", "parts": [{"text": "Hi"}]}, "finishReason": "STOP",
                 "logprobsResult": {
                    "topCandidates": [{"candidates": [
                        {"token": "Hi", "logProbability": -0.1},
                        {"token": "Hé", "logProbability": -2.5}]}],
                    "chosenCandidates": [{"token": "Hi", "logProbability": -0.1}]}},
                {"content": {"role": "model", "parts": [{"text": "Hello"}]}, "finishReason": "MAX_TOKENS",
                 "index": 1}],
            "usageMetadata": {"promptTokenCount": 2, "candidatesTokenCount": 3}});
        let ctx = DecodeCtx {
            model: "gemini-2.5-flash".into(),
            json_tool: None,
        };
        let r = decode_response(answer.to_string().as_bytes(), &ctx).unwrap();
        let v = crate::canonical::openai::encode_response(&r, 0);
        let choices = v["choices"].as_array().unwrap();
        assert_eq!(choices.len(), 2, "{v}");
        assert_eq!(choices[0]["message"]["content"], "Hi");
        assert_eq!(choices[1]["index"], 1);
        assert_eq!(choices[1]["message"]["content"], "Hello");
        assert_eq!(choices[1]["finish_reason"], "length");
        let lp = &choices[0]["logprobs"]["content"][0];
        assert_eq!(lp["token"], "Hi");
        assert_eq!(lp["logprob"], -0.1);
        assert_eq!(lp["bytes"], json!([72, 105]));
        assert_eq!(lp["top_logprobs"][1]["token"], "Hé");
        assert_eq!(lp["top_logprobs"][1]["bytes"], json!([72, 195, 169]));
        assert_eq!(v["usage"]["completion_tokens"], 3);
    }
}
