//! The accept loop: HTTP/1.1 and h2c connections served by [`Mock::handle`], with real TCP resets.

use std::error::Error as StdError;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::{AbortsConnection, Mock, MockBody, MockReply};

type BoxError = Box<dyn StdError + Send + Sync>;

/// Accepts connections until the returned future is dropped; dropping it also closes every
/// connection it accepted. Accept errors (e.g. out of file descriptors) are logged and retried.
pub async fn serve(listener: TcpListener, mock: Arc<Mock>) -> io::Result<()> {
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    connections.spawn(connection(stream, Arc::clone(&mock), Arc::clone(&builder)));
                }
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    // Back off so a full fd table does not become a busy loop.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            // Reap finished connections so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// A per-connection request to tear the connection down with an RST.
#[derive(Default)]
struct Kill {
    fired: AtomicBool,
    notify: Notify,
}

impl Kill {
    fn fire(&self) {
        self.fired.store(true, Ordering::Release);
        self.notify.notify_one();
    }
}

async fn connection(
    stream: TcpStream,
    mock: Arc<Mock>,
    builder: Arc<auto::Builder<TokioExecutor>>,
) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "set_nodelay failed");
    }
    // A second descriptor for the same socket: hyper owns the stream, and we still need to set
    // SO_LINGER 0 on it before it is closed, which is what turns the close into an RST.
    let spare: Option<OwnedFd> = match stream.as_fd().try_clone_to_owned() {
        Ok(fd) => Some(fd),
        Err(error) => {
            tracing::warn!(%error, "could not duplicate the socket; reset faults will close gracefully");
            None
        }
    };
    let kill = Arc::new(Kill::default());
    let service = {
        let kill = Arc::clone(&kill);
        service_fn(move |request| respond(request, Arc::clone(&mock), Arc::clone(&kill)))
    };
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        biased;
        () = kill.notify.notified() => {}
        result = conn.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(error = %error, "connection ended with an error");
            }
        }
    }
    if kill.fired.load(Ordering::Acquire) {
        if let Some(fd) = &spare {
            if let Err(error) = socket2::SockRef::from(fd).set_linger(Some(Duration::ZERO)) {
                tracing::debug!(%error, "set_linger failed");
            }
        }
    }
    // `conn` (and hyper's descriptor) is dropped at the end of this scope, after the linger
    // is set; the last close, whichever descriptor it is, sends the RST.
}

async fn respond(
    request: Request<Incoming>,
    mock: Arc<Mock>,
    kill: Arc<Kill>,
) -> Result<Response<MockBody>, BoxError> {
    let (parts, body) = request.into_parts();
    let body: Bytes = body.collect().await?.to_bytes();
    match mock.handle(Request::from_parts(parts, body)).await {
        MockReply::Response(response) => {
            if response.extensions().get::<AbortsConnection>().is_none() {
                return Ok(response);
            }
            let (parts, body) = response.into_parts();
            let body = body.map_err(move |error| {
                kill.fire();
                error
            });
            Ok(Response::from_parts(parts, BodyExt::boxed(body)))
        }
        MockReply::Reset => {
            kill.fire();
            // An error (not a pending future) so that HTTP/2 stream tasks do not linger.
            Err(Box::new(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "mock fault: reset",
            )))
        }
    }
}
