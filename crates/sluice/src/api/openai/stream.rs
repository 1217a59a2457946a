//! The response side of a streamed passthrough: forwards each upstream chunk the moment it
//! arrives, reads usage from the final event, enforces the idle timeout, and settles the
//! usage record when the stream ends, fails, or the client goes away.

use crate::api::settle::Settle;
use crate::canonical::usage::{from_openai_json, Usage};
use crate::policy::content::stream::{error_event, EventAction, StreamGuard};
use crate::policy::content::PolicyHit;
use crate::providers::{BodyError, UpstreamBody};
use crate::router::health::InFlight;
use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame};
use memchr::memmem;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Longest line we keep while looking for usage; longer lines are forwarded, not inspected.
const MAX_LINE: usize = 4 << 20;

/// Reads SSE lines as they pass. In strip mode (we asked the upstream for usage the client
/// did not request) it holds back at most one event, to drop the usage-only event. With a
/// content guard it also works event by event, and the guard rewrites or ends the stream.
pub struct SseScanner {
    strip_usage_event: bool,
    guard: Option<StreamGuard>,
    /// The `data:` payload of the event being read (guard mode only).
    data: Vec<u8>,
    /// A guard blocked the stream: the error event was the last thing sent.
    pub blocked: bool,
    line: Vec<u8>,
    line_overflow: bool,
    event: BytesMut,
    drop_event: bool,
    pub usage: Option<Usage>,
    pub saw_done: bool,
}

impl SseScanner {
    pub fn new(strip_usage_event: bool, guard: Option<StreamGuard>) -> Self {
        Self {
            strip_usage_event,
            guard,
            data: Vec::new(),
            blocked: false,
            line: Vec::new(),
            line_overflow: false,
            event: BytesMut::new(),
            drop_event: false,
            usage: None,
            saw_done: false,
        }
    }

    /// True when output goes event by event (not chunk by chunk).
    fn buffered(&self) -> bool {
        self.strip_usage_event || self.guard.is_some()
    }

    /// Policy hits of the output guard so far.
    pub fn take_hits(&mut self) -> Vec<PolicyHit> {
        self.guard
            .as_mut()
            .map(|g| std::mem::take(&mut g.hits))
            .unwrap_or_default()
    }

    /// Takes one upstream chunk, returns what to send to the client now.
    pub fn feed(&mut self, chunk: Bytes) -> Bytes {
        if self.blocked {
            return Bytes::new();
        }
        let mut out = if self.buffered() {
            BytesMut::with_capacity(chunk.len())
        } else {
            BytesMut::new()
        };
        let mut start = 0;
        for nl in memchr::memchr_iter(b'\n', &chunk) {
            let piece = &chunk[start..nl];
            if self.line.is_empty() {
                self.on_line(piece, &mut out);
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(piece);
                self.on_line(&line, &mut out);
                line.clear();
                self.line = line;
            }
            self.line_overflow = false;
            start = nl + 1;
            if self.blocked {
                return out.freeze();
            }
        }
        let rest = &chunk[start..];
        if !rest.is_empty() {
            if self.line.len() + rest.len() <= MAX_LINE {
                self.line.extend_from_slice(rest);
            } else {
                self.line_overflow = true;
                self.line.clear();
            }
        }
        if self.buffered() {
            out.freeze()
        } else {
            chunk
        }
    }

    /// End of stream: whatever is still held back.
    pub fn finish(&mut self) -> Bytes {
        if !self.buffered() || self.blocked {
            return Bytes::new();
        }
        let mut out = BytesMut::new();
        if let Some(g) = self.guard.as_mut() {
            match g.flush() {
                Ok(tail) => out.extend_from_slice(&tail),
                Err(e) => {
                    self.blocked = true;
                    out.extend_from_slice(&error_event(&e));
                    return out.freeze();
                }
            }
        }
        let event = std::mem::take(&mut self.event);
        if !self.drop_event {
            out.extend_from_slice(&event);
            out.extend_from_slice(&self.line);
        }
        self.line.clear();
        out.freeze()
    }

