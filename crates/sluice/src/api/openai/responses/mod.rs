//! The OpenAI Responses API: `POST /v1/responses` (JSON and the typed SSE event sequence),
//! `GET` / `DELETE /v1/responses/{id}`, `GET /v1/responses/{id}/input_items`.
//!
//! Every request is translated to a chat request and run through the chat pipeline
//! ([`crate::api::surface::run_chat`]), so any provider can answer it. State lives in the
//! gateway's store ([`crate::store::responses`]): `previous_response_id` rebuilds the
//! conversation from it, whatever provider answered before, and a follow-up sent the moment
//! an answer arrived finds it (the answer is stored, or held in memory, before it leaves).
//! Stored responses belong to the virtual key that created them; the master key sees all.

pub mod encode;
pub mod request;

use crate::api::surface::{json_response, run_chat, stream_response, ChatOutcome};
use crate::api::{read_body, RequestCtx};
use crate::app::{unix_ms, AppState};
use crate::canonical::openai::{encode_request, error_body, RequestError};
use crate::error::ApiError;
use crate::store::responses::{Scope, StoredResponse};
use axum::extract::{Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::StatusCode;
use serde_json::{json, Value};
use std::collections::HashMap;

/// The usage-record surface label.
pub const SURFACE: &str = "openai.responses";

/// How often the retention purge may run (it runs after a store write, when due).
const PURGE_EVERY_MS: i64 = 3_600_000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/responses", post(create))
        .route("/responses", post(create))
        .route("/v1/responses/{id}", get(retrieve).delete(delete))
        .route("/responses/{id}", get(retrieve).delete(delete))
        .route("/v1/responses/{id}/input_items", get(input_items))
        .route("/responses/{id}/input_items", get(input_items))
}

/// Records a request refused before the chat pipeline ran (it records everything else), as
/// the chat surface records its own bad requests.
pub(crate) fn record_refusal(app: &AppState, parts: &http::request::Parts, surface: &'static str) {
    if let Some(c) = parts.extensions.get::<RequestCtx>() {
        crate::api::settle::Ledger::new(app.sink.clone(), c, surface)
            .finish(400, Some("bad_request"));
    }
}

fn invalid(e: &RequestError, code: Option<&str>) -> Response {
    let body = json!({"error": {"message": e.message, "type": "invalid_request_error",
                                "param": e.param, "code": code}});
    json_response(
        StatusCode::BAD_REQUEST,
        http::HeaderMap::new(),
        serde_json::to_vec(&body).unwrap_or_default(),
    )
}

fn not_found(id: &str) -> Response {
    ApiError::NotFound {
        message: format!("Response with id '{id}' not found."),
        param: None,
    }
    .into_response()
}

fn store_error(e: &crate::store::StoreError) -> Response {
    tracing::error!(error = %e, "responses store");
    match ApiError::from_store("the response store", e) {
        ApiError::StoreUnavailable(m) => ApiError::StoreUnavailable(m),
        _ => ApiError::Internal("the response store failed".into()),
    }
    .into_response()
}

fn ctx(parts: &http::request::Parts) -> Option<&RequestCtx> {
    parts.extensions.get::<RequestCtx>()
}

fn scope(ctx: Option<&RequestCtx>) -> Scope<'_> {
    match ctx.and_then(|c| c.key_id.as_deref()) {
        Some(k) => Scope::Key(k),
        None => Scope::All,
    }
}

/// Responses created before this are past retention.
fn not_before_ms(app: &AppState) -> i64 {
    match app.gateway.load().config.responses.retention {
        Some(d) => unix_ms() - i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2),
        None => i64::MIN,
    }
}

fn new_response_id() -> String {
    let a: u128 = rand::random();
    let b: u64 = rand::random();
    format!("resp_{a:032x}{b:016x}")
}

/// Gives stored input items ids (as OpenAI lists them), keeping ids the client sent.
fn with_ids(items: Vec<Value>, response_id: &str) -> Vec<Value> {
    let mut ids = encode::Ids::new(&response_id.replacen("resp_", "in", 1));
    items
        .into_iter()
        .map(|mut item| {
            if item.get("id").is_none_or(Value::is_null) {
                let prefix = match item.get("type").and_then(Value::as_str) {
                    Some("function_call") => "fc",
                    Some("function_call_output") => "fco",
                    Some("reasoning") => "rs",
                    _ => "msg",
                };
                item["id"] = json!(ids.next(prefix));
            }
            item
        })
        .collect()
}

