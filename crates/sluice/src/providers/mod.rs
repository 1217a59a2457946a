//! Providers: one configured upstream each, reached over HTTP (`openai_compat.rs`) or
//! in-process (`mock.rs`). The gateway hands a provider an encoded body for an endpoint and
//! gets back the raw upstream response, so same-format requests pass through untouched.

pub mod anthropic;
pub mod bedrock;
pub mod cohere;
pub(crate) mod content_parts;
mod error;
pub mod gemini;
mod mock;
pub mod native;
pub mod ollama;
pub mod openai_compat;
#[cfg(test)]
mod torture;
pub mod url;

pub use error::{parse_error_body, ErrorSource, FallbackClass, UpstreamError, UpstreamErrorKind};

use crate::config::{Locality, ProviderConfig, ProviderKind};
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// An upstream operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Embeddings,
    /// Anthropic's `/v1/messages`, body and answer passed through untouched (Anthropic
    /// clients to Anthropic providers).
    AnthropicMessages,
    /// OpenAI's `/v1/responses`, body and answer passed through untouched (Responses clients
    /// to OpenAI-format providers with `supports_responses: true`).
    Responses,
}

impl Endpoint {
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/chat/completions",
            Endpoint::Embeddings => "/embeddings",
            Endpoint::AnthropicMessages => "/messages",
            Endpoint::Responses => "/responses",
        }
    }
}

pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// A response body from either transport, without boxing.
pub enum UpstreamBody {
    /// An HTTP answer; non-streamed ones carry the [`Cap`] on how much may be read.
    Http(hyper::body::Incoming, Option<Cap>),
    Mock(sluice_mock::MockBody),
    /// A native provider's answer, re-encoded as OpenAI bytes.
    Translated(Box<native::TranslateBody>),
    /// An OpenAI-compatible answer whose list-shaped `content` is said OpenAI's way.
    ListedContent(Box<content_parts::ListedContentBody>),
    /// A body Sluice made (a translated error); `None` once sent.
    Full(Option<Bytes>),
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            UpstreamBody::Http(b, None) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            UpstreamBody::Http(b, Some(cap)) => {
                let frame = Pin::new(b).poll_frame(cx).map_err(BodyError::from);
                if let Poll::Ready(Some(Ok(f))) = &frame {
                    if let Some(d) = f.data_ref() {
                        let n = d.len() as u64;
                        if n > cap.left {
                            return Poll::Ready(Some(Err(Box::new(ResponseTooLarge {
                                limit: cap.limit,
                            }))));
                        }
                        cap.left -= n;
                    }
                }
                frame
            }
            UpstreamBody::Mock(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            UpstreamBody::Translated(b) => Pin::new(b.as_mut()).poll_frame(cx),
            UpstreamBody::ListedContent(b) => Pin::new(b.as_mut()).poll_frame(cx),
            UpstreamBody::Full(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Http(b, _) => b.is_end_stream(),
            UpstreamBody::Mock(b) => b.is_end_stream(),
            UpstreamBody::Translated(b) => b.is_end_stream(),
            UpstreamBody::ListedContent(b) => b.is_end_stream(),
            UpstreamBody::Full(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Http(b, _) => b.size_hint(),
            UpstreamBody::Mock(b) => b.size_hint(),
            UpstreamBody::Translated(b) => b.size_hint(),
            UpstreamBody::ListedContent(b) => b.size_hint(),
            UpstreamBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}

/// What is left of a non-streamed answer's size limit (`providers[].max_response_size`):
/// non-streamed answers are read whole into memory, so an upstream must not send gigabytes.
#[derive(Debug, Clone, Copy)]
pub struct Cap {
    left: u64,
    limit: u64,
}

impl Cap {
    pub fn new(limit: u64) -> Self {
        Self { left: limit, limit }
    }
}

/// A non-streamed upstream answer passed its cap (the pipeline answers 502 naming the provider).
#[derive(Debug, thiserror::Error)]
#[error("the answer is larger than max_response_size ({limit} bytes)")]
pub struct ResponseTooLarge {
    pub limit: u64,
}

pub struct UpstreamResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: UpstreamBody,
}

enum Transport {
    Http(Box<openai_compat::HttpUpstream>),
    Native(Box<native::NativeUpstream>),
    Mock(Arc<sluice_mock::Mock>),
}

/// A configured provider, ready to send requests.
pub struct Provider {
    pub name: Arc<str>,
    /// `name` as the `x-sluice-provider` response header, built once.
    pub name_header: Option<http::HeaderValue>,
    pub kind: ProviderKind,
    pub locality: Locality,
    /// Ask for a final usage event on streams (`stream_options.include_usage`).
    pub stream_usage: bool,
    /// Implements `/v1/responses` itself (OpenAI-format kinds with `supports_responses`).
    pub supports_responses: bool,
    pub timeout: Duration,
    pub stream_idle_timeout: Duration,
    transport: Transport,
}

impl Provider {
    pub fn from_config(cfg: &ProviderConfig) -> Result<Self, String> {
        let name: Arc<str> = Arc::from(cfg.name.as_str());
        let transport = match cfg.kind {
            ProviderKind::OpenAi | ProviderKind::OpenAiCompatible | ProviderKind::AzureOpenAi => {
                Transport::Http(Box::new(openai_compat::HttpUpstream::new(cfg)?))
            }
            ProviderKind::Mock => Transport::Mock(sluice_mock::Mock::new(cfg.mock.clone())),
            ProviderKind::Anthropic => Transport::Native(Box::new(anthropic::upstream(cfg)?)),
            ProviderKind::Gemini => Transport::Native(Box::new(gemini::upstream(cfg)?)),
            ProviderKind::Vertex => Transport::Native(Box::new(gemini::vertex::upstream(cfg)?)),
            ProviderKind::Bedrock => Transport::Native(Box::new(bedrock::upstream(cfg)?)),
            ProviderKind::Cohere => Transport::Native(Box::new(cohere::upstream(cfg)?)),
            ProviderKind::Ollama => Transport::Native(Box::new(ollama::upstream(cfg)?)),
        };
        Ok(Self {
            name_header: http::HeaderValue::from_str(&name).ok(),
            name,
            kind: cfg.kind,
            locality: cfg.locality,
            stream_usage: cfg.stream_usage,
            supports_responses: cfg.native.supports_responses,
            timeout: cfg.timeout,
            stream_idle_timeout: cfg.stream_idle_timeout,
            transport,
        })
    }

    /// Sends an already-encoded body; resolves when the response headers arrive (or the
    /// provider's timeout passes).
    pub async fn send(
        &self,
        endpoint: Endpoint,
        model: &str,
        body: Bytes,
        request_id: &str,
    ) -> Result<UpstreamResponse, UpstreamError> {
        self.send_within(endpoint, model, body, request_id, self.timeout)
            .await
    }

    /// [`Provider::send`] with another timeout (a deployment's own, or a client's shorter one).
    pub async fn send_within(
        &self,
        endpoint: Endpoint,
        model: &str,
        body: Bytes,
        request_id: &str,
        timeout: Duration,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let fut = async {
            match &self.transport {
                Transport::Http(h) => h.send(&self.name, endpoint, model, body, request_id).await,
                Transport::Native(n) => n.send(&self.name, endpoint, body, request_id).await,
                Transport::Mock(m) => mock::send(m, &self.name, endpoint, body, request_id).await,
            }
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(UpstreamError::new(
                &self.name,
                self.target(endpoint),
                UpstreamErrorKind::Timeout { after: timeout },
            )),
        }
    }

    /// A POST of `body` to `path` under a native provider's base URL with its auth (e.g.
    /// Anthropic's count_tokens); the whole answer.
    pub async fn post_native(
        &self,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(StatusCode, Bytes), UpstreamError> {
        match &self.transport {
            Transport::Native(n) => n.post_raw(&self.name, path, body, self.timeout).await,
            _ => Err(UpstreamError::new(
                &self.name,
                path.to_string(),
                UpstreamErrorKind::Unavailable(format!(
                    "provider `{}` has no native endpoint {path}",
                    self.name
                )),
            )),
        }
    }

    /// What a request to `endpoint` is sent to, for error messages.
    pub fn target(&self, endpoint: Endpoint) -> String {
        match &self.transport {
            Transport::Http(h) => format!("POST {}", h.uri(endpoint)),
            Transport::Native(n) => format!("POST {}", n.base_url()),
            Transport::Mock(_) => format!("built-in mock {}", endpoint.path()),
        }
    }
}