    fn on_line(&mut self, raw: &[u8], out: &mut BytesMut) {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if self.line_overflow {
            // The start of this line was over MAX_LINE and not kept: forward what we have.
            if self.buffered() {
                self.event.extend_from_slice(raw);
                self.event.extend_from_slice(b"\n");
            }
            return;
        }
        if let Some(payload) = line.strip_prefix(b"data:") {
            let payload = payload.trim_ascii();
            if self.guard.is_some() {
                self.data.clear();
                self.data.extend_from_slice(payload);
            }
            if payload == b"[DONE]" {
                self.saw_done = true;
            } else if has_usage_object(payload) {
                if let Some(u) = from_openai_json(payload) {
                    // Anthropic reports input at the start and output at the end.
                    self.usage = Some(self.usage.map_or(u, |prev| prev.merge(&u)));
                    if self.strip_usage_event && memmem::find(payload, b"\"choices\":[]").is_some()
                    {
                        self.drop_event = true;
                    }
                }
            }
        }
        if self.buffered() {
            self.event.extend_from_slice(raw);
            self.event.extend_from_slice(b"\n");
            if line.is_empty() {
                if !self.drop_event {
                    self.emit_event(out);
                }
                self.event.clear();
                self.data.clear();
                self.drop_event = false;
            }
        }
    }

    /// Sends the complete event in `self.event`, through the guard when there is one.
    fn emit_event(&mut self, out: &mut BytesMut) {
        let Some(g) = self.guard.as_mut() else {
            out.extend_from_slice(&self.event);
            return;
        };
        if self.data.is_empty() {
            out.extend_from_slice(&self.event);
            return;
        }
        let action = if self.data == b"[DONE]" {
            match g.flush() {
                Ok(tail) => {
                    out.extend_from_slice(&tail);
                    EventAction::Forward
                }
                Err(e) => EventAction::Block(e),
            }
        } else {
            g.on_event(&self.data)
        };
        match action {
            EventAction::Forward => out.extend_from_slice(&self.event),
            EventAction::Replace(payload) => {
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(&payload);
                out.extend_from_slice(b"\n\n");
            }
            EventAction::Block(e) => {
                out.extend_from_slice(&error_event(&e));
                self.blocked = true;
            }
        }
    }
}

/// `"usage"` followed by `:` and an object (not `null`).
fn has_usage_object(payload: &[u8]) -> bool {
    let Some(i) = memmem::rfind(payload, b"\"usage\"") else {
        return false;
    };
    let rest = payload[i + 7..].trim_ascii_start();
    rest.strip_prefix(b":")
        .is_some_and(|r| r.trim_ascii_start().starts_with(b"{"))
}

/// The client-facing body of a streamed response.
pub struct TapBody {
    inner: UpstreamBody,
    scanner: SseScanner,
    idle_timeout: Duration,
    idle: Pin<Box<tokio::time::Sleep>>,
    settle: Option<Settle>,
    provider: Arc<str>,
    first_byte: bool,
    pending: Option<Bytes>,
    finished: bool,
    /// Seen while coalescing; handled on the next poll.
    upstream_done: bool,
    deferred_error: Option<BodyError>,
    /// Counts this stream as in flight on its deployment until the body is dropped.
    _in_flight: Option<InFlight>,
    /// The attempt's total timeout, when one applies.
    total: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// Frames already waiting are merged into one write, up to this size.
const COALESCE_MAX: usize = 64 * 1024;

impl TapBody {
    pub fn new(
        inner: UpstreamBody,
        strip_usage_event: bool,
        guard: Option<StreamGuard>,
        idle_timeout: Duration,
        settle: Settle,
        provider: Arc<str>,
    ) -> Self {
        Self {
            inner,
            scanner: SseScanner::new(strip_usage_event, guard),
            idle_timeout,
            idle: Box::pin(tokio::time::sleep(idle_timeout)),
            settle: Some(settle),
            provider,
            first_byte: false,
            pending: None,
            finished: false,
            upstream_done: false,
            deferred_error: None,
            _in_flight: None,
            total: None,
        }
    }

