//! Dispatch: send to the candidates in order until one answers. Another attempt is made only
//! when the failure is classified retryable, nothing has reached the client yet (a response
//! is returned at its headers, so a stream is never retried), attempts remain and the
//! route's retry deadline has not passed. Going back to a deployment already tried waits an
//! exponential backoff with full jitter, or longer when the upstream sent `Retry-After`.

use super::health::{Health, InFlight};
use super::{retry, Deployment, Plan, Route};
use crate::config::HedgeAfter;
use crate::providers::{
    parse_error_body, Endpoint, ErrorSource, UpstreamError, UpstreamErrorKind, UpstreamResponse,
};
use bytes::Bytes;
use http::HeaderValue;
use http_body_util::BodyExt;
use std::future::Future;
use std::time::{Duration, Instant};

/// Largest upstream error body we read to extract its message.
const ERROR_BODY_LIMIT: usize = 1 << 20;
const ERROR_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// A successful (2xx) upstream answer and what it took to get it.
pub struct Dispatched<'a> {
    pub deployment: &'a Deployment,
    pub response: UpstreamResponse,
    /// The first body chunk and when it arrived, when dispatch waited for it (a first-token
    /// timeout or hedging applied to a stream); it goes out before the rest of the body.
    pub first_chunk: Option<(Bytes, Instant)>,
    /// The timeouts that apply to the rest of this answer.
    pub limits: Limits,
    /// When the answering attempt was sent (its `limits.total` counts from here).
    pub sent: Instant,
    pub attempts: u32,
    /// Time spent waiting on upstreams (all attempts), excluded from Sluice's overhead.
    pub upstream_wait: Duration,
    /// Why an earlier attempt was given up (`None` when the first attempt answered).
    pub fallback_reason: Option<&'static str>,
    /// A hedge was sent: which attempt won, and the one cancelled (if still running).
    pub hedge: Option<Hedged<'a>>,
    /// Hold until the response body is done.
    pub in_flight: InFlight,
    /// Attempts before (or beside) the one that answered.
    pub failed: Vec<FailedAttempt<'a>>,
}

pub struct Hedged<'a> {
    /// The second (hedge) attempt answered first.
    pub won_by_hedge: bool,
    /// The attempt that was still waiting when the other answered, cancelled (its request
    /// dropped).
    pub cancelled: Option<&'a Deployment>,
}

/// An attempt that did not answer the client: it failed, or lost a hedge.
#[derive(Clone, Copy)]
pub struct FailedAttempt<'a> {
    pub deployment: &'a Deployment,
    /// The provider's status; 0 when none arrived.
    pub status: u16,
    pub outcome: &'static str,
    /// The provider was sent the prompt and did not refuse it (a timeout, a broken
    /// connection, a cancelled hedge): it may bill the prompt.
    pub billed: bool,
}

impl<'a> FailedAttempt<'a> {
    fn of(e: &UpstreamError, d: &'a Deployment) -> Self {
        let (status, billed) = match &e.kind {
            UpstreamErrorKind::Status { status, .. } => (status.as_u16(), false),
            UpstreamErrorKind::Timeout { .. } | UpstreamErrorKind::Protocol(_) => (0, true),
            UpstreamErrorKind::Connect(_) | UpstreamErrorKind::Unavailable(_) => (0, false),
        };
        Self {
            deployment: d,
            status,
            outcome: reason(e),
            billed,
        }
    }
}

pub struct DispatchFailure<'a> {
    pub error: UpstreamError,
    /// Every attempt, the last (whose error this is) included.
    pub failed: Vec<FailedAttempt<'a>>,
    pub deployment: Option<&'a Deployment>,
    pub attempts: u32,
    pub upstream_wait: Duration,
}

/// Shorter timeouts a client asked for (`x-sluice-timeout-ms`, `x-sluice-first-token-timeout-ms`,
/// `x-sluice-idle-timeout-ms`, `x-sluice-total-timeout-ms`): each only ever shortens what the
/// deployment's config allows.
#[derive(Debug, Default, Clone, Copy)]
pub struct Overrides {
    pub headers: Option<Duration>,
    pub first_token: Option<Duration>,
    pub idle: Option<Duration>,
    pub total: Option<Duration>,
}

