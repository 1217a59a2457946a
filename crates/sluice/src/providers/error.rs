//! Upstream failures, classified once: who failed (client, upstream, us) and whether another
//! attempt can help. Routing matches on this class, never on message strings.

use http::{HeaderValue, StatusCode};
use std::sync::Arc;
use std::time::Duration;

/// Who is at fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSource {
    /// The request itself was refused (bad parameters, context too long, ...).
    Client,
    /// The provider failed or could not be reached.
    Upstream,
    /// Sluice failed.
    Internal,
}

/// Error classes that can have their own fallback routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FallbackClass {
    /// 429, 503, 529: rate limited or overloaded.
    RateLimited,
    /// 5xx, timeouts, unreachable, broken connections.
    ServerError,
    /// The prompt does not fit the model's context window.
    ContextWindowExceeded,
    /// The provider's content filter refused the request.
    ContentFilter,
}

impl FallbackClass {
    pub const ALL: [FallbackClass; 4] = [
        FallbackClass::RateLimited,
        FallbackClass::ServerError,
        FallbackClass::ContextWindowExceeded,
        FallbackClass::ContentFilter,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FallbackClass::RateLimited => "rate_limited",
            FallbackClass::ServerError => "server_error",
            FallbackClass::ContextWindowExceeded => "context_window_exceeded",
            FallbackClass::ContentFilter => "content_filter",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Clone)]
pub enum UpstreamErrorKind {
    /// Could not connect (refused, DNS, TLS handshake, connect timeout).
    Connect(String),
    /// No response (headers, or a whole JSON body) within the provider's timeout.
    Timeout { after: Duration },
    /// The connection broke before a complete response arrived.
    Protocol(String),
    /// No deployment could be tried: every candidate's circuit breaker is open, or locality
    /// rules left none.
    Unavailable(String),
    /// The provider answered with an error status.
    Status {
        status: StatusCode,
        message: String,
        error_type: Option<String>,
        code: Option<String>,
        param: Option<String>,
        retry_after: Option<HeaderValue>,
    },
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", self.describe())]
pub struct UpstreamError {
    pub provider: Arc<str>,
    /// What was tried, e.g. `POST http://127.0.0.1:9/v1/chat/completions`.
    pub target: String,
    pub kind: UpstreamErrorKind,
}

impl UpstreamError {
    pub fn new(provider: &Arc<str>, target: impl Into<String>, kind: UpstreamErrorKind) -> Self {
        Self {
            provider: provider.clone(),
            target: target.into(),
            kind,
        }
    }

    pub fn provider(&self) -> &str {
        &self.provider
    }

    fn describe(&self) -> String {
        let p = &self.provider;
        match &self.kind {
            UpstreamErrorKind::Connect(detail) => format!(
                "upstream provider `{p}` is unreachable ({}): {detail}",
                self.target
            ),
            UpstreamErrorKind::Timeout { after } => format!(
                "upstream provider `{p}` did not answer within {} ({})",
                humanize(*after),
                self.target
            ),
            UpstreamErrorKind::Protocol(detail) => format!(
                "upstream provider `{p}` broke the connection before answering ({}): {detail}",
                self.target
            ),
            UpstreamErrorKind::Unavailable(detail) => detail.clone(),
            UpstreamErrorKind::Status {
                status, message, ..
            } => format!(
                "upstream provider `{p}` returned {}: {message}",
                status.as_u16()
            ),
        }
    }

    pub fn source(&self) -> ErrorSource {
        match &self.kind {
            UpstreamErrorKind::Status { status, .. }
                if status.is_client_error()
                    && *status != StatusCode::TOO_MANY_REQUESTS
                    && *status != StatusCode::REQUEST_TIMEOUT =>
            {
                ErrorSource::Client
            }
            _ => ErrorSource::Upstream,
        }
    }

    /// Whether another attempt (same or another deployment) may succeed.
    pub fn retryable(&self) -> bool {
        match &self.kind {
            UpstreamErrorKind::Connect(_)
            | UpstreamErrorKind::Timeout { .. }
            | UpstreamErrorKind::Protocol(_) => true,
            UpstreamErrorKind::Unavailable(_) => false,
            UpstreamErrorKind::Status { status, .. } => matches!(
                status.as_u16(),
                408 | 409 | 429 | 500 | 502 | 503 | 504 | 529
            ),
        }
    }

    /// Status Sluice answers with.
    pub fn status_code(&self) -> StatusCode {
        match &self.kind {
            UpstreamErrorKind::Connect(_) | UpstreamErrorKind::Protocol(_) => {
                StatusCode::BAD_GATEWAY
            }
            UpstreamErrorKind::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            UpstreamErrorKind::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            UpstreamErrorKind::Status { status, .. } => *status,
        }
    }

    pub fn class(&self) -> &'static str {
        match &self.kind {
            UpstreamErrorKind::Connect(_) => "upstream_unreachable",
            UpstreamErrorKind::Timeout { .. } => "upstream_timeout",
            UpstreamErrorKind::Protocol(_) => "upstream_protocol",
            UpstreamErrorKind::Unavailable(_) => "no_available_deployment",
            UpstreamErrorKind::Status { status, .. } if status.is_client_error() => "upstream_4xx",
            UpstreamErrorKind::Status { .. } => "upstream_5xx",
        }
    }

