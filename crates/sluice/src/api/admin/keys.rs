//! `/admin/keys`: create (the key is shown once), list, get, update, revoke, rotate; and
//! `GET /v1/key/info` for a key to read its own limits and remaining budget.

use super::input::{check_name, parse, parse_time, EntityInput};
use super::{stored, usd, Change};
use crate::api::RequestCtx;
use crate::app::AppState;
use crate::error::ApiError;
use crate::policy::auth::Principal;
use crate::policy::governance::rfc3339;
use crate::policy::keys::{self, KeyPrincipal, Role};
use crate::policy::roles::{self, Reach, Scope};
use crate::store::gov::{GovStore, KeyRecord};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use serde::Deserialize;
use std::sync::Arc;

const DEFAULT_GRACE_MS: i64 = 3_600_000;

/// The reach a stored key has when it is used.
fn reach_of(k: &KeyRecord) -> Reach {
    Reach::of_key(k.role.as_deref().and_then(Role::parse), k.team.as_deref())
}

/// Applies `input` to `k` (`existing`: a stored key, not a new one) for the caller `who`,
/// whose answers are held to `scope`; neither the key as it was nor as it becomes may reach
/// further than the caller (`policy::roles::may_set_key`).
fn apply(
    app: &AppState,
    mut input: EntityInput,
    k: &mut KeyRecord,
    existing: bool,
    (who, scope): (&Reach, &Scope),
) -> Result<(), ApiError> {
    input.refuse("key", &["parent", "model_limits"])?;
    let before = existing.then(|| reach_of(k));
    if let Some(n) = input.name.take() {
        check_name(&n, "name")?;
        k.name = Some(n);
    }
    if let Some(t) = input.team.take() {
        check_name(&t, "team")?;
        k.team = Some(t);
    }
    if let Scope::Team(own) = scope {
        k.team.get_or_insert_with(|| own.clone());
        roles::may_touch(scope, "keys", k.team.as_deref())?;
    }
    if let Some(u) = input.user.take() {
        check_name(&u, "user")?;
        // A team-scoped caller may attach only users of its own team.
        if let Some(user) = app.gov.index().user(&u) {
            roles::may_touch(scope, "users", user.team.as_deref())?;
        }
        k.user = Some(u);
    }
    if let Some(r) = input.role.take() {
        if Role::parse(&r).is_none() {
            return Err(ApiError::bad_request(
                format!("`role`: {r:?} is not one of admin, team_admin, viewer"),
                Some("role"),
            ));
        }
        k.role = Some(r);
    }
    roles::may_set_key(who, before.as_ref(), &reach_of(k))?;
    if let Some(e) = input.expires_at.take() {
        k.expires_at_ms = if e.is_null() {
            None
        } else {
            Some(parse_time(&e)?)
        };
    }
    input.apply_common(&mut k.limits, &mut k.metadata)
}

fn key_json(app: &AppState, p: &KeyPrincipal) -> serde_json::Value {
    let k = &p.record;
    let now = app.gov.clock.now_ms();
    let scope = &p.scopes[0];
    let (spent, reserved) = app.gov.limits.spend(scope, now);
    serde_json::json!({
        "id": k.id,
        "prefix": k.prefix,
        "name": k.name,
        "team": k.team,
        "user": k.user,
        "role": k.role,
        "models": k.limits.models,
        "rpm": k.limits.rpm,
        "tpm": k.limits.tpm,
        "max_concurrency": k.limits.max_concurrency,
        "budget_usd": usd(k.limits.budget_micro_usd),
        "budget_period": scope.budget.map(|(_, p)| p.as_str()),
        "spend_usd": usd(scope.budget.map(|_| spent)),
        "resets_at": super::resets_at(app, scope.budget),
        "reserved_usd": usd(scope.budget.map(|_| reserved)),
        "expires_at": k.expires_at_ms.map(rfc3339),
        "metadata": k.metadata,
        "created_at": rfc3339(k.created_ms),
        "revoked_at": k.revoked_ms.map(rfc3339),
        "status": if k.revoked_ms.is_some() {
            "revoked"
        } else if k.expires_at_ms.is_some_and(|e| now >= e) {
            "expired"
        } else {
            "active"
        },
    })
}

