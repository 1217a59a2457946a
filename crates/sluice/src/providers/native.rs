//! Providers that do not speak OpenAI chat completions. The gateway hands every provider an
//! OpenAI-format body; a native provider parses it into the canonical request, lets its
//! [`Codec`] encode the provider's own request, and turns the answer (JSON, or a stream in
//! the provider's framing) back into OpenAI bytes as it arrives. Errors come back as OpenAI
//! error bodies with a faithful status, so dispatch and retries see one shape.

use super::{
    BodyError, Endpoint, UpstreamBody, UpstreamError, UpstreamErrorKind, UpstreamResponse,
};
use crate::canonical::openai::{self as oa, RequestError, StreamEncoder};
use crate::canonical::{ChatRequest, ChatResponse, Message, Part, Role, StreamEvent};
use crate::config::raw::UnsupportedParams;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// What a codec built for one request.
pub struct Encoded {
    /// Path and query, appended to the provider's base URL.
    pub path: String,
    pub body: Vec<u8>,
    /// Headers for this request only (the provider's own are added by the transport).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Request parameters the provider cannot take and that were left out.
    pub dropped: Vec<String>,
    /// Of those, the ones whose loss changes what the client gets, beyond the generic ones
    /// [`lossy`] finds (`n`, `logprobs`): refused unless `unsupported_params: drop`.
    pub refused: Vec<Unhonoured>,
    /// What the decoder needs to know about the request.
    pub ctx: DecodeCtx,
}

/// A parameter the provider cannot honour, with why (for the 400 that names it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unhonoured {
    pub param: String,
    pub detail: String,
}

impl Unhonoured {
    pub fn new(param: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            param: param.into(),
            detail: detail.into(),
        }
    }
}

/// The dropped parameters that change what the client gets, for every codec: more than one
/// choice (`n`) and log probabilities; then the codec's own (a `tool_choice` mode it cannot
/// express, a forced tool with thinking).
pub fn lossy(req: &ChatRequest, dropped: &[String], own: &[Unhonoured]) -> Vec<Unhonoured> {
    let mut out = Vec::new();
    for name in dropped {
        let v = req.extra.get(name.as_str());
        let detail = match name.as_str() {
            "n" if v.and_then(serde_json::Value::as_u64).unwrap_or(1) > 1 => {
                "`n` > 1 (several choices in one answer)"
            }
            "logprobs" if v.and_then(serde_json::Value::as_bool) == Some(true) => {
                "`logprobs` (log probabilities of the output tokens)"
            }
            "top_logprobs" if v.and_then(serde_json::Value::as_u64).unwrap_or(0) > 0 => {
                "`top_logprobs`"
            }
            _ => continue,
        };
        out.push(Unhonoured::new(name.clone(), detail));
    }
    out.extend(own.iter().cloned());
    out
}

/// The 400 for parameters a provider cannot honour, naming them and the provider.
pub fn refusal(provider: &str, items: &[Unhonoured], mode: UnsupportedParams) -> RequestError {
    let list: Vec<&str> = items.iter().map(|u| u.detail.as_str()).collect();
    let hint = match mode {
        UnsupportedParams::Reject => "its setting unsupported_params is reject",
        _ => "set unsupported_params: drop on the provider to send the request without them",
    };
    RequestError::new(
        format!(
            "provider `{provider}` cannot honour {} ({hint})",
            list.join("; ")
        ),
        items.first().map(|u| u.param.as_str()),
    )
}

/// Per-request facts the response decoders use.
#[derive(Debug, Clone, Default)]
pub struct DecodeCtx {
    pub model: String,
    /// A tool the codec added to obtain structured output (its arguments become the text).
    pub json_tool: Option<String>,
}

/// A response that could not be decoded, or an error the provider sent inside a stream.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct DecodeError {
    pub message: String,
}

impl DecodeError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

/// A provider error mapped to OpenAI's vocabulary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedError {
    pub status: StatusCode,
    pub message: String,
    /// OpenAI `error.type`.
    pub kind: &'static str,
    /// OpenAI `error.code` (`context_length_exceeded`, `content_filter`, ...).
    pub code: Option<&'static str>,
}

