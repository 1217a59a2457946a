//! The passthrough fast path's pieces: the HTTP adapter of the OpenAI endpoints (the steps
//! themselves are in `api::pipeline`), and the body and header work they share. The body is
//! never rebuilt: only the model name is spliced (and `stream_options` when we need usage, an
//! output limit under `cap_output`), the rest is forwarded byte-for-byte.

use super::peek::Peek;
use crate::api::pipeline;
use crate::api::RequestCtx;
use crate::app::AppState;
use crate::config::Strategy;
use crate::error::ApiError;
use crate::providers::Endpoint;
use crate::router::dispatch::Overrides;
use crate::router::{Deployment, Route};
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use http::{HeaderName, HeaderValue};
use std::ops::Range;
use std::time::Instant;

pub type PeekFn = for<'a> fn(&'a [u8]) -> Result<Peek<'a>, ApiError>;

/// The HTTP adapter of the OpenAI endpoints (and the Anthropic passthrough): the request as
/// it came, through the one pipeline.
pub async fn handle(
    app: &AppState,
    req: Request,
    endpoint: Endpoint,
    surface: &'static str,
    peek: PeekFn,
) -> Response {
    let Some(ctx) = req.extensions().get::<RequestCtx>().cloned() else {
        return ApiError::Internal("request context missing".into()).into_response();
    };
    let (parts, body) = req.into_parts();
    let inbound = pipeline::Inbound {
        headers: &parts.headers,
        body,
        endpoint,
        surface,
        peek,
    };
    pipeline::into_response(pipeline::run(app, &ctx, inbound).await)
}

/// A body another surface already read, sent upstream untouched in its own format (only the
/// model renamed): Anthropic Messages to Anthropic, Responses to a native Responses API.
pub async fn forward(
    app: &AppState,
    parts: http::request::Parts,
    body: bytes::Bytes,
    endpoint: Endpoint,
    surface: &'static str,
    peek: PeekFn,
) -> Response {
    let mut req = Request::from_parts(parts, axum::body::Body::from(body));
    req.headers_mut().remove(http::header::CONTENT_LENGTH);
    handle(app, req, endpoint, surface, peek).await
}

/// Prompt tokens estimated from every prompt byte (about four bytes a token; the JSON around
/// the text makes it an over-estimate for prose) plus each image at its documented cost.
pub fn input_estimate(p: &Peek<'_>) -> u64 {
    (p.prompt_bytes as u64)
        .div_ceil(4)
        .saturating_add(u64::from(p.images).saturating_mul(super::peek::IMAGE_TOKENS))
}

/// The output a request may produce: its own limit, which must not exceed the largest max
/// output among the route's deployments (400 naming the field); without one, that max output,
/// or `governance.default_max_output_tokens` when the catalog does not know it.
pub fn output_reservation(
    p: &Peek<'_>,
    route: &Route,
    gov: &crate::config::GovernanceConfig,
) -> Result<u64, ApiError> {
    let model_max = route.max_output();
    match (p.max_tokens, model_max) {
        (Some(n), Some(max)) if n > max => {
            let field = p.max_tokens_field.as_ref().map_or("max_tokens", |f| f.0);
            Err(ApiError::bad_request(
                format!(
                    "`{field}` is {n}, above the most model `{}` can produce ({max} tokens)",
                    p.model
                ),
                Some(field),
            ))
        }
        (Some(n), _) => Ok(n),
        (None, Some(max)) => Ok(max),
        (None, None) => Ok(gov.default_max_output_tokens),
    }
}

/// The body with its output limit set to `n` (`governance.when_budget_short: cap_output`):
/// the client's own field rewritten, or `max_tokens` added.
pub(crate) fn with_output_limit(body: &Bytes, p: &Peek<'_>, n: u64) -> Bytes {
    let value = n.to_string();
    let (range, text) = match &p.max_tokens_field {
        Some((_, span)) => (span.clone(), value),
        None => match body.iter().rposition(|&b| b == b'}') {
            Some(end) => (end..end, format!(",\"max_tokens\":{value}")),
            None => return body.clone(),
        },
    };
    let mut out = BytesMut::with_capacity(body.len() + text.len());
    out.extend_from_slice(&body[..range.start]);
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&body[range.end..]);
    out.freeze()
}

