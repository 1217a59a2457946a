//! Response bodies: whole buffers, and paced event streams that may end in a stall or an abort.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use tokio::time::{Instant, Sleep};

use crate::MockBody;

/// A whole body sent as one frame.
pub(crate) fn full(bytes: Bytes) -> MockBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// When each event of a stream is released.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Pacing {
    /// Before the first event.
    pub(crate) ttft: Duration,
    /// Between events.
    pub(crate) chunk_delay: Duration,
    /// After the first event; when set, the rest follow without `chunk_delay`.
    pub(crate) first_pause: Duration,
}

impl Pacing {
    fn before(&self, event: usize) -> Duration {
        match event {
            0 => self.ttft,
            1 if !self.first_pause.is_zero() => self.first_pause,
            _ if !self.first_pause.is_zero() => Duration::ZERO,
            _ => self.chunk_delay,
        }
    }
}

/// What happens once the events that are going to be sent have been sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// End the body normally.
    Finish,
    /// Never send anything more, never end.
    Stall,
    /// Fail the body (the server resets the connection).
    Abort,
}

/// Events laid back to back in one buffer; each is sent as its own data frame, so a client
/// sees them arrive separately. With no delays no timer is ever created.
pub(crate) struct EventBody {
    rest: Bytes,
    lens: Vec<usize>,
    sent: usize,
    limit: usize,
    pacing: Pacing,
    end: End,
    delayed: bool,
    sleep: Option<Pin<Box<Sleep>>>,
    sleeping: bool,
    abort_yielded: bool,
    /// Counts this body if it is dropped before its last event (its client went away).
    cancelled: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
}

impl EventBody {
    /// `limit` caps how many of the events are sent before `end` applies.
    pub(crate) fn new(
        events: Bytes,
        lens: Vec<usize>,
        pacing: Pacing,
        limit: usize,
        end: End,
    ) -> Self {
        let limit = limit.min(lens.len());
        Self {
            rest: events,
            lens,
            sent: 0,
            limit,
            pacing,
            end,
            delayed: false,
            sleep: None,
            sleeping: false,
            abort_yielded: false,
            cancelled: None,
        }
    }

    pub(crate) fn counting_cancel(
        mut self,
        counter: std::sync::Arc<std::sync::atomic::AtomicU64>,
    ) -> Self {
        self.cancelled = Some(counter);
        self
    }
}

impl Drop for EventBody {
    fn drop(&mut self) {
        if self.end == End::Finish && self.sent < self.limit {
            if let Some(c) = &self.cancelled {
                c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}

impl Body for EventBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if this.sent >= this.limit {
            return match this.end {
                End::Finish => Poll::Ready(None),
                // Nothing will ever wake this body; it lives until the connection goes.
                End::Stall => Poll::Pending,
                // Yield once first: hyper flushes what it has buffered only when the body is
                // pending, and an RST discards unsent data, so the events must leave first.
                End::Abort if !this.abort_yielded => {
                    this.abort_yielded = true;
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                End::Abort => {
                    this.end = End::Finish;
                    let error = io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        "mock fault: reset after headers",
                    );
                    Poll::Ready(Some(Err(error)))
                }
            };
        }
        if !this.delayed {
            this.delayed = true;
            let delay = this.pacing.before(this.sent);
            if !delay.is_zero() {
                let deadline = Instant::now() + delay;
                match &mut this.sleep {
                    Some(sleep) => sleep.as_mut().reset(deadline),
                    None => this.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
                }
                this.sleeping = true;
            }
        }
        if this.sleeping {
            if let Some(sleep) = &mut this.sleep {
                ready!(sleep.as_mut().poll(cx));
            }
            this.sleeping = false;
        }
        let len = this.lens.get(this.sent).copied().unwrap_or(0);
        this.sent += 1;
        this.delayed = false;
        Poll::Ready(Some(Ok(Frame::data(
            this.rest.split_to(len.min(this.rest.len())),
        ))))
    }

    fn is_end_stream(&self) -> bool {
        self.sent >= self.limit && self.end == End::Finish
    }

    fn size_hint(&self) -> SizeHint {
        if self.end == End::Finish && self.limit == self.lens.len() {
            SizeHint::with_exact(self.rest.len() as u64)
        } else {
            SizeHint::default()
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn body(limit: usize, end: End) -> EventBody {
        EventBody::new(
            Bytes::from_static(b"aabbbc"),
            vec![2, 3, 1],
            Pacing::default(),
            limit,
            end,
        )
    }

    #[tokio::test]
    async fn events_are_separate_frames() {
        let mut body = body(usize::MAX, End::Finish);
        let mut frames = Vec::new();
        while let Some(frame) = body.frame().await {
            frames.push(frame.unwrap().into_data().unwrap());
        }
        assert_eq!(frames, ["aa", "bbb", "c"]);
    }

    #[tokio::test]
    async fn abort_after_limit() {
        let mut body = body(1, End::Abort);
        assert_eq!(
            body.frame().await.unwrap().unwrap().into_data().unwrap(),
            "aa"
        );
        assert_eq!(
            body.frame().await.unwrap().unwrap_err().kind(),
            io::ErrorKind::ConnectionReset
        );
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn first_pause_then_no_delay() {
        let pause = Duration::from_millis(200);
        let pacing = Pacing {
            ttft: Duration::ZERO,
            chunk_delay: Duration::from_secs(30),
            first_pause: pause,
        };
        let mut body = EventBody::new(
            Bytes::from_static(b"abc"),
            vec![1, 1, 1],
            pacing,
            usize::MAX,
            End::Finish,
        );
        let start = Instant::now();
        body.frame().await.unwrap().unwrap();
        assert!(start.elapsed() < pause);
        body.frame().await.unwrap().unwrap();
        assert!(start.elapsed() >= pause);
        body.frame().await.unwrap().unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no chunk delay after the pause"
        );
        assert!(body.frame().await.is_none());
    }
}
