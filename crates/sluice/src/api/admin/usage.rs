//! Usage analytics over the usage records: `GET /admin/usage` (group-by sums and
//! percentiles), `GET /admin/performance` (per deployment latency, TTFT, tokens per second,
//! error and fallback rates), `GET /admin/requests` (the paged request log) and
//! `GET /admin/usage/export` (compliance log as JSONL). A `team_admin` sees its team only.

use crate::app::AppState;
use crate::error::ApiError;
use crate::policy::roles::Scope;
use crate::store::query::{self, Bucket, Cursor, Dim, Filter};
use axum::body::Body;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use std::collections::HashMap;

type Params = Query<HashMap<String, String>>;

const FILTERS: &[&str] = &[
    "since",
    "until",
    "key",
    "user",
    "team",
    "model",
    "provider",
    "deployment",
    "status",
    "surface",
    "error_class",
    "cache",
];

fn bad(param: &'static str, msg: String) -> ApiError {
    ApiError::bad_request(format!("`{param}`: {msg}"), Some(param))
}

/// `7d`, `24h`, `30m`, `90s` ago; unix seconds (or ms); `YYYY-MM-DD[THH:MM:SSZ]`.
pub(crate) fn parse_when(text: &str, now_ms: i64, param: &'static str) -> Result<i64, ApiError> {
    let t = text.trim();
    let unit = |u: &str| match u {
        "s" => Some(1_000),
        "m" => Some(60_000),
        "h" => Some(3_600_000),
        "d" => Some(86_400_000),
        "w" => Some(7 * 86_400_000),
        _ => None,
    };
    if let Some((n, u)) = t
        .find(|c: char| !c.is_ascii_digit())
        .filter(|&i| i > 0 && i == t.len() - 1)
        .map(|i| t.split_at(i))
    {
        if let (Ok(n), Some(ms)) = (n.parse::<i64>(), unit(u)) {
            return Ok(now_ms - n.saturating_mul(ms));
        }
    }
    if let Ok(n) = t.parse::<i64>() {
        // Unix seconds, or milliseconds when it is that large.
        return Ok(if n > 100_000_000_000 { n } else { n * 1000 });
    }
    super::input::parse_time(&serde_json::Value::String(t.to_string())).map_err(|_| {
        bad(
            param,
            format!("{text:?} is not a time: use 7d / 24h / 30m (ago), unix seconds, or 2026-11-01T00:00:00Z"),
        )
    })
}

/// Reads the filters; a `team_admin` is held to its team.
pub(super) fn filter(
    app: &AppState,
    scope: &Scope,
    p: &HashMap<String, String>,
    allowed_extra: &[&str],
) -> Result<Filter, ApiError> {
    if let Some(k) = p
        .keys()
        .find(|k| !FILTERS.contains(&k.as_str()) && !allowed_extra.contains(&k.as_str()))
    {
        let mut known: Vec<&str> = FILTERS.to_vec();
        known.extend_from_slice(allowed_extra);
        return Err(ApiError::bad_request(
            format!("unknown query parameter `{k}`; known: {}", known.join(", ")),
            None,
        ));
    }
    let now = app.gov.clock.now_ms();
    let mut f = Filter::default();
    if let Some(s) = p.get("since") {
        f.since_ms = Some(parse_when(s, now, "since")?);
    }
    if let Some(s) = p.get("until") {
        f.until_ms = Some(parse_when(s, now, "until")?);
    }
    for (param, dim) in [
        ("key", Dim::Key),
        ("user", Dim::User),
        ("team", Dim::Team),
        ("model", Dim::Model),
        ("provider", Dim::Provider),
        ("deployment", Dim::Deployment),
        ("surface", Dim::Surface),
        ("error_class", Dim::ErrorClass),
        ("cache", Dim::Cache),
    ] {
        if let Some(v) = p.get(param) {
            f.eq.push((dim, v.clone()));
        }
    }
    if let Some(s) = p.get("status") {
        match s.as_str() {
            "ok" | "success" => f.status_class = Some(true),
            "error" | "errors" => f.status_class = Some(false),
            code if code.parse::<u16>().is_ok() => f.eq.push((Dim::Status, code.to_string())),
            other => {
                return Err(bad(
                    "status",
                    format!("{other:?}: use ok, error, or a status code such as 429"),
                ))
            }
        }
    }
    if let Scope::Team(t) = scope {
        if let Some(asked) = p.get("team") {
            crate::policy::roles::may_touch(scope, "usage", Some(asked))?;
        } else {
            f.eq.push((Dim::Team, t.clone()));
        }
    }
    Ok(f)
}

