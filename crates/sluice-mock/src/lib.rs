//! The mock provider: settings, `Mock` (routing by path, counters, order of faults), replies.
//!
//! [`Mock::handle`] is the whole mock as one async function, so the gateway can run it in-process
//! as its built-in `mock` provider; [`serve`] puts the same function behind a TCP listener.
//! Wire formats live in their own modules (`openai`); this one decides *whether* and *when* a
//! request is answered, the format modules decide *what* the answer looks like.

mod anthropic;
mod bedrock;
mod body;
mod cohere;
mod control;
mod faults;
mod gemini;
mod native;
mod ollama;
mod openai;
mod server;

pub use server::serve;

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;

use crate::body::{End, EventBody, Pacing};
use crate::control::Recorded;
use crate::faults::{roll, Fault, Plan};
use crate::openai::Payload;

/// The body of every mock response: whole JSON bodies and paced event streams alike.
pub type MockBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// Process-wide behaviour. Every field can be overridden per request by an `x-mock-*` header.
#[derive(Clone, Debug)]
pub struct MockSettings {
    /// Delay before the response headers.
    pub latency_ms: u64,
    /// Streams: delay between the headers and the first event.
    pub ttft_ms: u64,
    /// Streams: number of content pieces the reply is split into.
    pub chunks: usize,
    /// Streams: delay between events.
    pub chunk_delay_ms: u64,
    /// Answer every provider request with this error status (>= 400) instead of a reply.
    pub status: Option<u16>,
    /// Fraction (0..1) of requests that fail with `failure_status`.
    pub failure_rate: f64,
    /// Status used by `failure_rate`.
    pub failure_status: u16,
    /// Fraction (0..1) of requests answered by tearing the connection down (RST).
    pub reset_rate: f64,
    /// Stall every request: streams send this many events then hang; JSON never answers.
    pub stall_after: Option<usize>,
    /// Embedding length when the request does not ask for `dimensions`.
    pub embedding_dims: usize,
}

impl Default for MockSettings {
    fn default() -> Self {
        Self {
            latency_ms: 0,
            ttft_ms: 0,
            chunks: 8,
            chunk_delay_ms: 0,
            status: None,
            failure_rate: 0.0,
            failure_status: 500,
            reset_rate: 0.0,
            stall_after: None,
            embedding_dims: 16,
        }
    }
}

/// What the mock wants done with a request.
pub enum MockReply {
    Response(Response<MockBody>),
    /// Tear the connection down (TCP RST) without any response.
    Reset,
}

/// Upper bound on client-chosen embedding sizes, so a typo cannot exhaust memory.
pub(crate) const MAX_EMBEDDING_DIMS: usize = 65_536;

const X_MOCK_REQUEST_ID: HeaderName = HeaderName::from_static("x-mock-request-id");
const X_MOCK_SAW_AUTHORIZATION: HeaderName = HeaderName::from_static("x-mock-saw-authorization");
const RETRY_AFTER: HeaderName = HeaderName::from_static("retry-after");
const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");
const EVENT_STREAM: HeaderValue = HeaderValue::from_static("text/event-stream");
const NO_CACHE: HeaderValue = HeaderValue::from_static("no-cache");
const YES: HeaderValue = HeaderValue::from_static("yes");
const NO: HeaderValue = HeaderValue::from_static("no");

/// The fake provider. Cheap to share: counters are atomics, the only lock guards the
/// last-request slot and the hot path never waits on it.
pub struct Mock {
    settings: MockSettings,
    requests: AtomicU64,
    /// Requests whose client went away before the answer, and streams before their last
    /// event (e.g. a cancelled hedge, a gateway whose client hung up).
    cancelled: Arc<AtomicU64>,
    last_request: Mutex<Option<Arc<Recorded>>>,
    models: Bytes,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    ChatCompletions,
    Embeddings,
    Models,
    Model,
    Stats,
    LastRequest,
    Reset,
    /// A provider's own wire format (Anthropic, Gemini, Bedrock, ...).
    Native(native::Op),
    Unknown,
}

