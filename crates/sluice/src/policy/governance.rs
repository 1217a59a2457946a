//! The governance runtime: the principal cache (SHA-256 of a key -> resolved principal, swapped
//! whole), its refresher, and admission (model access, limits, budget) with its settlement.
//!
//! The request path never touches the database: it reads the cache and the in-memory limit
//! state. The refresher polls the store's change marker every 250 ms, and admin writes in this
//! process reload at once, so a change is visible within well under a second everywhere.

use super::alerts::AlertSink;
use super::clock::Clock;
use super::keys::{self, decode_hash, KeyPrincipal};
use super::limits::{Denied, DeniedKind, Grant, LimitStore, Period, RateHeaders, ScopeLimits};
use super::prices::format_usd;
use crate::error::ApiError;
use crate::store::gov::{GovSnapshot, GovStore, SpendScope, TeamRecord, UserRecord};
use crate::store::Store;
use crate::store::StoreError;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;

const POLL: Duration = Duration::from_millis(250);

/// The poll interval; `SLUICE_TEST_GOV_POLL_MS` lengthens it so that tests can tell the
/// fleet's pub/sub from the poll.
fn poll_interval() -> Duration {
    std::env::var("SLUICE_TEST_GOV_POLL_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(POLL, Duration::from_millis)
}

/// One consistent view of every team and key.
#[derive(Default)]
pub struct KeyIndex {
    by_hash: HashMap<[u8; 32], Arc<KeyPrincipal>>,
    /// Rotated-out keys still inside their grace period: hash -> (principal, valid until).
    previous: HashMap<[u8; 32], (Arc<KeyPrincipal>, i64)>,
    pub teams: Vec<TeamRecord>,
    pub users: Vec<UserRecord>,
    /// Every key, revoked ones included, in creation order.
    pub keys: Vec<Arc<KeyPrincipal>>,
}

impl KeyIndex {
    fn build(snap: GovSnapshot) -> Self {
        let GovSnapshot {
            teams,
            users,
            keys: records,
        } = snap;
        let by_name: HashMap<&str, &TeamRecord> =
            teams.iter().map(|t| (t.name.as_str(), t)).collect();
        let users_by_name: HashMap<&str, &UserRecord> =
            users.iter().map(|u| (u.name.as_str(), u)).collect();
        let mut by_hash = HashMap::new();
        let mut previous = HashMap::new();
        let mut keys = Vec::with_capacity(records.len());
        for r in &records {
            let p = Arc::new(keys::resolve(r, &users_by_name, &by_name));
            if r.revoked_ms.is_none() {
                if let Some(h) = decode_hash(&r.hash) {
                    by_hash.insert(h, p.clone());
                }
                if let (Some(h), Some(until)) = (
                    r.previous_hash.as_deref().and_then(decode_hash),
                    r.previous_valid_until_ms,
                ) {
                    previous.insert(h, (p.clone(), until));
                }
            }
            keys.push(p);
        }
        Self {
            by_hash,
            previous,
            teams,
            users,
            keys,
        }
    }

    pub fn key(&self, id: &str) -> Option<&Arc<KeyPrincipal>> {
        self.keys.iter().find(|k| &*k.id == id)
    }

    pub fn team(&self, name: &str) -> Option<&TeamRecord> {
        self.teams.iter().find(|t| t.name == name)
    }

    pub fn user(&self, name: &str) -> Option<&UserRecord> {
        self.users.iter().find(|u| u.name == name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRejection {
    Unknown,
    Expired,
}

pub struct Governance {
    index: ArcSwap<KeyIndex>,
    pub limits: Arc<dyn LimitStore>,
    pub clock: Arc<dyn Clock>,
    alerts: AlertSink,
    store: Store,
    /// Last change marker loaded; also serialises reloads.
    loaded: tokio::sync::Mutex<Option<i64>>,
    /// Budget scopes whose spend was loaded from the usage records, and for which period.
    seeded: std::sync::Mutex<HashMap<Arc<str>, Period>>,
    /// A scope's spend could not be loaded (store down): the refresher tries again.
    unseeded: std::sync::atomic::AtomicBool,
    /// Fleet mode: admin changes announced to the other replicas.
    broadcast: std::sync::OnceLock<Arc<super::broadcast::Broadcast>>,
}

impl Governance {
    pub async fn start(
        store: Store,
        limits: Arc<dyn LimitStore>,
        clock: Arc<dyn Clock>,
        alerts: AlertSink,
    ) -> Result<Arc<Self>, StoreError> {
        let gov = Arc::new(Self {
            index: ArcSwap::from_pointee(KeyIndex::default()),
            limits,
            clock,
            alerts,
            store,
            loaded: tokio::sync::Mutex::new(None),
            seeded: std::sync::Mutex::new(HashMap::new()),
            unseeded: std::sync::atomic::AtomicBool::new(false),
            broadcast: std::sync::OnceLock::new(),
        });
        gov.reload().await?;
        Ok(gov)
    }

    /// Fleet mode: admin changes are announced through `b`, and its messages reload this
    /// replica, until `stop`.
    pub fn join_fleet(
        self: &Arc<Self>,
        b: Arc<super::broadcast::Broadcast>,
        app: crate::app::AppState,
        stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let _ = self.broadcast.set(b.clone());
        // Not on the tracker: it records nothing.
        tokio::spawn(b.listen(Arc::downgrade(self), app, stop));
    }

    /// After an admin write: the other replicas reload now rather than at their next poll.
    pub async fn announce(&self) {
        if let Some(b) = self.broadcast.get() {
            b.changed().await;
        }
    }

    pub fn index(&self) -> arc_swap::Guard<Arc<KeyIndex>> {
        self.index.load()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Looks a presented key up in the cache; the hash comparison is constant-time.
    pub fn lookup(&self, presented: &str) -> Result<Arc<KeyPrincipal>, KeyRejection> {
        let h = keys::hash(presented);
        let idx = self.index.load();
        let now = self.clock.now_ms();
        let found = match idx.by_hash.get(&h) {
            Some(p) => Some(p.clone()),
            None => idx
                .previous
                .get(&h)
                .filter(|(_, until)| now < *until)
                .map(|(p, _)| p.clone()),
        };
        let p = found.ok_or(KeyRejection::Unknown)?;
        if !bool::from(h.ct_eq(&p.hash) | h.ct_eq(&p.previous_hash)) {
            return Err(KeyRejection::Unknown);
        }
        if p.record.expires_at_ms.is_some_and(|e| now >= e) {
            return Err(KeyRejection::Expired);
        }
        Ok(p)
    }

    /// Reloads every team and key from the store if the change marker moved.
    pub async fn reload(&self) -> Result<(), StoreError> {
        let mut loaded = self.loaded.lock().await;
        let marker = self.store.change_marker().await?;
        if *loaded == Some(marker) {
            return Ok(());
        }
        let index = KeyIndex::build(self.store.load_all().await?);
        self.seed_budgets(&index).await;
        self.index.store(Arc::new(index));
        *loaded = Some(marker);
        Ok(())
    }

    /// Loads the current period's spend of budgets not yet tracked (or whose period changed).
    async fn seed_budgets(&self, index: &KeyIndex) {
        let mut todo: Vec<(ScopeLimits, SpendScope, String)> = Vec::new();
        {
            let Ok(seeded) = self.seeded.lock() else {
                return;
            };
            let mut seen = std::collections::HashSet::new();
            for k in &index.keys {
                for (i, s) in k.scopes.iter().enumerate() {
                    let Some((_, period)) = s.budget else {
                        continue;
                    };
                    if seeded.get(&s.id) == Some(&period) || !seen.insert(s.id.clone()) {
                        continue;
                    }
                    let (kind, value) = if i == 0 {
                        (SpendScope::Key, k.id.to_string())
                    } else if let Some(user) = s.id.strip_prefix("user:") {
                        (SpendScope::User, user.to_string())
                    } else {
                        let name = s.id.strip_prefix("team:").unwrap_or(&s.id);
                        (SpendScope::Team, name.to_string())
                    };
                    todo.push((s.clone(), kind, value));
                }
            }
        }
        // One read per scope kind and period start: a start seeding a thousand keys' budgets
        // reads the rollups once, not a thousand times.
        let now = self.clock.now_ms();
        // (kind, period start, the scopes with the key, user or team each is of and its period)
        type Batch = (SpendScope, i64, Vec<(ScopeLimits, String, Period)>);
        let mut batches: Vec<Batch> = Vec::new();
        for (scope, kind, value) in todo {
            let Some((_, period)) = scope.budget else {
                continue;
            };
            let start = period.start_in(now, self.limits.calendar_offset_ms());
            match batches.iter_mut().find(|b| b.0 == kind && b.1 == start) {
                Some(b) => b.2.push((scope, value, period)),
                None => batches.push((kind, start, vec![(scope, value, period)])),
            }
        }
        for (kind, start, scopes) in batches {
            let values: Vec<String> = scopes.iter().map(|(_, v, _)| v.clone()).collect();
            match self.store.spend_since(kind, &values, start).await {
                Ok(spent) => {
                    for (scope, value, period) in scopes {
                        let spent = spent.get(&value).copied().unwrap_or(0);
                        self.limits.seed_spend(&scope, spent, now);
                        if let Ok(mut seeded) = self.seeded.lock() {
                            seeded.insert(scope.id.clone(), period);
                        }
                    }
                }
                Err(e) => {
                    self.unseeded
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    for (scope, _, _) in &scopes {
                        tracing::error!("loading the spend of {}: {e}", scope.label);
                    }
                }
            }
        }
    }

    /// Loads every budget's spend from the store again (after a spill replay, or when an
    /// earlier load failed); a scope keeps the larger of its count and the store's.
    pub async fn reseed(&self) {
        self.unseeded
            .store(false, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut seeded) = self.seeded.lock() {
            seeded.clear();
        }
        let index = self.index.load_full();
        self.seed_budgets(&index).await;
    }

    /// Polls the change marker until `stop` fires; re-seeds spend when the usage store
    /// caught up (`replays` moved) or an earlier seed failed.
    pub async fn refresh_until(
        self: Arc<Self>,
        mut stop: tokio::sync::watch::Receiver<bool>,
        mut replays: tokio::sync::watch::Receiver<u64>,
    ) {
        let poll = poll_interval();
        // Said once when the store goes away and once when it is back, not every poll.
        let mut store_down = false;
        loop {
            let replayed = tokio::select! {
                () = tokio::time::sleep(poll) => false,
                r = replays.changed() => r.is_ok(),
                _ = stop.wait_for(|s| *s) => return,
            };
            match self.reload().await {
                Err(e) if !store_down => {
                    store_down = true;
                    tracing::warn!(
                        "refreshing keys and teams failed: {e}; serving the keys known so far \
                         until the store is back"
                    );
                }
                Ok(()) if store_down => {
                    store_down = false;
                    tracing::info!("the store is back: keys and teams refreshed");
                }
                _ => {}
            }
            // `take_reseed` first: it must be consumed even when another reason already holds.
            let lost = self.limits.take_reseed();
            if lost || replayed || self.unseeded.load(std::sync::atomic::Ordering::Relaxed) {
                self.reseed().await;
            }
        }
    }

    /// Step admit: model access, then limits and budget for every scope of the key. A
    /// budgeted key on a model without a price is refused (`model_unpriced`) unless
    /// `unpriced_allowed`; a budget too short for the worst case is a 429, or with
    /// `r.cap_output` the output limit is lowered to what the tightest budget can pay.
    pub async fn admit(
        &self,
        p: &Arc<KeyPrincipal>,
        model: &str,
        r: &Reservation,
    ) -> Result<Option<Admission>, ApiError> {
        if let Some((by, list)) = p.model_refused_by(model) {
            return Err(ApiError::ModelNotAllowed {
                model: model.to_string(),
                by: by.to_string(),
                allowed: list.clone(),
            });
        }
        if !p.is_limited() {
            return Ok(None);
        }
        let budgeted = p.scopes.iter().any(|s| s.budget.is_some())
            || p.model_scopes.iter().any(|(_, s)| s.budget.is_some());
        if budgeted && r.price.is_none() && !r.unpriced_allowed {
            return Err(ApiError::ModelUnpriced {
                model: model.to_string(),
            });
        }
        let mut output = r.output_tokens;
        let mut capped = None;
        // Each retry lowers the output to what the budget that refused can pay; a key has a
        // handful of budget scopes, so this ends after at most that many rounds.
        for _ in 0..8 {
            let worst = r
                .price
                .map_or(0, |pr| pr.worst_case(r.input_tokens, output));
            match self
                .admit_tokens(p, model, r.input_tokens.saturating_add(output), worst)
                .await
            {
                Ok(mut a) => {
                    if let Some(a) = a.as_mut() {
                        a.output_cap = capped;
                    }
                    return Ok(a);
                }
                Err(d) => {
                    let now = self.clock.now_ms();
                    let affordable = match (&d.kind, r.price, r.cap_output) {
                        (
                            DeniedKind::Budget {
                                limit,
                                spent,
                                reserved,
                                ..
                            },
                            Some(pr),
                            true,
                        ) => pr.affordable_output(
                            limit.saturating_sub(spent.saturating_add(*reserved)),
                            r.input_tokens,
                        ),
                        _ => None,
                    };
                    match affordable {
                        Some(n) if n >= 1 && n < output => {
                            output = n;
                            capped = Some(n);
                        }
                        _ => return Err(denied(*d, now)),
                    }
                }
            }
        }
        Err(ApiError::Internal(
            "the budget check did not settle on an output limit".into(),
        ))
    }

    async fn admit_tokens(
        &self,
        p: &Arc<KeyPrincipal>,
        model: &str,
        tokens: u64,
        worst_cost: i64,
    ) -> Result<Option<Admission>, Box<Denied>> {
        let now = self.clock.now_ms();
        // Per-model team limits join only for the model asked for (allocates only then).
        let with_models: Option<Vec<ScopeLimits>> = p
            .model_scopes
            .iter()
            .any(|(m, _)| keys::pattern_matches(m, model))
            .then(|| {
                let extra = p
                    .model_scopes
                    .iter()
                    .filter(|(m, _)| keys::pattern_matches(m, model))
                    .map(|(_, s)| s.clone());
                p.scopes.iter().cloned().chain(extra).collect()
            });
        let scopes = with_models.as_deref().unwrap_or(&p.scopes);
        match self.limits.admit(scopes, tokens, worst_cost, now).await {
            Ok(grant) => Ok(Some(Admission {
                scopes: with_models,
                alerts: self.alerts.clone(),
                limits: self.limits.clone(),
                clock: self.clock.clone(),
                principal: p.clone(),
                grant: Some(grant),
                output_cap: None,
            })),
            Err(d) => Err(d),
        }
    }
}

/// What admission reserves for one request: its worst case.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reservation {
    /// Every prompt byte's estimate (images at their documented token cost).
    pub input_tokens: u64,
    /// The request's output limit, bounded by the model's max output.
    pub output_tokens: u64,
    /// The dearest price among the candidates the request may reach; `None`: unpriced.
    pub price: Option<super::prices::Price>,
    /// `governance.unpriced: allow`.
    pub unpriced_allowed: bool,
    /// `governance.when_budget_short: cap_output`.
    pub cap_output: bool,
}

fn denied(d: Denied, now: i64) -> ApiError {
    match d.kind {
        DeniedKind::Budget {
            limit,
            spent,
            reserved,
            needed,
            period,
            resets_at_ms,
        } if spent.saturating_add(reserved) < limit => ApiError::BudgetExceeded {
            message: format!(
                "{} has ${} left of its {} budget of ${} (${} spent, ${} held by requests in \
                 flight), and this request could cost up to ${}: lower max_tokens or wait{}",
                d.label,
                format_usd(limit - spent.saturating_add(reserved)),
                period.as_str(),
                format_usd(limit),
                format_usd(spent),
                format_usd(reserved),
                format_usd(needed),
                match resets_at_ms {
                    Some(r) => format!(" (it resets at {})", rfc3339(r)),
                    None => String::new(),
                }
            ),
            retry_after_s: resets_at_ms.map(|r| (r - now + 999) / 1000),
        },
        DeniedKind::Budget {
            limit,
            spent,
            period,
            resets_at_ms,
            ..
        } => ApiError::BudgetExceeded {
            message: format!(
                "{} has used its {} budget: ${} spent of ${}{}",
                d.label,
                period.as_str(),
                format_usd(spent),
                format_usd(limit),
                match resets_at_ms {
                    Some(r) => format!(
                        "; it resets at {} (in {} s)",
                        rfc3339(r),
                        (r - now + 999) / 1000
                    ),
                    None => "; it does not reset (period total)".to_string(),
                }
            ),
            retry_after_s: resets_at_ms.map(|r| (r - now + 999) / 1000),
        },
        kind => {
            let what = match kind {
                DeniedKind::Requests => format!("{} requests per minute", d.limit),
                DeniedKind::Tokens => format!("{} tokens per minute", d.limit),
                DeniedKind::Unavailable => {
                    "the shared limits are unreachable (redis.on_failure: closed)".to_string()
                }
                _ => format!("{} concurrent requests", d.limit),
            };
            let message = match (kind == DeniedKind::Tokens, d.retry_after_ms) {
                (true, None) => format!(
                    "Rate limit reached for {}: this request alone needs more than {what}",
                    d.label
                ),
                _ => format!("Rate limit reached for {}: {what}", d.label),
            };
            ApiError::RateLimited(Box::new(crate::error::RateLimitInfo {
                message,
                retry_after_s: d.retry_after_ms.map(|ms| (ms + 999) / 1000),
                headers: d.headers,
            }))
        }
    }
}

/// Unix ms -> `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(ms: i64) -> String {
    let day = ms.div_euclid(86_400_000);
    let (y, m, d) = super::clock::civil_from_days(day);
    let s = ms.rem_euclid(86_400_000) / 1000;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// A request's hold on limits and budget. Settled exactly once: by [`Admission::settle`], or
/// on drop (nothing charged) if the request ended without settling.
pub struct Admission {
    /// The scopes admitted against when they differ from the principal's (per-model limits).
    scopes: Option<Vec<ScopeLimits>>,
    alerts: AlertSink,
    limits: Arc<dyn LimitStore>,
    clock: Arc<dyn Clock>,
    principal: Arc<KeyPrincipal>,
    grant: Option<Grant>,
    /// `cap_output`: the output limit the budget could pay, when lower than asked.
    pub output_cap: Option<u64>,
}

impl Admission {
    pub fn headers(&self) -> RateHeaders {
        self.grant.as_ref().map(|g| g.headers).unwrap_or_default()
    }

    pub fn reserved_tokens(&self) -> u64 {
        self.grant.as_ref().map_or(0, |g| g.tokens)
    }

    pub fn reserved_cost(&self) -> i64 {
        self.grant.as_ref().map_or(0, |g| g.worst_cost)
    }

    pub fn settle(mut self, tokens: u64, cost: i64) {
        self.release(tokens, cost);
    }

    fn release(&mut self, tokens: u64, cost: i64) {
        let Some(g) = self.grant.take() else { return };
        let now = self.clock.now_ms();
        let scopes = self.scopes.as_deref().unwrap_or(&self.principal.scopes);
        let moves = self.limits.settle(&g, scopes, tokens, cost, now);
        self.alerts.spend_moved(&moves, now);
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.release(0, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_times() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000_000), "2023-11-14T22:13:20Z");
    }
}
