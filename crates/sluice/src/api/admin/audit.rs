//! `GET /admin/audit`: the audit log of admin writes, newest first. Filters `since`, `until`
//! (as for usage), `actor` (a key id, `master`), `target` (a key id, user or team name);
//! `limit` (1-1000, default 100) and `cursor` (the previous page's `next_cursor`).

use super::usage::parse_when;
use crate::app::AppState;
use crate::error::ApiError;
use crate::store::audit::AuditQuery;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::collections::HashMap;

const PARAMS: &[&str] = &["since", "until", "actor", "target", "limit", "cursor"];

pub(super) async fn audit(
    State(app): State<AppState>,
    Query(p): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    if let Some(k) = p.keys().find(|k| !PARAMS.contains(&k.as_str())) {
        return Err(ApiError::bad_request(
            format!(
                "unknown query parameter `{k}`; known: {}",
                PARAMS.join(", ")
            ),
            None,
        ));
    }
    let now = app.gov.clock.now_ms();
    let bad = |param: &'static str, msg: String| {
        ApiError::bad_request(format!("`{param}`: {msg}"), Some(param))
    };
    let q = AuditQuery {
        since_ms: p
            .get("since")
            .map(|s| parse_when(s, now, "since"))
            .transpose()?,
        until_ms: p
            .get("until")
            .map(|s| parse_when(s, now, "until"))
            .transpose()?,
        actor: p.get("actor").cloned(),
        target: p.get("target").cloned(),
        before_id: p
            .get("cursor")
            .map(|c| {
                c.parse::<i64>()
                    .map_err(|_| bad("cursor", "not a cursor from next_cursor".into()))
            })
            .transpose()?,
        limit: match p.get("limit") {
            None => 100,
            Some(l) => l
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=1000).contains(n))
                .ok_or_else(|| bad("limit", format!("{l:?}: use 1 to 1000")))?,
        },
    };
    let (data, next) = app
        .store
        .audit(&q)
        .await
        .map_err(|e| ApiError::from_store("reading the audit log", &e))?;
    Ok(Json(serde_json::json!({
        "object": "list",
        "data": data,
        "next_cursor": next.map(|n| n.to_string()),
    }))
    .into_response())
}
