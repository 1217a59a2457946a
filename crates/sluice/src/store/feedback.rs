//! Quality feedback on answered requests (`POST /v1/feedback`): one score per request id,
//! the latest wins, joined to the usage records for the analytics.
//!
//! The SQL here is portable on purpose (`$n` placeholders, standard `ON CONFLICT` upsert):
//! the PostgreSQL store runs the same statements.

use super::db::{on_pool, Store};
use super::StoreError;
use sqlx::Row;
use std::collections::HashMap;

/// Migration 11 (appended to `db::MIGRATIONS`, and to `db::PG_MIGRATIONS` as its step 2): the feedback table, and the request hash
/// that `store::insights` groups repeated requests by. No index on the hash: insights scan a
/// time range (the `ts_ms` index) and group in memory, and every index costs each insert. An
/// integer, not hex text: no formatting or allocation per record.
pub const MIGRATION: &str = r"
CREATE TABLE feedback (
    request_id TEXT PRIMARY KEY,
    feedback_ms BIGINT NOT NULL,
    score DOUBLE PRECISION NOT NULL,
    label TEXT,
    comment TEXT,
    actor TEXT NOT NULL
);
ALTER TABLE usage_records ADD COLUMN request_hash BIGINT;
";

/// Joins each usage record to its feedback (no column of `feedback` but `request_id` shares
/// a name with `usage_records`, so the record's columns stay unqualified).
pub const JOIN: &str = " LEFT JOIN feedback ON feedback.request_id = usage_records.request_id";

/// The joined score column (`NULL`: no feedback).
pub const SCORE: &str = "feedback.score";

/// One piece of feedback.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Feedback {
    pub request_id: String,
    pub feedback_ms: i64,
    pub score: f64,
    pub label: Option<String>,
    pub comment: Option<String>,
    /// Who sent it (`master`, a key id): never a secret.
    pub actor: String,
}

/// The key id that made a recorded request: `None` when no record has that id,
/// `Some(None)` when it was made without a virtual key (master key, open gateway).
pub async fn owner(store: &Store, request_id: &str) -> Result<Option<Option<String>>, StoreError> {
    let row: Option<(Option<String>,)> = on_pool!(store.pool(), |p| sqlx::query_as(
        "SELECT key_id FROM usage_records WHERE request_id = $1 ORDER BY ts_ms DESC LIMIT 1",
    )
    .bind(request_id)
    .fetch_optional(p)
    .await?);
    Ok(row.map(|(k,)| k))
}

/// Stores `f`, replacing earlier feedback on the same request.
pub async fn upsert(store: &Store, f: &Feedback) -> Result<(), StoreError> {
    use super::rollup::{horizon, row_from, write_deltas, Deltas, Sums, ROW_COLUMNS};
    let pool = store.pool();
    on_pool!(pool, |p| {
        // One write transaction: the old score, the new one, and what the change adds to the
        // request's rollups (a second score on a request replaces the first).
        let mut tx = p.begin_with(pool.begin_write()).await?;
        let old: Option<f64> =
            sqlx::query_scalar("SELECT score FROM feedback WHERE request_id = $1")
                .bind(&f.request_id)
                .fetch_optional(&mut *tx)
                .await?;
        sqlx::query(
            "INSERT INTO feedback (request_id, feedback_ms, score, label, comment, actor) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (request_id) DO UPDATE SET feedback_ms = excluded.feedback_ms, \
             score = excluded.score, label = excluded.label, comment = excluded.comment, \
             actor = excluded.actor",
        )
        .bind(&f.request_id)
        .bind(f.feedback_ms)
        .bind(f.score)
        .bind(f.label.as_deref())
        .bind(f.comment.as_deref())
        .bind(&f.actor)
        .execute(&mut *tx)
        .await?;
        let records = sqlx::query(&format!(
            "SELECT {ROW_COLUMNS} FROM usage_records WHERE request_id = $1"
        ))
        .bind(&f.request_id)
        .fetch_all(&mut *tx)
        .await?;
        let change = Sums {
            scored: i64::from(old.is_none()),
            score_sum: f.score - old.unwrap_or(0.0),
            ..Sums::default()
        };
        // Records past the horizon get their score when the roller folds them in.
        let h = horizon!(tx, pool, share);
        let mut deltas = Deltas::new(store.minutes_from_ms());
        for r in &records {
            let row = row_from!(r, 0);
            if row.ts_ms < h {
                deltas.add(row.ts_ms, &super::rollup::dims_of(&row), &change);
            }
        }
        write_deltas!(tx, &deltas, i64::MAX);
        tx.commit().await?;
    });
    Ok(())
}

/// The feedback on each of `ids` that has any (one query for a page of the request log).
pub async fn for_requests(
    store: &Store,
    ids: &[String],
) -> Result<HashMap<String, Feedback>, StoreError> {
    let mut out = HashMap::new();
    if ids.is_empty() {
        return Ok(out);
    }
    on_pool!(store.pool(), |p| {
        let mut q = sqlx::QueryBuilder::new(
            "SELECT request_id, feedback_ms, score, label, comment, actor FROM feedback \
             WHERE request_id IN (",
        );
        let mut list = q.separated(", ");
        for id in ids {
            list.push_bind(id);
        }
        q.push(")");
        for r in q.build().fetch_all(p).await? {
            let f = Feedback {
                request_id: r.try_get(0)?,
                feedback_ms: r.try_get(1)?,
                score: r.try_get(2)?,
                label: r.try_get(3)?,
                comment: r.try_get(4)?,
                actor: r.try_get(5)?,
            };
            out.insert(f.request_id.clone(), f);
        }
    });
    Ok(out)
}
