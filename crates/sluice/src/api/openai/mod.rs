//! The OpenAI surface: `/v1/chat/completions`, `/v1/embeddings`, `/v1/models`.

pub mod passthrough;
pub mod peek;
pub mod stream;

use crate::api::RequestCtx;
use crate::app::AppState;
use crate::error::ApiError;
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

/// The models this caller may use.
pub async fn list_models(State(app): State<AppState>) -> Response {
    let gw = app.gateway.load();
    let data: Vec<ModelObject<'_>> = gw
        .models
        .names()
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
    let _ = req.extensions().get::<RequestCtx>();
    let gw = app.gateway.load();
    if !gw.models.serves(&model) {
        return ApiError::ModelNotFound {
            model,
            available: gw.models.names().to_vec(),
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
