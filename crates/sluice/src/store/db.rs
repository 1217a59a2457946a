//! The store: embedded SQLite for one process (created on first start) or PostgreSQL for a
//! fleet (`store.url: postgres://...`), schema migrated in code. Every query is written once
//! in SQL both engines accept (`$1` placeholders, standard SQL; the few differences are in
//! `Pool` methods) and compiled for each engine by `on_pool!`.

use super::{StoreError, UsageRow, UsageStore};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};
use std::str::FromStr;
use std::time::Duration;

/// The database behind the store.
#[derive(Clone, Debug)]
pub enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$p` bound to the store's pool, whichever engine it is: the code is
/// written once and compiled for each engine.
macro_rules! on_pool {
    ($pool:expr, |$p:ident| $body:expr) => {
        match $pool {
            $crate::store::db::Pool::Sqlite($p) => $body,
            $crate::store::db::Pool::Postgres($p) => $body,
        }
    };
}
pub(crate) use on_pool;

impl Pool {
    pub fn is_postgres(&self) -> bool {
        matches!(self, Pool::Postgres(_))
    }

    /// The engine's name, for messages and `/health/ready`.
    pub fn engine(&self) -> &'static str {
        match self {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }

    /// SQL for the text field `field` of a JSON document held in the TEXT column `column`.
    pub fn json_text(&self, column: &str, field: &str) -> String {
        match self {
            Pool::Sqlite(_) => format!("json_extract({column}, '$.{field}')"),
            Pool::Postgres(_) => format!("(({column})::jsonb ->> '{field}')"),
        }
    }

    /// The integers of `column` in a group as one comma-separated text (NULLs left out).
    pub fn list_agg(&self, column: &str) -> String {
        match self {
            Pool::Sqlite(_) => format!("group_concat({column})"),
            Pool::Postgres(_) => format!("string_agg(CAST({column} AS TEXT), ',')"),
        }
    }

    /// A column that names a row, for chunked deletes.
    pub fn row_id(&self) -> &'static str {
        match self {
            Pool::Sqlite(_) => "rowid",
            Pool::Postgres(_) => "ctid",
        }
    }

    /// A read transaction that sees one snapshot across its statements (PostgreSQL's default
    /// takes one per statement; SQLite's WAL readers keep theirs).
    pub fn begin_snapshot(&self) -> &'static str {
        match self {
            Pool::Sqlite(_) => "BEGIN",
            Pool::Postgres(_) => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        }
    }

    /// How a write transaction starts: SQLite takes its write lock up front (`BEGIN
    /// IMMEDIATE`: a deferred transaction that reads and then writes fails at once with
    /// SQLITE_BUSY when another writer committed in between); PostgreSQL's row locks serialise
    /// the writes that conflict.
    pub fn begin_write(&self) -> &'static str {
        match self {
            Pool::Sqlite(_) => "BEGIN IMMEDIATE",
            Pool::Postgres(_) => "BEGIN",
        }
    }
}

