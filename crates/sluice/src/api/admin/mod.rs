//! The admin API under `/admin` (teams, keys; JSON; OpenAPI at `/admin/openapi.json`) and
//! `GET /v1/key/info`, where a key sees its own limits and remaining budget.
//!
//! Who may call it: the master key (and an open gateway) and keys with role `admin` may do
//! everything; `team_admin` keys manage their own team's keys and see their own team only;
//! `viewer` keys may read. Other keys get 403. Users (`/admin/users`) own keys; a key's
//! `user` must exist.

mod input;
mod keys;
mod routing;
mod teams;
mod usage;
mod users;

use crate::api::RequestCtx;
use crate::app::AppState;
use crate::error::ApiError;
use crate::policy::keys::Role;
use crate::policy::prices::format_usd;
use crate::store::gov::GovStoreError;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};

pub use keys::key_info;
pub use routing::routing;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/openapi.json", get(openapi))
        .route("/admin/teams", post(teams::create).get(teams::list))
        .route(
            "/admin/teams/{name}",
            get(teams::get_one)
                .patch(teams::update)
                .delete(teams::delete),
        )
        .route("/admin/users", post(users::create).get(users::list))
        .route(
            "/admin/users/{name}",
            get(users::get_one)
                .patch(users::update)
                .delete(users::delete),
        )
        .route("/admin/keys", post(keys::create).get(keys::list))
        .route("/admin/keys/{id}", get(keys::get_one).patch(keys::update))
        .route("/admin/keys/{id}/revoke", post(keys::revoke))
        .route("/admin/keys/{id}/rotate", post(keys::rotate))
        .route("/admin/usage", get(usage::usage))
        .route("/admin/usage/export", get(usage::export))
        .route("/admin/performance", get(usage::performance))
        .route("/admin/requests", get(usage::requests))
}

/// What an admin caller may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reach {
    All,
    Team(String),
}

impl Reach {
    pub(crate) fn sees_team(&self, team: Option<&str>) -> bool {
        match self {
            Reach::All => true,
            Reach::Team(t) => team == Some(t.as_str()),
        }
    }
}

/// Checks the caller's role for a read (`write == false`) or a write.
pub(crate) fn authorize(ctx: &RequestCtx, write: bool) -> Result<Reach, ApiError> {
    match ctx.principal.role() {
        Some(Role::Admin) => Ok(Reach::All),
        Some(Role::Viewer) if !write => Ok(Reach::All),
        Some(Role::Viewer) => Err(ApiError::Forbidden(
            "this key has the viewer role: read-only".into(),
        )),
        Some(Role::TeamAdmin) => match &ctx.principal {
            crate::policy::auth::Principal::Key(k) => match &k.team {
                Some(t) => Ok(Reach::Team(t.to_string())),
                None => Err(ApiError::Forbidden(
                    "this team_admin key belongs to no team".into(),
                )),
            },
            _ => Ok(Reach::All),
        },
        None => Err(ApiError::Forbidden(
            "this key may not use the admin API (it has no admin role)".into(),
        )),
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
        GovStoreError::Store(e) => ApiError::Internal(e.to_string()),
    }
}

/// A store write's outcome as the API answers it; on success the in-memory index is
/// rebuilt at once, so the next request (here or on this replica) sees the change.
pub(crate) async fn stored(app: &AppState, r: Result<(), GovStoreError>) -> Result<(), ApiError> {
    r.map_err(store_error)?;
    reload(app).await
}

pub(crate) async fn reload(app: &AppState) -> Result<(), ApiError> {
    app.gov
        .reload()
        .await
        .map_err(|e| ApiError::Internal(format!("reloading keys: {e}")))
}

pub(crate) fn usd(micro: Option<i64>) -> serde_json::Value {
    micro.map_or(serde_json::Value::Null, |m| {
        serde_json::Value::String(format_usd(m))
    })
}

async fn openapi(Extension(ctx): Extension<RequestCtx>) -> Response {
    if let Err(e) = authorize(&ctx, false) {
        return e.into_response();
    }
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
            "/admin/requests": {"get": op("The request log, newest first: same filters, limit, cursor, include_content", None)},
            "/admin/usage/export": {"get": op("Compliance log (records with prompt and answer) as JSONL; all=true exports every record", None)}
        }
    })
}
