//! The Anthropic surface: `POST /v1/messages` (JSON and SSE with Anthropic's exact event
//! sequence) and `POST /v1/messages/count_tokens`, for any configured model. Requests run
//! through the same chat pipeline as OpenAI ones ([`crate::api::surface`]); errors leave in
//! Anthropic's shape (`{"type":"error","error":{"type","message"}}`), auth and limits included
//! (ingress converts them, see [`to_anthropic_error`]).

pub mod request;
pub mod response;

use crate::api::surface::{json_response, run_chat, stream_response, ChatOutcome};
use crate::api::{read_body, RequestCtx};
use crate::app::AppState;
use crate::canonical::openai::encode_request;
use crate::canonical::{ChatRequest, Part, Role};
use crate::error::ApiError;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use response::{error_body, message, AnthropicEncoder};

/// The usage-record surface label.
pub const SURFACE: &str = "anthropic.messages";

fn bad_request(e: &crate::canonical::openai::RequestError) -> Response {
    json_response(
        StatusCode::BAD_REQUEST,
        http::HeaderMap::new(),
        error_body(400, &e.message),
    )
}

pub async fn messages(State(app): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let limit = app.gateway.load().config.server.max_body_bytes;
    let body = match read_body(&parts.headers, body, limit).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    #[derive(serde::Deserialize)]
    struct ModelOnly<'a> {
        #[serde(borrow)]
        model: Option<std::borrow::Cow<'a, str>>,
        max_tokens: Option<serde_json::Value>,
    }
    let head = serde_json::from_slice::<ModelOnly<'_>>(&body).ok();
    // A tagged thinking signature must lose its tag (or be left out) before Anthropic sees it.
    let direct = !crate::canonical::signature::in_body(&body)
        && head.as_ref().is_some_and(|h| {
            h.max_tokens.is_some()
                && h.model
                    .as_deref()
                    .is_some_and(|m| passes_through(&app, &parts, m))
        });
    drop(head);
    if direct {
        // Anthropic to Anthropic: the client's bytes, only the model renamed.
        return crate::api::openai::passthrough::forward(
            &app,
            parts,
            body,
            crate::providers::Endpoint::AnthropicMessages,
            SURFACE,
            crate::api::openai::peek::chat,
        )
        .await;
    }
    let creq = match request::decode(&body, true) {
        Ok(r) => r,
        Err(e) => return bad_request(&e),
    };
    let model = creq.model.clone();
    let request_id = parts
        .extensions
        .get::<RequestCtx>()
        .map_or_else(String::new, |c| c.request_id.clone());
    let id = format!("msg_{request_id}");
    let openai = serde_json::to_vec(&encode_request(&creq)).unwrap_or_default();
    match run_chat(&app, &parts, openai, SURFACE).await {
        ChatOutcome::Json { response, headers } => json_response(
            StatusCode::OK,
            headers,
            serde_json::to_vec(&message(&response, &id, &model)).unwrap_or_default(),
        ),
        ChatOutcome::Stream { body, headers } => {
            stream_response(body, headers, AnthropicEncoder::new(id, model))
        }
        ChatOutcome::Error {
            status,
            headers,
            message,
            ..
        } => json_response(status, headers, error_body(status.as_u16(), &message)),
    }
}

/// Whether a request for `model` can go to Anthropic untouched: every deployment it may
/// reach is an Anthropic provider, and no content rule applies.
fn passes_through(app: &AppState, parts: &http::request::Parts, model: &str) -> bool {
    crate::api::surface::passes_through(app, parts, model, |p| {
        p.kind == crate::config::ProviderKind::Anthropic
    })
}

