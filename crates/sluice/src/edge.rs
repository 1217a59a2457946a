//! The HTTP edge: accepts connections under `server.max_connections` and serves each with a
//! header-read timeout, a maximum header size and a keep-alive idle timeout.
//!
//! `axum::serve` runs hyper without a timer, so none of these can hold there (a client that
//! never finishes its header keeps a task and a socket forever); this loop is the one place
//! they are set. The body-read timeout is per request, in `app::ingress`.

use crate::config::EdgeConfig;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// What a connection over the cap gets, written before reading anything: a fast answer, never
/// a hang in the accept queue.
static BUSY: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let body = r#"{"error":{"message":"the gateway has reached server.max_connections; retry shortly","type":"server_error","param":null,"code":"too_many_connections"}}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
});

/// Serves `router` on `listener` until `stop` turns true, then lets open connections finish
/// (each is asked to close after its current request) and returns when all have.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    cfg: EdgeConfig,
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(cfg.max_connections));
    let conns = TaskTracker::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.header_read_timeout)
        // The read buffer caps the request head: a longer one gets 431.
        .max_buf_size(cfg.max_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(cfg.max_header_bytes).unwrap_or(u32::MAX));
    let builder = Arc::new(builder);
    loop {
        let tcp = tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // Out of descriptors, or the peer left before accept: wait a moment
                    // instead of spinning on the error.
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.wait_for(|s| *s) => break,
        };
        // No Nagle: a stream's last small write must not wait 40 ms for the client's delayed ACK.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("set_nodelay failed: {e}");
        }
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            crate::telemetry::metrics::connection_refused();
            conns.spawn(refuse(tcp));
            continue;
        };
        let builder = builder.clone();
        let router = router.clone();
        let stop = stop.clone();
        let cfg = cfg.clone();
        conns.spawn(async move {
            serve_one(&builder, tcp, router, &cfg, stop).await;
            drop(permit);
        });
    }
    // Stop accepting at once: while draining, new connections are refused by the OS.
    drop(listener);
    conns.close();
    conns.wait().await;
}

/// Over the cap: the 503, then close. The client's request (if it sent one) is read and
/// dropped briefly so that closing sends FIN rather than a reset that could destroy the 503.
async fn refuse(mut tcp: TcpStream) {
    let answer = async {
        tcp.write_all(&BUSY).await?;
        tcp.shutdown().await?;
        let mut sink = [0u8; 4096];
        while tcp.read(&mut sink).await? > 0 {}
        Ok::<_, io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_millis(500), answer).await;
}

async fn serve_one(
    builder: &Builder<TokioExecutor>,
    tcp: TcpStream,
    router: Router,
    cfg: &EdgeConfig,
    mut stop: watch::Receiver<bool>,
) {
    let start = Instant::now();
    let activity = Arc::new(Activity::default());
    let io = TokioIo::new(Watched {
        inner: tcp,
        start,
        activity: activity.clone(),
    });
    let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
        router.clone().oneshot(req.map(axum::body::Body::new))
    });
    let conn = builder.serve_connection(io, svc);
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        // Before the first byte, hyper's header timer has not started yet (the protocol is
        // still being sniffed): the header-read timeout counts from accept. After that,
        // silence longer than the idle timeout ends the connection.
        let deadline = deadline_now(&activity, start, cfg);
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!("connection ended: {e}");
                }
                return;
            }
            _ = stop.wait_for(|s| *s), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            () = tokio::time::sleep_until(deadline), if !closing => {
                if Instant::now() >= deadline_now(&activity, start, cfg) {
                    // Finishes a request in flight, then closes; an idle one closes now.
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

fn deadline_now(activity: &Activity, start: Instant, cfg: &EdgeConfig) -> Instant {
    match activity.last_ms() {
        None => start + cfg.header_read_timeout,
        Some(ms) => start + Duration::from_millis(ms) + cfg.idle_timeout,
    }
}

/// When the connection last moved a byte, in ms since it was accepted (+1, 0 = never).
#[derive(Default)]
struct Activity(AtomicU64);

impl Activity {
    fn touch(&self, start: Instant) {
        let ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.0.store(ms + 1, Ordering::Relaxed);
    }

    fn last_ms(&self) -> Option<u64> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            n => Some(n - 1),
        }
    }
}

/// A TCP stream that records when it last read or wrote a byte.
struct Watched {
    inner: TcpStream,
    start: Instant,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch(self.start);
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch(self.start);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch(self.start);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
