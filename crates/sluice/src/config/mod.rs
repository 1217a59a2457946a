//! Configuration: load YAML, interpolate `${ENV}`, deserialize strictly, validate into [`Config`].

pub mod cache;
pub mod defaults;
mod interpolate;
mod policies;
mod providers;
pub mod raw;
pub mod redis;
pub mod responses;
pub mod routing;
pub mod secret;
pub mod units;
pub mod usage;
mod validate;

pub use raw::{DataPolicy, Locality, Mode, Strategy};
pub use secret::Secret;

use crate::policy::content::PolicySet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_STORE_URL: &str = "sqlite://sluice.db";

/// `url` with its password, if any, replaced by `***` (for logs and messages).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}
pub const DEFAULT_MAX_BODY: u64 = 32 << 20;
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(30);
/// Largest non-streamed upstream answer read into memory.
pub const DEFAULT_MAX_RESPONSE: u64 = 64 << 20;

/// The validated, runtime configuration. Built only through [`load`] / [`from_yaml`].
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub store: StoreConfig,
    /// `redis:`: shared limits for a fleet; `None` = in this process's memory.
    pub redis: Option<redis::RedisConfig>,
    pub providers: Vec<ProviderConfig>,
    pub models: Vec<ModelConfig>,
    pub governance: GovernanceConfig,
    /// Stored Responses API objects.
    pub responses: responses::ResponsesConfig,
    /// Content policy rules, compiled, in config order.
    pub policies: Arc<PolicySet>,
    /// `on_prem`: no cloud provider may be used.
    pub mode: Mode,
    /// Global fallback routes per error class, indexed by `FallbackClass::index`.
    pub class_fallbacks: ClassFallbacks,
    /// Usage records: batching, spilling, compliance logging.
    pub usage: usage::UsageConfig,
    /// The response cache (`None`: no `cache:` section).
    pub cache: Option<cache::CacheConfig>,
    /// Where this came from, for start-up messages.
    pub source: Option<PathBuf>,
    /// `sha256:` and 16 hex digits of the file's text as written (before `${VAR}`
    /// interpolation): what `sluice config check` prints and `GET /admin/replicas` compares.
    pub hash: String,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub master_key: Option<Secret<String>>,
    pub max_body_bytes: u64,
    pub drain_timeout: Duration,
    pub allow_unauthenticated: bool,
    pub public_metrics: bool,
    pub edge: EdgeConfig,
}

/// The HTTP edge's limits (`server.*`; see docs/security.md). Read when the listener starts,
/// except `body_read_timeout`, which each request reads.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_connections: usize,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            max_header_bytes: 64 << 10,
            max_connections: 10_000,
        }
    }
}

#[derive(Debug, Clone)]
pub struct GovernanceConfig {
    pub alert_webhook: Option<http::Uri>,
    pub alert_thresholds: Vec<u32>,
    /// Budget calendars' time zone as milliseconds east of UTC.
    pub budget_offset_ms: i64,
    /// Whether a budgeted caller may use a model without a price (its cost then unknown).
    pub unpriced_allowed: bool,
    /// When a budget cannot pay a request's worst case: lower its output limit instead of 429.
    pub cap_output_when_short: bool,
    /// Output tokens reserved when neither the request nor the catalog bounds the output.
    pub default_max_output_tokens: u64,
}

/// `governance.default_max_output_tokens` when not set.
pub const DEFAULT_MAX_OUTPUT_TOKENS: u64 = 4096;

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub url: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    OpenAi,
    OpenAiCompatible,
    AzureOpenAi,
    Anthropic,
    Gemini,
    Vertex,
    Bedrock,
    Cohere,
    Ollama,
    Mock,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::OpenAiCompatible => "openai_compatible",
            ProviderKind::AzureOpenAi => "azure_openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
            ProviderKind::Vertex => "vertex",
            ProviderKind::Bedrock => "bedrock",
            ProviderKind::Cohere => "cohere",
            ProviderKind::Ollama => "ollama",
            ProviderKind::Mock => "mock",
        }
    }

    /// Speaks OpenAI chat completions on the wire (no translation).
    pub fn is_openai_format(self) -> bool {
        matches!(
            self,
            ProviderKind::OpenAi
                | ProviderKind::OpenAiCompatible
                | ProviderKind::AzureOpenAi
                | ProviderKind::Mock
        )
    }
}