/// `POST /v1/messages/count_tokens`: exact (Anthropic's own count) when the model's first
/// deployment is an Anthropic provider, otherwise an estimate with OpenAI's `o200k_base` BPE
/// plus a small per-message and per-tool overhead (documented in docs/anthropic-surface.md).
pub async fn count_tokens(State(app): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let gw = app.gateway.load();
    let body = match read_body(&parts.headers, body, gw.config.server.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let creq = match request::decode(&body, false) {
        Ok(r) => r,
        Err(e) => return bad_request(&e),
    };
    let Some(ctx) = parts.extensions.get::<RequestCtx>() else {
        return ApiError::Internal("request context missing".into()).into_response();
    };
    // Authentication (ingress), input rules, model access and limits as for a message; a
    // usage record with zero cost.
    let openai = serde_json::to_vec(&encode_request(&creq)).unwrap_or_default();
    let inbound = crate::api::pipeline::Inbound {
        headers: &parts.headers,
        body: axum::body::Body::from(openai),
        endpoint: crate::providers::Endpoint::ChatCompletions,
        surface: COUNT_SURFACE,
        peek: crate::api::openai::peek::chat,
    };
    let pre = match crate::api::pipeline::preflight(&app, ctx, inbound).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let exact =
        pre.route.deployments.first().filter(|d| {
            d.provider.kind == crate::config::ProviderKind::Anthropic && !pre.rewritten
        });
    if let Some(d) = exact {
        let mut v: serde_json::Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(_) => serde_json::Value::Null,
        };
        v["model"] = serde_json::Value::String(d.model.to_string());
        v.as_object_mut().map(|o| o.remove("max_tokens"));
        let bytes = serde_json::to_vec(&v).unwrap_or_default();
        return match d
            .provider
            .post_native("/v1/messages/count_tokens", bytes)
            .await
        {
            Ok((status, body)) if status.is_success() => {
                let n = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["input_tokens"].as_u64())
                    .unwrap_or(0);
                pre.finish(n);
                json_response(status, http::HeaderMap::new(), body.to_vec())
            }
            Ok((status, body)) => {
                let m = crate::providers::anthropic::map_error(status, &body);
                pre.refused_upstream(m.status);
                json_response(
                    m.status,
                    http::HeaderMap::new(),
                    error_body(m.status.as_u16(), &m.message),
                )
            }
            Err(e) => {
                let e = ApiError::from(e);
                pre.fail(&e);
                e.into_response()
            }
        };
    }
    let n = estimate_tokens(&creq);
    pre.finish(n);
    json_response(
        StatusCode::OK,
        http::HeaderMap::new(),
        serde_json::to_vec(&serde_json::json!({"input_tokens": n})).unwrap_or_default(),
    )
}

/// The usage records of `/v1/messages/count_tokens`.
pub const COUNT_SURFACE: &str = "anthropic.count_tokens";

/// Estimated prompt tokens: o200k_base over every text, tool name, description and schema,
/// 3 tokens per message, 85 per image.
pub fn estimate_tokens(r: &ChatRequest) -> u64 {
    let count = crate::canonical::usage::count_tokens;
    let mut n = 0;
    for m in &r.messages {
        n += 3;
        for p in &m.content {
            n += match p {
                Part::Text { text, .. } => count(text),
                Part::Image(_) => 85,
                Part::Other(v) => count(&v.to_string()),
            };
        }
        for c in &m.tool_calls {
            n += count(&c.name) + count(&c.arguments);
        }
        for t in &m.thinking {
            n += count(&t.text);
        }
        if m.role == Role::Tool {
            n += 2;
        }
    }
    for t in &r.tools {
        n += 8
            + count(&t.name)
            + t.description.as_deref().map_or(0, count)
            + count(&t.parameters.to_string());
    }
    n
}

/// Rewrites an OpenAI-shaped error answer as Anthropic's (for the Anthropic paths).
pub async fn to_anthropic_error(resp: Response) -> Response {
    if resp.status().is_success() {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if !is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let bytes =
        match http_body_util::BodyExt::collect(http_body_util::Limited::new(body, 1 << 20)).await {
            Ok(c) => c.to_bytes(),
            Err(_) => bytes::Bytes::new(),
        };
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    if v["type"] == "error" {
        return Response::from_parts(parts, axum::body::Body::from(bytes));
    }
    let (message, ..) = crate::providers::parse_error_body(&bytes);
    let out = error_body(parts.status.as_u16(), &message);
    parts.headers.remove(http::header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(out))
}
