//! The usage records `/admin/insights` reads: one streamed pass over the matching records,
//! oldest first, with only the columns the savings estimates need.
//!
//! Portable SQL: the filter's `WHERE` and one `ORDER BY` on the `ts_ms` index.

use super::db::{on_pool, Store};
use super::query::Filter;
use super::StoreError;
use futures_util::TryStreamExt;
use sqlx::Row;

/// What one usage record tells the insights.
#[derive(Debug, Clone, Default)]
pub struct InsightRow {
    pub surface: String,
    pub requested_model: String,
    pub provider: Option<String>,
    pub deployment_model: Option<String>,
    pub team: Option<String>,
    pub key_id: Option<String>,
    pub status: i64,
    pub input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    pub cost_micro_usd: Option<i64>,
    pub request_hash: Option<i64>,
    pub fallback_reason: Option<String>,
    /// JSON array of the attempts that did not answer (`store::AttemptLine`).
    pub attempt_log: Option<String>,
    pub cache: Option<String>,
}

/// Calls `each` with every record matching `filter`, oldest first.
pub async fn scan(
    store: &Store,
    filter: &Filter,
    mut each: impl FnMut(InsightRow),
) -> Result<(), StoreError> {
    on_pool!(store.pool(), |p| {
        let mut q = sqlx::QueryBuilder::new(
            "SELECT surface, requested_model, provider, deployment_model, team, key_id, status, \
             input_tokens, output_tokens, cost_micro_usd, request_hash, fallback_reason, \
             attempt_log, cache FROM usage_records",
        );
        filter.push_where(&mut q);
        q.push(" ORDER BY ts_ms");
        let mut rows = q.build().fetch(p);
        while let Some(r) = rows.try_next().await? {
            each(InsightRow {
                surface: r.try_get(0)?,
                requested_model: r.try_get(1)?,
                provider: r.try_get(2)?,
                deployment_model: r.try_get(3)?,
                team: r.try_get(4)?,
                key_id: r.try_get(5)?,
                status: r.try_get(6)?,
                input_tokens: r.try_get(7)?,
                output_tokens: r.try_get(8)?,
                cost_micro_usd: r.try_get(9)?,
                request_hash: r.try_get(10)?,
                fallback_reason: r.try_get(11)?,
                attempt_log: r.try_get(12)?,
                cache: r.try_get(13)?,
            });
        }
    });
    Ok(())
}
