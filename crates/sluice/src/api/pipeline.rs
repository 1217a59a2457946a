//! The chat pipeline: one inference request from its body to its answer, as the named steps
//! of `app.rs`, each a function with typed input and output, called in order from [`stages`]:
//!
//! parse → guard_input → cache_lookup → route → admit → dispatch → guard_output/respond →
//! settle (the request's [`Ledger`] closes exactly once, whatever path it takes).
//!
//! Every surface calls [`run`]: the OpenAI endpoints with the client's bytes, the Anthropic,
//! Responses and completions surfaces with the OpenAI body they translated to. The answer is
//! the provider's (or the policy-rewritten) OpenAI bytes, whole or as a stream.

use crate::api::openai::passthrough::{self, input_estimate, output_reservation, PeekFn};
use crate::api::openai::peek::Peek;
use crate::api::openai::stream::TapBody;
use crate::api::settle::{AttemptLine, Ledger};
use crate::api::{read_body, RequestCtx};
use crate::app::{AppState, Gateway};
use crate::canonical::usage::from_openai_json;
use crate::config::{Locality, Strategy};
use crate::error::{put_rate_headers, ApiError};
use crate::policy::auth::Principal;
use crate::policy::content::input::{self, InputOutcome};
use crate::policy::content::stream::StreamGuard;
use crate::policy::content::{output, PolicyError, Rule, Subject, Vault};
use crate::policy::governance::Reservation;
use crate::policy::limits::RateHeaders;
use crate::providers::{Endpoint, UpstreamError, UpstreamErrorKind};
use crate::router::catalog::{Missing, Needs};
use crate::router::classify;
use crate::router::dispatch::{dispatch as send, Attempt, Dispatched, FailedAttempt};
use crate::router::{Plan, Route};
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{header, HeaderMap, StatusCode};
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::Instant;

/// The error class of a request still open when shutdown's drain timeout ran out.
pub const DRAIN_TIMEOUT: &str = "drain_timeout";

/// What a surface hands the pipeline.
pub struct Inbound<'h> {
    /// The client's headers (per-request timeouts, trace context, Content-Length).
    pub headers: &'h HeaderMap,
    /// The OpenAI-format body (read here, so oversized bodies are recorded as 413s).
    pub body: Body,
    pub endpoint: Endpoint,
    /// Recorded on the usage record, e.g. `openai.chat`, `anthropic.messages`.
    pub surface: &'static str,
    pub peek: PeekFn,
}

/// The pipeline's answer: the provider's status and OpenAI bytes (or stream), with the
/// gateway's headers (x-sluice-*, rate limits).
pub struct Answered {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: AnswerBody,
}

pub enum AnswerBody {
    Whole(Bytes),
    /// Closes the request's ledger when it ends, fails or is dropped.
    Stream(Box<TapBody>),
}

impl Answered {
    pub fn is_stream(&self) -> bool {
        matches!(self.body, AnswerBody::Stream(_))
    }

    pub fn into_response(self) -> Response {
        let mut resp = match self.body {
            AnswerBody::Whole(b) => Response::new(Body::from(b)),
            AnswerBody::Stream(tap) => Response::new(Body::new(*tap)),
        };
        *resp.status_mut() = self.status;
        *resp.headers_mut() = self.headers;
        resp
    }
}

/// Runs one request through every step. The ledger is closed on every path: on an error
/// here, on the answer for a whole body, by the stream body otherwise, and in `Drop` when
/// the client goes away first. Shutdown's drain running out ends it too (`drain_timeout`).
pub async fn run(
    app: &AppState,
    ctx: &RequestCtx,
    inbound: Inbound<'_>,
) -> Result<Answered, ApiError> {
    let mut ledger = Some(Ledger::new(app.sink.clone(), ctx, inbound.surface));
    let trace = crate::telemetry::otel::RequestTrace::start(inbound.headers);
    if let (Some(t), Some(l)) = (&trace, ledger.as_mut()) {
        l.trace = Some(t.clone());
    }
    let outcome = {
        // Boxed: the steps' state is large (every nested future), and the futures around it
        // (select, the handler, axum's and tower's wrappers) would otherwise copy it on
        // every move — about 100 KB per request, measured with callgrind.
        let pipeline = Box::pin(stages(app, ctx, inbound, &mut ledger));
        let pipeline = async {
            match &trace {
                Some(t) => t.clone().scope(pipeline).await,
                None => pipeline.await,
            }
        };
        tokio::select! {
            r = pipeline => Some(r),
            () = app.drain_expired.cancelled() => None,
        }
    };
    let result = outcome.unwrap_or_else(|| {
        // Shutdown's drain ran out before the answer: recorded, then the connection closes.
        if let Some(l) = ledger.take() {
            l.finish(
                StatusCode::SERVICE_UNAVAILABLE.as_u16(),
                Some(DRAIN_TIMEOUT),
            );
        }
        Err(ApiError::ShuttingDown)
    });
    if let (Err(e), Some(l)) = (&result, ledger.take()) {
        l.finish_error(e);
    }
    result
}

