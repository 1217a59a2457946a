//! Shared helpers: a mock server on a loopback port and a hyper-util client to drive it.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use sluice_mock::{serve, Mock, MockSettings};

pub struct Server {
    pub addr: SocketAddr,
    pub mock: Arc<Mock>,
    pub client: Client<HttpConnector, Full<Bytes>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn start(settings: MockSettings) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mock = Mock::new(settings);
    let task = tokio::spawn(serve(listener, Arc::clone(&mock)));
    let client = Client::builder(TokioExecutor::new()).build_http();
    Server {
        addr,
        mock,
        client,
        task,
    }
}

impl Server {
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> hyper_util::client::legacy::ResponseFuture {
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr));
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        self.client.request(
            builder
                .body(Full::new(Bytes::from(body.to_owned())))
                .unwrap(),
        )
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Response<Incoming> {
        self.send(method, path, headers, body).await.await.unwrap()
    }

    pub async fn json(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (StatusCode, Value) {
        let response = self.call(method, path, headers, body).await;
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{e}: {bytes:?}")),
        )
    }
}

/// SSE `data:` payloads with the instant each one was complete at the client.
pub async fn events(response: Response<Incoming>) -> Vec<(Instant, String)> {
    let mut body = response.into_body();
    let mut buffer = String::new();
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.unwrap().into_data() else {
            continue;
        };
        buffer.push_str(std::str::from_utf8(&data).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            out.push((
                Instant::now(),
                event.trim_end().strip_prefix("data: ").unwrap().to_owned(),
            ));
        }
    }
    assert!(buffer.is_empty(), "trailing partial event: {buffer:?}");
    out
}

pub const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"What is a sluice?"}]}"#;

pub fn streaming(include_usage: bool) -> String {
    let options = if include_usage {
        r#","stream_options":{"include_usage":true}"#
    } else {
        ""
    };
    CHAT.replacen('{', &format!(r#"{{"stream":true{options},"#), 1)
}

/// True when the error was caused by a TCP reset (a graceful close would be an incomplete message).
pub fn is_tcp_reset(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if error
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset)
        {
            return true;
        }
        current = error.source();
    }
    false
}
