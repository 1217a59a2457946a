//! Vertex AI: the Gemini body at `/v1/projects/{project}/locations/{region}/publishers/
//! google/models/{model}:generateContent`, and Anthropic models (names starting `claude`)
//! at `publishers/anthropic/models/{model}:rawPredict` with the Messages body.
//!
//! Auth is an OAuth bearer token: from a service-account JSON key, Sluice signs a JWT
//! (RS256, ring) and trades it at the key's `token_uri`; the token is cached and renewed
//! five minutes before it expires, one refresh shared by all concurrent requests. An
//! `api_key` on a vertex provider is taken as a ready access token.

use super::super::anthropic::{self, Anthropic, AnthropicStream};
use super::super::native::{
    AuthFuture, Codec, DecodeCtx, DecodeError, Encoded, MappedError, NativeUpstream, RequestAuth,
    StreamDecoder,
};
use super::super::openai_compat::{pooled_client, HttpsClient};
use super::{Gemini, GeminiStream};
use crate::canonical::openai::RequestError;
use crate::canonical::{ChatRequest, ChatResponse};
use crate::config::ProviderConfig;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const ANTHROPIC_VERSION: &str = "vertex-2023-10-16";
const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Renew this long before the token expires.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

pub fn upstream(cfg: &ProviderConfig) -> Result<NativeUpstream, String> {
    let mut headers = HeaderMap::new();
    let mut auth: Option<Arc<dyn RequestAuth>> = None;
    let mut project = cfg.native.project.clone();
    if let Some(token) = &cfg.api_key {
        let mut v = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
            .map_err(|_| format!("provider {}: api_key has invalid characters", cfg.name))?;
        v.set_sensitive(true);
        headers.insert(AUTHORIZATION, v);
    } else if let Some(path) = &cfg.native.credentials_file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "provider {}: cannot read credentials_file {path}: {e}",
                cfg.name
            )
        })?;
        let sa = ServiceAccount::from_json(&text)
            .map_err(|e| format!("provider {}: credentials_file {path}: {e}", cfg.name))?;
        if project.is_none() {
            project.clone_from(&sa.project_id);
        }
        auth = Some(Arc::new(TokenSource::new(sa, pooled_client(cfg))));
    }
    let project = project.ok_or_else(|| {
        format!(
            "provider {}: kind vertex needs a project (set project, or use a key file with project_id)",
            cfg.name
        )
    })?;
    let region = cfg.native.region.as_deref().unwrap_or("global");
    let codec = Vertex::new(&project, region, cfg.native.default_max_tokens);
    NativeUpstream::new(cfg, Arc::new(codec), headers, auth)
}

/// Vertex's codec: Gemini for Google models, the Messages API for Anthropic ones.
pub struct Vertex {
    gemini: Gemini,
    anthropic: Anthropic,
    anthropic_prefix: String,
}

fn is_anthropic(model: &str) -> bool {
    model.starts_with("claude")
}

impl Vertex {
    pub fn new(project: &str, region: &str, default_max_tokens: u64) -> Self {
        let base = format!("/v1/projects/{project}/locations/{region}/publishers");
        Self {
            gemini: Gemini {
                prefix: format!("{base}/google/models/"),
            },
            anthropic: Anthropic {
                default_max_tokens,
                path: String::new(),
                model_in_body: false,
            },
            anthropic_prefix: format!("{base}/anthropic/models/"),
        }
    }
}

impl Codec for Vertex {
    fn encode(&self, req: &ChatRequest) -> Result<Encoded, RequestError> {
        if !is_anthropic(&req.model) {
            return self.gemini.encode(req);
        }
        let anthropic::MessagesBody {
            body: mut b,
            dropped,
            refused,
            ctx,
        } = self.anthropic.body(req)?;
        b.insert("anthropic_version".into(), json!(ANTHROPIC_VERSION));
        let op = if req.stream {
            "streamRawPredict"
        } else {
            "rawPredict"
        };
        Ok(Encoded {
            path: format!(
                "{}{}:{op}",
                self.anthropic_prefix,
                crate::providers::url::segment_keep_at(&req.model)
            ),
            body: serde_json::to_vec(&Value::Object(b)).unwrap_or_default(),
            headers: Vec::new(),
            dropped,
            refused,
            ctx,
        })
    }

