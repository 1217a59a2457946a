//! The admin API under `/admin` (teams, keys; JSON; OpenAPI at `/admin/openapi.json`) and
//! `GET /v1/key/info`, where a key sees its own limits and remaining budget.
//!
//! Who may call it is decided by `policy::roles` (the table in `docs/governance.md`): every
//! route is registered with the [`Need`] it has and passes one gate. Users (`/admin/users`)
//! own keys; a key's `user` must exist.

mod audit;
pub(crate) mod input;
mod insights;
mod keys;
mod replicas;
mod routing;
mod teams;
mod usage;
mod users;

use crate::api::RequestCtx;
use crate::app::AppState;
use crate::error::ApiError;
use crate::policy::prices::format_usd;
use crate::policy::roles::{self, Need, Reach};
use crate::store::gov::GovStoreError;
use axum::extract::{Request, State};
use axum::handler::Handler;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter};
use axum::{Json, Router};
use http::Method;

pub use keys::key_info;

/// Every admin route with the [`Need`] it has. The router is built from these calls, so a
/// route cannot exist without an access rule, and [`route_list`] (read by the role-matrix
/// test) is the router's own list.
fn build() -> AdminRoutes {
    use Method as M;
    AdminRoutes::default()
        .at(M::GET, "/admin/openapi.json", Need::Read, openapi)
        .at(M::POST, "/admin/teams", Need::Admin, teams::create)
        .at(M::GET, "/admin/teams", Need::Read, teams::list)
        .at(M::GET, "/admin/teams/{name}", Need::Read, teams::get_one)
        .at(M::PATCH, "/admin/teams/{name}", Need::Admin, teams::update)
        .at(M::DELETE, "/admin/teams/{name}", Need::Admin, teams::delete)
        .at(M::POST, "/admin/users", Need::Write, users::create)
        .at(M::GET, "/admin/users", Need::Read, users::list)
        .at(M::GET, "/admin/users/{name}", Need::Read, users::get_one)
        .at(M::PATCH, "/admin/users/{name}", Need::Write, users::update)
        .at(M::DELETE, "/admin/users/{name}", Need::Write, users::delete)
        .at(M::POST, "/admin/keys", Need::Write, keys::create)
        .at(M::GET, "/admin/keys", Need::Read, keys::list)
        .at(M::GET, "/admin/keys/{id}", Need::Read, keys::get_one)
        .at(M::PATCH, "/admin/keys/{id}", Need::Write, keys::update)
        .at(
            M::POST,
            "/admin/keys/{id}/revoke",
            Need::Write,
            keys::revoke,
        )
        .at(
            M::POST,
            "/admin/keys/{id}/rotate",
            Need::Write,
            keys::rotate,
        )
        .at(M::GET, "/admin/usage", Need::Read, usage::usage)
        .at(M::GET, "/admin/usage/export", Need::Read, usage::export)
        .at(M::GET, "/admin/performance", Need::Read, usage::performance)
        .at(M::GET, "/admin/requests", Need::Read, usage::requests)
        .at(M::GET, "/admin/insights", Need::Read, insights::insights)
        .at(M::GET, "/admin/routing", Need::ReadOrg, routing::routing)
        .at(M::GET, "/admin/audit", Need::ReadOrg, audit::audit)
        .at(M::GET, "/admin/replicas", Need::ReadOrg, replicas::list)
        .at(M::GET, "/admin/cache", Need::ReadOrg, cache_stats)
        .at(M::DELETE, "/admin/cache", Need::Admin, cache_clear)
}

/// `GET /admin/cache`: the response cache's size, hits, misses and savings.
async fn cache_stats(State(app): State<AppState>) -> Response {
    Json(app.cache.stats()).into_response()
}

#[derive(serde::Deserialize)]
struct CacheFilter {
    route: Option<String>,
    team: Option<String>,
}

/// `DELETE /admin/cache[?route=..][&team=..]`: drops every entry, or those of a route / team.
async fn cache_clear(
    State(app): State<AppState>,
    axum::extract::Query(f): axum::extract::Query<CacheFilter>,
) -> Response {
    if f.route.is_none() && f.team.is_none() {
        app.semantic.clear();
    }
    match app.cache.clear(f.route.as_deref(), f.team.as_deref()).await {
        Ok(n) => Json(serde_json::json!({
            "cleared": true, "route": f.route, "team": f.team, "shared_entries_deleted": n
        }))
        .into_response(),
        Err(e) => ApiError::StoreUnavailable(e).into_response(),
    }
}

pub fn routes() -> Router<AppState> {
    build().router
}

/// `(method, path, need)` of every admin route, as the router has them.
pub fn route_list() -> Vec<(Method, &'static str, Need)> {
    build().list
}