/// The steps, in order. `slot` holds the ledger until respond hands it to the answer.
async fn stages(
    app: &AppState,
    ctx: &RequestCtx,
    inbound: Inbound<'_>,
    slot: &mut Option<Ledger>,
) -> Result<Answered, ApiError> {
    let gw = app.gateway.load();
    let Some(ledger) = slot.as_mut() else {
        return Err(ApiError::Internal("the request's ledger is missing".into()));
    };
    let (headers, endpoint, peek) = (inbound.headers, inbound.endpoint, inbound.peek);
    let parsed = parse(app, &gw, ctx, ledger, inbound).await?;
    ledger.mark("parse");
    let mut guarded = guard_input(&gw, ctx, ledger, parsed, endpoint, peek).await?;
    ledger.mark("guard_input");
    let fill = match cache_lookup(app, &gw, ctx, ledger, &guarded, headers, endpoint).await? {
        CacheStep::Hit(answer) => {
            if let Some(l) = slot.take() {
                l.finish(answer.status.as_u16(), None);
            }
            return Ok(answer);
        }
        CacheStep::Go(fill) => fill,
    };
    let resolved = resolve_route(&gw, ctx, &guarded)?;
    let plan = plan(&gw, &resolved, &guarded)?;
    ledger.mark("route");
    let admitted = admit(
        app,
        &gw,
        ctx,
        ledger,
        &mut guarded,
        &resolved.route,
        peek,
        None,
    )
    .await?;
    ledger.mark("admit");
    let dispatched = dispatch(
        &gw, ctx, ledger, &guarded, &resolved, &plan, &admitted, headers, endpoint,
    )
    .await?;
    ledger.mark("dispatch");
    let Some(ledger) = slot.take() else {
        return Err(ApiError::Internal("the request's ledger is missing".into()));
    };
    let outcome = ledger.rec.cache;
    let mut answered = respond(
        app, &gw, ctx, ledger, guarded, &resolved, &plan, &admitted, dispatched, endpoint, fill,
    )
    .await?;
    if let Some(o) = outcome {
        answered
            .headers
            .insert(X_SLUICE_CACHE, http::HeaderValue::from_static(o));
    }
    Ok(answered)
}

const X_SLUICE_CACHE: http::HeaderName = http::HeaderName::from_static("x-sluice-cache");
const X_SLUICE_CACHE_TTL: http::HeaderName = http::HeaderName::from_static("x-sluice-cache-ttl");

/// What parse learned: the body and the few fields the gateway reads.
struct Parsed {
    body: Bytes,
    p: Peek<'static>,
}

/// Step parse: body size limit (413), UTF-8, JSON, model, stream, output limit, prompt size.
async fn parse(
    app: &AppState,
    gw: &Gateway,
    ctx: &RequestCtx,
    ledger: &mut Ledger,
    inbound: Inbound<'_>,
) -> Result<Parsed, ApiError> {
    let body = read_body(
        inbound.headers,
        inbound.body,
        gw.config.server.max_body_bytes,
    )
    .await?;
    let p = (inbound.peek)(&body)?.into_owned();
    ledger.rec.requested_model = p.model.to_string();
    ledger.rec.streamed = p.stream;
    ledger.rec.request_hash = Some(request_hash(ledger.rec.surface, &body));
    ledger.prompt_estimate = input_estimate(&p);
    ledger.unpriced_allowed = gw.config.governance.unpriced_allowed;
    let compliance = &gw.config.usage.compliance;
    if crate::api::settle::compliance_applies(compliance, &app.gov, &ctx.principal) {
        ledger.start_capture(&body, compliance.redact.clone());
    }
    Ok(Parsed { body, p })
}

/// XXH3-64 of the body as received, seeded with the surface's hash: equal values are
/// identical requests (`/admin/insights` counts repeats a cache would have answered). A
/// stable, non-cryptographic hash: about a hundred instructions for a small body.
fn request_hash(surface: &str, body: &[u8]) -> u64 {
    use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};
    xxh3_64_with_seed(body, xxh3_64(surface.as_bytes()))
}

/// The request after its input rules.
struct Guarded {
    body: Bytes,
    p: Peek<'static>,
    vault: Vault,
    /// A `route_local` rule matched: only on-prem deployments may serve it.
    route_local: Option<Arc<str>>,
    /// Output rules that apply (chat answers only).
    output_rules: Vec<usize>,
}

