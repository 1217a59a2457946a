//! Inbound surfaces: the OpenAI API, health checks, and what every request carries.

pub mod admin;
pub mod anthropic;
pub mod health;
pub mod openai;
pub mod pipeline;
pub mod settle;
pub mod surface;

use crate::error::ApiError;
use crate::policy::auth::Principal;
use bytes::Bytes;
use http::HeaderMap;
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::Instant;

/// Set by the ingress step on every request.
#[derive(Debug, Clone)]
pub struct RequestCtx {
    pub request_id: String,
    pub start: Instant,
    /// Unix milliseconds at arrival.
    pub ts_ms: i64,
    pub principal: Principal,
    /// Team of the caller's virtual key, for content-policy scopes.
    pub team: Option<Arc<str>>,
    /// Virtual key id of the caller.
    pub key_id: Option<Arc<str>>,
}

/// Reads the whole request body, refusing more than `limit` bytes with 413.
pub async fn read_body(
    headers: &HeaderMap,
    body: axum::body::Body,
    limit: u64,
) -> Result<Bytes, ApiError> {
    if let Some(len) = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
    }
    let limited = http_body_util::Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::PayloadTooLarge { limit })
        }
        Err(e) => Err(ApiError::bad_request(
            format!("could not read the request body: {e}"),
            None,
        )),
    }
}
