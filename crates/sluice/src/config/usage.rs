//! The `usage:` section: how usage records are batched and spilled, and compliance logging
//! (who gets prompts and answers stored, redaction, retention).

use super::units::{parse_duration, positive_duration};
use super::ConfigError;
use crate::policy::content::detectors::Detector;
use crate::policy::content::{Action, Rule, Scope, Stage};
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUsage {
    pub queue_capacity: Option<usize>,
    pub batch_size: Option<usize>,
    pub flush_interval: Option<String>,
    pub store_timeout: Option<String>,
    pub retry_interval: Option<String>,
    /// Default: beside the SQLite file, `<db>.usage-spill.jsonl`.
    pub spill_path: Option<PathBuf>,
    /// Largest the spill file may grow (`1GiB` by default).
    pub spill_max_size: Option<super::raw::SizeOrText>,
    /// How long raw usage records (the request log) are kept (`30d` by default).
    pub retention: Option<String>,
    /// How long hour and day rollups are kept (`730d` by default).
    pub rollup_retention: Option<String>,
    /// How long minute rollups are kept (`2d` by default): time bounds of analytics are
    /// exact to the minute within it, to the hour before.
    pub rollup_minute_retention: Option<String>,
    /// How often records are rolled up (`5s` by default); rollups are compacted and
    /// retention applied every twelfth time.
    pub maintenance_interval: Option<String>,
    /// How old a record is before the roller folds it (`10s` by default).
    pub rollup_delay: Option<String>,
    #[serde(default)]
    pub compliance: RawCompliance,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCompliance {
    /// Teams whose requests are logged with prompt and answer.
    #[serde(default)]
    pub teams: Vec<String>,
    /// Virtual key ids whose requests are logged with prompt and answer.
    #[serde(default)]
    pub keys: Vec<String>,
    /// Built-in detectors whose matches are redacted before storing (`email`, ...).
    #[serde(default)]
    pub redact: Vec<String>,
    /// How long stored prompts and answers are kept (`30d`, `12h`); default 30 days.
    pub retention: Option<String>,
}

#[derive(Debug, Clone)]
pub struct UsageConfig {
    pub sink: crate::store::SinkConfig,
    pub compliance: ComplianceConfig,
    pub retention: Duration,
    pub rollup_retention: Duration,
    pub rollup_minute_retention: Duration,
    pub maintenance_interval: Duration,
    pub rollup_delay: Duration,
}

impl UsageConfig {
    /// What the rollups hold at `now_ms`, for query planning.
    pub fn kept(&self, now_ms: i64) -> crate::store::rollup::Kept {
        crate::store::rollup::Kept {
            minutes_from_ms: now_ms.saturating_sub(ms(self.rollup_minute_retention)),
        }
    }
}

/// A duration in milliseconds (saturating).
pub fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)
}

#[derive(Debug, Clone)]
pub struct ComplianceConfig {
    pub teams: Vec<String>,
    pub keys: Vec<String>,
    /// A redacting rule built from `redact`, or `None`.
    pub redact: Option<Arc<Rule>>,
    pub retention: Duration,
}

impl Default for UsageConfig {
    fn default() -> Self {
        Self {
            sink: crate::store::SinkConfig::default(),
            compliance: ComplianceConfig {
                teams: Vec::new(),
                keys: Vec::new(),
                redact: None,
                retention: DEFAULT_RETENTION,
            },
            retention: DEFAULT_RETENTION,
            rollup_retention: Duration::from_secs(730 * 86_400),
            rollup_minute_retention: Duration::from_secs(2 * 86_400),
            maintenance_interval: Duration::from_secs(5),
            rollup_delay: Duration::from_secs(10),
        }
    }
}

const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 86_400);

/// `30d` or anything [`parse_duration`] takes.
pub fn parse_days(text: &str) -> Result<Duration, String> {
    match text.trim().strip_suffix('d') {
        Some(n) => n
            .trim()
            .parse::<u64>()
            .map(|d| Duration::from_secs(d.saturating_mul(86_400)))
            .map_err(|_| format!("invalid duration {text:?}; use e.g. 30d, 12h")),
        None => parse_duration(text),
    }
}

