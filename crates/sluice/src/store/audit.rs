//! The audit log: one row per admin write — who (the principal's label, never a secret),
//! what (action and target), when, and the target before and after as the admin API shows
//! it (those views carry key prefixes, never keys or hashes). Read by `GET /admin/audit`
//! and `sluice audit`.

use super::db::{on_pool, Store};
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

impl Store {
    pub async fn append_audit(&self, e: &AuditEntry) -> Result<(), StoreError> {
        let json = |v: &Option<Value>| v.as_ref().map(Value::to_string);
        let (before, after) = (json(&e.before), json(&e.after));
        on_pool!(self.pool(), |p| sqlx::query(
            "INSERT INTO audit_log (ts_ms, actor, action, target_kind, target, before, after, \
             request_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(e.ts_ms)
        .bind(&e.actor)
        .bind(e.action)
        .bind(e.target_kind)
        .bind(&e.target)
        .bind(&before)
        .bind(&after)
        .bind(&e.request_id)
        .execute(p)
        .await?
        .rows_affected());
        Ok(())
    }

    /// A page of entries, newest first, and the cursor of the next page.
    pub async fn audit(&self, q: &AuditQuery) -> Result<(Vec<Value>, Option<i64>), StoreError> {
        let (out, ids, more) = on_pool!(self.pool(), |p| {
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
            let rows = sql.build().fetch_all(p).await?;
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
            (out, ids, rows.len() > q.limit as usize)
        });
        let next = more.then(|| ids.last().copied()).flatten();
        Ok((out, next))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn appended_then_read_newest_first_in_pages_on_every_engine() {
        for db in crate::store::testing::databases("audit_pages").await {
            let store = Store::open(&db.url).await.unwrap();
            for i in 0..3 {
                store
                    .append_audit(&AuditEntry {
                        ts_ms: 1000 + i,
                        actor: if i == 1 { "key_a" } else { "master" }.into(),
                        action: "create",
                        target_kind: "team",
                        target: format!("t{i}"),
                        before: None,
                        after: Some(serde_json::json!({"name": format!("t{i}")})),
                        request_id: format!("req{i}"),
                    })
                    .await
                    .unwrap();
            }
            let q = AuditQuery {
                limit: 2,
                ..AuditQuery::default()
            };
            let (page, next) = store.audit(&q).await.unwrap();
            let targets: Vec<&str> = page.iter().map(|e| e["target"].as_str().unwrap()).collect();
            assert_eq!(targets, ["t2", "t1"], "{}", db.engine);
            assert_eq!(page[0]["after"]["name"], "t2");
            assert_eq!(page[0]["before"], Value::Null);
            let (rest, end) = store
                .audit(&AuditQuery {
                    before_id: next,
                    ..q.clone()
                })
                .await
                .unwrap();
            assert_eq!(rest.len(), 1, "{}", db.engine);
            assert!(end.is_none());
            let mine = AuditQuery {
                actor: Some("key_a".into()),
                limit: 10,
                ..AuditQuery::default()
            };
            assert_eq!(
                store.audit(&mine).await.unwrap().0.len(),
                1,
                "{}",
                db.engine
            );
        }
    }
}