pub(crate) fn overhead(start: Instant, upstream_wait: std::time::Duration) -> u64 {
    let total = start.elapsed().saturating_sub(upstream_wait);
    u64::try_from(total.as_micros()).unwrap_or(u64::MAX)
}

// Header names as constants: no parsing per request.
const X_SLUICE_TIMEOUT_MS: HeaderName = HeaderName::from_static("x-sluice-timeout-ms");
const X_SLUICE_FIRST_TOKEN_TIMEOUT_MS: HeaderName =
    HeaderName::from_static("x-sluice-first-token-timeout-ms");
const X_SLUICE_IDLE_TIMEOUT_MS: HeaderName = HeaderName::from_static("x-sluice-idle-timeout-ms");
const X_SLUICE_TOTAL_TIMEOUT_MS: HeaderName = HeaderName::from_static("x-sluice-total-timeout-ms");
const X_SLUICE_ATTEMPTS: HeaderName = HeaderName::from_static("x-sluice-attempts");
const X_SLUICE_ROUTE_REASON: HeaderName = HeaderName::from_static("x-sluice-route-reason");
const X_SLUICE_FALLBACK_REASON: HeaderName = HeaderName::from_static("x-sluice-fallback-reason");
const X_SLUICE_PROVIDER: HeaderName = HeaderName::from_static("x-sluice-provider");
const X_SLUICE_MODEL: HeaderName = HeaderName::from_static("x-sluice-model");
pub(crate) const X_SLUICE_DROPPED_PARAMS: HeaderName =
    HeaderName::from_static("x-sluice-dropped-params");
const X_SLUICE_OVERHEAD_US: HeaderName = HeaderName::from_static("x-sluice-overhead-us");
pub(crate) const X_SLUICE_OUTPUT_CAPPED: HeaderName =
    HeaderName::from_static("x-sluice-output-capped");

/// What routing did, for the response headers.
pub(crate) struct RouteInfo {
    pub attempts: u32,
    pub fallback_reason: Option<&'static str>,
    pub route_reason: &'static str,
}

/// Why this deployment: the route's strategy, or that earlier candidates were unavailable.
pub(crate) fn route_reason(route: &Route, d: &Deployment, skipped_open: u32) -> &'static str {
    if skipped_open > 0 {
        return "unavailable_skipped";
    }
    if !route.deployments.iter().any(|x| std::ptr::eq(x, d)) {
        return "fallback_route";
    }
    if route.deployments.len() == 1 {
        return "single";
    }
    if d.priority > route.deployments[0].priority {
        return "lower_tier";
    }
    match route.strategy {
        Strategy::Weighted => "weighted",
        Strategy::RoundRobin => "round_robin",
        Strategy::LeastOutstanding => "least_outstanding",
        Strategy::LowestLatency => "lowest_latency",
        Strategy::LowestCost => "lowest_cost",
        Strategy::MostHeadroom => "most_headroom",
        Strategy::CheapestCapable => "cheapest_capable",
    }
}

/// The client's shorter timeouts, in milliseconds (they never lengthen the configured ones):
/// `x-sluice-timeout-ms` (response headers), `x-sluice-first-token-timeout-ms`,
/// `x-sluice-idle-timeout-ms`, `x-sluice-total-timeout-ms`.
pub(crate) fn timeout_overrides(headers: &http::HeaderMap) -> Overrides {
    let ms = |name: &HeaderName| -> Option<std::time::Duration> {
        let ms: u64 = headers.get(name)?.to_str().ok()?.trim().parse().ok()?;
        (ms > 0).then(|| std::time::Duration::from_millis(ms))
    };
    Overrides {
        headers: ms(&X_SLUICE_TIMEOUT_MS),
        first_token: ms(&X_SLUICE_FIRST_TOKEN_TIMEOUT_MS),
        idle: ms(&X_SLUICE_IDLE_TIMEOUT_MS),
        total: ms(&X_SLUICE_TOTAL_TIMEOUT_MS),
    }
}