/// PostgreSQL's schema steps, applied in order once each; append, never edit. Step 1 is the
/// SQLite schema up to its step 10; later steps follow SQLite's one for one.
const PG_MIGRATIONS: &[&str] = &[
    r"
CREATE TABLE usage_records (
    rowid BIGSERIAL PRIMARY KEY,
    request_id TEXT NOT NULL,
    ts_ms BIGINT NOT NULL,
    surface TEXT NOT NULL,
    principal TEXT NOT NULL,
    requested_model TEXT NOT NULL,
    provider TEXT,
    deployment_model TEXT,
    status BIGINT NOT NULL,
    error_class TEXT,
    streamed BOOLEAN NOT NULL,
    input_tokens BIGINT,
    output_tokens BIGINT,
    cached_input_tokens BIGINT,
    reasoning_tokens BIGINT,
    latency_us BIGINT NOT NULL,
    ttft_us BIGINT,
    overhead_us BIGINT,
    attempts BIGINT NOT NULL,
    policy_hits TEXT,
    key_id TEXT,
    key_prefix TEXT,
    team TEXT,
    user_name TEXT,
    tags TEXT,
    cost_micro_usd BIGINT,
    catalog_version TEXT,
    cache_write_tokens BIGINT,
    route_reason TEXT,
    fallback_reason TEXT,
    attempt_log TEXT,
    cache TEXT,
    cost_saved_micro_usd BIGINT
);
CREATE INDEX usage_records_ts ON usage_records (ts_ms);
CREATE INDEX usage_records_request ON usage_records (request_id);
CREATE INDEX usage_records_key ON usage_records (key_id, ts_ms);
CREATE INDEX usage_records_team ON usage_records (team, ts_ms);
CREATE INDEX usage_records_user ON usage_records (user_name, ts_ms);
CREATE INDEX usage_records_model ON usage_records (requested_model, ts_ms);
CREATE TABLE gov_meta (version BIGINT NOT NULL);
INSERT INTO gov_meta (version) VALUES (0);
CREATE TABLE gov_teams (name TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE gov_keys (
    id TEXT PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    team TEXT,
    name TEXT UNIQUE,
    created_ms BIGINT NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE gov_users (name TEXT PRIMARY KEY, team TEXT, data TEXT NOT NULL);
CREATE TABLE usage_content (
    request_id TEXT NOT NULL,
    ts_ms BIGINT NOT NULL,
    team TEXT,
    key_id TEXT,
    prompt TEXT NOT NULL,
    response TEXT NOT NULL
);
CREATE INDEX usage_content_request ON usage_content (request_id, ts_ms);
CREATE INDEX usage_content_ts ON usage_content (ts_ms);
CREATE TABLE responses (
    id TEXT PRIMARY KEY,
    created_ms BIGINT NOT NULL,
    key_id TEXT,
    team TEXT,
    model TEXT NOT NULL,
    input_items TEXT NOT NULL,
    response TEXT NOT NULL
);
CREATE INDEX responses_created ON responses (created_ms);
CREATE TABLE audit_log (
    id BIGSERIAL PRIMARY KEY,
    ts_ms BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target_kind TEXT NOT NULL,
    target TEXT NOT NULL,
    before TEXT,
    after TEXT,
    request_id TEXT NOT NULL
);
CREATE INDEX audit_log_ts ON audit_log (ts_ms);
",
    // 2 (SQLite's 11): quality feedback and the request hash.
    super::feedback::MIGRATION,
    // 3 (SQLite's 12): usage rollups (store::rollup); the request log pages on (ts, rowid).
    super::rollup::POSTGRES_MIGRATION,
    r"CREATE INDEX usage_records_ts_rowid ON usage_records (ts_ms, rowid);
DROP INDEX usage_records_ts;
DROP INDEX IF EXISTS usage_records_team;
DROP INDEX IF EXISTS usage_records_user;
DROP INDEX IF EXISTS usage_records_model;",
    // 5: raw records partitioned by day (store::partitions).
    super::partitions::MIGRATION,
    // 6 (SQLite's 14): repeated texts stored once (store::dims); filled in by `migrations`.
    "",
    // 7 (SQLite's 15): the records by key kept by the roller, not by an index
    // (store::key_rows); filled in by `migrations`.
    "",
    // 8 (SQLite's 16): the rollups as packed segments (store::segment); the old table's rows
    // are moved by `rollup::convert_rows` when the store opens.
    super::rollup::POSTGRES_SEGMENTS,
];

/// SQLite's schema steps, applied in order once each; append, never edit (and append the
/// PostgreSQL equivalent to `PG_MIGRATIONS`).
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
    // 12: usage rollups (store::rollup), built from the stored records on upgrade.
    super::rollup::SQLITE_MIGRATION,
    // 13: analytics read the rollups, so the team, user and model indexes of the raw records
    // go (each cost every insert a random B-tree write); the request log filters those
    // walking the time index. (PostgreSQL's step 4 also indexes the log's (ts, rowid) order;
    // SQLite's `ts_ms` index holds the rowid already.)
    r"
DROP INDEX IF EXISTS usage_records_team;
DROP INDEX IF EXISTS usage_records_user;
DROP INDEX IF EXISTS usage_records_model;
",
    // 14: repeated texts stored once (store::dims); filled in by `migrations`.
    "",
    // 15: the records by key kept by the roller, not by an index (store::key_rows); filled
    // in by `migrations`.
    "",
    // 16: the rollups as packed segments (store::segment); the old table's rows are moved by
    // `rollup::convert_rows` when the store opens.
    super::rollup::SQLITE_SEGMENTS,
];

/// The engine's schema steps; the ones built from code (store::dims) are empty in the lists.
/// The steps built from code (SQLite's, PostgreSQL's): store::dims, store::key_rows.
const GENERATED_STEPS: [(usize, usize); 2] = [(14, 15), (6, 7)];
/// The steps that store the rollups as segments (SQLite's, PostgreSQL's; store::segment).
#[cfg(test)]
const SEGMENTS_STEPS: [usize; 2] = [16, 8];

fn migrations(pool: &Pool) -> Vec<std::borrow::Cow<'static, str>> {
    let (steps, (dims, key_rows)) = match pool {
        Pool::Sqlite(_) => (MIGRATIONS, GENERATED_STEPS[0]),
        Pool::Postgres(_) => (PG_MIGRATIONS, GENERATED_STEPS[1]),
    };
    let pg = pool.is_postgres();
    steps
        .iter()
        .enumerate()
        .map(|(i, s)| match i + 1 {
            n if n == dims && pg => super::dims::postgres_migration().into(),
            n if n == dims => super::dims::sqlite_migration().into(),
            n if n == key_rows => super::key_rows::migration(pg).into(),
            _ => (*s).into(),
        })
        .collect()
}

