//! The request's ledger: opened when the request arrives, it owns the usage record and the
//! admission's reservation, and closes exactly once on every path — an answer, an error, a
//! refusal, the client hanging up at any point, shutdown's drain running out, a panic — in
//! `Drop` when nothing else closed it. Closing prices what the provider can bill (the charging
//! rules in docs/governance.md), trues up the reservation and sends one record to the sink.

use crate::api::RequestCtx;
use crate::canonical::Usage;
use crate::config::usage::ComplianceConfig;
use crate::error::ApiError;
use crate::policy::auth::Principal;
use crate::policy::content::{scan, Rule, Vault};
use crate::policy::governance::Admission;
use crate::policy::governance::Governance;
use crate::policy::prices::Price;
pub use crate::store::AttemptLine;
use crate::store::{Content, UsageRecord, UsageSink};
use crate::telemetry::otel::RequestTrace;
use std::sync::Arc;
use std::time::Instant;

pub struct Ledger {
    sink: UsageSink,
    start: Instant,
    pub rec: UsageRecord,
    /// Closed (recorded and settled); `Drop` then does nothing.
    closed: bool,
    /// A provider was sent the request (so it may bill the prompt).
    sent: bool,
    /// Estimated prompt tokens, charged at the input price when the provider reports none.
    pub prompt_estimate: u64,
    /// Output tokens counted from what was streamed, when the provider reports none.
    pub streamed_output: u64,
    /// `governance.unpriced: allow`: an unpriced model's cost is unknown (null), not 0.
    pub unpriced_allowed: bool,
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

/// Ledgers not yet closed, in this process (shutdown waits for them after its drain).
static OPEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// How many requests are still open (their ledgers not closed).
pub fn open_ledgers() -> usize {
    OPEN.load(std::sync::atomic::Ordering::Relaxed)
}

/// The status and class of a request whose client went away before it was answered.
pub const CLIENT_DISCONNECTED: (u16, &str) = (499, "client_disconnected");

impl Ledger {
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
        OPEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self {
            sink,
            start: ctx.start,
            rec,
            closed: false,
            sent: false,
            prompt_estimate: 0,
            streamed_output: 0,
            unpriced_allowed: false,
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

    /// The request went out to a provider: from now on its prompt may be billed.
    pub fn mark_sent(&mut self) {
        self.sent = true;
    }

    /// Adds one attempt that did not answer the client (retried, timed out, a hedge loser)
    /// as a line of the record, charged by the rules: a provider that was sent the prompt
    /// and did not refuse it may bill the prompt.
    pub fn add_attempt(&mut self, mut line: AttemptLine, price: Option<Price>) {
        if line.billed {
            let u = Usage {
                input_tokens: self.prompt_estimate,
                ..Usage::default()
            };
            line.input_tokens = Some(self.prompt_estimate);
            line.cost_micro_usd = price.map(|p| p.cost(&u));
        }
        self.rec.attempt_log.push(line);
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

    /// Closes the ledger with the request's final status.
    pub fn finish(mut self, status: u16, error_class: Option<&'static str>) {
        self.close(status, error_class);
    }

    pub fn finish_error(self, err: &ApiError) {
        let status = err.status_code().as_u16();
        self.finish(status, Some(err.class()));
    }

    /// What the provider can bill for the answering (or abandoned) attempt: its reported
    /// usage; else, once the prompt was sent and not refused, the prompt estimate plus the
    /// output counted from the stream so far. Refusals and upstream errors bill nothing.
    fn billable(&self, status: u16, error_class: Option<&str>) -> Option<Usage> {
        if self.usage.is_some() {
            return self.usage;
        }
        let provider_may_bill = self.sent
            && (status < 400
                || status == CLIENT_DISCONNECTED.0
                || matches!(
                    error_class,
                    Some(
                        "upstream_timeout"
                            | "upstream_stream_idle"
                            | "upstream_total_timeout"
                            | "drain_timeout"
                    )
                ));
        provider_may_bill.then(|| Usage {
            input_tokens: self.prompt_estimate,
            output_tokens: self.streamed_output,
            ..Usage::default()
        })
    }

    fn close(&mut self, status: u16, error_class: Option<&'static str>) {
        if std::mem::replace(&mut self.closed, true) {
            return;
        }
        OPEN.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        self.rec.status = status;
        self.rec.error_class = error_class;
        self.rec.latency_us = self.micros_since_start(Instant::now());
        let usage = self.billable(status, error_class);
        if usage.is_some() && self.usage.is_none() {
            // Estimated: recorded so that the record's tokens explain its cost.
            self.set_usage(usage);
        }
        let attempts_cost = self
            .rec
            .attempt_log
            .iter()
            .map(|a| a.cost_micro_usd)
            .try_fold(0i64, |sum, c| c.map(|c| sum.saturating_add(c)));
        let attempts_tokens: u64 = self
            .rec
            .attempt_log
            .iter()
            .filter_map(|a| a.input_tokens)
            .fold(0, u64::saturating_add);
        let own_cost = match (usage, self.price) {
            (Some(u), Some(p)) => Some(p.cost(&u)),
            (None, _) => Some(0),
            // Unpriced (only reachable when allowed, or for an unbudgeted caller): unknown.
            (Some(_), None) => None,
        };
        let billed_somewhere = usage.is_some() || !self.rec.attempt_log.is_empty();
        // Nothing billed: no cost (not 0). Any unpriced billed part: unknown.
        let cost = own_cost
            .zip(attempts_cost)
            .filter(|_| billed_somewhere)
            .map(|(a, b)| a.saturating_add(b));
        if cost.is_none() && billed_somewhere {
            crate::telemetry::metrics::unpriced_request();
        }
        self.rec.cost_micro_usd = cost;
        if let Some(a) = self.admission.take() {
            let tokens = usage
                .map_or(0, |u| u.input_tokens.saturating_add(u.output_tokens))
                .saturating_add(attempts_tokens);
            a.settle(tokens, cost.unwrap_or(0));
        }
        if let Some(c) = self.capture.take() {
            self.rec.content = Some(Box::new(c.into_content()));
        }
        let rec = std::mem::take(&mut self.rec);
        crate::telemetry::metrics::record(&rec);
        if let Some(t) = self.trace.take() {
            t.finish(&rec);
        }
        self.sink.record(rec);
    }
}

impl Drop for Ledger {
    /// Nothing else closed it: the client went away (hyper dropped the handler or the
    /// response body), shutdown's drain ran out, or the handler panicked.
    fn drop(&mut self) {
        if !self.closed {
            let (status, class) = if std::thread::panicking() {
                (500, "internal_error")
            } else {
                CLIENT_DISCONNECTED
            };
            self.close(status, Some(class));
        }
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
