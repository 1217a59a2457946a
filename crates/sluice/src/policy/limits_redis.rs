//! Rate limits and budgets shared by a fleet through Redis: one Lua script admits a request
//! against every scope it touches (one round trip), settles go out pipelined by one worker,
//! concurrency slots and budget holds are leases that lapse when a replica dies, and when
//! Redis is unreachable the replica applies `redis.on_failure` and says so.
//!
//! Every key carries the prefix as a hash tag (`{sluice}:rq:key:key_12ab`), so a request's
//! keys share one Redis Cluster slot and one script can touch them all.

use super::limits::{
    Counter, Denied, DeniedKind, Grant, LimitStore, MemoryLimits, Period, RateHeaders, ScopeLimits,
    SpendMove,
};
use crate::config::redis::{OnFailure, RedisConfig};
use redis::aio::ConnectionManager;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;
/// Lua numbers are doubles: amounts are clamped to what they hold exactly.
const LUA_MAX: u64 = 1 << 53;
/// While degraded, Redis is tried again at most this often (the rest go straight to
/// `on_failure`, so a blackholed Redis does not add its timeout to every request).
const RETRY_MS: i64 = 1_000;

/// Work that needs no answer on the request path.
enum Op {
    Settle {
        keys: Vec<String>,
        args: Vec<i64>,
        ticket: u64,
        /// The budget scopes in script order (label, limit, period), and the cost charged:
        /// the script answers each one's spend after, for threshold alerts.
        budgets: Vec<(Arc<str>, i64, Period)>,
        cost: i64,
        now: i64,
    },
    Seed {
        keys: [String; 2],
        args: [i64; 3],
    },
    /// Marks the prefix's state as present (a re-seed is under way), so that a fleet without
    /// budgets does not re-seed on every admission.
    Alive(String),
    /// Answered once everything queued before it was sent (shutdown, tests).
    Barrier(tokio::sync::oneshot::Sender<()>),
}

pub struct RedisLimits {
    conn: ConnectionManager,
    /// `{prefix}`: the hash tag every key starts with.
    tag: String,
    cfg: RedisConfig,
    admit_script: redis::Script,
    /// Per-replica limits for `on_failure: local`, each divided by `replicas`.
    local: MemoryLimits,
    offset_ms: i64,
    ops: mpsc::UnboundedSender<Op>,
    /// Leases held by this replica's requests in flight (ticket -> lease keys), renewed by
    /// the worker so a long stream keeps its slot.
    live: Arc<Mutex<HashMap<u64, Vec<String>>>>,
    next_ticket: AtomicU64,
    /// Tickets are unique per replica run: a random high half, a counter low half.
    ticket_base: u64,
    degraded: AtomicBool,
    retry_at: AtomicI64,
    reseed: Arc<AtomicBool>,
}

impl RedisLimits {
    /// Connects lazily: a replica starts (degraded) even while Redis is down.
    pub fn start(
        cfg: RedisConfig,
        calendar_offset_ms: i64,
        clock: Arc<dyn super::clock::Clock>,
        alerts: super::alerts::AlertSink,
    ) -> Result<Arc<Self>, redis::RedisError> {
        let client = redis::Client::open(cfg.url.as_str())?;
        let mc = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(cfg.timeout))
            .set_response_timeout(Some(cfg.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, mc)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let live = Arc::new(Mutex::new(HashMap::new()));
        let reseed = Arc::new(AtomicBool::new(true));
        let ticket_base = (rand::random::<u32>() as u64) << 32;
        let this = Arc::new(Self {
            conn: conn.clone(),
            tag: format!("{{{}}}", cfg.key_prefix),
            admit_script: redis::Script::new(include_str!("lua/admit.lua")),
            local: MemoryLimits::new(calendar_offset_ms),
            offset_ms: calendar_offset_ms,
            ops: tx,
            live: live.clone(),
            next_ticket: AtomicU64::new(1),
            ticket_base,
            degraded: AtomicBool::new(false),
            retry_at: AtomicI64::new(0),
            reseed: reseed.clone(),
            cfg: cfg.clone(),
        });
        // Not on the task tracker: a lost settle only frees a lease early or late (it lapses)
        // and spend is rebuilt from the usage records, which the sink keeps.
        tokio::spawn(worker(conn, rx, live, cfg.lease, reseed, clock, alerts));
        Ok(this)
    }

