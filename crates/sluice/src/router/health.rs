//! Per-deployment live state: in-flight count, EWMA latency and the circuit breaker. All
//! atomics, so routing reads it without locks; shared by every route that uses the same
//! (provider, model) and carried across config reloads by that identity.

use crate::config::BreakerConfig;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

/// A new latency sample weighs 1/2^EWMA_SHIFT = 1/4 in the EWMA (older ones decay by 3/4 each).
const EWMA_SHIFT: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    /// Cooldown over: one probe may go through.
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

pub struct Health {
    epoch: Instant,
    pub in_flight: AtomicU32,
    /// EWMA of time to response headers (first byte), microseconds; 0 = no sample yet.
    ewma_us: AtomicU64,
    consecutive_failures: AtomicU32,
    /// Microseconds since `epoch` until which the breaker is open; 0 = closed.
    open_until_us: AtomicU64,
    /// A half-open probe is in flight.
    probing: AtomicBool,
    pub successes: AtomicU64,
    pub failures: AtomicU64,
    /// Minute (since `epoch`) that `rpm_used` counts.
    rpm_minute: AtomicU64,
    rpm_used: AtomicU32,
    /// Error-rate window (only with `breaker.error_rate`): start, requests, failures.
    window_start_us: AtomicU64,
    window_total: AtomicU32,
    window_failed: AtomicU32,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            in_flight: AtomicU32::new(0),
            ewma_us: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            open_until_us: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            successes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            rpm_minute: AtomicU64::new(0),
            rpm_used: AtomicU32::new(0),
            window_start_us: AtomicU64::new(0),
            window_total: AtomicU32::new(0),
            window_failed: AtomicU32::new(0),
        }
    }
}

impl Health {
    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    pub fn state(&self) -> BreakerState {
        let until = self.open_until_us.load(Ordering::Acquire);
        if until == 0 {
            BreakerState::Closed
        } else if self.now_us() < until {
            BreakerState::Open
        } else {
            BreakerState::HalfOpen
        }
    }

    /// May a request be sent now? Closed: yes. Open: no. Half-open: only the one caller that
    /// wins the probe slot.
    pub fn admit(&self) -> bool {
        match self.state() {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen => self
                .probing
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok(),
        }
    }

    /// Whether routing should consider this deployment at all (without claiming a probe).
    pub fn available(&self) -> bool {
        match self.state() {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen => !self.probing.load(Ordering::Acquire),
        }
    }

    /// Requests counted in the current minute (a fixed window, so a burst can straddle two).
    pub fn rpm_used(&self) -> u32 {
        if self.rpm_minute.load(Ordering::Relaxed) == self.minute() {
            self.rpm_used.load(Ordering::Relaxed)
        } else {
            0
        }
    }

    /// Counts one request against the rpm capacity. Racy at a minute boundary by a request
    /// or two, which a soft capacity tolerates.
    pub fn count_request(&self) {
        let m = self.minute();
        if self.rpm_minute.swap(m, Ordering::Relaxed) == m {
            self.rpm_used.fetch_add(1, Ordering::Relaxed);
        } else {
            self.rpm_used.store(1, Ordering::Relaxed);
        }
    }

    fn minute(&self) -> u64 {
        self.epoch.elapsed().as_secs() / 60
    }

    pub fn ewma_us(&self) -> u64 {
        self.ewma_us.load(Ordering::Relaxed)
    }

