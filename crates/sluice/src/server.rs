//! Running the gateway: bind, serve, reload on SIGHUP, and shut down gracefully (stop
//! accepting, let in-flight requests and streams finish within the drain timeout, flush
//! the usage records, exit 0).

use crate::app::{self, AppState, Gateway};
use crate::config::{self, Config};
use crate::policy::alerts::AlertSink;
use crate::policy::governance::Governance;
use crate::policy::limits::{LimitStore, MemoryLimits};
use crate::policy::limits_redis::RedisLimits;
use crate::store::Store;
use crate::store::UsageWriter;
use anyhow::{bail, Context};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

/// Refuses an open gateway on a non-loopback address unless explicitly allowed.
pub fn check_exposure(cfg: &Config) -> anyhow::Result<()> {
    check_exposure_at(cfg, cfg.server.listen)
}

/// [`check_exposure`] for a gateway bound to `addr` (a reload keeps the bound address).
fn check_exposure_at(cfg: &Config, addr: SocketAddr) -> anyhow::Result<()> {
    let open = cfg.server.master_key.is_none();
    if open && !addr.ip().is_loopback() && !cfg.server.allow_unauthenticated {
        bail!(
            "refusing to serve without authentication on {addr}: set server.master_key (or SLUICE_MASTER_KEY), \
             or opt in with --allow-unauthenticated / server.allow_unauthenticated: true"
        );
    }
    Ok(())
}

/// Whether `new` may replace `old` on a running gateway bound to `addr`: the exposure check
/// runs again (a reload that drops the master key on a public address is refused), and the
/// master key cannot be removed once set (the gateway never reopens without auth, so that
/// would only lock the admin out).
pub fn check_reload(old: &Config, new: &Config, addr: SocketAddr) -> anyhow::Result<()> {
    check_exposure_at(new, addr)?;
    if old.server.master_key.is_some() && new.server.master_key.is_none() {
        bail!(
            "the new config has no server.master_key (nor SLUICE_MASTER_KEY) but the running one has; \
             the master key can be changed by a reload, not removed"
        );
    }
    Ok(())
}