/// One provider family's wire format.
pub trait Codec: Send + Sync + 'static {
    /// The native request for a canonical chat request (`req.model` is the provider's model).
    fn encode(&self, req: &ChatRequest) -> Result<Encoded, RequestError>;
    /// A whole JSON answer.
    fn decode(&self, body: &[u8], ctx: &DecodeCtx) -> Result<ChatResponse, DecodeError>;
    /// A decoder for the provider's stream framing.
    fn stream_decoder(&self, ctx: &DecodeCtx) -> Box<dyn StreamDecoder>;
    /// An error response.
    fn error(&self, status: StatusCode, body: &[u8]) -> MappedError;
    /// The native request for an OpenAI embeddings body, when the provider has embeddings.
    fn encode_embeddings(&self, _body: &[u8]) -> Option<Result<Encoded, RequestError>> {
        None
    }
    /// Where this provider takes Anthropic Messages bodies as they are (Anthropic itself).
    fn messages_path(&self) -> Option<&str> {
        None
    }
    /// The model family whose thinking signatures `model` makes and takes back
    /// ([`crate::canonical::signature`]); `None` when it makes none.
    fn signature_family(&self, _model: &str) -> Option<&'static str> {
        None
    }
    /// An embeddings answer as an OpenAI `list` of embeddings.
    fn decode_embeddings(&self, _body: &[u8], _ctx: &DecodeCtx) -> Result<Vec<u8>, DecodeError> {
        Err(DecodeError::new("embeddings are not supported"))
    }
}

/// Turns a provider's stream bytes into canonical events. Chunk boundaries are arbitrary.
pub trait StreamDecoder: Send + 'static {
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<StreamEvent>) -> Result<(), DecodeError>;
    /// The stream ended; flush what is pending.
    fn finish(&mut self, _out: &mut Vec<StreamEvent>) -> Result<(), DecodeError> {
        Ok(())
    }
}

pub type AuthFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// Authentication that depends on the request (SigV4) or on a token fetched and refreshed
/// over time (Vertex OAuth). Static keys are plain headers and need none.
pub trait RequestAuth: Send + Sync + 'static {
    fn apply<'a>(
        &'a self,
        req: &'a mut http::Request<Full<Bytes>>,
        body: &'a [u8],
    ) -> AuthFuture<'a>;
}

pub struct NativeUpstream {
    pub codec: Arc<dyn Codec>,
    client: super::openai_compat::HttpsClient,
    base_url: String,
    /// Static auth plus the configured extra headers.
    headers: HeaderMap,
    auth: Option<Arc<dyn RequestAuth>>,
    unsupported: UnsupportedParams,
    /// Which model names may go into this provider's URLs.
    model_grammar: super::url::ModelGrammar,
    /// `max_response_size` for non-streamed answers.
    max_response: u64,
}

const ERROR_BODY_LIMIT: usize = 1 << 20;
const X_SLUICE_DROPPED_PARAMS: HeaderName = HeaderName::from_static("x-sluice-dropped-params");

