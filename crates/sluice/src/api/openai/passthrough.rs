//! The passthrough fast path: steps parse -> route -> dispatch -> respond -> settle for an
//! OpenAI-format request to an OpenAI-format provider. The body is never rebuilt: only the
//! model name is spliced (and `stream_options` when we need usage), the rest is forwarded
//! byte-for-byte, and streamed responses go out chunk by chunk as they arrive.
//! Content policy (guard_input / guard_output) touches the body only when a rule applies.

use super::peek::Peek;
use super::stream::TapBody;
use crate::api::settle::Settle;
use crate::api::{read_body, RequestCtx};
use crate::app::AppState;
use crate::canonical::usage::from_openai_json;
use crate::config::Locality;
use crate::config::Strategy;
use crate::error::{put_rate_headers, ApiError};
use crate::policy::auth::Principal;
use crate::policy::content::input::{self, InputOutcome};
use crate::policy::content::stream::StreamGuard;
use crate::policy::content::{output, PolicyError, Rule, Subject};
use crate::policy::limits::RateHeaders;
use crate::policy::prices::Price;
use crate::providers::FallbackClass;
use crate::providers::{Endpoint, UpstreamError, UpstreamErrorKind};
use crate::router::catalog::Missing;
use crate::router::classify;
use crate::router::dispatch::{dispatch, Attempt, Overrides};
use crate::router::{Deployment, Route};
use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use http::{header, HeaderName, HeaderValue};
use http_body_util::BodyExt;
use std::ops::Range;
use std::time::Instant;

pub type PeekFn = for<'a> fn(&'a [u8]) -> Result<Peek<'a>, ApiError>;

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
    let mut settle = Some(Settle::new(app.sink.clone(), &ctx, surface));
    let trace = crate::telemetry::otel::RequestTrace::start(req.headers());
    let result = match trace {
        Some(t) => {
            if let Some(s) = settle.as_mut() {
                s.trace = Some(t.clone());
            }
            t.scope(run(app, &ctx, req, endpoint, peek, &mut settle))
                .await
        }
        None => run(app, &ctx, req, endpoint, peek, &mut settle).await,
    };
    match result {
        Ok(resp) => resp,
        Err(e) => {
            if let Some(s) = settle.take() {
                s.finish_error(&e);
            }
            e.into_response()
        }
    }
}