impl Route {
    /// Provider paths answer with and without the `/v1` prefix.
    fn of(path: &str) -> Route {
        if let Some(op) = native::Op::of(path) {
            return Route::Native(op);
        }
        let path = azure_path(path).unwrap_or(path);
        let path = match path.strip_prefix("/v1") {
            Some(rest) if rest.starts_with('/') => rest,
            _ => path,
        };
        match path {
            "/chat/completions" => Route::ChatCompletions,
            "/embeddings" => Route::Embeddings,
            "/models" => Route::Models,
            "/_mock/stats" => Route::Stats,
            "/_mock/last_request" => Route::LastRequest,
            "/_mock/reset" => Route::Reset,
            p if p.len() > "/models/".len() && p.starts_with("/models/") => Route::Model,
            _ => Route::Unknown,
        }
    }

    fn method(self) -> Method {
        match self {
            Route::ChatCompletions | Route::Embeddings | Route::Reset | Route::Native(_) => {
                Method::POST
            }
            _ => Method::GET,
        }
    }

    fn is_control(self) -> bool {
        matches!(self, Route::Stats | Route::LastRequest | Route::Reset)
    }
}

/// Azure OpenAI paths, as the OpenAI path they stand for: deployments
/// (`/openai/deployments/{d}/chat/completions`, the `api-version` is in the query) and the
/// v1 API (`/openai/v1/...`).
fn azure_path(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/openai")?;
    if let Some(deployment) = rest.strip_prefix("/deployments/") {
        let (name, op) = deployment.split_once('/')?;
        return (!name.is_empty())
            .then_some(&deployment[name.len()..])
            .filter(|_| op == "chat/completions" || op == "embeddings");
    }
    rest.starts_with("/v1/").then_some(rest)
}

/// An error answer, rendered in the wire format of the endpoint.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) message: Cow<'static, str>,
    pub(crate) kind: &'static str,
    pub(crate) param: Option<&'static str>,
    pub(crate) code: Option<&'static str>,
}

impl ApiError {
    pub(crate) fn invalid(
        message: impl Into<Cow<'static, str>>,
        param: Option<&'static str>,
    ) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param,
            code: None,
        }
    }

    pub(crate) fn internal(message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: None,
        }
    }

    /// The error injected by `x-mock-status` / `failure_rate`.
    fn injected(status: StatusCode) -> Self {
        let kind = match status.as_u16() {
            400 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            429 => "rate_limit_error",
            500..=599 => "server_error",
            _ => "invalid_request_error",
        };
        Self {
            status,
            message: format!("mock error {}", status.as_u16()).into(),
            kind,
            param: None,
            code: None,
        }
    }
}

fn json_response(status: StatusCode, body: Bytes) -> Response<MockBody> {
    let mut response = Response::new(body::full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, APPLICATION_JSON);
    response
}

fn error_response(error: &ApiError) -> Response<MockBody> {
    json_response(error.status, openai::error_body(error))
}

/// An error in the wire format of `route`.
fn error_response_for(route: Route, error: &ApiError) -> Response<MockBody> {
    match route {
        Route::Native(op) => {
            let mut r = json_response(error.status, op.error_body(error));
            for (name, value) in op.error_headers(error) {
                r.headers_mut().insert(name, value);
            }
            r
        }
        _ => error_response(error),
    }
}

impl Mock {
    pub fn new(settings: MockSettings) -> Arc<Mock> {
        Arc::new(Mock {
            settings,
            requests: AtomicU64::new(0),
            cancelled: Arc::new(AtomicU64::new(0)),
            last_request: Mutex::new(None),
            models: openai::models_body(),
        })
    }