impl NativeUpstream {
    pub fn new(
        cfg: &crate::config::ProviderConfig,
        codec: Arc<dyn Codec>,
        mut headers: HeaderMap,
        auth: Option<Arc<dyn RequestAuth>>,
    ) -> Result<Self, String> {
        let base_url = cfg
            .base_url
            .clone()
            .ok_or_else(|| format!("provider {}: no base_url", cfg.name))?;
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(
            http::header::USER_AGENT,
            HeaderValue::from_static(concat!("sluice/", env!("CARGO_PKG_VERSION"))),
        );
        for (n, v) in &cfg.headers {
            headers.insert(n.clone(), v.clone());
        }
        Ok(Self {
            codec,
            client: super::openai_compat::pooled_client(cfg),
            base_url,
            headers,
            auth,
            unsupported: cfg.native.unsupported_params,
            model_grammar: super::url::ModelGrammar::of(cfg.kind),
            max_response: cfg.max_response_bytes,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub async fn send(
        &self,
        provider: &Arc<str>,
        endpoint: Endpoint,
        body: Bytes,
        request_id: &str,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let target = |path: &str| format!("POST {}{path}", self.base_url);
        let (encoded, req) = match endpoint {
            // Anthropic's own body, not translated.
            Endpoint::AnthropicMessages => {
                return self.send_messages(provider, body, request_id).await
            }
            Endpoint::Responses => {
                return Ok(bad_request(&RequestError::new(
                    format!("provider `{provider}` does not speak the Responses API"),
                    Some("model"),
                )))
            }
            Endpoint::ChatCompletions => {
                let mut req = match oa::decode_request(&body) {
                    Ok(r) => r,
                    Err(e) => return Ok(bad_request(&e)),
                };
                let family = self.codec.signature_family(&req.model);
                keep_own_signatures(&mut req, family);
                match self.codec.encode(&req) {
                    Ok(enc) => (enc, Some(req)),
                    Err(e) => return Ok(bad_request(&e)),
                }
            }
            Endpoint::Embeddings => match self.codec.encode_embeddings(&body) {
                Some(Ok(enc)) => (enc, None),
                Some(Err(e)) => return Ok(bad_request(&e)),
                None => {
                    return Ok(bad_request(&RequestError::new(
                        format!("provider `{provider}` does not offer embeddings"),
                        Some("model"),
                    )))
                }
            },
        };
        if let Err(e) = super::url::check_model(self.model_grammar, provider, &encoded.ctx.model) {
            return Ok(bad_request(&e));
        }
        let refused = match (&req, self.unsupported) {
            (_, UnsupportedParams::Drop) | (None, UnsupportedParams::RejectLossy) => Vec::new(),
            (_, UnsupportedParams::Reject) => encoded
                .dropped
                .iter()
                .map(|p| {
                    encoded
                        .refused
                        .iter()
                        .find(|u| &u.param == p)
                        .cloned()
                        .unwrap_or_else(|| Unhonoured::new(p.clone(), format!("`{p}`")))
                })
                .collect(),
            (Some(r), UnsupportedParams::RejectLossy) => {
                lossy(r, &encoded.dropped, &encoded.refused)
            }
        };
        if !refused.is_empty() {
            return Ok(bad_request(&refusal(provider, &refused, self.unsupported)));
        }
        let uri: http::Uri = format!("{}{}", self.base_url, encoded.path)
            .parse()
            .map_err(|e| {
                UpstreamError::new(
                    provider,
                    target(&encoded.path),
                    UpstreamErrorKind::Protocol(format!("bad upstream URL: {e}")),
                )
            })?;
        let native_body = Bytes::from(encoded.body);
        let mut http_req = http::Request::new(Full::new(native_body.clone()));
        *http_req.method_mut() = Method::POST;
        *http_req.uri_mut() = uri;
        let h = http_req.headers_mut();
        for (n, v) in &self.headers {
            h.insert(n, v.clone());
        }
        for (n, v) in &encoded.headers {
            h.insert(n, v.clone());
        }
        if let Ok(v) = HeaderValue::from_str(request_id) {
            h.insert("x-request-id", v);
        }
        if let Some(auth) = &self.auth {
            auth.apply(&mut http_req, &native_body).await.map_err(|e| {
                UpstreamError::new(
                    provider,
                    target(&encoded.path),
                    UpstreamErrorKind::Connect(format!("could not authenticate: {e}")),
                )
            })?;
        }
        let resp = super::openai_compat::execute(
            &self.client,
            provider,
            http_req,
            &target(&encoded.path),
            self.max_response,
        )
        .await?;
        if !resp.status.is_success() {
            return Ok(self.error_response(resp).await);
        }
        let mut headers = HeaderMap::new();
        if !encoded.dropped.is_empty() {
            if let Ok(v) = HeaderValue::from_str(&encoded.dropped.join(",")) {
                headers.insert(X_SLUICE_DROPPED_PARAMS, v);
            }
        }
        let stream = req.as_ref().is_some_and(|r| r.stream);
        let family = self.codec.signature_family(&encoded.ctx.model);
        let stops = req.as_ref().map(|r| r.stop.clone()).unwrap_or_default();
        let mode = match &req {
            None => Mode::Embeddings,
            Some(r) if r.stream => Mode::Stream {
                decoder: self.codec.stream_decoder(&encoded.ctx),
                encoder: Box::new(StreamEncoder::new(
                    format!("chatcmpl-{request_id}"),
                    encoded.ctx.model.clone(),
                    unix_now(),
                    r.include_usage,
                )),
            },
            Some(_) => Mode::Json,
        };
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static(if stream {
                "text/event-stream"
            } else {
                "application/json"
            }),
        );
        Ok(UpstreamResponse {
            status: StatusCode::OK,
            headers,
            body: UpstreamBody::Translated(Box::new(TranslateBody {
                inner: resp.body,
                mode,
                codec: self.codec.clone(),
                ctx: encoded.ctx,
                family,
                stops,
                events: Vec::new(),
                collected: Vec::new(),
                done: false,
                failed: None,
            })),
        })
    }

    /// An Anthropic Messages body sent as it is; the answer comes back untouched (errors in
    /// OpenAI's shape like every other provider error).
    async fn send_messages(
        &self,
        provider: &Arc<str>,
        body: Bytes,
        request_id: &str,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let Some(path) = self.codec.messages_path().map(str::to_string) else {
            return Ok(bad_request(&RequestError::new(
                format!("provider `{provider}` does not speak the Anthropic Messages API"),
                Some("model"),
            )));
        };
        let target = format!("POST {}{path}", self.base_url);
        let uri: http::Uri = format!("{}{path}", self.base_url).parse().map_err(|e| {
            UpstreamError::new(
                provider,
                target.clone(),
                UpstreamErrorKind::Protocol(format!("bad upstream URL: {e}")),
            )
        })?;
        let mut req = http::Request::new(Full::new(body.clone()));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = uri;
        for (n, v) in &self.headers {
            req.headers_mut().insert(n, v.clone());
        }
        if let Ok(v) = HeaderValue::from_str(request_id) {
            req.headers_mut().insert("x-request-id", v);
        }
        if let Some(auth) = &self.auth {
            auth.apply(&mut req, &body).await.map_err(|e| {
                UpstreamError::new(
                    provider,
                    target.clone(),
                    UpstreamErrorKind::Connect(format!("could not authenticate: {e}")),
                )
            })?;
        }
        let resp =
            super::openai_compat::execute(&self.client, provider, req, &target, self.max_response)
                .await?;
        if resp.status.is_success() {
            Ok(resp)
        } else {
            Ok(self.error_response(resp).await)
        }
    }

    /// POSTs `body` to `path` with the provider's headers and auth; the whole answer.
    pub async fn post_raw(
        &self,
        provider: &Arc<str>,
        path: &str,
        body: Vec<u8>,
        timeout: std::time::Duration,
    ) -> Result<(StatusCode, Bytes), UpstreamError> {
        let target = format!("POST {}{path}", self.base_url);
        let fail = |kind| UpstreamError::new(provider, target.clone(), kind);
        let uri: http::Uri = format!("{}{path}", self.base_url).parse().map_err(|e| {
            fail(UpstreamErrorKind::Protocol(format!(
                "bad upstream URL: {e}"
            )))
        })?;
        let body = Bytes::from(body);
        let mut req = http::Request::new(Full::new(body.clone()));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = uri;
        for (n, v) in &self.headers {
            req.headers_mut().insert(n, v.clone());
        }
        if let Some(auth) = &self.auth {
            auth.apply(&mut req, &body).await.map_err(|e| {
                fail(UpstreamErrorKind::Connect(format!(
                    "could not authenticate: {e}"
                )))
            })?;
        }
        let fut = async {
            let resp = super::openai_compat::execute(
                &self.client,
                provider,
                req,
                &target,
                self.max_response,
            )
            .await?;
            let limited = http_body_util::Limited::new(resp.body, ERROR_BODY_LIMIT);
            let bytes = limited
                .collect()
                .await
                .map_err(|e| fail(UpstreamErrorKind::Protocol(e.to_string())))?
                .to_bytes();
            Ok((resp.status, bytes))
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(fail(UpstreamErrorKind::Timeout { after: timeout })),
        }
    }

    async fn error_response(&self, resp: UpstreamResponse) -> UpstreamResponse {
        let mut headers = HeaderMap::new();
        for name in [RETRY_AFTER, HeaderName::from_static("retry-after-ms")] {
            if let Some(v) = resp.headers.get(&name) {
                headers.insert(name, v.clone());
            }
        }
        let limited = http_body_util::Limited::new(resp.body, ERROR_BODY_LIMIT);
        let body = match tokio::time::timeout(std::time::Duration::from_secs(10), limited.collect())
            .await
        {
            Ok(Ok(c)) => c.to_bytes(),
            _ => Bytes::new(),
        };
        let m = self.codec.error(resp.status, &body);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        UpstreamResponse {
            status: m.status,
            headers,
            body: UpstreamBody::Full(Some(Bytes::from(oa::error_body(
                &m.message, m.kind, m.code,
            )))),
        }
    }
}

/// Thinking signatures another model family made are left out (the provider would refuse
/// them); the family's own lose their tag.
fn keep_own_signatures(req: &mut ChatRequest, family: Option<&str>) {
    use crate::canonical::signature;
    let own = |data: &str| family.and_then(|f| signature::for_family(f, data).map(str::to_string));
    for m in &mut req.messages {
        // Redacted thinking is opaque data for the family that made it, and nothing else.
        m.thinking.retain_mut(|t| match t.redacted.take() {
            Some(d) => {
                t.redacted = own(&d);
                t.redacted.is_some()
            }
            None => true,
        });
        for t in &mut m.thinking {
            let Some(sig) = t.signature.take() else {
                continue;
            };
            // A provider that makes no signatures takes none back.
            t.signature = own(&sig);
        }
    }
}

/// A 400 made by the gateway in the OpenAI shape (the dispatcher passes it on, no retry).
pub(crate) fn bad_request(e: &RequestError) -> UpstreamResponse {
    let body = serde_json::json!({"error": {"message": e.message, "type": "invalid_request_error",
                                            "param": e.param, "code": null}});
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    UpstreamResponse {
        status: StatusCode::BAD_REQUEST,
        headers,
        body: UpstreamBody::Full(Some(Bytes::from(body.to_string()))),
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

enum Mode {
    Json,
    Embeddings,
    Stream {
        decoder: Box<dyn StreamDecoder>,
        encoder: Box<StreamEncoder>,
    },
}

/// The provider's response body, re-encoded as OpenAI bytes on the fly.
pub struct TranslateBody {
    inner: UpstreamBody,
    mode: Mode,
    codec: Arc<dyn Codec>,
    ctx: DecodeCtx,
    /// Tags the thinking signatures of the answer ([`crate::canonical::signature`]).
    family: Option<&'static str>,
    /// The request's stop sequences, for providers that say a stop sequence matched but
    /// not which ([`which_stop`]).
    stops: Vec<String>,
    events: Vec<StreamEvent>,
    /// A JSON answer, gathered whole before it is translated.
    collected: Vec<u8>,
    done: bool,
    /// A stream error held back while the events decoded before it are sent.
    failed: Option<DecodeError>,
}

impl TranslateBody {
    /// Encodes pending events; `Some(bytes)` when there is something to send.
    fn drain(&mut self) -> Option<Bytes> {
        let Mode::Stream { encoder, .. } = &mut self.mode else {
            return None;
        };
        let mut out = Vec::new();
        for e in self.events.drain(..) {
            if let Some(e) = finished(tagged(e, self.family), &self.stops) {
                encoder.event(&e, &mut out);
            }
        }
        (!out.is_empty()).then(|| Bytes::from(out))
    }

    fn end(&mut self) -> Result<Option<Bytes>, BodyError> {
        self.done = true;
        match &mut self.mode {
            Mode::Stream { decoder, encoder } => {
                decoder.finish(&mut self.events).map_err(box_err)?;
                let mut out = Vec::new();
                for e in self.events.drain(..) {
                    if let Some(e) = finished(tagged(e, self.family), &self.stops) {
                        encoder.event(&e, &mut out);
                    }
                }
                encoder.finish(&mut out);
                Ok(Some(Bytes::from(out)))
            }
            Mode::Json => {
                let mut r = self
                    .codec
                    .decode(&self.collected, &self.ctx)
                    .map_err(box_err)?;
                if r.stop_sequence.as_deref() == Some("") {
                    r.stop_sequence = which_stop(&self.stops);
                }
                if let Some(f) = self.family {
                    for t in &mut r.thinking {
                        for s in [&mut t.signature, &mut t.redacted].into_iter().flatten() {
                            *s = crate::canonical::signature::tag(f, s);
                        }
                    }
                }
                let v = oa::encode_response(&r, unix_now());
                Ok(Some(Bytes::from(v.to_string())))
            }
            Mode::Embeddings => {
                let b = self
                    .codec
                    .decode_embeddings(&self.collected, &self.ctx)
                    .map_err(box_err)?;
                Ok(Some(Bytes::from(b)))
            }
        }
    }
}

/// The stop sequence that matched when the provider says only that one did: the request's
/// only one (with several, which one is unknown).
fn which_stop(stops: &[String]) -> Option<String> {
    match stops {
        [one] => Some(one.clone()),
        _ => None,
    }
}

/// A stream event with an unnamed stop sequence resolved ([`which_stop`]); `None` to leave
/// it out.
fn finished(e: StreamEvent, stops: &[String]) -> Option<StreamEvent> {
    match e {
        StreamEvent::StopSequence(s) if s.is_empty() => {
            which_stop(stops).map(StreamEvent::StopSequence)
        }
        e => Some(e),
    }
}

/// A stream event with its thinking signature tagged by the family that made it.
fn tagged(e: StreamEvent, family: Option<&str>) -> StreamEvent {
    use crate::canonical::signature::tag;
    match (e, family) {
        (StreamEvent::ThinkingSignature(s), Some(f)) => StreamEvent::ThinkingSignature(tag(f, &s)),
        (StreamEvent::RedactedThinking(d), Some(f)) => StreamEvent::RedactedThinking(tag(f, &d)),
        (e, _) => e,
    }
}

fn box_err(e: DecodeError) -> BodyError {
    Box::new(e)
}

impl Body for TranslateBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if let Some(e) = this.failed.take() {
            this.done = true;
            return Poll::Ready(Some(Err(box_err(e))));
        }
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    match &mut this.mode {
                        Mode::Stream { decoder, .. } => {
                            if let Err(e) = decoder.feed(&data, &mut this.events) {
                                // Send what came before the error, then the error.
                                if let Some(b) = this.drain() {
                                    this.failed = Some(e);
                                    return Poll::Ready(Some(Ok(Frame::data(b))));
                                }
                                this.done = true;
                                return Poll::Ready(Some(Err(box_err(e))));
                            }
                            if let Some(b) = this.drain() {
                                return Poll::Ready(Some(Ok(Frame::data(b))));
                            }
                        }
                        Mode::Json | Mode::Embeddings => this.collected.extend_from_slice(&data),
                    }
                }
                Poll::Ready(None) => {
                    return Poll::Ready(match this.end() {
                        Ok(Some(b)) => Some(Ok(Frame::data(b))),
                        Ok(None) => None,
                        Err(e) => Some(Err(e)),
                    });
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// Splits Server-Sent Events; shared by the providers that stream SSE (Anthropic, Gemini,
/// Cohere). Handles `\r\n`, multi-line `data:`, comments and chunk splits anywhere.
#[derive(Default)]
pub struct SseParser {
    buf: Vec<u8>,
    event: String,
    data: Vec<u8>,
}

impl SseParser {
    /// Feeds bytes; calls `on_event(event_name, data)` for each complete event.
    pub fn feed(
        &mut self,
        bytes: &[u8],
        mut on_event: impl FnMut(&str, &[u8]) -> Result<(), DecodeError>,
    ) -> Result<(), DecodeError> {
        self.buf.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(nl) = memchr::memchr(b'\n', &self.buf[start..]) {
            let mut line = &self.buf[start..start + nl];
            start += nl + 1;
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            if line.is_empty() {
                if !self.data.is_empty() || !self.event.is_empty() {
                    let r = on_event(&self.event, &self.data);
                    self.event.clear();
                    self.data.clear();
                    r?;
                }
                continue;
            }
            if line[0] == b':' {
                continue;
            }
            let (field, value) = match memchr::memchr(b':', line) {
                Some(i) => {
                    let v = &line[i + 1..];
                    (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
                }
                None => (line, &b""[..]),
            };
            match field {
                b"data" => {
                    if !self.data.is_empty() {
                        self.data.push(b'\n');
                    }
                    self.data.extend_from_slice(value);
                }
                b"event" => self.event = String::from_utf8_lossy(value).trim().to_string(),
                _ => {}
            }
        }
        self.buf.drain(..start);
        Ok(())
    }

    /// The stream ended: an event not followed by a blank line still counts.
    pub fn finish(
        &mut self,
        mut on_event: impl FnMut(&str, &[u8]) -> Result<(), DecodeError>,
    ) -> Result<(), DecodeError> {
        if !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf);
            self.feed(&rest, &mut on_event)?;
            if !self.buf.is_empty() {
                self.buf.push(b'\n');
                let rest = std::mem::take(&mut self.buf);
                self.feed(&rest, &mut on_event)?;
            }
        }
        if !self.data.is_empty() {
            let r = on_event(&self.event, &self.data);
            self.event.clear();
            self.data.clear();
            r?;
        }
        Ok(())
    }
}

/// How many system / developer messages open the conversation: those become the provider's
/// system prompt. Later ones keep their place (see [`system_context`]).
pub fn leading_system(msgs: &[Message]) -> usize {
    msgs.iter().take_while(|m| m.role == Role::System).count()
}

/// The text of a system or developer message sent in the middle of a conversation, for
/// APIs whose only system prompt is the one at the top (Anthropic, Gemini, Bedrock): a
/// user-turn block at the message's own position, wrapped so the model reads it as
/// instructions rather than as something the user said.
pub fn system_context(content: &[Part]) -> Vec<Part> {
    let mut text = String::new();
    let mut cache_control = None;
    for p in content {
        if let Part::Text {
            text: t,
            cache_control: cc,
        } = p
        {
            if !text.is_empty() && !t.is_empty() {
                text.push('\n');
            }
            text.push_str(t);
            cache_control = cc.clone().or(cache_control);
        }
    }
    if text.is_empty() {
        return Vec::new();
    }
    vec![Part::Text {
        text: format!("<system>\n{text}\n</system>"),
        cache_control,
    }]
}

/// Turns of a conversation as (role, blocks), for APIs that want roles to alternate.
pub type Turns = Vec<(&'static str, Vec<serde_json::Value>)>;

/// Appends a turn, merged into the previous one when the role is the same (Anthropic,
/// Gemini and Bedrock refuse two turns of one role in a row); empty turns are left out.
pub fn push_turn(out: &mut Turns, role: &'static str, blocks: Vec<serde_json::Value>) {
    if blocks.is_empty() {
        return;
    }
    match out.last_mut() {
        Some((r, prev)) if *r == role => prev.extend(blocks),
        _ => out.push((role, blocks)),
    }
}

/// `[{"role": .., <key>: [..]}, ..]`
pub fn turns_json(turns: Turns, key: &str) -> Vec<serde_json::Value> {
    turns
        .into_iter()
        .map(|(role, blocks)| {
            let mut o = serde_json::Map::new();
            o.insert("role".into(), serde_json::Value::from(role));
            o.insert(key.into(), serde_json::Value::Array(blocks));
            serde_json::Value::Object(o)
        })
        .collect()
}

/// Test support: mangled copies of `stream` (bytes flipped, cut, newlines and quotes thrown
/// in) fed to fresh decoders at random splits; a decoder may refuse them but never panics.
#[cfg(test)]
pub(crate) fn feed_mangled<D: StreamDecoder>(stream: &[u8], make: impl Fn() -> D) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..400 {
        let mut bytes = stream.to_vec();
        for _ in 0..rng.gen_range(1..8) {
            let i = rng.gen_range(0..bytes.len());
            match rng.gen_range(0..4) {
                0 => bytes[i] = rng.gen(),
                1 => bytes.insert(i, b'\n'),
                2 => bytes.insert(i, b'"'),
                _ => bytes.truncate(i.max(1)),
            }
        }
        let mut d = make();
        let mut ev = Vec::new();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let n = rng.gen_range(1..=rest.len().min(40));
            if d.feed(&rest[..n], &mut ev).is_err() {
                break;
            }
            rest = &rest[n..];
        }
        let _ = d.finish(&mut ev);
        let _ = ChatResponse::from_events(&ev);
    }
}

/// Maps an HTTP status to OpenAI's error type.
pub fn openai_error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 404 | 409 | 413 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        _ => "server_error",
    }
}

