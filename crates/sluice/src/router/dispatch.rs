//! Dispatch: send to each candidate in turn until one answers; move on only when the failure
//! is classified retryable and nothing has reached the client yet.

use super::Deployment;
use crate::providers::{
    parse_error_body, Endpoint, UpstreamError, UpstreamErrorKind, UpstreamResponse,
};
use bytes::Bytes;
use http_body_util::BodyExt;
use std::time::{Duration, Instant};

/// Largest upstream error body we read to extract its message.
const ERROR_BODY_LIMIT: usize = 1 << 20;
const ERROR_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// A successful (2xx) upstream answer and what it took to get it.
pub struct Dispatched<'a> {
    pub deployment: &'a Deployment,
    pub response: UpstreamResponse,
    pub attempts: u32,
    /// Time spent waiting on upstreams (all attempts), excluded from Sluice's overhead.
    pub upstream_wait: Duration,
}

pub struct DispatchFailure<'a> {
    pub error: UpstreamError,
    pub deployment: Option<&'a Deployment>,
    pub attempts: u32,
    pub upstream_wait: Duration,
}

pub async fn dispatch<'a>(
    candidates: &[&'a Deployment],
    endpoint: Endpoint,
    request_id: &str,
    encode: impl Fn(&Deployment) -> Bytes,
) -> Result<Dispatched<'a>, DispatchFailure<'a>> {
    let mut upstream_wait = Duration::ZERO;
    let mut last: Option<(UpstreamError, &'a Deployment)> = None;
    for (i, d) in candidates.iter().enumerate() {
        let attempts = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let body = encode(d);
        let sent = Instant::now();
        let result = d.provider.send(endpoint, body, request_id).await;
        let err = match result {
            Ok(resp) if resp.status.is_success() => {
                upstream_wait += sent.elapsed();
                return Ok(Dispatched {
                    deployment: d,
                    response: resp,
                    attempts,
                    upstream_wait,
                });
            }
            Ok(resp) => status_error(d, endpoint, resp).await,
            Err(e) => e,
        };
        upstream_wait += sent.elapsed();
        let retry = err.retryable();
        tracing::debug!(provider = %d.provider.name, model = %d.model, retry, "attempt failed: {err}");
        last = Some((err, d));
        if !retry {
            break;
        }
    }
    let attempts = u32::try_from(candidates.len()).unwrap_or(u32::MAX);
    match last {
        Some((error, d)) => Err(DispatchFailure {
            error,
            deployment: Some(d),
            attempts,
            upstream_wait,
        }),
        None => Err(DispatchFailure {
            error: UpstreamError::new(
                &std::sync::Arc::from("none"),
                "no deployment",
                UpstreamErrorKind::Connect("the route has no deployments".into()),
            ),
            deployment: None,
            attempts: 0,
            upstream_wait,
        }),
    }
}

async fn status_error(d: &Deployment, endpoint: Endpoint, resp: UpstreamResponse) -> UpstreamError {
    let retry_after = resp
        .headers
        .get(http::header::RETRY_AFTER)
        .or_else(|| resp.headers.get("retry-after-ms"))
        .cloned();
    let limited = http_body_util::Limited::new(resp.body, ERROR_BODY_LIMIT);
    let body = match tokio::time::timeout(ERROR_BODY_TIMEOUT, limited.collect()).await {
        Ok(Ok(c)) => c.to_bytes(),
        _ => Bytes::new(),
    };
    let (message, error_type, code, param) = parse_error_body(&body);
    UpstreamError::new(
        &d.provider.name,
        d.provider.target(endpoint),
        UpstreamErrorKind::Status {
            status: resp.status,
            message,
            error_type,
            code,
            param,
            retry_after,
        },
    )
}