    fn signature_family(&self, model: &str) -> Option<&'static str> {
        if is_anthropic(model) {
            self.anthropic.signature_family(model)
        } else {
            self.gemini.signature_family(model)
        }
    }

    fn decode(&self, body: &[u8], ctx: &DecodeCtx) -> Result<ChatResponse, DecodeError> {
        if is_anthropic(&ctx.model) {
            anthropic::decode_message(body, ctx)
        } else {
            super::decode_response(body, ctx)
        }
    }

    fn stream_decoder(&self, ctx: &DecodeCtx) -> Box<dyn StreamDecoder> {
        if is_anthropic(&ctx.model) {
            Box::new(AnthropicStream::new(ctx.clone()))
        } else {
            Box::new(GeminiStream::new(ctx.clone()))
        }
    }

    /// Errors come in Google's shape from Vertex itself and in Anthropic's from the model.
    fn error(&self, status: StatusCode, body: &[u8]) -> MappedError {
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        if v["type"] == "error" || v["error"]["type"].is_string() {
            anthropic::map_error(status, body)
        } else {
            super::map_error(status, body)
        }
    }

    /// Vertex embeds with `:predict` (`instances[].content`), not `batchEmbedContents`.
    fn encode_embeddings(&self, body: &[u8]) -> Option<Result<Encoded, RequestError>> {
        Some(self.gemini.embeddings(body).map(|mut enc| {
            let v: Value = serde_json::from_slice(&enc.body).unwrap_or(Value::Null);
            let reqs = v["requests"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default();
            let instances: Vec<Value> = reqs
                .iter()
                .map(|r| json!({"content": r["content"]["parts"][0]["text"]}))
                .collect();
            let mut b = json!({ "instances": instances });
            if let Some(d) = reqs.first().and_then(|r| r.get("outputDimensionality")) {
                b["parameters"] = json!({ "outputDimensionality": d });
            }
            enc.path = self.gemini.path(&enc.ctx.model, "predict");
            enc.body = serde_json::to_vec(&b).unwrap_or_default();
            enc
        }))
    }

    fn decode_embeddings(&self, body: &[u8], ctx: &DecodeCtx) -> Result<Vec<u8>, DecodeError> {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| DecodeError::new(format!("Vertex embeddings answer is not JSON: {e}")))?;
        let preds = v["predictions"]
            .as_array()
            .ok_or_else(|| DecodeError::new("Vertex embeddings answer has no `predictions`"))?;
        let mut data = Vec::with_capacity(preds.len());
        let mut counted: u64 = 0;
        for (i, p) in preds.iter().enumerate() {
            let e = &p["embeddings"];
            counted += e["statistics"]["token_count"].as_u64().unwrap_or(0);
            data.push(json!({"object": "embedding", "index": i, "embedding": e["values"]}));
        }
        // Vertex counts tokens; the estimate stands in when it does not.
        let tokens = if counted > 0 {
            counted
        } else {
            ctx.json_tool
                .as_deref()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0)
        };
        let out = json!({"object": "list", "data": data, "model": ctx.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}});
        Ok(serde_json::to_vec(&out).unwrap_or_default())
    }
}

/// The fields of a service-account JSON key that Sluice uses.
#[derive(Deserialize)]
pub struct ServiceAccount {
    pub client_email: String,
    private_key: String,
    #[serde(default)]
    pub token_uri: Option<String>,
    #[serde(default)]
    pub project_id: Option<String>,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("client_email", &self.client_email)
            .field("private_key", &"*****")
            .field("token_uri", &self.token_uri)
            .field("project_id", &self.project_id)
            .finish()
    }
}

