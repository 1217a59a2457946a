//! The external guardrail detector: POST the text to a service the organisation runs and
//! read its verdict, within a timeout; on any failure, fail open (no match) or closed (match).
//!
//! Request: `POST url` with `{"rule": "...", "stage": "input", "text": "..."}`.
//! Answer: 2xx with `{"flagged": true|false}`; anything else counts as a failure.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Largest verdict body read.
const MAX_ANSWER: usize = 64 << 10;

pub struct Webhook {
    pub url: http::Uri,
    pub timeout: Duration,
    /// On timeout / connection error / bad answer: `true` = treat as a match (fail closed).
    pub fail_closed: bool,
    client: HttpsClient,
}

impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .field("fail_closed", &self.fail_closed)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct Ask<'a> {
    rule: &'a str,
    stage: &'a str,
    text: &'a str,
}

#[derive(Deserialize)]
struct Verdict {
    flagged: bool,
}

/// The guardrail's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Clean,
    Flagged,
    /// It failed and the detector fails closed.
    FailedClosed,
}

impl Webhook {
    pub fn new(url: http::Uri, timeout: Duration, fail_closed: bool) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Self {
            url,
            timeout,
            fail_closed,
            client: Client::builder(TokioExecutor::new()).build(https),
        }
    }

    pub async fn check(&self, rule: &str, stage: &str, text: &str) -> Outcome {
        let verdict = tokio::time::timeout(self.timeout, self.ask(rule, stage, text)).await;
        match verdict {
            Ok(Ok(true)) => Outcome::Flagged,
            Ok(Ok(false)) => Outcome::Clean,
            Ok(Err(e)) => self.failed(rule, &e),
            Err(_) => self.failed(rule, &format!("no answer within {:?}", self.timeout)),
        }
    }

    fn failed(&self, rule: &str, why: &str) -> Outcome {
        tracing::warn!(rule, url = %self.url, fail_closed = self.fail_closed, "guardrail webhook failed: {why}");
        if self.fail_closed {
            Outcome::FailedClosed
        } else {
            Outcome::Clean
        }
    }

    async fn ask(&self, rule: &str, stage: &str, text: &str) -> Result<bool, String> {
        let body = serde_json::to_vec(&Ask { rule, stage, text }).map_err(|e| e.to_string())?;
        let req = http::Request::post(self.url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("status {}", resp.status()));
        }
        let limited = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER);
        let bytes = limited
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let v: Verdict = serde_json::from_slice(&bytes).map_err(|e| format!("bad answer: {e}"))?;
        Ok(v.flagged)
    }
}