/// The gateway's routing headers on an answer.
pub(crate) fn put_route_headers(
    h: &mut http::HeaderMap,
    d: &Deployment,
    overhead_us: u64,
    info: &RouteInfo,
) {
    h.insert(X_SLUICE_ATTEMPTS, HeaderValue::from(info.attempts));
    h.insert(
        X_SLUICE_ROUTE_REASON,
        HeaderValue::from_static(info.route_reason),
    );
    if let Some(r) = info.fallback_reason {
        h.insert(X_SLUICE_FALLBACK_REASON, HeaderValue::from_static(r));
    }
    if let Some(v) = &d.provider.name_header {
        h.insert(X_SLUICE_PROVIDER, v.clone());
    }
    if let Some(v) = &d.model_header {
        h.insert(X_SLUICE_MODEL, v.clone());
    }
    h.insert(X_SLUICE_OVERHEAD_US, HeaderValue::from(overhead_us));
}

/// The body for one deployment: the client's bytes with the model renamed and, when asked,
/// `stream_options.include_usage` forced on. Providers that reject `stream_options` (Mistral,
/// ..., `stream_usage: false`) get the body without it. Untouched bytes are shared, not copied.
pub fn encode(body: &Bytes, p: &Peek<'_>, d: &Deployment, inject_usage: bool) -> Bytes {
    let same_model = body.get(p.model_span.clone()) == Some(&d.model_json[..]);
    let strip_options = if d.provider.stream_usage {
        None
    } else {
        p.stream_options_span
            .clone()
            .and_then(|v| member_span(body, v, b"\"stream_options\""))
    };
    if same_model && !inject_usage && strip_options.is_none() {
        return body.clone();
    }
    let mut edits: Vec<(Range<usize>, Bytes)> = Vec::with_capacity(2);
    if !same_model {
        edits.push((p.model_span.clone(), d.model_json.clone()));
    }
    if let Some(span) = strip_options {
        edits.push((span, Bytes::new()));
    }
    if inject_usage {
        match &p.stream_options_span {
            Some(span) => {
                let mut obj: serde_json::Map<String, serde_json::Value> = body
                    .get(span.clone())
                    .and_then(|b| serde_json::from_slice(b).ok())
                    .unwrap_or_default();
                obj.insert("include_usage".into(), serde_json::Value::Bool(true));
                let text = serde_json::to_vec(&obj)
                    .unwrap_or_else(|_| b"{\"include_usage\":true}".to_vec());
                edits.push((span.clone(), Bytes::from(text)));
            }
            None => {
                if let Some(end) = body.iter().rposition(|&b| b == b'}') {
                    edits.push((
                        end..end,
                        Bytes::from_static(b",\"stream_options\":{\"include_usage\":true}"),
                    ));
                }
            }
        }
    }
    edits.sort_by_key(|(r, _)| r.start);
    if edits.windows(2).any(|w| w[0].0.end > w[1].0.start) {
        return body.clone();
    }
    let extra: usize = edits.iter().map(|(_, b)| b.len()).sum();
    let mut out = BytesMut::with_capacity(body.len() + extra);
    let mut pos = 0;
    for (range, replacement) in edits {
        out.extend_from_slice(&body[pos..range.start]);
        out.extend_from_slice(&replacement);
        pos = range.end;
    }
    out.extend_from_slice(&body[pos..]);
    out.freeze()
}

