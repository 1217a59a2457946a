//! Rate limits and budgets, in memory: requests and tokens per minute over a sliding
//! window, concurrent requests, and spend per budget period — each reserved at admission and
//! settled after. One lock covers every scope a request touches, so a request is admitted
//! against its key, its team and the team's parents atomically or not at all.
//!
//! The Redis implementation for a fleet ([`super::limits_redis`]) does the same arithmetic in
//! one Lua script per admit / settle.

use super::clock::{civil_from_days, days_from_civil};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

const WINDOW_MS: i64 = 60_000;
const DAY_MS: i64 = 86_400_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Daily,
    Weekly,
    Monthly,
    Total,
    /// The last 24 hours, sliding (spend leaves the window hour by hour).
    RollingDaily,
    /// The last 7 days, sliding.
    RollingWeekly,
    /// The last 30 days, sliding.
    RollingMonthly,
}

impl Period {
    pub fn parse(s: &str) -> Option<Period> {
        Some(match s {
            "daily" | "day" => Period::Daily,
            "weekly" | "week" => Period::Weekly,
            "monthly" | "month" => Period::Monthly,
            "total" | "lifetime" => Period::Total,
            "rolling_daily" | "rolling_day" | "24h" => Period::RollingDaily,
            "rolling_weekly" | "rolling_week" | "7d" => Period::RollingWeekly,
            "rolling_monthly" | "rolling_month" | "30d" => Period::RollingMonthly,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
            Period::Total => "total",
            Period::RollingDaily => "rolling_daily",
            Period::RollingWeekly => "rolling_weekly",
            Period::RollingMonthly => "rolling_monthly",
        }
    }

    /// Every accepted spelling, for error messages.
    pub const NAMES: &'static str =
        "daily, weekly, monthly, total, rolling_daily, rolling_weekly, rolling_monthly";

    /// Length of a rolling window; `None` for calendar periods.
    pub fn rolling_len(self) -> Option<i64> {
        match self {
            Period::RollingDaily => Some(DAY_MS),
            Period::RollingWeekly => Some(7 * DAY_MS),
            Period::RollingMonthly => Some(30 * DAY_MS),
            _ => None,
        }
    }

    /// Start of the calendar period (UTC) containing `now_ms`.
    pub fn start(self, now_ms: i64) -> i64 {
        if let Some(len) = self.rolling_len() {
            return now_ms - len;
        }
        let day = now_ms.div_euclid(DAY_MS);
        match self {
            Period::Daily => day * DAY_MS,
            // 1970-01-01 was a Thursday; weeks start on Monday.
            Period::Weekly => (day - (day + 3).rem_euclid(7)) * DAY_MS,
            Period::Monthly => {
                let (y, m, _) = civil_from_days(day);
                days_from_civil(y, m, 1) * DAY_MS
            }
            _ => 0,
        }
    }

    /// Start of the calendar period containing `now_ms` in a time zone `offset_ms` east of UTC.
    pub fn start_in(self, now_ms: i64, offset_ms: i64) -> i64 {
        match self {
            Period::Total => 0,
            _ if self.rolling_len().is_some() => self.start(now_ms),
            _ => self.start(now_ms + offset_ms) - offset_ms,
        }
    }

    /// End of the period starting at `start` in a time zone `offset_ms` east of UTC.
    pub fn end_in(self, start: i64, offset_ms: i64) -> Option<i64> {
        self.end(start + offset_ms).map(|e| e - offset_ms)
    }

    /// When the period starting at `start` ends (`None` for `total`).
    pub fn end(self, start: i64) -> Option<i64> {
        match self {
            Period::Daily => Some(start + DAY_MS),
            Period::Weekly => Some(start + 7 * DAY_MS),
            Period::Monthly => {
                let (y, m, _) = civil_from_days(start.div_euclid(DAY_MS));
                let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                Some(days_from_civil(y, m, 1) * DAY_MS)
            }
            // Rolling windows never reset; see `Budget::frees_at`.
            _ => None,
        }
    }
}

const HOUR_MS: i64 = 3_600_000;

/// The limits of one scope (a key, a team), built when the principal cache is.
#[derive(Debug, Clone)]
pub struct ScopeLimits {
    /// State key, e.g. `key:key_12ab` or `team:eng`.
    pub id: Arc<str>,
    /// For messages, e.g. `key "ci" (key_12ab)`.
    pub label: Arc<str>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub max_concurrency: Option<u64>,
    pub budget: Option<(i64, Period)>,
}

/// `limit`, `remaining` and milliseconds until the window frees capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    pub limit: u64,
    pub remaining: u64,
    pub reset_ms: i64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateHeaders {
    pub requests: Option<Counter>,
    pub tokens: Option<Counter>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeniedKind {
    Requests,
    Tokens,
    Concurrency,
    /// The shared limits are unreachable and `redis.on_failure: closed` refuses limited keys.
    Unavailable,
    Budget {
        limit: i64,
        spent: i64,
        /// Held by requests in flight.
        reserved: i64,
        /// This request's worst case.
        needed: i64,
        period: Period,
        resets_at_ms: Option<i64>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub kind: DeniedKind,
    pub label: Arc<str>,
    pub limit: u64,
    pub retry_after_ms: Option<i64>,
    pub headers: RateHeaders,
}

/// A budget's spend before and after settling one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpendMove {
    pub label: Arc<str>,
    pub before: i64,
    pub after: i64,
    pub limit: i64,
    pub period: Period,
}

/// What one admitted request holds until it settles.
#[derive(Debug)]
pub struct Grant {
    /// When it was admitted (its tokens sit in that second's bucket).
    pub(super) at: i64,
    pub(super) scopes: Vec<Arc<str>>,
    /// Redis: the lease's id; 0 in memory.
    pub(super) ticket: u64,
    /// Redis: admitted by the per-replica fallback while Redis was unreachable.
    pub(super) local: bool,
    pub tokens: u64,
    pub worst_cost: i64,
    pub headers: RateHeaders,
}

/// Shared limit state: in memory for one process, Redis for a fleet. Admission is async (one
/// Redis round trip); settling and seeding only queue work, so a `Drop` can settle.
#[async_trait::async_trait]
pub trait LimitStore: Send + Sync + 'static {
    async fn admit(
        &self,
        scopes: &[ScopeLimits],
        tokens: u64,
        worst_cost: i64,
        now_ms: i64,
    ) -> Result<Grant, Box<Denied>>;
    /// Trues up a grant with the actual tokens and cost; call exactly once per grant.
    /// Returns how each budget's spend moved (for threshold alerts).
    fn settle(
        &self,
        grant: &Grant,
        scopes: &[ScopeLimits],
        tokens: u64,
        cost: i64,
        now_ms: i64,
    ) -> Vec<SpendMove>;
    /// Sets a scope's spend in its current period from the usage records (at start-up, and
    /// again when the store caught up): never lower than what this process already counts.
    fn seed_spend(&self, scope: &ScopeLimits, spent: i64, now_ms: i64);
    /// Spent and reserved micro-USD of a budget scope in its current period.
    /// (Admin views only, never the request path: the Redis store waits for Redis here.)
    fn spend(&self, scope: &ScopeLimits, now_ms: i64) -> (i64, i64);
    /// The budget calendar's time zone, milliseconds east of UTC.
    fn calendar_offset_ms(&self) -> i64;
    /// True once after the shared state was found lost (Redis restarted empty, or came back
    /// after an outage): every budget's spend must be seeded again from the store.
    fn take_reseed(&self) -> bool {
        false
    }
    /// Why limits are not shared right now (`None`: healthy), for `/health/ready`.
    fn degraded(&self) -> Option<String> {
        None
    }
    /// Waits until every settle queued so far has reached the shared state (at shutdown,
    /// so a stopping replica's last requests free their leases and count their spend).
    async fn flush(&self) {}
}

const BUCKET_MS: i64 = 1_000;
const BUCKETS: usize = 60;

/// A count over the last minute kept in sixty one-second buckets: constant memory whatever
/// the rate (a log of every request would hold a million entries at 20k requests/s). A
/// request leaves the window when its second does, between 59 and 60 s after it was admitted.
struct Ring {
    /// (second since the epoch, amount) per slot.
    slots: [(i64, u64); BUCKETS],
    sum: u64,
}

impl Default for Ring {
    fn default() -> Self {
        Self {
            slots: [(i64::MIN, 0); BUCKETS],
            sum: 0,
        }
    }
}

impl Ring {
    fn slot(at: i64) -> (i64, usize) {
        let second = at.div_euclid(BUCKET_MS);
        (
            second,
            usize::try_from(second.rem_euclid(BUCKETS as i64)).unwrap_or(0),
        )
    }

