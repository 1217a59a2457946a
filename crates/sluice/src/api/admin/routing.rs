//! Admin API: `GET /admin/routing`, every deployment's live routing state. Needs an
//! organisation-wide admin role (`read_org`): the state is the whole fleet's, not a team's.

use crate::app::AppState;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::sync::atomic::Ordering;

pub(super) async fn routing(State(app): State<AppState>) -> Response {
    let gw = app.gateway.load();
    let deployments: Vec<serde_json::Value> = gw
        .models
        .health()
        .iter()
        .map(|(provider, model, h)| {
            let state = h.state();
            serde_json::json!({
                "provider": &**provider,
                "model": &**model,
                "healthy": state == crate::router::health::BreakerState::Closed,
                "breaker": state.as_str(),
                "breaker_open_for_ms": h.open_for_ms(),
                "ewma_latency_ms": h.ewma_us() as f64 / 1000.0,
                "in_flight": h.in_flight.load(Ordering::Relaxed),
                "rpm_used": h.rpm_used(),
                "tpm_used": h.tpm_used(),
                // From the upstream's x-ratelimit-* headers, while they hold.
                "upstream_headroom_permille": h.headroom_permille(None, None),
                "upstream_exhausted": h.exhausted(),
                "successes": h.successes.load(Ordering::Relaxed),
                "failures": h.failures.load(Ordering::Relaxed),
            })
        })
        .collect();
    Json(serde_json::json!({ "deployments": deployments })).into_response()
}