/// A key as the admin API shows it now (for the audit log: prefix, never the secret).
fn now_json(app: &AppState, id: &str) -> Option<serde_json::Value> {
    app.gov.index().key(id).map(|p| key_json(app, p))
}

fn with_secret(mut v: serde_json::Value, key: &str) -> serde_json::Value {
    v["key"] = serde_json::Value::String(key.to_string());
    v
}

fn fresh(app: &AppState, id: &str) -> Result<Arc<KeyPrincipal>, ApiError> {
    app.gov
        .index()
        .key(id)
        .cloned()
        .ok_or_else(|| ApiError::Internal(format!("key {id} vanished after writing it")))
}

pub(super) async fn create(
    State(app): State<AppState>,
    Extension(ctx): Extension<RequestCtx>,
    Extension(scope): Extension<Scope>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let input: EntityInput = parse(&body)?;
    let secret = keys::generate();
    let mut rec = KeyRecord {
        id: keys::new_id(),
        hash: keys::hash_hex(&secret),
        prefix: keys::visible_prefix(&secret),
        created_ms: app.gov.clock.now_ms(),
        ..KeyRecord::default()
    };
    let who = Reach::of_principal(&ctx.principal);
    apply(&app, input, &mut rec, false, (&who, &scope))?;
    let change = Change {
        action: "create",
        kind: "key",
        target: rec.id.clone(),
        before: None,
    };
    let r = app.gov.store().insert_key(&rec).await;
    stored(&app, &ctx, change, r, || now_json(&app, &rec.id)).await?;
    let p = fresh(&app, &rec.id)?;
    Ok((
        StatusCode::CREATED,
        Json(with_secret(key_json(&app, &p), &secret)),
    )
        .into_response())
}

pub(super) async fn list(
    State(app): State<AppState>,
    Extension(scope): Extension<Scope>,
) -> Result<Response, ApiError> {
    let idx = app.gov.index();
    let data: Vec<serde_json::Value> = idx
        .keys
        .iter()
        .filter(|k| scope.sees_team(k.team.as_deref()))
        .map(|k| key_json(&app, k))
        .collect();
    Ok(Json(serde_json::json!({"object": "list", "data": data})).into_response())
}

fn visible(app: &AppState, scope: &Scope, id: &str) -> Result<Arc<KeyPrincipal>, ApiError> {
    app.gov
        .index()
        .key(id)
        .filter(|k| scope.sees_team(k.team.as_deref()))
        .cloned()
        .ok_or_else(|| ApiError::NotFound {
            message: format!("no key with id {id:?}"),
            param: Some("id"),
        })
}

pub(super) async fn get_one(
    State(app): State<AppState>,
    Extension(scope): Extension<Scope>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let p = visible(&app, &scope, &id)?;
    Ok(Json(key_json(&app, &p)).into_response())
}

pub(super) async fn update(
    State(app): State<AppState>,
    Extension(ctx): Extension<RequestCtx>,
    Extension(scope): Extension<Scope>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let input: EntityInput = parse(&body)?;
    let old = visible(&app, &scope, &id)?;
    let mut rec = old.record.clone();
    let who = Reach::of_principal(&ctx.principal);
    apply(&app, input, &mut rec, true, (&who, &scope))?;
    let change = Change {
        action: "update",
        kind: "key",
        target: id.clone(),
        before: Some(key_json(&app, &old)),
    };
    let r = app.gov.store().update_key(&rec).await;
    stored(&app, &ctx, change, r, || now_json(&app, &id)).await?;
    Ok(Json(key_json(&app, &*fresh(&app, &id)?)).into_response())
}

