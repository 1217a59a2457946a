//! Inbound surfaces: the OpenAI API, health checks, and what every request carries.

pub mod admin;
pub mod anthropic;
pub mod feedback;
pub mod health;
pub mod openai;
pub mod pipeline;
pub mod settle;
pub mod surface;
pub mod ui;

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
        Err(e) if BodyReadTimeout::found_in(&*e).is_some() => {
            let limit_ms = BodyReadTimeout::found_in(&*e).map_or(0, |t| t.limit_ms);
            Err(ApiError::RequestTimeout { limit_ms })
        }
        Err(e) => Err(ApiError::bad_request(
            format!("could not read the request body: {e}"),
            None,
        )),
    }
}

/// The request body did not arrive within `server.body_read_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {limit_ms} ms")]
pub struct BodyReadTimeout {
    pub limit_ms: u64,
}

impl BodyReadTimeout {
    /// Finds it in an error's source chain (axum and `Limited` each wrap body errors).
    fn found_in<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a BodyReadTimeout> {
        let mut cur = Some(e);
        while let Some(err) = cur {
            if let Some(t) = err.downcast_ref::<BodyReadTimeout>() {
                return Some(t);
            }
            cur = err.source();
        }
        None
    }
}

/// A request body with a deadline (set by the ingress step from `server.body_read_timeout`,
/// counted from the request's start): a client that trickles its body gets 408 instead of
/// holding a handler, and its connection, forever.
pub struct DeadlineBody {
    inner: axum::body::Body,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
    limit_ms: u64,
}

impl DeadlineBody {
    pub fn new(inner: axum::body::Body, limit: std::time::Duration) -> Self {
        Self {
            inner,
            deadline: Box::pin(tokio::time::sleep(limit)),
            limit_ms: u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        use std::future::Future;
        use std::task::Poll;
        if let Poll::Ready(f) = std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(f.map(|r| r.map_err(Into::into)));
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            let limit_ms = self.limit_ms;
            return Poll::Ready(Some(Err(Box::new(BodyReadTimeout { limit_ms }))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
