//! Retry timing: exponential backoff with full jitter, and the upstream's `Retry-After` /
//! `retry-after-ms`.

use crate::config::RetryConfig;
use crate::providers::UpstreamError;
use rand::Rng;
use std::time::Duration;

/// Full jitter: uniform in `[0, min(max_backoff, backoff * 2^retry)]`.
pub fn backoff(cfg: &RetryConfig, retry: u32) -> Duration {
    let cap = cfg
        .backoff
        .saturating_mul(1u32 << retry.min(20))
        .min(cfg.max_backoff);
    let cap_us = u64::try_from(cap.as_micros()).unwrap_or(u64::MAX);
    if cap_us == 0 {
        return Duration::ZERO;
    }
    Duration::from_micros(rand::thread_rng().gen_range(0..=cap_us))
}

/// What the upstream asked us to wait, from `Retry-After` in seconds (dispatch turns
/// `retry-after-ms` into it; an HTTP date is not honoured).
pub fn retry_after(err: &UpstreamError) -> Option<Duration> {
    let v = err.retry_after()?.to_str().ok()?.trim();
    v.parse::<f64>()
        .ok()
        .filter(|x| x.is_finite() && *x >= 0.0 && *x < 86_400.0)
        .map(Duration::from_secs_f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded_by_the_doubling_cap_and_max() {
        let cfg = RetryConfig {
            max_attempts: Some(5),
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(300),
            deadline: Duration::from_secs(1),
        };
        let mut saw_small = false;
        for _ in 0..200 {
            assert!(backoff(&cfg, 0) <= Duration::from_millis(100));
            assert!(backoff(&cfg, 1) <= Duration::from_millis(200));
            let b = backoff(&cfg, 10);
            assert!(b <= Duration::from_millis(300));
            saw_small |= b < Duration::from_millis(150);
        }
        assert!(saw_small, "full jitter reaches below half the cap");
    }
}
