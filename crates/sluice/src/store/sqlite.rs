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
    // 6: reserved (no-op; keeps databases migrated by an earlier build consistent).
    r"SELECT 1;",
    // 7: stored Responses API objects (store::responses). IF NOT EXISTS: safe to renumber.
    r"
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    created_ms INTEGER NOT NULL,
    key_id TEXT,
    team TEXT,
    model TEXT NOT NULL,
    input_items TEXT NOT NULL,
    response TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS responses_created ON responses (created_ms);
",
    // 8: every attempt that did not answer, with what it was charged (JSON array).
    r"ALTER TABLE usage_records ADD COLUMN attempt_log TEXT;",
    // 9: the audit log of admin writes (store::audit). IF NOT EXISTS: safe to renumber.
    r"
CREATE TABLE IF NOT EXISTS audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts_ms INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target_kind TEXT NOT NULL,
    target TEXT NOT NULL,
    before TEXT,
    after TEXT,
    request_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_log_ts ON audit_log (ts_ms);
",
    // 10: the response cache's outcome and what a hit saved.
    r"
ALTER TABLE usage_records ADD COLUMN cache TEXT;
ALTER TABLE usage_records ADD COLUMN cost_saved_micro_usd INTEGER;
",
    // 11: quality feedback (store::feedback) and a hash of the request body, so that
    // `/admin/insights` can find repeated identical requests (store::insights).
    super::feedback::MIGRATION,
];

const INSERT_COLUMNS: &str = "INSERT INTO usage_records (request_id, ts_ms, surface, principal, \
     requested_model, provider, deployment_model, status, error_class, streamed, input_tokens, \
     output_tokens, cached_input_tokens, reasoning_tokens, latency_us, ttft_us, overhead_us, \
     attempts, policy_hits, key_id, key_prefix, team, user_name, tags, cost_micro_usd, \
     catalog_version, cache_write_tokens, route_reason, fallback_reason, attempt_log, cache, \
     cost_saved_micro_usd, request_hash) ";

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
            // Up to 16 MiB page cache per connection, filled only as used. With 512 KiB the
            // usage table's six indexes missed the cache on every insert: 32 us CPU and ~10k
            // rows/s; with 16 MiB, 6.9 us and ~100k rows/s (bench/sink-bench).
            .pragma("cache_size", "-16384");
        // Each connection to `:memory:` is its own database: keep exactly one, forever.
        let memory = url.contains(":memory:");
        if !memory {
            create_private(opts.get_filename());
        }
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

fn int(v: Option<u64>) -> Option<i64> {
    v.map(|n| i64::try_from(n).unwrap_or(i64::MAX))
}

fn bind_row<'q>(
    mut b: sqlx::query_builder::Separated<'_, 'q, sqlx::Sqlite, &'static str>,
    r: &'q UsageRow,
) {
    b.push_bind(&r.request_id)
        .push_bind(r.ts_ms)
        .push_bind(&r.surface)
        .push_bind(&r.principal)
        .push_bind(&r.requested_model)
        .push_bind(r.provider.as_deref())
        .push_bind(r.deployment_model.as_deref())
        .push_bind(i64::from(r.status))
        .push_bind(r.error_class.as_deref())
        .push_bind(r.streamed)
        .push_bind(int(r.input_tokens))
        .push_bind(int(r.output_tokens))
        .push_bind(int(r.cached_input_tokens))
        .push_bind(int(r.reasoning_tokens))
        .push_bind(int(Some(r.latency_us)))
        .push_bind(int(r.ttft_us))
        .push_bind(int(r.overhead_us))
        .push_bind(i64::from(r.attempts))
        .push_bind(r.policy_hits.as_deref())
        .push_bind(r.key_id.as_deref())
        .push_bind(r.key_prefix.as_deref())
        .push_bind(r.team.as_deref())
        .push_bind(r.user.as_deref())
        .push_bind(r.tags.as_deref())
        .push_bind(r.cost_micro_usd)
        .push_bind(r.catalog_version.as_deref())
        .push_bind(int(r.cache_write_tokens))
        .push_bind(r.route_reason.as_deref())
        .push_bind(r.fallback_reason.as_deref())
        .push_bind(r.attempt_log.as_deref())
        .push_bind(r.cache.as_deref())
        .push_bind(r.cost_saved_micro_usd)
        .push_bind(r.request_hash);
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

/// Creates a new database file readable by the owner only: it holds compliance prompts and
/// answers. SQLite gives its `-wal` and `-shm` files the database file's permissions. An
/// existing file keeps its mode (changing it is the operator's call).
fn create_private(path: &std::path::Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        if path.as_os_str().is_empty() || path.exists() {
            return;
        }
        if let Err(e) = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            tracing::debug!("pre-creating {} failed: {e}", path.display());
        }
    }
    #[cfg(not(unix))]
    let _ = path;
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

impl UsageStore for SqliteStore {
    async fn write_batch(&self, rows: &[UsageRow]) -> Result<(), StoreError> {
        // Multi-row INSERTs: one statement per ROWS_PER_INSERT records, all in one transaction.
        const ROWS_PER_INSERT: usize = 34; // 33 columns: far under SQLite's 32,766 parameters
        let mut tx = self.pool.begin().await?;
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(INSERT_COLUMNS);
            q.push_values(chunk, bind_row);
            q.build().execute(&mut *tx).await?;
        }
        insert_content(&mut tx, rows).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn write_batch_dedup(&self, rows: &[UsageRow]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut fresh = Vec::with_capacity(rows.len());
        for r in rows {
            let seen: Option<i64> = sqlx::query_scalar(
                "SELECT 1 FROM usage_records WHERE request_id = ? AND ts_ms = ? LIMIT 1",
            )
            .bind(&r.request_id)
            .bind(r.ts_ms)
            .fetch_optional(&mut *tx)
            .await?;
            if seen.is_none() {
                fresh.push(r);
            }
        }
        for chunk in fresh.chunks(34) {
            let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(INSERT_COLUMNS);
            q.push_values(chunk.iter().copied(), bind_row);
            q.build().execute(&mut *tx).await?;
        }
        let fresh: Vec<UsageRow> = fresh.into_iter().cloned().collect();
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
