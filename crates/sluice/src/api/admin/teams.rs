//! `/admin/teams`: create, list, get, update, delete.

use super::input::{check_name, parse, EntityInput};
use super::{stored, usd, Change};
use crate::api::RequestCtx;
use crate::app::AppState;
use crate::error::ApiError;
use crate::policy::keys::team_scope;
use crate::policy::roles::Scope;
use crate::store::gov::{GovStore, TeamRecord};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;

fn apply(mut input: EntityInput, t: &mut TeamRecord) -> Result<(), ApiError> {
    input.refuse("team", &["team", "user", "role", "expires_at"])?;
    if let Some(p) = input.parent.take() {
        check_name(&p, "parent")?;
        if p == t.name {
            return Err(ApiError::bad_request(
                "`parent`: a team cannot be its own parent",
                Some("parent"),
            ));
        }
        t.parent = Some(p);
    }
    if let Some(ml) = input.model_limits.take() {
        if ml.keys().any(|m| m.trim().is_empty()) {
            return Err(ApiError::bad_request(
                "`model_limits`: model names must not be empty",
                Some("model_limits"),
            ));
        }
        t.model_limits = ml;
    }
    input.apply_common(&mut t.limits, &mut t.metadata)
}

pub(super) fn team_json(app: &AppState, t: &TeamRecord) -> serde_json::Value {
    let scope = team_scope(t);
    let now = app.gov.clock.now_ms();
    let (spent, reserved) = app.gov.limits.spend(&scope, now);
    serde_json::json!({
        "name": t.name,
        "parent": t.parent,
        "models": t.limits.models,
        "rpm": t.limits.rpm,
        "tpm": t.limits.tpm,
        "max_concurrency": t.limits.max_concurrency,
        "budget_usd": usd(t.limits.budget_micro_usd),
        "budget_period": scope.budget.map(|(_, p)| p.as_str()),
        "spend_usd": usd(scope.budget.map(|_| spent)),
        "resets_at": super::resets_at(app, scope.budget),
        "reserved_usd": usd(scope.budget.map(|_| reserved)),
        "model_limits": t.model_limits,
        "metadata": t.metadata,
        "created_at": crate::policy::governance::rfc3339(t.created_ms),
    })
}

pub(super) async fn create(
    State(app): State<AppState>,
    Extension(ctx): Extension<RequestCtx>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut input: EntityInput = parse(&body)?;
    let name = input
        .name
        .take()
        .ok_or_else(|| ApiError::bad_request("missing required field `name`", Some("name")))?;
    check_name(&name, "name")?;
    let mut team = TeamRecord {
        name,
        created_ms: app.gov.clock.now_ms(),
        ..TeamRecord::default()
    };
    apply(input, &mut team)?;
    let change = Change {
        action: "create",
        kind: "team",
        target: team.name.clone(),
        before: None,
    };
    let r = app.gov.store().insert_team(&team).await;
    stored(&app, &ctx, change, r, || Some(team_json(&app, &team))).await?;
    Ok((StatusCode::CREATED, Json(team_json(&app, &team))).into_response())
}

pub(super) async fn list(
    State(app): State<AppState>,
    Extension(scope): Extension<Scope>,
) -> Result<Response, ApiError> {
    let idx = app.gov.index();
    let data: Vec<serde_json::Value> = idx
        .teams
        .iter()
        .filter(|t| scope.sees_team(Some(&t.name)))
        .map(|t| team_json(&app, t))
        .collect();
    Ok(Json(serde_json::json!({"object": "list", "data": data})).into_response())
}

fn visible<'a>(
    idx: &'a crate::policy::governance::KeyIndex,
    scope: &Scope,
    name: &str,
) -> Result<&'a TeamRecord, ApiError> {
    idx.team(name)
        .filter(|t| scope.sees_team(Some(&t.name)))
        .ok_or_else(|| ApiError::NotFound {
            message: format!("no team named {name:?}"),
            param: Some("name"),
        })
}

pub(super) async fn get_one(
    State(app): State<AppState>,
    Extension(scope): Extension<Scope>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let idx = app.gov.index();
    let t = visible(&idx, &scope, &name)?;
    Ok(Json(team_json(&app, t)).into_response())
}

pub(super) async fn update(
    State(app): State<AppState>,
    Extension(ctx): Extension<RequestCtx>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let input: EntityInput = parse(&body)?;
    if input.name.as_ref().is_some_and(|n| n != &name) {
        return Err(ApiError::bad_request(
            "`name`: teams cannot be renamed",
            Some("name"),
        ));
    }
    let mut team = visible(&app.gov.index(), &Scope::Org, &name)?.clone();
    let change = Change {
        action: "update",
        kind: "team",
        target: name.clone(),
        before: Some(team_json(&app, &team)),
    };
    apply(input, &mut team)?;
    let r = app.gov.store().update_team(&team).await;
    stored(&app, &ctx, change, r, || Some(team_json(&app, &team))).await?;
    Ok(Json(team_json(&app, &team)).into_response())
}

pub(super) async fn delete(
    State(app): State<AppState>,
    Extension(ctx): Extension<RequestCtx>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let before = app.gov.index().team(&name).map(|t| team_json(&app, t));
    let change = Change {
        action: "delete",
        kind: "team",
        target: name.clone(),
        before,
    };
    let r = app.gov.store().delete_team(&name).await;
    stored(&app, &ctx, change, r, || None).await?;
    Ok(Json(serde_json::json!({"name": name, "deleted": true})).into_response())
}
