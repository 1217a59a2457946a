//! Per-deployment live state: in-flight count, EWMA latency and the circuit breaker. All
//! atomics, so routing reads it without locks; shared by every route that uses the same
//! (provider, model) and carried across config reloads by that identity.

use crate::config::BreakerConfig;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
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
    /// Minute (since `epoch`) that `tpm_used` counts.
    tpm_minute: AtomicU64,
    tpm_used: AtomicU64,
    /// Learned from the upstream's `x-ratelimit-*` headers (`UNKNOWN` when not sent).
    rl_req_remaining: AtomicU64,
    rl_req_limit: AtomicU64,
    rl_tok_remaining: AtomicU64,
    rl_tok_limit: AtomicU64,
    /// Microseconds since `epoch` until which the learned values hold (their reset); 0 = none.
    rl_until_us: AtomicU64,
}

const UNKNOWN: u64 = u64::MAX;
/// How long learned rate-limit figures hold when the upstream sends no reset time.
const LEARNED_TTL_US: u64 = 60_000_000;

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
            tpm_minute: AtomicU64::new(0),
            tpm_used: AtomicU64::new(0),
            rl_req_remaining: AtomicU64::new(UNKNOWN),
            rl_req_limit: AtomicU64::new(UNKNOWN),
            rl_tok_remaining: AtomicU64::new(UNKNOWN),
            rl_tok_limit: AtomicU64::new(UNKNOWN),
            rl_until_us: AtomicU64::new(0),
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

    /// Tokens counted in the current minute.
    pub fn tpm_used(&self) -> u64 {
        if self.tpm_minute.load(Ordering::Relaxed) == self.minute() {
            self.tpm_used.load(Ordering::Relaxed)
        } else {
            0
        }
    }

    /// Counts an estimate of one request's tokens against the tpm capacity.
    pub fn count_tokens(&self, tokens: u64) {
        let m = self.minute();
        if self.tpm_minute.swap(m, Ordering::Relaxed) == m {
            self.tpm_used.fetch_add(tokens, Ordering::Relaxed);
        } else {
            self.tpm_used.store(tokens, Ordering::Relaxed);
        }
    }

    /// Takes the upstream's `x-ratelimit-{remaining,limit,reset}-{requests,tokens}` headers
    /// (OpenAI's names; resets like `1s`, `6m0s`, `20ms`). Absent headers change nothing.
    pub fn learn_rate_limits(&self, h: &http::HeaderMap) {
        let num = |name: &str| -> Option<u64> { h.get(name)?.to_str().ok()?.trim().parse().ok() };
        if h.get("x-ratelimit-remaining-requests").is_none()
            && h.get("x-ratelimit-remaining-tokens").is_none()
        {
            return;
        }
        let pairs = [
            ("x-ratelimit-remaining-requests", &self.rl_req_remaining),
            ("x-ratelimit-limit-requests", &self.rl_req_limit),
            ("x-ratelimit-remaining-tokens", &self.rl_tok_remaining),
            ("x-ratelimit-limit-tokens", &self.rl_tok_limit),
        ];
        for (name, slot) in pairs {
            slot.store(num(name).unwrap_or(UNKNOWN), Ordering::Relaxed);
        }
        let reset = ["x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"]
            .iter()
            .filter_map(|n| parse_reset(h.get(*n)?.to_str().ok()?))
            .max()
            .unwrap_or(LEARNED_TTL_US);
        self.rl_until_us.store(
            self.now_us().saturating_add(reset).max(1),
            Ordering::Relaxed,
        );
    }

    /// Learned (remaining, limit) for requests and tokens, while they hold.
    fn learned(&self) -> Option<[(u64, u64); 2]> {
        let until = self.rl_until_us.load(Ordering::Relaxed);
        if until == 0 || self.now_us() >= until {
            return None;
        }
        Some([
            (
                self.rl_req_remaining.load(Ordering::Relaxed),
                self.rl_req_limit.load(Ordering::Relaxed),
            ),
            (
                self.rl_tok_remaining.load(Ordering::Relaxed),
                self.rl_tok_limit.load(Ordering::Relaxed),
            ),
        ])
    }

    /// The upstream said it has no requests or tokens left until its reset.
    pub fn exhausted(&self) -> bool {
        self.learned()
            .is_some_and(|l| l.iter().any(|(rem, _)| *rem == 0))
    }

    /// Remaining capacity in permille (0..=1000): the smaller of requests and tokens, each
    /// from the learned headers while they hold, else from `rpm` / `tpm` and this minute's
    /// count; a dimension with nothing known counts as full.
    pub fn headroom_permille(&self, rpm: Option<u32>, tpm: Option<u32>) -> u64 {
        let learned = self.learned();
        let caps = [rpm.map(u64::from), tpm.map(u64::from)];
        let used = [u64::from(self.rpm_used()), self.tpm_used()];
        let mut worst = 1000;
        for i in 0..2 {
            let (rem, limit) = match learned.map(|l| l[i]) {
                Some((rem, lim)) if rem != UNKNOWN => (
                    rem,
                    if lim == UNKNOWN {
                        caps[i].unwrap_or(rem)
                    } else {
                        lim
                    },
                ),
                _ => match caps[i] {
                    Some(cap) => (cap.saturating_sub(used[i]), cap),
                    None => continue,
                },
            };
            let frac = (rem.min(limit) * 1000).checked_div(limit).unwrap_or(0);
            worst = worst.min(frac);
        }
        worst
    }

    fn minute(&self) -> u64 {
        self.epoch.elapsed().as_secs() / 60
    }

    pub fn ewma_us(&self) -> u64 {
        self.ewma_us.load(Ordering::Relaxed)
    }

    /// Counts a success; true when it closed an open (half-open) breaker.
    pub fn record_success(&self, latency_us: u64) -> bool {
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
            self.close();
            return true;
        }
        false
    }

    /// Closes the breaker (a success, or another replica's, with shared breakers).
    pub fn close(&self) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.open_until_us.store(0, Ordering::Release);
        self.probing.store(false, Ordering::Release);
        // A closed breaker starts a fresh error-rate window.
        self.window_start_us.store(0, Ordering::Relaxed);
        self.window_total.store(0, Ordering::Relaxed);
        self.window_failed.store(0, Ordering::Relaxed);
    }

    /// Opens the breaker for `for_us` from now unless it is open longer already (another
    /// replica's breaker opened, with shared breakers).
    pub fn open_for(&self, for_us: u64) {
        let until = self.now_us().saturating_add(for_us).max(1);
        self.open_until_us.fetch_max(until, Ordering::AcqRel);
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

    /// A failure the deployment is responsible for (not the client's); true when it opened
    /// the breaker (from closed or half-open).
    pub fn record_failure(&self, cfg: &BreakerConfig) -> bool {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let n = self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
        let probe_failed = self.probing.swap(false, Ordering::AcqRel);
        let rate_exceeded = cfg.error_rate.is_some_and(|rate| {
            let (total, failed) = self.count_in_window(cfg, true);
            total >= cfg.min_requests
                && u64::from(failed) * 100 >= u64::from(rate) * u64::from(total)
        });
        if rate_exceeded || (cfg.failures > 0 && (n >= cfg.failures || probe_failed)) {
            let was_open = self.state() == BreakerState::Open;
            let cooldown = u64::try_from(cfg.cooldown.as_micros()).unwrap_or(u64::MAX);
            let until = self.now_us().saturating_add(cooldown).max(1);
            self.open_until_us.store(until, Ordering::Release);
            return !was_open;
        }
        false
    }

    /// An active health check passed: once the cooldown is over it closes the breaker (it is
    /// the probe), without touching latency or the success count.
    pub fn probe_succeeded(&self) {
        if self.state() == BreakerState::HalfOpen {
            self.consecutive_failures.store(0, Ordering::Relaxed);
            self.open_until_us.store(0, Ordering::Release);
            self.probing.store(false, Ordering::Release);
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

/// A breaker that opened (`open_for_ms`) or closed (`None`) on this replica, for the others
/// (`redis.share_breakers`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerEvent {
    pub provider: Arc<str>,
    pub model: Arc<str>,
    pub open_for_ms: Option<u64>,
}

/// Where breaker transitions go when breakers are shared: set once, by the server, in fleet
/// mode with `redis.share_breakers: true`; nowhere otherwise.
static BREAKER_EVENTS: OnceLock<tokio::sync::mpsc::UnboundedSender<BreakerEvent>> = OnceLock::new();

/// Sends this replica's breaker transitions to `tx` from now on (once per process).
pub fn share_breakers(tx: tokio::sync::mpsc::UnboundedSender<BreakerEvent>) {
    let _ = BREAKER_EVENTS.set(tx);
}

/// Tells the other replicas (when breakers are shared) that a breaker opened or closed.
pub fn announce(provider: &Arc<str>, model: &Arc<str>, open_for: Option<std::time::Duration>) {
    if let Some(tx) = BREAKER_EVENTS.get() {
        let _ = tx.send(BreakerEvent {
            provider: provider.clone(),
            model: model.clone(),
            open_for_ms: open_for.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        });
    }
}

/// `1s`, `6m0s`, `20ms`, `1h2m3.5s`, or a bare number of seconds -> microseconds.
fn parse_reset(text: &str) -> Option<u64> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then_some((secs * 1e6) as u64);
    }
    let mut total = 0f64;
    let mut num = String::new();
    let mut chars = t.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let n: f64 = num.parse().ok()?;
        num.clear();
        let unit = match c {
            'h' => 3600.0,
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                0.001
            }
            'm' => 60.0,
            's' => 1.0,
            _ => return None,
        };
        total += n * unit;
    }
    if !num.is_empty() {
        return None;
    }
    Some((total * 1e6) as u64)
}

