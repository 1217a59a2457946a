//! The settle step's bookkeeping: one usage record per request, finished exactly once,
//! whether the request succeeded, failed, or the client went away mid-stream.

use crate::api::RequestCtx;
use crate::canonical::Usage;
use crate::error::ApiError;
use crate::store::{UsageRecord, UsageSink};
use std::time::Instant;

pub struct Settle {
    sink: UsageSink,
    start: Instant,
    pub rec: UsageRecord,
}

impl Settle {
    pub fn new(sink: UsageSink, ctx: &RequestCtx, surface: &'static str) -> Self {
        Self {
            sink,
            start: ctx.start,
            rec: UsageRecord {
                request_id: ctx.request_id.clone(),
                ts_ms: ctx.ts_ms,
                surface,
                principal: ctx.principal.label().to_string(),
                attempts: 0,
                ..UsageRecord::default()
            },
        }
    }

    pub fn set_usage(&mut self, usage: Option<Usage>) {
        if let Some(u) = usage {
            self.rec.input_tokens = Some(u.input_tokens);
            self.rec.output_tokens = Some(u.output_tokens);
            self.rec.cached_input_tokens = Some(u.cached_input_tokens);
            self.rec.reasoning_tokens = Some(u.reasoning_tokens);
        }
    }

    pub fn micros_since_start(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.start).as_micros()).unwrap_or(u64::MAX)
    }

    /// Records the request with its final status.
    pub fn finish(mut self, status: u16, error_class: Option<&'static str>) {
        self.rec.status = status;
        self.rec.error_class = error_class;
        self.rec.latency_us = self.micros_since_start(Instant::now());
        crate::telemetry::metrics::record(&self.rec);
        self.sink.record(self.rec);
    }

    pub fn finish_error(self, err: &ApiError) {
        let status = err.status_code().as_u16();
        self.finish(status, Some(err.class()));
    }
}