    fn keys_of(&self, s: &ScopeLimits, now: i64) -> [String; 6] {
        let t = &self.tag;
        let id = &s.id;
        let spend = match s.budget {
            Some((_, p)) if p.rolling_len().is_some() => format!("{t}:sph:{id}:{}", p.as_str()),
            Some((_, p)) => format!(
                "{t}:sp:{id}:{}:{}",
                p.as_str(),
                p.start_in(now, self.offset_ms)
            ),
            None => format!("{t}:sp:{id}"),
        };
        [
            format!("{t}:rq:{id}"),
            format!("{t}:tk:{id}"),
            format!("{t}:cc:{id}"),
            format!("{t}:hold:{id}"),
            format!("{t}:holdc:{id}"),
            spend,
        ]
    }

    fn alive_key(&self) -> String {
        format!("{}:alive", self.tag)
    }

    /// Rolling budgets: the first hour still counted (-1 for calendar periods); and how long
    /// the spend key must live.
    fn budget_args(&self, p: Period, now: i64) -> (i64, i64) {
        match p.rolling_len() {
            Some(len) => ((now - len).div_euclid(HOUR_MS), len + HOUR_MS),
            None => (
                -1,
                p.end_in(p.start_in(now, self.offset_ms), self.offset_ms)
                    .map_or(0, |e| e - now + DAY_MS),
            ),
        }
    }

    fn set_degraded(&self, on: bool, why: &str) {
        if self.degraded.swap(on, Ordering::Relaxed) != on {
            crate::telemetry::metrics::redis_degraded(on);
            if on {
                tracing::warn!(
                    "redis unreachable ({why}): limits and budgets now per replica (on_failure: {})",
                    match self.cfg.on_failure {
                        OnFailure::Local => "local",
                        OnFailure::Closed => "closed",
                    }
                );
            } else {
                tracing::info!("redis reachable again: limits and budgets shared");
                // What was spent meanwhile is in the usage records, not in Redis.
                self.reseed.store(true, Ordering::Relaxed);
            }
        }
    }

    fn fallback(
        &self,
        scopes: &[ScopeLimits],
        tokens: u64,
        worst_cost: i64,
        now: i64,
    ) -> Result<Grant, Box<Denied>> {
        crate::telemetry::metrics::redis_fallback_admission();
        match self.cfg.on_failure {
            OnFailure::Closed => Err(Box::new(Denied {
                kind: DeniedKind::Unavailable,
                label: scopes
                    .first()
                    .map_or_else(|| Arc::from("gateway"), |s| s.label.clone()),
                limit: 0,
                retry_after_ms: Some(RETRY_MS),
                headers: RateHeaders::default(),
            })),
            OnFailure::Local => {
                let n = self.cfg.replicas.max(1);
                let share = |v: u64| (v / n).max(1);
                let divided: Vec<ScopeLimits> = scopes
                    .iter()
                    .map(|s| ScopeLimits {
                        rpm: s.rpm.map(share),
                        tpm: s.tpm.map(share),
                        max_concurrency: s.max_concurrency.map(share),
                        budget: s
                            .budget
                            .map(|(l, p)| (l / i64::try_from(n).unwrap_or(1), p)),
                        ..s.clone()
                    })
                    .collect();
                let mut g = self.local.admit(&divided, tokens, worst_cost, now)?;
                g.local = true;
                Ok(g)
            }
        }
    }