/// The observed time to first token of one route, in log-spaced buckets (lock-free), for
/// hedging at its p95. Halved when it holds many samples, so it follows recent traffic.
pub struct TtftStats {
    buckets: [AtomicU32; TTFT_BUCKETS],
    total: AtomicU32,
}

const TTFT_BUCKETS: usize = 48;
/// Samples before the p95 is trusted.
pub const TTFT_MIN_SAMPLES: u32 = 20;
const TTFT_HALVE_AT: u32 = 2000;

impl Default for TtftStats {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU32::new(0)),
            total: AtomicU32::new(0),
        }
    }
}

impl TtftStats {
    /// Bucket `i` holds samples up to `2^(i/2)` ms (about 41 % wider each).
    fn bucket(ms: f64) -> usize {
        if ms <= 1.0 {
            return 0;
        }
        ((ms.log2() * 2.0).ceil() as usize).min(TTFT_BUCKETS - 1)
    }

    fn upper_ms(i: usize) -> f64 {
        2f64.powf(i as f64 / 2.0)
    }

    pub fn record(&self, d: std::time::Duration) {
        let i = Self::bucket(d.as_secs_f64() * 1000.0);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        if self.total.fetch_add(1, Ordering::Relaxed) + 1 >= TTFT_HALVE_AT {
            // Racy halving is fine: a few samples more or less do not move a p95 much.
            self.total.store(TTFT_HALVE_AT / 2, Ordering::Relaxed);
            for b in &self.buckets {
                b.store(b.load(Ordering::Relaxed) / 2, Ordering::Relaxed);
            }
        }
    }

