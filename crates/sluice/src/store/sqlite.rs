//! The embedded SQLite store: created on first start, schema migrated in code.

use super::{StoreError, UsageRow, UsageStore};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;
use std::str::FromStr;
use std::time::Duration;

/// Schema steps, applied in order once each; append, never edit.
const MIGRATIONS: &[&str] = &[
    r"
CREATE TABLE usage_records (
    request_id TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    surface TEXT NOT NULL,
    principal TEXT NOT NULL,
    requested_model TEXT NOT NULL,
    provider TEXT,
    deployment_model TEXT,
    status INTEGER NOT NULL,
    error_class TEXT,
    streamed INTEGER NOT NULL,
    input_tokens INTEGER,
    output_tokens INTEGER,
    cached_input_tokens INTEGER,
    reasoning_tokens INTEGER,
    latency_us INTEGER NOT NULL,
    ttft_us INTEGER,
    overhead_us INTEGER,
    attempts INTEGER NOT NULL
);
CREATE INDEX usage_records_ts ON usage_records (ts_ms);
CREATE INDEX usage_records_request ON usage_records (request_id);
",
    // Content policy hits as a JSON array of {rule, action, stage, count}; NULL when none.
    r"ALTER TABLE usage_records ADD COLUMN policy_hits TEXT;",
    r"
ALTER TABLE usage_records ADD COLUMN key_id TEXT;
ALTER TABLE usage_records ADD COLUMN key_prefix TEXT;
ALTER TABLE usage_records ADD COLUMN team TEXT;
ALTER TABLE usage_records ADD COLUMN user_name TEXT;
ALTER TABLE usage_records ADD COLUMN tags TEXT;
ALTER TABLE usage_records ADD COLUMN cost_micro_usd INTEGER;
ALTER TABLE usage_records ADD COLUMN catalog_version TEXT;
CREATE INDEX usage_records_key ON usage_records (key_id, ts_ms);
CREATE INDEX usage_records_team ON usage_records (team, ts_ms);
CREATE TABLE gov_meta (version INTEGER NOT NULL);
INSERT INTO gov_meta (version) VALUES (0);
CREATE TABLE gov_teams (name TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE gov_keys (
    id TEXT PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    team TEXT,
    name TEXT UNIQUE,
    created_ms INTEGER NOT NULL,
    data TEXT NOT NULL
);
",
    r"
CREATE TABLE gov_users (name TEXT PRIMARY KEY, team TEXT, data TEXT NOT NULL);
CREATE INDEX usage_records_user ON usage_records (user_name, ts_ms);
",
    // 5 (usage records issue): route decision, prompt-cache writes, compliance content.
    r"
ALTER TABLE usage_records ADD COLUMN cache_write_tokens INTEGER;
ALTER TABLE usage_records ADD COLUMN route_reason TEXT;
ALTER TABLE usage_records ADD COLUMN fallback_reason TEXT;
CREATE INDEX usage_records_model ON usage_records (requested_model, ts_ms);
CREATE TABLE usage_content (
    request_id TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    team TEXT,
    key_id TEXT,
    prompt TEXT NOT NULL,
    response TEXT NOT NULL
);
CREATE INDEX usage_content_request ON usage_content (request_id, ts_ms);
CREATE INDEX usage_content_ts ON usage_content (ts_ms);
",
];

#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `url` (`sqlite://path` or `sqlite::memory:`).
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            // 512 KiB page cache per connection (SQLite's default is 2 MiB): the store is
            // written in batches and read rarely, and idle memory matters.
            .pragma("cache_size", "-512");
        // Each connection to `:memory:` is its own database: keep exactly one, forever.
        let memory = url.contains(":memory:");
        let pool = SqlitePoolOptions::new()
            .max_connections(if memory { 1 } else { 2 })
            .idle_timeout(if memory {
                None
            } else {
                Some(Duration::from_secs(600))
            })
            .max_lifetime(if memory {
                None
            } else {
                Some(Duration::from_secs(3600))
            })
            .connect_with(opts)
            .await?;
        let store = Self { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::query("CREATE TABLE IF NOT EXISTS sluice_schema (version INTEGER NOT NULL)")
            .execute(&self.pool)
            .await?;
        let current: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM sluice_schema")
            .fetch_one(&self.pool)
            .await?;
        let current = usize::try_from(current.unwrap_or(0)).unwrap_or(0);
        for (i, step) in MIGRATIONS.iter().enumerate().skip(current) {
            let mut tx = self.pool.begin().await?;
            sqlx::raw_sql(step)
                .execute(&mut *tx)
                .await
                .map_err(|e| StoreError::Migrate(format!("step {}: {e}", i + 1)))?;
            sqlx::query("INSERT INTO sluice_schema (version) VALUES (?)")
                .bind(i64::try_from(i + 1).unwrap_or(i64::MAX))
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        Ok(())
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

async fn insert_content(
    tx: &mut sqlx::SqliteConnection,
    rows: &[UsageRow],
) -> Result<(), StoreError> {
    for r in rows {
        if let Some(c) = &r.content {
            sqlx::query(
                "INSERT INTO usage_content (request_id, ts_ms, team, key_id, prompt, response) \
                 VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(&r.request_id)
            .bind(r.ts_ms)
            .bind(r.team.as_deref())
            .bind(r.key_id.as_deref())
            .bind(&c.prompt)
            .bind(&c.response)
            .execute(&mut *tx)
            .await?;
        }
    }
    Ok(())
}

impl SqliteStore {
    /// Deletes compliance content older than `before_ms`; returns how many rows went.
    pub async fn purge_content(&self, before_ms: i64) -> Result<u64, StoreError> {
        let r = sqlx::query("DELETE FROM usage_content WHERE ts_ms < ?")
            .bind(before_ms)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }
}

/// One statement per batch: the rows go in as one JSON array and SQLite unpacks them
/// (`json_each`), instead of binding 29 parameters per row.
const INSERT_JSON: &str = "INSERT INTO usage_records (request_id, ts_ms, surface, principal, requested_model, provider, deployment_model, status, error_class, streamed, input_tokens, output_tokens, cached_input_tokens, reasoning_tokens, latency_us, ttft_us, overhead_us, attempts, policy_hits, key_id, key_prefix, team, user_name, tags, cost_micro_usd, catalog_version, cache_write_tokens, route_reason, fallback_reason) SELECT json_extract(value, '$.request_id'), json_extract(value, '$.ts_ms'), json_extract(value, '$.surface'), json_extract(value, '$.principal'), json_extract(value, '$.requested_model'), json_extract(value, '$.provider'), json_extract(value, '$.deployment_model'), json_extract(value, '$.status'), json_extract(value, '$.error_class'), json_extract(value, '$.streamed'), json_extract(value, '$.input_tokens'), json_extract(value, '$.output_tokens'), json_extract(value, '$.cached_input_tokens'), json_extract(value, '$.reasoning_tokens'), json_extract(value, '$.latency_us'), json_extract(value, '$.ttft_us'), json_extract(value, '$.overhead_us'), json_extract(value, '$.attempts'), json_extract(value, '$.policy_hits'), json_extract(value, '$.key_id'), json_extract(value, '$.key_prefix'), json_extract(value, '$.team'), json_extract(value, '$.user'), json_extract(value, '$.tags'), json_extract(value, '$.cost_micro_usd'), json_extract(value, '$.catalog_version'), json_extract(value, '$.cache_write_tokens'), json_extract(value, '$.route_reason'), json_extract(value, '$.fallback_reason') FROM json_each(?)";
const INSERT_JSON_DEDUP: &str = "INSERT INTO usage_records (request_id, ts_ms, surface, principal, requested_model, provider, deployment_model, status, error_class, streamed, input_tokens, output_tokens, cached_input_tokens, reasoning_tokens, latency_us, ttft_us, overhead_us, attempts, policy_hits, key_id, key_prefix, team, user_name, tags, cost_micro_usd, catalog_version, cache_write_tokens, route_reason, fallback_reason) SELECT json_extract(value, '$.request_id'), json_extract(value, '$.ts_ms'), json_extract(value, '$.surface'), json_extract(value, '$.principal'), json_extract(value, '$.requested_model'), json_extract(value, '$.provider'), json_extract(value, '$.deployment_model'), json_extract(value, '$.status'), json_extract(value, '$.error_class'), json_extract(value, '$.streamed'), json_extract(value, '$.input_tokens'), json_extract(value, '$.output_tokens'), json_extract(value, '$.cached_input_tokens'), json_extract(value, '$.reasoning_tokens'), json_extract(value, '$.latency_us'), json_extract(value, '$.ttft_us'), json_extract(value, '$.overhead_us'), json_extract(value, '$.attempts'), json_extract(value, '$.policy_hits'), json_extract(value, '$.key_id'), json_extract(value, '$.key_prefix'), json_extract(value, '$.team'), json_extract(value, '$.user'), json_extract(value, '$.tags'), json_extract(value, '$.cost_micro_usd'), json_extract(value, '$.catalog_version'), json_extract(value, '$.cache_write_tokens'), json_extract(value, '$.route_reason'), json_extract(value, '$.fallback_reason') FROM json_each(?) WHERE NOT EXISTS (SELECT 1 FROM usage_records u WHERE u.request_id = json_extract(value, '$.request_id') AND u.ts_ms = json_extract(value, '$.ts_ms'))";

/// The rows as a JSON array, without their compliance content (stored apart).
fn rows_json(rows: &[UsageRow]) -> Result<String, StoreError> {
    #[derive(serde::Serialize)]
    struct NoContent<'a>(#[serde(with = "no_content")] &'a UsageRow);
    mod no_content {
        pub fn serialize<S: serde::Serializer>(
            r: &&super::UsageRow,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            if r.content.is_none() {
                serde::Serialize::serialize(*r, s)
            } else {
                let mut bare = (*r).clone();
                bare.content = None;
                serde::Serialize::serialize(&bare, s)
            }
        }
    }
    let list: Vec<NoContent<'_>> = rows.iter().map(NoContent).collect();
    serde_json::to_string(&list).map_err(|e| StoreError::Migrate(format!("encoding rows: {e}")))
}

impl UsageStore for SqliteStore {
    async fn write_batch(&self, rows: &[UsageRow]) -> Result<(), StoreError> {
        let json = rows_json(rows)?;
        let mut tx = self.pool.begin().await?;
        sqlx::query(INSERT_JSON)
            .bind(json)
            .execute(&mut *tx)
            .await?;
        insert_content(&mut tx, rows).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn write_batch_dedup(&self, rows: &[UsageRow]) -> Result<(), StoreError> {
        let json = rows_json(rows)?;
        let mut tx = self.pool.begin().await?;
        // Content first, for the rows not stored yet (the check needs them absent).
        let mut fresh = Vec::new();
        for r in rows.iter().filter(|r| r.content.is_some()) {
            let seen: Option<i64> = sqlx::query_scalar(
                "SELECT 1 FROM usage_records WHERE request_id = ? AND ts_ms = ? LIMIT 1",
            )
            .bind(&r.request_id)
            .bind(r.ts_ms)
            .fetch_optional(&mut *tx)
            .await?;
            if seen.is_none() {
                fresh.push(r.clone());
            }
        }
        sqlx::query(INSERT_JSON_DEDUP)
            .bind(json)
            .execute(&mut *tx)
            .await?;
        insert_content(&mut tx, &fresh).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn creates_file_migrates_once_and_writes() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let store = SqliteStore::open(&url).await.unwrap();
        let rec = UsageRow {
            request_id: "r1".into(),
            surface: "openai.chat".into(),
            requested_model: "m".into(),
            status: 200,
            input_tokens: Some(7),
            attempts: 1,
            ..Default::default()
        };
        store.write_batch(&[rec.clone(), rec]).await.unwrap();
        drop(store);
        // Re-open: migrations must not run twice.
        let store = SqliteStore::open(&url).await.unwrap();
        let n: i64 = sqlx::query_scalar("SELECT SUM(input_tokens) FROM usage_records")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(n, 14);
        let v: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sluice_schema")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(v, i64::try_from(MIGRATIONS.len()).unwrap());
    }
}