    async fn admit_shared(
        &self,
        scopes: &[ScopeLimits],
        tokens: u64,
        worst_cost: i64,
        now: i64,
    ) -> Result<Result<Grant, Box<Denied>>, redis::RedisError> {
        let ticket =
            self.ticket_base | (self.next_ticket.fetch_add(1, Ordering::Relaxed) & 0xffff_ffff);
        let expiry = now + i64::try_from(self.cfg.lease.as_millis()).unwrap_or(i64::MAX / 4);
        let tokens_arg = tokens.min(LUA_MAX);
        let worst_arg = worst_cost.clamp(0, LUA_MAX as i64);
        let mut inv = self.admit_script.prepare_invoke();
        inv.key(self.alive_key());
        inv.arg(now)
            .arg(tokens_arg)
            .arg(worst_arg)
            .arg(expiry)
            .arg(ticket);
        let opt = |v: Option<u64>| v.map_or(-1, |v| i64::try_from(v.min(LUA_MAX)).unwrap_or(-1));
        let mut lease_keys = Vec::new();
        for s in scopes {
            let keys = self.keys_of(s, now);
            let (from_hour, ttl) = s.budget.map_or((-1, 0), |(_, p)| self.budget_args(p, now));
            if s.max_concurrency.is_some() {
                lease_keys.push(keys[2].clone());
            }
            if s.budget.is_some() {
                lease_keys.push(keys[3].clone());
            }
            for k in keys {
                inv.key(k);
            }
            inv.arg(opt(s.rpm))
                .arg(opt(s.tpm))
                .arg(opt(s.max_concurrency))
                .arg(s.budget.map_or(-1, |(l, _)| l.clamp(0, LUA_MAX as i64)))
                .arg(from_hour)
                .arg(ttl);
        }
        let mut conn = self.conn.clone();
        let out: Vec<i64> = tokio::time::timeout(self.cfg.timeout, inv.invoke_async(&mut conn))
            .await
            .map_err(|_| {
                redis::RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no answer in time",
                ))
            })??;
        let at = |i: usize| out.get(i).copied().unwrap_or(-1);
        if at(1) == 0 {
            self.reseed.store(true, Ordering::Relaxed);
        }
        let counter = |base: usize| {
            (at(base) >= 0).then(|| Counter {
                limit: u64::try_from(at(base)).unwrap_or(0),
                remaining: u64::try_from(at(base + 1)).unwrap_or(0),
                reset_ms: at(base + 2).max(0),
            })
        };
        if at(0) == 1 {
            if !lease_keys.is_empty() {
                if let Ok(mut live) = self.live.lock() {
                    live.insert(ticket, lease_keys);
                }
            }
            return Ok(Ok(Grant {
                at: now,
                scopes: scopes.iter().map(|s| s.id.clone()).collect(),
                ticket,
                local: false,
                tokens,
                worst_cost,
                headers: RateHeaders {
                    requests: counter(2),
                    tokens: counter(5),
                },
            }));
        }
        let scope = usize::try_from(at(2))
            .ok()
            .and_then(|i| scopes.get(i))
            .or(scopes.first());
        let label = scope.map_or_else(|| Arc::from("gateway"), |s| s.label.clone());
        let limit = at(4);
        let retry = (at(5) >= 0).then_some(at(5));
        let headers = RateHeaders {
            requests: counter(9),
            tokens: counter(12),
        };
        let kind = match at(3) {
            1 => DeniedKind::Requests,
            2 => DeniedKind::Tokens,
            3 => DeniedKind::Concurrency,
            _ => {
                let period = scope.and_then(|s| s.budget).map_or(Period::Total, |b| b.1);
                let resets_at_ms = match period.rolling_len() {
                    Some(len) => (at(8) >= 0).then(|| (at(8) + 1) * HOUR_MS + len),
                    None => period.end_in(period.start_in(now, self.offset_ms), self.offset_ms),
                };
                return Ok(Err(Box::new(Denied {
                    kind: DeniedKind::Budget {
                        limit,
                        spent: at(6),
                        reserved: at(7),
                        needed: worst_cost,
                        period,
                        resets_at_ms,
                    },
                    label,
                    limit: u64::try_from(limit).unwrap_or(0),
                    retry_after_ms: resets_at_ms.map(|r| r - now),
                    headers,
                })));
            }
        };
        Ok(Err(Box::new(Denied {
            kind,
            label,
            limit: u64::try_from(limit).unwrap_or(0),
            retry_after_ms: retry,
            headers,
        })))
    }
}