    pub fn record_success(&self, latency_us: u64) {
        self.successes.fetch_add(1, Ordering::Relaxed);
        let sample = latency_us.max(1);
        let old = self.ewma_us.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample
        } else {
            // Racy read-modify-write is fine: a lost sample only slows the average a little.
            old - (old >> EWMA_SHIFT) + (sample >> EWMA_SHIFT)
        };
        self.ewma_us.store(new.max(1), Ordering::Relaxed);
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
        if self.open_until_us.load(Ordering::Relaxed) != 0 {
            self.open_until_us.store(0, Ordering::Release);
            self.probing.store(false, Ordering::Release);
            // A closed breaker starts a fresh error-rate window.
            self.window_start_us.store(0, Ordering::Relaxed);
            self.window_total.store(0, Ordering::Relaxed);
            self.window_failed.store(0, Ordering::Relaxed);
        }
    }

    /// Counts one outcome in the error-rate window (a fixed window, restarted when it has
    /// passed); returns (requests, failures) in it.
    pub fn count_in_window(&self, cfg: &BreakerConfig, failed: bool) -> (u32, u32) {
        let now = self.now_us();
        let window = u64::try_from(cfg.window.as_micros()).unwrap_or(u64::MAX);
        if now.saturating_sub(self.window_start_us.load(Ordering::Relaxed)) > window {
            // Racy restart: concurrent outcomes may land in either window, which is harmless.
            self.window_start_us.store(now, Ordering::Relaxed);
            self.window_total.store(0, Ordering::Relaxed);
            self.window_failed.store(0, Ordering::Relaxed);
        }
        let total = self.window_total.fetch_add(1, Ordering::Relaxed) + 1;
        let failed = if failed {
            self.window_failed.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            self.window_failed.load(Ordering::Relaxed)
        };
        (total, failed)
    }

    /// A failure the deployment is responsible for (not the client's).
    pub fn record_failure(&self, cfg: &BreakerConfig) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let n = self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
        let probe_failed = self.probing.swap(false, Ordering::AcqRel);
        let rate_exceeded = cfg.error_rate.is_some_and(|rate| {
            let (total, failed) = self.count_in_window(cfg, true);
            total >= cfg.min_requests
                && u64::from(failed) * 100 >= u64::from(rate) * u64::from(total)
        });
        if rate_exceeded || (cfg.failures > 0 && (n >= cfg.failures || probe_failed)) {
            let cooldown = u64::try_from(cfg.cooldown.as_micros()).unwrap_or(u64::MAX);
            let until = self.now_us().saturating_add(cooldown).max(1);
            self.open_until_us.store(until, Ordering::Release);
        }
    }

    /// A half-open probe ended without telling us anything about the deployment (e.g. the
    /// client's own error): let the next request probe.
    pub fn release_probe(&self) {
        self.probing.store(false, Ordering::Release);
    }

    /// Milliseconds until an open breaker lets a probe through (0 when not open).
    pub fn open_for_ms(&self) -> u64 {
        let until = self.open_until_us.load(Ordering::Acquire);
        until.saturating_sub(self.now_us()) / 1000
    }
}

/// Decrements the in-flight count when dropped (the response body finished or was dropped).
pub struct InFlight(std::sync::Arc<Health>);

impl InFlight {
    pub fn new(h: &std::sync::Arc<Health>) -> Self {
        h.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(h.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn breaker_opens_after_consecutive_failures_probes_once_and_closes_on_success() {
        let cfg = BreakerConfig {
            failures: 3,
            cooldown: Duration::from_millis(30),
            ..BreakerConfig::default()
        };
        let h = Health::default();
        h.record_failure(&cfg);
        h.record_failure(&cfg);
        assert_eq!(h.state(), BreakerState::Closed);
        h.record_success(10);
        h.record_failure(&cfg);
        h.record_failure(&cfg);
        assert_eq!(
            h.state(),
            BreakerState::Closed,
            "a success resets the count"
        );
        h.record_failure(&cfg);
        assert_eq!(h.state(), BreakerState::Open);
        assert!(!h.admit() && !h.available());
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(h.state(), BreakerState::HalfOpen);
        assert!(h.admit(), "one probe");
        assert!(!h.admit(), "only one probe");
        h.record_failure(&cfg);
        assert_eq!(h.state(), BreakerState::Open, "a failed probe reopens");
        std::thread::sleep(Duration::from_millis(40));
        assert!(h.admit());
        h.record_success(10);
        assert_eq!(h.state(), BreakerState::Closed);
        assert!(h.admit() && h.admit());
    }

    #[test]
    fn error_rate_over_the_window_opens_without_consecutive_failures() {
        let cfg = BreakerConfig {
            failures: 0,
            cooldown: Duration::from_secs(60),
            error_rate: Some(50),
            window: Duration::from_secs(60),
            min_requests: 10,
        };
        let h = Health::default();
        // Alternate: never two failures in a row, but half of all requests fail.
        for i in 0..9 {
            if i % 2 == 0 {
                h.count_in_window(&cfg, false);
                h.record_success(10);
            } else {
                h.record_failure(&cfg);
            }
        }
        assert_eq!(h.state(), BreakerState::Closed, "below min_requests");
        h.record_failure(&cfg);
        assert_eq!(h.state(), BreakerState::Open, "5 of 10 failed");
    }

    #[test]
    fn ewma_moves_toward_new_samples() {
        let h = Health::default();
        h.record_success(1000);
        assert_eq!(h.ewma_us(), 1000);
        for _ in 0..30 {
            h.record_success(100);
        }
        assert!(h.ewma_us() < 200, "{}", h.ewma_us());
    }
}