    fn prune(&mut self, now: i64) {
        let oldest_kept = now.div_euclid(BUCKET_MS) - BUCKETS as i64 + 1;
        for s in &mut self.slots {
            if s.1 > 0 && s.0 < oldest_kept {
                self.sum = self.sum.saturating_sub(s.1);
                *s = (i64::MIN, 0);
            }
        }
    }

    fn add(&mut self, at: i64, n: u64) {
        let (second, i) = Self::slot(at);
        let s = &mut self.slots[i];
        if s.0 != second {
            self.sum = self.sum.saturating_sub(s.1);
            *s = (second, 0);
        }
        s.1 = s.1.saturating_add(n);
        self.sum = self.sum.saturating_add(n);
    }

    /// Replaces an amount added at `at`, if it is still inside the window.
    fn adjust(&mut self, at: i64, old: u64, new: u64) {
        let (second, i) = Self::slot(at);
        let s = &mut self.slots[i];
        if s.0 == second {
            let old = old.min(s.1);
            s.1 = (s.1 - old).saturating_add(new);
            self.sum = self.sum.saturating_sub(old).saturating_add(new);
        }
    }

    /// Non-empty buckets, oldest first: (ms until it leaves the window, amount).
    fn by_age(&self, now: i64) -> Vec<(i64, u64)> {
        let mut v: Vec<(i64, u64)> = self
            .slots
            .iter()
            .filter(|s| s.1 > 0)
            .map(|s| ((s.0 + BUCKETS as i64) * BUCKET_MS - now, s.1))
            .collect();
        v.sort_unstable_by_key(|e| e.0);
        v
    }

