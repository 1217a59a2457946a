//! The one edge error type: every failure a client can see, mapped to a status code and the
//! OpenAI error shape `{"error":{"message","type","param","code"}}`.

use crate::policy::content::PolicyError;
use crate::policy::limits::RateHeaders;
use crate::providers::UpstreamError;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};
use serde::Serialize;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest {
        message: String,
        param: Option<&'static str>,
        code: Option<&'static str>,
    },
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: u64 },
    #[error("the request body did not arrive within server.body_read_timeout ({limit_ms} ms)")]
    RequestTimeout { limit_ms: u64 },
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{}", model_not_found_message(.model, .available))]
    ModelNotFound {
        model: String,
        available: Vec<String>,
    },
    #[error("The model `{model}` is not allowed for this key (allowed by the {by}: {}).", .allowed.join(", "))]
    ModelNotAllowed {
        model: String,
        by: String,
        allowed: Vec<String>,
    },
    #[error("The model `{model}` has no price, and this key is charged against a budget: set a price for it (models[].deployments[].price or governance.unpriced: allow).")]
    ModelUnpriced { model: String },
    #[error("{}", .0.message)]
    RateLimited(Box<RateLimitInfo>),
    #[error("{message}")]
    BudgetExceeded {
        message: String,
        retry_after_s: Option<i64>,
    },
    #[error("{0}")]
    Forbidden(String),
    #[error("{message}")]
    NotFound {
        message: String,
        param: Option<&'static str>,
    },
    #[error("{message}")]
    Conflict {
        message: String,
        param: Option<&'static str>,
    },
    #[error("no route for {method} {path}")]
    RouteNotFound { method: String, path: String },
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    #[error(transparent)]
    Upstream(Box<UpstreamError>),
    /// Content policy: a block (400), or route_local with no on-prem deployment (422).
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// `mode: on_prem` or the route's `data_policy: local_only` left no deployment.
    #[error("model `{model}` has no on-prem deployment, and {why} forbids sending data to a cloud provider")]
    LocalOnly { model: String, why: &'static str },
    #[error("the gateway is shutting down; retry on another instance")]
    ShuttingDown,
    /// The store (SQLite file or PostgreSQL) did not answer: admin writes and analytics
    /// wait for it; inference goes on (usage spills to disk and is replayed).
    #[error("the store is unavailable ({0}); retry shortly")]
    StoreUnavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// A store error met while `doing` something: a store that cannot be reached is a 503
    /// `store_unavailable`; anything else an internal error.
    pub fn from_store(doing: &str, e: &crate::store::StoreError) -> ApiError {
        use sqlx::Error as E;
        match e {
            crate::store::StoreError::Db(
                E::PoolTimedOut | E::PoolClosed | E::Io(_) | E::Tls(_) | E::WorkerCrashed,
            ) => ApiError::StoreUnavailable(format!("{doing}: {e}")),
            _ => ApiError::Internal(format!("{doing}: {e}")),
        }
    }
}

fn model_not_found_message(model: &str, available: &[String]) -> String {
    if available.is_empty() {
        format!("The model `{model}` does not exist or you do not have access to it. No models are available to this key.")
    } else {
        format!(
            "The model `{model}` does not exist or you do not have access to it. Available models: {}",
            available.join(", ")
        )
    }
}

/// A 429 from a rate limit: the message and the OpenAI-style `x-ratelimit-*` figures.
#[derive(Debug, Clone)]
pub struct RateLimitInfo {
    pub message: String,
    pub retry_after_s: Option<i64>,
    pub headers: RateHeaders,
}

