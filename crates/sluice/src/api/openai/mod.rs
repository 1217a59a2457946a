//! The OpenAI surface: `/v1/chat/completions`, `/v1/embeddings`, `/v1/models`, and (through
//! the chat pipeline) `/v1/responses` and the legacy `/v1/completions`.

pub mod completions;
pub mod passthrough;
pub mod peek;
pub mod responses;
pub mod stream;

use crate::api::RequestCtx;
use crate::app::AppState;
use crate::error::ApiError;
use crate::policy::auth::Principal;
use crate::providers::Endpoint;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

pub async fn chat_completions(State(app): State<AppState>, req: Request) -> Response {
    passthrough::handle(
        &app,
        req,
        Endpoint::ChatCompletions,
        "openai.chat",
        peek::chat,
    )
    .await
}

pub async fn embeddings(State(app): State<AppState>, req: Request) -> Response {
    passthrough::handle(
        &app,
        req,
        Endpoint::Embeddings,
        "openai.embeddings",
        peek::embeddings,
    )
    .await
}

#[derive(Serialize)]
struct ModelObject<'a> {
    id: &'a str,
    object: &'static str,
    created: i64,
    owned_by: &'static str,
}

/// The public model names this caller may use (a virtual key sees only what its model
/// lists allow).
pub fn visible_models(gw: &crate::app::Gateway, principal: &Principal) -> Vec<String> {
    match principal {
        Principal::Key(k) => gw
            .models
            .names()
            .iter()
            .filter(|n| k.model_refused_by(n).is_none())
            .cloned()
            .collect(),
        _ => gw.models.names().to_vec(),
    }
}

/// The models this caller may use.
pub async fn list_models(State(app): State<AppState>, req: Request) -> Response {
    let gw = app.gateway.load();
    let principal = req
        .extensions()
        .get::<RequestCtx>()
        .map_or(Principal::Anonymous, |c| c.principal.clone());
    let names = visible_models(&gw, &principal);
    let data: Vec<ModelObject<'_>> = names
        .iter()
        .map(|id| ModelObject {
            id,
            object: "model",
            created: app.started_unix,
            owned_by: "sluice",
        })
        .collect();
    Json(serde_json::json!({"object": "list", "data": data})).into_response()
}

pub async fn get_model(
    State(app): State<AppState>,
    Path(model): Path<String>,
    req: Request,
) -> Response {
    let gw = app.gateway.load();
    let principal = req
        .extensions()
        .get::<RequestCtx>()
        .map_or(Principal::Anonymous, |c| c.principal.clone());
    let refused = matches!(&principal, Principal::Key(k) if k.model_refused_by(&model).is_some());
    if !gw.models.serves(&model) || refused {
        return ApiError::ModelNotFound {
            model,
            available: visible_models(&gw, &principal),
        }
        .into_response();
    }
    Json(ModelObject {
        id: &model,
        object: "model",
        created: app.started_unix,
        owned_by: "sluice",
    })
    .into_response()
}