/// Step guard_input: content rules whose stage includes input and whose scope matches.
/// With no applicable rule the body is not parsed.
async fn guard_input(
    gw: &Gateway,
    ctx: &RequestCtx,
    ledger: &mut Ledger,
    parsed: Parsed,
    endpoint: Endpoint,
    peek: PeekFn,
) -> Result<Guarded, ApiError> {
    let Parsed { body, p } = parsed;
    let policies = &gw.config.policies;
    let subject = Subject {
        team: ctx.team.as_deref(),
        key_id: ctx.key_id.as_deref(),
        model: &p.model,
    };
    let input_rules = policies.select(&subject, false);
    // Embeddings answers are vectors: only chat answers have an output stage.
    let output_rules = if endpoint == Endpoint::ChatCompletions {
        policies.select(&subject, true)
    } else {
        Vec::new()
    };
    let outcome = if input_rules.is_empty() {
        InputOutcome::default()
    } else {
        let rules: Vec<&Rule> = input_rules
            .iter()
            .filter_map(|&i| policies.rules.get(i))
            .collect();
        let r = input::guard(&rules, &body, &mut ledger.rec.policy_hits).await;
        r?
    };
    let (body, p) = match outcome.body {
        Some(b) => {
            let p2 = peek(&b)?.into_owned();
            (b, p2)
        }
        None => (body, p),
    };
    Ok(Guarded {
        body,
        p,
        vault: outcome.vault,
        route_local: outcome.route_local,
        output_rules,
    })
}

/// What the cache step decided.
enum CacheStep {
    /// Answered from the cache (the ledger is closed).
    Hit(Answered),
    /// On to route; the answer is stored through the fill when there is one.
    Go(Option<CacheFill>),
}

/// Where a fresh answer is stored (a miss, or `Cache-Control: no-cache`).
pub struct CacheFill {
    app: AppState,
    key: crate::cache::Key,
    ttl: std::time::Duration,
    route: Arc<str>,
    team: Option<Arc<str>>,
    /// Semantic routes: the last turn's probe and embedding, indexed with the answer.
    semantic: Option<(crate::cache::semantic::Probe, Arc<[f32]>)>,
}

impl CacheFill {
    /// Stores a successful answer (OpenAI JSON) and what it cost.
    pub fn store(self, body: Bytes, cost_micro_usd: Option<i64>) {
        crate::telemetry::metrics::cache_stored();
        if let Some((probe, vector)) = &self.semantic {
            self.app
                .semantic
                .insert(probe, vector.clone(), self.key, self.ttl);
            if let Some(r) = self.app.cache.redis() {
                r.share_semantic(crate::cache::redis::SemanticShare {
                    context: hex::encode(probe.context),
                    key: hex::encode(self.key),
                    critical: probe.critical.clone(),
                    vector: vector.to_vec(),
                    ttl_ms: u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX),
                });
            }
        }
        self.app.cache.put(
            self.key,
            crate::cache::Entry {
                body,
                stored: Instant::now(),
                ttl: self.ttl,
                cost_micro_usd,
                route: self.route,
                team: self.team,
            },
        );
    }
}

