//! AWS Bedrock: Converse / ConverseStream for chat, InvokeModel for Titan and Cohere
//! embeddings, SigV4 signing, and the binary event-stream framing.
//!
//! Model ids go in the URL percent-encoded (inference-profile ids like
//! `us.anthropic.claude-...-v1:0` and ARNs with `:` and `/`), as the AWS SDKs send them.
//! `json_schema` output is obtained with a forced tool whose input becomes the answer text.

mod embeddings;
pub mod request;
pub mod sigv4;
pub mod stream;

use super::native::{
    is_context_overflow, Codec, DecodeCtx, DecodeError, Encoded, MappedError, NativeUpstream,
    StreamDecoder,
};
use crate::canonical::openai::RequestError;
use crate::canonical::{ChatRequest, ChatResponse, FinishReason, Thinking, ToolCall, Usage};
use crate::config::ProviderConfig;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::Value;
use std::sync::Arc;

pub use sigv4::SigV4;
pub use stream::ConverseStream;

pub(crate) const JSON_TOOL: &str = "json_response";

/// `/model/{modelId}/{action}` with the id escaped as AWS expects.
pub fn model_path(model: &str, action: &str) -> String {
    format!("/model/{}/{action}", crate::providers::url::segment(model))
}

/// Credentials, in order: SigV4 keys in the config, a Bedrock API key in the config
/// (`api_key`, sent as a bearer token), SigV4 keys in the environment, then
/// `AWS_BEARER_TOKEN_BEDROCK`.
pub fn upstream(cfg: &ProviderConfig) -> Result<NativeUpstream, String> {
    let region = cfg
        .native
        .region
        .clone()
        .or_else(|| std::env::var("AWS_REGION").ok())
        .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
        .unwrap_or_else(|| "us-east-1".to_string());
    let codec = Arc::new(Bedrock {
        default_max_tokens: cfg.native.default_max_tokens,
    });
    let bearer = |key: &str| {
        let mut v = HeaderValue::from_str(&format!("Bearer {}", key.trim())).map_err(|_| {
            format!(
                "provider {}: the Bedrock API key has invalid characters",
                cfg.name
            )
        })?;
        v.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, v);
        NativeUpstream::new(cfg, codec.clone(), headers, None)
    };
    if cfg.native.aws_access_key_id.is_none() {
        if let Some(key) = &cfg.api_key {
            return bearer(key.expose());
        }
    }
    match SigV4::from_config(cfg, &region) {
        Ok(auth) => NativeUpstream::new(cfg, codec.clone(), HeaderMap::new(), Some(Arc::new(auth))),
        Err(e) => match std::env::var("AWS_BEARER_TOKEN_BEDROCK") {
            Ok(key) if !key.trim().is_empty() => bearer(&key),
            _ => Err(format!(
                "{e}, or a Bedrock API key (api_key, or AWS_BEARER_TOKEN_BEDROCK)"
            )),
        },
    }
}

/// The Converse codec.
pub struct Bedrock {
    /// Used where a model needs one (Anthropic models with thinking); Converse itself
    /// does not require `maxTokens`.
    pub default_max_tokens: u64,
}

impl Codec for Bedrock {
    fn encode(&self, req: &ChatRequest) -> Result<Encoded, RequestError> {
        let request::ConverseBody {
            body,
            dropped,
            refused,
            json_tool,
        } = request::body(req, self.default_max_tokens)?;
        let action = if req.stream {
            "converse-stream"
        } else {
            "converse"
        };
        Ok(Encoded {
            path: model_path(&req.model, action),
            body: serde_json::to_vec(&body).unwrap_or_default(),
            headers: Vec::new(),
            dropped,
            refused,
            ctx: DecodeCtx {
                model: req.model.clone(),
                json_tool,
            },
        })
    }

    fn signature_family(&self, model: &str) -> Option<&'static str> {
        Some(match request::Family::of(model) {
            request::Family::Anthropic => crate::providers::anthropic::CLAUDE_SIGNATURES,
            // Other families' reasoning signatures stay with Bedrock's model of that family.
            request::Family::Nova => "bedrock-nova",
            request::Family::OpenAi => "bedrock-openai",
            request::Family::Other => "bedrock",
        })
    }

    fn decode(&self, body: &[u8], ctx: &DecodeCtx) -> Result<ChatResponse, DecodeError> {
        decode_converse(body, ctx)
    }

    fn stream_decoder(&self, ctx: &DecodeCtx) -> Box<dyn StreamDecoder> {
        Box::new(ConverseStream::new(ctx.clone()))
    }

    fn error(&self, status: StatusCode, body: &[u8]) -> MappedError {
        map_error(status, body)
    }

    fn encode_embeddings(&self, body: &[u8]) -> Option<Result<Encoded, RequestError>> {
        Some(embeddings::encode(body))
    }

    fn decode_embeddings(&self, body: &[u8], ctx: &DecodeCtx) -> Result<Vec<u8>, DecodeError> {
        embeddings::decode(body, ctx)
    }
}

