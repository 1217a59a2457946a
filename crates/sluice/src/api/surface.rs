//! Other inbound surfaces (Anthropic Messages, OpenAI Responses, legacy completions) reuse
//! the whole chat pipeline: the surface parses its request into the canonical model, hands
//! the chat pipeline an OpenAI body (so auth, limits, content policy, routing, retries,
//! translation to any provider and usage records are the same code), and re-encodes the
//! OpenAI answer in its own shape — a JSON body whole, a stream event by event as it arrives.

use crate::api::openai::peek;
use crate::api::pipeline::{self, AnswerBody, Answered, Inbound};
use crate::api::RequestCtx;
use crate::app::AppState;
use crate::canonical::openai::{decode_response, OpenAiStream};
use crate::canonical::{ChatResponse, StreamEvent};
use crate::error::ApiError;
use crate::providers::native::StreamDecoder;
use crate::providers::{BodyError, Endpoint};
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::HeaderValue;
use http_body::Frame;
use http_body_util::BodyExt;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Writes a surface's stream events.
pub trait SurfaceEncoder: Send + 'static {
    fn event(&mut self, e: &StreamEvent, out: &mut Vec<u8>);
    /// The stream ended normally.
    fn finish(&mut self, out: &mut Vec<u8>);
    /// The stream broke (upstream failure, policy block): the surface's error event.
    fn error(&mut self, message: &str, out: &mut Vec<u8>);
}

/// What the chat pipeline answered, ready for a surface to re-encode.
pub enum ChatOutcome {
    /// A whole answer (status 200).
    Json {
        response: ChatResponse,
        headers: http::HeaderMap,
    },
    /// A stream (status 200): wrap its body with [`SurfaceStream`].
    Stream {
        body: Body,
        headers: http::HeaderMap,
    },
    /// An error, in OpenAI's shape: status, headers (Retry-After, ...), `error.message` and
    /// `error.type`/`code`.
    Error {
        status: http::StatusCode,
        headers: http::HeaderMap,
        message: String,
        kind: String,
        code: Option<String>,
    },
}

/// Runs the chat pipeline on `openai_body` for the request `parts` came with (its
/// authentication, request id, per-request overrides and trace context), recording usage
/// under `surface`.
/// Whether a request for `model` can go upstream untouched, in the client's own format:
/// every deployment it may reach (its own and its fallback routes') is a provider that
/// `speaks` that format, and no content rule applies (the guards read OpenAI chat shapes).
pub fn passes_through(
    app: &AppState,
    parts: &http::request::Parts,
    model: &str,
    speaks: impl Fn(&crate::providers::Provider) -> bool,
) -> bool {
    let gw = app.gateway.load();
    let Some(route) = gw.models.resolve(model) else {
        return false;
    };
    let all = |r: &crate::router::Route| {
        !r.deployments.is_empty() && r.deployments.iter().all(|d| speaks(&d.provider))
    };
    let fallbacks_ok = route
        .fallbacks
        .iter()
        .chain(route.class_fallbacks.iter().flatten())
        .all(|name| gw.models.resolve(name).is_some_and(|r| all(&r)));
    if !all(&route) || !fallbacks_ok {
        return false;
    }
    let ctx = parts.extensions.get::<RequestCtx>();
    let subject = crate::policy::content::Subject {
        team: ctx.and_then(|c| c.team.as_deref()),
        key_id: ctx.and_then(|c| c.key_id.as_deref()),
        model,
    };
    gw.config.policies.select(&subject, false).is_empty()
        && gw.config.policies.select(&subject, true).is_empty()
}

