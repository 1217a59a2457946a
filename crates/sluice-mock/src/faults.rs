//! Per-request plans: the settings with `x-mock-*` headers on top, fault kinds, and rate rolls.

use std::time::Duration;

use http::header::HeaderValue;
use http::HeaderMap;

use crate::body::Pacing;
use crate::MockSettings;

/// Upper bound on stream pieces, so a typo in a header cannot exhaust memory.
const MAX_CHUNKS: usize = 100_000;

/// A fault that changes how (or whether) a reply is delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    Reset,
    ResetAfterHeaders,
    Stall,
}

/// The effective behaviour for one request: settings, then `x-mock-*` headers on top.
pub(crate) struct Plan {
    pub(crate) latency: Duration,
    pub(crate) pacing: Pacing,
    pub(crate) chunks: usize,
    pub(crate) status: Option<u16>,
    pub(crate) retry_after: Option<HeaderValue>,
    /// `code` of an injected error body (`x-mock-error-code`), e.g. `context_length_exceeded`.
    pub(crate) error_code: Option<&'static str>,
    pub(crate) failure_rate: f64,
    pub(crate) reset_rate: f64,
    pub(crate) fault: Option<Fault>,
    pub(crate) stall_after: Option<usize>,
    pub(crate) request_id: Option<HeaderValue>,
    pub(crate) saw_authorization: bool,
    /// `x-mock-ratelimit-<rest>` headers, sent back as `x-ratelimit-<rest>` (e.g.
    /// `remaining-requests`, `limit-tokens`, `reset-requests`) on every answer.
    pub(crate) ratelimit: Vec<(http::HeaderName, HeaderValue)>,
}

impl Fault {
    /// `None` when the value is not understood; `Some(None)` for "none".
    fn parse(text: &str) -> Option<Option<Fault>> {
        match text {
            "reset" => Some(Some(Fault::Reset)),
            "reset-after-headers" => Some(Some(Fault::ResetAfterHeaders)),
            "stall" => Some(Some(Fault::Stall)),
            "none" => Some(None),
            _ => None,
        }
    }
}

impl Plan {
    /// One pass over the headers; unparsable override values are ignored (logged at debug).
    pub(crate) fn new(settings: &MockSettings, headers: &HeaderMap) -> Plan {
        let mut plan = Plan {
            latency: Duration::from_millis(settings.latency_ms),
            pacing: Pacing {
                ttft: Duration::from_millis(settings.ttft_ms),
                chunk_delay: Duration::from_millis(settings.chunk_delay_ms),
                first_pause: Duration::ZERO,
            },
            chunks: settings.chunks,
            status: settings.status,
            retry_after: None,
            error_code: None,
            failure_rate: settings.failure_rate,
            reset_rate: settings.reset_rate,
            fault: settings.stall_after.map(|_| Fault::Stall),
            stall_after: settings.stall_after,
            request_id: None,
            saw_authorization: false,
            ratelimit: Vec::new(),
        };
        for (name, value) in headers {
            let name = name.as_str();
            let Some(knob) = name.strip_prefix("x-mock-") else {
                if name == "x-request-id" {
                    plan.request_id = Some(value.clone());
                } else if name == "authorization" {
                    plan.saw_authorization = true;
                }
                continue;
            };
            let text = value.to_str().unwrap_or("").trim();
            let applied = match knob {
                "latency-ms" => text
                    .parse()
                    .map(|ms| plan.latency = Duration::from_millis(ms))
                    .is_ok(),
                "ttft-ms" => text
                    .parse()
                    .map(|ms| plan.pacing.ttft = Duration::from_millis(ms))
                    .is_ok(),
                "chunk-delay-ms" => text
                    .parse()
                    .map(|ms| plan.pacing.chunk_delay = Duration::from_millis(ms))
                    .is_ok(),
                "first-chunk-pause-ms" => text
                    .parse()
                    .map(|ms| plan.pacing.first_pause = Duration::from_millis(ms))
                    .is_ok(),
                "chunks" => text.parse().map(|n| plan.chunks = n).is_ok(),
                "status" => text.parse().map(|s| plan.status = Some(s)).is_ok(),
                "retry-after" => {
                    plan.retry_after = Some(value.clone());
                    true
                }
                "error-code" => {
                    plan.error_code = match text {
                        "context_length_exceeded" => Some("context_length_exceeded"),
                        "content_filter" => Some("content_filter"),
                        "rate_limit_exceeded" => Some("rate_limit_exceeded"),
                        _ => None,
                    };
                    plan.error_code.is_some()
                }
                "failure-rate" => text.parse().map(|r| plan.failure_rate = r).is_ok(),
                "reset-rate" => text.parse().map(|r| plan.reset_rate = r).is_ok(),
                "stall-after" => text.parse().map(|n| plan.stall_after = Some(n)).is_ok(),
                "fault" => Fault::parse(text).map(|fault| plan.fault = fault).is_some(),
                k if k.starts_with("ratelimit-") => {
                    match http::HeaderName::from_bytes(format!("x-{k}").as_bytes()) {
                        Ok(n) => {
                            plan.ratelimit.push((n, value.clone()));
                            true
                        }
                        Err(_) => false,
                    }
                }
                _ => false,
            };
            if !applied {
                tracing::debug!(
                    header = name,
                    value = text,
                    "ignoring unusable x-mock header"
                );
            }
        }
        plan.chunks = plan.chunks.clamp(1, MAX_CHUNKS);
        plan
    }

    /// Events sent before a stall or a reset-after-headers fault.
    pub(crate) fn events_before_fault(&self) -> usize {
        self.stall_after.unwrap_or(1)
    }
}

/// Rolls a die only when there is something to roll for; `rand::random` is thread-local.
pub(crate) fn roll(rate: f64) -> bool {
    rate > 0.0 && rand::random::<f64>() < rate
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn headers_override_settings() {
        let settings = MockSettings {
            latency_ms: 5,
            chunks: 3,
            stall_after: Some(4),
            ..MockSettings::default()
        };
        let mut headers = HeaderMap::new();
        headers.insert("x-mock-latency-ms", HeaderValue::from_static("70"));
        headers.insert("x-mock-chunks", HeaderValue::from_static("0"));
        headers.insert(
            "x-mock-fault",
            HeaderValue::from_static("reset-after-headers"),
        );
        headers.insert(
            "x-mock-first-chunk-pause-ms",
            HeaderValue::from_static("bogus"),
        );
        headers.insert("x-request-id", HeaderValue::from_static("abc"));
        let plan = Plan::new(&settings, &headers);
        assert_eq!(plan.latency, Duration::from_millis(70));
        assert_eq!(plan.chunks, 1, "chunk count is clamped to at least one");
        assert_eq!(plan.fault, Some(Fault::ResetAfterHeaders));
        assert_eq!(plan.events_before_fault(), 4);
        assert_eq!(plan.pacing.first_pause, Duration::ZERO);
        assert_eq!(plan.request_id, Some(HeaderValue::from_static("abc")));
        assert!(!plan.saw_authorization);

        let plan = Plan::new(&settings, &HeaderMap::new());
        assert_eq!(
            plan.fault,
            Some(Fault::Stall),
            "settings.stall_after stalls everything"
        );
        assert_eq!(plan.latency, Duration::from_millis(5));
    }
}