    fn reset_ms(&self, now: i64) -> i64 {
        self.slots
            .iter()
            .filter(|s| s.1 > 0)
            .map(|s| (s.0 + BUCKETS as i64) * BUCKET_MS - now)
            .min()
            .unwrap_or(0)
    }
}

#[derive(Default)]
struct Window {
    requests: Ring,
    tokens: Ring,
    inflight: u64,
}

impl Window {
    fn prune(&mut self, now: i64) {
        self.requests.prune(now);
        self.tokens.prune(now);
    }

    fn requests_counter(&self, limit: u64, now: i64) -> Counter {
        Counter {
            limit,
            remaining: limit.saturating_sub(self.requests.sum),
            reset_ms: self.requests.reset_ms(now),
        }
    }

    fn tokens_counter(&self, limit: u64, now: i64) -> Counter {
        Counter {
            limit,
            remaining: limit.saturating_sub(self.tokens.sum),
            reset_ms: self.tokens.reset_ms(now),
        }
    }

    /// Milliseconds until `need` more tokens fit under `limit`.
    fn tokens_free_in(&self, need: u64, limit: u64, now: i64) -> i64 {
        let mut sum = self.tokens.sum;
        for (expires_in, n) in self.tokens.by_age(now) {
            sum = sum.saturating_sub(n);
            if sum.saturating_add(need) <= limit {
                return expires_in;
            }
        }
        WINDOW_MS
    }
}

#[derive(Default)]
struct Budget {
    period_start: i64,
    spent: i64,
    reserved: i64,
    /// Rolling periods: spend per hour, oldest first (a charge counts until its hour has
    /// been in the window for the whole period: between `len` and `len` + 1 h).
    hours: std::collections::VecDeque<(i64, i64)>,
}

impl Budget {
    fn roll(&mut self, period: Period, now: i64, offset: i64) {
        if let Some(len) = period.rolling_len() {
            let expired = (now - len).div_euclid(HOUR_MS);
            while let Some(&(h, c)) = self.hours.front() {
                if h >= expired {
                    break;
                }
                self.spent = self.spent.saturating_sub(c);
                self.hours.pop_front();
            }
            return;
        }
        let start = period.start_in(now, offset);
        if self.period_start != start {
            self.period_start = start;
            self.spent = 0;
        }
    }