/// A translated Anthropic request for an OpenAI-format provider: `top_k` and the
/// `cache_control` markers on text parts carry Anthropic settings that native codecs map
/// (Claude on Bedrock and Vertex, Gemini `topK`, ...), but OpenAI and most compatible
/// vendors refuse unknown fields, so these upstreams get the body without them. Images in
/// tool results (OpenAI's tool messages take text only) move to a user message right after
/// the tool results.
pub fn for_openai_format(body: &Bytes) -> Bytes {
    use serde_json::Value;
    let has = |needle: &[u8]| memchr::memmem::find(body, needle).is_some();
    if !has(b"\"top_k\"") && !has(b"\"cache_control\"") && !has(b"\"image_url\"") {
        return body.clone();
    }
    let Ok(mut v) = serde_json::from_slice::<Value>(body) else {
        return body.clone();
    };
    let Some(o) = v.as_object_mut() else {
        return body.clone();
    };
    o.remove("top_k");
    let Some(Value::Array(msgs)) = o.remove("messages") else {
        return serde_json::to_vec(&v).map_or_else(|_| body.clone(), Bytes::from);
    };
    let mut out = Vec::with_capacity(msgs.len());
    let mut moved: Vec<Value> = Vec::new();
    for mut m in msgs {
        let is_tool = m["role"] == "tool";
        if !is_tool && !moved.is_empty() {
            out.push(serde_json::json!({"role": "user", "content": std::mem::take(&mut moved)}));
        }
        if let Some(parts) = m.get_mut("content").and_then(Value::as_array_mut) {
            for p in parts.iter_mut().filter_map(Value::as_object_mut) {
                p.remove("cache_control");
            }
            if is_tool {
                let (images, text): (Vec<Value>, Vec<Value>) =
                    parts.drain(..).partition(|p| p["type"] == "image_url");
                moved.extend(images);
                *parts = text;
            }
        }
        out.push(m);
    }
    if !moved.is_empty() {
        out.push(serde_json::json!({"role": "user", "content": moved}));
    }
    o.insert("messages".into(), Value::Array(out));
    serde_json::to_vec(&v).map_or_else(|_| body.clone(), Bytes::from)
}

/// The bytes of one object member, `"key": value`, with the comma that separates it from
/// its neighbour, given the value's span; `None` unless the key is spelled plainly.
fn member_span(body: &[u8], value: Range<usize>, key: &[u8]) -> Option<Range<usize>> {
    let skip_back = |mut i: usize| {
        while i > 0 && body[i - 1].is_ascii_whitespace() {
            i -= 1;
        }
        i
    };
    let colon = skip_back(value.start).checked_sub(1)?;
    if body.get(colon) != Some(&b':') {
        return None;
    }
    let key_end = skip_back(colon);
    let key_start = key_end.checked_sub(key.len())?;
    if body.get(key_start..key_end) != Some(key) {
        return None;
    }
    let before = skip_back(key_start).checked_sub(1)?;
    match body.get(before) {
        Some(b',') => Some(before..value.end),
        Some(b'{') => {
            let mut end = value.end;
            while body.get(end).is_some_and(u8::is_ascii_whitespace) {
                end += 1;
            }
            match body.get(end) {
                Some(b',') => Some(key_start..end + 1),
                _ => Some(key_start..value.end),
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod member_tests {
    use super::member_span;

    fn cut(body: &str) -> String {
        let start = body.find("{\"include").unwrap_or(0);
        let end = body[start..].find('}').map_or(0, |e| start + e + 1);
        match member_span(body.as_bytes(), start..end, b"\"stream_options\"") {
            Some(r) => format!("{}{}", &body[..r.start], &body[r.end..]),
            None => body.to_string(),
        }
    }

    #[test]
    fn removes_stream_options_wherever_it_stands() {
        for (body, want) in [
            (
                r#"{"model":"m","stream_options":{"include_usage":true},"stream":true}"#,
                r#"{"model":"m","stream":true}"#,
            ),
            (
                r#"{"stream_options" : {"include_usage":true} , "model":"m"}"#,
                r#"{ "model":"m"}"#,
            ),
            (
                r#"{"model":"m", "stream_options": {"include_usage":false}}"#,
                r#"{"model":"m"}"#,
            ),
            (r#"{"stream_options":{"include_usage":true}}"#, "{}"),
            (
                r#"{"x":"stream_options",{"include_usage":true}}"#,
                r#"{"x":"stream_options",{"include_usage":true}}"#,
            ),
        ] {
            assert_eq!(cut(body), want, "{body}");
        }
    }
}
