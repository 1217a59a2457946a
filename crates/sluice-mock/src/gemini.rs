//! Google Gemini, as AI Studio (`/v1beta/models/{model}:generateContent`) and Vertex AI
//! (`/v1/projects/{p}/locations/{r}/publishers/google/models/{model}:...`) serve it:
//! `generateContent`, `streamGenerateContent` (SSE with `alt=sse`, a JSON array without),
//! `batchEmbedContents`; Anthropic models on Vertex (`publishers/anthropic/...:rawPredict`,
//! `:streamRawPredict`, the Messages body without `model`); an OAuth token endpoint
//! (`POST /token`) for service-account logins; and Google-shaped error bodies.

use std::borrow::Cow;

use bytes::Bytes;
use http::HeaderMap;
use serde_json::{json, Value};

use crate::openai::{
    answer_question, pieces, vector, Answer, Content, Events, Payload, TOOL_ARGUMENTS,
};
use crate::ApiError;

const THOUGHT: &str = "The user wants a mock answer; I will give one.";
/// Embedding size when the request does not ask for one (gemini-embedding-001's default).
const DIMS: usize = 3072;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GoogleOp {
    Generate,
    Stream,
    Embed,
    /// Vertex embeddings (`instances[].content`).
    Predict,
    /// Anthropic on Vertex; `true` for `streamRawPredict`.
    RawPredict(bool),
    Token,
}

/// The Google operation a path names, if any.
pub(crate) fn op(path: &str) -> Option<GoogleOp> {
    if path == "/token" {
        return Some(GoogleOp::Token);
    }
    let (prefix, verb) = path.rsplit_once(':')?;
    let vertex = (prefix.starts_with("/v1/projects/") || prefix.starts_with("/v1beta1/projects/"))
        && prefix.contains("/locations/");
    let google = prefix.starts_with("/v1beta/models/")
        || (vertex && prefix.contains("/publishers/google/models/"));
    let anthropic = vertex && prefix.contains("/publishers/anthropic/models/");
    match (verb, google, anthropic) {
        ("generateContent", true, _) => Some(GoogleOp::Generate),
        ("streamGenerateContent", true, _) => Some(GoogleOp::Stream),
        ("batchEmbedContents", true, _) => Some(GoogleOp::Embed),
        ("predict", true, _) if vertex => Some(GoogleOp::Predict),
        ("rawPredict", _, true) => Some(GoogleOp::RawPredict(false)),
        ("streamRawPredict", _, true) => Some(GoogleOp::RawPredict(true)),
        _ => None,
    }
}

fn model_of(path: &str) -> &str {
    let prefix = path.rsplit_once(':').map_or(path, |(p, _)| p);
    prefix.rsplit('/').next().unwrap_or_default()
}

pub(crate) fn answer(
    op: GoogleOp,
    uri: &http::Uri,
    headers: &HeaderMap,
    body: &[u8],
    number: u64,
    chunks: usize,
) -> Result<Payload, ApiError> {
    if op == GoogleOp::Token {
        return Ok(Payload::Json(Bytes::from(
            json!({"access_token": format!("mock-token-{number}"), "expires_in": 3599,
                   "token_type": "Bearer"})
            .to_string(),
        )));
    }
    if !headers.contains_key("x-goog-api-key") && !headers.contains_key("authorization") {
        return Err(ApiError {
            status: http::StatusCode::UNAUTHORIZED,
            message: Cow::Borrowed("Request is missing required authentication credential."),
            kind: "authentication_error",
            param: None,
            code: None,
        });
    }
    let model = model_of(uri.path());
    match op {
        GoogleOp::Embed => embed(body),
        GoogleOp::Predict => predict(body),
        GoogleOp::RawPredict(_) => {
            let mut req: Value = serde_json::from_slice(body).map_err(ApiError::bad_json)?;
            if req.get("model").is_some() {
                return Err(ApiError::invalid(
                    "model: Extra inputs are not permitted",
                    Some("model"),
                ));
            }
            if req["anthropic_version"].as_str().is_none() {
                return Err(ApiError::invalid(
                    "anthropic_version: Field required",
                    Some("anthropic_version"),
                ));
            }
            req["model"] = json!(model);
            crate::anthropic::messages(req.to_string().as_bytes(), number, chunks)
        }
        GoogleOp::Generate | GoogleOp::Stream => {
            let sse = uri
                .query()
                .is_some_and(|q| q.split('&').any(|p| p == "alt=sse"));
            generate(op == GoogleOp::Stream, sse, model, body, number, chunks)
        }
        GoogleOp::Token => Err(ApiError::internal("unreachable")),
    }
}