pub fn validate(raw: RawUsage, errs: &mut Vec<ConfigError>) -> UsageConfig {
    let mut out = UsageConfig::default();
    let mut dur = |field: &str, v: Option<String>, default: Duration| {
        positive_duration(&format!("usage.{field}"), v.as_deref(), default, errs)
    };
    let d = crate::store::SinkConfig::default();
    out.sink.flush_interval = dur("flush_interval", raw.flush_interval, d.flush_interval);
    out.sink.store_timeout = dur("store_timeout", raw.store_timeout, d.store_timeout);
    out.sink.retry_interval = dur("retry_interval", raw.retry_interval, d.retry_interval);
    out.maintenance_interval = dur(
        "maintenance_interval",
        raw.maintenance_interval,
        Duration::from_secs(5),
    );
    out.rollup_delay = dur("rollup_delay", raw.rollup_delay, Duration::from_secs(10));
    for (field, v, slot) in [
        (
            "queue_capacity",
            raw.queue_capacity,
            &mut out.sink.queue_capacity,
        ),
        ("batch_size", raw.batch_size, &mut out.sink.batch_size),
    ] {
        match v {
            Some(0) => errs.push(ConfigError::new(
                format!("usage.{field}"),
                "must be at least 1",
            )),
            Some(n) => *slot = n,
            None => {}
        }
    }
    for (field, v, slot) in [
        ("retention", raw.retention, &mut out.retention),
        (
            "rollup_retention",
            raw.rollup_retention,
            &mut out.rollup_retention,
        ),
        (
            "rollup_minute_retention",
            raw.rollup_minute_retention,
            &mut out.rollup_minute_retention,
        ),
    ] {
        match v.as_deref().map(parse_days) {
            None => {}
            Some(Ok(d)) if !d.is_zero() => *slot = d,
            Some(Ok(_)) => errs.push(ConfigError::new(
                format!("usage.{field}"),
                "must be more than 0",
            )),
            Some(Err(e)) => errs.push(ConfigError::new(format!("usage.{field}"), e)),
        }
    }
    if out.rollup_retention < out.retention {
        errs.push(ConfigError::new(
            "usage.rollup_retention",
            format!(
                "must be at least usage.retention ({}d): analytics and budgets read rollups",
                out.retention.as_secs() / 86_400
            ),
        ));
    }
    // The default (beside the database) is set at start, after `--store` is applied.
    out.sink.spill_path = raw.spill_path;
    match raw.spill_max_size {
        None => {}
        Some(super::raw::SizeOrText::Int(n)) => out.sink.spill_max_bytes = n,
        Some(super::raw::SizeOrText::Text(t)) => match super::units::parse_bytes(&t) {
            Ok(n) => out.sink.spill_max_bytes = n,
            Err(e) => errs.push(ConfigError::new("usage.spill_max_size", e)),
        },
    }

    let c = raw.compliance;
    out.compliance.teams = c.teams;
    out.compliance.keys = c.keys;
    if let Some(r) = c.retention {
        match parse_days(&r) {
            Ok(d) if !d.is_zero() => out.compliance.retention = d,
            Ok(_) => errs.push(ConfigError::new(
                "usage.compliance.retention",
                "must be more than 0",
            )),
            Err(e) => errs.push(ConfigError::new("usage.compliance.retention", e)),
        }
    }
    let mut detectors = Vec::new();
    for (i, name) in c.redact.iter().enumerate() {
        match Detector::builtin(name) {
            Some(d) if d.has_spans() => detectors.push(d),
            _ => errs.push(ConfigError::new(
                format!("usage.compliance.redact[{i}]"),
                format!("unknown detector {name:?}; use one of email, phone, payment_card, iban, ssn, ip, secrets"),
            )),
        }
    }
    if !detectors.is_empty() {
        out.compliance.redact = Some(Arc::new(Rule {
            name: Arc::from("compliance_redact"),
            stage: Stage::Both,
            detectors,
            action: Action::Redact,
            scope: Scope::default(),
            scan_tools: true,
        }));
    }
    out
}

/// `sqlite://path/x.db` -> `path/x.db.usage-spill.jsonl`; PostgreSQL ->
/// `sluice-usage-spill.jsonl` in the working directory (replicas sharing a directory set
/// `usage.spill_path` each); in-memory stores spill nowhere.
pub fn default_spill_path(store_url: &str) -> Option<PathBuf> {
    if store_url.contains(":memory:") {
        return None;
    }
    if store_url.starts_with("postgres://") || store_url.starts_with("postgresql://") {
        return Some(PathBuf::from("sluice-usage-spill.jsonl"));
    }
    let path = store_url
        .strip_prefix("sqlite://")
        .or_else(|| store_url.strip_prefix("sqlite:"))?;
    let path = path.split('?').next()?;
    (!path.is_empty()).then(|| PathBuf::from(format!("{path}.usage-spill.jsonl")))
}