    /// Provider requests seen since start (or the last `POST /_mock/reset`).
    pub fn request_count(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Streams dropped by their client before they ended, since start (or the last reset).
    pub fn cancelled_count(&self) -> u64 {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// Answers one request. Control endpoints (`/_mock/*`) are never counted, recorded or faulted.
    pub async fn handle(&self, req: Request<Bytes>) -> MockReply {
        let (parts, body) = req.into_parts();
        let route = Route::of(parts.uri.path());
        if route.is_control() {
            return MockReply::Response(self.control(route, &parts.method));
        }
        let number = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        let plan = Plan::new(&self.settings, &parts.headers);
        let recorded = Arc::new(Recorded {
            method: parts.method,
            uri: parts.uri,
            headers: parts.headers,
            body,
        });
        self.remember(&recorded);
        // Counted as cancelled if the client goes away before the answer is ready (hyper
        // drops this future); a stream's body counts its own cancellation after that.
        let mut pending = CancelOnDrop(Some(&self.cancelled));
        let reply = self.provider(route, number, &plan, &recorded).await;
        pending.0 = None;
        match reply {
            MockReply::Response(mut response) => {
                let headers = response.headers_mut();
                for (name, value) in &plan.ratelimit {
                    headers.insert(name.clone(), value.clone());
                }
                if let Some(id) = plan.request_id {
                    headers.insert(X_MOCK_REQUEST_ID, id);
                }
                headers.insert(
                    X_MOCK_SAW_AUTHORIZATION,
                    if plan.saw_authorization { YES } else { NO },
                );
                MockReply::Response(response)
            }
            MockReply::Reset => MockReply::Reset,
        }
    }

    /// Steps, in order: path and method checks; latency; reset faults; injected statuses;
    /// the format module's answer (400s for bad bodies); delivery faults (stall, reset mid-body).
    async fn provider(
        &self,
        route: Route,
        number: u64,
        plan: &Plan,
        recorded: &Recorded,
    ) -> MockReply {
        if route == Route::Unknown {
            let message = format!("Invalid URL ({} {})", recorded.method, recorded.uri.path());
            let error = ApiError {
                status: StatusCode::NOT_FOUND,
                ..ApiError::invalid(message, None)
            };
            return MockReply::Response(error_response(&error));
        }
        if recorded.method != route.method() {
            return MockReply::Response(method_not_allowed(route, &recorded.method));
        }
        if !plan.latency.is_zero() {
            tokio::time::sleep(plan.latency).await;
        }
        if plan.fault == Some(Fault::Reset) || roll(plan.reset_rate) {
            return MockReply::Reset;
        }
        let injected = plan
            .status
            .filter(|s| *s >= 400)
            .or_else(|| roll(plan.failure_rate).then_some(self.settings.failure_status));
        if let Some(status) = injected {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut error = ApiError::injected(status);
            error.code = plan.error_code;
            let mut response = error_response_for(route, &error);
            if matches!(status.as_u16(), 429 | 503) {
                let retry_after = plan
                    .retry_after
                    .clone()
                    .unwrap_or(HeaderValue::from_static("1"));
                response.headers_mut().insert(RETRY_AFTER, retry_after);
            }
            return MockReply::Response(response);
        }
        let payload = match route {
            Route::ChatCompletions => openai::chat(&recorded.body, number, plan.chunks),
            Route::Embeddings => openai::embeddings(&recorded.body, self.settings.embedding_dims),
            Route::Models => Ok(Payload::Json(self.models.clone())),
            Route::Model => {
                let id = recorded
                    .uri
                    .path()
                    .split_once("/models/")
                    .map_or("", |(_, id)| id);
                openai::model(id)
            }
            Route::Native(op) => op.answer(recorded, number, plan.chunks),
            Route::Stats | Route::LastRequest | Route::Reset | Route::Unknown => Err(
                ApiError::internal("control route reached the provider path"),
            ),
        };
        match payload {
            Ok(payload) => deliver(payload, plan, &self.cancelled).await,
            Err(error) => MockReply::Response(error_response_for(route, &error)),
        }
    }
}

/// Counts a request whose handler was dropped before it answered.
struct CancelOnDrop<'a>(Option<&'a AtomicU64>);

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.0 {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn method_not_allowed(route: Route, method: &Method) -> Response<MockBody> {
    let allowed = route.method();
    let message = format!("Method {method} not allowed; use {allowed}");
    let error = ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        ..ApiError::invalid(message, None)
    };
    let mut response = error_response(&error);
    if let Ok(value) = HeaderValue::from_str(allowed.as_str()) {
        response.headers_mut().insert(http::header::ALLOW, value);
    }
    response
}

/// Turns a payload into a response, applying pacing and delivery faults.
async fn deliver(payload: Payload, plan: &Plan, cancelled: &Arc<AtomicU64>) -> MockReply {
    let end = match plan.fault {
        Some(Fault::Stall) => End::Stall,
        Some(Fault::ResetAfterHeaders) => End::Abort,
        Some(Fault::Reset) | None => End::Finish,
    };
    let aborts = end == End::Abort;
    let mut response = match payload {
        Payload::Json(bytes) => match end {
            End::Finish => return MockReply::Response(json_response(StatusCode::OK, bytes)),
            End::Stall => return std::future::pending().await,
            End::Abort => {
                // Promise the whole body, send half of it, then fail.
                let length = HeaderValue::from(bytes.len());
                let half = bytes.slice(..bytes.len() / 2);
                let half_len = half.len();
                let body = EventBody::new(half, vec![half_len], Pacing::default(), 1, End::Abort);
                let mut response = json_response(StatusCode::OK, Bytes::new());
                *response.body_mut() = BodyExt::boxed(body);
                response.headers_mut().insert(CONTENT_LENGTH, length);
                response
            }
        },
        Payload::Stream(events) => {
            let limit = if end == End::Finish {
                usize::MAX
            } else {
                plan.events_before_fault()
            };
            let body = EventBody::new(
                Bytes::from(events.buf),
                events.lens,
                plan.pacing,
                limit,
                end,
            )
            .counting_cancel(Arc::clone(cancelled));
            let content_type = events.content_type.unwrap_or(EVENT_STREAM);
            let mut response = Response::new(BodyExt::boxed(body));
            let headers = response.headers_mut();
            headers.insert(CONTENT_TYPE, content_type);
            headers.insert(CACHE_CONTROL, NO_CACHE);
            response
        }
    };
    if aborts {
        response.extensions_mut().insert(AbortsConnection);
    }
    MockReply::Response(response)
}

/// Marks a response whose body ends in an error: the server then resets the TCP connection.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AbortsConnection;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn routes_with_and_without_v1() {
        assert_eq!(Route::of("/v1/chat/completions"), Route::ChatCompletions);
        assert_eq!(Route::of("/chat/completions"), Route::ChatCompletions);
        assert_eq!(Route::of("/v1/embeddings"), Route::Embeddings);
        assert_eq!(Route::of("/models"), Route::Models);
        assert_eq!(Route::of("/v1/models/mock-1"), Route::Model);
        assert_eq!(Route::of("/v1/models/"), Route::Unknown);
        assert_eq!(Route::of("/v1"), Route::Unknown);
        assert_eq!(Route::of("/v1x/chat/completions"), Route::Unknown);
        assert_eq!(Route::of("/_mock/stats"), Route::Stats);
        assert_eq!(
            Route::of("/openai/deployments/gpt-4o/chat/completions"),
            Route::ChatCompletions
        );
        assert_eq!(
            Route::of("/openai/deployments/emb/embeddings"),
            Route::Embeddings
        );
        assert_eq!(
            Route::of("/openai/v1/chat/completions"),
            Route::ChatCompletions
        );
        assert_eq!(
            Route::of("/openai/deployments//chat/completions"),
            Route::Unknown
        );
        assert_eq!(Route::of("/openai/deployments/d/models"), Route::Unknown);
        assert_eq!(Route::of("/v2/chat"), Route::Native(native::Op::CohereChat));
        assert_eq!(
            Route::of("/api/chat"),
            Route::Native(native::Op::OllamaChat)
        );
    }

    #[test]
    fn injected_error_types_follow_status() {
        assert_eq!(
            ApiError::injected(StatusCode::TOO_MANY_REQUESTS).kind,
            "rate_limit_error"
        );
        assert_eq!(
            ApiError::injected(StatusCode::UNAUTHORIZED).kind,
            "authentication_error"
        );
        assert_eq!(
            ApiError::injected(StatusCode::BAD_GATEWAY).kind,
            "server_error"
        );
        assert_eq!(
            ApiError::injected(StatusCode::NOT_FOUND).message,
            "mock error 404"
        );
    }

    #[test]
    fn handle_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let mock = Mock::new(MockSettings::default());
        let future = mock.handle(Request::new(Bytes::new()));
        assert_send(&future);
    }
}