/// Step cache_lookup: for routes with a cache (the `cache:` section, or the route's own
/// `cache:`), the answer stored for the same normalised request in the same scope is served
/// in the client's shape — a hit counts against request limits, never against budgets, and
/// costs nothing. `Cache-Control: no-cache` skips the lookup (the answer is still stored),
/// `no-store` skips both, `x-sluice-cache-ttl` sets how long a fresh answer is kept. Requests
/// with reversible redaction are never cached: their answers carry restored originals.
#[allow(clippy::too_many_arguments)]
async fn cache_lookup(
    app: &AppState,
    gw: &Gateway,
    ctx: &RequestCtx,
    ledger: &mut Ledger,
    g: &Guarded,
    headers: &HeaderMap,
    endpoint: Endpoint,
) -> Result<CacheStep, ApiError> {
    use crate::config::cache::{CacheScope, RouteCache, DEFAULT_TTL};
    // No cache anywhere (the common case): nothing to resolve or hash.
    if !matches!(endpoint, Endpoint::ChatCompletions | Endpoint::Embeddings)
        || (gw.config.cache.is_none() && !gw.models.any_route_cache)
    {
        return Ok(CacheStep::Go(None));
    }
    let Some(route) = gw.models.resolve(&g.p.model) else {
        return Ok(CacheStep::Go(None));
    };
    let global = gw.config.cache.as_ref();
    let mut ttl = match (route.cache, global) {
        (RouteCache::Off, _) | (RouteCache::Inherit, None) => return Ok(CacheStep::Go(None)),
        (RouteCache::On { ttl, .. }, _) => ttl.or(global.map(|c| c.ttl)).unwrap_or(DEFAULT_TTL),
        (RouteCache::Inherit, Some(c)) => c.ttl,
    };
    let control = headers
        .get(header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if control.contains("no-store") || g.vault.has_reversible() {
        crate::telemetry::metrics::cache_lookup("bypass");
        ledger.rec.cache = Some("bypass");
        return Ok(CacheStep::Go(None));
    }
    if let Some(t) = headers
        .get(&X_SLUICE_CACHE_TTL)
        .and_then(|v| v.to_str().ok())
    {
        let t = t.trim();
        let asked = t
            .parse::<u64>()
            .map(std::time::Duration::from_secs)
            .or_else(|_| crate::config::units::parse_duration(t))
            .map_err(|_| {
                ApiError::bad_request(
                    format!(
                        "`x-sluice-cache-ttl` must be seconds or a duration such as 10m, got {t:?}"
                    ),
                    None,
                )
            })?;
        ttl = asked.min(crate::cache::MAX_TTL);
    }
    let scope = global.map_or(CacheScope::Team, |c| c.scope);
    let principal = ctx.key_id.as_deref().unwrap_or(ctx.principal.label());
    let sid = crate::cache::scope_id(scope, ctx.team.as_deref(), principal);
    let Some(key) = crate::cache::key(&route.name, &sid, &g.body) else {
        ledger.rec.cache = Some("bypass");
        return Ok(CacheStep::Go(None));
    };
    let semantic = match route.cache {
        RouteCache::On {
            semantic: true,
            semantic_tools,
            ..
        } => global
            .and_then(|c| c.semantic.as_ref())
            .map(|s| (s, semantic_tools)),
        _ => None,
    };
    let mut fill = CacheFill {
        app: app.clone(),
        key,
        ttl,
        route: route.name.clone(),
        team: ctx.team.clone(),
        semantic: None,
    };
    // `no-cache`: no lookup (exact or semantic); the fresh answer is still stored.
    let look = !control.contains("no-cache");
    let exact = if look {
        app.cache
            .lookup(&key, &route.name, ctx.team.as_deref())
            .await
    } else {
        crate::cache::Lookup::Miss
    };
    match exact {
        crate::cache::Lookup::Hit(e) => {
            return serve_hit(app, ctx, ledger, g, e, "hit", fill).await
        }
        // The cache never fails a request: its backend failing is a miss, not stored again
        // (the backend is away).
        crate::cache::Lookup::Failed => {
            crate::telemetry::metrics::cache_lookup("bypass");
            ledger.rec.cache = Some("bypass");
            return Ok(CacheStep::Go(None));
        }
        crate::cache::Lookup::Miss => {}
    }
    if let Some((sem, tools_ok)) = semantic {
        if let Some(probe) = crate::cache::semantic::probe(&route.name, &sid, &g.body, tools_ok) {
            match crate::cache::embed::embed(gw, sem, &probe.text, &ctx.request_id).await {
                Ok(em) => {
                    crate::cache::embed::healthy();
                    ledger.rec.attempt_log.push(em.line);
                    let vector: Arc<[f32]> = em.vector.into();
                    let found = look
                        .then(|| app.semantic.find(&probe, &vector, sem.threshold))
                        .flatten();
                    if let Some((similar, _)) = found {
                        if let crate::cache::Lookup::Hit(e) = app
                            .cache
                            .lookup(&similar, &route.name, ctx.team.as_deref())
                            .await
                        {
                            app.cache.semantic_hit();
                            return serve_hit(app, ctx, ledger, g, e, "semantic-hit", fill).await;
                        }
                    }
                    fill.semantic = Some((probe, vector));
                }
                Err(e) => {
                    crate::cache::embed::failed(&e);
                    crate::telemetry::metrics::cache_lookup("bypass");
                    ledger.rec.cache = Some("bypass");
                    return Ok(CacheStep::Go(Some(fill)));
                }
            }
        }
    }
    let outcome = if look { "miss" } else { "bypass" };
    crate::telemetry::metrics::cache_lookup(outcome);
    ledger.rec.cache = Some(outcome);
    Ok(CacheStep::Go(Some(fill)))
}

/// Answers from a stored entry (`outcome`: `hit` or `semantic-hit`) in the client's shape.
/// Requests per minute and concurrency apply; nothing is reserved or charged.
async fn serve_hit(
    app: &AppState,
    ctx: &RequestCtx,
    ledger: &mut Ledger,
    g: &Guarded,
    entry: Arc<crate::cache::Entry>,
    outcome: &'static str,
    fill: CacheFill,
) -> Result<CacheStep, ApiError> {
    let mut out_headers = HeaderMap::new();
    if let Principal::Key(k) = &ctx.principal {
        let r = Reservation {
            price: Some(crate::policy::prices::Price::default()),
            unpriced_allowed: true,
            ..Reservation::default()
        };
        if let Some(a) = app.gov.admit(k, &g.p.model, &r).await? {
            put_rate_headers(&mut out_headers, &a.headers());
            ledger.admission = Some(a);
        }
    }
    let (body, content_type) = if g.p.stream {
        let sse = crate::cache::sse_from_json(&entry.body, g.p.include_usage == Some(true));
        (sse, "text/event-stream")
    } else {
        (Some(entry.body.clone()), "application/json")
    };
    let Some(body) = body else {
        crate::telemetry::metrics::cache_lookup("bypass");
        ledger.rec.cache = Some("bypass");
        return Ok(CacheStep::Go(Some(fill)));
    };
    crate::telemetry::metrics::cache_lookup(outcome);
    ledger.rec.cache = Some(outcome);
    ledger.rec.cost_saved_micro_usd = entry.cost_micro_usd;
    ledger.rec.route_reason = Some("cache_hit");
    ledger.price = Some(crate::policy::prices::Price::default());
    ledger.set_usage(Some(crate::canonical::Usage::default()));
    if let Some(c) = entry.cost_micro_usd {
        crate::telemetry::metrics::cache_saved(c);
    }
    out_headers.insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    out_headers.insert(header::CONTENT_LENGTH, body.len().into());
    out_headers.insert(X_SLUICE_CACHE, http::HeaderValue::from_static(outcome));
    out_headers.insert(header::AGE, entry.stored.elapsed().as_secs().into());
    ledger.capture(&body);
    Ok(CacheStep::Hit(Answered {
        status: StatusCode::OK,
        headers: out_headers,
        body: AnswerBody::Whole(body),
    }))
}

/// Step route, first half: the model name (or alias, or wildcard) to its route; a
/// `complexity` route picks its simple or hard target here.
struct Resolved {
    route: Arc<Route>,
    complexity_reason: Option<&'static str>,
    /// What the request needs, for capability routing (parsed only for such routes).
    needs: Option<Needs>,
}

fn resolve_route(gw: &Gateway, ctx: &RequestCtx, g: &Guarded) -> Result<Resolved, ApiError> {
    let p = &g.p;
    let not_found = || ApiError::ModelNotFound {
        model: p.model.to_string(),
        available: crate::api::openai::visible_models(gw, &ctx.principal),
    };
    let mut route = gw.models.resolve(&p.model).ok_or_else(not_found)?;
    // Only routes that route by the request's shape parse more of the body.
    let mut shape = None;
    let mut complexity_reason = None;
    if let Some(rules) = &route.complexity {
        let s = classify::shape(&g.body, p.prompt_bytes, p.max_tokens);
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
            .get_or_insert_with(|| classify::shape(&g.body, p.prompt_bytes, p.max_tokens))
            .needs
    });
    Ok(Resolved {
        route,
        complexity_reason,
        needs,
    })
}