/// Writes OpenAI's `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` headers.
pub fn put_rate_headers(h: &mut http::HeaderMap, r: &RateHeaders) {
    use http::HeaderName;
    const REQUESTS: [HeaderName; 3] = [
        HeaderName::from_static("x-ratelimit-limit-requests"),
        HeaderName::from_static("x-ratelimit-remaining-requests"),
        HeaderName::from_static("x-ratelimit-reset-requests"),
    ];
    const TOKENS: [HeaderName; 3] = [
        HeaderName::from_static("x-ratelimit-limit-tokens"),
        HeaderName::from_static("x-ratelimit-remaining-tokens"),
        HeaderName::from_static("x-ratelimit-reset-tokens"),
    ];
    for (names, c) in [(REQUESTS, r.requests), (TOKENS, r.tokens)] {
        let Some(c) = c else { continue };
        let [limit, remaining, reset] = names;
        h.insert(limit, HeaderValue::from(c.limit));
        h.insert(remaining, HeaderValue::from(c.remaining));
        if let Ok(v) = HeaderValue::from_str(&format!("{}ms", c.reset_ms.max(0))) {
            h.insert(reset, v);
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    message: String,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>, param: Option<&'static str>) -> Self {
        ApiError::BadRequest {
            message: message.into(),
            param,
            code: None,
        }
    }

    pub fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::ModelNotFound { .. } | ApiError::RouteNotFound { .. } => {
                StatusCode::NOT_FOUND
            }
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::ModelNotAllowed { .. }
            | ApiError::ModelUnpriced { .. }
            | ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::RateLimited(_) | ApiError::BudgetExceeded { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::Upstream(e) => e.status_code(),
            ApiError::Policy(PolicyError::NoLocalDeployment { .. })
            | ApiError::LocalOnly { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Policy(_) => StatusCode::BAD_REQUEST,
            ApiError::ShuttingDown | ApiError::StoreUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Short class for usage records and logs.
    pub fn class(&self) -> &'static str {
        match self {
            ApiError::BadRequest { .. } => "bad_request",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::RequestTimeout { .. } => "request_timeout",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::ModelNotFound { .. } => "model_not_found",
            ApiError::RouteNotFound { .. } => "route_not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::ModelNotAllowed { .. } => "model_not_allowed",
            ApiError::ModelUnpriced { .. } => "model_unpriced",
            ApiError::RateLimited(_) => "rate_limited",
            ApiError::BudgetExceeded { .. } => "budget_exceeded",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound { .. } => "not_found",
            ApiError::Conflict { .. } => "conflict",
            ApiError::Upstream(e) => e.class(),
            ApiError::Policy(PolicyError::Blocked { .. }) => "content_policy_violation",
            ApiError::Policy(PolicyError::NoLocalDeployment { .. })
            | ApiError::LocalOnly { .. } => "no_local_deployment",
            ApiError::Policy(PolicyError::BadBody(_)) => "bad_request",
            ApiError::ShuttingDown => "shutting_down",
            ApiError::StoreUnavailable(_) => "store_unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    /// The OpenAI-shaped JSON body.
    pub fn openai_body(&self) -> Bytes {
        let (kind, param, code) = self.openai_fields();
        let body = Body {
            error: Inner {
                message: self.to_string(),
                kind,
                param,
                code,
            },
        };
        Bytes::from(serde_json::to_vec(&body).unwrap_or_else(|_| {
            br#"{"error":{"message":"error","type":"server_error","param":null,"code":null}}"#
                .to_vec()
        }))
    }

    /// `error.type`, `error.param` and `error.code` of the OpenAI shape.
    pub fn openai_fields(&self) -> (&str, Option<&str>, Option<&str>) {
        match self {
            ApiError::BadRequest { param, code, .. } => ("invalid_request_error", *param, *code),
            ApiError::PayloadTooLarge { .. } => {
                ("invalid_request_error", None, Some("payload_too_large"))
            }
            ApiError::RequestTimeout { .. } => {
                ("invalid_request_error", None, Some("request_timeout"))
            }
            ApiError::Unauthorized(_) => ("authentication_error", None, Some("invalid_api_key")),
            ApiError::ModelNotFound { .. } => (
                "invalid_request_error",
                Some("model"),
                Some("model_not_found"),
            ),
            ApiError::RouteNotFound { .. } => ("invalid_request_error", None, Some("not_found")),
            ApiError::MethodNotAllowed { .. } => {
                ("invalid_request_error", None, Some("method_not_allowed"))
            }
            ApiError::ModelNotAllowed { .. } => {
                ("permission_error", Some("model"), Some("model_not_allowed"))
            }
            ApiError::ModelUnpriced { .. } => {
                ("permission_error", Some("model"), Some("model_unpriced"))
            }
            ApiError::RateLimited(_) => ("requests", None, Some("rate_limit_exceeded")),
            ApiError::BudgetExceeded { .. } => {
                ("insufficient_quota", None, Some("insufficient_quota"))
            }
            ApiError::Forbidden(_) => ("permission_error", None, Some("forbidden")),
            ApiError::NotFound { param, .. } => {
                ("invalid_request_error", *param, Some("not_found"))
            }
            ApiError::Conflict { param, .. } => ("invalid_request_error", *param, Some("conflict")),
            ApiError::Upstream(e) => (e.error_type(), e.param(), e.code()),
            ApiError::Policy(PolicyError::Blocked { .. }) => (
                "content_policy_violation",
                None,
                Some("content_policy_violation"),
            ),
            ApiError::Policy(PolicyError::NoLocalDeployment { .. })
            | ApiError::LocalOnly { .. } => (
                "invalid_request_error",
                Some("model"),
                Some("no_local_deployment"),
            ),
            ApiError::Policy(PolicyError::BadBody(_)) => ("invalid_request_error", None, None),
            ApiError::ShuttingDown => ("server_error", None, Some("shutting_down")),
            ApiError::StoreUnavailable(_) => ("server_error", None, Some("store_unavailable")),
            ApiError::Internal(_) => ("server_error", None, Some("internal_error")),
        }
    }
}

/// Carried in response extensions so logging and usage recording can see what failed.
#[derive(Debug, Clone)]
pub struct ErrorSeen(pub ApiError);

impl From<UpstreamError> for ApiError {
    fn from(e: UpstreamError) -> Self {
        ApiError::Upstream(Box::new(e))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let mut resp = Response::new(axum::body::Body::from(self.openai_body()));
        *resp.status_mut() = status;
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let ApiError::Upstream(e) = &self {
            if let Some(ra) = e.retry_after() {
                headers.insert(header::RETRY_AFTER, ra.clone());
            }
            if let Ok(v) = HeaderValue::from_str(e.provider()) {
                headers.insert("x-sluice-provider", v);
            }
        }
        if matches!(
            self,
            ApiError::PayloadTooLarge { .. } | ApiError::RequestTimeout { .. }
        ) {
            // The rest of the body is never read: close rather than leave the peer mid-upload.
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        match &self {
            ApiError::RateLimited(info) => {
                put_rate_headers(headers, &info.headers);
                if let Some(s) = info.retry_after_s {
                    headers.insert(header::RETRY_AFTER, HeaderValue::from(s.max(1)));
                }
            }
            ApiError::BudgetExceeded {
                retry_after_s: Some(s),
                ..
            } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from((*s).max(1)));
            }
            _ => {}
        }
        if matches!(self, ApiError::ShuttingDown) {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if matches!(self, ApiError::StoreUnavailable(_)) {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        resp.extensions_mut().insert(ErrorSeen(self));
        resp
    }
}

impl From<crate::policy::roles::Denied> for ApiError {
    fn from(e: crate::policy::roles::Denied) -> Self {
        ApiError::Forbidden(e.to_string())
    }
}
