//! The audit log: one row per admin write — who (the principal's label, never a secret),
//! what (action and target), when, and the target before and after as the admin API shows
//! it (those views carry key prefixes, never keys or hashes). Read by `GET /admin/audit`
//! and `sluice audit`.

use super::sqlite::SqliteStore;
use super::StoreError;
use serde_json::Value;
use sqlx::Row;

/// One admin write.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub ts_ms: i64,
    /// `master`, `anonymous` or the key id of the caller.
    pub actor: String,
    /// `create`, `update`, `delete`, `revoke`, `rotate`.
    pub action: &'static str,
    /// `team`, `user`, `key`.
    pub target_kind: &'static str,
    pub target: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub request_id: String,
}

/// Filters for reading the log, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub actor: Option<String>,
    pub target: Option<String>,
    /// Rows with an id below this (the previous page's `next_cursor`).
    pub before_id: Option<i64>,
    pub limit: u32,
}

impl SqliteStore {
    pub async fn append_audit(&self, e: &AuditEntry) -> Result<(), StoreError> {
        let json = |v: &Option<Value>| v.as_ref().map(Value::to_string);
        sqlx::query(
            "INSERT INTO audit_log (ts_ms, actor, action, target_kind, target, before, after, request_id) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(e.ts_ms)
        .bind(&e.actor)
        .bind(e.action)
        .bind(e.target_kind)
        .bind(&e.target)
        .bind(json(&e.before))
        .bind(json(&e.after))
        .bind(&e.request_id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// A page of entries, newest first, and the cursor of the next page.
    pub async fn audit(&self, q: &AuditQuery) -> Result<(Vec<Value>, Option<i64>), StoreError> {
        let mut sql = sqlx::QueryBuilder::new(
            "SELECT id, ts_ms, actor, action, target_kind, target, before, after, request_id \
             FROM audit_log WHERE 1 = 1",
        );
        if let Some(s) = q.since_ms {
            sql.push(" AND ts_ms >= ").push_bind(s);
        }
        if let Some(u) = q.until_ms {
            sql.push(" AND ts_ms < ").push_bind(u);
        }
        if let Some(a) = &q.actor {
            sql.push(" AND actor = ").push_bind(a.clone());
        }
        if let Some(t) = &q.target {
            sql.push(" AND target = ").push_bind(t.clone());
        }
        if let Some(b) = q.before_id {
            sql.push(" AND id < ").push_bind(b);
        }
        sql.push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::from(q.limit) + 1);
        let rows = sql.build().fetch_all(self.pool()).await?;
        let parse = |t: Option<String>| {
            t.and_then(|t| serde_json::from_str::<Value>(&t).ok())
                .unwrap_or(Value::Null)
        };
        let mut out = Vec::with_capacity(rows.len());
        let mut ids = Vec::with_capacity(rows.len());
        for r in rows.iter().take(q.limit as usize) {
            let id: i64 = r.try_get(0)?;
            ids.push(id);
            out.push(serde_json::json!({
                "id": id,
                "at": crate::policy::governance::rfc3339(r.try_get(1)?),
                "actor": r.try_get::<String, _>(2)?,
                "action": r.try_get::<String, _>(3)?,
                "target_kind": r.try_get::<String, _>(4)?,
                "target": r.try_get::<String, _>(5)?,
                "before": parse(r.try_get(6)?),
                "after": parse(r.try_get(7)?),
                "request_id": r.try_get::<String, _>(8)?,
            }));
        }
        let next = (rows.len() > q.limit as usize)
            .then(|| ids.last().copied())
            .flatten();
        Ok((out, next))
    }
}
