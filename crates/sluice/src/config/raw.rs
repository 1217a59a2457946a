//! The config file as written: strict serde structs (`deny_unknown_fields`), no meaning yet.

use super::secret::Secret;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub store: RawStore,
    /// Shared limits and budgets for a fleet; absent = in memory.
    #[serde(default)]
    pub redis: super::redis::RawRedis,
    /// Absent = zero-config providers (built-in mock + providers found in the environment).
    pub providers: Option<Vec<RawProvider>>,
    pub models: Option<Vec<RawModel>>,
    /// Content policy rules, applied in order.
    #[serde(default)]
    pub policies: Vec<RawPolicy>,
    #[serde(default)]
    pub governance: RawGovernance,
    /// `on_prem` refuses every cloud provider (at load and at request time).
    pub mode: Option<Mode>,
    /// Fallback routes per error class for every route (after the route's own).
    pub fallbacks_by_class: Option<RawClassFallbacks>,
    /// Stored Responses API objects: retention.
    #[serde(default)]
    pub responses: super::responses::RawResponses,
    /// Usage records: batching, spill file, compliance logging.
    #[serde(default)]
    pub usage: super::usage::RawUsage,
    /// The response cache; off unless present (or a route sets `cache:`).
    pub cache: Option<super::cache::RawCache>,
}

/// Fallback routes per error class, each tried in order.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClassFallbacks {
    #[serde(default)]
    pub rate_limited: Vec<String>,
    #[serde(default)]
    pub server_error: Vec<String>,
    #[serde(default)]
    pub context_window_exceeded: Vec<String>,
    #[serde(default)]
    pub content_filter: Vec<String>,
}

/// Where data may go, gateway-wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Cloud and on-prem providers alike.
    #[default]
    Hybrid,
    /// No cloud provider may be configured or used.
    OnPrem,
}

/// How a route orders its deployments within one priority tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Weighted random (the default).
    #[default]
    Weighted,
    RoundRobin,
    /// Power of two choices on in-flight requests.
    LeastOutstanding,
    /// Lowest EWMA time to first byte, with a little exploration (`least_latency`, the
    /// spelling in DESIGN.md's config contract, is accepted too).
    #[serde(alias = "least_latency")]
    LowestLatency,
    /// Lowest configured `price` (input + output per 1M tokens).
    LowestCost,
    /// Most remaining rate-limit capacity (learned `x-ratelimit-*` headers, `rpm` / `tpm`).
    MostHeadroom,
    /// Only deployments whose capabilities meet the request's needs, cheapest estimate first.
    CheapestCapable,
}