/// Messages that mean the prompt does not fit the context window, across providers.
pub fn is_context_overflow(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("prompt is too long")
        || m.contains("context length")
        || m.contains("context window")
        || m.contains("too many tokens")
        || m.contains("input token count")
        || m.contains("maximum context")
        || (m.contains("input is too long") && m.contains("model"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn events_before_an_in_stream_error_are_sent_then_the_error() {
        let codec: Arc<dyn Codec> = Arc::new(crate::providers::anthropic::Anthropic {
            default_max_tokens: 10,
            path: "/v1/messages".into(),
            model_in_body: true,
        });
        let ctx = DecodeCtx::default();
        // One read holding a text delta and then an error event.
        let wire = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\",\"usage\":{\"input_tokens\":3}}}\n\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"partial answer\"}}\n\nevent: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
        let mut body = TranslateBody {
            inner: UpstreamBody::Full(Some(Bytes::from_static(wire))),
            mode: Mode::Stream {
                decoder: codec.stream_decoder(&ctx),
                encoder: Box::new(StreamEncoder::new("id".into(), "m".into(), 0, false)),
            },
            codec,
            ctx,
            family: None,
            stops: Vec::new(),
            events: Vec::new(),
            collected: Vec::new(),
            done: false,
            failed: None,
        };
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert!(String::from_utf8_lossy(&first).contains("partial answer"));
        let second = body.frame().await.unwrap();
        assert!(second.unwrap_err().to_string().contains("Overloaded"));
        assert!(body.frame().await.is_none());
    }

    #[test]
    fn sse_parser_handles_any_split() {
        let text = b"event: a\r\ndata: {\"x\":1}\r\n\r\n: comment\n\nevent: b\ndata: line1\ndata: line2\n\ndata: tail";
        for split in 1..text.len() {
            let mut p = SseParser::default();
            let mut got: Vec<(String, Vec<u8>)> = Vec::new();
            for chunk in text.chunks(split) {
                p.feed(chunk, |e, d| {
                    got.push((e.to_string(), d.to_vec()));
                    Ok(())
                })
                .unwrap();
            }
            p.finish(|e, d| {
                got.push((e.to_string(), d.to_vec()));
                Ok(())
            })
            .unwrap();
            assert_eq!(got.len(), 3, "split {split}");
            assert_eq!(got[0], ("a".to_string(), b"{\"x\":1}".to_vec()));
            assert_eq!(got[1], ("b".to_string(), b"line1\nline2".to_vec()));
            assert_eq!(got[2], (String::new(), b"tail".to_vec()));
        }
    }
}
