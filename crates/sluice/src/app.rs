//! Builds the gateway: shared state, the router and its one ingress layer.
//!
//! Every inference request passes these steps, in this order. Steps 3-10 are one function
//! each in `api::pipeline`, called in this order from `pipeline::stages`; every surface (OpenAI
//! chat and embeddings, Anthropic messages, Responses, completions) calls `pipeline::run`.
//!
//! 1. **ingress** (`ingress` below) — request id (an incoming `x-request-id` is kept),
//!    start time, panic catcher; the id is echoed on every response.
//! 2. **authenticate** (`policy::auth`, also in `ingress`) — bearer / `x-api-key` ->
//!    `Principal`. Every route needs it except [`PUBLIC_PATHS`] (and `/metrics` with `server.public_metrics`).
//! 3. **parse** (`pipeline::parse`, `api::openai::peek`) — body size limit (413), UTF-8,
//!    JSON, the fields the gateway needs (model, stream, stream_options, the output limit,
//!    the prompt's size); everything else stays bytes. The request's **ledger** is open from
//!    here: it owns the usage record and closes exactly once on every path (`api::settle`).
//! 4. **guard_input** (`pipeline::guard_input`, `policy::content::input`) — content rules
//!    whose stage includes input and whose scope matches: block (400
//!    `content_policy_violation`), redact (body rebuilt with placeholders), flag, route_local
//!    (step 6 keeps on-prem deployments only). With no applicable rule the body is not parsed.
//!    Blocked requests use up no quota.
//! 5. **cache_lookup** (`pipeline::cache_lookup`) — where the response cache answers; none
//!    yet.
//! 6. **route** (`pipeline::resolve_route`, `pipeline::plan`, `router::ModelTable::plan_for`)
//!    — model name, alias or wildcard -> one candidate sequence: a `complexity` route first
//!    picks its simple or hard target; priority tiers, each ordered by the route's strategy,
//!    then `fallbacks`, then per-class fallbacks (tried only after an error of their class);
//!    open breakers, used-up rpm/tpm capacity, locality and missing capabilities leave
//!    deployments out; a context window too small moves to a context-window fallback at once;
//!    unknown model -> 404 listing the models.
//! 7. **admit** (`pipeline::admit`, `policy::governance`) — for virtual keys: model access
//!    (403), unpriced models on budgets (403 `model_unpriced`), requests / tokens per minute,
//!    concurrency and the budget's worst case (the output limit bounded by the catalog, every
//!    prompt byte, the dearest candidate's price) for the key, its user, team and parents,
//!    reserved in memory (429 with `Retry-After`; `cap_output` lowers the output limit
//!    instead). Master key and open gateway requests skip it.
//! 8. **dispatch** (`pipeline::dispatch`, `router::dispatch`) — splice the provider's model
//!    name into the body, send, retry (next candidate, then backoff) only on a retryable error
//!    before any byte reached the client, within the route's attempts and deadline; per-class
//!    fallbacks; per-deployment first-token / idle / total timeouts; opt-in hedging; feeds
//!    breakers, latency and learned rate limits. Attempts that did not answer become lines of
//!    the ledger.
//! 9. **guard_output -> respond** (`pipeline::respond`, `policy::content::{output, stream}`,
//!    `api::openai::stream`) — output rules and reversible-placeholder restore on the JSON
//!    answer, or on the SSE stream with a bounded look-behind window; JSON as one body;
//!    SSE forwarded chunk by chunk; `x-sluice-*` and rate-limit headers.
//! 10. **settle** (`api::settle::Ledger`) — the ledger closes: on the whole answer in respond,
//!     when the stream ends, fails or is dropped, on any error, and in `Drop` when the client
//!     hung up or shutdown's drain ran out. It charges what the provider can bill (the rules in
//!     docs/governance.md), trues up the reservation and sends one usage record to the
//!     batching sink, which shutdown drains.
//!
//! The admin API (`/admin/...`, `api::admin`) shares steps 1 and 2; each of its routes then
//! passes the role gate of `policy::roles` (so does `/metrics`). `POST /v1/feedback`
//! (`api::feedback`) takes a quality score from the key that made a request or an admin.
//! The dashboard (`/ui`, `api::ui`) is static assets that call the admin API.

use crate::api::{self, RequestCtx};
use crate::config::Config;
use crate::error::ApiError;
use crate::policy::auth::Authenticator;
use crate::policy::governance::Governance;
use crate::providers::Provider;
use crate::router::ModelTable;
use crate::store::responses::ResponseStore;
use crate::store::Store;
use crate::store::UsageSink;
use arc_swap::ArcSwap;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use futures_util::FutureExt;
use http::HeaderValue;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio_util::task::TaskTracker;