    /// Starts with a first chunk that dispatch already read (waiting for the first token).
    #[must_use]
    pub fn prefetched(mut self, first: Option<(Bytes, Instant)>) -> Self {
        if let Some((data, at)) = first {
            self.first_byte = true;
            if let Some(s) = self.settle.as_mut() {
                s.rec.ttft_us = Some(s.micros_since_start(at));
            }
            let out = self.scanner.feed(data);
            if self.scanner.blocked {
                self.finished = true;
                self.settle(200, Some("content_policy_violation"));
            }
            if !out.is_empty() {
                self.pending = Some(out);
            }
        }
        self
    }

    /// Ends the stream with an error event at `deadline` (the attempt's total timeout).
    #[must_use]
    pub fn ending_by(mut self, deadline: Option<Instant>) -> Self {
        self.total =
            deadline.map(|d| Box::pin(tokio::time::sleep_until(tokio::time::Instant::from_std(d))));
        self
    }

    /// Keeps the deployment's in-flight count up for as long as the stream lives.
    #[must_use]
    pub fn holding(mut self, guard: InFlight) -> Self {
        self._in_flight = Some(guard);
        self
    }

    /// Appends every upstream frame that is already available (never waits), so a burst
    /// of events goes out as one frame.
    fn coalesce(&mut self, first: Bytes, cx: &mut Context<'_>) -> Bytes {
        let mut merged: Option<BytesMut> = None;
        let mut total = first.len();
        while total < COALESCE_MAX {
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        let out = self.scanner.feed(data);
                        if !out.is_empty() {
                            total += out.len();
                            merged
                                .get_or_insert_with(|| BytesMut::from(&first[..]))
                                .extend_from_slice(&out);
                        }
                        if self.scanner.blocked {
                            break; // the block event ends the stream
                        }
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    self.deferred_error = Some(e);
                    break;
                }
                Poll::Ready(None) => {
                    self.upstream_done = true;
                    break;
                }
                Poll::Pending => break,
            }
        }
        merged.map_or(first, BytesMut::freeze)
    }

    fn settle(&mut self, status: u16, error_class: Option<&'static str>) {
        if let Some(mut s) = self.settle.take() {
            s.set_usage(self.scanner.usage);
            s.rec.policy_hits.extend(self.scanner.take_hits());
            s.finish(status, error_class);
        }
    }

    /// Ends the stream with an error event in OpenAI's shape, after anything held back.
    fn fail(&mut self, class: &'static str, message: String) {
        let mut out = BytesMut::from(&self.scanner.finish()[..]);
        let body = serde_json::json!({"error": {"message": message, "type": "upstream_error", "code": class, "param": null}});
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(body.to_string().as_bytes());
        out.extend_from_slice(b"\n\n");
        self.pending = Some(out.freeze());
        self.finished = true;
        tracing::warn!(provider = %self.provider, class, "stream ended early: {message}");
        self.settle(200, Some(class));
    }
}

