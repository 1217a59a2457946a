//! `/admin/users`: people or services that own keys; a user's limits and budget apply to all
//! of its keys together. A `team_admin` manages the users of its own team.

use super::input::{check_name, parse, EntityInput};
use super::{stored, usd, Change};
use crate::api::RequestCtx;
use crate::app::AppState;
use crate::error::ApiError;
use crate::policy::keys::user_scope;
use crate::policy::roles::{self, Scope};
use crate::store::gov::{GovStore, UserRecord};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;

fn apply(mut input: EntityInput, u: &mut UserRecord, scope: &Scope) -> Result<(), ApiError> {
    input.refuse(
        "user",
        &["parent", "user", "role", "expires_at", "model_limits"],
    )?;
    if let Some(t) = input.team.take() {
        check_name(&t, "team")?;
        u.team = Some(t);
    }
    if let Scope::Team(own) = scope {
        u.team.get_or_insert_with(|| own.clone());
        roles::may_touch(scope, "users", u.team.as_deref())?;
    }
    input.apply_common(&mut u.limits, &mut u.metadata)
}

fn user_json(app: &AppState, u: &UserRecord) -> serde_json::Value {
    let scope = user_scope(u);
    let (spent, reserved) = app.gov.limits.spend(&scope, app.gov.clock.now_ms());
    serde_json::json!({
        "name": u.name,
        "team": u.team,
        "models": u.limits.models,
        "rpm": u.limits.rpm,
        "tpm": u.limits.tpm,
        "max_concurrency": u.limits.max_concurrency,
        "budget_usd": usd(u.limits.budget_micro_usd),
        "budget_period": scope.budget.map(|(_, p)| p.as_str()),
        "spend_usd": usd(scope.budget.map(|_| spent)),
        "resets_at": super::resets_at(app, scope.budget),
        "reserved_usd": usd(scope.budget.map(|_| reserved)),
        "metadata": u.metadata,
        "created_at": crate::policy::governance::rfc3339(u.created_ms),
    })
}

fn visible(app: &AppState, scope: &Scope, name: &str) -> Result<UserRecord, ApiError> {
    app.gov
        .index()
        .user(name)
        .filter(|u| scope.sees_team(u.team.as_deref()))
        .cloned()
        .ok_or_else(|| ApiError::NotFound {
            message: format!("no user named {name:?}"),
            param: Some("name"),
        })
}

pub(super) async fn create(
    State(app): State<AppState>,
    Extension(ctx): Extension<RequestCtx>,
    Extension(scope): Extension<Scope>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut input: EntityInput = parse(&body)?;
    let name = input
        .name
        .take()
        .ok_or_else(|| ApiError::bad_request("missing required field `name`", Some("name")))?;
    check_name(&name, "name")?;
    let mut user = UserRecord {
        name,
        created_ms: app.gov.clock.now_ms(),
        ..UserRecord::default()
    };
    apply(input, &mut user, &scope)?;
    let change = Change {
        action: "create",
        kind: "user",
        target: user.name.clone(),
        before: None,
    };
    let r = app.gov.store().insert_user(&user).await;
    stored(&app, &ctx, change, r, || Some(user_json(&app, &user))).await?;
    Ok((StatusCode::CREATED, Json(user_json(&app, &user))).into_response())
}

pub(super) async fn list(
    State(app): State<AppState>,
    Extension(scope): Extension<Scope>,
) -> Result<Response, ApiError> {
    let data: Vec<serde_json::Value> = app
        .gov
        .index()
        .users
        .iter()
        .filter(|u| scope.sees_team(u.team.as_deref()))
        .map(|u| user_json(&app, u))
        .collect();
    Ok(Json(serde_json::json!({"object": "list", "data": data})).into_response())
}

pub(super) async fn get_one(
    State(app): State<AppState>,
    Extension(scope): Extension<Scope>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(user_json(&app, &visible(&app, &scope, &name)?)).into_response())
}

pub(super) async fn update(
    State(app): State<AppState>,
    Extension(ctx): Extension<RequestCtx>,
    Extension(scope): Extension<Scope>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let input: EntityInput = parse(&body)?;
    if input.name.as_ref().is_some_and(|n| n != &name) {
        return Err(ApiError::bad_request(
            "`name`: users cannot be renamed",
            Some("name"),
        ));
    }
    let mut user = visible(&app, &scope, &name)?;
    let change = Change {
        action: "update",
        kind: "user",
        target: name.clone(),
        before: Some(user_json(&app, &user)),
    };
    apply(input, &mut user, &scope)?;
    let r = app.gov.store().update_user(&user).await;
    stored(&app, &ctx, change, r, || Some(user_json(&app, &user))).await?;
    Ok(Json(user_json(&app, &user)).into_response())
}

pub(super) async fn delete(
    State(app): State<AppState>,
    Extension(ctx): Extension<RequestCtx>,
    Extension(scope): Extension<Scope>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let old = visible(&app, &scope, &name)?;
    let change = Change {
        action: "delete",
        kind: "user",
        target: name.clone(),
        before: Some(user_json(&app, &old)),
    };
    let r = app.gov.store().delete_user(&name).await;
    stored(&app, &ctx, change, r, || None).await?;
    Ok(Json(serde_json::json!({"name": name, "deleted": true})).into_response())
}