/// Settings only some provider kinds use (see the raw config for each field's meaning).
#[derive(Debug, Clone, Default)]
pub struct NativeSettings {
    pub preset: Option<String>,
    pub api_version: Option<String>,
    pub region: Option<String>,
    pub project: Option<String>,
    pub credentials_file: Option<String>,
    pub aws_access_key_id: Option<Secret<String>>,
    pub aws_secret_access_key: Option<Secret<String>>,
    pub aws_session_token: Option<Secret<String>>,
    pub bearer_token: Option<Secret<String>>,
    pub default_max_tokens: u64,
    pub unsupported_params: raw::UnsupportedParams,
    pub supports_responses: bool,
}

#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub name: String,
    pub kind: ProviderKind,
    pub api_key: Option<Secret<String>>,
    /// Validated absolute http(s) URL without a trailing slash (`None` for the mock).
    pub base_url: Option<String>,
    pub locality: Locality,
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub stream_idle_timeout: Duration,
    /// Largest non-streamed answer body, in bytes (`max_response_size`).
    pub max_response_bytes: u64,
    pub stream_usage: bool,
    /// Thinking goes both ways as `content` parts, not `reasoning_content` (Mistral; from
    /// the preset, see `providers::content_parts`).
    pub content_parts: bool,
    pub mock: sluice_mock::MockSettings,
    pub native: NativeSettings,
    pub health_check: Option<HealthCheckConfig>,
}

#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub name: String,
    pub deployments: Vec<DeploymentConfig>,
    pub fallbacks: Vec<String>,
    /// Price override for every deployment (micro-USD per 1M tokens).
    pub price: Option<crate::policy::prices::Price>,
    pub class_fallbacks: ClassFallbacks,
    pub strategy: Strategy,
    pub retries: RetryConfig,
    pub breaker: BreakerConfig,
    pub data_policy: DataPolicy,
    pub aliases: Vec<String>,
    /// Capability overrides for every deployment (on top of the built-in catalog).
    pub capabilities: CapabilityOverride,
    pub hedge: Option<HedgeConfig>,
    pub complexity: Option<ComplexityConfig>,
    /// The route's `cache:` setting.
    pub cache: cache::RouteCache,
}

/// Capability fields set in config; `None` keeps the catalog's value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CapabilityOverride {
    pub context_window: Option<u64>,
    pub max_output: Option<u64>,
    pub vision: Option<bool>,
    pub tools: Option<bool>,
    pub json_schema: Option<bool>,
    pub reasoning: Option<bool>,
}

/// When a hedged request sends its second attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HedgeAfter {
    Fixed(Duration),
    /// The route's observed p95 time to first token (`initial` until enough samples,
    /// never below `min`).
    P95 {
        initial: Duration,
        min: Duration,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HedgeConfig {
    pub after: HedgeAfter,
}

/// Complexity routing rules (`models[].complexity`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComplexityConfig {
    pub simple: String,
    pub hard: String,
    pub long_prompt_tokens: u64,
    pub code: bool,
    pub tools: bool,
    /// Lower-cased.
    pub keywords: Vec<String>,
    pub max_simple_messages: usize,
}

/// Per-deployment timeouts beyond `timeout` (until response headers); `None`: the
/// provider's (connect, idle) or none (first token, total).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeploymentTimeouts {
    pub connect: Option<Duration>,
    pub first_token: Option<Duration>,
    pub idle: Option<Duration>,
    pub total: Option<Duration>,
}

/// An active health check: GET `path` every `interval`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckConfig {
    pub interval: Duration,
    pub path: String,
    pub timeout: Duration,
}

/// Route names per error class, indexed by [`crate::providers::FallbackClass::index`]:
/// rate_limited, server_error, context_window_exceeded, content_filter.
pub type ClassFallbacks = [Vec<String>; 4];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryConfig {
    /// `None`: one attempt per candidate (no second try of the same deployment).
    pub max_attempts: Option<u32>,
    pub backoff: Duration,
    pub max_backoff: Duration,
    pub deadline: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: None,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            deadline: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker; 0 disables it.
    pub failures: u32,
    pub cooldown: Duration,
    /// Percentage of failed requests in `window` that opens the breaker.
    pub error_rate: Option<u32>,
    pub window: Duration,
    pub min_requests: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failures: 5,
            cooldown: Duration::from_secs(30),
            error_rate: None,
            window: Duration::from_secs(30),
            min_requests: 20,
        }
    }
}