/// Routes that answer without credentials. Nothing else does. The dashboard's static assets
/// are public (they hold no data); every figure they show comes from the admin API, which
/// the page calls with the key its user typed (`api::ui`).
pub const PUBLIC_PATHS: &[&str] = &[
    "/health/live",
    "/health/ready",
    "/ui",
    "/ui/",
    "/ui/app.js",
    "/ui/app.css",
];

/// Everything built from one config; swapped whole on reload.
pub struct Gateway {
    pub config: Config,
    pub providers: Vec<Arc<Provider>>,
    pub models: ModelTable,
    pub auth: Authenticator,
}

impl Gateway {
    pub fn build(config: Config) -> Result<Self, String> {
        Self::build_after(config, None)
    }

    /// Builds from `config`, keeping the routing state (breakers, latency) of deployments
    /// that `previous` also had.
    pub fn build_after(config: Config, previous: Option<&Gateway>) -> Result<Self, String> {
        let providers = config
            .providers
            .iter()
            .map(|p| Provider::from_config(p).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let models = ModelTable::build_with(&config, &providers, previous.map(|g| &g.models));
        let auth = Authenticator::new(config.server.master_key.clone());
        Ok(Self {
            config,
            providers,
            models,
            auth,
        })
    }
}

pub struct Shared {
    pub gateway: ArcSwap<Gateway>,
    pub sink: UsageSink,
    pub store: Store,
    /// Stored Responses API objects (`store: true`).
    pub responses: Arc<ResponseStore>,
    pub gov: Arc<Governance>,
    /// The response cache (its size is read at start; entries survive config reloads).
    pub cache: crate::cache::ResponseCache,
    /// The semantic cache's index of last turns (routes with `cache: {semantic: true}`).
    pub semantic: crate::cache::semantic::SemanticIndex,
    pub tracker: TaskTracker,
    pub shutting_down: AtomicBool,
    /// Set once authentication was ever required (see [`Shared::auth_open`]); never unset.
    auth_closed: AtomicBool,
    /// Fired when shutdown's drain timeout runs out: requests and streams still open close
    /// their ledgers (`drain_timeout`) and end.
    pub drain_expired: tokio_util::sync::CancellationToken,
    pub started_unix: i64,
    /// This replica and, in fleet mode, the others (`GET /admin/replicas`).
    pub replicas: Arc<crate::fleet::Replicas>,
    request_seq: AtomicU64,
    request_prefix: u32,
}

#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl Shared {
    /// The authentication mode: open (no credentials) only while no master key has been
    /// configured and the store has never held a key. Keys are never deleted, only revoked,
    /// so "ever held" is "holds any, revoked included"; revoking the last key must not open
    /// the gateway (and its admin API) again. Once closed, closed for the life of the process,
    /// also when a reload drops the master key.
    pub fn auth_open(&self) -> bool {
        if self.auth_closed.load(Ordering::Relaxed) {
            return false;
        }
        if self.gateway.load().auth.has_master_key() || !self.gov.index().keys.is_empty() {
            self.auth_closed.store(true, Ordering::Relaxed);
            return false;
        }
        true
    }
}

impl AppState {
    pub fn new(
        gateway: Gateway,
        sink: UsageSink,
        store: Store,
        gov: Arc<Governance>,
        tracker: TaskTracker,
        replicas: Arc<crate::fleet::Replicas>,
    ) -> Self {
        let cache_bytes = gateway
            .config
            .cache
            .as_ref()
            .map_or(crate::config::cache::DEFAULT_MAX_SIZE, |c| c.max_size);
        // `cache.backend: redis` (config validation made sure `redis:` is there). A client
        // that cannot even be built (a bad URL) leaves the cache in memory, said loudly.
        let cache_redis = match (&gateway.config.cache, &gateway.config.redis) {
            (Some(c), Some(r)) if c.backend == crate::config::cache::CacheBackend::Redis => {
                crate::cache::redis::RedisCache::new(r)
                    .map_err(|e| tracing::error!("the response cache cannot use redis: {e}"))
                    .ok()
            }
            _ => None,
        };
        Self(Arc::new(Shared {
            gateway: ArcSwap::from_pointee(gateway),
            sink,
            responses: Arc::new(ResponseStore::new(store.pool().clone())),
            store,
            gov,
            cache: crate::cache::ResponseCache::new(cache_bytes, cache_redis),
            semantic: crate::cache::semantic::SemanticIndex::new(100_000),
            tracker,
            shutting_down: AtomicBool::new(false),
            auth_closed: AtomicBool::new(false),
            drain_expired: tokio_util::sync::CancellationToken::new(),
            started_unix: unix_ms() / 1000,
            replicas,
            request_seq: AtomicU64::new(0),
            request_prefix: rand::random(),
        }))
    }