/// The candidate sequence and how it was made.
struct Planned<'a> {
    plan: Plan<'a>,
    /// Nothing capable had a large enough context window: a context-window fallback serves.
    context_fallback: bool,
}

/// Step route, second half: the one candidate sequence dispatch follows — priority tiers in
/// the route's strategy, `fallbacks`, the per-class fallbacks — without open breakers, used-up
/// capacity, forbidden localities or missing capabilities; a context window too small moves to
/// a larger-context route at once.
fn plan<'a>(gw: &'a Gateway, r: &'a Resolved, g: &Guarded) -> Result<Planned<'a>, ApiError> {
    let p = &g.p;
    let route = &r.route;
    let mut plan = gw.models.plan_for(route, r.needs.as_ref());
    let mut context_fallback = false;
    if plan.candidates.is_empty() && plan.skipped_capability > 0 {
        let missing = plan.missing.unwrap_or(Missing::ContextWindow);
        match gw.models.plan_larger_context(route, r.needs.as_ref()) {
            Some(larger) if missing == Missing::ContextWindow => {
                plan = larger;
                context_fallback = true;
            }
            _ => {
                return Err(ApiError::bad_request(
                    format!(
                        "no deployment of model `{}` supports what this request needs: {}",
                        p.model,
                        missing.as_str()
                    ),
                    Some(missing.param()),
                ))
            }
        }
    }
    if let Some(rule) = &g.route_local {
        plan.candidates
            .retain(|d| d.provider.locality == Locality::OnPrem);
        plan.conditional
            .retain(|(_, d)| d.provider.locality == Locality::OnPrem);
        if plan.candidates.is_empty() {
            return Err(PolicyError::NoLocalDeployment {
                rule: rule.clone(),
                model: p.model.to_string(),
            }
            .into());
        }
    }
    if plan.candidates.is_empty() && plan.skipped_open == 0 && plan.skipped_locality > 0 {
        return Err(ApiError::LocalOnly {
            model: p.model.to_string(),
            why: if gw.config.mode == crate::config::Mode::OnPrem {
                "`mode: on_prem`"
            } else {
                "the route's `data_policy: local_only`"
            },
        });
    }
    Ok(Planned {
        plan,
        context_fallback,
    })
}

