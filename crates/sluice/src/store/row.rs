//! A usage record as stored: owned, serde-able (the spill file's JSONL lines), converted
//! from the request's [`UsageRecord`] on the writer task, never on the request path.

use super::{Content, UsageRecord};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UsageRow {
    pub request_id: String,
    pub ts_ms: i64,
    pub surface: String,
    pub principal: String,
    pub requested_model: String,
    pub provider: Option<String>,
    pub deployment_model: Option<String>,
    pub status: u16,
    pub error_class: Option<String>,
    pub streamed: bool,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cached_input_tokens: Option<u64>,
    pub cache_write_tokens: Option<u64>,
    pub reasoning_tokens: Option<u64>,
    pub latency_us: u64,
    pub ttft_us: Option<u64>,
    pub overhead_us: Option<u64>,
    pub attempts: u32,
    pub route_reason: Option<String>,
    pub fallback_reason: Option<String>,
    /// JSON array of `{rule, action, stage, count}`.
    pub policy_hits: Option<String>,
    pub key_id: Option<String>,
    pub key_prefix: Option<String>,
    pub team: Option<String>,
    pub user: Option<String>,
    /// The key's metadata as JSON text.
    pub tags: Option<String>,
    pub cost_micro_usd: Option<i64>,
    pub catalog_version: Option<String>,
    /// JSON array of the attempts that did not answer (see [`super::AttemptLine`]).
    pub attempt_log: Option<String>,
    pub cache: Option<String>,
    pub cost_saved_micro_usd: Option<i64>,
    /// A hash of the request as sent (surface and body): equal hashes are identical requests.
    pub request_hash: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
}

fn owned(s: Option<&std::sync::Arc<str>>) -> Option<String> {
    s.map(|s| s.to_string())
}

impl From<UsageRecord> for UsageRow {
    fn from(r: UsageRecord) -> Self {
        UsageRow {
            surface: r.surface.to_string(),
            principal: r.principal,
            requested_model: r.requested_model,
            provider: owned(r.provider.as_ref()),
            deployment_model: owned(r.deployment_model.as_ref()),
            status: r.status,
            error_class: r.error_class.map(str::to_string),
            streamed: r.streamed,
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            cached_input_tokens: r.cached_input_tokens,
            cache_write_tokens: r.cache_write_tokens,
            reasoning_tokens: r.reasoning_tokens,
            latency_us: r.latency_us,
            ttft_us: r.ttft_us,
            overhead_us: r.overhead_us,
            attempts: r.attempts,
            route_reason: r.route_reason.map(str::to_string),
            fallback_reason: r.fallback_reason.map(str::to_string),
            policy_hits: if r.policy_hits.is_empty() {
                None
            } else {
                serde_json::to_string(&r.policy_hits).ok()
            },
            key_id: owned(r.key_id.as_ref()),
            key_prefix: owned(r.key_prefix.as_ref()),
            team: owned(r.team.as_ref()),
            user: owned(r.user.as_ref()),
            tags: owned(r.tags.as_ref()),
            cost_micro_usd: r.cost_micro_usd,
            catalog_version: owned(r.catalog_version.as_ref()),
            cache: r.cache.map(str::to_string),
            cost_saved_micro_usd: r.cost_saved_micro_usd,
            request_hash: r.request_hash.map(|h| i64::from_ne_bytes(h.to_ne_bytes())),
            attempt_log: if r.attempt_log.is_empty() {
                None
            } else {
                serde_json::to_string(&r.attempt_log).ok()
            },
            content: r.content.map(|c| *c),
            request_id: r.request_id,
            ts_ms: r.ts_ms,
        }
    }
}