/// The timeouts of one attempt on one deployment (config, shortened by the client's overrides).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Until response headers (and the whole body when not streaming).
    pub headers: Duration,
    /// Until the first byte of the answer.
    pub first_token: Option<Duration>,
    /// Longest silence between stream chunks.
    pub idle: Duration,
    /// The whole attempt, from sending to the last byte.
    pub total: Option<Duration>,
}

impl Limits {
    pub fn of(d: &Deployment, o: &Overrides) -> Self {
        let shorter = |cfg: Duration, o: Option<Duration>| o.map_or(cfg, |o| o.min(cfg));
        let opt =
            |cfg: Option<Duration>, o: Option<Duration>, bound: Option<Duration>| match (cfg, o) {
                (Some(c), Some(o)) => Some(c.min(o)),
                (Some(c), None) => Some(c),
                (None, Some(o)) => Some(bound.map_or(o, |b| o.min(b))),
                (None, None) => None,
            };
        let headers = shorter(d.timeout, o.headers);
        let total = opt(d.total_timeout, o.total, None);
        Limits {
            headers,
            // Never longer than the total, nor than the time allowed for the headers.
            first_token: opt(d.first_token_timeout, o.first_token, Some(d.timeout))
                .map(|f| total.map_or(f, |t| f.min(t))),
            idle: shorter(d.idle_timeout, o.idle),
            total,
        }
    }
}

/// Per-request knobs.
pub struct Attempt {
    /// When the request arrived (the retry deadline counts from here).
    pub start: Instant,
    /// The client's shorter timeouts.
    pub overrides: Overrides,
    /// The client asked for a stream (the first chunk can be awaited before answering).
    pub stream: bool,
    /// Estimated tokens (prompt bytes / 4 + max tokens), counted against `tpm` capacity.
    pub tokens: u64,
}

/// One attempt that answered: the response, and its first chunk when awaited.
struct Answer {
    response: UpstreamResponse,
    first_chunk: Option<(Bytes, Instant)>,
    limits: Limits,
    sent: Instant,
    in_flight: InFlight,
}

/// Releases a half-open probe if an attempt is dropped (a cancelled hedge) before it
/// reported success or failure, so the breaker is not left waiting for it forever.
struct ProbeGuard<'a>(&'a Health, bool);

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if !self.1 {
            self.0.release_probe();
        }
    }
}

/// One attempt on `d` (already admitted by its breaker): send, wait for headers (and for a
/// stream's first chunk when `prefetch`), feed the deployment's health.
async fn try_one(
    route: &Route,
    d: &Deployment,
    endpoint: Endpoint,
    body: Bytes,
    request_id: &str,
    at: &Attempt,
) -> Result<Answer, UpstreamError> {
    let mut guard = ProbeGuard(&d.health, false);
    if d.rpm.is_some() {
        d.health.count_request();
    }
    if d.tpm.is_some() {
        d.health.count_tokens(at.tokens);
    }
    let in_flight = InFlight::new(&d.health);
    let limits = Limits::of(d, &at.overrides);
    let prefetch = at.stream && (limits.first_token.is_some() || route.hedge.is_some());
    let headers_limit = match limits.first_token {
        // Without a stream, the first token comes with the headers.
        Some(ft) if !prefetch => ft.min(limits.headers),
        _ => limits.headers,
    };
    let headers_limit = limits.total.map_or(headers_limit, |t| t.min(headers_limit));
    let sent = Instant::now();
    let result = d
        .provider
        .send_within(endpoint, &d.model, body, request_id, headers_limit)
        .await;
    let outcome = match result {
        Ok(mut resp) if resp.status.is_success() => {
            d.health.learn_rate_limits(&resp.headers);
            if prefetch {
                let wait = limits.first_token.unwrap_or(limits.headers);
                first_chunk(
                    d,
                    endpoint,
                    &mut resp.body,
                    wait.saturating_sub(sent.elapsed()),
                    wait,
                )
                .await
                .map(|first| (resp, first))
            } else {
                Ok((resp, None))
            }
        }
        Ok(resp) => {
            d.health.learn_rate_limits(&resp.headers);
            Err(status_error(d, endpoint, resp).await)
        }
        Err(e) => Err(e),
    };
    guard.1 = true;
    match outcome {
        Ok((response, first_chunk)) => {
            let took = sent.elapsed();
            if d.health
                .record_success(u64::try_from(took.as_micros()).unwrap_or(u64::MAX))
            {
                super::health::announce(&d.provider.name, &d.model, None);
            }
            if route.breaker.error_rate.is_some() {
                d.health.count_in_window(&route.breaker, false);
            }
            if route.hedge.is_some() {
                route.ttft.record(took);
            }
            Ok(Answer {
                response,
                first_chunk,
                limits,
                sent,
                in_flight,
            })
        }
        Err(err) => {
            if err.source() == ErrorSource::Upstream {
                if d.health.record_failure(&route.breaker) {
                    super::health::announce(
                        &d.provider.name,
                        &d.model,
                        Some(route.breaker.cooldown),
                    );
                }
            } else {
                // The deployment answered; the request was at fault.
                d.health.release_probe();
            }
            tracing::debug!(provider = %d.provider.name, model = %d.model, retry = err.retryable(), "attempt failed: {err}");
            Err(err)
        }
    }
}