    /// The 95th percentile (a bucket's upper bound), once enough samples were seen.
    pub fn p95(&self) -> Option<std::time::Duration> {
        let counts: Vec<u32> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let n: u32 = counts.iter().sum();
        if n < TTFT_MIN_SAMPLES {
            return None;
        }
        let want = (u64::from(n) * 95).div_ceil(100);
        let mut seen = 0u64;
        for (i, c) in counts.iter().enumerate() {
            seen += u64::from(*c);
            if seen >= want {
                return Some(std::time::Duration::from_secs_f64(
                    Self::upper_ms(i) / 1000.0,
                ));
            }
        }
        None
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
    fn rate_limit_headers_are_learned_and_expire_at_their_reset() {
        let h = Health::default();
        assert_eq!(h.headroom_permille(None, None), 1000);
        assert_eq!(h.headroom_permille(Some(10), None), 1000);
        h.count_request();
        h.count_request();
        assert_eq!(h.headroom_permille(Some(10), None), 800);
        let mut m = http::HeaderMap::new();
        let v = http::HeaderValue::from_static;
        m.insert("x-ratelimit-remaining-requests", v("25"));
        m.insert("x-ratelimit-limit-requests", v("100"));
        h.learn_rate_limits(&m);
        assert_eq!(h.headroom_permille(Some(10), None), 250, "learned wins");
        assert!(!h.exhausted());
        m.insert("x-ratelimit-remaining-tokens", v("0"));
        m.insert("x-ratelimit-reset-tokens", v("40ms"));
        h.learn_rate_limits(&m);
        assert!(h.exhausted(), "no tokens left until the reset");
        assert_eq!(h.headroom_permille(Some(10), None), 0);
        std::thread::sleep(Duration::from_millis(50));
        assert!(!h.exhausted());
        assert_eq!(
            h.headroom_permille(Some(10), None),
            800,
            "configured rpm again"
        );
        assert_eq!(parse_reset("6m0s"), Some(360_000_000));
        assert_eq!(parse_reset("1h2m3.5s"), Some(3_723_500_000));
        assert_eq!(parse_reset("20ms"), Some(20_000));
        assert_eq!(parse_reset("2"), Some(2_000_000));
        assert_eq!(parse_reset("soon"), None);
    }

    #[test]
    fn ttft_p95_needs_samples_then_tracks_the_tail() {
        let s = TtftStats::default();
        for _ in 0..19 {
            s.record(Duration::from_millis(10));
        }
        assert_eq!(s.p95(), None);
        for _ in 0..81 {
            s.record(Duration::from_millis(10));
        }
        let p = s.p95().unwrap();
        assert!(
            p >= Duration::from_millis(10) && p < Duration::from_millis(15),
            "{p:?}"
        );
        for _ in 0..20 {
            s.record(Duration::from_millis(400));
        }
        let p = s.p95().unwrap();
        assert!(
            p >= Duration::from_millis(400) && p < Duration::from_millis(600),
            "{p:?}"
        );
    }

    #[test]
    fn a_passed_health_check_closes_the_breaker_only_after_its_cooldown() {
        let cfg = BreakerConfig {
            failures: 1,
            cooldown: Duration::from_millis(30),
            ..BreakerConfig::default()
        };
        let h = Health::default();
        h.record_failure(&cfg);
        h.probe_succeeded();
        assert_eq!(h.state(), BreakerState::Open, "still cooling down");
        std::thread::sleep(Duration::from_millis(40));
        h.probe_succeeded();
        assert_eq!(h.state(), BreakerState::Closed);
        assert_eq!(h.ewma_us(), 0, "a check is not a latency sample");
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
