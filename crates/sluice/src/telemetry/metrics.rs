//! Prometheus metrics: one process-wide recorder, fed from the settle step (one place sees
//! every request), rendered by `GET /metrics`.

use crate::store::UsageRecord;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];
const OVERHEAD_BUCKETS: &[f64] = &[
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.0025, 0.005, 0.01,
];

/// Installs the recorder once per process; later calls return the same handle.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("sluice_request_duration_seconds".into()),
                    LATENCY_BUCKETS,
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("sluice_time_to_first_token_seconds".into()),
                        LATENCY_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("sluice_overhead_seconds".into()),
                        OVERHEAD_BUCKETS,
                    )
                });
            match builder.and_then(PrometheusBuilder::install_recorder) {
                Ok(h) => Some(h),
                Err(e) => {
                    tracing::warn!("metrics disabled: {e}");
                    None
                }
            }
        })
        .clone()
}

/// Histogram samples are buffered until drained: drain them every second, or memory grows
/// with every request (the exporter's own HTTP listener would do this; we serve /metrics).
pub fn spawn_upkeep() {
    if let Some(Some(handle)) = HANDLE.get() {
        let handle = handle.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tick.tick().await;
                handle.run_upkeep();
            }
        });
    }
}

/// The Prometheus text exposition, or `None` when no recorder is installed.
pub fn render() -> Option<String> {
    HANDLE
        .get()
        .and_then(|h| h.as_ref())
        .map(PrometheusHandle::render)
}

/// The handles for one label set. Looking a metric up by labels costs ~14k instructions
/// (key building, hashing, registry); an increment on a held handle is an atomic add.
struct Handles {
    requests: metrics::Counter,
    duration: metrics::Histogram,
    ttft: metrics::Histogram,
    overhead: metrics::Histogram,
    tokens_in: metrics::Counter,
    tokens_out: metrics::Counter,
    tokens_cached: metrics::Counter,
    tokens_cache_write: metrics::Counter,
    tokens_reasoning: metrics::Counter,
    cost: metrics::Counter,
    retries: metrics::Counter,
    tokens_per_second: metrics::Histogram,
}

#[derive(Hash, PartialEq, Eq)]
struct LabelSet {
    surface: &'static str,
    model: String,
    provider: String,
    status: &'static str,
    error: &'static str,
}

/// Label sets are bounded by configured names, status and error classes, except under
/// wildcard routes (`prefix/*`), where the cap folds new model names into `other`.
const MAX_CACHED: usize = 10_000;

static CACHE: OnceLock<Mutex<HashMap<LabelSet, Arc<Handles>>>> = OnceLock::new();

fn handles(mut l: LabelSet) -> Arc<Handles> {
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Ok(map) = cache.lock() {
        if let Some(h) = map.get(&l) {
            return h.clone();
        }
        // Wildcard routes take any model name: past the cap, new names share one series.
        if map.len() >= MAX_CACHED {
            l.model = "other".to_string();
            if let Some(h) = map.get(&l) {
                return h.clone();
            }
        }
    }
    let (surface, model, provider) = (l.surface, l.model.clone(), l.provider.clone());
    let h = Arc::new(Handles {
        requests: metrics::counter!(
            "sluice_requests_total",
            "surface" => surface,
            "model" => model.clone(),
            "provider" => provider.clone(),
            "status" => l.status,
            "error" => l.error,
        ),
        duration: metrics::histogram!(
            "sluice_request_duration_seconds",
            "surface" => surface,
            "model" => model.clone(),
            "provider" => provider.clone(),
        ),
        ttft: metrics::histogram!(
            "sluice_time_to_first_token_seconds",
            "model" => model.clone(),
            "provider" => provider.clone(),
        ),
        overhead: metrics::histogram!("sluice_overhead_seconds", "surface" => surface),
        tokens_in: metrics::counter!(
            "sluice_tokens_total",
            "model" => model.clone(),
            "provider" => provider.clone(),
            "kind" => "input",
        ),
        tokens_out: metrics::counter!(
            "sluice_tokens_total",
            "model" => model.clone(),
            "provider" => provider.clone(),
            "kind" => "output",
        ),
        tokens_cached: metrics::counter!(
            "sluice_tokens_total",
            "model" => model.clone(),
            "provider" => provider.clone(),
            "kind" => "cached_input",
        ),
        tokens_cache_write: metrics::counter!(
            "sluice_tokens_total",
            "model" => model.clone(),
            "provider" => provider.clone(),
            "kind" => "cache_write",
        ),
        tokens_reasoning: metrics::counter!(
            "sluice_tokens_total",
            "model" => model.clone(),
            "provider" => provider.clone(),
            "kind" => "reasoning",
        ),
        cost: metrics::counter!(
            "sluice_cost_micro_usd_total",
            "model" => model.clone(),
            "provider" => provider.clone(),
        ),
        retries: metrics::counter!(
            "sluice_retries_total",
            "model" => model.clone(),
            "provider" => provider.clone(),
        ),
        tokens_per_second: metrics::histogram!(
            "sluice_output_tokens_per_second",
            "model" => model,
            "provider" => provider,
        ),
    });
    if let Ok(mut map) = cache.lock() {
        if map.len() < MAX_CACHED || l.model == "other" {
            map.insert(l, h.clone());
        }
    }
    h
}