/// Serves until `shutdown` resolves, then drains. `on_listening` gets the bound address.
pub async fn run(
    cfg: Config,
    config_path: Option<PathBuf>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_listening: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    check_exposure(&cfg)?;
    let store = Store::open(&cfg.store.url).await.with_context(|| {
        format!(
            "opening the store at {}",
            crate::config::redact_url(&cfg.store.url)
        )
    })?;
    store.set_minute_retention(cfg.usage.rollup_minute_retention);
    let listener = TcpListener::bind(cfg.server.listen)
        .await
        .with_context(|| format!("binding {}", cfg.server.listen))?;
    let addr = listener.local_addr()?;
    let drain = cfg.server.drain_timeout;
    announce(&cfg, addr);

    crate::telemetry::metrics::install();
    crate::telemetry::metrics::spawn_upkeep();
    crate::telemetry::otel::init();
    let tracker = TaskTracker::new();
    let mut sink_cfg = cfg.usage.sink.clone();
    if sink_cfg.spill_path.is_none() {
        sink_cfg.spill_path = crate::config::usage::default_spill_path(&cfg.store.url);
    }
    let (sink, writer) = UsageWriter::start(store.clone(), &tracker, sink_cfg);
    let alerts = AlertSink::start(
        cfg.governance.alert_webhook.clone(),
        cfg.governance.alert_thresholds.clone(),
    );
    let clock = crate::policy::clock::from_env();
    // Limits in this process's memory, or shared by the fleet through Redis (`redis.url`).
    let limits: Arc<dyn LimitStore> = match &cfg.redis {
        None => Arc::new(MemoryLimits::new(cfg.governance.budget_offset_ms)),
        Some(r) => RedisLimits::start(
            r.clone(),
            cfg.governance.budget_offset_ms,
            clock.clone(),
            alerts.clone(),
        )
        .context("connecting to redis.url")?,
    };
    let cfg_redis = cfg.redis.clone();
    let gateway = Gateway::build(cfg).map_err(anyhow::Error::msg)?;
    // Budgets are seeded from the stored spend: a spill file from an earlier run goes in first.
    sink.caught_up(std::time::Duration::from_secs(10)).await;
    let gov = Governance::start(store.clone(), limits, clock, alerts)
        .await
        .context("loading keys and teams")?;
    let replicas =
        crate::fleet::Replicas::new(cfg_redis.as_ref(), addr).context("connecting to redis.url")?;
    let state = AppState::new(
        gateway,
        sink,
        store,
        gov.clone(),
        tracker.clone(),
        replicas.clone(),
    );
    warn_if_open(&state, addr);
    let router = app::router(state.clone());

    #[cfg(unix)]
    if let Some(path) = config_path {
        // Not on the tracker: reloading records nothing, and must not hold up shutdown.
        tokio::spawn(reload_on_sighup(state.clone(), path, addr));
    }
    #[cfg(not(unix))]
    let _ = config_path;

    on_listening(addr);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if let Some(r) = &state.gateway.load().config.redis {
        let b = crate::policy::broadcast::Broadcast::new(r).context("connecting to redis.url")?;
        if r.share_breakers {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            crate::router::health::share_breakers(tx);
            // Not on the tracker: it records nothing; it ends with the process.
            tokio::spawn(b.clone().publish_breakers(rx));
        }
        gov.join_fleet(b, state.clone(), stop_rx.clone());
    }
    // Fleet mode with the Redis cache: every replica's semantic index follows the others'.
    if let Some(r) = state.cache.redis().cloned() {
        let app = state.clone();
        let index: std::sync::Arc<dyn Fn(crate::cache::redis::SemanticShare) + Send + Sync> =
            std::sync::Arc::new(move |e| {
                let (Ok(context), Ok(key)) = (hex::decode(&e.context), hex::decode(&e.key)) else {
                    return;
                };
                let (Ok(context), Ok(key)) = (context.try_into(), key.try_into()) else {
                    return;
                };
                app.semantic.insert_parts(
                    context,
                    e.critical,
                    e.vector.into(),
                    key,
                    std::time::Duration::from_millis(e.ttl_ms),
                );
            });
        // Not on the tracker: it records nothing.
        tokio::spawn(r.follow_semantic(index, stop_rx.clone()));
    }
    // Not on the tracker: it records nothing.
    tokio::spawn(replicas.heartbeat_until(state.clone(), stop_rx.clone()));
    // Not on the tracker: it records nothing, and stops with the stop signal.
    tokio::spawn(gov.refresh_until(stop_rx.clone(), state.sink.replays()));
    // Active health checks (providers with `health_check`); also off the tracker.
    tokio::spawn(crate::router::probe::run(state.clone(), stop_rx.clone()));
    // Not on the tracker either: deleting expired compliance content can wait for next time.
    tokio::spawn(purge_expired_content(state.clone(), stop_rx.clone()));
    tokio::spawn(usage_maintenance(state.clone(), stop_rx.clone()));
    let state_for_signal = state.clone();
    tokio::spawn(async move {
        shutdown.await;
        state_for_signal.shutting_down.store(true, Ordering::SeqCst);
        tracing::info!("shutting down: no new connections; draining for up to {drain:?}");
        let _ = stop_tx.send(true);
    });
    let edge = state.gateway.load().config.server.edge.clone();
    let server = crate::edge::serve(listener, router, edge, stop_rx.clone());
    let mut stop_for_drain = stop_rx;
    let drain_deadline = async move {
        let _ = stop_for_drain.wait_for(|s| *s).await;
        tokio::time::sleep(drain).await;
    };
    tokio::select! {
        () = server => {},
        () = drain_deadline => {
            tracing::warn!("drain timeout reached; closing the remaining connections");
            // Requests and streams still open record themselves (`drain_timeout`) before
            // the usage writer closes.
            state.drain_expired.cancel();
            let open_until = std::time::Instant::now() + std::time::Duration::from_secs(2);
            while crate::api::settle::open_ledgers() > 0 && std::time::Instant::now() < open_until {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }

    // Settles still queued for Redis go out (leases freed, spend counted) before exit;
    // a Redis that does not answer gets two seconds (leases lapse, spend is re-seeded).
    if tokio::time::timeout(std::time::Duration::from_secs(2), state.gov.limits.flush())
        .await
        .is_err()
    {
        tracing::warn!("shared limits: settles still queued at exit were not sent");
    }
    // Post-response work (usage records) is flushed before exit.
    tracing::debug!("connections closed; flushing usage records");
    tracker.close();
    writer.close().await;
    tracing::debug!("usage records flushed");
    tracker.wait().await;
    // Buffered trace spans go out before exit.
    let _ = tokio::task::spawn_blocking(crate::telemetry::otel::shutdown).await;
    tracing::info!("shutdown complete");
    Ok(())
}

/// Compliance logging's retention: deletes stored prompts and answers older than
/// `usage.compliance.retention`, at start and then every tenth of the retention (at most
/// hourly, at least every second).
async fn purge_expired_content(state: AppState, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        let retention = state.gateway.load().config.usage.compliance.retention;
        let cutoff = app::unix_ms() - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX / 2);
        match state.store.purge_content(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(records = n, "purged compliance content past its retention"),
            Err(e) => tracing::warn!("purging compliance content: {e}"),
        }
        // Content waiting in the spill file is covered by the same retention.
        match state.sink.purge_spilled_content(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                records = n,
                "purged compliance content past its retention from the spill file"
            ),
            Err(e) => tracing::warn!("purging compliance content from the spill file: {e}"),
        }
        let every = (retention / 10).clamp(
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(3600),
        );
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Usage storage upkeep. Every `usage.maintenance_interval`: the roller folds the records
/// older than `usage.rollup_delay` into the rollups. Every twelfth pass: the rollup rows of closed
/// buckets are merged, then `usage.retention` applies to raw records (and their content and
/// feedback) and the rollup retentions to rollups, in chunks of a few thousand rows so that
/// the usage writer is never held up for long. Interrupted work resumes on the next pass.
async fn usage_maintenance(state: AppState, mut stop: tokio::sync::watch::Receiver<bool>) {
    use crate::config::usage::ms;
    use crate::store::rollup;
    const CHUNK: i64 = 5000;
    let mut pass = 0u64;
    loop {
        // Records of requests longer than the delay arrive behind the horizon and are added
        // to the rollups by the writer itself; queries read the records after it raw.
        let (every, delay, retention, minutes, rollups) = {
            let u = &state.gateway.load().config.usage;
            (
                u.maintenance_interval,
                u.rollup_delay,
                u.retention,
                u.rollup_minute_retention,
                u.rollup_retention,
            )
        };
        let now = app::unix_ms();
        // PostgreSQL: today's and the next two days' partitions exist before their records.
        crate::store::partitions::ensure(&state.store, (0..3).map(|d| now + d * 86_400_000)).await;
        match rollup::roll(&state.store, now - ms(delay)).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(records = n, "usage records rolled up"),
            Err(e) => tracing::warn!("rolling up usage records: {e}"),
        }
        if pass.is_multiple_of(12) {
            upkeep(&state, now, retention, minutes, rollups, CHUNK).await;
        }
        pass += 1;
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }

    async fn upkeep(
        state: &AppState,
        now: i64,
        retention: std::time::Duration,
        minutes: std::time::Duration,
        rollups: std::time::Duration,
        chunk: i64,
    ) {
        // Merge at most a pass's worth of buckets; the rest waits for the next pass.
        match rollup::compact(&state.store, now, 20_000).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(buckets = n, "usage rollups compacted"),
            Err(e) => tracing::warn!("compacting usage rollups: {e}"),
        }
        match state.store.purge_usage(now - ms(retention), chunk).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(records = n, "usage records past usage.retention deleted"),
            Err(e) => tracing::warn!("applying usage.retention: {e}"),
        }
        match rollup::purge(&state.store, now - ms(minutes), now - ms(rollups), chunk).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "usage rollups past their retention deleted"),
            Err(e) => tracing::warn!("applying the rollup retentions: {e}"),
        }
    }
}