/// Whether a request goes to the provider's own `/v1/responses` untouched: every
/// deployment it may reach is an OpenAI-format provider with `supports_responses: true`, no
/// content rule applies, and the gateway keeps no state for it (`store: false`, no
/// `previous_response_id`: stored responses and conversations continued from them live in
/// the gateway's store, which the provider does not share).
fn native(app: &AppState, parts: &http::request::Parts, body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Head<'a> {
        #[serde(borrow)]
        model: Option<std::borrow::Cow<'a, str>>,
        store: Option<bool>,
        previous_response_id: Option<&'a serde_json::value::RawValue>,
    }
    let Ok(h) = serde_json::from_slice::<Head<'_>>(body) else {
        return false;
    };
    let stateless =
        h.store == Some(false) && h.previous_response_id.is_none_or(|p| p.get() == "null");
    stateless
        && h.model.as_deref().is_some_and(|m| {
            crate::api::surface::passes_through(app, parts, m, |p| {
                p.supports_responses && p.kind.is_openai_format()
            })
        })
}

/// `POST /v1/responses`
pub async fn create(State(app): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let limit = app.gateway.load().config.server.max_body_bytes;
    let body = match read_body(&parts.headers, body, limit).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    if native(&app, &parts, &body) {
        // The provider's own Responses API: the client's bytes, only the model renamed.
        return crate::api::openai::passthrough::forward(
            &app,
            parts,
            body,
            crate::providers::Endpoint::Responses,
            SURFACE,
            crate::api::openai::peek::responses,
        )
        .await;
    }
    let mut d = match request::decode(&body) {
        Ok(d) => d,
        Err(e) => {
            record_refusal(&app, &parts, SURFACE);
            return invalid(&e, None);
        }
    };
    let rctx = ctx(&parts);
    let history = match &d.previous_response_id {
        None => Vec::new(),
        Some(prev) => match app
            .responses
            .get(prev, scope(rctx), not_before_ms(&app))
            .await
        {
            Ok(Some(r)) => r.conversation(),
            Ok(None) => {
                record_refusal(&app, &parts, SURFACE);
                return invalid(
                    &RequestError::new(
                        format!("Previous response with id '{prev}' not found."),
                        Some("previous_response_id"),
                    ),
                    Some("previous_response_not_found"),
                );
            }
            Err(e) => return store_error(&e),
        },
    };
    d.chat.messages = match request::messages_for(d.instructions.as_deref(), &history, &d.items) {
        Ok(m) => m,
        Err(e) => {
            record_refusal(&app, &parts, SURFACE);
            return invalid(&e, None);
        }
    };
    if d.chat.messages.is_empty() {
        record_refusal(&app, &parts, SURFACE);
        return invalid(
            &RequestError::new("Missing required parameter: 'input'.", Some("input")),
            None,
        );
    }
    let id = new_response_id();
    let created_ms = unix_ms();
    let created_at = u64::try_from(created_ms / 1000).unwrap_or(0);
    let stored = d.store.then(|| {
        let mut input_items = history;
        input_items.extend(with_ids(std::mem::take(&mut d.items), &id));
        StoredResponse {
            id: id.clone(),
            created_ms,
            key_id: rctx.and_then(|c| c.key_id.as_deref()).map(str::to_string),
            team: rctx.and_then(|c| c.team.as_deref()).map(str::to_string),
            model: d.chat.model.clone(),
            input_items,
            response: Value::Null,
        }
    });
    let openai = serde_json::to_vec(&encode_request(&d.chat)).unwrap_or_default();
    match run_chat(&app, &parts, openai, SURFACE).await {
        ChatOutcome::Json { response, headers } => {
            let obj = encode::whole(&response, &id, created_at, &d.echo);
            if let Some(mut s) = stored {
                s.response = obj.clone();
                // Written before the answer leaves (read-your-writes); if the store fails
                // the answer is still given and held in memory until a later write works.
                if let Err(e) = app.responses.write(&s).await {
                    tracing::warn!(error = %e, "responses store: write failed; holding in memory");
                    app.responses.hold(s);
                    spawn_flush(&app, id.clone());
                }
                maybe_purge(&app);
            }
            json_response(
                StatusCode::OK,
                headers,
                serde_json::to_vec(&obj).unwrap_or_default(),
            )
        }
        ChatOutcome::Stream { body, headers } => {
            let on_done: Option<encode::OnDone> = stored.map(|mut s| {
                let app = app.clone();
                Box::new(move |obj: &Value| {
                    s.response = obj.clone();
                    let id = s.id.clone();
                    // Readable from now on; the database write follows on a tracked task.
                    app.responses.hold(s);
                    spawn_flush(&app, id);
                    maybe_purge(&app);
                }) as encode::OnDone
            });
            stream_response(
                body,
                headers,
                encode::ResponsesEncoder::new(id, created_at, d.echo, on_done),
            )
        }
        ChatOutcome::Error {
            status,
            headers,
            message,
            kind,
            code,
        } => json_response(
            status,
            headers,
            error_body(&message, &kind, code.as_deref()),
        ),
    }
}