pub async fn run_chat(
    app: &AppState,
    parts: &http::request::Parts,
    openai_body: Vec<u8>,
    surface: &'static str,
) -> ChatOutcome {
    let Some(ctx) = parts.extensions.get::<RequestCtx>() else {
        return error_outcome(ApiError::Internal("request context missing".into()));
    };
    let inbound = Inbound {
        headers: &parts.headers,
        body: Body::from(openai_body),
        endpoint: Endpoint::ChatCompletions,
        surface,
        peek: peek::chat,
    };
    let answered = match pipeline::run(app, ctx, inbound).await {
        Ok(a) => a,
        Err(e) => return error_outcome(e),
    };
    let Answered {
        status,
        mut headers,
        body,
    } = answered;
    let replayed_stream = headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    headers.remove(CONTENT_LENGTH);
    headers.remove(CONTENT_TYPE);
    let bytes = match body {
        // A stream replayed whole (the response cache).
        AnswerBody::Whole(b) if replayed_stream && status.is_success() => {
            return ChatOutcome::Stream {
                body: Body::from(b),
                headers,
            }
        }
        AnswerBody::Stream(tap) if status.is_success() => {
            return ChatOutcome::Stream {
                body: Body::new(*tap),
                headers,
            }
        }
        AnswerBody::Stream(tap) => {
            match http_body_util::Limited::new(*tap, 64 << 20).collect().await {
                Ok(c) => c.to_bytes(),
                Err(e) => {
                    return ChatOutcome::Error {
                        status: http::StatusCode::BAD_GATEWAY,
                        headers,
                        message: format!("the answer could not be read: {e}"),
                        kind: "server_error".into(),
                        code: None,
                    }
                }
            }
        }
        AnswerBody::Whole(b) => b,
    };
    if status.is_success() {
        match decode_response(&bytes) {
            Ok(response) => ChatOutcome::Json { response, headers },
            Err(e) => ChatOutcome::Error {
                status: http::StatusCode::BAD_GATEWAY,
                headers,
                message: e.message,
                kind: "server_error".into(),
                code: None,
            },
        }
    } else {
        // The provider's own error, passed on with its status.
        let (message, kind, code, _) = crate::providers::parse_error_body(&bytes);
        ChatOutcome::Error {
            status,
            headers,
            message,
            kind: kind.unwrap_or_else(|| "server_error".into()),
            code,
        }
    }
}

/// A pipeline error for a surface: status, headers (Retry-After, rate limits), and the
/// OpenAI fields the surface maps to its own shape.
fn error_outcome(e: ApiError) -> ChatOutcome {
    let (kind, _, code) = e.openai_fields();
    let (kind, code) = (kind.to_string(), code.map(str::to_string));
    let message = e.to_string();
    let status = e.status_code();
    let mut headers = axum::response::IntoResponse::into_response(e)
        .headers()
        .clone();
    headers.remove(CONTENT_TYPE);
    ChatOutcome::Error {
        status,
        headers,
        message,
        kind,
        code,
    }
}

/// An OpenAI SSE body re-encoded by a surface encoder as it arrives.
pub struct SurfaceStream<E: SurfaceEncoder> {
    inner: Body,
    decoder: OpenAiStream,
    enc: E,
    events: Vec<StreamEvent>,
    done: bool,
}

impl<E: SurfaceEncoder> SurfaceStream<E> {
    pub fn new(inner: Body, enc: E) -> Self {
        Self {
            inner,
            decoder: OpenAiStream::default(),
            enc,
            events: Vec::new(),
            done: false,
        }
    }

    fn encode(&mut self, out: &mut Vec<u8>) {
        for e in self.events.drain(..) {
            self.enc.event(&e, out);
        }
    }
}

impl<E: SurfaceEncoder + Unpin> http_body::Body for SurfaceStream<E> {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    let mut out = Vec::new();
                    let r = this.decoder.feed(&data, &mut this.events);
                    this.encode(&mut out);
                    if let Err(e) = r {
                        this.enc.error(&e.message, &mut out);
                        this.done = true;
                    }
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    let mut out = Vec::new();
                    this.encode(&mut out);
                    this.enc.error(&e.to_string(), &mut out);
                    this.done = true;
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                }
                Poll::Ready(None) => {
                    let mut out = Vec::new();
                    let r = this.decoder.finish(&mut this.events);
                    this.encode(&mut out);
                    match r {
                        Ok(()) => this.enc.finish(&mut out),
                        Err(e) => this.enc.error(&e.message, &mut out),
                    }
                    this.done = true;
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                }
            }
        }
    }
}

/// A streamed response for a surface: SSE headers, plus the pipeline's own headers
/// (x-sluice-*, rate limits, request id).
pub fn stream_response<E: SurfaceEncoder + Unpin>(
    body: Body,
    headers: http::HeaderMap,
    enc: E,
) -> Response {
    let mut resp = Response::new(Body::new(SurfaceStream::new(body, enc)));
    *resp.headers_mut() = headers;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    resp
}

/// A JSON response for a surface with the pipeline's own headers.
pub fn json_response(
    status: http::StatusCode,
    headers: http::HeaderMap,
    body: Vec<u8>,
) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}
