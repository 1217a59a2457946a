//! Dispatch: send to the candidates in order until one answers. Another attempt is made only
//! when the failure is classified retryable, nothing has reached the client yet (a response
//! is returned at its headers, so a stream is never retried), attempts remain and the
//! route's retry deadline has not passed. Going back to a deployment already tried waits an
//! exponential backoff with full jitter, or longer when the upstream sent `Retry-After`.

use super::health::InFlight;
use super::{retry, Deployment, Route};
use crate::providers::{
    parse_error_body, Endpoint, ErrorSource, UpstreamError, UpstreamErrorKind, UpstreamResponse,
};
use bytes::Bytes;
use http::HeaderValue;
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
    /// Why an earlier attempt was given up (`None` when the first attempt answered).
    pub fallback_reason: Option<&'static str>,
    /// Hold until the response body is done.
    pub in_flight: InFlight,
}

pub struct DispatchFailure<'a> {
    pub error: UpstreamError,
    pub deployment: Option<&'a Deployment>,
    pub attempts: u32,
    pub upstream_wait: Duration,
}

/// Per-request knobs.
pub struct Attempt {
    /// When the request arrived (the retry deadline counts from here).
    pub start: Instant,
    /// A shorter per-attempt timeout the client asked for (`x-sluice-timeout-ms`).
    pub timeout: Option<Duration>,
}

pub async fn dispatch<'a>(
    route: &Route,
    candidates: &[&'a Deployment],
    endpoint: Endpoint,
    request_id: &str,
    at: &Attempt,
    encode: impl Fn(&Deployment) -> Bytes,
) -> Result<Dispatched<'a>, DispatchFailure<'a>> {
    let n = candidates.len();
    let max_attempts = route
        .retries
        .max_attempts
        .unwrap_or_else(|| u32::try_from(n).unwrap_or(u32::MAX))
        .max(1);
    let deadline = at.start + route.retries.deadline;
    let mut upstream_wait = Duration::ZERO;
    let mut last: Option<(UpstreamError, &'a Deployment)> = None;
    let mut attempts: u32 = 0;
    let mut pass: u32 = 0;
    'passes: loop {
        let attempts_before = attempts;
        for &d in candidates {
            if attempts >= max_attempts {
                break 'passes;
            }
            if !d.available() {
                continue;
            }
            if pass > 0 {
                // Going back to a deployment that already failed: back off first.
                let mut wait = retry::backoff(&route.retries, pass - 1);
                if let Some((e, ld)) = &last {
                    if std::ptr::eq(*ld, d) {
                        wait = wait.max(retry::retry_after(e).unwrap_or_default());
                    }
                }
                if Instant::now() + wait >= deadline {
                    break 'passes;
                }
                tokio::time::sleep(wait).await;
            } else if attempts > 0 && Instant::now() >= deadline {
                break 'passes;
            }
            if !d.health.admit() {
                continue;
            }
            if d.rpm.is_some() {
                d.health.count_request();
            }
            attempts += 1;
            let in_flight = InFlight::new(&d.health);
            let body = encode(d);
            let timeout = at.timeout.map_or(d.timeout, |t| t.min(d.timeout));
            let sent = Instant::now();
            let result = d
                .provider
                .send_within(endpoint, &d.model, body, request_id, timeout)
                .await;
            let err = match result {
                Ok(resp) if resp.status.is_success() => {
                    let took = sent.elapsed();
                    upstream_wait += took;
                    d.health
                        .record_success(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
                    if route.breaker.error_rate.is_some() {
                        d.health.count_in_window(&route.breaker, false);
                    }
                    return Ok(Dispatched {
                        deployment: d,
                        response: resp,
                        attempts,
                        upstream_wait,
                        fallback_reason: last.as_ref().map(|(e, _)| reason(e)),
                        in_flight,
                    });
                }
                Ok(resp) => status_error(d, endpoint, resp).await,
                Err(e) => e,
            };
            upstream_wait += sent.elapsed();
            if err.source() == ErrorSource::Upstream {
                d.health.record_failure(&route.breaker);
            } else {
                // The deployment answered; the request was at fault.
                d.health.release_probe();
            }
            let retry = err.retryable();
            tracing::debug!(provider = %d.provider.name, model = %d.model, retry, "attempt failed: {err}");
            last = Some((err, d));
            if !retry {
                break 'passes;
            }
        }
        if attempts == attempts_before {
            // Nothing could be tried this pass (breakers open): stop.
            break;
        }
        pass += 1;
    }
    match last {
        Some((error, d)) => Err(DispatchFailure {
            error,
            deployment: Some(d),
            attempts,
            upstream_wait,
        }),
        None => Err(DispatchFailure {
            error: unavailable(&route.name),
            deployment: None,
            attempts: 0,
            upstream_wait,
        }),
    }
}

/// Every deployment of `route` (and its fallbacks) is held out by its circuit breaker.
pub fn unavailable(route: &str) -> UpstreamError {
    UpstreamError::new(
        &std::sync::Arc::from("none"),
        "no deployment",
        UpstreamErrorKind::Unavailable(format!(
            "no deployment of model `{route}` is available right now: their circuit breakers \
             are open after repeated failures or their rpm capacity is used up; retry later"
        )),
    )
}

/// Short reason an attempt was given up, for `x-sluice-fallback-reason`.
pub fn reason(e: &UpstreamError) -> &'static str {
    match &e.kind {
        UpstreamErrorKind::Connect(_) => "unreachable",
        UpstreamErrorKind::Timeout { .. } => "timeout",
        UpstreamErrorKind::Protocol(_) => "connection_error",
        UpstreamErrorKind::Unavailable(_) => "unavailable",
        UpstreamErrorKind::Status { status, .. } => match status.as_u16() {
            429 => "rate_limited",
            503 | 529 => "overloaded",
            408 => "timeout",
            s if s >= 500 => "server_error",
            _ => "client_error",
        },
    }
}

async fn status_error(d: &Deployment, endpoint: Endpoint, resp: UpstreamResponse) -> UpstreamError {
    // `retry-after-ms` becomes a whole-second `Retry-After` (rounded up) so that one header
    // carries it, both for our own wait and for the client.
    let retry_after = resp
        .headers
        .get(http::header::RETRY_AFTER)
        .cloned()
        .or_else(|| {
            let ms: u64 = resp
                .headers
                .get("retry-after-ms")?
                .to_str()
                .ok()?
                .trim()
                .parse()
                .ok()?;
            Some(HeaderValue::from(ms.div_ceil(1000)))
        });
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