impl RedisLimits {
    /// A budget's spent and held micro-USD as Redis counts them (the local view if Redis does
    /// not answer).
    async fn spend_shared(&self, scope: &ScopeLimits, now: i64) -> (i64, i64) {
        let Some((_, p)) = scope.budget else {
            return (0, 0);
        };
        let keys = self.keys_of(scope, now);
        let (from_hour, _) = self.budget_args(p, now);
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        if from_hour < 0 {
            pipe.cmd("GET").arg(&keys[5]);
        } else {
            pipe.cmd("HGETALL").arg(&keys[5]);
        }
        pipe.cmd("HVALS").arg(&keys[4]);
        let got = tokio::time::timeout(
            self.cfg.timeout,
            pipe.query_async::<(redis::Value, Vec<i64>)>(&mut conn),
        )
        .await;
        match got {
            Ok(Ok((spent, held))) => {
                let spent = match spent {
                    redis::Value::Map(m) => m
                        .iter()
                        .filter_map(|(h, v)| {
                            let h: i64 = redis::from_redis_value_ref(h).ok()?;
                            let v: i64 = redis::from_redis_value_ref(v).ok()?;
                            (h >= from_hour).then_some(v)
                        })
                        .sum(),
                    redis::Value::Array(a) => a
                        .chunks(2)
                        .filter_map(|c| {
                            let h: i64 = redis::from_redis_value_ref(c.first()?).ok()?;
                            let v: i64 = redis::from_redis_value_ref(c.get(1)?).ok()?;
                            (h >= from_hour).then_some(v)
                        })
                        .sum(),
                    v => redis::from_redis_value_ref::<Option<i64>>(&v)
                        .ok()
                        .flatten()
                        .unwrap_or(0),
                };
                (spent, held.iter().sum())
            }
            _ => self.local.spend(scope, now),
        }
    }
}

#[async_trait::async_trait]
impl LimitStore for RedisLimits {
    async fn admit(
        &self,
        scopes: &[ScopeLimits],
        tokens: u64,
        worst_cost: i64,
        now: i64,
    ) -> Result<Grant, Box<Denied>> {
        if self.degraded.load(Ordering::Relaxed) && now < self.retry_at.load(Ordering::Relaxed) {
            return self.fallback(scopes, tokens, worst_cost, now);
        }
        match self.admit_shared(scopes, tokens, worst_cost, now).await {
            Ok(r) => {
                self.set_degraded(false, "");
                r
            }
            Err(e) => {
                self.retry_at.store(now + RETRY_MS, Ordering::Relaxed);
                self.set_degraded(true, &e.to_string());
                self.fallback(scopes, tokens, worst_cost, now)
            }
        }
    }

    fn settle(
        &self,
        grant: &Grant,
        scopes: &[ScopeLimits],
        tokens: u64,
        cost: i64,
        now: i64,
    ) -> Vec<SpendMove> {
        if grant.local {
            return self.local.settle(grant, scopes, tokens, cost, now);
        }
        let mut keys = Vec::with_capacity(grant.scopes.len() * 6);
        let mut args = vec![
            grant.at.div_euclid(1000),
            i64::try_from(grant.tokens.min(LUA_MAX)).unwrap_or(0),
            i64::try_from(tokens.min(LUA_MAX)).unwrap_or(0),
            cost.clamp(0, LUA_MAX as i64),
        ];
        let mut budgets = Vec::new();
        for id in &grant.scopes {
            let Some(s) = scopes.iter().find(|s| &s.id == id) else {
                continue;
            };
            if let Some((limit, p)) = s.budget {
                budgets.push((s.label.clone(), limit, p));
            }
            // The spend key of the period the request was admitted in.
            keys.extend(self.keys_of(s, grant.at));
            let (hour, ttl) = match s.budget {
                None => (-2, 0),
                Some((_, p)) => match p.rolling_len() {
                    Some(_) => (now.div_euclid(HOUR_MS), self.budget_args(p, now).1),
                    None => (-1, self.budget_args(p, grant.at).1),
                },
            };
            args.extend([i64::from(s.tpm.is_some()), hour, ttl]);
        }
        let _ = self.ops.send(Op::Settle {
            keys,
            args,
            ticket: grant.ticket,
            budgets,
            cost: cost.clamp(0, LUA_MAX as i64),
            now,
        });
        // The moves are the fleet's: the worker sends their alerts when Redis answered.
        Vec::new()
    }

