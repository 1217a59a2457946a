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
use crate::providers::{Endpoint, UpstreamError, UpstreamErrorKind};
use crate::router::dispatch::{dispatch, Attempt};
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
    let route = gw
        .models
        .resolve(&p.model)
        .ok_or_else(|| ApiError::ModelNotFound {
            model: p.model.to_string(),
            available: super::visible_models(&gw, &ctx.principal),
        })?;

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
    let plan = gw.models.plan(&route);
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
    let wants_usage_injected = p.stream && p.include_usage != Some(true);
    let attempt = Attempt {
        start: ctx.start,
        timeout: timeout_override(&parts.headers),
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
            let mut more = gw.models.plan_fallback(&route, target).candidates;
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
        fallback_reason: ok.fallback_reason,
        route_reason: route_reason(&route, ok.deployment, plan.skipped_open),
    };
    let d = ok.deployment;
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
            d.provider.stream_idle_timeout,
            settle,
            d.provider.name.clone(),
        )
        .holding(ok.in_flight);
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
    let collected = tokio::time::timeout(d.timeout, upstream.body.collect()).await;
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
                UpstreamErrorKind::Timeout { after: d.timeout },
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
const X_SLUICE_ATTEMPTS: HeaderName = HeaderName::from_static("x-sluice-attempts");
const X_SLUICE_ROUTE_REASON: HeaderName = HeaderName::from_static("x-sluice-route-reason");
const X_SLUICE_FALLBACK_REASON: HeaderName = HeaderName::from_static("x-sluice-fallback-reason");
const X_SLUICE_PROVIDER: HeaderName = HeaderName::from_static("x-sluice-provider");
const X_SLUICE_MODEL: HeaderName = HeaderName::from_static("x-sluice-model");
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
    }
}

/// `x-sluice-timeout-ms`: a shorter per-attempt timeout (it never lengthens the configured one).
fn timeout_override(headers: &http::HeaderMap) -> Option<std::time::Duration> {
    let ms: u64 = headers
        .get(&X_SLUICE_TIMEOUT_MS)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (ms > 0).then(|| std::time::Duration::from_millis(ms))
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
/// `stream_options.include_usage` forced on. Untouched bytes are shared, not copied.
pub fn encode(body: &Bytes, p: &Peek<'_>, d: &Deployment, inject_usage: bool) -> Bytes {
    let same_model = body.get(p.model_span.clone()) == Some(&d.model_json[..]);
    if same_model && !inject_usage {
        return body.clone();
    }
    let mut edits: Vec<(Range<usize>, Bytes)> = Vec::with_capacity(2);
    if !same_model {
        edits.push((p.model_span.clone(), d.model_json.clone()));
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