async fn run(
    app: &AppState,
    ctx: &RequestCtx,
    req: Request,
    endpoint: Endpoint,
    peek: PeekFn,
    settle_slot: &mut Option<Settle>,
) -> Result<Response, ApiError> {
    let gw = app.gateway.load();
    let (parts, body) = req.into_parts();
    let body = read_body(&parts.headers, body, gw.config.server.max_body_bytes).await?;

    // parse
    let p = peek(&body)?.into_owned();
    if let Some(s) = settle_slot.as_mut() {
        s.rec.requested_model = p.model.to_string();
        s.rec.streamed = p.stream;
        let compliance = &gw.config.usage.compliance;
        if crate::api::settle::compliance_applies(compliance, &app.gov, &ctx.principal) {
            s.start_capture(&body, compliance.redact.clone());
        }
        s.mark("parse");
    }

    // guard_input
    let policies = &gw.config.policies;
    let subject = Subject {
        team: ctx.team.as_deref(),
        key_id: ctx.key_id.as_deref(),
        model: &p.model,
    };
    let chat = endpoint == Endpoint::ChatCompletions;
    let input_rules = policies.select(&subject, false);
    // Embeddings answers are vectors: only chat answers have an output stage.
    let output_rules = if chat {
        policies.select(&subject, true)
    } else {
        Vec::new()
    };
    // No rule for this request: the body is not parsed (the no-policy path stays bytes).
    let guarded = if input_rules.is_empty() {
        InputOutcome::default()
    } else {
        let rules: Vec<&Rule> = input_rules
            .iter()
            .filter_map(|&i| policies.rules.get(i))
            .collect();
        let mut hits = Vec::new();
        let r = input::guard(&rules, &body, &mut hits).await;
        if let Some(s) = settle_slot.as_mut() {
            s.rec.policy_hits = hits;
        }
        r?
    };
    let (body, p) = match guarded.body {
        Some(b) => {
            let p2 = peek(&b)?.into_owned();
            (b, p2)
        }
        None => (body, p),
    };
    let mut vault = guarded.vault;
    mark(settle_slot, "guard_input");

    // route
    let not_found = || ApiError::ModelNotFound {
        model: p.model.to_string(),
        available: super::visible_models(&gw, &ctx.principal),
    };
    let mut route = gw.models.resolve(&p.model).ok_or_else(not_found)?;
    // Only routes that route by the request's shape parse more of the body.
    let mut shape = None;
    let mut complexity_reason = None;
    if let Some(rules) = &route.complexity {
        let s = classify::shape(&body, p.prompt_bytes, p.max_tokens);
        let (hard, why) = classify::complexity(rules, &s);
        let target = if hard { &rules.hard } else { &rules.simple };
        if let Principal::Key(k) = &ctx.principal {
            if let Some((by, list)) = k.model_refused_by(target) {
                return Err(ApiError::ModelNotAllowed {
                    model: target.clone(),
                    by: by.to_string(),
                    allowed: list.clone(),
                });
            }
        }
        complexity_reason = Some(why);
        shape = Some(s);
        route = gw.models.resolve(target).ok_or_else(not_found)?;
    }
    let needs = (route.strategy == Strategy::CheapestCapable).then(|| {
        shape
            .get_or_insert_with(|| classify::shape(&body, p.prompt_bytes, p.max_tokens))
            .needs
    });

    mark(settle_slot, "route");

    // admit
    let mut rate_headers = None;
    if let Principal::Key(k) = &ctx.principal {
        let (tokens, worst_cost) = estimate(&p, route.reserve_price);
        if let Some(a) = app.gov.admit(k, &p.model, tokens, worst_cost)? {
            rate_headers = Some(a.headers());
            if let Some(s) = settle_slot.as_mut() {
                s.admission = Some(a);
            }
        }
    }

    mark(settle_slot, "admit");
    let mut plan = gw.models.plan_for(&route, needs.as_ref());
    // Nothing capable: a context window too small moves to a larger-context route (the
    // per-class fallback), anything else is the client's 400 naming what is missing.
    let mut context_fallback = false;
    if plan.candidates.is_empty() && plan.skipped_capability > 0 {
        let missing = plan.missing.unwrap_or(Missing::ContextWindow);
        if missing == Missing::ContextWindow {
            for target in gw
                .models
                .class_fallbacks(&route, FallbackClass::ContextWindowExceeded)
            {
                let more = gw.models.plan_fallback(&route, target, needs.as_ref());
                if !more.candidates.is_empty() {
                    plan = more;
                    context_fallback = true;
                    break;
                }
            }
        }
        if !context_fallback {
            return Err(ApiError::bad_request(
                format!(
                    "no deployment of model `{}` supports what this request needs: {}",
                    p.model,
                    missing.as_str()
                ),
                Some(missing.param()),
            ));
        }
    }
    let mut candidates = plan.candidates;
    let route_local = guarded.route_local.is_some();
    if let Some(rule) = guarded.route_local {
        candidates.retain(|d| d.provider.locality == Locality::OnPrem);
        if candidates.is_empty() {
            return Err(PolicyError::NoLocalDeployment {
                rule,
                model: p.model.to_string(),
            }
            .into());
        }
    }
    if candidates.is_empty() && plan.skipped_open == 0 && plan.skipped_locality > 0 {
        return Err(ApiError::LocalOnly {
            model: p.model.to_string(),
            why: if gw.config.mode == crate::config::Mode::OnPrem {
                "`mode: on_prem`"
            } else {
                "the route's `data_policy: local_only`"
            },
        });
    }
    // Anthropic bodies (passed through to Anthropic) always carry usage in their events.
    let wants_usage_injected =
        p.stream && p.include_usage != Some(true) && endpoint == Endpoint::ChatCompletions;
    let attempt = Attempt {
        start: ctx.start,
        overrides: timeout_overrides(&parts.headers),
        stream: p.stream,
        tokens: estimate(&p, None).0,
    };

    // dispatch
    let mut result = dispatch(
        &route,
        &candidates,
        endpoint,
        &ctx.request_id,
        &attempt,
        |d| {
            encode(
                &body,
                &p,
                d,
                wants_usage_injected && d.provider.stream_usage,
            )
        },
    )
    .await;
    // Per-class fallback routes, after the route's own candidates (and `fallbacks`) failed.
    let failed_class = match &result {
        Err(f) => f
            .error
            .fallback_class()
            .map(|c| (c, f.attempts, f.upstream_wait)),
        Ok(_) => None,
    };
    if let Some((class, mut attempts, mut waited)) = failed_class {
        for target in gw.models.class_fallbacks(&route, class) {
            let mut more = gw
                .models
                .plan_fallback(&route, target, needs.as_ref())
                .candidates;
            if route_local {
                more.retain(|d| d.provider.locality == Locality::OnPrem);
            }
            if more.is_empty() {
                continue;
            }
            let next = dispatch(target, &more, endpoint, &ctx.request_id, &attempt, |d| {
                encode(
                    &body,
                    &p,
                    d,
                    wants_usage_injected && d.provider.stream_usage,
                )
            })
            .await;
            match next {
                Ok(mut ok) => {
                    ok.attempts += attempts;
                    ok.upstream_wait += waited;
                    ok.fallback_reason = Some(class.as_str());
                    result = Ok(ok);
                    break;
                }
                Err(mut f) => {
                    attempts += f.attempts;
                    waited += f.upstream_wait;
                    f.attempts = attempts;
                    f.upstream_wait = waited;
                    result = Err(f);
                }
            }
        }
    }
    mark(settle_slot, "dispatch");
    let ok = match result {
        Ok(ok) => ok,
        Err(fail) => {
            if let Some(s) = settle_slot.as_mut() {
                s.rec.attempts = fail.attempts;
                if let Some(d) = fail.deployment {
                    s.set_catalog(d.price, &gw.models.catalog_version);
                    s.rec.provider = Some(d.provider.name.clone());
                    s.rec.deployment_model = Some(d.model.clone());
                }
                s.rec.overhead_us = Some(overhead(ctx.start, fail.upstream_wait));
            }
            return Err(fail.error.into());
        }
    };
    let route_info = RouteInfo {
        attempts: ok.attempts,
        fallback_reason: ok
            .fallback_reason
            .or(context_fallback.then_some("context_window_exceeded")),
        route_reason: if let Some(why) = complexity_reason {
            why
        } else if ok.hedge.as_ref().is_some_and(|h| h.won_by_hedge) {
            "hedged"
        } else {
            route_reason(&route, ok.deployment, plan.skipped_open)
        },
    };
    let d = ok.deployment;
    if let Some(loser) = ok.hedge.as_ref().and_then(|h| h.cancelled) {
        record_cancelled_hedge(
            app,
            ctx,
            settle_slot.as_ref(),
            &p,
            loser,
            &gw.models.catalog_version,
        );
    }
    let Some(mut settle) = settle_slot.take() else {
        return Err(ApiError::Internal("settle state missing".into()));
    };
    settle.rec.attempts = ok.attempts;
    settle.rec.route_reason = Some(route_info.route_reason);
    settle.rec.fallback_reason = route_info.fallback_reason;
    settle.set_catalog(d.price, &gw.models.catalog_version);
    settle.rec.provider = Some(d.provider.name.clone());
    settle.rec.deployment_model = Some(d.model.clone());

    // respond
    let upstream = ok.response;
    let is_sse = upstream
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/event-stream"));
    let mut builder = http::Response::builder().status(upstream.status);
    if let Some(ct) = upstream.headers.get(header::CONTENT_TYPE) {
        builder = builder.header(header::CONTENT_TYPE, ct);
    }
    if let Some(v) = upstream.headers.get(&X_SLUICE_DROPPED_PARAMS) {
        builder = builder.header(X_SLUICE_DROPPED_PARAMS, v);
    }
    if p.stream && is_sse {
        let overhead_us = overhead(ctx.start, ok.upstream_wait);
        settle.rec.overhead_us = Some(overhead_us);
        let strip = wants_usage_injected && d.provider.stream_usage;
        let guard = (!output_rules.is_empty() || vault.has_reversible())
            .then(|| StreamGuard::new(policies.clone(), output_rules, vault));
        let tap = TapBody::new(
            upstream.body,
            strip,
            guard,
            ok.limits.idle,
            settle,
            d.provider.name.clone(),
        )
        .holding(ok.in_flight)
        .prefetched(ok.first_chunk)
        .ending_by(ok.limits.total.map(|t| ok.sent + t));
        builder = builder
            .header(header::CACHE_CONTROL, "no-cache")
            .header("x-accel-buffering", "no");
        let resp = builder
            .body(Body::new(tap))
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        return Ok(with_rate_headers(
            with_route_headers(resp, d, overhead_us, &route_info),
            rate_headers,
        ));
    }

    let collect_started = Instant::now();
    let collect_limit = ok.limits.total.map_or(ok.limits.headers, |t| {
        t.saturating_sub(ok.sent.elapsed()).min(ok.limits.headers)
    });
    let collected = tokio::time::timeout(collect_limit, upstream.body.collect()).await;
    let collect_wait = collect_started.elapsed();
    let bytes = match collected {
        Ok(Ok(c)) => c.to_bytes(),
        Ok(Err(e)) => {
            settle.rec.overhead_us = Some(overhead(ctx.start, ok.upstream_wait + collect_wait));
            let err = ApiError::from(UpstreamError::new(
                &d.provider.name,
                d.provider.target(endpoint),
                UpstreamErrorKind::Protocol(format!("response body interrupted: {e}")),
            ));
            settle.finish_error(&err);
            return Err(err);
        }
        Err(_) => {
            settle.rec.overhead_us = Some(overhead(ctx.start, ok.upstream_wait + collect_wait));
            let err = ApiError::from(UpstreamError::new(
                &d.provider.name,
                d.provider.target(endpoint),
                UpstreamErrorKind::Timeout {
                    after: ok.limits.total.unwrap_or(ok.limits.headers),
                },
            ));
            settle.finish_error(&err);
            return Err(err);
        }
    };
    settle.set_usage(from_openai_json(&bytes));
    // guard_output
    let bytes = if (output_rules.is_empty() && !vault.has_reversible())
        || !upstream.status.is_success()
    {
        bytes
    } else {
        let rules: Vec<&Rule> = output_rules
            .iter()
            .filter_map(|&i| policies.rules.get(i))
            .collect();
        match output::guard_json(&rules, &mut vault, &bytes, &mut settle.rec.policy_hits) {
            Ok(Some(b)) => b,
            Ok(None) => bytes,
            Err(e) => {
                settle.rec.overhead_us = Some(overhead(ctx.start, ok.upstream_wait + collect_wait));
                let err = ApiError::from(e);
                settle.finish_error(&err);
                return Err(err);
            }
        }
    };
    let overhead_us = overhead(ctx.start, ok.upstream_wait + collect_wait);
    settle.rec.overhead_us = Some(overhead_us);
    let status = upstream.status.as_u16();
    settle.capture(&bytes);
    builder = builder.header(header::CONTENT_LENGTH, bytes.len());
    let resp = builder
        .body(Body::from(bytes))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    settle.finish(status, None);
    drop(ok.in_flight);
    Ok(with_rate_headers(
        with_route_headers(resp, d, overhead_us, &route_info),
        rate_headers,
    ))
}