impl Body for TapBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        loop {
            if let Some(b) = this.pending.take() {
                return Poll::Ready(Some(Ok(Frame::data(b))));
            }
            if this.finished {
                return Poll::Ready(None);
            }
            if let Some(e) = this.deferred_error.take() {
                let msg = format!(
                    "upstream provider `{}` failed mid-stream: {e}",
                    this.provider
                );
                this.fail("upstream_stream_error", msg);
                continue;
            }
            if this.upstream_done {
                let tail = this.scanner.finish();
                this.finished = true;
                let class = this.scanner.blocked.then_some("content_policy_violation");
                if let Some(s) = this.settle.as_mut() {
                    s.capture(&tail);
                }
                this.settle(200, class);
                if !tail.is_empty() {
                    return Poll::Ready(Some(Ok(Frame::data(tail))));
                }
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    let now = Instant::now();
                    if !this.first_byte {
                        this.first_byte = true;
                        if let Some(s) = this.settle.as_mut() {
                            s.rec.ttft_us = Some(s.micros_since_start(now));
                        }
                    }
                    this.idle
                        .as_mut()
                        .reset(tokio::time::Instant::from_std(now + this.idle_timeout));
                    let first = this.scanner.feed(data);
                    let out = if this.scanner.blocked {
                        first
                    } else {
                        this.coalesce(first, cx)
                    };
                    if let Some(s) = this.settle.as_mut() {
                        s.capture(&out);
                    }
                    if this.scanner.blocked {
                        this.finished = true;
                        this.settle(200, Some("content_policy_violation"));
                    }
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    let msg = format!(
                        "upstream provider `{}` failed mid-stream: {e}",
                        this.provider
                    );
                    this.fail("upstream_stream_error", msg);
                }
                Poll::Ready(None) => this.upstream_done = true,
                Poll::Pending => {
                    if this
                        .total
                        .as_mut()
                        .is_some_and(|t| t.as_mut().poll(cx).is_ready())
                    {
                        let msg = format!(
                            "upstream provider `{}` did not finish within the total timeout",
                            this.provider
                        );
                        this.fail("upstream_total_timeout", msg);
                        continue;
                    }
                    if this.idle.as_mut().poll(cx).is_ready() {
                        let msg = format!(
                            "upstream provider `{}` sent nothing for {}s mid-stream",
                            this.provider,
                            this.idle_timeout.as_secs_f64()
                        );
                        this.fail("upstream_stream_idle", msg);
                        continue;
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.finished && self.pending.is_none()
    }
}

impl Drop for TapBody {
    fn drop(&mut self) {
        // The client went away before the end: still record what was used.
        self.settle(499, Some("client_disconnected"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USAGE_EVENT: &[u8] = b"data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4,\"total_tokens\":13}}\n\n";

    fn stream() -> Vec<u8> {
        let mut s = Vec::new();
        s.extend_from_slice(b"data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n");
        s.extend_from_slice(USAGE_EVENT);
        s.extend_from_slice(b"data: [DONE]\n\n");
        s
    }

    fn run(scanner: &mut SseScanner, data: &[u8], step: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for piece in data.chunks(step) {
            out.extend_from_slice(&scanner.feed(Bytes::copy_from_slice(piece)));
        }
        out.extend_from_slice(&scanner.finish());
        out
    }

    #[test]
    fn passes_bytes_through_and_reads_usage_across_any_split() {
        let data = stream();
        for step in [1, 2, 3, 7, 50, 1000] {
            let mut s = SseScanner::new(false, None);
            assert_eq!(run(&mut s, &data, step), data, "step {step}");
            let u = s.usage.unwrap_or_default();
            assert_eq!((u.input_tokens, u.output_tokens), (9, 4), "step {step}");
            assert!(s.saw_done);
        }
    }

    #[test]
    fn strip_mode_drops_only_the_usage_event() {
        let data = stream();
        let expected: Vec<u8> = String::from_utf8(data.clone())
            .unwrap_or_default()
            .replace(std::str::from_utf8(USAGE_EVENT).unwrap_or_default(), "")
            .into_bytes();
        for step in [1, 5, 13, 1000] {
            let mut s = SseScanner::new(true, None);
            assert_eq!(run(&mut s, &data, step), expected, "step {step}");
            assert_eq!(s.usage.map(|u| u.output_tokens), Some(4));
        }
    }

    #[test]
    fn crlf_lines_and_spacing_variants() {
        let data = b"data: {\"choices\":[], \"usage\" : {\"prompt_tokens\":1,\"completion_tokens\":2}}\r\n\r\ndata: [DONE]\r\n\r\n";
        let mut s = SseScanner::new(true, None);
        let out = run(&mut s, data, 4);
        assert_eq!(s.usage.map(|u| u.output_tokens), Some(2));
        assert_eq!(out, b"data: [DONE]\r\n\r\n");
    }
}