fn spawn_flush(app: &AppState, id: String) {
    let a = app.clone();
    app.tracker.spawn(async move {
        if let Err(e) = a.responses.flush(&id).await {
            tracing::error!(error = %e, "responses store: a streamed response was not saved");
        }
    });
}

fn maybe_purge(app: &AppState) {
    let Some(retention) = app.gateway.load().config.responses.retention else {
        return;
    };
    let now = unix_ms();
    if !app.responses.purge_due(now, PURGE_EVERY_MS) {
        return;
    }
    let before = now - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX / 2);
    let a = app.clone();
    app.tracker.spawn(async move {
        match a.responses.purge(before).await {
            Ok(n) if n > 0 => tracing::info!(purged = n, "responses past retention deleted"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "responses retention purge failed"),
        }
    });
}

async fn load(app: &AppState, id: &str, req: Request) -> Result<StoredResponse, Response> {
    let c = req.extensions().get::<RequestCtx>().cloned();
    match app
        .responses
        .get(id, scope(c.as_ref()), not_before_ms(app))
        .await
    {
        Ok(Some(r)) => Ok(r),
        Ok(None) => Err(not_found(id)),
        Err(e) => Err(store_error(&e)),
    }
}

/// `GET /v1/responses/{id}`
pub async fn retrieve(
    State(app): State<AppState>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    match load(&app, &id, req).await {
        Ok(r) => Json(r.response).into_response(),
        Err(resp) => resp,
    }
}

/// `DELETE /v1/responses/{id}`
pub async fn delete(State(app): State<AppState>, Path(id): Path<String>, req: Request) -> Response {
    let c = req.extensions().get::<RequestCtx>().cloned();
    match app.responses.delete(&id, scope(c.as_ref())).await {
        Ok(true) => {
            Json(json!({"id": id, "object": "response.deleted", "deleted": true})).into_response()
        }
        Ok(false) => not_found(&id),
        Err(e) => store_error(&e),
    }
}

/// `GET /v1/responses/{id}/input_items` (`order` asc|desc, default desc; `limit` 1..100,
/// default 20; `after` an item id).
pub async fn input_items(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    req: Request,
) -> Response {
    let r = match load(&app, &id, req).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(20)
        .clamp(1, 100);
    let mut items = r.input_items;
    if q.get("order").map(String::as_str) != Some("asc") {
        items.reverse();
    }
    if let Some(after) = q.get("after") {
        if let Some(p) = items.iter().position(|i| i["id"].as_str() == Some(after)) {
            items.drain(..=p);
        }
    }
    let has_more = items.len() > limit;
    items.truncate(limit);
    let first = items.first().map_or(Value::Null, |i| i["id"].clone());
    let last = items.last().map_or(Value::Null, |i| i["id"].clone());
    Json(
        json!({"object": "list", "data": items, "first_id": first, "last_id": last,
                "has_more": has_more}),
    )
    .into_response()
}