#[derive(Default)]
struct AdminRoutes {
    router: Router<AppState>,
    list: Vec<(Method, &'static str, Need)>,
}

impl AdminRoutes {
    fn at<H, T>(mut self, method: Method, path: &'static str, need: Need, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let Ok(filter) = MethodFilter::try_from(method.clone()) else {
            // Only the fixed methods above reach this; an unknown one adds no route.
            return self;
        };
        self.router = self.router.route(
            path,
            on(filter, handler).route_layer(middleware::from_fn_with_state(need, gate)),
        );
        self.list.push((method, path, need));
        self
    }
}

/// The role check in front of every admin route: the caller's reach against the route's
/// need; the handler gets the [`Scope`] its answers are held to.
async fn gate(State(need): State<Need>, mut req: Request, next: Next) -> Response {
    let Some(ctx) = req.extensions().get::<RequestCtx>() else {
        return ApiError::Internal("admin route without a request context".into()).into_response();
    };
    match roles::authorize(&Reach::of_principal(&ctx.principal), need) {
        Ok(scope) => {
            req.extensions_mut().insert(scope);
            next.run(req).await
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

pub(crate) fn store_error(e: GovStoreError) -> ApiError {
    match e {
        GovStoreError::Conflict { .. } | GovStoreError::InUse { .. } => ApiError::Conflict {
            message: e.to_string(),
            param: Some("name"),
        },
        GovStoreError::NotFound { what, .. } => ApiError::NotFound {
            message: e.to_string(),
            param: Some(match what {
                "parent team" => "parent",
                "team" => "team",
                "user" => "user",
                _ => "id",
            }),
        },
        GovStoreError::Store(e) => ApiError::from_store("writing to the store", &e),
    }
}

/// One admin write, as the audit log keeps it.
pub(crate) struct Change {
    pub action: &'static str,
    pub kind: &'static str,
    pub target: String,
    /// The target as the admin API showed it before (no secrets in those views).
    pub before: Option<serde_json::Value>,
}

/// A store write's outcome as the API answers it. On success the in-memory index is rebuilt
/// at once, so the next request (here or on this replica) sees the change, and the audit
/// log gets who did what, when, with the target before and `after` (read once the index is
/// rebuilt). Every admin write goes through here, so none escapes the log.
pub(crate) async fn stored(
    app: &AppState,
    ctx: &RequestCtx,
    change: Change,
    r: Result<(), GovStoreError>,
    after: impl FnOnce() -> Option<serde_json::Value>,
) -> Result<(), ApiError> {
    r.map_err(store_error)?;
    reload(app).await?;
    let entry = crate::store::audit::AuditEntry {
        ts_ms: app.gov.clock.now_ms(),
        actor: ctx.principal.label().to_string(),
        action: change.action,
        target_kind: change.kind,
        target: change.target,
        before: change.before,
        after: after(),
        request_id: ctx.request_id.clone(),
    };
    if let Err(e) = app.store.append_audit(&entry).await {
        // The change is made and cannot be taken back; losing its trace must be loud.
        tracing::error!(
            actor = %entry.actor,
            action = entry.action,
            target = %entry.target,
            "could not write the audit log entry of an admin write: {e}"
        );
    }
    Ok(())
}

pub(crate) async fn reload(app: &AppState) -> Result<(), ApiError> {
    app.gov
        .reload()
        .await
        .map_err(|e| ApiError::from_store("reloading keys", &e))?;
    app.gov.announce().await;
    Ok(())
}

/// When a budget's current period ends (`null`: no budget, or a `total` budget).
pub(crate) fn resets_at(
    app: &AppState,
    budget: Option<(i64, crate::policy::limits::Period)>,
) -> serde_json::Value {
    let now = app.gov.clock.now_ms();
    let tz = app.gov.limits.calendar_offset_ms();
    budget
        .and_then(|(_, period)| period.end_in(period.start_in(now, tz), tz))
        .map_or(serde_json::Value::Null, |t| {
            serde_json::Value::String(crate::policy::governance::rfc3339(t))
        })
}

pub(crate) fn usd(micro: Option<i64>) -> serde_json::Value {
    micro.map_or(serde_json::Value::Null, |m| {
        serde_json::Value::String(format_usd(m))
    })
}

async fn openapi() -> Response {
    Json(openapi_document()).into_response()
}

fn openapi_document() -> serde_json::Value {
    let limits = serde_json::json!({
        "models": {"type": "array", "items": {"type": "string"}, "description": "names or * wildcards"},
        "rpm": {"type": "integer", "minimum": 0},
        "tpm": {"type": "integer", "minimum": 0},
        "max_concurrency": {"type": "integer", "minimum": 0},
        "budget_usd": {"type": ["number", "string"], "description": "USD, >= 0"},
        "budget_period": {"type": "string", "enum": ["daily", "weekly", "monthly", "total", "rolling_daily", "rolling_weekly", "rolling_monthly"]},
        "metadata": {"type": "object"}
    });
    let mut key_props = limits.clone();
    if let Some(m) = key_props.as_object_mut() {
        for (k, v) in [
            ("name", serde_json::json!({"type": "string"})),
            ("team", serde_json::json!({"type": "string"})),
            ("user", serde_json::json!({"type": "string"})),
            (
                "role",
                serde_json::json!({"type": "string", "enum": ["admin", "team_admin", "viewer"]}),
            ),
            (
                "expires_at",
                serde_json::json!({"type": ["string", "integer"], "description": "RFC 3339 or unix seconds"}),
            ),
        ] {
            m.insert(k.into(), v);
        }
    }
    let mut user_props = limits.clone();
    if let Some(m) = user_props.as_object_mut() {
        m.insert("name".into(), serde_json::json!({"type": "string"}));
        m.insert("team".into(), serde_json::json!({"type": "string"}));
    }
    let mut team_props = limits;
    if let Some(m) = team_props.as_object_mut() {
        m.insert("name".into(), serde_json::json!({"type": "string"}));
        m.insert("parent".into(), serde_json::json!({"type": "string"}));
        m.insert(
            "model_limits".into(),
            serde_json::json!({"type": "object", "description": "model -> {rpm, tpm, max_concurrency}"}),
        );
    }
    let op = |summary: &str, body: Option<&str>| {
        let mut o = serde_json::json!({"summary": summary, "responses": {
            "200": {"description": "OK"}, "400": {"description": "bad input, naming the field"},
            "401": {"description": "no or bad key"}, "403": {"description": "role does not allow it"},
            "404": {"description": "not found"}, "409": {"description": "conflict"}}});
        if let Some(schema) = body {
            o["requestBody"] = serde_json::json!({"content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}});
        }
        o
    };
    serde_json::json!({
        "openapi": "3.1.0",
        "info": {"title": "Sluice admin API", "version": env!("CARGO_PKG_VERSION")},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Key": {"type": "object", "properties": key_props},
                "Team": {"type": "object", "properties": team_props},
                "User": {"type": "object", "properties": user_props},
                "Rotate": {"type": "object", "properties": {"grace_period": {"type": "string", "example": "1h"}}}
            }
        },
        "security": [{"bearer": []}],
        "paths": {
            "/admin/teams": {"post": op("Create a team", Some("Team")), "get": op("List teams", None)},
            "/admin/teams/{name}": {"get": op("Get a team", None), "patch": op("Update a team", Some("Team")), "delete": op("Delete a team without active keys", None)},
            "/admin/users": {"post": op("Create a user (keys refer to it by name)", Some("User")), "get": op("List users", None)},
            "/admin/users/{name}": {"get": op("Get a user", None), "patch": op("Update a user", Some("User")), "delete": op("Delete a user without active keys", None)},
            "/admin/keys": {"post": op("Create a key (201, the key is shown once)", Some("Key")), "get": op("List keys", None)},
            "/admin/keys/{id}": {"get": op("Get a key", None), "patch": op("Update a key", Some("Key"))},
            "/admin/keys/{id}/revoke": {"post": op("Revoke a key", None)},
            "/admin/keys/{id}/rotate": {"post": op("Replace a key's secret; the old one works for the grace period", Some("Rotate"))},
            "/v1/key/info": {"get": op("The calling key's limits and remaining budget", None)},
            "/admin/usage": {"get": op("Usage totals: filters since, until, key, user, team, model, provider, deployment, status, surface, error_class; group_by any of those plus hour, day, week or month", None)},
            "/admin/performance": {"get": op("Per deployment latency, TTFT, tokens per second, error and fallback rates (same filters and group_by)", None)},
            "/admin/requests": {"get": op("The request log, newest first: same filters, request_id, limit, cursor, include_content; each record with its feedback", None)},
            "/admin/insights": {"get": op("Savings and reliability opportunities from recorded usage (cheap tier, cache, unreliable deployments), each with a dollar figure and a config change; same filters, since defaults to 30d", None)},
            "/v1/feedback": {"post": op("Quality feedback on a request: request_id, score (0 to 1), label, comment; from the key that made it or an admin", None)},
            "/admin/usage/export": {"get": op("Compliance log (records with prompt and answer) as JSONL; all=true exports every record", None)},
            "/admin/routing": {"get": op("Every deployment's live routing state (breaker, latency, rate-limit use)", None)},
            "/admin/replicas": {"get": op("Every live replica of the fleet: id, version, config hash, listen address, start time and uptime; config_drift when their config hashes differ", None)},
            "/admin/audit": {"get": op("The audit log of admin writes, newest first: who, what, when, before and after; filters since, until, actor, target; limit, cursor", None)}
        }
    })
}
