//! `POST /v1/feedback`: a quality score on an answered request, from the key that made the
//! request or an admin; stored with the usage record (`store::feedback`).

use crate::api::admin::input::parse;
use crate::api::RequestCtx;
use crate::app::AppState;
use crate::error::ApiError;
use crate::policy::auth::Principal;
use crate::policy::keys::Role;
use crate::store::feedback::{self, Feedback};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use std::time::Duration;

const MAX_LABEL: usize = 64;
const MAX_COMMENT: usize = 4096;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    request_id: String,
    score: f64,
    label: Option<String>,
    comment: Option<String>,
}

fn too_long(field: &'static str, text: &Option<String>, max: usize) -> Result<(), ApiError> {
    match text {
        Some(t) if t.chars().count() > max => Err(ApiError::bad_request(
            format!("`{field}`: at most {max} characters"),
            Some(field),
        )),
        _ => Ok(()),
    }
}

pub async fn submit(
    State(app): State<AppState>,
    Extension(ctx): Extension<RequestCtx>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let input: Input = parse(&body)?;
    if !(0.0..=1.0).contains(&input.score) {
        return Err(ApiError::bad_request(
            format!(
                "`score`: {} is out of range; use a number from 0 (bad) to 1 (good)",
                input.score
            ),
            Some("score"),
        ));
    }
    if input.request_id.is_empty() || input.request_id.len() > 128 {
        return Err(ApiError::bad_request(
            "`request_id`: the x-request-id of an answered request (1 to 128 bytes)",
            Some("request_id"),
        ));
    }
    too_long("label", &input.label, MAX_LABEL)?;
    too_long("comment", &input.comment, MAX_COMMENT)?;

    let key_id = find_record(&app, &input.request_id).await?;
    let admin = ctx.principal.role() == Some(Role::Admin);
    let own = matches!(&ctx.principal, Principal::Key(k) if key_id.as_deref() == Some(&*k.id));
    if !(admin || own) {
        return Err(ApiError::Forbidden(
            "feedback is accepted from the key that made the request or an admin".into(),
        ));
    }
    let f = Feedback {
        request_id: input.request_id,
        feedback_ms: app.gov.clock.now_ms(),
        score: input.score,
        label: input.label,
        comment: input.comment,
        actor: ctx.principal.label().to_string(),
    };
    feedback::upsert(&app.store, &f)
        .await
        .map_err(|e| ApiError::Internal(format!("storing feedback: {e}")))?;
    Ok(Json(serde_json::json!({
        "object": "feedback",
        "request_id": f.request_id,
        "score": f.score,
        "label": f.label,
        "comment": f.comment,
    }))
    .into_response())
}

/// The request's record: usage records reach the store within the sink's flush interval,
/// so a request answered a moment ago is waited for (briefly) before it is called unknown.
async fn find_record(app: &AppState, request_id: &str) -> Result<Option<String>, ApiError> {
    let wait = app.gateway.load().config.usage.sink.flush_interval + Duration::from_secs(1);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match feedback::owner(&app.store, request_id).await {
            Ok(Some(owner)) => return Ok(owner),
            Ok(None) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(None) => {
                return Err(ApiError::NotFound {
                    message: format!("no recorded request has the id {request_id:?}"),
                    param: Some("request_id"),
                })
            }
            Err(e) => return Err(ApiError::Internal(format!("reading usage records: {e}"))),
        }
    }
}