/// `group_by=team,model,day`: dimensions plus at most one time bucket.
fn group_by(
    text: Option<&String>,
    default: &[Dim],
) -> Result<(Vec<Dim>, Option<Bucket>), ApiError> {
    let Some(text) = text else {
        return Ok((default.to_vec(), None));
    };
    let mut dims = Vec::new();
    let mut bucket = None;
    for part in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if let Some(b) = Bucket::parse(part) {
            if bucket.replace(b).is_some() {
                return Err(bad(
                    "group_by",
                    "at most one of hour, day, week, month".into(),
                ));
            }
        } else if let Some(d) = Dim::parse(part) {
            if !dims.contains(&d) {
                dims.push(d);
            }
        } else {
            let names: Vec<&str> = Dim::ALL.iter().map(|d| d.name()).collect();
            return Err(bad(
                "group_by",
                format!(
                    "unknown dimension {part:?}; use {}, or a bucket: hour, day, week, month",
                    names.join(", ")
                ),
            ));
        }
    }
    Ok((dims, bucket))
}

pub(super) fn store_err(e: crate::store::StoreError) -> ApiError {
    ApiError::from_store("reading usage records", &e)
}

/// `GET /admin/usage`: `{"rows": [...]}` grouped by `group_by` (default: no grouping, one
/// total row).
pub(super) async fn usage(
    State(app): State<AppState>,
    Extension(scope): Extension<Scope>,
    Query(p): Params,
) -> Result<Response, ApiError> {
    let f = filter(&app, &scope, &p, &["group_by"])?;
    let (dims, bucket) = group_by(p.get("group_by"), &[])?;
    let kept = app.gateway.load().config.usage.kept(app.gov.clock.now_ms());
    let (rows, source) = query::aggregate(&app.store, &f, &dims, bucket, kept)
        .await
        .map_err(store_err)?;
    Ok(Json(with_source(serde_json::json!({ "rows": rows }), source)).into_response())
}

/// `GET /admin/performance`: per provider and deployment model by default.
pub(super) async fn performance(
    State(app): State<AppState>,
    Extension(scope): Extension<Scope>,
    Query(p): Params,
) -> Result<Response, ApiError> {
    let f = filter(&app, &scope, &p, &["group_by"])?;
    let (dims, bucket) = group_by(p.get("group_by"), &[Dim::Provider, Dim::Deployment])?;
    let kept = app.gateway.load().config.usage.kept(app.gov.clock.now_ms());
    let (rows, source) = query::aggregate(&app.store, &f, &dims, bucket, kept)
        .await
        .map_err(store_err)?;
    // The performance view: latency, speed and reliability, without the books.
    let keep = [
        "bucket",
        "requests",
        "errors",
        "error_rate",
        "retries",
        "fallbacks",
        "fallback_rate",
        "p50_latency_ms",
        "p95_latency_ms",
        "p99_latency_ms",
        "p50_ttft_ms",
        "p95_ttft_ms",
        "output_tokens_per_second",
    ];
    let rows: Vec<serde_json::Value> = rows
        .into_iter()
        .map(|mut r| {
            if let Some(o) = r.as_object_mut() {
                o.retain(|k, _| keep.contains(&k.as_str()) || dims.iter().any(|d| d.name() == k));
            }
            r
        })
        .collect();
    Ok(Json(with_source(serde_json::json!({ "rows": rows }), source)).into_response())
}

/// Says where the figures came from: `"source": "rollups"` with the range they cover (the
/// asked one on the rollups' minute or hour grid), or `"records"` (no rollup holds the
/// asked combination of dimensions: summed from the raw records, slower).
fn with_source(
    mut body: serde_json::Value,
    source: crate::store::rollup::Source,
) -> serde_json::Value {
    use crate::policy::governance::rfc3339;
    use crate::store::rollup::Source;
    match source {
        Source::Rollups { since, until, .. } => {
            body["source"] = "rollups".into();
            body["since"] = (since > 0).then(|| rfc3339(since)).into();
            body["until"] = until.map(rfc3339).into();
        }
        Source::Records => body["source"] = "records".into(),
    }
    body
}