    fn charge(&mut self, period: Period, now: i64, cost: i64) {
        self.spent = self.spent.saturating_add(cost);
        if period.rolling_len().is_some() {
            let h = now.div_euclid(HOUR_MS);
            match self.hours.back_mut() {
                Some((bh, c)) if *bh == h => *c = c.saturating_add(cost),
                _ => self.hours.push_back((h, cost)),
            }
        }
    }

    /// When spend next frees up: the calendar period's end, or for a rolling window the
    /// moment its oldest hour leaves.
    fn frees_at(&self, period: Period, offset: i64) -> Option<i64> {
        match period.rolling_len() {
            Some(len) => self.hours.front().map(|(h, _)| (h + 1) * HOUR_MS + len),
            None => period.end_in(self.period_start, offset),
        }
    }
}

#[derive(Default)]
struct State {
    windows: HashMap<Arc<str>, Window>,
    budgets: HashMap<Arc<str>, Budget>,
}

/// The in-memory [`LimitStore`].
#[derive(Default)]
pub struct MemoryLimits {
    state: Mutex<State>,
    /// Budget calendars are in this time zone (milliseconds east of UTC).
    offset_ms: i64,
}

impl MemoryLimits {
    pub fn new(calendar_offset_ms: i64) -> Self {
        Self {
            state: Mutex::default(),
            offset_ms: calendar_offset_ms,
        }
    }
}

fn tighter(a: Option<Counter>, b: Counter) -> Option<Counter> {
    match a {
        Some(a) if a.remaining <= b.remaining => Some(a),
        _ => Some(b),
    }
}

#[async_trait::async_trait]
impl LimitStore for MemoryLimits {
    async fn admit(
        &self,
        scopes: &[ScopeLimits],
        tokens: u64,
        worst_cost: i64,
        now: i64,
    ) -> Result<Grant, Box<Denied>> {
        MemoryLimits::admit(self, scopes, tokens, worst_cost, now)
    }

    fn settle(
        &self,
        grant: &Grant,
        scopes: &[ScopeLimits],
        tokens: u64,
        cost: i64,
        now: i64,
    ) -> Vec<SpendMove> {
        MemoryLimits::settle(self, grant, scopes, tokens, cost, now)
    }

    fn seed_spend(&self, scope: &ScopeLimits, spent: i64, now: i64) {
        MemoryLimits::seed_spend(self, scope, spent, now);
    }

    fn spend(&self, scope: &ScopeLimits, now: i64) -> (i64, i64) {
        MemoryLimits::spend(self, scope, now)
    }