/// `INSERT INTO usage_rows (<dims::ROW_FIELDS>) `.
fn insert_columns() -> String {
    format!("INSERT INTO usage_rows ({}) ", super::dims::ROW_FIELDS)
}

/// The store: usage records, governance state, stored responses and the audit log.
#[derive(Clone, Debug)]
pub struct Store {
    pool: Pool,
    /// `usage.rollup_minute_retention` in ms: no minute rollups are written for older times
    /// (they would be purged at once).
    minute_retention_ms: std::sync::Arc<std::sync::atomic::AtomicI64>,
    /// PostgreSQL's day partitions known to exist.
    partitions: super::partitions::Known,
    /// `usage_dims` combinations known to be stored.
    dims: std::sync::Arc<super::dims::Cache>,
}

impl Store {
    /// Opens the store at `url`: `sqlite://path` (created if missing), `sqlite::memory:`, or
    /// `postgres://user@host:port/db` (the database must exist; the schema is created).
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let pool = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Pool::Postgres(open_postgres(url).await?)
        } else if url.starts_with("sqlite:") {
            Pool::Sqlite(open_sqlite(url).await?)
        } else {
            return Err(StoreError::Unsupported(crate::config::redact_url(url)));
        };
        let store = Self {
            pool,
            minute_retention_ms: std::sync::Arc::new(std::sync::atomic::AtomicI64::new(
                2 * 86_400_000,
            )),
            partitions: super::partitions::Known::default(),
            dims: std::sync::Arc::default(),
        };
        store.migrate().await?;
        super::rollup::convert_rows(&store).await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let steps = migrations(&self.pool);
        on_pool!(&self.pool, |p| {
            let mut tx = p.begin().await?;
            if self.pool.is_postgres() {
                // Replicas starting together: one migrates, the others wait and find it done.
                sqlx::query("SELECT pg_advisory_xact_lock(7263506934)")
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query("CREATE TABLE IF NOT EXISTS sluice_schema (version BIGINT NOT NULL)")
                .execute(&mut *tx)
                .await?;
            let current: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM sluice_schema")
                .fetch_one(&mut *tx)
                .await?;
            let current = usize::try_from(current.unwrap_or(0)).unwrap_or(0);
            for (i, step) in steps.iter().enumerate().skip(current) {
                sqlx::raw_sql(step.as_ref())
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| StoreError::Migrate(format!("step {}: {e}", i + 1)))?;
                sqlx::query("INSERT INTO sluice_schema (version) VALUES ($1)")
                    .bind(i64::try_from(i + 1).unwrap_or(i64::MAX))
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub(crate) fn partitions(&self) -> &super::partitions::Known {
        &self.partitions
    }

    /// Applies `usage.rollup_minute_retention` (at start and on reload).
    pub fn set_minute_retention(&self, d: std::time::Duration) {
        self.minute_retention_ms.store(
            crate::config::usage::ms(d),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Times before this get no minute rollups.
    pub fn minutes_from_ms(&self) -> i64 {
        crate::app::unix_ms().saturating_sub(
            self.minute_retention_ms
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }
}

async fn open_sqlite(url: &str) -> Result<SqlitePool, StoreError> {
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
    Ok(SqlitePoolOptions::new()
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
        .await?)
}

/// A small pool (the usage writer, the governance refresh and admin writes; never the
/// request path) that gives up quickly when the server is away, so the usage writer spills
/// to disk instead of waiting.
async fn open_postgres(url: &str) -> Result<PgPool, StoreError> {
    let mut opts = PgConnectOptions::from_str(url)?;
    // The URL's own `application_name` wins (the tests name their connections this way).
    if !url.contains("application_name=") {
        opts = opts.application_name("sluice");
    }
    Ok(PgPoolOptions::new()
        .max_connections(8)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(3))
        .idle_timeout(Some(Duration::from_secs(600)))
        .max_lifetime(Some(Duration::from_secs(3600)))
        .connect_with(opts)
        .await?)
}

fn int(v: Option<u64>) -> Option<i64> {
    v.map(|n| i64::try_from(n).unwrap_or(i64::MAX))
}

/// The VALUES tuple of one usage record (its `usage_dims` id `$dims`), in
/// `dims::ROW_FIELDS` order.
macro_rules! bind_row {
    ($b:expr, $r:expr, $dims:expr) => {{
        let r: &UsageRow = $r;
        $b.push_bind(r.request_id.as_str())
            .push_bind(r.ts_ms)
            .push_bind($dims)
            .push_bind(i64::from(r.status))
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
            .push_bind(r.cost_micro_usd)
            .push_bind(int(r.cache_write_tokens))
            .push_bind(r.attempt_log.as_deref())
            .push_bind(r.cost_saved_micro_usd)
            .push_bind(r.request_hash);
    }};
}

/// Inserts each record's compliance content, inside the transaction `$tx`.
macro_rules! insert_content {
    ($tx:ident, $rows:expr) => {
        for r in $rows {
            if let Some(c) = &r.content {
                sqlx::query(
                    "INSERT INTO usage_content (request_id, ts_ms, team, key_id, prompt, response) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&r.request_id)
                .bind(r.ts_ms)
                .bind(r.team.as_deref())
                .bind(r.key_id.as_deref())
                .bind(&c.prompt)
                .bind(&c.response)
                .execute(&mut *$tx)
                .await?;
            }
        }
    };
}

/// Rows per multi-row INSERT of usage records on SQLite (20 columns: 10,000 parameters, under
/// the bundled SQLite's bound of 32,766). Each statement is a round trip to the driver's
/// worker thread: 49 rows a statement wrote 99-110k records/s, 500 wrote 169-184k
/// (bench/README.md).
const SQLITE_ROWS_PER_INSERT: usize = 500;

/// Inserts `rows` (their compliance content and rollups) in one transaction: multi-row INSERTs on
/// SQLite, `COPY ... FROM STDIN` on PostgreSQL (faster than multi-row INSERTs there:
/// bench/README.md).
async fn insert_rows(store: &Store, rows: &[&UsageRow]) -> Result<(), StoreError> {
    use super::dims::resolve;
    use super::key_rows::post_late;
    use super::rollup::{horizon, write_deltas, Deltas};
    let pool = &store.pool;
    // Records after the rollup horizon wait for the roller; a late one (a long request, a
    // replayed spill file) adds to the rollups here, in the same transaction.
    let late = |h: i64| {
        let mut deltas = Deltas::new(store.minutes_from_ms());
        deltas.add_rows(rows.iter().copied().filter(|r| r.ts_ms < h));
        deltas
    };
    // Their request ids (keyed ones): the roller will not see them, so they are posted here.
    let late_ids = |h: i64| -> Vec<&str> {
        rows.iter()
            .filter(|r| r.ts_ms < h && r.key_id.is_some())
            .map(|r| r.request_id.as_str())
            .collect()
    };
    match pool {
        Pool::Sqlite(p) => {
            // The statements are built before the transaction, which holds SQLite's one write
            // lock (the roller waits for it): the texts' ids from the cache, and when every
            // one is known (in steady traffic), the bound INSERTs.
            let insert = insert_columns();
            let build = |ids: &[i64]| -> Vec<sqlx::QueryBuilder<'_, sqlx::Sqlite>> {
                rows.chunks(SQLITE_ROWS_PER_INSERT)
                    .zip(ids.chunks(SQLITE_ROWS_PER_INSERT))
                    .map(|(chunk, ids)| {
                        let mut q = sqlx::QueryBuilder::new(&insert);
                        q.push_values(chunk.iter().zip(ids), |mut b, (r, id)| {
                            bind_row!(b, r, *id);
                        });
                        q
                    })
                    .collect()
            };
            let looked_up = store.dims.lookup(rows);
            let ready = looked_up.1.is_empty().then(|| build(&looked_up.0));
            let mut tx = p.begin_with(pool.begin_write()).await?;
            let (ids, found) = resolve!(tx, rows, looked_up);
            for mut q in ready.unwrap_or_else(|| build(&ids)) {
                q.build().execute(&mut *tx).await?;
            }
            insert_content!(tx, rows);
            let h = horizon!(tx, pool, share);
            let deltas = late(h);
            post_late!(tx, &late_ids(h), h);
            write_deltas!(tx, &deltas, i64::MAX);
            tx.commit().await?;
            store.dims.remember(found);
        }
        Pool::Postgres(p) => {
            super::partitions::ensure(store, rows.iter().map(|r| r.ts_ms)).await;
            let mut tx = p.begin().await?;
            let (ids, found) = resolve!(tx, rows, store.dims.lookup(rows));
            if !rows.is_empty() {
                let mut copy = tx.copy_in_raw(&copy_statement()).await?;
                copy.send(copy_text(rows, &ids)).await?;
                copy.finish().await?;
            }
            insert_content!(tx, rows);
            let h = horizon!(tx, pool, share);
            let deltas = late(h);
            post_late!(tx, &late_ids(h), h);
            write_deltas!(tx, &deltas, i64::MAX);
            tx.commit().await?;
            store.dims.remember(found);
        }
    }
    Ok(())
}

/// `COPY usage_rows (<dims::ROW_FIELDS>) FROM STDIN`.
fn copy_statement() -> String {
    format!("COPY usage_rows ({}) FROM STDIN", super::dims::ROW_FIELDS)
}

/// `rows` (with their `usage_dims` ids) in COPY's text format.
fn copy_text(rows: &[&UsageRow], ids: &[i64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rows.len() * 160);
    for (r, id) in rows.iter().zip(ids) {
        copy_row(&mut out, r, *id);
    }
    out
}

/// One record as a line of COPY's text format, in `dims::ROW_FIELDS` order.
fn copy_row(out: &mut Vec<u8>, r: &UsageRow, dims: i64) {
    use std::io::Write;
    let mut first = true;
    let mut sep = |out: &mut Vec<u8>| {
        if !std::mem::take(&mut first) {
            out.push(b'\t');
        }
    };
    let text = |out: &mut Vec<u8>, v: Option<&str>| match v {
        None => out.extend_from_slice(b"\\N"),
        Some(t) => {
            for &b in t.as_bytes() {
                match b {
                    b'\\' => out.extend_from_slice(b"\\\\"),
                    b'\t' => out.extend_from_slice(b"\\t"),
                    b'\n' => out.extend_from_slice(b"\\n"),
                    b'\r' => out.extend_from_slice(b"\\r"),
                    _ => out.push(b),
                }
            }
        }
    };
    let num = |out: &mut Vec<u8>, v: Option<i64>| match v {
        None => out.extend_from_slice(b"\\N"),
        Some(n) => {
            let _ = write!(out, "{n}");
        }
    };
    macro_rules! t {
        ($v:expr) => {{
            sep(out);
            text(out, $v);
        }};
    }
    macro_rules! n {
        ($v:expr) => {{
            sep(out);
            num(out, $v);
        }};
    }
    t!(Some(r.request_id.as_str()));
    n!(Some(r.ts_ms));
    n!(Some(dims));
    n!(Some(i64::from(r.status)));
    t!(Some(if r.streamed { "t" } else { "f" }));
    n!(int(r.input_tokens));
    n!(int(r.output_tokens));
    n!(int(r.cached_input_tokens));
    n!(int(r.reasoning_tokens));
    n!(int(Some(r.latency_us)));
    n!(int(r.ttft_us));
    n!(int(r.overhead_us));
    n!(Some(i64::from(r.attempts)));
    t!(r.policy_hits.as_deref());
    t!(r.key_id.as_deref());
    n!(r.cost_micro_usd);
    n!(int(r.cache_write_tokens));
    t!(r.attempt_log.as_deref());
    n!(r.cost_saved_micro_usd);
    n!(r.request_hash);
    out.push(b'\n');
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

impl Store {
    /// How many usage records the store holds.
    pub async fn usage_count(&self) -> Result<i64, StoreError> {
        Ok(on_pool!(&self.pool, |p| sqlx::query_scalar(
            "SELECT COUNT(*) FROM usage_records"
        )
        .fetch_one(p)
        .await?))
    }

    /// `usage.retention`: deletes usage records older than `before_ms`, with their compliance
    /// content and feedback, `chunk` rows per statement (each a short transaction, so the
    /// usage writer waits at most one chunk); returns how many records went.
    pub async fn purge_usage(&self, before_ms: i64, chunk: i64) -> Result<u64, StoreError> {
        // Records the roller has not folded into the rollups yet stay.
        let before_ms = before_ms.min(super::rollup::current_horizon(self).await?);
        // Whole days go with their partition (PostgreSQL); the rest in chunks.
        let mut total = super::partitions::drop_before(self, before_ms).await?;
        let other = self.pool.row_id();
        for (table, column, counted) in [
            ("usage_rows", "ts_ms", true),
            ("usage_content", "ts_ms", false),
            ("feedback", "feedback_ms", false),
        ] {
            // The records' own id: unique across partitions, which `ctid` is not.
            let id = if table == "usage_rows" {
                "rowid"
            } else {
                other
            };
            let sql = format!(
                "DELETE FROM {table} WHERE {id} IN \
                 (SELECT {id} FROM {table} WHERE {column} < $1 LIMIT $2)"
            );
            loop {
                let n = on_pool!(&self.pool, |p| sqlx::query(&sql)
                    .bind(before_ms)
                    .bind(chunk)
                    .execute(p)
                    .await?
                    .rows_affected());
                if counted {
                    total += n;
                }
                if n < u64::try_from(chunk).unwrap_or(0) {
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
        // The postings have no time index (store::key_rows): key by key, on their primary
        // key's (key, time) order.
        let mut key: Option<String> = None;
        loop {
            key = on_pool!(&self.pool, |p| match &key {
                None => sqlx::query_scalar(super::key_rows::FIRST_KEY),
                Some(k) => sqlx::query_scalar(super::key_rows::NEXT_KEY).bind(k.clone()),
            }
            .fetch_one(p)
            .await?);
            let Some(k) = &key else { break };
            loop {
                let n = on_pool!(&self.pool, |p| sqlx::query(super::key_rows::PURGE)
                    .bind(k)
                    .bind(before_ms)
                    .bind(chunk)
                    .execute(p)
                    .await?
                    .rows_affected());
                if n < u64::try_from(chunk).unwrap_or(0) {
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
        Ok(total)
    }

    /// Deletes compliance content older than `before_ms`; returns how many rows went.
    pub async fn purge_content(&self, before_ms: i64) -> Result<u64, StoreError> {
        Ok(on_pool!(&self.pool, |p| sqlx::query(
            "DELETE FROM usage_content WHERE ts_ms < $1"
        )
        .bind(before_ms)
        .execute(p)
        .await?
        .rows_affected()))
    }
}

impl UsageStore for Store {
    async fn write_batch(&self, rows: &[UsageRow]) -> Result<(), StoreError> {
        let rows: Vec<&UsageRow> = rows.iter().collect();
        insert_rows(self, &rows).await
    }

    async fn write_batch_dedup(&self, rows: &[UsageRow]) -> Result<(), StoreError> {
        // Which of these are stored already: one query per 500 request ids.
        let mut stored = std::collections::HashSet::new();
        for chunk in rows.chunks(500) {
            let found: Vec<(String, i64)> = on_pool!(&self.pool, |p| {
                let mut q = sqlx::QueryBuilder::new(
                    "SELECT request_id, ts_ms FROM usage_records WHERE request_id IN (",
                );
                let mut ids = q.separated(", ");
                for r in chunk {
                    ids.push_bind(r.request_id.as_str());
                }
                q.push(")");
                q.build_query_as().fetch_all(p).await?
            });
            stored.extend(found);
        }
        let fresh: Vec<&UsageRow> = rows
            .iter()
            .filter(|r| !stored.contains(&(r.request_id.clone(), r.ts_ms)))
            .collect();
        insert_rows(self, &fresh).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        on_pool!(&self.pool, |p| sqlx::query("SELECT 1")
            .execute(p)
            .await?
            .rows_affected());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::testing;

    #[tokio::test]
    async fn creates_migrates_once_and_writes_on_every_engine() {
        for db in testing::databases("db_migrates_once").await {
            let store = Store::open(&db.url).await.unwrap();
            let rec = UsageRow {
                request_id: "r1".into(),
                surface: "openai.chat".into(),
                requested_model: "m".into(),
                status: 200,
                input_tokens: Some(7),
                attempts: 1,
                streamed: true,
                ..Default::default()
            };
            store
                .write_batch(&[rec.clone(), rec.clone()])
                .await
                .unwrap();
            // A replay skips what is stored already, and stores what is not.
            let other = UsageRow {
                request_id: "r2".into(),
                input_tokens: Some(5),
                ..rec.clone()
            };
            store
                .write_batch_dedup(&[rec.clone(), other])
                .await
                .unwrap();
            // Text that COPY's format must escape, and NULLs, come back as written.
            let odd = "tab\there\nnew line \\N back\\slash \r é";
            let tricky = UsageRow {
                request_id: "r3".into(),
                principal: odd.into(),
                error_class: None,
                input_tokens: None,
                tags: Some(r#"{"k":"v\\t"}"#.into()),
                ..rec
            };
            store
                .write_batch(std::slice::from_ref(&tricky))
                .await
                .unwrap();
            let back: (String, Option<String>, Option<i64>, bool) =
                on_pool!(store.pool(), |p| sqlx::query_as(
                    "SELECT principal, tags, input_tokens, streamed FROM usage_records \
                     WHERE request_id = 'r3'"
                )
                .fetch_one(p)
                .await
                .unwrap());
            assert_eq!(
                back,
                (odd.to_string(), tricky.tags.clone(), None, true),
                "{}",
                db.engine
            );
            drop(store);
            // Re-open: migrations must not run twice.
            let store = Store::open(&db.url).await.unwrap();
            let (n, v): (i64, i64) = on_pool!(store.pool(), |p| {
                let n = sqlx::query_scalar(
                    "SELECT CAST(SUM(input_tokens) AS BIGINT) FROM usage_records",
                )
                .fetch_one(p)
                .await
                .unwrap();
                let v = sqlx::query_scalar("SELECT COUNT(*) FROM sluice_schema")
                    .fetch_one(p)
                    .await
                    .unwrap();
                (n, v)
            });
            assert_eq!(n, 19, "{}", db.engine);
            let steps = if store.pool().is_postgres() {
                PG_MIGRATIONS.len()
            } else {
                MIGRATIONS.len()
            };
            assert_eq!(v, i64::try_from(steps).unwrap(), "{}", db.engine);
        }
    }

    /// A pool on `db` with the schema up to (not including) step `next` of its engine, as an
    /// earlier build left it.
    async fn schema_before(db: &testing::TestDb, next: [usize; 2]) -> Pool {
        let pool = if db.engine == "postgres" {
            Pool::Postgres(open_postgres(&db.url).await.unwrap())
        } else {
            Pool::Sqlite(open_sqlite(&db.url).await.unwrap())
        };
        let steps = migrations(&pool);
        let before = next[usize::from(db.engine == "postgres")] - 1;
        on_pool!(&pool, |p| {
            sqlx::query("CREATE TABLE sluice_schema (version BIGINT NOT NULL)")
                .execute(p)
                .await
                .unwrap();
            for (i, step) in steps[..before].iter().enumerate() {
                sqlx::raw_sql(step.as_ref()).execute(p).await.unwrap();
                sqlx::query("INSERT INTO sluice_schema (version) VALUES ($1)")
                    .bind(i64::try_from(i + 1).unwrap())
                    .execute(p)
                    .await
                    .unwrap();
            }
        });
        pool
    }

    /// A store written before the repeated texts moved to `usage_dims` keeps every record,
    /// field for field and with its rowid, and new records reuse the combinations it had.
    #[tokio::test]
    async fn upgrading_stores_each_text_combination_once_and_keeps_every_record() {
        for db in testing::databases("db_dims_upgrade").await {
            // The schema up to store::dims' step, and records written the old way.
            let dims = GENERATED_STEPS.map(|(dims, _)| dims);
            let pool = schema_before(&db, dims).await;
            let odd = "tab\there é \\ 3:x-";
            on_pool!(&pool, |p| {
                for (id, principal, team, tags, cache) in [
                    ("a", "key:a", Some("t1"), None, Some("hit")),
                    ("b", "key:a", Some("t1"), None, Some("hit")),
                    ("c", odd, None, Some(r#"{"x":"1:y"}"#), None),
                    ("d", "key:b", Some("t2"), Some(""), Some("miss")),
                ] {
                    sqlx::query(
                        "INSERT INTO usage_records (request_id, ts_ms, surface, principal, \
                         requested_model, provider, status, streamed, input_tokens, latency_us, \
                         attempts, key_id, team, tags, cache) \
                         VALUES ($1, 1000, 'openai.chat', $2, 'm', 'p', 200, $3, 7, 50, 1, \
                         $2, $4, $5, $6)",
                    )
                    .bind(id)
                    .bind(principal)
                    .bind(id == "c")
                    .bind(team)
                    .bind(tags)
                    .bind(cache)
                    .execute(p)
                    .await
                    .unwrap();
                }
            });
            type Rec = (
                i64,
                String,
                String,
                Option<String>,
                Option<String>,
                Option<String>,
                bool,
                Option<i64>,
                Option<String>,
            );
            let read = |pool: Pool| async move {
                let rows: Vec<Rec> = on_pool!(&pool, |p| sqlx::query_as(
                    "SELECT rowid, request_id, principal, team, tags, cache, streamed, \
                     input_tokens, key_id FROM usage_records ORDER BY rowid"
                )
                .fetch_all(p)
                .await
                .unwrap());
                rows
            };
            let old = read(pool.clone()).await;
            assert_eq!(old.len(), 4, "{}", db.engine);
            let store = Store::open(&db.url).await.unwrap();
            assert_eq!(read(store.pool().clone()).await, old, "{}", db.engine);
            let combos = || async {
                let n: i64 = on_pool!(store.pool(), |p| sqlx::query_scalar(
                    "SELECT COUNT(*) FROM usage_dims"
                )
                .fetch_one(p)
                .await
                .unwrap());
                n
            };
            assert_eq!(combos().await, 3, "{}", db.engine);
            // The writer finds the migrated combinations (its key is the migration's).
            let again = |id: &str, principal: &str, tags: Option<&str>| UsageRow {
                request_id: id.into(),
                ts_ms: 2000,
                surface: "openai.chat".into(),
                principal: principal.into(),
                requested_model: "m".into(),
                provider: Some("p".into()),
                status: 200,
                latency_us: 50,
                attempts: 1,
                tags: tags.map(str::to_string),
                ..UsageRow::default()
            };
            let c = UsageRow {
                streamed: true,
                ..again("e", odd, Some(r#"{"x":"1:y"}"#))
            };
            store.write_batch(&[c]).await.unwrap();
            assert_eq!(combos().await, 3, "{}", db.engine);
            store
                .write_batch(&[again("f", "key:new", None)])
                .await
                .unwrap();
            assert_eq!(combos().await, 4, "{}", db.engine);
            assert_eq!(store.usage_count().await.unwrap(), 6, "{}", db.engine);
            // The upgraded records get their key postings when rolled (store::key_rows).
            super::super::rollup::roll(&store, 3000).await.unwrap();
            let key_a = super::super::query::Filter {
                eq: vec![(super::super::query::Dim::Key, "key:a".into())],
                ..Default::default()
            };
            let (page, _) = super::super::query::requests(&store, &key_a, None, 10, false)
                .await
                .unwrap();
            let ids: Vec<&str> = page
                .iter()
                .filter_map(|r| r["request_id"].as_str())
                .collect();
            assert_eq!(ids, ["b", "a"], "{}", db.engine);
        }
    }

    /// Rollups stored one row per group (before segments) are moved into segments when the
    /// store opens: the same figures, merged, and the old table gone.
    #[tokio::test]
    async fn upgrading_moves_rollup_rows_into_segments() {
        use super::super::query::{Dim, Filter, KeyPart};
        use super::super::rollup::{read, Kept, Res};
        use super::super::sketch::Sketch;
        for db in testing::databases("db_segments_upgrade").await {
            let pool = schema_before(&db, SEGMENTS_STEPS).await;
            let sketch = |v: &[u64]| {
                let mut s = Sketch::default();
                v.iter().for_each(|&x| s.add(x));
                s
            };
            on_pool!(&pool, |p| {
                // Team rollups by day: two rows of one group (not compacted yet), another.
                for (bucket, team, requests, cost, latency) in [
                    (0i64, Some("t1"), 2i64, 10i64, vec![100u64, 2000]),
                    (0, Some("t1"), 3, 5, vec![90_000, 100, 7]),
                    (86_400_000, None, 1, 1, vec![40]),
                ] {
                    let mut q = sqlx::QueryBuilder::new(format!(
                        "INSERT INTO usage_rollups (cuboid, res, bucket_ms, team, {}) ",
                        super::super::rollup::METRIC_COLUMNS
                    ));
                    q.push_values([()], |mut b, ()| {
                        b.push_bind(1i64)
                            .push_bind(3i64)
                            .push_bind(bucket)
                            .push_bind(team);
                        b.push_bind(requests);
                        for _ in 0..7 {
                            b.push_bind(0i64);
                        }
                        b.push_bind(cost);
                        for _ in 0..8 {
                            b.push_bind(0i64);
                        }
                        b.push_bind(0.5f64)
                            .push_bind(sketch(&latency).encode())
                            .push_bind(Sketch::default().encode());
                    });
                    q.build().execute(p).await.unwrap();
                }
            });
            let store = Store::open(&db.url).await.unwrap();
            let (got, _) = read(
                &store,
                &Filter::default(),
                &[Dim::Team],
                None,
                Res::Day,
                Kept { minutes_from_ms: 0 },
            )
            .await
            .unwrap();
            let t1 = &got[&(0, vec![KeyPart::Text(Some("t1".into()))])];
            assert_eq!(
                (t1.requests, t1.cost, t1.score_sum),
                (5, 15, 1.0),
                "{}",
                db.engine
            );
            assert_eq!(
                t1.latency,
                sketch(&[100, 2000, 90_000, 100, 7]),
                "{}",
                db.engine
            );
            let none = &got[&(0, vec![KeyPart::Text(None)])];
            assert_eq!((none.requests, none.cost), (1, 1), "{}", db.engine);
            assert_eq!(got.len(), 2, "{}", db.engine);
            let left: i64 = on_pool!(store.pool(), |p| sqlx::query_scalar(
                if db.engine == "postgres" {
                    "SELECT COUNT(*) FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_name = 'usage_rollups'"
                } else {
                    "SELECT COUNT(*) FROM sqlite_master WHERE name = 'usage_rollups'"
                }
            )
            .fetch_one(p)
            .await
            .unwrap());
            assert_eq!(left, 0, "{}", db.engine);
            // Opening again finds nothing to move.
            drop(store);
            Store::open(&db.url).await.unwrap();
        }
    }
}