    fn next_request_id(&self) -> String {
        let n = self.request_seq.fetch_add(1, Ordering::Relaxed);
        format!("req_{:08x}{:012x}", self.request_prefix, n)
    }
}

pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The router with every route and the ingress layer (see the module docs for the order).
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(api::openai::chat_completions))
        .route("/chat/completions", post(api::openai::chat_completions))
        .route(
            "/v1/completions",
            post(api::openai::completions::completions),
        )
        .route("/completions", post(api::openai::completions::completions))
        .merge(api::openai::responses::routes())
        .route("/v1/embeddings", post(api::openai::embeddings))
        .route("/embeddings", post(api::openai::embeddings))
        .route("/v1/models", get(api::openai::list_models))
        .route("/models", get(api::openai::list_models))
        .route("/v1/models/{*model}", get(api::openai::get_model))
        .route("/v1/messages", post(api::anthropic::messages))
        .route(
            "/v1/messages/count_tokens",
            post(api::anthropic::count_tokens),
        )
        .route("/v1/key/info", get(api::admin::key_info))
        .route("/v1/feedback", post(api::feedback::submit))
        .merge(api::ui::routes())
        .merge(api::admin::routes())
        .route("/health/live", get(api::health::live))
        .route("/health/ready", get(api::health::ready))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), ingress))
        .with_state(state)
}

/// Prometheus text exposition for organisation-wide readers (admin, a viewer without a
/// team): the series cover every team. `server.public_metrics` makes it answer without a key.
async fn metrics(State(app): State<AppState>, Extension(ctx): Extension<RequestCtx>) -> Response {
    let who = crate::policy::roles::Reach::of_principal(&ctx.principal);
    if let Err(e) = crate::policy::roles::authorize(&who, crate::policy::roles::Need::ReadOrg) {
        return ApiError::from(e).into_response();
    }
    crate::telemetry::metrics::usage_queue_depth(app.sink.depth());
    crate::telemetry::metrics::breaker_states(&app.gateway.load().models);
    match crate::telemetry::metrics::render() {
        Some(text) => (
            [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            text,
        )
            .into_response(),
        None => {
            ApiError::Internal("metrics are not enabled in this process".into()).into_response()
        }
    }
}

async fn not_found(req: Request) -> Response {
    ApiError::RouteNotFound {
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
    }
    .into_response()
}

async fn method_not_allowed(req: Request) -> Response {
    ApiError::MethodNotAllowed {
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
    }
    .into_response()
}

/// Steps 1 and 2: request id, panic catcher, authentication.
async fn ingress(State(app): State<AppState>, mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map_or_else(|| app.next_request_id(), str::to_string);

    let path = req.uri().path();
    let anthropic = path.starts_with("/v1/messages");
    let public = PUBLIC_PATHS.contains(&path)
        || (path == "/metrics" && app.gateway.load().config.server.public_metrics);
    let principal = if public {
        crate::policy::auth::Principal::Anonymous
    } else {
        match app
            .gateway
            .load()
            .auth
            .authenticate(req.headers(), Some(&app.gov), app.auth_open())
        {
            Ok(p) => p,
            Err(e) => {
                let mut resp = e.into_response();
                if anthropic {
                    resp = api::anthropic::to_anthropic_error(resp).await;
                }
                return with_request_id(resp, &request_id);
            }
        }
    };
    let (team, key_id) = match &principal {
        crate::policy::auth::Principal::Key(k) => (k.team.clone(), Some(k.id.clone())),
        _ => (None, None),
    };
    // Body-read timeout: from here, the whole body must arrive within the limit.
    if !http_body::Body::is_end_stream(req.body()) {
        let limit = app.gateway.load().config.server.edge.body_read_timeout;
        req = req.map(|b| axum::body::Body::new(api::DeadlineBody::new(b, limit)));
    }
    req.extensions_mut().insert(RequestCtx {
        request_id: request_id.clone(),
        start,
        ts_ms: unix_ms(),
        principal,
        team,
        key_id,
    });
    let run = AssertUnwindSafe(next.run(req)).catch_unwind();
    // JSON logs: every line logged while serving the request carries its id.
    let outcome = if crate::telemetry::json_logs() {
        use tracing::Instrument;
        run.instrument(tracing::info_span!("request", request_id = %request_id))
            .await
    } else {
        run.await
    };
    let resp = match outcome {
        Ok(r) if anthropic => api::anthropic::to_anthropic_error(r).await,
        Ok(r) => r,
        Err(_) => {
            tracing::error!(request_id, "a request handler panicked");
            ApiError::Internal(format!(
                "the gateway failed while handling request {request_id}"
            ))
            .into_response()
        }
    };
    with_request_id(resp, &request_id)
}

fn with_request_id(mut resp: Response, id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}
