//! `GET /health/live` (the process answers) and `GET /health/ready` (it can serve traffic).

use crate::app::AppState;
use crate::store::UsageStore;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::StatusCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

pub async fn live() -> Response {
    Json(serde_json::json!({"status": "ok"})).into_response()
}

pub async fn ready(State(app): State<AppState>) -> Response {
    let unavailable = |reason: String| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "unavailable", "reason": reason})),
        )
            .into_response()
    };
    if app.shutting_down.load(Ordering::Relaxed) {
        return unavailable("shutting down".into());
    }
    // A store that does not answer degrades the replica but does not take it out: known keys
    // are still served and usage spills to disk until the store is back.
    let mut degraded: Vec<String> = Vec::new();
    match tokio::time::timeout(Duration::from_secs(2), app.store.ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => degraded.push(format!(
            "store unreachable ({}): {e}; usage spills to disk, admin writes wait",
            app.store.pool().engine()
        )),
        Err(_) => degraded.push(format!(
            "store unreachable ({}): no answer within 2s; usage spills to disk, admin writes wait",
            app.store.pool().engine()
        )),
    }
    let gw = app.gateway.load();
    // Degraded still serves (200), so a load balancer keeps the replica; the body says why.
    degraded.extend(app.gov.limits.degraded());
    let degraded = (!degraded.is_empty()).then(|| degraded.join("; "));
    Json(serde_json::json!({
        "status": if degraded.is_some() { "degraded" } else { "ready" },
        "degraded": degraded,
        "store": app.store.pool().engine(),
        "models": gw.models.names().len(),
        "providers": gw.providers.len(),
    }))
    .into_response()
}
