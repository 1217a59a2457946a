//! Shared state behind traits: the store (SQLite for one process, PostgreSQL for a fleet) and
//! the batching sink that keeps database writes off the request path.

pub mod audit;
pub mod db;
pub(crate) mod dims;
pub mod feedback;
pub mod gov;
pub mod insights;
pub(crate) mod key_rows;
pub mod partitions;
pub mod query;
pub mod responses;
pub mod rollup;
pub mod row;
pub mod segment;
pub mod sink;
pub mod sketch;
mod spill;
#[cfg(test)]
pub(crate) mod testing;

use std::future::Future;
use std::sync::Arc;

pub use db::Store;
pub use row::UsageRow;
pub use sink::{SinkConfig, UsageSink, UsageWriter};

/// One inference request, whatever its outcome. Never holds a secret; prompt and answer
/// text only in `content`, and only when compliance logging applies to the caller.
#[derive(Debug, Clone, Default)]
pub struct UsageRecord {
    pub request_id: String,
    /// Unix time in milliseconds when the request arrived.
    pub ts_ms: i64,
    /// Inbound surface, e.g. `openai.chat`.
    pub surface: &'static str,
    /// Who asked (`master`, `anonymous`, later a key id). Never the key itself.
    pub principal: String,
    pub requested_model: String,
    pub provider: Option<Arc<str>>,
    pub deployment_model: Option<Arc<str>>,
    pub status: u16,
    pub error_class: Option<&'static str>,
    pub streamed: bool,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cached_input_tokens: Option<u64>,
    pub reasoning_tokens: Option<u64>,
    /// Input tokens written to the provider's prompt cache (providers that report it).
    pub cache_write_tokens: Option<u64>,
    pub latency_us: u64,
    pub ttft_us: Option<u64>,
    pub overhead_us: Option<u64>,
    pub attempts: u32,
    /// Why the answering deployment was chosen (`weighted`, `single`, `fallback_route`, ...).
    pub route_reason: Option<&'static str>,
    /// Why an earlier attempt was given up, when one was (`rate_limited`, `server_error`, ...).
    pub fallback_reason: Option<&'static str>,
    /// The virtual key's id and visible prefix, its team and user (never the key itself).
    pub key_id: Option<Arc<str>>,
    pub key_prefix: Option<Arc<str>>,
    pub team: Option<Arc<str>>,
    pub user: Option<Arc<str>>,
    /// The key's metadata as JSON text.
    pub tags: Option<Arc<str>>,
    /// What the request cost at the catalog's prices, in micro-USD (`None`: no price known).
    pub cost_micro_usd: Option<i64>,
    pub catalog_version: Option<Arc<str>>,
    /// Content policy hits (rule, action, stage, count; never the matched text).
    pub policy_hits: Vec<crate::policy::content::PolicyHit>,
    /// Prompt and answer, for callers under compliance logging (already redacted if asked).
    pub content: Option<Box<Content>>,
    /// Attempts that did not answer the client (retried, timed out, hedge losers), each
    /// with what it was charged; the answering attempt is the record itself.
    pub attempt_log: Vec<AttemptLine>,
    /// The response cache: `hit`, `miss` or `bypass` (`None`: no cache for this route).
    pub cache: Option<&'static str>,
    /// A cache hit: what the original answer cost (the provider was not asked).
    pub cost_saved_micro_usd: Option<i64>,
    /// XXH3-64 of the request body as received, seeded by the surface (`pipeline::parse`).
    pub request_hash: Option<u64>,
}

/// One attempt of a request that did not give the client its answer: retried after an
/// error, timed out, or a hedge that lost. Kept as a line of the request's usage record.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AttemptLine {
    /// 1-based, in the order attempts were sent.
    pub attempt: u32,
    pub provider: String,
    pub model: String,
    /// The provider's HTTP status; 0 when none arrived (connection error, timeout, cancel).
    pub status: u16,
    pub outcome: std::borrow::Cow<'static, str>,
    /// Whether the provider may bill it (the prompt was sent and not refused).
    pub billed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_micro_usd: Option<i64>,
}

/// What compliance logging keeps of one request.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Content {
    /// The request body as the client sent it (JSON text).
    pub prompt: String,
    /// The answer as the client received it (JSON text, or the SSE text of a stream).
    pub response: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("store migration failed: {0}")]
    Migrate(String),
    #[error("unsupported store url {0:?}")]
    Unsupported(String),
}

/// Where usage records end up.
pub trait UsageStore: Send + Sync + 'static {
    fn write_batch(&self, rows: &[UsageRow])
        -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Like `write_batch`, but skips rows already stored (same request id and time): used when
    /// replaying spilled records, which a store that came back late may already hold.
    fn write_batch_dedup(
        &self,
        rows: &[UsageRow],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}