    pub fn error_type(&self) -> &str {
        match &self.kind {
            UpstreamErrorKind::Status {
                error_type: Some(t),
                ..
            } => t,
            UpstreamErrorKind::Status { status, .. } => match status.as_u16() {
                400 | 404 | 409 | 413 | 422 => "invalid_request_error",
                401 => "authentication_error",
                403 => "permission_error",
                429 => "rate_limit_error",
                _ => "upstream_error",
            },
            UpstreamErrorKind::Timeout { .. } => "timeout_error",
            _ => "upstream_error",
        }
    }

    pub fn code(&self) -> Option<&str> {
        match &self.kind {
            UpstreamErrorKind::Status { code, .. } => code.as_deref(),
            UpstreamErrorKind::Connect(_) => Some("upstream_unreachable"),
            UpstreamErrorKind::Timeout { .. } => Some("upstream_timeout"),
            UpstreamErrorKind::Protocol(_) => Some("upstream_connection_error"),
            UpstreamErrorKind::Unavailable(_) => Some("no_available_deployment"),
        }
    }

    pub fn param(&self) -> Option<&str> {
        match &self.kind {
            UpstreamErrorKind::Status { param, .. } => param.as_deref(),
            _ => None,
        }
    }

    /// Which per-class fallback list applies, if any. Matches on the status and the
    /// provider's structured `code` / `type` fields, never on the message.
    pub fn fallback_class(&self) -> Option<FallbackClass> {
        match &self.kind {
            UpstreamErrorKind::Connect(_)
            | UpstreamErrorKind::Timeout { .. }
            | UpstreamErrorKind::Protocol(_) => Some(FallbackClass::ServerError),
            UpstreamErrorKind::Unavailable(_) => None,
            UpstreamErrorKind::Status {
                status,
                code,
                error_type,
                ..
            } => {
                let is = |names: &[&str]| {
                    [code, error_type]
                        .into_iter()
                        .flatten()
                        .any(|v| names.contains(&v.as_str()))
                };
                match status.as_u16() {
                    429 | 503 | 529 => Some(FallbackClass::RateLimited),
                    408 | 500..=599 => Some(FallbackClass::ServerError),
                    400 | 413 | 422
                        if is(&["context_length_exceeded", "context_window_exceeded"]) =>
                    {
                        Some(FallbackClass::ContextWindowExceeded)
                    }
                    400 | 403 | 422 if is(&["content_filter", "content_policy_violation"]) => {
                        Some(FallbackClass::ContentFilter)
                    }
                    _ => None,
                }
            }
        }
    }

    pub fn retry_after(&self) -> Option<&HeaderValue> {
        match &self.kind {
            UpstreamErrorKind::Status { retry_after, .. } => retry_after.as_ref(),
            _ => None,
        }
    }
}

fn humanize(d: Duration) -> String {
    if d.as_millis() < 1000 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

/// Pulls the provider's message (and type/code/param) out of an error body. Understands the
/// OpenAI shape, `{"error": "text"}`, `{"message": ...}` and FastAPI's `{"detail": ...}`.
pub fn parse_error_body(body: &[u8]) -> (String, Option<String>, Option<String>, Option<String>) {
    let text_fallback = || {
        let t = String::from_utf8_lossy(body);
        let t = t.trim();
        let mut s: String = t.chars().take(500).collect();
        if s.is_empty() {
            s = "(empty response body)".to_string();
        }
        s
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return (text_fallback(), None, None, None);
    };
    let as_string = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    };
    if let Some(err) = v.get("error") {
        if let Some(msg) = err.get("message").and_then(as_string) {
            return (
                msg,
                err.get("type").and_then(as_string),
                err.get("code").and_then(as_string),
                err.get("param").and_then(as_string),
            );
        }
        if let Some(s) = err.as_str() {
            return (s.to_string(), None, None, None);
        }
    }
    for key in ["message", "detail"] {
        if let Some(m) = v.get(key).and_then(as_string) {
            return (m, None, None, None);
        }
    }
    (text_fallback(), None, None, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_error_shapes() {
        let (m, t, c, _) = parse_error_body(
            br#"{"error":{"message":"Rate limit","type":"rate_limit_error","code":"rl","param":null}}"#,
        );
        assert_eq!(m, "Rate limit");
        assert_eq!(t.as_deref(), Some("rate_limit_error"));
        assert_eq!(c.as_deref(), Some("rl"));
        assert_eq!(parse_error_body(br#"{"error":"boom"}"#).0, "boom");
        assert_eq!(
            parse_error_body(br#"{"detail":"Not Found"}"#).0,
            "Not Found"
        );
        assert_eq!(
            parse_error_body(b"<html>bad gateway</html>").0,
            "<html>bad gateway</html>"
        );
        assert_eq!(parse_error_body(b"").0, "(empty response body)");
    }

    #[test]
    fn classification() {
        let p: Arc<str> = Arc::from("p");
        let status = |s: u16| {
            UpstreamError::new(
                &p,
                "POST x",
                UpstreamErrorKind::Status {
                    status: StatusCode::from_u16(s).unwrap_or(StatusCode::IM_A_TEAPOT),
                    message: "m".into(),
                    error_type: None,
                    code: None,
                    param: None,
                    retry_after: None,
                },
            )
        };
        assert!(status(429).retryable());
        assert!(status(503).retryable());
        assert!(!status(400).retryable());
        assert_eq!(status(400).source(), ErrorSource::Client);
        assert_eq!(status(500).source(), ErrorSource::Upstream);
        let c = UpstreamError::new(&p, "POST x", UpstreamErrorKind::Connect("refused".into()));
        assert!(c.retryable());
        assert_eq!(c.status_code(), StatusCode::BAD_GATEWAY);
        assert!(c.to_string().contains("`p` is unreachable"));
    }
}