#[derive(Debug, Clone)]
pub struct DeploymentConfig {
    /// Index into [`Config::providers`].
    pub provider: usize,
    pub model: String,
    pub weight: u32,
    /// Tier, lower first.
    pub priority: u32,
    /// Overrides the provider's timeout.
    pub timeout: Option<Duration>,
    /// Price override for this deployment (micro-USD per 1M tokens); `lowest_cost` compares
    /// input + output.
    pub price: Option<crate::policy::prices::Price>,
    /// Requests-per-minute capacity.
    pub rpm: Option<u32>,
    /// Tokens-per-minute capacity (estimated at dispatch).
    pub tpm: Option<u32>,
    pub timeouts: DeploymentTimeouts,
    pub capabilities: CapabilityOverride,
}

/// One problem in a config, with the field path it concerns (`models[2].deployments[0].weight`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in one config, in file order.
#[derive(Debug, Clone)]
pub struct ConfigErrors {
    pub file: Option<PathBuf>,
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self
            .file
            .as_ref()
            .map_or_else(|| "config".to_string(), |p| p.display().to_string());
        let n = self.errors.len();
        write!(f, "{name}: {n} error{}", if n == 1 { "" } else { "s" })?;
        for e in &self.errors {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Environment lookup, injectable for tests.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Loads a config file, or the zero-config defaults when `path` is `None`.
pub fn load(path: Option<&Path>, env: EnvLookup<'_>) -> Result<Config, ConfigErrors> {
    match path {
        None => validate::validate(raw::RawConfig::default(), env)
            .map(|mut c| {
                c.hash = text_hash("");
                c
            })
            .map_err(|errors| ConfigErrors { file: None, errors }),
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| ConfigErrors {
                file: Some(p.to_path_buf()),
                errors: vec![ConfigError::new("", format!("cannot read file: {e}"))],
            })?;
            let mut cfg = from_yaml(&text, env).map_err(|errors| ConfigErrors {
                file: Some(p.to_path_buf()),
                errors,
            })?;
            cfg.source = Some(p.to_path_buf());
            Ok(cfg)
        }
    }
}

/// Parses and validates YAML text. Syntax errors carry line and column; every other error
/// carries the field path.
pub fn from_yaml(text: &str, env: EnvLookup<'_>) -> Result<Config, Vec<ConfigError>> {
    let mut value: serde_norway::Value = serde_norway::from_str(text).map_err(|e| {
        let msg = match e.location() {
            Some(loc) => format!(
                "YAML syntax error at line {}, column {}: {}",
                loc.line(),
                loc.column(),
                strip_location(&e.to_string())
            ),
            None => format!("YAML syntax error: {e}"),
        };
        vec![ConfigError::new("", msg)]
    })?;
    if value.is_null() {
        value = serde_norway::Value::Mapping(serde_norway::Mapping::new());
    }
    let mut errors = Vec::new();
    interpolate::interpolate(&mut value, env, &mut errors);
    if !errors.is_empty() {
        return Err(errors);
    }
    let raw: raw::RawConfig = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        vec![ConfigError::new(path, e.into_inner().to_string())]
    })?;
    let mut cfg = validate::validate(raw, env)?;
    cfg.hash = text_hash(text);
    Ok(cfg)
}

/// The config hash: equal files, equal hashes, so drift between replicas is visible.
pub fn text_hash(text: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(text.as_bytes());
    format!("sha256:{}", hex::encode(&d[..8]))
}

/// serde_norway appends " at line X column Y" to messages; we print our own location.
fn strip_location(msg: &str) -> &str {
    match msg.find(" at line ") {
        Some(i) => &msg[..i],
        None => msg,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn store_urls_lose_their_password_in_messages() {
        use super::redact_url;
        assert_eq!(
            redact_url("postgres://sluice:s3cret@db:5432/x?sslmode=require"),
            "postgres://sluice:***@db:5432/x?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://sluice@db/x"),
            "postgres://sluice@db/x"
        );
        assert_eq!(redact_url("sqlite://sluice.db"), "sqlite://sluice.db");
        assert_eq!(redact_url("redis://:pw@h:6379"), "redis://:***@h:6379");
    }
}