    fn seed_spend(&self, scope: &ScopeLimits, spent: i64, now: i64) {
        let Some((_, p)) = scope.budget else {
            return;
        };
        let (from_hour, ttl) = self.budget_args(p, now);
        let hour = if from_hour < 0 {
            -1
        } else {
            now.div_euclid(HOUR_MS)
        };
        let spend_key = self.keys_of(scope, now)[5].clone();
        let _ = self.ops.send(Op::Seed {
            keys: [self.alive_key(), spend_key],
            args: [spent.clamp(0, LUA_MAX as i64), hour, ttl],
        });
        // The fallback starts from the store's count too.
        self.local.seed_spend(scope, spent, now);
    }

    fn spend(&self, scope: &ScopeLimits, now: i64) -> (i64, i64) {
        // Admin views are synchronous; they wait for Redis on a blocking-allowed worker
        // thread (the server's runtime is multi-threaded; elsewhere the local view answers).
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| h.block_on(self.spend_shared(scope, now)))
            }
            _ => self.local.spend(scope, now),
        }
    }

    fn calendar_offset_ms(&self) -> i64 {
        self.offset_ms
    }

    fn take_reseed(&self) -> bool {
        let lost = self.reseed.swap(false, Ordering::Relaxed);
        if lost {
            let _ = self.ops.send(Op::Alive(self.alive_key()));
        }
        lost
    }

    async fn flush(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.ops.send(Op::Barrier(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    fn degraded(&self) -> Option<String> {
        self.degraded.load(Ordering::Relaxed).then(|| {
            format!(
                "redis unreachable: limits per replica (on_failure: {})",
                match self.cfg.on_failure {
                    OnFailure::Local => "local",
                    OnFailure::Closed => "closed",
                }
            )
        })
    }
}

/// Sends queued settles and seeds, all that are waiting in one pipeline, and renews the
/// leases of requests still in flight every third of the lease.
async fn worker(
    conn: ConnectionManager,
    mut rx: mpsc::UnboundedReceiver<Op>,
    live: Arc<Mutex<HashMap<u64, Vec<String>>>>,
    lease: Duration,
    reseed: Arc<AtomicBool>,
    clock: Arc<dyn super::clock::Clock>,
    alerts: super::alerts::AlertSink,
) {
    let settle = redis::Script::new(include_str!("lua/settle.lua"));
    let seed = redis::Script::new(include_str!("lua/seed.lua"));
    let mut renew = tokio::time::interval(lease / 3);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            n = rx.recv_many(&mut batch, 512) => {
                if n == 0 {
                    return;
                }
            }
            _ = renew.tick() => {
                renew_leases(&conn, &live, lease, clock.now_ms()).await;
                continue;
            }
        }
        let mut pipe = redis::pipe();
        for op in &batch {
            match op {
                Op::Settle {
                    keys, args, ticket, ..
                } => {
                    pipe.cmd("EVALSHA")
                        .arg(settle.get_hash())
                        .arg(keys.len())
                        .arg(keys)
                        .arg(ticket)
                        .arg(args);
                }
                Op::Seed { keys, args } => {
                    pipe.cmd("EVALSHA")
                        .arg(seed.get_hash())
                        .arg(2)
                        .arg(&keys[..])
                        .arg(&args[..])
                        .ignore();
                }
                Op::Alive(key) => {
                    pipe.cmd("SET").arg(key).arg(1).ignore();
                }
                Op::Barrier(_) => {}
            }
        }
        let mut c = conn.clone();
        let mut result = pipe.query_async::<Vec<Vec<i64>>>(&mut c).await;
        if matches!(&result, Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript))
        {
            // Redis restarted (scripts are not kept): load them and send the batch again.
            let _ = settle.load_async(&mut c).await;
            let _ = seed.load_async(&mut c).await;
            result = pipe.query_async::<Vec<Vec<i64>>>(&mut c).await;
        }
        match result {
            Ok(afters) => {
                let settles = batch.iter().filter_map(|op| match op {
                    Op::Settle {
                        budgets, cost, now, ..
                    } => Some((budgets, *cost, *now)),
                    _ => None,
                });
                for ((budgets, cost, now), after) in settles.zip(afters) {
                    let moves: Vec<SpendMove> = budgets
                        .iter()
                        .zip(after)
                        .map(|((label, limit, period), after)| SpendMove {
                            label: label.clone(),
                            before: after.saturating_sub(cost),
                            after,
                            limit: *limit,
                            period: *period,
                        })
                        .collect();
                    alerts.spend_moved(&moves, now);
                }
            }
            Err(e) => {
                // Leases lapse by themselves; spend is rebuilt from the usage records.
                tracing::warn!("settling {} requests in redis failed: {e}", batch.len());
                reseed.store(true, Ordering::Relaxed);
            }
        }
        if let Ok(mut l) = live.lock() {
            for op in &batch {
                if let Op::Settle { ticket, .. } = op {
                    l.remove(ticket);
                }
            }
        }
        for op in batch.drain(..) {
            if let Op::Barrier(done) = op {
                let _ = done.send(());
            }
        }
        batch.clear();
    }
}

