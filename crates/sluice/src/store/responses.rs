//! Stored Responses API objects (`store: true`): the response, the conversation that led to
//! it (so `previous_response_id` can rebuild it for any provider) and its owner.
//!
//! Read-your-writes: a response is visible the moment it is answered. JSON answers are
//! written before they are returned; a stream's final object is put in an in-memory map
//! when its last event is written and moved to the store by a tracked task, and reads look in
//! the map first.

use super::db::{on_pool, Pool};
use super::StoreError;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

/// One stored response.
#[derive(Debug, Clone)]
pub struct StoredResponse {
    pub id: String,
    pub created_ms: i64,
    /// The virtual key that created it (`None`: master key or open gateway).
    pub key_id: Option<String>,
    pub team: Option<String>,
    pub model: String,
    /// Every input item of the conversation up to this response (earlier turns' input and
    /// output items, then this request's input), in order. Instructions are not carried.
    pub input_items: Vec<Value>,
    /// The response object as it was returned.
    pub response: Value,
}

impl StoredResponse {
    /// The conversation a follow-up continues: the input items, then this response's output.
    pub fn conversation(&self) -> Vec<Value> {
        let mut items = self.input_items.clone();
        if let Some(out) = self.response.get("output").and_then(Value::as_array) {
            items.extend(out.iter().cloned());
        }
        items
    }
}

/// Who may see a stored response.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// Master key, open gateway: everything.
    All,
    /// A virtual key: what it created.
    Key(&'a str),
}

impl Scope<'_> {
    fn allows(&self, r: &StoredResponse) -> bool {
        match self {
            Scope::All => true,
            Scope::Key(k) => r.key_id.as_deref() == Some(*k),
        }
    }
}

pub struct ResponseStore {
    pool: Pool,
    pending: Mutex<HashMap<String, Arc<StoredResponse>>>,
    last_purge_ms: AtomicI64,
}