    fn calendar_offset_ms(&self) -> i64 {
        self.offset_ms
    }
}

/// The arithmetic, synchronous: one lock per call.
impl MemoryLimits {
    pub fn admit(
        &self,
        scopes: &[ScopeLimits],
        tokens: u64,
        worst_cost: i64,
        now: i64,
    ) -> Result<Grant, Box<Denied>> {
        let Ok(mut st) = self.state.lock() else {
            return Err(Box::new(Denied {
                kind: DeniedKind::Concurrency,
                label: Arc::from("gateway"),
                limit: 0,
                retry_after_ms: Some(1000),
                headers: RateHeaders::default(),
            }));
        };
        let st = &mut *st;
        // Check every scope first; commit only if all pass.
        let mut headers = RateHeaders::default();
        for s in scopes {
            let w = st.windows.entry(s.id.clone()).or_default();
            w.prune(now);
            if let Some(rpm) = s.rpm {
                let c = w.requests_counter(rpm, now);
                if c.remaining == 0 {
                    headers.requests = Some(c);
                    return Err(Box::new(Denied {
                        kind: DeniedKind::Requests,
                        label: s.label.clone(),
                        limit: rpm,
                        retry_after_ms: Some(c.reset_ms.max(1)),
                        headers,
                    }));
                }
                headers.requests = tighter(headers.requests, c);
            }
            if let Some(tpm) = s.tpm {
                let c = w.tokens_counter(tpm, now);
                if w.tokens.sum.saturating_add(tokens) > tpm {
                    headers.tokens = Some(c);
                    let retry = if tokens > tpm {
                        None
                    } else {
                        Some(w.tokens_free_in(tokens, tpm, now).max(1))
                    };
                    return Err(Box::new(Denied {
                        kind: DeniedKind::Tokens,
                        label: s.label.clone(),
                        limit: tpm,
                        retry_after_ms: retry,
                        headers,
                    }));
                }
                headers.tokens = tighter(headers.tokens, c);
            }
            if let Some(max) = s.max_concurrency {
                if w.inflight >= max {
                    return Err(Box::new(Denied {
                        kind: DeniedKind::Concurrency,
                        label: s.label.clone(),
                        limit: max,
                        retry_after_ms: Some(1000),
                        headers,
                    }));
                }
            }
            if let Some((limit, period)) = s.budget {
                let b = st.budgets.entry(s.id.clone()).or_default();
                b.roll(period, now, self.offset_ms);
                // The request's worst case must fit beside what is spent and held: the
                // budget can never be overrun by more than rounding.
                let committed = b.spent.saturating_add(b.reserved);
                if committed >= limit || committed.saturating_add(worst_cost) > limit {
                    let resets_at_ms = b.frees_at(period, self.offset_ms);
                    return Err(Box::new(Denied {
                        kind: DeniedKind::Budget {
                            limit,
                            spent: b.spent,
                            reserved: b.reserved,
                            needed: worst_cost,
                            period,
                            resets_at_ms,
                        },
                        label: s.label.clone(),
                        limit: u64::try_from(limit).unwrap_or(0),
                        retry_after_ms: resets_at_ms.map(|r| r - now),
                        headers,
                    }));
                }
            }
        }
        for s in scopes {
            let w = st.windows.entry(s.id.clone()).or_default();
            // Only limited dimensions keep a log, so unlimited scopes cost no memory.
            if s.rpm.is_some() {
                w.requests.add(now, 1);
            }
            if s.tpm.is_some() {
                w.tokens.add(now, tokens);
            }
            w.inflight += 1;
            if s.budget.is_some() {
                let b = st.budgets.entry(s.id.clone()).or_default();
                b.reserved = b.reserved.saturating_add(worst_cost);
            }
        }
        // Remaining counts after this request.
        if let Some(c) = headers.requests.as_mut() {
            c.remaining = c.remaining.saturating_sub(1);
        }
        if let Some(c) = headers.tokens.as_mut() {
            c.remaining = c.remaining.saturating_sub(tokens);
        }
        Ok(Grant {
            at: now,
            scopes: scopes.iter().map(|s| s.id.clone()).collect(),
            ticket: 0,
            local: false,
            tokens,
            worst_cost,
            headers,
        })
    }

    pub fn settle(
        &self,
        grant: &Grant,
        scopes: &[ScopeLimits],
        tokens: u64,
        cost: i64,
        now: i64,
    ) -> Vec<SpendMove> {
        let mut moves = Vec::new();
        let Ok(mut st) = self.state.lock() else {
            return moves;
        };
        let st = &mut *st;
        for id in &grant.scopes {
            if let Some(w) = st.windows.get_mut(id) {
                w.inflight = w.inflight.saturating_sub(1);
                if scopes.iter().any(|s| &s.id == id && s.tpm.is_some()) {
                    w.tokens.adjust(grant.at, grant.tokens, tokens);
                }
            }
            let scope = scopes.iter().find(|s| &s.id == id);
            if let Some(b) = st.budgets.get_mut(id) {
                b.reserved = b.reserved.saturating_sub(grant.worst_cost).max(0);
                if let Some((limit, period)) = scope.and_then(|s| s.budget) {
                    b.roll(period, now, self.offset_ms);
                    let before = b.spent;
                    b.charge(period, now, cost);
                    if let Some(s) = scope {
                        moves.push(SpendMove {
                            label: s.label.clone(),
                            before,
                            after: b.spent,
                            limit,
                            period,
                        });
                    }
                }
            }
        }
        moves
    }

