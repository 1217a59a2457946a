//! HTTP transport for every OpenAI-compatible vendor (OpenAI, vLLM, Ollama /v1, llama.cpp,
//! LM Studio, Groq, Together, ...): pooled keep-alive connections, HTTP/2 by ALPN, rustls.

use super::{Endpoint, UpstreamBody, UpstreamError, UpstreamErrorKind, UpstreamResponse};
use crate::config::ProviderConfig;
use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use http::{HeaderMap, HeaderValue, Method, Uri};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::sync::Arc;
use std::time::Duration;

pub type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A plain HTTP/1 client (http or https, rustls) for the gateway's own small calls:
/// alert webhooks, the admin CLI.
pub fn basic_client() -> HttpsClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new()).build(https)
}

/// The pooled upstream client: keep-alive, HTTP/2 by ALPN, rustls, the provider's connect
/// timeout.
pub fn pooled_client(cfg: &ProviderConfig) -> HttpsClient {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    http.set_connect_timeout(Some(cfg.connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        // Fixed-size reads: the adaptive strategy grows a busy stream's buffer towards
        // 400 KiB per connection, which a thousand open streams cannot afford.
        .http1_read_buf_exact_size(8 * 1024)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(https)
}

/// Sends a request, mapping transport failures to classified upstream errors.
pub async fn execute(
    client: &HttpsClient,
    provider: &Arc<str>,
    mut req: http::Request<Full<Bytes>>,
    target: &str,
    max_response: u64,
) -> Result<UpstreamResponse, UpstreamError> {
    // Tracing on: this attempt's span goes upstream as the W3C parent (added after any
    // request signing, so it is not part of a SigV4 signature).
    let attempt = crate::telemetry::otel::upstream_attempt(provider, target);
    if let Some((traceparent, _)) = &attempt {
        req.headers_mut().insert("traceparent", traceparent.clone());
    }
    let credentials = sent_credentials(req.headers());
    let result = client.request(req).await;
    if let Some((_, a)) = attempt {
        match &result {
            Ok(r) => a.end(Some(r.status().as_u16()), None),
            Err(e) => a.end(None, Some(e.to_string())),
        }
    }
    match result {
        Ok(resp) => {
            let (parts, body) = resp.into_parts();
            // Streams are forwarded chunk by chunk, never held whole; everything else is
            // read into memory somewhere, so it is capped.
            let streamed = parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|ct| {
                    ct.starts_with("text/event-stream")
                        || ct.starts_with("application/vnd.amazon.eventstream")
                });
            let cap = (!streamed).then(|| super::Cap::new(max_response));
            let body = if parts.status.is_success() {
                UpstreamBody::Http(body, cap)
            } else {
                UpstreamBody::Full(Some(scrubbed_error_body(body, &credentials).await))
            };
            Ok(UpstreamResponse {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        }
        Err(e) => {
            let detail = error_chain(&e);
            let kind = if e.is_connect() {
                UpstreamErrorKind::Connect(detail)
            } else {
                UpstreamErrorKind::Protocol(detail)
            };
            Err(UpstreamError::new(provider, target.to_string(), kind))
        }
    }
}

pub struct HttpUpstream {
    client: HttpsClient,
    chat_uri: Uri,
    embeddings_uri: Uri,
    /// `/responses` (Azure: its v1 API's, which takes the deployment as the model).
    responses_uri: Uri,
    /// Authorization plus the configured extra headers, sent on every request.
    headers: HeaderMap,
    /// Azure OpenAI: the deployment (our model name) is in the URL, with `api-version`.
    azure: Option<Azure>,
    /// `max_response_size` for non-streamed answers.
    max_response: u64,
    /// Thinking goes both ways as `content` parts (the `mistral` preset).
    content_parts: bool,
}

struct Azure {
    base: String,
    api_version: String,
}

/// Azure's default `api-version` (the GA data-plane version with tools and json_schema).
pub const AZURE_API_VERSION: &str = "2024-10-21";

impl HttpUpstream {
    pub fn new(cfg: &ProviderConfig) -> Result<Self, String> {
        let base = cfg
            .base_url
            .as_deref()
            .ok_or_else(|| format!("provider {}: no base_url", cfg.name))?;
        let uri = |p: &str| {
            format!("{base}{p}")
                .parse::<Uri>()
                .map_err(|e| format!("provider {}: bad URL {base}{p}: {e}", cfg.name))
        };
        let client = pooled_client(cfg);

        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("sluice/", env!("CARGO_PKG_VERSION"))),
        );
        let is_azure = cfg.kind == crate::config::ProviderKind::AzureOpenAi;
        let bearer = if is_azure {
            cfg.native.bearer_token.as_ref()
        } else {
            cfg.api_key.as_ref()
        };
        if let Some(key) = bearer {
            let mut v = HeaderValue::from_str(&format!("Bearer {}", key.expose()))
                .map_err(|_| format!("provider {}: api_key has invalid characters", cfg.name))?;
            v.set_sensitive(true);
            headers.insert(AUTHORIZATION, v);
        }
        if is_azure {
            if let Some(key) = &cfg.api_key {
                let mut v = HeaderValue::from_str(key.expose()).map_err(|_| {
                    format!("provider {}: api_key has invalid characters", cfg.name)
                })?;
                v.set_sensitive(true);
                headers.insert("api-key", v);
            }
        }
        for (n, v) in &cfg.headers {
            headers.insert(n.clone(), v.clone());
        }
        let azure = is_azure.then(|| Azure {
            base: base.to_string(),
            api_version: cfg
                .native
                .api_version
                .clone()
                .unwrap_or_else(|| AZURE_API_VERSION.to_string()),
        });
        // Azure's v1 API takes the model in the body, like OpenAI.
        let v1 = azure.as_ref().is_some_and(|a| a.api_version == "v1");
        let prefix = if v1 { "/openai/v1" } else { "" };
        Ok(Self {
            client,
            chat_uri: uri(&format!("{prefix}{}", Endpoint::ChatCompletions.path()))?,
            embeddings_uri: uri(&format!("{prefix}{}", Endpoint::Embeddings.path()))?,
            responses_uri: uri(&format!(
                "{}{}",
                if is_azure { "/openai/v1" } else { "" },
                Endpoint::Responses.path()
            ))?,
            headers,
            azure: azure.filter(|_| !v1),
            max_response: cfg.max_response_bytes,
            content_parts: cfg.content_parts,
        })
    }

    pub fn uri(&self, endpoint: Endpoint) -> &Uri {
        match endpoint {
            Endpoint::ChatCompletions | Endpoint::AnthropicMessages => &self.chat_uri,
            Endpoint::Embeddings => &self.embeddings_uri,
            Endpoint::Responses => &self.responses_uri,
        }
    }

    /// The URL for `model` (differs from [`HttpUpstream::uri`] only on Azure deployments).
    pub fn uri_for(&self, endpoint: Endpoint, model: &str) -> Uri {
        match &self.azure {
            Some(a) if endpoint != Endpoint::Responses => format!(
                "{}/openai/deployments/{}{}?api-version={}",
                a.base,
                super::url::segment(model),
                endpoint.path(),
                a.api_version
            )
            .parse()
            .unwrap_or_else(|_| self.uri(endpoint).clone()),
            _ => self.uri(endpoint).clone(),
        }
    }

    pub async fn send(
        &self,
        provider: &Arc<str>,
        endpoint: Endpoint,
        model: &str,
        body: Bytes,
        request_id: &str,
    ) -> Result<UpstreamResponse, UpstreamError> {
        if endpoint == Endpoint::AnthropicMessages {
            return Err(UpstreamError::new(
                provider,
                "anthropic messages",
                UpstreamErrorKind::Unavailable(format!(
                    "provider `{provider}` does not speak the Anthropic Messages API"
                )),
            ));
        }
        if self.azure.is_some() {
            let grammar = super::url::ModelGrammar::of(crate::config::ProviderKind::AzureOpenAi);
            if let Err(e) = super::url::check_model(grammar, provider, model) {
                return Ok(super::native::bad_request(&e));
            }
        }
        let parts = self.content_parts && endpoint == Endpoint::ChatCompletions;
        let body = if parts {
            super::content_parts::request(body)
        } else {
            body
        };
        let uri = &self.uri_for(endpoint, model);
        let mut req = http::Request::new(Full::new(body));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = uri.clone();
        let h = req.headers_mut();
        h.reserve(self.headers.len() + 2);
        for (n, v) in &self.headers {
            h.insert(n, v.clone());
        }
        h.insert(
            ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        if let Ok(v) = HeaderValue::from_str(request_id) {
            h.insert("x-request-id", v);
        }
        let mut resp = execute(
            &self.client,
            provider,
            req,
            &format!("POST {uri}"),
            self.max_response,
        )
        .await?;
        if parts && resp.status.is_success() {
            let stream = matches!(resp.body, UpstreamBody::Http(_, None));
            let body = std::mem::replace(&mut resp.body, UpstreamBody::Full(None));
            resp.body = UpstreamBody::ListedContent(Box::new(
                super::content_parts::ListedContentBody::new(body, stream),
            ));
        }
        Ok(resp)
    }
}

/// The credentials a request carries (auth header values, and the token of `Bearer x`):
/// what an upstream may quote back in an error.
fn sent_credentials(headers: &HeaderMap) -> Vec<String> {
    let mut out = Vec::new();
    for name in [
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "api-key",
        "x-goog-api-key",
    ] {
        for v in headers.get_all(name) {
            let Ok(v) = v.to_str() else { continue };
            if let Some((_, token)) = v.split_once(' ') {
                out.push(token.trim().to_string());
            }
            out.push(v.to_string());
        }
    }
    // Short values (a scheme name) would only blank out harmless words.
    out.retain(|s| s.len() >= 8);
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out
}

/// Largest upstream error body kept, and how long reading it may take.
const ERROR_BODY_LIMIT: usize = 1 << 20;
const ERROR_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// An upstream error body, read (bounded) and with every credential the request carried
/// replaced by `*****`: some providers quote the key they refused ("Incorrect API key
/// provided: sk-..."), and that message goes on to the client, the logs and the traces.
async fn scrubbed_error_body(body: hyper::body::Incoming, credentials: &[String]) -> Bytes {
    use http_body_util::BodyExt;
    let limited = http_body_util::Limited::new(body, ERROR_BODY_LIMIT);
    let bytes = match tokio::time::timeout(ERROR_BODY_TIMEOUT, limited.collect()).await {
        Ok(Ok(c)) => c.to_bytes(),
        _ => return Bytes::new(),
    };
    if credentials.is_empty() {
        return bytes;
    }
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    let before = text.len();
    for c in credentials {
        text = text.replace(c.as_str(), "*****");
    }
    if text.len() == before && bytes.len() == before {
        return bytes;
    }
    Bytes::from(text)
}

/// The innermost causes are the informative ones ("Connection refused (os error 111)").
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !parts.iter().any(|p| p == &text) {
            parts.push(text);
        }
        cur = s.source();
    }
    parts.join(": ")
}