/// What admission decided.
struct Admitted {
    rate_headers: Option<RateHeaders>,
    /// `cap_output`: the output limit the budget could pay, now in the body.
    output_capped: Option<u64>,
    /// Output tokens reserved (for the tpm capacity estimate of deployments).
    output: u64,
}

/// Step admit: for virtual keys, model access, limits and the budget's worst case (the
/// ledger now holds the reservation); master-key and open-gateway requests skip it.
#[allow(clippy::too_many_arguments)]
async fn admit(
    app: &AppState,
    gw: &Gateway,
    ctx: &RequestCtx,
    ledger: &mut Ledger,
    g: &mut Guarded,
    route: &Route,
    peek: PeekFn,
    output: Option<u64>,
) -> Result<Admitted, ApiError> {
    let output = match output {
        Some(n) => n,
        None => output_reservation(&g.p, route, &gw.config.governance)?,
    };
    let mut admitted = Admitted {
        rate_headers: None,
        output_capped: None,
        output,
    };
    let Principal::Key(k) = &ctx.principal else {
        return Ok(admitted);
    };
    let r = Reservation {
        input_tokens: input_estimate(&g.p),
        output_tokens: output,
        price: route.reserve_price.filter(|_| !route.unpriced),
        unpriced_allowed: gw.config.governance.unpriced_allowed,
        cap_output: gw.config.governance.cap_output_when_short,
    };
    let Some(a) = app.gov.admit(k, &g.p.model, &r).await? else {
        return Ok(admitted);
    };
    admitted.rate_headers = Some(a.headers());
    admitted.output_capped = a.output_cap;
    ledger.admission = Some(a);
    if let Some(n) = admitted.output_capped {
        g.body = passthrough::with_output_limit(&g.body, &g.p, n);
        g.p = peek(&g.body)?.into_owned();
        admitted.output = n;
    }
    Ok(admitted)
}

/// Step dispatch: send to the candidate sequence (retries, fallbacks, hedging, breakers).
/// Attempts that did not answer become lines of the ledger.
#[allow(clippy::too_many_arguments)]
async fn dispatch<'a>(
    gw: &Gateway,
    ctx: &RequestCtx,
    ledger: &mut Ledger,
    g: &Guarded,
    r: &Resolved,
    planned: &Planned<'a>,
    admitted: &Admitted,
    headers: &HeaderMap,
    endpoint: Endpoint,
) -> Result<Dispatched<'a>, ApiError> {
    let p = &g.p;
    // Anthropic bodies (passed through to Anthropic) always carry usage in their events.
    let wants_usage_injected =
        p.stream && p.include_usage != Some(true) && endpoint == Endpoint::ChatCompletions;
    let attempt = Attempt {
        start: ctx.start,
        overrides: passthrough::timeout_overrides(headers),
        stream: p.stream,
        tokens: input_estimate(p).saturating_add(admitted.output),
    };
    // Translated Anthropic requests keep settings only native codecs can use.
    let native_only = ledger.rec.surface == crate::api::anthropic::SURFACE
        && endpoint == Endpoint::ChatCompletions;
    // A hang-up from here on leaves a request the provider may bill.
    ledger.mark_sent();
    ledger.price = r.route.reserve_price;
    let result = send(
        &r.route,
        &planned.plan,
        endpoint,
        &ctx.request_id,
        &attempt,
        |d| {
            let body = passthrough::encode(
                &g.body,
                p,
                d,
                wants_usage_injected && d.provider.stream_usage,
            );
            if native_only && d.provider.kind.is_openai_format() {
                passthrough::for_openai_format(&body)
            } else {
                body
            }
        },
    )
    .await;
    match result {
        Ok(ok) => {
            log_attempts(ledger, &ok.failed);
            Ok(ok)
        }
        Err(mut fail) => {
            // The last attempt is the record's own status; the others are its lines.
            fail.failed.pop();
            log_attempts(ledger, &fail.failed);
            ledger.rec.attempts = fail.attempts;
            if let Some(d) = fail.deployment {
                ledger.set_catalog(d.price, &gw.models.catalog_version);
                ledger.rec.provider = Some(d.provider.name.clone());
                ledger.rec.deployment_model = Some(d.model.clone());
            }
            ledger.rec.overhead_us = Some(passthrough::overhead(ctx.start, fail.upstream_wait));
            Err(fail.error.into())
        }
    }
}