async fn renew_leases(
    conn: &ConnectionManager,
    live: &Mutex<HashMap<u64, Vec<String>>>,
    lease: Duration,
    now: i64,
) {
    let expiry = now + i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 4);
    let mut pipe = redis::pipe();
    let mut n = 0;
    if let Ok(l) = live.lock() {
        for (ticket, keys) in l.iter() {
            for k in keys {
                pipe.cmd("ZADD")
                    .arg(k)
                    .arg("XX")
                    .arg(expiry)
                    .arg(ticket)
                    .ignore();
                n += 1;
            }
        }
    }
    if n > 0 {
        let mut c = conn.clone();
        if let Err(e) = pipe.query_async::<()>(&mut c).await {
            tracing::warn!("renewing {n} redis leases failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use rand::{Rng, SeedableRng};

    impl RedisLimits {
        async fn settled(&self) {
            self.flush().await;
        }
    }

    /// Deletes the test's keys when it ends, failed or not.
    struct Wipe(String);

    impl Drop for Wipe {
        fn drop(&mut self) {
            let Ok(mut c) =
                redis::Client::open("redis://127.0.0.1:6379").and_then(|c| c.get_connection())
            else {
                return;
            };
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{{{}}}*", self.0))
                .query(&mut c)
                .unwrap_or_default();
            if !keys.is_empty() {
                let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut c);
            }
        }
    }

    fn scope(
        id: &str,
        rpm: Option<u64>,
        tpm: Option<u64>,
        conc: Option<u64>,
        budget: Option<(i64, Period)>,
    ) -> ScopeLimits {
        ScopeLimits {
            id: Arc::from(id),
            label: Arc::from(id),
            rpm,
            tpm,
            max_concurrency: conc,
            budget,
        }
    }

    /// The Lua scripts and the in-memory store make the same decisions: the same random
    /// admits and settles over several minutes (rpm, tpm, concurrency, a calendar and a
    /// rolling budget, on a key and its team) get the same answers, headers and spend.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lua_scripts_decide_exactly_as_the_memory_store() {
        if std::net::TcpStream::connect("127.0.0.1:6379").is_err() {
            assert!(
                std::env::var("SLUICE_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "Redis at 127.0.0.1:6379 is down and SLUICE_REQUIRE_SERVICES=1"
            );
            eprintln!("SKIPPED lua_scripts_decide_exactly_as_the_memory_store: no Redis at 127.0.0.1:6379");
            return;
        }
        let prefix = format!("t-lua-{}-{}", std::process::id(), rand::random::<u32>());
        let _wipe = Wipe(prefix.clone());
        let cfg = RedisConfig {
            url: "redis://127.0.0.1:6379".into(),
            key_prefix: prefix.clone(),
            on_failure: OnFailure::Closed,
            replicas: 1,
            // Renewals use the real clock; the test's clock runs up to ~10 min ahead of it.
            lease: Duration::from_secs(3600),
            timeout: Duration::from_secs(2),
            share_breakers: false,
        };
        let clock: Arc<dyn super::super::clock::Clock> = Arc::new(super::super::clock::SystemClock);
        let redis = RedisLimits::start(
            cfg,
            0,
            clock,
            crate::policy::alerts::AlertSink::start(None, Vec::new()),
        )
        .unwrap();
        let mem = MemoryLimits::new(0);
        // Three phases, each tight on something else; every phase has a key and its team.
        let phases = [
            [
                scope("key:a", Some(10), Some(5_000), Some(3), None),
                scope("team:a", Some(15), None, Some(4), None),
            ],
            [
                scope(
                    "key:b",
                    None,
                    Some(800),
                    Some(5),
                    Some((50_000, Period::Monthly)),
                ),
                scope("team:b", Some(100), Some(1_000), None, None),
            ],
            [
                scope(
                    "key:c",
                    Some(100),
                    None,
                    Some(4),
                    Some((3_000, Period::Monthly)),
                ),
                scope(
                    "team:c",
                    None,
                    None,
                    None,
                    Some((4_000, Period::RollingDaily)),
                ),
            ],
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(16);
        let mut now = crate::app::unix_ms();
        let mut held: Vec<(Grant, Grant)> = Vec::new();
        let mut admitted = 0;
        // Requests, tokens, concurrency, budget.
        let mut denied = [0; 4];
        for round in 0..600 {
            let scopes = &phases[round / 200];
            if round > 0 && round % 200 == 0 {
                // The previous phase's requests end.
                for (m, r) in held.drain(..) {
                    let prev = &phases[round / 200 - 1];
                    mem.settle(&m, prev, 0, 0, now);
                    redis.settle(&r, prev, 0, 0, now);
                }
                redis.settled().await;
            }
            now += rng.gen_range(0..1_500);
            if !held.is_empty() && rng.gen_bool(0.45) {
                let (m, r) = held.swap_remove(rng.gen_range(0..held.len()));
                let used = rng.gen_range(0..=m.tokens + 10);
                let cost = rng.gen_range(0..=m.worst_cost);
                mem.settle(&m, scopes, used, cost, now);
                redis.settle(&r, scopes, used, cost, now);
                redis.settled().await;
                continue;
            }
            let tokens = rng.gen_range(0..150);
            let worst = rng.gen_range(0..300);
            let m = mem.admit(scopes, tokens, worst, now);
            let r = redis
                .admit_shared(scopes, tokens, worst, now)
                .await
                .unwrap();
            match (m, r) {
                (Ok(m), Ok(r)) => {
                    assert_eq!(m.headers, r.headers, "round {round}");
                    admitted += 1;
                    held.push((m, r));
                }
                (Err(m), Err(r)) => {
                    assert_eq!(m, r, "round {round}");
                    let k = match m.kind {
                        DeniedKind::Requests => 0,
                        DeniedKind::Tokens => 1,
                        DeniedKind::Concurrency => 2,
                        _ => 3,
                    };
                    denied[k] += 1;
                }
                (m, r) => panic!("round {round}: memory {m:?}, redis {r:?}"),
            }
            for s in scopes {
                assert_eq!(
                    mem.spend(s, now).0,
                    redis.spend_shared(s, now).await.0,
                    "round {round} {}",
                    s.id
                );
                assert_eq!(
                    mem.spend(s, now).1,
                    redis.spend_shared(s, now).await.1,
                    "round {round} {}",
                    s.id
                );
            }
        }
        assert!(
            admitted > 50,
            "too few admitted to mean anything: {admitted}"
        );
        assert!(
            denied.iter().all(|n| *n > 0),
            "every kind of refusal compared: {denied:?}"
        );

        // The edges random sizes rarely hit: exactly at each limit passes, one more does not.
        let edge = [scope(
            "key:edge",
            Some(2),
            Some(100),
            Some(2),
            Some((100, Period::Monthly)),
        )];
        now += 60_000;
        for (tokens, worst, pass) in [(60, 60, true), (40, 40, true), (0, 0, false)] {
            let r = redis.admit_shared(&edge, tokens, worst, now).await.unwrap();
            assert_eq!(r.is_ok(), pass, "{tokens} tokens, {worst} worst: {r:?}");
            assert_eq!(mem.admit(&edge, tokens, worst, now).is_ok(), pass);
        }
    }
}