/// Counts one finished request. Label values are bounded: the model label is the requested
/// name only when the request was routed to a provider (otherwise `unknown`), never free text.
pub fn record(rec: &UsageRecord) {
    if HANDLE.get().is_none_or(Option::is_none) {
        return;
    }
    let (model, provider) = match rec.provider.as_deref() {
        Some(p) => (rec.requested_model.clone(), p.to_string()),
        None => ("unknown".to_string(), "none".to_string()),
    };
    let h = handles(LabelSet {
        surface: rec.surface,
        model,
        provider,
        status: status_class(rec.status),
        error: rec.error_class.unwrap_or("none"),
    });
    h.requests.increment(1);
    h.duration.record(rec.latency_us as f64 / 1e6);
    if let Some(t) = rec.ttft_us {
        h.ttft.record(t as f64 / 1e6);
    }
    if let Some(o) = rec.overhead_us {
        h.overhead.record(o as f64 / 1e6);
    }
    if let Some(n) = rec.input_tokens.filter(|n| *n > 0) {
        h.tokens_in.increment(n);
    }
    if let Some(n) = rec.output_tokens.filter(|n| *n > 0) {
        h.tokens_out.increment(n);
        // Generation speed: output tokens over the time after the first token (streams) or
        // the whole request (JSON answers).
        let gen_us = rec
            .latency_us
            .saturating_sub(rec.ttft_us.unwrap_or(0))
            .max(1);
        if rec.status < 400 {
            h.tokens_per_second.record(n as f64 * 1e6 / gen_us as f64);
        }
    }
    for (n, c) in [
        (rec.cached_input_tokens, &h.tokens_cached),
        (rec.cache_write_tokens, &h.tokens_cache_write),
        (rec.reasoning_tokens, &h.tokens_reasoning),
    ] {
        if let Some(n) = n.filter(|n| *n > 0) {
            c.increment(n);
        }
    }
    if let Some(c) = rec.cost_micro_usd.filter(|c| *c > 0) {
        h.cost.increment(c.unsigned_abs());
    }
    if rec.attempts > 1 {
        h.retries.increment(u64::from(rec.attempts - 1));
    }
    if let Some(reason) = rec.fallback_reason {
        metrics::counter!(
            "sluice_fallbacks_total",
            "model" => h_model(rec),
            "reason" => reason,
        )
        .increment(1);
    }
    if rec.status >= 400 {
        if let (Some(provider), Some(class)) = (rec.provider.as_deref(), rec.error_class) {
            if rec.attempts > 0 {
                metrics::counter!(
                    "sluice_upstream_errors_total",
                    "provider" => provider.to_string(),
                    "class" => class,
                )
                .increment(1);
            }
        }
        if let Some(
            reason @ ("rate_limited"
            | "budget_exceeded"
            | "model_not_allowed"
            | "content_policy_violation"),
        ) = rec.error_class
        {
            metrics::counter!("sluice_rejections_total", "reason" => reason).increment(1);
        }
    }
    for hit in &rec.policy_hits {
        metrics::counter!(
            "sluice_policy_hits_total",
            "rule" => hit.rule.to_string(),
            "action" => hit.action,
            "stage" => hit.stage,
        )
        .increment(u64::from(hit.count));
    }
}