pub fn finish_reason(s: &str) -> FinishReason {
    match s {
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "guardrail_intervened" | "content_filtered" => FinishReason::ContentFilter,
        _ => FinishReason::Stop, // end_turn, stop_sequence
    }
}

/// The stop sequence that ended the answer, which Claude reports in
/// `additionalModelResponseFields` when the request asks for `/stop_sequence` (see
/// [`request::body`]); on `messageStop` in streams. Other families say only that one did:
/// an empty string, resolved from the request (native::TranslateBody).
pub fn stop_sequence(v: &Value) -> Option<String> {
    if v["stopReason"] != "stop_sequence" {
        return None;
    }
    Some(
        v["additionalModelResponseFields"]["stop_sequence"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

/// Converse usage. `inputTokens` excludes cached tokens (`totalTokens` = input + output +
/// cache read + cache write in the recorded answers), so the prompt is their sum.
pub fn usage(u: &Value) -> Usage {
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    let read = n("cacheReadInputTokens");
    let write = n("cacheWriteInputTokens");
    Usage {
        input_tokens: n("inputTokens") + read + write,
        output_tokens: n("outputTokens"),
        cached_input_tokens: read,
        reasoning_tokens: 0,
        cache_write_tokens: write,
    }
}

/// A response id: Converse answers carry none.
fn new_id() -> String {
    format!("chatcmpl-bedrock-{:016x}", rand::random::<u64>())
}

/// A whole Converse answer.
pub fn decode_converse(body: &[u8], ctx: &DecodeCtx) -> Result<ChatResponse, DecodeError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| DecodeError::new(format!("Bedrock answer is not JSON: {e}")))?;
    let mut r = ChatResponse {
        id: new_id(),
        model: ctx.model.clone(),
        ..ChatResponse::default()
    };
    let mut json_answer = false;
    for block in v["output"]["message"]["content"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(t) = block["text"].as_str() {
            r.text.get_or_insert_with(String::new).push_str(t);
        } else if let Some(rc) = block.get("reasoningContent") {
            if let Some(rt) = rc.get("reasoningText") {
                r.thinking.push(Thinking {
                    text: rt["text"].as_str().unwrap_or_default().to_string(),
                    signature: rt["signature"].as_str().map(str::to_string),
                    redacted: None,
                });
            } else if let Some(d) = rc["redactedContent"].as_str() {
                r.thinking.push(Thinking {
                    text: String::new(),
                    signature: None,
                    redacted: Some(d.to_string()),
                });
            }
        } else if let Some(t) = block.get("toolUse") {
            if t["type"].as_str() == Some("server_tool_use") {
                continue;
            }
            let name = t["name"].as_str().unwrap_or_default();
            let args = t
                .get("input")
                .map_or_else(|| "{}".to_string(), Value::to_string);
            if ctx.json_tool.as_deref() == Some(name) {
                r.text = Some(args);
                json_answer = true;
            } else {
                r.tool_calls.push(ToolCall {
                    id: t["toolUseId"].as_str().unwrap_or_default().to_string(),
                    name: name.to_string(),
                    arguments: args,
                });
            }
        }
    }
    r.finish = finish_reason(v["stopReason"].as_str().unwrap_or("end_turn"));
    r.stop_sequence = stop_sequence(&v);
    if r.finish == FinishReason::ToolCalls && r.tool_calls.is_empty() {
        r.finish = FinishReason::Stop;
    }
    if json_answer && r.tool_calls.is_empty() {
        r.finish = FinishReason::Stop;
    }
    r.usage = v.get("usage").map(usage);
    Ok(r)
}

/// Bedrock's error body (`{"message": ...}`) and status in OpenAI's vocabulary: throttling
/// stays 429, validation 400 (context overflow gets `context_length_exceeded`), a model not
/// ready yet 503, model errors (424) become 502 and model timeouts (408) 504.
pub fn map_error(status: StatusCode, body: &[u8]) -> MappedError {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let message = v["message"]
        .as_str()
        .or_else(|| v["Message"].as_str())
        .map_or_else(
            || String::from_utf8_lossy(body).chars().take(500).collect(),
            str::to_string,
        );
    let status = match status.as_u16() {
        424 => StatusCode::BAD_GATEWAY,
        408 => StatusCode::GATEWAY_TIMEOUT,
        // ModelNotReadyException comes as 429 but is no quota matter: the model is loading.
        429 if message.to_ascii_lowercase().contains("not ready") => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => status,
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