fn mark(slot: &Option<Settle>, step: &'static str) {
    if let Some(s) = slot {
        s.mark(step);
    }
}

/// Output tokens assumed when a request sets no `max_tokens` / `max_completion_tokens`.
pub const DEFAULT_OUTPUT_ESTIMATE: u64 = 1024;

/// The admission estimate: prompt bytes / 4 plus the output allowance, and its worst-case
/// cost at the dearest price the route may use.
fn estimate(p: &Peek<'_>, price: Option<Price>) -> (u64, i64) {
    let input = (p.prompt_bytes as u64).div_ceil(4);
    let output = p.max_tokens.unwrap_or(DEFAULT_OUTPUT_ESTIMATE);
    let cost = price.map_or(0, |pr| pr.worst_case(input, output));
    (input + output, cost)
}

fn with_rate_headers(mut resp: Response, r: Option<RateHeaders>) -> Response {
    if let Some(r) = r {
        put_rate_headers(resp.headers_mut(), &r);
    }
    resp
}

fn overhead(start: Instant, upstream_wait: std::time::Duration) -> u64 {
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
const X_SLUICE_DROPPED_PARAMS: HeaderName = HeaderName::from_static("x-sluice-dropped-params");
const X_SLUICE_OVERHEAD_US: HeaderName = HeaderName::from_static("x-sluice-overhead-us");

/// What routing did, for the response headers.
struct RouteInfo {
    attempts: u32,
    fallback_reason: Option<&'static str>,
    route_reason: &'static str,
}

/// Why this deployment: the route's strategy, or that earlier candidates were unavailable.
fn route_reason(route: &Route, d: &Deployment, skipped_open: u32) -> &'static str {
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
fn timeout_overrides(headers: &http::HeaderMap) -> Overrides {
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

/// The attempt a hedge cancelled gets its own usage record (`<request id>:hedge`, status
/// 499, `hedge_cancelled`): the provider may bill for what it started.
fn record_cancelled_hedge(
    app: &AppState,
    ctx: &RequestCtx,
    settle: Option<&Settle>,
    p: &Peek<'_>,
    loser: &Deployment,
    catalog_version: &std::sync::Arc<str>,
) {
    let mut s = Settle::new(
        app.sink.clone(),
        ctx,
        settle.map_or("openai.chat", |s| s.rec.surface),
    );
    s.rec.request_id = format!("{}:hedge", ctx.request_id);
    s.rec.requested_model = p.model.to_string();
    s.rec.streamed = p.stream;
    s.rec.attempts = 1;
    s.rec.provider = Some(loser.provider.name.clone());
    s.rec.deployment_model = Some(loser.model.clone());
    s.set_catalog(loser.price, catalog_version);
    s.finish(499, Some("hedge_cancelled"));
}

fn with_route_headers(
    mut resp: Response,
    d: &Deployment,
    overhead_us: u64,
    info: &RouteInfo,
) -> Response {
    let h = resp.headers_mut();
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
    resp
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