    pub fn seed_spend(&self, scope: &ScopeLimits, spent: i64, now: i64) {
        let Some((_, period)) = scope.budget else {
            return;
        };
        if let Ok(mut st) = self.state.lock() {
            let b = st.budgets.entry(scope.id.clone()).or_default();
            let start = period.start_in(now, self.offset_ms);
            if b.period_start == start && (b.spent > 0 || !b.hours.is_empty()) {
                // Already counting this period: the store may lag (or lead, after a spill
                // replay); keep the larger, never double-count.
                b.roll(period, now, self.offset_ms);
                let more = spent.saturating_sub(b.spent);
                if more > 0 {
                    b.charge(period, now, more);
                }
                return;
            }
            b.period_start = start;
            b.spent = 0;
            b.hours.clear();
            // Rolling: the recorded spend is charged now, so it leaves the window last
            // (conservative: it may count up to one period longer than it would).
            b.charge(period, now, spent);
        }
    }

    pub fn spend(&self, scope: &ScopeLimits, now: i64) -> (i64, i64) {
        let Ok(mut st) = self.state.lock() else {
            return (0, 0);
        };
        match (st.budgets.get_mut(&scope.id), scope.budget) {
            (Some(b), Some((_, p))) => {
                b.roll(p, now, self.offset_ms);
                (b.spent, b.reserved)
            }
            _ => (0, 0),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn scope(rpm: Option<u64>, tpm: Option<u64>, conc: Option<u64>) -> ScopeLimits {
        ScopeLimits {
            id: Arc::from("key:k"),
            label: Arc::from("key k"),
            rpm,
            tpm,
            max_concurrency: conc,
            budget: None,
        }
    }

    /// Random sizes up to the extremes: `max_tokens` up to u64::MAX, prices up to $1e6 per
    /// million tokens. Nothing wraps, nothing panics, and no admission ever lets a budget's
    /// spent + held exceed its limit.
    #[test]
    fn money_and_token_arithmetic_never_wraps_and_budgets_never_overrun() {
        use crate::canonical::Usage;
        use crate::policy::prices::Price;
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(13);
        let big = |rng: &mut rand::rngs::StdRng| -> u64 {
            // Spread over every order of magnitude, extremes included.
            match rng.gen_range(0..4) {
                0 => u64::MAX,
                1 => 0,
                _ => rng.gen::<u64>() >> rng.gen_range(0..64),
            }
        };
        for round in 0..2000 {
            let price = Price {
                input: rng.gen_range(0..=1_000_000_000_000),
                output: rng.gen_range(0..=1_000_000_000_000),
                cached_input: None,
                reasoning: None,
                cache_write: None,
            };
            let (input, output) = (big(&mut rng), big(&mut rng));
            let worst = price.worst_case(input, output);
            assert!(worst >= 0, "round {round}");
            assert!(price.worst_case(input, output.saturating_add(1)) >= worst);
            let u = Usage {
                input_tokens: input,
                output_tokens: output,
                ..Usage::default()
            };
            assert!(
                (0..=worst).contains(&price.cost(&u)),
                "cost within the worst case"
            );
            if let Some(n) = price.affordable_output(rng.gen_range(0..i64::MAX), input) {
                let _ = price.worst_case(input, n);
            }

            let l = MemoryLimits::default();
            let limit = rng.gen_range(1..=i64::MAX);
            let mut sc = scope(None, Some(big(&mut rng).max(1)), None);
            sc.budget = Some((limit, Period::Monthly));
            let s = [sc];
            let mut grants = Vec::new();
            for _ in 0..4 {
                let tokens = input.saturating_add(output);
                if let Ok(g) = l.admit(&s, tokens, worst, 0) {
                    grants.push(g);
                }
                let (spent, held) = l.spend(&s[0], 0);
                assert!(spent >= 0 && held >= 0);
                assert!(spent.saturating_add(held) <= limit, "round {round}");
            }
            for g in grants {
                l.settle(&g, &s, u64::MAX, i64::MAX, 0);
                let (spent, held) = l.spend(&s[0], 0);
                assert!(spent >= 0 && held >= 0, "round {round}");
            }
        }
    }

    #[test]
    fn seeding_again_keeps_the_larger_spend_and_never_double_counts() {
        let l = MemoryLimits::default();
        let mut sc = scope(None, None, None);
        sc.budget = Some((1000, Period::Monthly));
        let s = [sc];
        l.seed_spend(&s[0], 100, 0);
        let g = l.admit(&s, 0, 50, 1).unwrap();
        l.settle(&g, &s, 0, 50, 1);
        assert_eq!(l.spend(&s[0], 1).0, 150);
        // The store caught up with fewer (a record still queued): this process's count holds.
        l.seed_spend(&s[0], 120, 2);
        assert_eq!(l.spend(&s[0], 2).0, 150);
        // It replayed more than this process saw (a spill file): the store's count holds.
        l.seed_spend(&s[0], 400, 3);
        assert_eq!(l.spend(&s[0], 3).0, 400);
    }

    #[test]
    fn rpm_is_an_exact_sliding_window() {
        let l = MemoryLimits::default();
        let s = [scope(Some(3), None, None)];
        for t in [0, 10_000, 20_000] {
            let g = l.admit(&s, 0, 0, t).unwrap();
            l.settle(&g, &s, 0, 0, t);
        }
        let d = l.admit(&s, 0, 0, 59_999).unwrap_err();
        assert_eq!(d.kind, DeniedKind::Requests);
        assert_eq!(d.retry_after_ms, Some(1));
        // The first request leaves the window at 60 s: one more fits, not three.
        assert!(l.admit(&s, 0, 0, 60_000).is_ok());
        assert!(l.admit(&s, 0, 0, 60_001).is_err());
    }

    #[test]
    fn tpm_reserves_then_settles_actual() {
        let l = MemoryLimits::default();
        let s = [scope(None, Some(100), None)];
        let g = l.admit(&s, 80, 0, 0).unwrap();
        assert_eq!(g.headers.tokens.unwrap().remaining, 20);
        assert!(l.admit(&s, 30, 0, 1).is_err(), "80 reserved + 30 > 100");
        l.settle(&g, &s, 10, 0, 2);
        let g2 = l.admit(&s, 30, 0, 3).unwrap();
        assert_eq!(g2.headers.tokens.unwrap().remaining, 60);
    }

    #[test]
    fn concurrency_is_released_on_settle() {
        let l = MemoryLimits::default();
        let s = [scope(None, None, Some(1))];
        let g = l.admit(&s, 0, 0, 0).unwrap();
        assert_eq!(
            l.admit(&s, 0, 0, 0).unwrap_err().kind,
            DeniedKind::Concurrency
        );
        l.settle(&g, &s, 0, 0, 0);
        assert!(l.admit(&s, 0, 0, 0).is_ok());
    }

    #[test]
    fn budget_reserves_worst_case_and_resets_each_period() {
        let l = MemoryLimits::default();
        let mut s = scope(None, None, None);
        s.budget = Some((100, Period::Daily));
        let s = [s];
        let g = l.admit(&s, 0, 60, 0).unwrap();
        // 60 held + a worst case of 60 > 100: refused, though the budget is not used up.
        assert!(matches!(
            l.admit(&s, 0, 60, 0).unwrap_err().kind,
            DeniedKind::Budget {
                reserved: 60,
                needed: 60,
                ..
            }
        ));
        let g2 = l.admit(&s, 0, 40, 0).unwrap();
        // 100 held: nothing more, not even a free request, until something settles.
        assert!(matches!(
            l.admit(&s, 0, 0, 0).unwrap_err().kind,
            DeniedKind::Budget { .. }
        ));
        l.settle(&g, &s, 0, 50, 0);
        l.settle(&g2, &s, 0, 50, 0);
        assert_eq!(l.spend(&s[0], 0), (100, 0));
        let d = l.admit(&s, 0, 1, 1000).unwrap_err();
        assert_eq!(d.retry_after_ms, Some(DAY_MS - 1000));
        assert!(
            l.admit(&s, 0, 1, DAY_MS).is_ok(),
            "a new day starts from zero"
        );
    }

    #[test]
    fn calendar_periods() {
        // 2024-03-15T12:00:00Z is a Friday.
        let t = days_from_civil(2024, 3, 15) * DAY_MS + DAY_MS / 2;
        assert_eq!(
            Period::Daily.start(t),
            days_from_civil(2024, 3, 15) * DAY_MS
        );
        assert_eq!(
            Period::Weekly.start(t),
            days_from_civil(2024, 3, 11) * DAY_MS
        );
        let m = Period::Monthly.start(t);
        assert_eq!(m, days_from_civil(2024, 3, 1) * DAY_MS);
        assert_eq!(
            Period::Monthly.end(m),
            Some(days_from_civil(2024, 4, 1) * DAY_MS)
        );
        assert_eq!(Period::Total.end(0), None);
        // At 23:00 UTC it is already the next day two hours east.
        let late = days_from_civil(2024, 3, 15) * DAY_MS + 23 * 3_600_000;
        let plus2 = 2 * 3_600_000;
        assert_eq!(
            Period::Daily.start_in(late, plus2),
            days_from_civil(2024, 3, 16) * DAY_MS - plus2
        );
        assert_eq!(
            Period::Daily.end_in(Period::Daily.start_in(late, plus2), plus2),
            Some(days_from_civil(2024, 3, 17) * DAY_MS - plus2)
        );
    }

    #[test]
    fn memory_stays_constant_at_any_rate() {
        let l = MemoryLimits::default();
        let s = [scope(Some(u64::MAX), Some(u64::MAX), None)];
        // 200k requests over three minutes: the window never holds more than 60 buckets.
        for i in 0..200_000i64 {
            let t = i * 900;
            let g = l.admit(&s, 5, 0, t).unwrap();
            l.settle(&g, &s, 3, 0, t);
        }
        let st = l.state.lock().unwrap();
        let w = st.windows.values().next().unwrap();
        // The last minute: 60_000 / 900 = 66.7 requests, each settled at 3 tokens.
        assert!((66..=67).contains(&w.requests.sum), "{}", w.requests.sum);
        assert_eq!(w.tokens.sum, w.requests.sum * 3);
    }

    #[test]
    fn tokens_settled_after_their_second_left_the_window_change_nothing() {
        let l = MemoryLimits::default();
        let s = [scope(None, Some(100), None)];
        let g = l.admit(&s, 50, 0, 0).unwrap();
        let g2 = l.admit(&s, 10, 0, 61_000).unwrap();
        // g's second has left the window: settling it must not touch g2's bucket.
        l.settle(&g, &s, 5, 0, 61_500);
        assert_eq!(
            l.admit(&s, 91, 0, 61_600).unwrap_err().kind,
            DeniedKind::Tokens
        );
        l.settle(&g2, &s, 10, 0, 61_700);
        assert!(l.admit(&s, 90, 0, 61_800).is_ok());
    }

    #[test]
    fn rolling_budget_frees_spend_hour_by_hour() {
        let l = MemoryLimits::default();
        let mut sc = scope(None, None, None);
        sc.budget = Some((100, Period::RollingDaily));
        let s = [sc];
        let h = HOUR_MS;
        // 60 spent at 01:00, 40 at 05:00: full.
        let g = l.admit(&s, 0, 60, h).unwrap();
        l.settle(&g, &s, 0, 60, h);
        let g = l.admit(&s, 0, 40, 5 * h).unwrap();
        l.settle(&g, &s, 0, 40, 5 * h);
        let d = l.admit(&s, 0, 1, 6 * h).unwrap_err();
        // No calendar reset at midnight: the 01:00 spend leaves at 02:00 the next day.
        assert_eq!(d.retry_after_ms, Some(2 * h + DAY_MS - 6 * h));
        assert!(
            l.admit(&s, 0, 1, DAY_MS + h).is_err(),
            "still inside the window"
        );
        let g = l.admit(&s, 0, 50, DAY_MS + 2 * h).unwrap();
        l.settle(&g, &s, 0, 50, DAY_MS + 2 * h);
        assert_eq!(l.spend(&s[0], DAY_MS + 2 * h).0, 90);
        assert_eq!(
            l.spend(&s[0], DAY_MS + 6 * h).0,
            50,
            "the 05:00 spend left too"
        );
        assert_eq!(
            Period::parse("rolling_monthly"),
            Some(Period::RollingMonthly)
        );
        assert_eq!(
            Period::parse("30d").map(Period::as_str),
            Some("rolling_monthly")
        );
    }
}
