//! Prometheus metrics: one process-wide recorder, fed from the settle step (one place sees
//! every request), rendered by `GET /metrics`.

use crate::store::UsageRecord;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

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

/// Counts one finished request. Label values are bounded: the model label is the requested
/// name only when it was a configured route (a 404 is `unknown`), never free text.
pub fn record(rec: &UsageRecord) {
    if HANDLE.get().is_none_or(Option::is_none) {
        return;
    }
    let model = if rec.error_class == Some("model_not_found") || rec.requested_model.is_empty() {
        "unknown".to_string()
    } else {
        rec.requested_model.clone()
    };
    let provider = rec.provider.as_deref().unwrap_or("none").to_string();
    let status = status_class(rec.status);
    metrics::counter!(
        "sluice_requests_total",
        "surface" => rec.surface,
        "model" => model.clone(),
        "provider" => provider.clone(),
        "status" => status,
        "error" => rec.error_class.unwrap_or("none"),
    )
    .increment(1);
    metrics::histogram!(
        "sluice_request_duration_seconds",
        "surface" => rec.surface,
        "model" => model.clone(),
        "provider" => provider.clone(),
    )
    .record(rec.latency_us as f64 / 1e6);
    if let Some(t) = rec.ttft_us {
        metrics::histogram!("sluice_time_to_first_token_seconds", "model" => model.clone(), "provider" => provider.clone())
            .record(t as f64 / 1e6);
    }
    if let Some(o) = rec.overhead_us {
        metrics::histogram!("sluice_overhead_seconds", "surface" => rec.surface)
            .record(o as f64 / 1e6);
    }
    for (kind, n) in [("input", rec.input_tokens), ("output", rec.output_tokens)] {
        if let Some(n) = n.filter(|n| *n > 0) {
            metrics::counter!("sluice_tokens_total", "model" => model.clone(), "provider" => provider.clone(), "kind" => kind)
                .increment(n);
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

fn status_class(status: u16) -> &'static str {
    match status {
        200..=299 => "2xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    }
}
