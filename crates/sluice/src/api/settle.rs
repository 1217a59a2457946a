//! The settle step's bookkeeping: one usage record per request, finished exactly once,
//! whether the request succeeded, failed, or the client went away mid-stream. It prices the
//! usage and trues up the request's limit and budget reservation.

use crate::api::RequestCtx;
use crate::canonical::Usage;
use crate::error::ApiError;
use crate::policy::auth::Principal;
use crate::policy::governance::Admission;
use crate::policy::prices::Price;
use crate::store::{UsageRecord, UsageSink};
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
}

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
        crate::telemetry::metrics::record(&self.rec);
        self.sink.record(self.rec);
    }

    pub fn finish_error(self, err: &ApiError) {
        let status = err.status_code().as_u16();
        self.finish(status, Some(err.class()));
    }
}