pub(super) async fn revoke(
    State(app): State<AppState>,
    Extension(ctx): Extension<RequestCtx>,
    Extension(scope): Extension<Scope>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let old = visible(&app, &scope, &id)?;
    let mut rec = old.record.clone();
    let target = reach_of(&rec);
    roles::may_set_key(&Reach::of_principal(&ctx.principal), Some(&target), &target)?;
    if rec.revoked_ms.is_none() {
        rec.revoked_ms = Some(app.gov.clock.now_ms());
        rec.previous_hash = None;
        rec.previous_valid_until_ms = None;
        let change = Change {
            action: "revoke",
            kind: "key",
            target: id.clone(),
            before: Some(key_json(&app, &old)),
        };
        let r = app.gov.store().update_key(&rec).await;
        stored(&app, &ctx, change, r, || now_json(&app, &id)).await?;
    }
    Ok(Json(key_json(&app, &*fresh(&app, &id)?)).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateInput {
    /// How long the old key keeps working, e.g. `10m`; default one hour; `0s` = at once.
    grace_period: Option<String>,
}

pub(super) async fn rotate(
    State(app): State<AppState>,
    Extension(ctx): Extension<RequestCtx>,
    Extension(scope): Extension<Scope>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let input: RotateInput = if body.iter().all(u8::is_ascii_whitespace) {
        RotateInput::default()
    } else {
        parse(&body)?
    };
    let grace_ms = match input.grace_period {
        None => DEFAULT_GRACE_MS,
        Some(g) if g == "0" => 0,
        Some(g) => crate::config::units::parse_duration(&g)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .map_err(|e| {
                ApiError::bad_request(format!("`grace_period`: {e}"), Some("grace_period"))
            })?,
    };
    let old = visible(&app, &scope, &id)?;
    let mut rec = old.record.clone();
    // Rotation hands out the new secret: the key must be within the caller's reach.
    let target = reach_of(&rec);
    roles::may_set_key(&Reach::of_principal(&ctx.principal), Some(&target), &target)?;
    if rec.revoked_ms.is_some() {
        return Err(ApiError::Conflict {
            message: format!("key {id} is revoked and cannot be rotated"),
            param: Some("id"),
        });
    }
    let secret = keys::generate();
    let now = app.gov.clock.now_ms();
    rec.previous_hash = (grace_ms > 0).then(|| rec.hash.clone());
    rec.previous_valid_until_ms = (grace_ms > 0).then(|| now.saturating_add(grace_ms));
    rec.hash = keys::hash_hex(&secret);
    rec.prefix = keys::visible_prefix(&secret);
    let change = Change {
        action: "rotate",
        kind: "key",
        target: id.clone(),
        before: Some(key_json(&app, &old)),
    };
    let r = app.gov.store().update_key(&rec).await;
    stored(&app, &ctx, change, r, || now_json(&app, &id)).await?;
    let mut v = with_secret(key_json(&app, &*fresh(&app, &id)?), &secret);
    v["previous_key_valid_until"] = serde_json::json!(rec.previous_valid_until_ms.map(rfc3339));
    Ok(Json(v).into_response())
}

/// `GET /v1/key/info`: the calling key's own limits, and what is left of each budget.
pub async fn key_info(
    State(app): State<AppState>,
    Extension(ctx): Extension<RequestCtx>,
) -> Response {
    let Principal::Key(p) = &ctx.principal else {
        return Json(serde_json::json!({"principal": ctx.principal.label(), "limits": null}))
            .into_response();
    };
    let now = app.gov.clock.now_ms();
    let budgets: Vec<serde_json::Value> = p
        .scopes
        .iter()
        .filter_map(|s| {
            let (limit, period) = s.budget?;
            let (spent, reserved) = app.gov.limits.spend(s, now);
            Some(serde_json::json!({
                "scope": &*s.label,
                "budget_usd": usd(Some(limit)),
                "period": period.as_str(),
                "spend_usd": usd(Some(spent)),
                "reserved_usd": usd(Some(reserved)),
                "remaining_usd": usd(Some((limit - spent - reserved).max(0))),
                "resets_at": super::resets_at(&app, s.budget),
            }))
        })
        .collect();
    let mut v = key_json(&app, p);
    v["budgets"] = serde_json::Value::Array(budgets);
    v["allowed_models"] = serde_json::json!(p
        .model_lists
        .iter()
        .map(|(by, l)| serde_json::json!({"by": &**by, "models": l}))
        .collect::<Vec<_>>());
    Json(v).into_response()
}