impl ServiceAccount {
    pub fn from_json(text: &str) -> Result<Self, String> {
        let sa: ServiceAccount = serde_json::from_str(text)
            .map_err(|e| format!("not a service-account JSON key: {e}"))?;
        // Fail at start-up, not on the first request.
        sa.key_pair()?;
        Ok(sa)
    }

    fn key_pair(&self) -> Result<ring::signature::RsaKeyPair, String> {
        let b64: String = self
            .private_key
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<String>()
            .split_whitespace()
            .collect();
        let der = STANDARD
            .decode(b64)
            .map_err(|_| "private_key is not PEM".to_string())?;
        ring::signature::RsaKeyPair::from_pkcs8(&der)
            .map_err(|e| format!("private_key is not a PKCS#8 RSA key: {e}"))
    }

    fn token_uri(&self) -> &str {
        self.token_uri.as_deref().unwrap_or(DEFAULT_TOKEN_URI)
    }

    /// The signed JWT assertion for the token exchange (RFC 7523).
    pub fn assertion(&self, now_unix: u64) -> Result<String, String> {
        let key = self.key_pair()?;
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        let claims = json!({"iss": self.client_email, "scope": SCOPE, "aud": self.token_uri(),
            "iat": now_unix, "exp": now_unix + 3600});
        let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signing_input = format!("{header}.{claims}");
        let mut sig = vec![0; key.public().modulus_len()];
        key.sign(
            &ring::signature::RSA_PKCS1_SHA256,
            &ring::rand::SystemRandom::new(),
            signing_input.as_bytes(),
            &mut sig,
        )
        .map_err(|_| "could not sign the token request".to_string())?;
        Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }
}

struct Cached {
    header: HeaderValue,
    refresh_at: Instant,
}

/// OAuth access tokens for one service account, cached until shortly before they expire.
pub struct TokenSource {
    sa: ServiceAccount,
    client: HttpsClient,
    /// Held across a refresh, so concurrent requests wait for the one exchange in flight.
    cached: tokio::sync::Mutex<Option<Cached>>,
}

impl TokenSource {
    pub fn new(sa: ServiceAccount, client: HttpsClient) -> Self {
        Self {
            sa,
            client,
            cached: tokio::sync::Mutex::new(None),
        }
    }

    /// `Bearer <token>`, fetching a new token when there is none or it is about to expire.
    pub async fn header(&self) -> Result<HeaderValue, String> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref() {
            if Instant::now() < c.refresh_at {
                return Ok(c.header.clone());
            }
        }
        let (token, expires_in) = self.fetch().await?;
        let mut header = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| "the token endpoint sent an unusable token".to_string())?;
        header.set_sensitive(true);
        let lifetime = Duration::from_secs(expires_in);
        let refresh_at = Instant::now() + lifetime.saturating_sub(REFRESH_MARGIN);
        *cached = Some(Cached {
            header: header.clone(),
            refresh_at,
        });
        Ok(header)
    }

    async fn fetch(&self) -> Result<(String, u64), String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let assertion = self.sa.assertion(now)?;
        let form = format!(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={assertion}"
        );
        let uri: http::Uri = self
            .sa
            .token_uri()
            .parse()
            .map_err(|_| "token_uri is not a URL".to_string())?;
        let mut req = http::Request::new(Full::new(Bytes::from(form)));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = uri;
        req.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| format!("token endpoint unreachable: {e}"))?;
            let status = resp.status();
            let body = http_body_util::Limited::new(resp.into_body(), 1 << 20)
                .collect()
                .await
                .map_err(|e| format!("token endpoint read failed: {e}"))?
                .to_bytes();
            Ok::<_, String>((status, body))
        };
        let (status, body) = tokio::time::timeout(Duration::from_secs(30), exchange)
            .await
            .map_err(|_| "token endpoint timed out".to_string())??;
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if !status.is_success() {
            // OAuth error bodies carry a code and a description, never the token.
            return Err(format!(
                "token endpoint answered {status}: {} {}",
                v["error"].as_str().unwrap_or_default(),
                v["error_description"].as_str().unwrap_or_default()
            ));
        }
        let token = v["access_token"]
            .as_str()
            .ok_or("token endpoint sent no access_token")?;
        Ok((token.to_string(), v["expires_in"].as_u64().unwrap_or(3600)))
    }
}