fn text_of(parts: &Value) -> String {
    let mut out = String::new();
    for p in parts.as_array().into_iter().flatten() {
        // Thoughts and function responses are not what the user said.
        if p["thought"] != true {
            if let Some(t) = p["text"].as_str() {
                out.push_str(t);
            }
        }
    }
    out
}

fn generate(
    stream: bool,
    sse: bool,
    model: &str,
    body: &[u8],
    number: u64,
    chunks: usize,
) -> Result<Payload, ApiError> {
    let req: Value = serde_json::from_slice(body).map_err(ApiError::bad_json)?;
    let contents = req["contents"]
        .as_array()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            ApiError::invalid(
                "* GenerateContentRequest.contents: contents is not specified\n",
                Some("contents"),
            )
        })?;
    let mut turns: Vec<(bool, Cow<'_, str>)> = Vec::with_capacity(contents.len() + 1);
    if let Some(parts) = req["systemInstruction"].get("parts") {
        turns.push((false, Cow::Owned(text_of(parts))));
    }
    for c in contents {
        let role = c["role"].as_str().unwrap_or("user");
        if role != "user" && role != "model" {
            return Err(ApiError::invalid(
                format!("Please use a valid role: user, model. Got {role:?}."),
                Some("contents"),
            ));
        }
        if c["parts"].as_array().is_none_or(Vec::is_empty) {
            return Err(ApiError::invalid(
                "* GenerateContentRequest.contents.parts: contents.parts must not be empty.\n",
                Some("contents"),
            ));
        }
        turns.push((role == "user", Cow::Owned(text_of(&c["parts"]))));
    }
    let fcc = &req["toolConfig"]["functionCallingConfig"];
    let tool = if fcc["mode"] == "ANY" {
        fcc["allowedFunctionNames"][0]
            .as_str()
            .or_else(|| req["tools"][0]["functionDeclarations"][0]["name"].as_str())
            .map(str::to_string)
    } else {
        None
    };
    let answer = answer_question(&turns, tool);
    let thinking = req["generationConfig"]["thinkingConfig"]["includeThoughts"] == true;
    let chunks = response_chunks(number, model, &answer, chunks, thinking, stream);
    if stream && sse {
        let mut ev = Events::default();
        for c in &chunks {
            let _ = ev.push(|buf| {
                buf.extend_from_slice(b"data: ");
                serde_json::to_writer(&mut *buf, c)?;
                buf.extend_from_slice(b"\r\n\r\n");
                Ok(())
            });
        }
        Ok(Payload::Stream(ev))
    } else if stream {
        Ok(Payload::Json(Bytes::from(Value::Array(chunks).to_string())))
    } else {
        Ok(Payload::Json(Bytes::from(
            chunks.into_iter().next().unwrap_or_default().to_string(),
        )))
    }
}

fn usage(a: &Answer, thinking: bool, done: bool) -> Value {
    let thoughts = if thinking { 9 } else { 0 };
    if !done {
        return json!({"promptTokenCount": a.prompt_tokens, "totalTokenCount": a.prompt_tokens});
    }
    let mut u = json!({"promptTokenCount": a.prompt_tokens,
        "candidatesTokenCount": a.completion_tokens,
        "totalTokenCount": a.prompt_tokens + a.completion_tokens + thoughts});
    if thinking {
        u["thoughtsTokenCount"] = json!(thoughts);
    }
    u
}

fn chunk(number: u64, model: &str, parts: Vec<Value>, finish: bool, usage: Value) -> Value {
    let mut cand = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
    if finish {
        cand["finishReason"] = json!("STOP");
    }
    json!({"candidates": [cand], "usageMetadata": usage, "modelVersion": model,
           "responseId": format!("mock-{number}")})
}