fn limit_and_cursor(p: &HashMap<String, String>) -> Result<(u32, Option<Cursor>), ApiError> {
    let limit = match p.get("limit") {
        None => 50,
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| bad("limit", format!("{l:?}: use 1 to 1000")))?,
    };
    let cursor = match p.get("cursor") {
        None => None,
        Some(c) => Some(
            Cursor::parse(c)
                .ok_or_else(|| bad("cursor", "not a cursor from next_cursor".into()))?,
        ),
    };
    Ok((limit, cursor))
}

/// `GET /admin/requests`: newest first, `limit` (default 50) per page, `cursor` from the
/// previous page's `next_cursor`; `include_content=true` adds compliance prompt/answer;
/// `request_id` picks one request's record(s).
pub(super) async fn requests(
    State(app): State<AppState>,
    Extension(scope): Extension<Scope>,
    Query(p): Params,
) -> Result<Response, ApiError> {
    let mut f = filter(
        &app,
        &scope,
        &p,
        &["limit", "cursor", "include_content", "request_id"],
    )?;
    f.request_id = p.get("request_id").cloned();
    let (limit, cursor) = limit_and_cursor(&p)?;
    let content = p
        .get("include_content")
        .is_some_and(|v| v == "true" || v == "1");
    let (data, next) = query::requests(&app.store, &f, cursor, limit, content)
        .await
        .map_err(store_err)?;
    Ok(Json(serde_json::json!({
        "object": "list",
        "data": data,
        "next_cursor": next.map(Cursor::encode),
    }))
    .into_response())
}

/// `GET /admin/usage/export`: records with stored prompt and answer, one JSON object a line
/// (newest first), streamed page by page.
pub(super) async fn export(
    State(app): State<AppState>,
    Extension(scope): Extension<Scope>,
    Query(p): Params,
) -> Result<Response, ApiError> {
    let mut f = filter(&app, &scope, &p, &["all"])?;
    // By default only the compliance log; `all=true` exports every record.
    f.with_content = !p.get("all").is_some_and(|v| v == "true" || v == "1");
    // Fail before the 200 if the store cannot be read at all.
    let first = query::requests(&app.store, &f, None, 500, true)
        .await
        .map_err(store_err)?;
    let store = app.store.clone();
    let stream =
        futures_util::stream::unfold((Some(first), store, f), |(page, store, f)| async move {
            let (rows, next) = page?;
            let mut text = String::new();
            for r in rows {
                text.push_str(&r.to_string());
                text.push('\n');
            }
            let following = match next {
                Some(c) => query::requests(&store, &f, Some(c), 500, true).await.ok(),
                None => None,
            };
            Some((
                Ok::<_, std::convert::Infallible>(bytes::Bytes::from(text)),
                (following, store, f),
            ))
        });
    Ok((
        [(http::header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn times_parse_relative_and_absolute() {
        let now = 1_000_000_000_000;
        assert_eq!(
            parse_when("7d", now, "since").unwrap(),
            now - 7 * 86_400_000
        );
        assert_eq!(parse_when("24h", now, "since").unwrap(), now - 86_400_000);
        assert_eq!(
            parse_when("1700000000", now, "since").unwrap(),
            1_700_000_000_000
        );
        assert_eq!(
            parse_when("2023-11-14T22:13:20Z", now, "since").unwrap(),
            1_700_000_000_000
        );
        assert!(parse_when("yesterday", now, "since").is_err());
    }

    #[test]
    fn group_by_takes_dimensions_and_one_bucket() {
        let (d, b) = group_by(Some(&"team,model,day".to_string()), &[]).unwrap();
        assert_eq!(d, [Dim::Team, Dim::Model]);
        assert_eq!(b, Some(Bucket::Day));
        assert!(group_by(Some(&"day,week".to_string()), &[]).is_err());
        assert!(group_by(Some(&"colour".to_string()), &[]).is_err());
    }
}