/// Waits (at most `within`) for the first data frame of a stream. A stream that ends at
/// once yields `None`; silence past `within` is a (retryable) first-token timeout.
async fn first_chunk(
    d: &Deployment,
    endpoint: Endpoint,
    body: &mut crate::providers::UpstreamBody,
    within: Duration,
    configured: Duration,
) -> Result<Option<(Bytes, Instant)>, UpstreamError> {
    let read = async {
        loop {
            match body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(e),
                Some(Ok(f)) => {
                    if let Ok(data) = f.into_data() {
                        if !data.is_empty() {
                            return Ok(Some((data, Instant::now())));
                        }
                    }
                }
            }
        }
    };
    match tokio::time::timeout(within, read).await {
        Ok(Ok(first)) => Ok(first),
        Ok(Err(e)) => Err(UpstreamError::new(
            &d.provider.name,
            d.provider.target(endpoint),
            UpstreamErrorKind::Protocol(format!("stream broke before its first chunk: {e}")),
        )),
        Err(_) => Err(UpstreamError::new(
            &d.provider.name,
            d.provider.target(endpoint),
            UpstreamErrorKind::Timeout { after: configured },
        )),
    }
}

/// When a hedged route sends its second attempt.
fn hedge_delay(route: &Route) -> Option<Duration> {
    route.hedge.map(|h| match h.after {
        HedgeAfter::Fixed(d) => d,
        HedgeAfter::P95 { initial, min } => route.ttft.p95().map_or(initial, |p| p.max(min)),
    })
}

type Tried<'a> = Result<(&'a Deployment, Answer), (UpstreamError, &'a Deployment)>;

/// A running attempt and its hedge: the first to answer wins and the other is dropped
/// (cancelled) on return; if one fails, its error goes to `last` and the other is awaited.
async fn race<'a>(
    (first, d1): (
        impl Future<Output = Result<Answer, UpstreamError>>,
        &'a Deployment,
    ),
    (second, d2): (
        impl Future<Output = Result<Answer, UpstreamError>>,
        &'a Deployment,
    ),
    last: &mut Option<(UpstreamError, &'a Deployment)>,
    failed: &mut Vec<FailedAttempt<'a>>,
) -> (Tried<'a>, Hedged<'a>) {
    tokio::pin!(first, second);
    let hedged = |won_by_hedge, cancelled| Hedged {
        won_by_hedge,
        cancelled,
    };
    tokio::select! {
        r = &mut first => match r {
            Ok(a) => (Ok((d1, a)), hedged(false, Some(d2))),
            Err(e) => {
                failed.push(FailedAttempt::of(&e, d1));
                *last = Some((e, d1));
                let r = second.await.map(|a| (d2, a)).map_err(|e| (e, d2));
                (r, hedged(true, None))
            }
        },
        r = &mut second => match r {
            Ok(a) => (Ok((d2, a)), hedged(true, Some(d1))),
            Err(e) => {
                failed.push(FailedAttempt::of(&e, d2));
                *last = Some((e, d2));
                let r = first.await.map(|a| (d1, a)).map_err(|e| (e, d1));
                (r, hedged(false, None))
            }
        },
    }
}

/// Tries the plan's candidate sequence: its deployments in order (tiers, the route's
/// strategy, `fallbacks`), retrying within the route's attempts and deadline; when they all
/// failed with an error of a fallback class (rate limited, server error, context window,
/// content filter), the sequence's candidates for that class, one attempt each.
pub async fn dispatch<'a>(
    route: &Route,
    plan: &Plan<'a>,
    endpoint: Endpoint,
    request_id: &str,
    at: &Attempt,
    encode: impl Fn(&Deployment) -> Bytes,
) -> Result<Dispatched<'a>, DispatchFailure<'a>> {
    let n = u32::try_from(plan.candidates.len()).unwrap_or(u32::MAX);
    let max_attempts = route.retries.max_attempts.unwrap_or(n).max(1);
    let first = dispatch_group(
        route,
        &plan.candidates,
        max_attempts,
        endpoint,
        request_id,
        at,
        &encode,
    )
    .await;
    let Err(fail) = first else { return first };
    let Some(class) = fail.error.fallback_class() else {
        return Err(fail);
    };
    let group: Vec<&'a Deployment> = plan
        .conditional
        .iter()
        .filter(|(c, _)| *c == class)
        .map(|(_, d)| *d)
        .collect();
    if group.is_empty() {
        return Err(fail);
    }
    let tries = u32::try_from(group.len()).unwrap_or(u32::MAX);
    let mut earlier = fail.failed;
    match dispatch_group(route, &group, tries, endpoint, request_id, at, &encode).await {
        Ok(mut ok) => {
            ok.attempts += fail.attempts;
            ok.upstream_wait += fail.upstream_wait;
            ok.fallback_reason = Some(class.as_str());
            earlier.append(&mut ok.failed);
            ok.failed = earlier;
            Ok(ok)
        }
        Err(mut f) => {
            f.attempts += fail.attempts;
            f.upstream_wait += fail.upstream_wait;
            earlier.append(&mut f.failed);
            f.failed = earlier;
            Err(f)
        }
    }
}