impl ResponseStore {
    pub fn new(pool: Pool) -> Self {
        Self {
            pool,
            pending: Mutex::new(HashMap::new()),
            last_purge_ms: AtomicI64::new(0),
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<StoredResponse>>> {
        // A panic while holding this lock leaves the map usable: recover it.
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes `r` readable now; [`flush`](Self::flush) writes it to the database.
    pub fn hold(&self, r: StoredResponse) {
        self.pending().insert(r.id.clone(), Arc::new(r));
    }

    /// Writes a held response to the database, then lets go of it.
    pub async fn flush(&self, id: &str) -> Result<(), StoreError> {
        let Some(r) = self.pending().get(id).cloned() else {
            return Ok(()); // deleted meanwhile
        };
        let res = self.write(&r).await;
        self.pending().remove(id);
        res
    }

    /// Writes `r` (replacing a response with the same id).
    pub async fn write(&self, r: &StoredResponse) -> Result<(), StoreError> {
        let items = Value::Array(r.input_items.clone()).to_string();
        let response = r.response.to_string();
        on_pool!(&self.pool, |p| sqlx::query(
            "INSERT INTO responses (id, created_ms, key_id, team, model, input_items, response) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO UPDATE SET \
             created_ms = excluded.created_ms, key_id = excluded.key_id, team = excluded.team, \
             model = excluded.model, input_items = excluded.input_items, \
             response = excluded.response",
        )
        .bind(&r.id)
        .bind(r.created_ms)
        .bind(r.key_id.as_deref())
        .bind(r.team.as_deref())
        .bind(&r.model)
        .bind(&items)
        .bind(&response)
        .execute(p)
        .await?
        .rows_affected());
        Ok(())
    }

    /// The response `id` if `scope` may see it and it was created at or after `not_before_ms`.
    pub async fn get(
        &self,
        id: &str,
        scope: Scope<'_>,
        not_before_ms: i64,
    ) -> Result<Option<StoredResponse>, StoreError> {
        if let Some(r) = self.pending().get(id).cloned() {
            return Ok((scope.allows(&r) && r.created_ms >= not_before_ms).then(|| (*r).clone()));
        }
        type Columns = (
            String,
            i64,
            Option<String>,
            Option<String>,
            String,
            String,
            String,
        );
        let row: Option<Columns> = on_pool!(&self.pool, |p| sqlx::query_as(
            "SELECT id, created_ms, key_id, team, model, input_items, response FROM responses \
             WHERE id = $1 AND created_ms >= $2",
        )
        .bind(id)
        .bind(not_before_ms)
        .fetch_optional(p)
        .await?);
        let Some((id, created_ms, key_id, team, model, items, response)) = row else {
            return Ok(None);
        };
        let parse = |s: String| serde_json::from_str::<Value>(&s).unwrap_or(Value::Null);
        let r = StoredResponse {
            id,
            created_ms,
            key_id,
            team,
            model,
            input_items: match parse(items) {
                Value::Array(a) => a,
                _ => Vec::new(),
            },
            response: parse(response),
        };
        Ok(scope.allows(&r).then_some(r))
    }

    /// Deletes `id` if `scope` may see it; whether it existed.
    pub async fn delete(&self, id: &str, scope: Scope<'_>) -> Result<bool, StoreError> {
        let held = {
            let mut p = self.pending();
            match p.get(id) {
                Some(r) if scope.allows(r) => p.remove(id).is_some(),
                _ => false,
            }
        };
        // `All` matches any owner: `key_id = $2 OR $2 IS NULL` would need a typed NULL.
        let (sql, key) = match scope {
            Scope::All => ("DELETE FROM responses WHERE id = $1", None),
            Scope::Key(k) => (
                "DELETE FROM responses WHERE id = $1 AND key_id = $2",
                Some(k),
            ),
        };
        let done = on_pool!(&self.pool, |p| {
            let q = sqlx::query(sql).bind(id);
            match key {
                Some(k) => q.bind(k).execute(p).await?,
                None => q.execute(p).await?,
            }
            .rows_affected()
        });
        Ok(held || done > 0)
    }

    /// Deletes responses created before `before_ms`; how many.
    pub async fn purge(&self, before_ms: i64) -> Result<u64, StoreError> {
        Ok(on_pool!(&self.pool, |p| sqlx::query(
            "DELETE FROM responses WHERE created_ms < $1"
        )
        .bind(before_ms)
        .execute(p)
        .await?
        .rows_affected()))
    }

    /// Whether a purge is due (at most one per `every_ms`); claims it when it is.
    pub fn purge_due(&self, now_ms: i64, every_ms: i64) -> bool {
        let last = self.last_purge_ms.load(Ordering::Relaxed);
        now_ms - last >= every_ms
            && self
                .last_purge_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::Store;
    use serde_json::json;

    fn resp(id: &str, key: Option<&str>, created_ms: i64) -> StoredResponse {
        StoredResponse {
            id: id.into(),
            created_ms,
            key_id: key.map(str::to_string),
            team: None,
            model: "m".into(),
            input_items: vec![json!({"type": "message", "role": "user", "content": "hi"})],
            response: json!({"id": id, "output": [{"type": "message", "role": "assistant"}]}),
        }
    }

    #[tokio::test]
    async fn held_then_flushed_scoped_purged() {
        for db in crate::store::testing::databases("responses_held").await {
            let store = Store::open(&db.url).await.unwrap();
            held_flushed_scoped_purged(ResponseStore::new(store.pool().clone())).await;
            // Writing an id again replaces it.
            let rs = ResponseStore::new(store.pool().clone());
            rs.write(&resp("twice", None, 1)).await.unwrap();
            rs.write(&resp("twice", Some("k9"), 2)).await.unwrap();
            let r = rs.get("twice", Scope::All, 0).await.unwrap().unwrap();
            assert_eq!(
                (r.created_ms, r.key_id.as_deref()),
                (2, Some("k9")),
                "{}",
                db.engine
            );
        }
    }

    async fn held_flushed_scoped_purged(rs: ResponseStore) {
        rs.hold(resp("r1", Some("k1"), 100));
        // Readable before the write, by its owner only.
        assert!(rs.get("r1", Scope::Key("k1"), 0).await.unwrap().is_some());
        assert!(rs.get("r1", Scope::Key("k2"), 0).await.unwrap().is_none());
        rs.flush("r1").await.unwrap();
        assert!(rs.pending().is_empty());
        let r = rs.get("r1", Scope::All, 0).await.unwrap().unwrap();
        assert_eq!(r.conversation().len(), 2);
        assert!(rs.get("r1", Scope::Key("k2"), 0).await.unwrap().is_none());
        // Expired by retention.
        assert!(rs.get("r1", Scope::All, 101).await.unwrap().is_none());
        assert!(!rs.delete("r1", Scope::Key("k2")).await.unwrap());
        assert!(rs.delete("r1", Scope::Key("k1")).await.unwrap());
        assert!(!rs.delete("r1", Scope::All).await.unwrap());
        rs.write(&resp("old", None, 5)).await.unwrap();
        rs.write(&resp("new", None, 500)).await.unwrap();
        assert_eq!(rs.purge(100).await.unwrap(), 1);
        assert!(rs.get("new", Scope::All, 0).await.unwrap().is_some());
        assert!(rs.purge_due(1000, 100) && !rs.purge_due(1050, 100));
    }
}
