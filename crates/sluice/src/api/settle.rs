//! The settle step's bookkeeping: one usage record per request, finished exactly once,
//! whether the request succeeded, failed, or the client went away mid-stream. It prices the
//! usage and trues up the request's limit and budget reservation.

use crate::api::RequestCtx;
use crate::canonical::Usage;
use crate::config::usage::ComplianceConfig;
use crate::error::ApiError;
use crate::policy::auth::Principal;
use crate::policy::content::{scan, Rule, Vault};
use crate::policy::governance::Admission;
use crate::policy::governance::Governance;
use crate::policy::prices::Price;
use crate::store::{Content, UsageRecord, UsageSink};
use crate::telemetry::otel::RequestTrace;
use std::sync::Arc;
use std::time::Instant;

pub struct Settle {
    sink: UsageSink,
    start: Instant,
    pub rec: UsageRecord,
    /// The reservation taken at admission, if any limit or budget applies.
    pub admission: Option<Admission>,
    /// The price of the deployment that answered.
    pub price: Option<Price>,
    usage: Option<Usage>,
    /// Prompt and answer text, kept only under compliance logging.
    capture: Option<Box<Capture>>,
    /// OpenTelemetry: what this request's spans are built from (tracing on only).
    pub trace: Option<Arc<RequestTrace>>,
}

/// Compliance logging's copy of the request and its answer.
struct Capture {
    prompt: Vec<u8>,
    response: Vec<u8>,
    redact: Option<Arc<Rule>>,
}

/// The most of a prompt or an answer compliance logging keeps (the rest is cut off).
const CAPTURE_LIMIT: usize = 4 << 20;

impl Settle {
    pub fn new(sink: UsageSink, ctx: &RequestCtx, surface: &'static str) -> Self {
        let mut rec = UsageRecord {
            request_id: ctx.request_id.clone(),
            ts_ms: ctx.ts_ms,
            surface,
            principal: ctx.principal.label().to_string(),
            attempts: 0,
            ..UsageRecord::default()
        };
        if let Principal::Key(k) = &ctx.principal {
            rec.key_id = Some(k.id.clone());
            rec.key_prefix = Some(k.prefix.clone());
            rec.team.clone_from(&k.team);
            rec.user.clone_from(&k.user);
            rec.tags.clone_from(&k.tags);
        }
        Self {
            sink,
            start: ctx.start,
            rec,
            admission: None,
            price: None,
            usage: None,
            capture: None,
            trace: None,
        }
    }

    /// Ends a pipeline step (for its trace span).
    pub fn mark(&self, step: &'static str) {
        if let Some(t) = &self.trace {
            t.mark(step);
        }
    }

    /// Starts keeping the prompt and answer (compliance logging applies to this caller).
    pub fn start_capture(&mut self, prompt: &[u8], redact: Option<Arc<Rule>>) {
        self.capture = Some(Box::new(Capture {
            prompt: prompt[..prompt.len().min(CAPTURE_LIMIT)].to_vec(),
            response: Vec::new(),
            redact,
        }));
    }

    /// Appends what the client received (no-op without compliance logging).
    pub fn capture(&mut self, chunk: &[u8]) {
        if let Some(c) = self.capture.as_mut() {
            let room = CAPTURE_LIMIT.saturating_sub(c.response.len());
            c.response
                .extend_from_slice(&chunk[..chunk.len().min(room)]);
        }
    }

    pub fn set_catalog(&mut self, price: Option<Price>, version: &Arc<str>) {
        self.price = price;
        self.rec.catalog_version = Some(version.clone());
    }

    pub fn set_usage(&mut self, usage: Option<Usage>) {
        if let Some(u) = usage {
            self.rec.input_tokens = Some(u.input_tokens);
            self.rec.output_tokens = Some(u.output_tokens);
            self.rec.cached_input_tokens = Some(u.cached_input_tokens);
            self.rec.reasoning_tokens = Some(u.reasoning_tokens);
            self.rec.cache_write_tokens = Some(u.cache_write_tokens);
            self.usage = Some(u);
        }
    }

    pub fn micros_since_start(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.start).as_micros()).unwrap_or(u64::MAX)
    }

    /// Records the request with its final status and settles its reservation.
    pub fn finish(mut self, status: u16, error_class: Option<&'static str>) {
        self.rec.status = status;
        self.rec.error_class = error_class;
        self.rec.latency_us = self.micros_since_start(Instant::now());
        let cost = match (self.usage, self.price) {
            (Some(u), Some(p)) => Some(p.cost(&u)),
            (Some(_), None) => Some(0),
            (None, _) => None,
        };
        self.rec.cost_micro_usd = cost;
        if let Some(a) = self.admission.take() {
            let (tokens, charged) = match (self.usage, cost) {
                (Some(u), Some(c)) => (u.input_tokens + u.output_tokens, c),
                // The upstream may have worked without telling us how much: assume the worst
                // case we reserved rather than let unmetered requests slip past a budget.
                _ if status < 400 || status == 499 => {
                    // Recorded as charged, so the books (and a restart's reload) agree.
                    self.rec.cost_micro_usd = Some(a.reserved_cost());
                    (a.reserved_tokens(), a.reserved_cost())
                }
                _ => (0, 0),
            };
            a.settle(tokens, charged);
        }
        if let Some(c) = self.capture.take() {
            self.rec.content = Some(Box::new(c.into_content()));
        }
        crate::telemetry::metrics::record(&self.rec);
        if let Some(t) = self.trace.take() {
            t.finish(&self.rec);
        }
        self.sink.record(self.rec);
    }

    pub fn finish_error(self, err: &ApiError) {
        let status = err.status_code().as_u16();
        self.finish(status, Some(err.class()));
    }
}

impl Capture {
    fn into_content(self) -> Content {
        let redact = self.redact.clone();
        let text = |b: Vec<u8>| {
            let t = String::from_utf8(b)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
            match &redact {
                Some(rule) => scan::apply(rule, &t, &mut Vault::default())
                    .rewritten
                    .unwrap_or(t),
                None => t,
            }
        };
        let Capture {
            prompt, response, ..
        } = self;
        Content {
            prompt: text(prompt),
            response: text(response),
        }
    }
}

fn flag_on(meta: &serde_json::Map<String, serde_json::Value>) -> bool {
    match meta.get("compliance_log") {
        Some(serde_json::Value::Bool(b)) => *b,
        Some(serde_json::Value::String(s)) => s == "true",
        _ => false,
    }
}

/// Whether compliance logging keeps this caller's prompts and answers: its key or team is
/// listed in `usage.compliance`, or has `compliance_log: true` in its metadata (admin API).
pub fn compliance_applies(cfg: &ComplianceConfig, gov: &Governance, p: &Principal) -> bool {
    let Principal::Key(k) = p else {
        return false;
    };
    if cfg.keys.iter().any(|id| **id == *k.id) || flag_on(&k.record.metadata) {
        return true;
    }
    let Some(team) = k.team.as_deref() else {
        return false;
    };
    cfg.teams.iter().any(|t| t == team)
        || gov.index().team(team).is_some_and(|t| flag_on(&t.metadata))
}