fn h_model(rec: &UsageRecord) -> String {
    if rec.provider.is_some() {
        rec.requested_model.clone()
    } else {
        "unknown".to_string()
    }
}

/// Usage sink: records waiting in the queue.
pub fn usage_queue_depth(n: usize) {
    metrics::gauge!("sluice_usage_queue_depth").set(n as f64);
}

/// Usage sink: records written to the store.
pub fn usage_written(n: usize) {
    metrics::counter!("sluice_usage_records_written_total").increment(n as u64);
}

/// Usage sink: records appended to the spill file (store slow or down, or queue full).
pub fn usage_spilled(n: usize) {
    metrics::counter!("sluice_usage_spilled_total").increment(n as u64);
}

/// Usage sink: spilled records replayed into the store.
pub fn usage_replayed(n: usize) {
    metrics::counter!("sluice_usage_replayed_total").increment(n as u64);
}

/// A billed request on a model without a price (`governance.unpriced: allow`, or a caller
/// without a budget): its cost is recorded as unknown.
/// One counter handle, kept: this runs on every request to an unpriced model (the model
/// breakdown is in `/admin/usage`'s `unpriced_requests`).
pub fn unpriced_request() {
    static COUNTER: std::sync::OnceLock<metrics::Counter> = std::sync::OnceLock::new();
    if HANDLE.get().is_none_or(Option::is_none) {
        return;
    }
    COUNTER
        .get_or_init(|| metrics::counter!("sluice_unpriced_requests_total"))
        .increment(1);
}

/// The response cache: one lookup's outcome (`hit`, `miss`, `bypass`).
pub fn cache_lookup(outcome: &'static str) {
    if HANDLE.get().is_none_or(Option::is_none) {
        return;
    }
    metrics::counter!("sluice_cache_lookups_total", "outcome" => outcome).increment(1);
}

/// The response cache: an answer stored.
pub fn cache_stored() {
    if HANDLE.get().is_none_or(Option::is_none) {
        return;
    }
    metrics::counter!("sluice_cache_stores_total").increment(1);
}

/// The response cache: what a hit saved (the original answer's cost).
pub fn cache_saved(micro_usd: i64) {
    if HANDLE.get().is_none_or(Option::is_none) {
        return;
    }
    metrics::counter!("sluice_cache_saved_micro_usd_total").increment(micro_usd.unsigned_abs());
}

/// Usage sink: records lost (spill file unwritable, or no spill file).
pub fn usage_dropped(n: usize) {
    metrics::counter!("sluice_usage_dropped_total").increment(n as u64);
}

/// HTTP edge: connections turned away with a 503 at `server.max_connections`.
pub fn connection_refused() {
    metrics::counter!("sluice_connections_refused_total").increment(1);
}

/// Usage sink: compliance contents dropped from spilled records at `usage.spill_max_size`.
pub fn usage_spill_content_dropped(n: u64) {
    metrics::counter!("sluice_usage_spill_content_dropped_total").increment(n);
}

/// Circuit breaker state per deployment (0 closed, 1 half-open, 2 open), set at scrape time.
pub fn breaker_states(models: &crate::router::ModelTable) {
    use crate::router::health::BreakerState;
    for (provider, model, h) in models.health() {
        let v = match h.state() {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        };
        metrics::gauge!(
            "sluice_breaker_state",
            "provider" => provider.to_string(),
            "deployment" => model.to_string(),
        )
        .set(v);
    }
}

fn status_class(status: u16) -> &'static str {
    match status {
        200..=299 => "2xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    }
}

/// Shared limits: 1 while Redis is unreachable and this replica applies `redis.on_failure`.
pub fn redis_degraded(on: bool) {
    metrics::gauge!("sluice_redis_degraded").set(if on { 1.0 } else { 0.0 });
}

/// Shared limits: admissions decided without Redis (`redis.on_failure`).
pub fn redis_fallback_admission() {
    metrics::counter!("sluice_redis_fallback_admissions_total").increment(1);
}

/// The response cache: a lookup or store that failed (Redis away, a corrupt entry), served
/// as a miss (`bypass`).
pub fn cache_error(stage: &'static str) {
    if HANDLE.get().is_none_or(Option::is_none) {
        return;
    }
    metrics::counter!("sluice_cache_errors_total", "stage" => stage).increment(1);
}