/// The answer as Gemini chunks: one for a whole answer, pieces of text for a stream (a
/// function call always comes whole, as Gemini sends it).
fn response_chunks(
    number: u64,
    model: &str,
    a: &Answer,
    pieces_wanted: usize,
    thinking: bool,
    stream: bool,
) -> Vec<Value> {
    let signature = format!("sig_mock_{number}");
    let mut parts = Vec::new();
    if thinking {
        parts.push(json!({"text": THOUGHT, "thought": true}));
    }
    match &a.content {
        Content::ToolCall { name } => {
            let args: Value = serde_json::from_str(TOOL_ARGUMENTS).unwrap_or(Value::Null);
            let mut p = json!({"functionCall": {"name": name, "args": args}});
            if thinking {
                p["thoughtSignature"] = json!(signature);
            }
            parts.push(p);
        }
        Content::Text(t) if !stream => {
            let mut p = json!({ "text": t });
            if thinking {
                p["thoughtSignature"] = json!(signature);
            }
            parts.push(p);
        }
        Content::Text(t) => {
            let mut out: Vec<Value> = Vec::new();
            if !parts.is_empty() {
                out.push(chunk(
                    number,
                    model,
                    parts,
                    false,
                    usage(a, thinking, false),
                ));
            }
            let texts: Vec<&str> = pieces(t, pieces_wanted).collect();
            let last = texts.len().saturating_sub(1);
            for (i, piece) in texts.into_iter().enumerate() {
                let mut p = json!({ "text": piece });
                if thinking && i == last {
                    p["thoughtSignature"] = json!(signature);
                }
                out.push(chunk(
                    number,
                    model,
                    vec![p],
                    i == last,
                    usage(a, thinking, i == last),
                ));
            }
            return out;
        }
    }
    vec![chunk(number, model, parts, true, usage(a, thinking, true))]
}

fn embed(body: &[u8]) -> Result<Payload, ApiError> {
    let req: Value = serde_json::from_slice(body).map_err(ApiError::bad_json)?;
    let requests = req["requests"]
        .as_array()
        .filter(|r| !r.is_empty())
        .ok_or_else(|| {
            ApiError::invalid(
                "* BatchEmbedContentsRequest.requests: requests is not specified\n",
                Some("requests"),
            )
        })?;
    let mut out = Vec::with_capacity(requests.len());
    for r in requests {
        let text = text_of(&r["content"]["parts"]);
        let dims = r["outputDimensionality"]
            .as_u64()
            .and_then(|d| usize::try_from(d).ok())
            .unwrap_or(DIMS);
        out.push(json!({ "values": vector(seed(&text), dims) }));
    }
    Ok(Payload::Json(Bytes::from(
        json!({ "embeddings": out }).to_string(),
    )))
}

/// Vertex `:predict` for embedding models.
fn predict(body: &[u8]) -> Result<Payload, ApiError> {
    let req: Value = serde_json::from_slice(body).map_err(ApiError::bad_json)?;
    let instances = req["instances"]
        .as_array()
        .filter(|r| !r.is_empty())
        .ok_or_else(|| ApiError::invalid("instances is not specified", Some("instances")))?;
    let dims = req["parameters"]["outputDimensionality"]
        .as_u64()
        .and_then(|d| usize::try_from(d).ok())
        .unwrap_or(768);
    let predictions: Vec<Value> = instances
        .iter()
        .map(|i| {
            let text = i["content"].as_str().unwrap_or_default();
            json!({"embeddings": {"values": vector(seed(text), dims),
                "statistics": {"token_count": text.split_whitespace().count(), "truncated": false}}})
        })
        .collect();
    Ok(Payload::Json(Bytes::from(
        json!({ "predictions": predictions }).to_string(),
    )))
}

/// FNV-1a of the text: the same input gives the same vector.
fn seed(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `{"error":{"code","message","status"}}` with Google's status names.
pub(crate) fn error_body(e: &ApiError) -> Bytes {
    let status = match e.status.as_u16() {
        400 | 413 | 422 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        503 | 529 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    };
    Bytes::from(
        json!({"error": {"code": e.status.as_u16(), "message": e.message, "status": status}})
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_their_operations() {
        assert_eq!(
            op("/v1beta/models/gemini-2.5-flash:generateContent"),
            Some(GoogleOp::Generate)
        );
        assert_eq!(
            op("/v1/projects/p/locations/us-central1/publishers/google/models/g:streamGenerateContent"),
            Some(GoogleOp::Stream)
        );
        assert_eq!(
            op("/v1/projects/p/locations/us-east5/publishers/anthropic/models/claude-x@1:streamRawPredict"),
            Some(GoogleOp::RawPredict(true))
        );
        assert_eq!(
            op("/v1beta/models/e:batchEmbedContents"),
            Some(GoogleOp::Embed)
        );
        assert_eq!(op("/v1/chat/completions"), None);
        assert_eq!(op("/v1beta/models/x:rawPredict"), None);
        assert_eq!(
            model_of("/v1/projects/p/locations/r/publishers/google/models/gemini-2.5-pro:generateContent"),
            "gemini-2.5-pro"
        );
    }
}
