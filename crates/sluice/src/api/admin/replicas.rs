//! `GET /admin/replicas`: every live replica of the fleet with its version, config hash and
//! uptime, so that drift between per-replica config files is visible.

use crate::app::AppState;
use crate::policy::governance::rfc3339;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;

pub(super) async fn list(State(app): State<AppState>) -> Response {
    let (all, error) = app.replicas.list(&app).await;
    let now = crate::app::unix_ms();
    let drift = all
        .iter()
        .any(|r| all.first().is_some_and(|f| f.config_hash != r.config_hash));
    let data: Vec<serde_json::Value> = all
        .iter()
        .map(|r| {
            serde_json::json!({
                "id": r.id,
                "this": r.id == app.replicas.id,
                "version": r.version,
                "config_hash": r.config_hash,
                "listen": r.listen,
                "started_at": rfc3339(r.started_ms),
                "uptime_s": (now - r.started_ms).max(0) / 1000,
            })
        })
        .collect();
    Json(serde_json::json!({
        "data": data,
        "config_drift": drift,
        "error": error,
    }))
    .into_response()
}