/// Per-route data policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataPolicy {
    #[default]
    Any,
    /// Only on-prem deployments may serve this route.
    LocalOnly,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGovernance {
    /// Budget threshold alerts are POSTed here as JSON.
    pub alert_webhook: Option<String>,
    /// Percentages of a budget that trigger an alert; default `[50, 80, 100]`.
    pub alert_thresholds: Option<Vec<u32>>,
    /// Time zone of budget calendars: `UTC` (default) or a fixed offset such as `+02:00`.
    pub budget_timezone: Option<String>,
    /// `deny` (default: 403 `model_unpriced` for a budgeted caller) or `allow` (cost unknown).
    pub unpriced: Option<String>,
    /// `reject` (default: 429 `insufficient_quota`) or `cap_output` (lower the output limit).
    pub when_budget_short: Option<String>,
    /// Output tokens reserved for a request without a limit on a model of unknown max output.
    pub default_max_output_tokens: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetries {
    /// Attempts in all (first try included), across the route's candidates.
    pub max_attempts: Option<u32>,
    /// First backoff before retrying a deployment already tried; doubles, full jitter.
    pub backoff: Option<String>,
    pub max_backoff: Option<String>,
    /// Nothing is retried once this much time has passed since the request arrived.
    pub deadline: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBreaker {
    /// Consecutive failures that open the breaker (0 = never).
    pub failures: Option<u32>,
    /// How long an open breaker keeps a deployment out before one probe is let through.
    pub cooldown: Option<String>,
    /// Also open when this percentage of requests in `window` failed (1-100; off when absent).
    pub error_rate: Option<u32>,
    /// The error-rate window (default 30s).
    pub window: Option<String>,
    /// Fewest requests in the window before the error rate counts (default 20).
    pub min_requests: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<String>,
    pub master_key: Option<Secret<String>>,
    /// Largest accepted request body: `32MiB` (default), `1048576`, ...
    pub max_body_size: Option<SizeOrText>,
    /// How long in-flight requests and streams may run on after SIGTERM.
    pub drain_timeout: Option<String>,
    /// Serve without any authentication on a non-loopback address. Off by default.
    #[serde(default)]
    pub allow_unauthenticated: bool,
    /// Serve `GET /metrics` without credentials (for a Prometheus scraper on a private network).
    #[serde(default)]
    pub public_metrics: bool,
    /// A client must send a request's whole header within this (default 10s).
    pub header_read_timeout: Option<String>,
    /// ... and its whole body within this, counted from the request's start (default 60s).
    pub body_read_timeout: Option<String>,
    /// An idle keep-alive connection is closed after this (default 60s).
    pub idle_timeout: Option<String>,
    /// Largest accepted request header (default 64KiB; at least 8KiB).
    pub max_header_size: Option<SizeOrText>,
    /// Most connections open at once; more get a fast 503 and are closed (default 10000).
    pub max_connections: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum SizeOrText {
    Int(u64),
    Text(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawProviderKind {
    Openai,
    #[default]
    OpenaiCompatible,
    AzureOpenai,
    Anthropic,
    Gemini,
    Vertex,
    Bedrock,
    Cohere,
    Ollama,
    Mock,
}

/// What a translated provider does with a request parameter it cannot take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnsupportedParams {
    /// The default: answer 400 naming a parameter whose loss changes what the client gets
    /// (`n` > 1, `logprobs`, a `tool_choice` mode, a forced tool with extended thinking);
    /// leave out and name in `x-sluice-dropped-params` the rest (`user`, `seed`, ...).
    #[default]
    RejectLossy,
    /// Leave everything out and name it in `x-sluice-dropped-params` (the lenient mode).
    Drop,
    /// Answer 400 naming any parameter the provider cannot take.
    Reject,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Locality {
    #[default]
    Cloud,
    OnPrem,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    pub name: String,
    pub kind: RawProviderKind,
    pub api_key: Option<Secret<String>>,
    pub base_url: Option<String>,
    pub locality: Option<Locality>,
    /// Extra headers sent on every upstream request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Time allowed for the response headers (and the whole body when not streaming).
    pub timeout: Option<String>,
    pub connect_timeout: Option<String>,
    /// Longest silence allowed between two chunks of a stream.
    pub stream_idle_timeout: Option<String>,
    /// Largest non-streamed answer read from this provider (default 64MiB; over it: 502).
    pub max_response_size: Option<SizeOrText>,
    /// Ask the upstream for a final usage event on streams (OpenAI `stream_options`).
    pub stream_usage: Option<bool>,
    /// Settings of the built-in mock (kind `mock` only).
    pub mock: Option<RawMock>,
    /// `openai_compatible` only: a known vendor (groq, together, ...) giving the base URL.
    pub preset: Option<String>,
    /// `azure_openai`: the `api-version` query parameter; `anthropic`: `anthropic-version`.
    pub api_version: Option<String>,
    /// `bedrock` and `vertex`: the cloud region (e.g. us-east-1, europe-west4).
    pub region: Option<String>,
    /// `vertex`: the Google Cloud project id (read from the credentials file when absent).
    pub project: Option<String>,
    /// `vertex`: path of a service-account JSON key file.
    pub credentials_file: Option<String>,
    /// `bedrock`: static credentials (else the standard AWS environment variables).
    pub aws_access_key_id: Option<Secret<String>>,
    pub aws_secret_access_key: Option<Secret<String>>,
    pub aws_session_token: Option<Secret<String>>,
    /// `azure_openai`: a Microsoft Entra ID bearer token instead of `api_key`.
    pub bearer_token: Option<Secret<String>>,
    /// `anthropic` (and Anthropic models on Vertex/Bedrock): `max_tokens` when the client
    /// sends none (the Messages API requires one).
    pub default_max_tokens: Option<u64>,
    /// Parameters a translated provider cannot take: `reject_lossy` (default), `drop` or
    /// `reject`.
    pub unsupported_params: Option<UnsupportedParams>,
    /// `openai_compatible`: the upstream implements `/v1/responses` natively.
    pub supports_responses: Option<bool>,
    /// Optional active health check, feeding the breakers of this provider's deployments.
    pub health_check: Option<RawHealthCheck>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    /// Time between checks (e.g. `10s`).
    pub interval: String,
    /// Path under `base_url` requested with GET (default `/models`).
    pub path: Option<String>,
    /// Per check (default 5s).
    pub timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMock {
    pub latency: Option<String>,
    pub ttft: Option<String>,
    pub chunks: Option<usize>,
    pub chunk_delay: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub name: String,
    /// Required unless `complexity` is set.
    #[serde(default)]
    pub deployments: Vec<RawDeployment>,
    /// Other model names tried in order when every deployment fails with a retryable error.
    #[serde(default)]
    pub fallbacks: Vec<String>,
    /// Fallback routes for one error class, tried after `fallbacks` (and before the global ones).
    pub fallbacks_by_class: Option<RawClassFallbacks>,
    /// Order within a priority tier.
    pub strategy: Option<Strategy>,
    pub retries: Option<RawRetries>,
    pub breaker: Option<RawBreaker>,
    pub data_policy: Option<DataPolicy>,
    /// Other public names for this route.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Overrides the built-in catalog's price for every deployment of this model.
    pub price: Option<RawPrice>,
    /// Overrides the built-in catalog's capabilities for every deployment of this model.
    pub capabilities: Option<RawCapabilities>,
    /// Opt-in hedging: a second attempt when the first has not started answering in time.
    pub hedge: Option<RawHedge>,
    /// Complexity routing: this route forwards to `simple` or `hard` by the request's shape.
    pub complexity: Option<RawComplexity>,
    /// `false`, `true`, or `{ttl, semantic}`: this route's response cache.
    pub cache: Option<super::cache::RawRouteCache>,
}

/// Overrides for a model's entry in the built-in capability catalog.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCapabilities {
    /// Prompt + output tokens the model accepts.
    pub context_window: Option<u64>,
    pub max_output: Option<u64>,
    /// Image inputs.
    pub vision: Option<bool>,
    /// Tool / function calling.
    pub tools: Option<bool>,
    /// `response_format: {type: json_schema}`.
    pub json_schema: Option<bool>,
    pub reasoning: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHedge {
    /// `300ms` (fixed) or `p95` (the route's observed 95th percentile time to first token).
    pub after: String,
    /// With `after: p95`: the delay used until enough samples were seen (default 1s).
    pub initial: Option<String>,
    /// With `after: p95`: lower bound of the delay (default 20ms).
    pub min: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawComplexity {
    /// Route for short, simple prompts.
    pub simple: String,
    /// Route for long or hard prompts.
    pub hard: String,
    /// Estimated prompt tokens (bytes / 4) above which a prompt is hard (default 2000).
    pub long_prompt_tokens: Option<u64>,
    /// Code in the prompt (fenced blocks or common code syntax) makes it hard (default true).
    pub code: Option<bool>,
    /// Tools in the request make it hard (default true).
    pub tools: Option<bool>,
    /// Case-insensitive phrases that make a prompt hard (default: a built-in list of
    /// multi-step reasoning cues such as "step by step", "prove", "analyze").
    pub keywords: Option<Vec<String>>,
    /// More messages than this make a conversation hard (default 12).
    pub max_simple_messages: Option<usize>,
}

/// USD per one million tokens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrice {
    pub input: UsdAmount,
    pub output: UsdAmount,
    pub cached_input: Option<UsdAmount>,
    pub reasoning: Option<UsdAmount>,
    /// Input tokens written to the provider's prompt cache (Anthropic, Bedrock).
    pub cache_write: Option<UsdAmount>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum UsdAmount {
    Int(u64),
    Float(f64),
    Text(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeployment {
    pub provider: String,
    pub model: String,
    pub weight: Option<u32>,
    /// Tier: lower first; a higher tier is used only when every lower one failed or is open.
    pub priority: Option<u32>,
    /// Overrides the provider's `timeout` for this deployment.
    pub timeout: Option<String>,
    /// Overrides the model's (and the catalog's) price for this deployment (USD per 1M
    /// tokens); also what `strategy: lowest_cost` compares.
    pub price: Option<RawPrice>,
    /// Requests per minute this deployment may receive; at capacity it is skipped.
    pub rpm: Option<u32>,
    /// Tokens per minute (estimated at dispatch: prompt bytes / 4 + max tokens).
    pub tpm: Option<u32>,
    /// Connect, first-token, stream-idle and total timeouts for this deployment.
    pub timeouts: Option<RawTimeouts>,
    /// Overrides the model's and the catalog's capabilities for this deployment.
    pub capabilities: Option<RawCapabilities>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    /// TCP + TLS connect (overrides the provider's `connect_timeout`).
    pub connect: Option<String>,
    /// Until the first byte of the answer (first stream chunk; response headers otherwise).
    pub first_token: Option<String>,
    /// Longest silence between two stream chunks (overrides `stream_idle_timeout`).
    pub idle: Option<String>,
    /// The whole attempt, until the last byte of the answer.
    pub total: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub name: String,
    pub stage: Option<RawStage>,
    pub detect: Vec<RawDetector>,
    pub action: RawAction,
    pub scope: Option<RawScope>,
    /// Also scan tool-call arguments and tool results (default true).
    pub scan_tools: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawStage {
    Input,
    Output,
    Both,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawAction {
    Block,
    Redact,
    RedactReversible,
    Flag,
    RouteLocal,
}

/// A built-in detector name, or a map with exactly one of `regex`, `keywords`, `webhook`,
/// `max_size`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawDetector {
    Builtin(String),
    Custom(RawCustomDetector),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCustomDetector {
    pub regex: Option<String>,
    pub keywords: Option<Vec<String>>,
    pub webhook: Option<RawWebhook>,
    pub max_size: Option<SizeOrText>,
    /// Placeholder label for regex / keyword matches (`[LABEL_1]`).
    pub label: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    pub url: String,
    pub timeout: Option<String>,
    pub on_error: Option<RawOnError>,
}

/// What a webhook failure (timeout, down, bad answer) counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawOnError {
    /// Fail open: no match.
    Open,
    /// Fail closed: a match (the rule's action applies).
    Closed,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScope {
    pub team: Option<String>,
    pub key: Option<String>,
    pub model: Option<String>,
}