/// The attempts that did not answer become lines of the request's record, each charged
/// at its own deployment's price when the provider may bill it.
fn log_attempts(ledger: &mut Ledger, failed: &[FailedAttempt<'_>]) {
    for (i, f) in failed.iter().enumerate() {
        ledger.add_attempt(
            AttemptLine {
                attempt: u32::try_from(i + 1).unwrap_or(u32::MAX),
                provider: f.deployment.provider.name.to_string(),
                model: f.deployment.model.to_string(),
                status: f.status,
                outcome: std::borrow::Cow::Borrowed(f.outcome),
                billed: f.billed,
                input_tokens: None,
                cost_micro_usd: None,
            },
            f.deployment.price,
        );
    }
}

/// Steps guard_output → respond, and settle for whole answers: output rules (and reversible
/// placeholders restored) on the JSON answer, or on the stream as it passes; the gateway's
/// headers. A stream's body closes the ledger when it ends; a whole answer closes it here.
#[allow(clippy::too_many_arguments)]
async fn respond(
    app: &AppState,
    gw: &Gateway,
    ctx: &RequestCtx,
    mut ledger: Ledger,
    g: Guarded,
    r: &Resolved,
    planned: &Planned<'_>,
    admitted: &Admitted,
    ok: Dispatched<'_>,
    endpoint: Endpoint,
    fill: Option<CacheFill>,
) -> Result<Answered, ApiError> {
    let Guarded {
        p,
        mut vault,
        output_rules,
        ..
    } = g;
    let policies = &gw.config.policies;
    let route_info = passthrough::RouteInfo {
        attempts: ok.attempts,
        fallback_reason: ok.fallback_reason.or(planned
            .context_fallback
            .then_some("context_window_exceeded")),
        route_reason: if let Some(why) = r.complexity_reason {
            why
        } else if ok.hedge.as_ref().is_some_and(|h| h.won_by_hedge) {
            "hedged"
        } else {
            passthrough::route_reason(&r.route, ok.deployment, planned.plan.skipped_open)
        },
    };
    let d = ok.deployment;
    ledger.rec.attempts = ok.attempts;
    ledger.rec.route_reason = Some(route_info.route_reason);
    ledger.rec.fallback_reason = route_info.fallback_reason;
    ledger.set_catalog(d.price, &gw.models.catalog_version);
    ledger.rec.provider = Some(d.provider.name.clone());
    ledger.rec.deployment_model = Some(d.model.clone());

    let upstream = ok.response;
    let is_sse = upstream
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/event-stream"));
    let mut headers = HeaderMap::new();
    if let Some(ct) = upstream.headers.get(header::CONTENT_TYPE) {
        headers.insert(header::CONTENT_TYPE, ct.clone());
    }
    if let Some(v) = upstream.headers.get(&passthrough::X_SLUICE_DROPPED_PARAMS) {
        headers.insert(passthrough::X_SLUICE_DROPPED_PARAMS, v.clone());
    }
    if let Some(n) = admitted.output_capped {
        headers.insert(passthrough::X_SLUICE_OUTPUT_CAPPED, n.into());
    }
    if let Some(rh) = &admitted.rate_headers {
        put_rate_headers(&mut headers, rh);
    }

    if p.stream && is_sse {
        let overhead_us = passthrough::overhead(ctx.start, ok.upstream_wait);
        ledger.rec.overhead_us = Some(overhead_us);
        let wants_usage_injected =
            p.include_usage != Some(true) && endpoint == Endpoint::ChatCompletions;
        let strip = wants_usage_injected && d.provider.stream_usage;
        let guard = (!output_rules.is_empty() || vault.has_reversible())
            .then(|| StreamGuard::new(policies.clone(), output_rules, vault));
        let tap = TapBody::new(
            app.drain_expired.clone(),
            upstream.body,
            strip,
            guard,
            ok.limits.idle,
            ledger,
            d.provider.name.clone(),
        )
        .holding(ok.in_flight)
        .filling(fill.filter(|_| upstream.status.is_success()), d.price)
        .prefetched(ok.first_chunk)
        .ending_by(ok.limits.total.map(|t| ok.sent + t));
        headers.insert(
            header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-cache"),
        );
        headers.insert("x-accel-buffering", http::HeaderValue::from_static("no"));
        passthrough::put_route_headers(&mut headers, d, overhead_us, &route_info);
        return Ok(Answered {
            status: upstream.status,
            headers,
            body: AnswerBody::Stream(Box::new(tap)),
        });
    }

    let collect_started = Instant::now();
    let collect_limit = ok.limits.total.map_or(ok.limits.headers, |t| {
        t.saturating_sub(ok.sent.elapsed()).min(ok.limits.headers)
    });
    let collected = tokio::time::timeout(collect_limit, upstream.body.collect()).await;
    let collect_wait = collect_started.elapsed();
    let waited = ok.upstream_wait + collect_wait;
    let fail = |mut ledger: Ledger, kind: UpstreamErrorKind| {
        ledger.rec.overhead_us = Some(passthrough::overhead(ctx.start, waited));
        let err = ApiError::from(UpstreamError::new(
            &d.provider.name,
            d.provider.target(endpoint),
            kind,
        ));
        ledger.finish_error(&err);
        err
    };
    let bytes = match collected {
        Ok(Ok(c)) => c.to_bytes(),
        Ok(Err(e)) => {
            return Err(fail(
                ledger,
                UpstreamErrorKind::Protocol(format!("response body interrupted: {e}")),
            ))
        }
        Err(_) => {
            return Err(fail(
                ledger,
                UpstreamErrorKind::Timeout {
                    after: ok.limits.total.unwrap_or(ok.limits.headers),
                },
            ))
        }
    };
    ledger.set_usage(from_openai_json(&bytes));
    // guard_output
    let bytes =
        if (output_rules.is_empty() && !vault.has_reversible()) || !upstream.status.is_success() {
            bytes
        } else {
            let rules: Vec<&Rule> = output_rules
                .iter()
                .filter_map(|&i| policies.rules.get(i))
                .collect();
            match output::guard_json(&rules, &mut vault, &bytes, &mut ledger.rec.policy_hits) {
                Ok(Some(b)) => b,
                Ok(None) => bytes,
                Err(e) => {
                    ledger.rec.overhead_us = Some(passthrough::overhead(ctx.start, waited));
                    let err = ApiError::from(e);
                    ledger.finish_error(&err);
                    return Err(err);
                }
            }
        };
    let overhead_us = passthrough::overhead(ctx.start, waited);
    ledger.rec.overhead_us = Some(overhead_us);
    ledger.capture(&bytes);
    headers.insert(header::CONTENT_LENGTH, bytes.len().into());
    passthrough::put_route_headers(&mut headers, d, overhead_us, &route_info);
    if let Some(fill) = fill.filter(|_| upstream.status.is_success()) {
        let usage = crate::cache::usage_of(&bytes);
        fill.store(bytes.clone(), d.price.zip(usage).map(|(p, u)| p.cost(&u)));
    }
    // settle
    ledger.finish(upstream.status.as_u16(), None);
    drop(ok.in_flight);
    Ok(Answered {
        status: upstream.status,
        headers,
        body: AnswerBody::Whole(bytes),
    })
}

/// A request that goes through the steps before dispatch and is never sent for generation
/// (`/v1/messages/count_tokens`): authenticated, its input rules applied (a blocked prompt is
/// refused, a redacted one is never sent on), its route resolved and admitted against the
/// caller's limits (no output is reserved), and recorded with zero cost.
pub struct Preflight {
    ledger: Ledger,
    pub route: Arc<Route>,
    /// An input rule rewrote the prompt: it must not be sent on as the client wrote it.
    pub rewritten: bool,
}

impl Preflight {
    /// Closes the ledger: `input_tokens` counted, nothing charged.
    pub fn finish(mut self, input_tokens: u64) {
        self.ledger.price = Some(crate::policy::prices::Price::default());
        self.ledger.set_usage(Some(crate::canonical::Usage {
            input_tokens,
            ..crate::canonical::Usage::default()
        }));
        self.ledger.finish(StatusCode::OK.as_u16(), None);
    }

    /// Closes the ledger with the error the client gets.
    pub fn fail(self, e: &ApiError) {
        self.ledger.finish_error(e);
    }

    /// Closes the ledger with a provider's refusal (its status).
    pub fn refused_upstream(self, status: StatusCode) {
        self.ledger.finish(status.as_u16(), Some("upstream_error"));
    }
}

pub async fn preflight(
    app: &AppState,
    ctx: &RequestCtx,
    inbound: Inbound<'_>,
) -> Result<Preflight, ApiError> {
    let gw = app.gateway.load();
    let mut ledger = Ledger::new(app.sink.clone(), ctx, inbound.surface);
    let (endpoint, peek) = (inbound.endpoint, inbound.peek);
    let steps = async {
        let parsed = parse(app, &gw, ctx, &mut ledger, inbound).await?;
        let original = parsed.body.clone();
        let mut guarded = guard_input(&gw, ctx, &mut ledger, parsed, endpoint, peek).await?;
        let rewritten = guarded.body != original;
        let resolved = resolve_route(&gw, ctx, &guarded)?;
        admit(
            app,
            &gw,
            ctx,
            &mut ledger,
            &mut guarded,
            &resolved.route,
            peek,
            Some(0),
        )
        .await?;
        Ok::<_, ApiError>((resolved.route, rewritten))
    };
    match steps.await {
        Ok((route, rewritten)) => Ok(Preflight {
            ledger,
            route,
            rewritten,
        }),
        Err(e) => {
            ledger.finish_error(&e);
            Err(e)
        }
    }
}

/// For the HTTP adapters: an error as a response, or the answer.
pub fn into_response(r: Result<Answered, ApiError>) -> Response {
    match r {
        Ok(a) => a.into_response(),
        Err(e) => e.into_response(),
    }
}