fn announce(cfg: &Config, addr: SocketAddr) {
    let models = cfg.models.len();
    let providers: Vec<&str> = cfg.providers.iter().map(|p| p.name.as_str()).collect();
    tracing::info!(
        "sluice {} on http://{addr} — {models} models from providers [{}], store {}",
        env!("CARGO_PKG_VERSION"),
        providers.join(", "),
        crate::config::redact_url(&cfg.store.url)
    );
    let unpriced = crate::router::unpriced(cfg);
    if !unpriced.is_empty() {
        tracing::warn!(
            "unpriced routes and deployments (budgeted keys get 403 model_unpriced unless \
             governance.unpriced: allow): {}",
            unpriced.join("; ")
        );
    }
}

/// Says loudly when the gateway serves without authentication (see `Shared::auth_open`:
/// no master key and a store that never held a key).
fn warn_if_open(state: &AppState, addr: SocketAddr) {
    if state.auth_open() {
        let scope = if addr.ip().is_loopback() {
            "loopback only"
        } else {
            "ALL INTERFACES (explicitly allowed)"
        };
        tracing::warn!(
            "!!! NO AUTHENTICATION: no master key is configured, anyone who can reach {addr} ({scope}) \
             can use every model. Set server.master_key or SLUICE_MASTER_KEY to require a key. !!!"
        );
    }
}

#[cfg(unix)]
async fn reload_on_sighup(state: AppState, path: PathBuf, bound: SocketAddr) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    loop {
        if hup.recv().await.is_none() {
            return;
        }
        match config::load(Some(&path), &config::process_env).map(apply_env_overrides) {
            Ok(new_cfg) => {
                let old = state.gateway.load();
                if let Err(e) = check_reload(&old.config, &new_cfg, bound) {
                    tracing::error!("reload refused, keeping the old config: {e}");
                    continue;
                }
                if new_cfg.server.listen != old.config.server.listen
                    || new_cfg.store.url != old.config.store.url
                {
                    tracing::warn!("server.listen and store.url changes take effect on restart");
                }
                let minutes = new_cfg.usage.rollup_minute_retention;
                match Gateway::build_after(new_cfg, Some(&old)) {
                    Ok(gw) => {
                        state.store.set_minute_retention(minutes);
                        state.gateway.store(std::sync::Arc::new(gw));
                        tracing::info!("configuration reloaded from {}", path.display());
                    }
                    Err(e) => tracing::error!("reload failed, keeping the old config: {e}"),
                }
            }
            Err(e) => tracing::error!("reload failed, keeping the old config:\n{e}"),
        }
    }
}

/// Settings that come from the environment when the config file leaves them out.
pub fn apply_env_overrides(mut cfg: Config) -> Config {
    if cfg.server.master_key.is_none() {
        if let Some(k) = std::env::var("SLUICE_MASTER_KEY")
            .ok()
            .filter(|k| !k.trim().is_empty())
        {
            cfg.server.master_key = Some(config::Secret::new(k));
        }
    }
    cfg
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