impl RequestAuth for TokenSource {
    fn apply<'a>(
        &'a self,
        req: &'a mut http::Request<Full<Bytes>>,
        _body: &'a [u8],
    ) -> AuthFuture<'a> {
        Box::pin(async move {
            let h = self.header().await?;
            req.headers_mut().insert(AUTHORIZATION, h);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const KEY: &str = include_str!("../../../tests/fixtures/vertex-test-service-account.json");

    /// A loopback token endpoint: checks the JWT's signature with the key's public half and
    /// answers with a numbered token.
    async fn token_server(expires_in: u64) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        let sa = ServiceAccount::from_json(KEY).unwrap();
        let public = sa.key_pair().unwrap().public().as_ref().to_vec();
        tokio::spawn(async move {
            loop {
                let (mut sock, _) = listener.accept().await.unwrap();
                let h = h.clone();
                let public = public.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    // Read until the whole form body is in (Content-Length).
                    loop {
                        let n = sock.read(&mut chunk).await.unwrap();
                        buf.extend_from_slice(&chunk[..n]);
                        let text = String::from_utf8_lossy(&buf).to_string();
                        if let Some((head, body)) = text.split_once("\r\n\r\n") {
                            let len: usize = head
                                .lines()
                                .find_map(|l| {
                                    l.to_ascii_lowercase()
                                        .strip_prefix("content-length:")
                                        .map(|v| v.trim().parse().unwrap())
                                })
                                .unwrap_or(0);
                            if body.len() >= len {
                                break;
                            }
                        }
                        if n == 0 {
                            break;
                        }
                    }
                    let text = String::from_utf8_lossy(&buf).to_string();
                    let body = text.split_once("\r\n\r\n").unwrap().1;
                    assert!(body.starts_with(
                        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion="
                    ));
                    let jwt = body.split_once("assertion=").unwrap().1;
                    let (input, sig) = jwt.rsplit_once('.').unwrap();
                    let key = ring::signature::UnparsedPublicKey::new(
                        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                        public,
                    );
                    let ok = key
                        .verify(input.as_bytes(), &URL_SAFE_NO_PAD.decode(sig).unwrap())
                        .is_ok();
                    let claims: Value = serde_json::from_slice(
                        &URL_SAFE_NO_PAD
                            .decode(input.split('.').nth(1).unwrap())
                            .unwrap(),
                    )
                    .unwrap();
                    // Slow enough that concurrent requests overlap the exchange.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let n = h.fetch_add(1, Ordering::SeqCst) + 1;
                    let (status, reply) = if ok
                        && claims["scope"] == SCOPE
                        && claims["iss"]
                            == "sluice-test@sluice-test-project.iam.gserviceaccount.com"
                    {
                        (
                            "200 OK",
                            json!({"access_token": format!("tok-{n}"), "expires_in": expires_in,
                                   "token_type": "Bearer"}),
                        )
                    } else {
                        ("400 Bad Request", json!({"error": "invalid_grant"}))
                    };
                    let reply = reply.to_string();
                    let resp = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
                        reply.len()
                    );
                    sock.write_all(resp.as_bytes()).await.unwrap();
                });
            }
        });
        (format!("http://{addr}/token"), hits)
    }

    fn source(token_uri: &str) -> TokenSource {
        let mut sa = ServiceAccount::from_json(KEY).unwrap();
        sa.token_uri = Some(token_uri.to_string());
        TokenSource::new(sa, super::super::super::openai_compat::basic_client())
    }

    #[tokio::test]
    async fn token_is_fetched_once_and_shared_by_concurrent_requests() {
        let (uri, hits) = token_server(3600).await;
        let src = Arc::new(source(&uri));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let s = src.clone();
            tasks.push(tokio::spawn(async move { s.header().await }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), "Bearer tok-1");
        }
        assert_eq!(src.header().await.unwrap(), "Bearer tok-1");
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn token_is_renewed_before_it_expires() {
        // A token that lives less than the refresh margin is renewed on every use.
        let (uri, hits) = token_server(60).await;
        let src = source(&uri);
        assert_eq!(src.header().await.unwrap(), "Bearer tok-1");
        assert_eq!(src.header().await.unwrap(), "Bearer tok-2");
        assert_eq!(hits.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_refused_exchange_is_an_error_without_secrets() {
        let (uri, _) = token_server(3600).await;
        let mut sa = ServiceAccount::from_json(KEY).unwrap();
        sa.token_uri = Some(uri);
        // Another identity: the server refuses it.
        sa.client_email = "someone@else".to_string();
        let src = TokenSource::new(sa, super::super::super::openai_compat::basic_client());
        let e = src.header().await.unwrap_err();
        assert!(e.contains("400") && e.contains("invalid_grant"), "{e}");
        assert!(!e.contains("PRIVATE KEY"));
    }

    #[test]
    fn anthropic_models_use_raw_predict_without_model_in_body() {
        let v = Vertex::new("p", "us-east5", 4096);
        let req = crate::canonical::openai::decode_request(
            br#"{"model":"claude-sonnet-4-5@20250929","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
        )
        .unwrap();
        let enc = v.encode(&req).unwrap();
        assert_eq!(
            enc.path,
            "/v1/projects/p/locations/us-east5/publishers/anthropic/models/claude-sonnet-4-5@20250929:streamRawPredict"
        );
        let b: Value = serde_json::from_slice(&enc.body).unwrap();
        assert_eq!(b["anthropic_version"], ANTHROPIC_VERSION);
        assert!(b.get("model").is_none());
        assert_eq!(b["messages"][0]["content"][0]["text"], "hi");

        let req = crate::canonical::openai::decode_request(
            br#"{"model":"gemini-2.5-flash","messages":[{"role":"user","content":"hi"}]}"#,
        )
        .unwrap();
        assert_eq!(
            v.encode(&req).unwrap().path,
            "/v1/projects/p/locations/us-east5/publishers/google/models/gemini-2.5-flash:generateContent"
        );
    }

    #[test]
    fn embeddings_use_predict() {
        let v = Vertex::new("p", "us-central1", 4096);
        let enc = v
            .encode_embeddings(
                br#"{"model":"text-embedding-005","input":["a","b"],"dimensions":4}"#,
            )
            .unwrap()
            .unwrap();
        assert_eq!(
            enc.path,
            "/v1/projects/p/locations/us-central1/publishers/google/models/text-embedding-005:predict"
        );
        let b: Value = serde_json::from_slice(&enc.body).unwrap();
        assert_eq!(
            b,
            json!({"instances": [{"content": "a"}, {"content": "b"}],
                   "parameters": {"outputDimensionality": 4}})
        );
        let out = v
            .decode_embeddings(
                br#"{"predictions":[{"embeddings":{"values":[0.5],"statistics":{"token_count":2}}},
                    {"embeddings":{"values":[0.25],"statistics":{"token_count":3}}}]}"#,
                &enc.ctx,
            )
            .unwrap();
        let o: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(o["data"][1]["embedding"], json!([0.25]));
        assert_eq!(o["usage"]["prompt_tokens"], 5);
    }

    #[test]
    fn a_bad_key_file_is_refused_at_start() {
        assert!(ServiceAccount::from_json("{}").is_err());
        let bad = json!({"client_email": "a", "private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"});
        assert!(ServiceAccount::from_json(&bad.to_string())
            .unwrap_err()
            .contains("PKCS#8"));
    }
}