/// One group of candidates: in order, then again with backoff, within `max_attempts` and
/// the route's deadline, moving on only after retryable errors.
async fn dispatch_group<'a>(
    route: &Route,
    candidates: &[&'a Deployment],
    max_attempts: u32,
    endpoint: Endpoint,
    request_id: &str,
    at: &Attempt,
    encode: &impl Fn(&Deployment) -> Bytes,
) -> Result<Dispatched<'a>, DispatchFailure<'a>> {
    let n = candidates.len();
    let deadline = at.start + route.retries.deadline;
    let mut upstream_wait = Duration::ZERO;
    let mut last: Option<(UpstreamError, &'a Deployment)> = None;
    let mut failed: Vec<FailedAttempt<'a>> = Vec::new();
    let mut attempts: u32 = 0;
    let mut pass: u32 = 0;
    'passes: loop {
        let attempts_before = attempts;
        let mut i = 0;
        while i < n {
            let d = candidates[i];
            i += 1;
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
            attempts += 1;
            let started = Instant::now();
            let first = try_one(route, d, endpoint, encode(d), request_id, at);
            // Hedging: only on the first pass, with an attempt to spare.
            let hedge_after = if pass == 0 && attempts < max_attempts {
                hedge_delay(route)
            } else {
                None
            };
            let mut hedge = None;
            let tried: Tried<'a> = match hedge_after {
                None => first.await.map(|a| (d, a)).map_err(|e| (e, d)),
                Some(after) => {
                    tokio::pin!(first);
                    if let Ok(r) = tokio::time::timeout(after, &mut first).await {
                        r.map(|a| (d, a)).map_err(|e| (e, d))
                    } else {
                        // No first token yet: the next candidate that can take a request now.
                        let mut second_d = None;
                        while i < n {
                            let c = candidates[i];
                            i += 1;
                            if c.available() && c.health.admit() {
                                second_d = Some(c);
                                break;
                            }
                        }
                        match second_d {
                            None => first.await.map(|a| (d, a)).map_err(|e| (e, d)),
                            Some(d2) => {
                                attempts += 1;
                                tracing::debug!(route = %route.name, "hedging to {}", d2.provider.name);
                                let second =
                                    try_one(route, d2, endpoint, encode(d2), request_id, at);
                                let (tried, h) =
                                    race((first, d), (second, d2), &mut last, &mut failed).await;
                                hedge = Some(h);
                                tried
                            }
                        }
                    }
                }
            };
            // The attempt that lost a hedge is dropped here, cancelling its request.
            match tried {
                Ok((won, answer)) => {
                    upstream_wait += started.elapsed();
                    if let Some(loser) = hedge.as_ref().and_then(|h| h.cancelled) {
                        failed.push(FailedAttempt {
                            deployment: loser,
                            status: 0,
                            outcome: "hedge_cancelled",
                            billed: true,
                        });
                    }
                    let fallback_reason = last.as_ref().map(|(e, _)| reason(e));
                    return Ok(Dispatched {
                        deployment: won,
                        response: answer.response,
                        first_chunk: answer.first_chunk,
                        limits: answer.limits,
                        sent: answer.sent,
                        attempts,
                        upstream_wait,
                        fallback_reason,
                        hedge,
                        in_flight: answer.in_flight,
                        failed,
                    });
                }
                Err((err, failed_on)) => {
                    upstream_wait += started.elapsed();
                    let retry = err.retryable();
                    failed.push(FailedAttempt::of(&err, failed_on));
                    last = Some((err, failed_on));
                    if !retry {
                        break 'passes;
                    }
                }
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
            failed,
            deployment: Some(d),
            attempts,
            upstream_wait,
        }),
        None => Err(DispatchFailure {
            error: unavailable(&route.name),
            failed,
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::Arc;

    #[test]
    fn hedge_delay_is_fixed_or_the_observed_p95_within_bounds() {
        let (t, _) = super::super::tests::table(concat!(
            "providers:\n  - {name: a, kind: mock}\n  - {name: b, kind: mock}\n",
            "models:\n  - {name: fixed, hedge: {after: 250ms}, deployments: [{provider: a, model: x}, {provider: b, model: y}]}\n",
            "  - {name: p95, hedge: {after: p95, initial: 2s, min: 30ms}, deployments: [{provider: a, model: x}, {provider: b, model: y}]}\n",
            "  - {name: none, deployments: [{provider: a, model: x}]}\n",
        ));
        assert_eq!(hedge_delay(t.get("none").unwrap()), None);
        assert_eq!(
            hedge_delay(t.get("fixed").unwrap()),
            Some(Duration::from_millis(250))
        );
        let r = t.get("p95").unwrap();
        assert_eq!(
            hedge_delay(r),
            Some(Duration::from_secs(2)),
            "no samples yet"
        );
        for _ in 0..100 {
            r.ttft.record(Duration::from_millis(1));
        }
        assert_eq!(
            hedge_delay(r),
            Some(Duration::from_millis(30)),
            "never below min"
        );
        for _ in 0..100 {
            r.ttft.record(Duration::from_millis(200));
        }
        let d = hedge_delay(r).unwrap();
        assert!(
            d >= Duration::from_millis(200) && d < Duration::from_millis(300),
            "{d:?}"
        );
    }

    #[test]
    fn client_overrides_only_shorten_the_configured_timeouts() {
        let (t, _) = super::super::tests::table(concat!(
            "providers:\n  - {name: a, kind: openai_compatible, base_url: \"http://127.0.0.1:9/v1\", timeout: 30s}\n",
            "models:\n  - {name: m, deployments: [{provider: a, model: x, timeouts: {connect: 1s, first_token: 2s, idle: 3s}}]}\n",
            "  - {name: n, deployments: [{provider: a, model: y}]}\n",
        ));
        let d = &t.get("m").unwrap().deployments[0];
        let ms = Duration::from_millis;
        let l = Limits::of(d, &Overrides::default());
        assert_eq!(
            (l.headers, l.first_token, l.idle, l.total),
            (ms(30_000), Some(ms(2000)), ms(3000), None)
        );
        let long = Overrides {
            headers: Some(ms(60_000)),
            first_token: Some(ms(9000)),
            idle: Some(ms(9000)),
            total: Some(ms(1500)),
        };
        let l = Limits::of(d, &long);
        assert_eq!(l.headers, ms(30_000), "cannot lengthen");
        assert_eq!(l.first_token, Some(ms(1500)), "bounded by the total");
        assert_eq!((l.idle, l.total), (ms(3000), Some(ms(1500))));
        // A first-token override where none is configured is bounded by `timeout`.
        let n = &t.get("n").unwrap().deployments[0];
        let l = Limits::of(
            n,
            &Overrides {
                first_token: Some(ms(90_000)),
                ..Overrides::default()
            },
        );
        assert_eq!(l.first_token, Some(ms(30_000)));
        // Its own connect timeout: its own provider instance (and connection pool).
        assert!(!Arc::ptr_eq(&d.provider, &n.provider));
        assert_eq!(d.provider.name, n.provider.name);
    }
}
