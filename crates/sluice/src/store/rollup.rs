//! Usage rollups: per time bucket (minute, hour, day) and per set of dimensions, the counts,
//! sums and latency sketches that `/admin/usage`, `/admin/performance`, the dashboard, the
//! CLI and the budgets' stored spend read instead of raw records.
//!
//! They are written in the same transaction as the raw records they summarise, so a crash,
//! a failed write or a replayed spill file can never count a record twice or leave it out.
//! Each batch *appends* one delta row per (dimension set, resolution, bucket, dimension
//! values) it touched: the writer reads nothing. [`compact`] later merges a closed bucket's
//! rows into one per dimension values (`DELETE ... RETURNING`, merge, insert; rows another
//! writer adds meanwhile are left for the next pass). Readers merge whatever rows they find,
//! so compaction changes how fast a query is, never what it answers.
//!
//! A query reads the smallest dimension set ("cuboid") that holds every dimension it groups
//! or filters by, and tiles its time range with the coarsest buckets that fit: whole days,
//! then whole hours, then minutes at the edges. Time bounds are exact to the minute while
//! minute rollups are kept (`usage.rollup_minute_retention`), to the hour before that.

use super::db::{on_pool, Store};
use super::query::{Dim, Filter, KeyPart};
use super::segment::Value;
use super::sketch::Sketch;
use super::{StoreError, UsageRow};
use std::collections::{BTreeMap, HashMap};

/// A bucket width.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Res {
    Minute,
    Hour,
    Day,
}

impl Res {
    pub const fn ms(self) -> i64 {
        match self {
            Res::Minute => 60_000,
            Res::Hour => 3_600_000,
            Res::Day => 86_400_000,
        }
    }

    /// The value of the `res` column.
    pub(crate) const fn code(self) -> i64 {
        match self {
            Res::Minute => 1,
            Res::Hour => 2,
            Res::Day => 3,
        }
    }

    pub(crate) fn from_code(c: i64) -> Option<Res> {
        [Res::Minute, Res::Hour, Res::Day]
            .into_iter()
            .find(|r| r.code() == c)
    }

    pub fn floor(self, t: i64) -> i64 {
        t.div_euclid(self.ms()) * self.ms()
    }

    pub fn ceil(self, t: i64) -> i64 {
        let f = self.floor(t);
        if f == t {
            t
        } else {
            f.saturating_add(self.ms())
        }
    }
}

/// A set of dimensions kept together, at the given resolutions (coarsest first).
#[derive(Debug)]
pub struct Cuboid {
    pub id: i64,
    pub dims: &'static [Dim],
    pub res: &'static [Res],
}

const ALL_RES: &[Res] = &[Res::Day, Res::Hour, Res::Minute];
const HOURS_AND_DAYS: &[Res] = &[Res::Day, Res::Hour];

/// The dimension sets, smallest first: a query reads the first that holds every dimension it
/// groups or filters by. A set costs the writer about one row per record per resolution
/// where its combinations outnumber the records of a bucket, and little where they do not
/// (bench/README.md measures it), so minute rows are kept for the narrow sets only, and
/// combinations outside every set (a key by model, say) are summed from the raw records
/// (`Source::Records`), on the index of the filter when there is one.
pub const CUBOIDS: &[Cuboid] = &[
    Cuboid {
        id: 0,
        dims: &[],
        res: ALL_RES,
    },
    Cuboid {
        id: 1,
        dims: &[Dim::Team],
        res: ALL_RES,
    },
    Cuboid {
        id: 2,
        dims: &[Dim::Model, Dim::Provider, Dim::Deployment],
        res: ALL_RES,
    },
    Cuboid {
        id: 3,
        dims: &[Dim::Status, Dim::ErrorClass, Dim::Surface, Dim::Cache],
        res: ALL_RES,
    },
    Cuboid {
        id: 4,
        dims: &[Dim::Key, Dim::User, Dim::Team],
        res: HOURS_AND_DAYS,
    },
    Cuboid {
        id: 5,
        dims: &[Dim::Team, Dim::Model, Dim::Provider, Dim::Deployment],
        res: HOURS_AND_DAYS,
    },
    Cuboid {
        id: 6,
        dims: &[
            Dim::Model,
            Dim::Provider,
            Dim::Deployment,
            Dim::Status,
            Dim::ErrorClass,
            Dim::Surface,
            Dim::Cache,
        ],
        res: HOURS_AND_DAYS,
    },
];

/// What records add up to: counts, token and cost sums, latency and TTFT sketches.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sums {
    pub requests: i64,
    pub errors: i64,
    /// Billed but unpriced (cost unknown).
    pub unpriced: i64,
    pub input: i64,
    pub output: i64,
    pub cached: i64,
    pub cache_write: i64,
    pub reasoning: i64,
    pub cost: i64,
    /// Answered by the response cache, and what those answers had cost.
    pub cache_hits: i64,
    pub cost_saved: i64,
    pub streamed: i64,
    pub attempts: i64,
    pub fallbacks: i64,
    /// Output tokens and generation time (latency minus TTFT) of successful requests with
    /// output, for tokens per second.
    pub gen_tokens: i64,
    pub gen_us: i64,
    /// Requests with quality feedback, and the sum of their scores.
    pub scored: i64,
    pub score_sum: f64,
    pub latency: Sketch,
    pub ttft: Sketch,
}

fn int(v: Option<u64>) -> i64 {
    v.map_or(0, |n| i64::try_from(n).unwrap_or(i64::MAX))
}

impl Sums {
    /// What one record adds.
    pub fn of(r: &UsageRow) -> Sums {
        let (fallback, cache_hit) = (
            r.fallback_reason.is_some(),
            is_cache_hit(r.cache.as_deref()),
        );
        let mut s = Sums {
            requests: 1,
            errors: i64::from(r.status >= 400),
            input: int(r.input_tokens),
            output: int(r.output_tokens),
            cached: int(r.cached_input_tokens),
            cache_write: int(r.cache_write_tokens),
            reasoning: int(r.reasoning_tokens),
            cost: r.cost_micro_usd.unwrap_or(0),
            // Billed tokens without a price (`governance.unpriced: allow`): cost unknown.
            unpriced: i64::from(r.cost_micro_usd.is_none() && r.input_tokens.unwrap_or(0) > 0),
            streamed: i64::from(r.streamed),
            attempts: i64::from(r.attempts),
            fallbacks: i64::from(fallback),
            ..Sums::default()
        };
        if cache_hit {
            s.cache_hits = 1;
            s.cost_saved = r.cost_saved_micro_usd.unwrap_or(0);
        }
        if r.status < 400 && s.output > 0 {
            s.gen_tokens = s.output;
            s.gen_us = int(Some(r.latency_us.saturating_sub(r.ttft_us.unwrap_or(0))));
        }
        s.latency.add(r.latency_us);
        if let Some(t) = r.ttft_us {
            s.ttft.add(t);
        }
        s
    }

    /// Adds `o` (saturating: a damaged stored segment cannot overflow a sum).
    pub fn merge(&mut self, o: &Sums) {
        self.requests = self.requests.saturating_add(o.requests);
        self.errors = self.errors.saturating_add(o.errors);
        self.unpriced = self.unpriced.saturating_add(o.unpriced);
        self.input = self.input.saturating_add(o.input);
        self.output = self.output.saturating_add(o.output);
        self.cached = self.cached.saturating_add(o.cached);
        self.cache_write = self.cache_write.saturating_add(o.cache_write);
        self.reasoning = self.reasoning.saturating_add(o.reasoning);
        self.cost = self.cost.saturating_add(o.cost);
        self.cache_hits = self.cache_hits.saturating_add(o.cache_hits);
        self.cost_saved = self.cost_saved.saturating_add(o.cost_saved);
        self.streamed = self.streamed.saturating_add(o.streamed);
        self.attempts = self.attempts.saturating_add(o.attempts);
        self.fallbacks = self.fallbacks.saturating_add(o.fallbacks);
        self.gen_tokens = self.gen_tokens.saturating_add(o.gen_tokens);
        self.gen_us = self.gen_us.saturating_add(o.gen_us);
        self.scored = self.scored.saturating_add(o.scored);
        self.score_sum += o.score_sum;
        self.latency.merge(&o.latency);
        self.ttft.merge(&o.ttft);
    }
}

/// Whether a cache outcome means the response cache answered (its cost was saved).
fn is_cache_hit(outcome: Option<&str>) -> bool {
    matches!(outcome, Some("hit" | "semantic-hit"))
}

/// A record's value of every dimension, in [`Dim::ALL`] order.
pub fn dims_of(r: &UsageRow) -> Vec<KeyPart> {
    Dim::ALL
        .iter()
        .map(|d| match d {
            Dim::Key => KeyPart::Text(r.key_id.clone()),
            Dim::User => KeyPart::Text(r.user.clone()),
            Dim::Team => KeyPart::Text(r.team.clone()),
            Dim::Model => KeyPart::Text(Some(r.requested_model.clone())),
            Dim::Provider => KeyPart::Text(r.provider.clone()),
            Dim::Deployment => KeyPart::Text(r.deployment_model.clone()),
            Dim::Status => KeyPart::Int(i64::from(r.status)),
            Dim::Surface => KeyPart::Text(Some(r.surface.clone())),
            Dim::ErrorClass => KeyPart::Text(r.error_class.clone()),
            Dim::Cache => KeyPart::Text(r.cache.clone()),
        })
        .collect()
}

pub(crate) type DeltaKey = (i64, Res, i64, Vec<KeyPart>);

/// The rollup rows a batch appends.
#[derive(Debug, Default)]
pub struct Deltas {
    /// foldhash, not SipHash: the roller hashes ~16 keys per record (SipHash was ~5 % of its
    /// time); randomly seeded, so a client cannot pick colliding model names ahead.
    pub(crate) rows: HashMap<DeltaKey, Sums, foldhash::fast::RandomState>,
    /// Times before this get no minute rows (past `usage.rollup_minute_retention`).
    minutes_from_ms: i64,
}

impl Deltas {
    pub fn new(minutes_from_ms: i64) -> Self {
        Deltas {
            rows: HashMap::default(),
            minutes_from_ms,
        }
    }

    /// Adds `s`, made at `ts_ms` by a record with dimensions `dims` (all of them, in
    /// [`Dim::ALL`] order), to every cuboid and resolution.
    pub fn add(&mut self, ts_ms: i64, dims: &[KeyPart], s: &Sums) {
        for c in CUBOIDS {
            let mut at = (
                c.id,
                Res::Minute,
                0,
                c.dims.iter().map(|d| dims[d.index()].clone()).collect(),
            );
            for &r in c.res {
                if r == Res::Minute && ts_ms < self.minutes_from_ms {
                    continue;
                }
                (at.1, at.2) = (r, r.floor(ts_ms));
                // The key is cloned only for a new row (most records add to one).
                if let Some(row) = self.rows.get_mut(&at) {
                    row.merge(s);
                } else {
                    self.rows.insert(at.clone(), s.clone());
                }
            }
        }
    }

    pub fn add_rows<'a>(&mut self, rows: impl IntoIterator<Item = &'a UsageRow>) {
        for r in rows {
            self.add(r.ts_ms, &dims_of(r), &Sums::of(r));
        }
    }
}

pub(crate) const DIM_COLUMNS: &str = "key_id, user_name, team, requested_model, provider, \
     deployment_model, status, surface, error_class, cache";
pub(crate) const METRIC_COLUMNS: &str = "requests, errors, unpriced, input_tokens, output_tokens, \
     cached_input_tokens, cache_write_tokens, reasoning_tokens, cost_micro_usd, cache_hits, \
     cost_saved_micro_usd, streamed, attempts, fallbacks, gen_tokens, gen_us, scored, \
     score_sum, latency, ttft";

/// The rollups, and the buckets compaction has still to merge; `$bytes` is `BLOB` on
/// SQLite, `BYTEA` on PostgreSQL.
macro_rules! schema {
    ($bytes:literal) => {
        concat!(
            "CREATE TABLE usage_rollups (
    cuboid BIGINT NOT NULL,
    res BIGINT NOT NULL,
    bucket_ms BIGINT NOT NULL,
    key_id TEXT,
    user_name TEXT,
    team TEXT,
    requested_model TEXT,
    provider TEXT,
    deployment_model TEXT,
    status BIGINT,
    surface TEXT,
    error_class TEXT,
    cache TEXT,
    requests BIGINT NOT NULL,
    errors BIGINT NOT NULL,
    unpriced BIGINT NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cached_input_tokens BIGINT NOT NULL,
    cache_write_tokens BIGINT NOT NULL,
    reasoning_tokens BIGINT NOT NULL,
    cost_micro_usd BIGINT NOT NULL,
    cache_hits BIGINT NOT NULL,
    cost_saved_micro_usd BIGINT NOT NULL,
    streamed BIGINT NOT NULL,
    attempts BIGINT NOT NULL,
    fallbacks BIGINT NOT NULL,
    gen_tokens BIGINT NOT NULL,
    gen_us BIGINT NOT NULL,
    scored BIGINT NOT NULL,
    score_sum DOUBLE PRECISION NOT NULL,
    latency ",
            $bytes,
            " NOT NULL,
    ttft ",
            $bytes,
            " NOT NULL
);
CREATE INDEX usage_rollups_at ON usage_rollups (cuboid, res, bucket_ms);
CREATE INDEX usage_rollups_key ON usage_rollups (key_id, bucket_ms) WHERE key_id IS NOT NULL;
CREATE INDEX usage_rollups_user ON usage_rollups (user_name, bucket_ms) WHERE user_name IS NOT NULL;
CREATE TABLE usage_rollup_dirty (
    cuboid BIGINT NOT NULL,
    res BIGINT NOT NULL,
    bucket_ms BIGINT NOT NULL,
    PRIMARY KEY (cuboid, res, bucket_ms)
);
CREATE TABLE usage_rollup_state (horizon BIGINT NOT NULL);
INSERT INTO usage_rollup_state (horizon) VALUES (0);
"
        )
    };
}

/// SQLite's step 12 (PostgreSQL's step 3): see [`schema`].
pub const SQLITE_MIGRATION: &str = schema!("BLOB");
pub const POSTGRES_MIGRATION: &str = schema!("BYTEA");

/// The rollups as packed segments (store::segment): SQLite's step 16, PostgreSQL's step 8;
/// [`convert_rows`] moves the rows of the table they replace when the store opens. The key
/// postings lose their time index (retention walks them by key: store::key_rows).
macro_rules! segments_schema {
    ($bytes:literal) => {
        concat!(
            "CREATE TABLE usage_segments (
    cuboid BIGINT NOT NULL,
    res BIGINT NOT NULL,
    bucket_ms BIGINT NOT NULL,
    body ",
            $bytes,
            " NOT NULL
);
CREATE INDEX usage_segments_at ON usage_segments (cuboid, res, bucket_ms);
DROP INDEX IF EXISTS usage_key_rows_ms;
"
        )
    };
}
pub const SQLITE_SEGMENTS: &str = segments_schema!("BLOB");
pub const POSTGRES_SEGMENTS: &str = segments_schema!("BYTEA");

/// Segments per multi-row INSERT.
pub(crate) const SEGMENTS_PER_INSERT: usize = 200;

/// The segments `deltas` make: per (cuboid, resolution code, bucket), its groups packed, in
/// key order (each statement's rows land next to each other in the index).
pub(crate) fn segments(deltas: &Deltas) -> Vec<(i64, i64, i64, Vec<u8>)> {
    let mut rows: Vec<_> = deltas.rows.iter().collect();
    rows.sort_unstable_by(|a, b| a.0.cmp(b.0));
    rows.chunk_by(|a, b| (a.0 .0, a.0 .1, a.0 .2) == (b.0 .0, b.0 .1, b.0 .2))
        // A bucket with more groups than a segment holds gets several (readers merge them).
        .flat_map(|run| run.chunks(GROUPS_PER_SEGMENT))
        .map(|run| {
            let (cuboid, res, bucket, _) = run[0].0;
            let dims = self::cuboid(*cuboid).map_or(&[][..], |c| c.dims);
            let body = super::segment::encode(dims, run.iter().map(|(k, s)| (k.3.as_slice(), *s)));
            (*cuboid, res.code(), *bucket, body)
        })
        .collect()
}

/// Groups per segment at most: a few MB uncompressed, far under what a reader accepts
/// (`segment::decode` refuses a body over 256 MiB as damaged).
pub(crate) const GROUPS_PER_SEGMENT: usize = 50_000;

/// Appends `deltas` (one segment per cuboid, resolution and bucket) inside the transaction
/// `$tx`, and marks for compaction the buckets that start before `$mark_before` (those that
/// may hold segments already: the roller passes the horizon its chunk starts at, since none
/// exist for a bucket starting after it; writers of late records and feedback pass
/// `i64::MAX`, compaction `i64::MIN`).
macro_rules! write_deltas {
    ($tx:ident, $deltas:expr, $mark_before:expr) => {{
        let mark_before: i64 = $mark_before;
        let segments = $crate::store::rollup::segments($deltas);
        for chunk in segments.chunks($crate::store::rollup::SEGMENTS_PER_INSERT) {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO usage_segments (cuboid, res, bucket_ms, body) ",
            );
            q.push_values(chunk, |mut b, (cuboid, res, bucket, body)| {
                b.push_bind(*cuboid)
                    .push_bind(*res)
                    .push_bind(*bucket)
                    .push_bind(body.as_slice());
            });
            q.build().execute(&mut *$tx).await?;
        }
        // Sorted; distinct once a bucket's several segments (a huge one's) are counted once.
        let mut buckets: Vec<(i64, i64, i64)> = segments
            .iter()
            .filter(|s| s.2 < mark_before)
            .map(|(c, r, b, _)| (*c, *r, *b))
            .collect();
        buckets.dedup();
        for chunk in buckets.chunks(300) {
            let mut q =
                sqlx::QueryBuilder::new("INSERT INTO usage_rollup_dirty (cuboid, res, bucket_ms) ");
            q.push_values(chunk, |mut b, (c, r, t)| {
                b.push_bind(*c).push_bind(*r).push_bind(*t);
            });
            q.push(" ON CONFLICT DO NOTHING");
            q.build().execute(&mut *$tx).await?;
        }
    }};
}
pub(crate) use write_deltas;

/// The sums in `METRIC_COLUMNS` order from column `$m` of row `$r`; `$sketch` turns a
/// sketch column's value into a [`Sketch`].
macro_rules! sums_at {
    ($r:expr, $m:expr, $sketch:expr) => {{
        let (r, m) = (&$r, $m);
        let sketch = $sketch;
        Sums {
            requests: r.try_get(m)?,
            errors: r.try_get(m + 1)?,
            unpriced: r.try_get(m + 2)?,
            input: r.try_get(m + 3)?,
            output: r.try_get(m + 4)?,
            cached: r.try_get(m + 5)?,
            cache_write: r.try_get(m + 6)?,
            reasoning: r.try_get(m + 7)?,
            cost: r.try_get(m + 8)?,
            cache_hits: r.try_get(m + 9)?,
            cost_saved: r.try_get(m + 10)?,
            streamed: r.try_get(m + 11)?,
            attempts: r.try_get(m + 12)?,
            fallbacks: r.try_get(m + 13)?,
            gen_tokens: r.try_get(m + 14)?,
            gen_us: r.try_get(m + 15)?,
            scored: r.try_get(m + 16)?,
            score_sum: r.try_get(m + 17)?,
            latency: sketch(r.try_get(m + 18)?),
            ttft: sketch(r.try_get(m + 19)?),
        }
    }};
}

/// Reads one rollup row (`DIM_COLUMNS` then `METRIC_COLUMNS` from column `$at`): the values
/// of `$dims` (a cuboid's dimensions, in its order) and the sums.
macro_rules! read_row {
    ($r:expr, $at:expr, $dims:expr) => {{
        use sqlx::Row;
        let r = &$r;
        let at: usize = $at;
        let mut key = Vec::with_capacity($dims.len());
        for d in $dims.iter() {
            let i = at + d.index();
            key.push(if *d == Dim::Status {
                KeyPart::Int(r.try_get::<Option<i64>, _>(i)?.unwrap_or(0))
            } else {
                KeyPart::Text(r.try_get::<Option<String>, _>(i)?)
            });
        }
        let m = at + Dim::ALL.len();
        let sketch = |v: Vec<u8>| Sketch::decode(&v).unwrap_or_default();
        (key, sums_at!(r, m, sketch))
    }};
}

/// `$q` with a run of buckets bound as `$1`..`$4`: cuboid, resolution code, first and last
/// bucket.
macro_rules! bind_run {
    ($q:expr, $run:expr) => {{
        let (cuboid, res, first, last): (i64, i64, i64, i64) = $run;
        $q.bind(cuboid).bind(res).bind(first).bind(last)
    }};
}

/// Moves the rollups of the table segments replaced (one row per group, [`schema`]) into
/// segments, a thousand buckets at a time, and drops it: after the schema steps, in one
/// transaction (a crash leaves the table to convert at the next start). Replicas opening a
/// PostgreSQL store together: one converts, the others find the table gone.
pub(crate) async fn convert_rows(store: &Store) -> Result<(), StoreError> {
    let pool = store.pool();
    let exists = if pool.is_postgres() {
        "SELECT COUNT(*) FROM information_schema.tables \
         WHERE table_schema = current_schema() AND table_name = 'usage_rollups'"
    } else {
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'usage_rollups'"
    };
    on_pool!(pool, |p| {
        let mut tx = p.begin().await?;
        if pool.is_postgres() {
            sqlx::query("SELECT pg_advisory_xact_lock(7263506934)")
                .execute(&mut *tx)
                .await?;
        }
        let n: i64 = sqlx::query_scalar(exists).fetch_one(&mut *tx).await?;
        if n == 0 {
            tx.rollback().await?;
            return Ok(());
        }
        let buckets: Vec<(i64, i64, i64)> = sqlx::query_as(
            "SELECT DISTINCT cuboid, res, bucket_ms FROM usage_rollups \
             ORDER BY cuboid, res, bucket_ms",
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut moved = 0usize;
        for run in buckets.chunk_by(|a, b| (a.0, a.1) == (b.0, b.1)) {
            for part in run.chunks(1000) {
                let (cuboid, res, first) = part[0];
                let last = part[part.len() - 1].2;
                let (Some(c), Some(r)) = (self::cuboid(cuboid), Res::from_code(res)) else {
                    continue;
                };
                let sql = format!(
                    "SELECT bucket_ms, {DIM_COLUMNS}, {METRIC_COLUMNS} FROM usage_rollups \
                     WHERE cuboid = $1 AND res = $2 AND bucket_ms >= $3 AND bucket_ms <= $4"
                );
                let rows = bind_run!(sqlx::query(&sql), (cuboid, res, first, last))
                    .fetch_all(&mut *tx)
                    .await?;
                moved += rows.len();
                let mut d = Deltas::default();
                for row in &rows {
                    let bucket: i64 = sqlx::Row::try_get(row, 0)?;
                    let (key, s) = read_row!(row, 1, c.dims);
                    d.rows
                        .entry((cuboid, r, bucket, key))
                        .and_modify(|o| o.merge(&s))
                        .or_insert(s);
                }
                write_deltas!(tx, &d, i64::MIN);
            }
        }
        sqlx::query("DROP TABLE usage_rollups")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        if moved > 0 {
            tracing::info!(rows = moved, "usage rollups moved into packed segments");
        }
    });
    Ok(())
}

/// The cuboid with this id.
fn cuboid(id: i64) -> Option<&'static Cuboid> {
    CUBOIDS.iter().find(|c| c.id == id)
}

/// The smallest cuboid holding every dimension in `needed`, if any does.
pub fn cuboid_for(needed: &[Dim]) -> Option<&'static Cuboid> {
    CUBOIDS
        .iter()
        .find(|c| needed.iter().all(|d| c.dims.contains(d)))
}

/// Where a query's figures came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The rollups of this cuboid, for `[since, until)` (the asked range on the grid of the
    /// finest resolution used).
    Rollups {
        cuboid: i64,
        since: i64,
        until: Option<i64>,
    },
    /// A scan of the raw records (no cuboid holds the dimensions).
    Records,
}

/// A piece of a query's time range: rows of resolution `res` with buckets in `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tile {
    pub res: Res,
    pub from: i64,
    pub to: Option<i64>,
}

/// Covers `[since, until)` (`until` `None`: no end) with whole buckets of the resolutions in
/// `res` (coarsest first), coarse in the middle and fine at the edges. The finest
/// resolution's buckets round the ends down.
pub fn tiles(since: i64, until: Option<i64>, res: &[Res]) -> Vec<Tile> {
    let mut out = Vec::new();
    tile(since, until, res, &mut out);
    out.retain(|t| t.to.is_none_or(|to| t.from < to));
    out
}

fn tile(s: i64, u: Option<i64>, res: &[Res], out: &mut Vec<Tile>) {
    let Some((&r, finer)) = res.split_first() else {
        return;
    };
    if finer.is_empty() {
        out.push(Tile {
            res: r,
            from: r.floor(s),
            to: u.map(|u| r.floor(u)),
        });
        return;
    }
    let (a, b) = (r.ceil(s), u.map(|u| r.floor(u)));
    if b.is_some_and(|b| a >= b) {
        tile(s, u, finer, out);
        return;
    }
    out.push(Tile {
        res: r,
        from: a,
        to: b,
    });
    tile(s, Some(a), finer, out);
    if let (Some(b), Some(u)) = (b, u) {
        tile(b, Some(u), finer, out);
    }
}

/// How long each resolution is kept, for planning: minute rows older than this are gone.
#[derive(Debug, Clone, Copy)]
pub struct Kept {
    /// Minute rollups exist from this time on.
    pub minutes_from_ms: i64,
}

/// Sums per (time bucket start, group values).
pub type Groups = BTreeMap<(i64, Vec<KeyPart>), Sums>;

/// Adds the raw records matching `$filter` to `$out` (grouped by `$group`, bucketed by
/// `$bucket_of`), reading through `$exec`.
macro_rules! scan_into {
    ($exec:expr, $filter:expr, $group:expr, $bucket_of:expr, $out:expr) => {{
        use futures_util::TryStreamExt;
        let mut q = sqlx::QueryBuilder::new(format!(
            "SELECT {}, {ROW_COLUMNS} FROM usage_records{}",
            super::feedback::SCORE,
            super::feedback::JOIN
        ));
        $filter.push_where(&mut q);
        let mut rows = q.build().fetch($exec);
        while let Some(r) = rows.try_next().await? {
            let row = row_from!(r, 1);
            let mut s = Sums::of(&row);
            if let Some(score) = sqlx::Row::try_get::<Option<f64>, _>(&r, 0)? {
                s.scored = 1;
                s.score_sum = score;
            }
            let dims = dims_of(&row);
            let key = $group.iter().map(|d| dims[d.index()].clone()).collect();
            $out.entry((
                $bucket_of.map_or(0, |b: super::query::Bucket| b.start(row.ts_ms)),
                key,
            ))
            .or_default()
            .merge(&s);
        }
    }};
}

/// Sums per (time bucket start, group values): the records matching `filter` grouped by
/// `group` and, when `bucket_of` is given, by the start of their time bucket. Rollups up to
/// the horizon, the raw records after it (seconds of traffic), read in one snapshot.
pub async fn read(
    store: &Store,
    filter: &Filter,
    group: &[Dim],
    bucket_of: Option<super::query::Bucket>,
    coarsest: Res,
    kept: Kept,
) -> Result<(Groups, Source), StoreError> {
    let mut needed: Vec<Dim> = group.to_vec();
    needed.extend(filter.eq.iter().map(|(d, _)| *d));
    if filter.status_class.is_some() {
        needed.push(Dim::Status);
    }
    let mut out = Groups::new();
    let Some(c) = cuboid_for(&needed) else {
        on_pool!(store.pool(), |p| scan_into!(
            p, filter, group, bucket_of, out
        ));
        return Ok((out, Source::Records));
    };
    let res: Vec<Res> = c.res.iter().copied().filter(|r| *r <= coarsest).collect();
    // Bounds on the minute grid; before minute rows are kept (or for a cuboid without
    // them), on the hour grid.
    let has_minutes = res.contains(&Res::Minute);
    let snap = |t: i64| {
        if t < kept.minutes_from_ms || !has_minutes {
            Res::Hour.floor(t)
        } else {
            Res::Minute.floor(t)
        }
    };
    let since = snap(filter.since_ms.unwrap_or(0).max(0));
    let until = filter.until_ms.map(snap);
    let tiles = tiles(since, until, &res);
    let source = Source::Rollups {
        cuboid: c.id,
        since,
        until,
    };
    let pool = store.pool();
    on_pool!(pool, |p| {
        use futures_util::TryStreamExt;
        let mut tx = p.begin_with(pool.begin_snapshot()).await?;
        let h: i64 = sqlx::query_scalar("SELECT horizon FROM usage_rollup_state")
            .fetch_one(&mut *tx)
            .await?;
        if !tiles.is_empty() {
            let mut q = sqlx::QueryBuilder::new(
                "SELECT bucket_ms, body FROM usage_segments WHERE cuboid = ",
            );
            q.push_bind(c.id).push(" AND (");
            for (i, t) in tiles.iter().enumerate() {
                if i > 0 {
                    q.push(" OR ");
                }
                q.push("(res = ")
                    .push_bind(t.res.code())
                    .push(" AND bucket_ms >= ")
                    .push_bind(t.from);
                if let Some(to) = t.to {
                    q.push(" AND bucket_ms < ").push_bind(to);
                }
                q.push(")");
            }
            q.push(")");
            // Where the grouped and filtered dimensions sit in the cuboid's groups.
            let at = |d: Dim| c.dims.iter().position(|x| *x == d).unwrap_or(0);
            let group_at: Vec<usize> = group.iter().map(|d| at(*d)).collect();
            let wanted: Vec<(usize, Value<'_>)> = filter
                .eq
                .iter()
                .map(|(d, v)| {
                    let want = if *d == Dim::Status {
                        Value::Int(v.parse::<i64>().unwrap_or(-1))
                    } else {
                        Value::Text(Some(v.as_str()))
                    };
                    (at(*d), want)
                })
                .collect();
            let status_at = at(Dim::Status);
            let keep = |v: &[Value<'_>]| {
                wanted.iter().all(|(i, want)| v[*i] == *want)
                    && filter
                        .status_class
                        .is_none_or(|ok| matches!(v[status_at], Value::Int(s) if (s < 400) == ok))
            };
            let mut rows = q.build().fetch(&mut *tx);
            while let Some(r) = rows.try_next().await? {
                use sqlx::Row;
                let b: i64 = r.try_get(0)?;
                let body: &[u8] = r.try_get(1)?;
                let start = bucket_of.map_or(0, |k| k.start(b));
                super::segment::decode(body, c.dims, keep, |v, g| {
                    let key = group_at.iter().map(|&i| v[i].to_part()).collect();
                    g.merge_into(out.entry((start, key)).or_default())
                })
                .map_err(|e| StoreError::Db(sqlx::Error::Decode(Box::new(e))))?;
            }
        }
        // What the roller has not reached: from the horizon to the range's end.
        if until.is_none_or(|u| u > h) {
            let pending = Filter {
                since_ms: Some(since.max(h)),
                until_ms: until,
                ..filter.clone()
            };
            scan_into!(&mut *tx, pending, group, bucket_of, out);
        }
        tx.commit().await?;
    });
    Ok((out, source))
}

/// Merges the rows of closed buckets (ended before `closed_before_ms`) that writers marked,
/// at most `max_buckets` of them; returns how many were merged. Runs of up to 256 marked
/// buckets of one cuboid and resolution go in one transaction (`DELETE ... RETURNING` over
/// the run's range, merge, insert), so a pass over many small buckets stays cheap.
pub async fn compact(
    store: &Store,
    closed_before_ms: i64,
    max_buckets: i64,
) -> Result<usize, StoreError> {
    let due: Vec<(i64, i64, i64)> = on_pool!(store.pool(), |p| {
        sqlx::query_as(
        "SELECT cuboid, res, bucket_ms FROM usage_rollup_dirty WHERE (res = 1 AND bucket_ms <= $1) \
         OR (res = 2 AND bucket_ms <= $2) OR (res = 3 AND bucket_ms <= $3) \
         ORDER BY cuboid, res, bucket_ms LIMIT $4"
    )
    .bind(closed_before_ms - Res::Minute.ms())
    .bind(closed_before_ms - Res::Hour.ms())
    .bind(closed_before_ms - Res::Day.ms())
    .bind(max_buckets)
    .fetch_all(p)
    .await?
    });
    let mut runs: Vec<(i64, i64, i64, i64)> = Vec::new();
    let mut in_run = 0;
    for &(cuboid, res, bucket) in &due {
        // A run is consecutive buckets: its delete takes every row of the range, and the
        // unmarked buckets between two marked ones need no merging (a bulk roll marks
        // only the buckets at its chunks' edges).
        let next = Res::from_code(res).map(|r| r.ms());
        match runs.last_mut() {
            Some(run)
                if run.0 == cuboid
                    && run.1 == res
                    && next.is_some_and(|w| run.3 + w == bucket)
                    && in_run < 256 =>
            {
                run.3 = bucket;
                in_run += 1;
            }
            _ => {
                runs.push((cuboid, res, bucket, bucket));
                in_run = 1;
            }
        }
    }
    for (cuboid, res, first, last) in runs {
        let Some(c) = self::cuboid(cuboid) else {
            continue;
        };
        let Some(r) = Res::from_code(res) else {
            continue;
        };
        on_pool!(store.pool(), |p| {
            let mut tx = p.begin().await?;
            let rows = bind_run!(
                sqlx::query(
                    "DELETE FROM usage_segments WHERE cuboid = $1 AND res = $2 \
                     AND bucket_ms >= $3 AND bucket_ms <= $4 RETURNING bucket_ms, body",
                ),
                (cuboid, res, first, last)
            )
            .fetch_all(&mut *tx)
            .await?;
            let mut merged = Deltas::default();
            let mut damaged = None;
            for row in &rows {
                let bucket: i64 = sqlx::Row::try_get(row, 0)?;
                let body: &[u8] = sqlx::Row::try_get(row, 1)?;
                if let Err(e) = super::segment::decode(
                    body,
                    c.dims,
                    |_| true,
                    |v, g| {
                        let key = v.iter().map(|x| x.to_part()).collect();
                        g.merge_into(merged.rows.entry((cuboid, r, bucket, key)).or_default())
                    },
                ) {
                    damaged = Some((bucket, e));
                    break;
                }
            }
            // A segment that cannot be read stays as it is (queries over it fail, naming
            // it); the runs after it are still merged.
            if let Some((bucket, e)) = damaged {
                tx.rollback().await?;
                tracing::warn!(cuboid, res, bucket, "not compacting usage rollups: {e}");
                continue;
            }
            write_deltas!(tx, &merged, i64::MIN);
            // These are merged now.
            bind_run!(
                sqlx::query(
                    "DELETE FROM usage_rollup_dirty WHERE cuboid = $1 AND res = $2 \
                     AND bucket_ms >= $3 AND bucket_ms <= $4",
                ),
                (cuboid, res, first, last)
            )
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
    }
    Ok(due.len())
}

/// Deletes rollups before `minutes_before_ms` (minute rows) and `before_ms` (hour and day
/// rows), at most `chunk` rows per statement; returns how many went.
pub async fn purge(
    store: &Store,
    minutes_before_ms: i64,
    before_ms: i64,
    chunk: i64,
) -> Result<u64, StoreError> {
    let id = store.pool().row_id();
    let mut total = 0;
    for (cond, cutoff) in [
        ("res = 1 AND bucket_ms < $1", minutes_before_ms),
        ("res > 1 AND bucket_ms < $1", before_ms),
    ] {
        loop {
            let n = on_pool!(store.pool(), |p| sqlx::query(&format!(
                "DELETE FROM usage_segments WHERE {id} IN \
                 (SELECT {id} FROM usage_segments WHERE {cond} LIMIT $2)"
            ))
            .bind(cutoff)
            .bind(chunk)
            .execute(p)
            .await?
            .rows_affected());
            total += n;
            if n < u64::try_from(chunk).unwrap_or(0) {
                break;
            }
            tokio::task::yield_now().await;
        }
        on_pool!(store.pool(), |p| sqlx::query(&format!(
            "DELETE FROM usage_rollup_dirty WHERE {cond}"
        ))
        .bind(cutoff)
        .execute(p)
        .await?
        .rows_affected());
    }
    Ok(total)
}

/// The columns [`row_from!`] reads, after any leading ones.
pub(crate) const ROW_COLUMNS: &str = "ts_ms, key_id, user_name, team, requested_model, \
     provider, deployment_model, status, surface, error_class, cache, input_tokens, \
     output_tokens, cached_input_tokens, cache_write_tokens, reasoning_tokens, cost_micro_usd, \
     cost_saved_micro_usd, streamed, attempts, fallback_reason, latency_us, ttft_us";

/// The [`UsageRow`] fields the rollups need, from [`ROW_COLUMNS`] starting at column `$at`.
macro_rules! row_from {
    ($r:expr, $at:expr) => {{
        use sqlx::Row;
        let r = &$r;
        let a: usize = $at;
        let u = |i: usize| -> Result<Option<u64>, sqlx::Error> {
            Ok(r.try_get::<Option<i64>, _>(a + i)?.map(i64::unsigned_abs))
        };
        $crate::store::UsageRow {
            ts_ms: r.try_get(a)?,
            key_id: r.try_get(a + 1)?,
            user: r.try_get(a + 2)?,
            team: r.try_get(a + 3)?,
            requested_model: r.try_get(a + 4)?,
            provider: r.try_get(a + 5)?,
            deployment_model: r.try_get(a + 6)?,
            status: u16::try_from(r.try_get::<i64, _>(a + 7)?).unwrap_or(0),
            surface: r.try_get(a + 8)?,
            error_class: r.try_get(a + 9)?,
            cache: r.try_get(a + 10)?,
            input_tokens: u(11)?,
            output_tokens: u(12)?,
            cached_input_tokens: u(13)?,
            cache_write_tokens: u(14)?,
            reasoning_tokens: u(15)?,
            cost_micro_usd: r.try_get(a + 16)?,
            cost_saved_micro_usd: r.try_get(a + 17)?,
            streamed: r.try_get(a + 18)?,
            attempts: u32::try_from(r.try_get::<i64, _>(a + 19)?).unwrap_or(0),
            fallback_reason: r.try_get(a + 20)?,
            latency_us: u(21)?.unwrap_or(0),
            ttft_us: u(22)?,
            ..$crate::store::UsageRow::default()
        }
    }};
}
pub(crate) use row_from;

/// The rollup horizon inside the transaction `$tx`: records before it are in the rollups,
/// records from it on wait for [`roll`]. `share` (writers) and `update` (the roller) lock it
/// on PostgreSQL so that a writer never misses a roll running beside it; SQLite's write
/// transactions are serial already.
macro_rules! horizon {
    ($tx:ident, $pool:expr, share) => {
        $crate::store::rollup::horizon!(@ $tx, $pool, " FOR SHARE")
    };
    ($tx:ident, $pool:expr, update) => {
        $crate::store::rollup::horizon!(@ $tx, $pool, " FOR UPDATE")
    };
    (@ $tx:ident, $pool:expr, $lock:literal) => {{
        let lock = if $pool.is_postgres() { $lock } else { "" };
        let h: i64 = sqlx::query_scalar(&format!("SELECT horizon FROM usage_rollup_state{lock}"))
            .fetch_one(&mut *$tx)
            .await?;
        h
    }};
}
pub(crate) use horizon;

/// The rollup horizon now (records before it are in the rollups).
pub async fn current_horizon(store: &Store) -> Result<i64, StoreError> {
    Ok(on_pool!(store.pool(), |p| sqlx::query_scalar(
        "SELECT horizon FROM usage_rollup_state"
    )
    .fetch_one(p)
    .await?))
}

/// Records per roller transaction, at most (more only when they share one millisecond).
const ROLL_CHUNK: i64 = 50_000;

/// What the roller reads: the records of `[$1, $2)` summed by the database per `usage_dims`
/// id, key, minute and status, with their latencies and TTFTs as lists for the sketches, all
/// in one JSON text ([`ChunkGroup`] each). The driver's cost is per row (a message between
/// threads, an allocation per column): reading every record was most of the roller's time,
/// and at live traffic there are still three records per group.
fn roll_query(pool: &super::db::Pool) -> String {
    let sum = |e: &str| format!("CAST(COALESCE(SUM({e}), 0) AS BIGINT)");
    let ok_output = "r.status < 400 AND COALESCE(r.output_tokens, 0) > 0";
    let ttft = "COALESCE(r.ttft_us, 0)";
    let ints = [
        "COUNT(*)".to_string(),
        sum("CASE WHEN r.cost_micro_usd IS NULL AND COALESCE(r.input_tokens, 0) > 0 THEN 1 ELSE 0 END"),
        sum("r.input_tokens"),
        sum("r.output_tokens"),
        sum("r.cached_input_tokens"),
        sum("r.cache_write_tokens"),
        sum("r.reasoning_tokens"),
        sum("r.cost_micro_usd"),
        sum("r.cost_saved_micro_usd"),
        sum("CASE WHEN r.streamed THEN 1 ELSE 0 END"),
        sum("r.attempts"),
        sum(&format!("CASE WHEN {ok_output} THEN r.output_tokens ELSE 0 END")),
        sum(&format!(
            "CASE WHEN {ok_output} AND r.latency_us > {ttft} THEN r.latency_us - {ttft} ELSE 0 END"
        )),
        "COUNT(feedback.score)".to_string(),
    ];
    let (array, text) = match pool {
        super::db::Pool::Sqlite(_) => ("json_array", "group_concat(g.j)"),
        super::db::Pool::Postgres(_) => ("json_build_array", "string_agg(CAST(g.j AS TEXT), ',')"),
    };
    format!(
        "SELECT '[' || COALESCE({text}, '') || ']' FROM (SELECT {array}(r.dims, r.key_id, \
         r.ts_ms / 60000, r.status, {array}({}), \
         CAST(COALESCE(SUM(feedback.score), 0) AS DOUBLE PRECISION), {}, {}) AS j \
         FROM usage_rows r LEFT JOIN feedback ON feedback.request_id = r.request_id \
         WHERE r.ts_ms >= $1 AND r.ts_ms < $2 \
         GROUP BY r.dims, r.key_id, r.ts_ms / 60000, r.status) g",
        ints.join(", "),
        pool.list_agg("r.latency_us"),
        pool.list_agg("r.ttft_us"),
    )
}

/// A group of a roll chunk ([`roll_query`]): `usage_dims` id, key, minute (since the epoch),
/// status, the integer sums (records, unpriced, input, output, cached, cache write,
/// reasoning, cost, cost saved, streamed, attempts, generated tokens, generation time,
/// scored), the score sum, the latencies and TTFTs (comma-separated microseconds).
type ChunkGroup = (
    i64,
    Option<String>,
    i64,
    i64,
    [i64; 14],
    f64,
    Option<String>,
    Option<String>,
);

/// A chunk's postings, stored with it: the keyed records of `[$1, $2)`, in key order so that
/// each key's entries land next to each other.
const POST_CHUNK: &str = "INSERT INTO usage_key_rows (pk_key, pk_ms, pk_row) \
     SELECT key_id, ts_ms, rowid FROM usage_rows \
     WHERE ts_ms >= $1 AND ts_ms < $2 AND key_id IS NOT NULL \
     ORDER BY key_id, ts_ms, rowid ON CONFLICT DO NOTHING";

/// The sketch buckets of a comma-separated list of microseconds, into `out`.
fn buckets_of(list: Option<&str>, out: &mut Vec<i32>) {
    out.clear();
    for v in list.unwrap_or_default().split(',') {
        if let Ok(us) = v.trim().parse::<i64>() {
            out.push(Sketch::bucket_of(us.unsigned_abs()));
        }
    }
}

/// The `usage_dims` texts the rollups group by, in [`Dim::ALL`] order where they are
/// dimensions, then the fallback reason and the cache outcome.
const DIM_TEXTS: &str = "user_name, team, requested_model, provider, deployment_model, surface, \
     error_class, cache, fallback_reason";

/// The roller's texts as small integers, so that a rollup key is an array: hashed and
/// compared without allocating (each summed group adds to ~16 rollup keys).
#[derive(Debug, Default)]
struct Interned {
    /// Id to text; 0 is "none".
    texts: Vec<Option<String>>,
    ids: HashMap<String, u32, foldhash::fast::RandomState>,
    /// A `usage_dims` id's values in [`Dim::ALL`] order (key and status left 0), whether it
    /// fell back, whether it was a cache hit.
    dims: HashMap<i64, ([u32; 10], bool, bool)>,
}

impl Interned {
    fn id(&mut self, t: Option<&str>) -> u32 {
        let Some(t) = t else { return 0 };
        if let Some(&id) = self.ids.get(t) {
            return id;
        }
        if self.texts.is_empty() {
            self.texts.push(None);
        }
        let id = u32::try_from(self.texts.len()).unwrap_or(u32::MAX);
        self.texts.push(Some(t.to_string()));
        self.ids.insert(t.to_string(), id);
        id
    }

    /// The value `v` of dimension `d` as a rollup key part.
    fn part(&self, d: Dim, v: u32) -> KeyPart {
        if d == Dim::Status {
            KeyPart::Int(i64::from(v))
        } else {
            KeyPart::Text(self.texts.get(v as usize).cloned().flatten())
        }
    }
}

/// A rollup row of a chunk by interned values: cuboid (its position in [`CUBOIDS`]),
/// resolution, bucket, the cuboid's dimension values.
type FanKey = (u8, Res, i64, [u32; 7]);

/// Adds `s` (made at `ts_ms` by records with the values `parts`, [`Dim::ALL`] order, and the
/// latencies and TTFTs in the sketch buckets `latency` and `ttft`) to every cuboid and
/// resolution of `rows`.
fn fan_out(
    rows: &mut HashMap<FanKey, Sums, foldhash::fast::RandomState>,
    minutes_from_ms: i64,
    ts_ms: i64,
    parts: &[u32; 10],
    (s, latency, ttft): (&Sums, &[i32], &[i32]),
) {
    use std::collections::hash_map::Entry;
    for (i, c) in CUBOIDS.iter().enumerate() {
        let mut key = [0u32; 7];
        for (slot, d) in key.iter_mut().zip(c.dims) {
            *slot = parts[d.index()];
        }
        for &r in c.res {
            if r == Res::Minute && ts_ms < minutes_from_ms {
                continue;
            }
            let row = match rows.entry((u8::try_from(i).unwrap_or(u8::MAX), r, r.floor(ts_ms), key))
            {
                Entry::Occupied(o) => {
                    let row = o.into_mut();
                    row.merge(s);
                    row
                }
                Entry::Vacant(v) => v.insert(s.clone()),
            };
            row.latency.add_buckets(latency);
            row.ttft.add_buckets(ttft);
        }
    }
}

/// Reads the records from the horizon `$h` toward `$target` (at most [`ROLL_CHUNK`] of them)
/// through the transaction `$tx`, summed by `$query` ([`roll_query`]): `(chunk end, records,
/// deltas)`.
macro_rules! read_chunk {
    ($tx:ident, $store:expr, $interned:ident, $h:expr, $target:expr, $query:expr) => {{
        let h: i64 = $h;
        // Where this chunk ends: the target, or the time of the record ROLL_CHUNK on.
        let nth: Option<i64> = sqlx::query_scalar(
            "SELECT ts_ms FROM usage_rows WHERE ts_ms >= $1 AND ts_ms < $2 \
             ORDER BY ts_ms LIMIT 1 OFFSET $3",
        )
        .bind(h)
        .bind($target)
        .bind(ROLL_CHUNK)
        .fetch_optional(&mut *$tx)
        .await?;
        let end = nth.map_or($target, |t| t.max(h + 1));
        let text: Option<String> = sqlx::query_scalar($query)
            .bind(h)
            .bind(end)
            .fetch_one(&mut *$tx)
            .await?;
        let rows: Vec<ChunkGroup> = serde_json::from_str(text.as_deref().unwrap_or("[]"))
            .map_err(|e| StoreError::Db(sqlx::Error::Decode(Box::new(e))))?;
        // The `usage_dims` texts, once per id (not per record).
        let mut ids: Vec<i64> = Vec::new();
        for r in &rows {
            if !$interned.dims.contains_key(&r.0) {
                ids.push(r.0);
            }
        }
        ids.sort_unstable();
        ids.dedup();
        for chunk in ids.chunks(500) {
            let mut q = sqlx::QueryBuilder::new(format!(
                "SELECT id, {DIM_TEXTS} FROM usage_dims WHERE id IN ("
            ));
            let mut list = q.separated(", ");
            for id in chunk {
                list.push_bind(*id);
            }
            q.push(")");
            for r in q.build().fetch_all(&mut *$tx).await? {
                use sqlx::Row;
                let mut parts = [0u32; 10];
                // user .. cache: columns 1..=8 are Dim::ALL[1..] without the status.
                let mut col = 1;
                for d in &Dim::ALL[1..] {
                    if *d != Dim::Status {
                        parts[d.index()] = $interned.id(r.try_get::<Option<&str>, _>(col)?);
                        col += 1;
                    }
                }
                let hit = is_cache_hit(r.try_get::<Option<&str>, _>(8)?);
                let fallback = r.try_get::<Option<&str>, _>(9)?.is_some();
                $interned.dims.insert(r.try_get(0)?, (parts, fallback, hit));
            }
        }
        let mut fan: HashMap<FanKey, Sums, foldhash::fast::RandomState> = HashMap::default();
        let minutes_from_ms = $store.minutes_from_ms();
        let mut records = 0i64;
        let (mut latency, mut ttft) = (Vec::new(), Vec::new());
        for (dims, key, minute, status, n, score_sum, lat, tt) in &rows {
            let (mut parts, fallback, hit) = $interned.dims.get(dims).copied().unwrap_or_default();
            parts[Dim::Key.index()] = $interned.id(key.as_deref());
            parts[Dim::Status.index()] = u32::try_from(*status).unwrap_or(0);
            let requests = n[0];
            records += requests;
            let s = Sums {
                requests,
                errors: if *status >= 400 { requests } else { 0 },
                unpriced: n[1],
                input: n[2],
                output: n[3],
                cached: n[4],
                cache_write: n[5],
                reasoning: n[6],
                cost: n[7],
                cache_hits: if hit { requests } else { 0 },
                cost_saved: if hit { n[8] } else { 0 },
                streamed: n[9],
                attempts: n[10],
                fallbacks: if fallback { requests } else { 0 },
                gen_tokens: n[11],
                gen_us: n[12],
                scored: n[13],
                score_sum: *score_sum,
                ..Sums::default()
            };
            // Sketch buckets, added to each rollup row (the sums have no sketches).
            buckets_of(lat.as_deref(), &mut latency);
            buckets_of(tt.as_deref(), &mut ttft);
            fan_out(
                &mut fan,
                minutes_from_ms,
                minute.saturating_mul(Res::Minute.ms()),
                &parts,
                (&s, &latency, &ttft),
            );
        }
        // Back to texts, once per rollup row.
        let mut deltas = Deltas::new(minutes_from_ms);
        for ((i, res, bucket, key), s) in fan {
            let c = &CUBOIDS[usize::from(i)];
            let key = c
                .dims
                .iter()
                .zip(key)
                .map(|(d, v)| $interned.part(*d, v))
                .collect();
            deltas.rows.insert((c.id, res, bucket, key), s);
        }
        (end, records, deltas)
    }};
}

/// Folds the records from the horizon to `target_ms` into the rollups (with the feedback
/// they have), moving the horizon; returns how many records were folded. Each chunk is one
/// transaction, so a crash leaves every record either rolled or after the horizon, never
/// counted twice. A store upgraded from before rollups starts at horizon 0: its first roll
/// builds the rollups of everything stored.
pub async fn roll(store: &Store, target_ms: i64) -> Result<u64, StoreError> {
    let pool = store.pool();
    let mut total = 0u64;
    // `usage_dims` rows never change: read each once per roll.
    let mut interned = Interned::default();
    let query = roll_query(pool);
    let mut conflicts = 0;
    loop {
        // Read and sum a chunk in a snapshot, beside the writers (the write lock is held
        // only to store the result), then store it if nothing arrived in its range
        // meanwhile. A record that did (a long request's, a replayed spill file's) makes
        // the chunk be read again; after a few of those, under the write lock.
        let locked = conflicts >= 3;
        let (n, done) = on_pool!(pool, |p| {
            let read = if locked {
                None
            } else {
                let mut tx = p.begin_with(pool.begin_snapshot()).await?;
                let h: i64 = sqlx::query_scalar("SELECT horizon FROM usage_rollup_state")
                    .fetch_one(&mut *tx)
                    .await?;
                if h >= target_ms {
                    tx.rollback().await?;
                    return Ok(total);
                }
                let chunk = read_chunk!(tx, store, interned, h, target_ms, &query);
                tx.rollback().await?;
                Some((h, chunk))
            };
            let mut tx = p.begin_with(pool.begin_write()).await?;
            let h = horizon!(tx, pool, update);
            let fresh = match &read {
                Some((was, (end, n, _))) if *was == h => {
                    let now: i64 = sqlx::query_scalar(
                        "SELECT COUNT(*) FROM usage_rows WHERE ts_ms >= $1 AND ts_ms < $2",
                    )
                    .bind(h)
                    .bind(*end)
                    .fetch_one(&mut *tx)
                    .await?;
                    now == *n
                }
                _ => false,
            };
            let chunk = match read {
                Some((_, c)) if fresh => Some(c),
                _ if !locked => None,
                _ if h >= target_ms => {
                    tx.rollback().await?;
                    return Ok(total);
                }
                _ => Some(read_chunk!(tx, store, interned, h, target_ms, &query)),
            };
            match chunk {
                None => {
                    tx.rollback().await?;
                    conflicts += 1;
                    (0, false)
                }
                Some((end, n, deltas)) => {
                    write_deltas!(tx, &deltas, h);
                    sqlx::query(POST_CHUNK)
                        .bind(h)
                        .bind(end)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query("UPDATE usage_rollup_state SET horizon = $1")
                        .bind(end)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    conflicts = 0;
                    (n.unsigned_abs(), end >= target_ms)
                }
            }
        });
        total += n;
        if done {
            return Ok(total);
        }
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_use_days_inside_hours_then_minutes_at_the_edges() {
        const M: i64 = 60_000;
        const H: i64 = 3_600_000;
        const D: i64 = 86_400_000;
        // 2 days, 3 hours and 5 minutes after a day boundary, to 1 day 2 hours 4 minutes
        // before the next one.
        let s = 10 * D + 3 * H + 5 * M;
        let u = 20 * D + 2 * H + 4 * M;
        let t = tiles(s, Some(u), ALL_RES);
        let tile = |res, from, to| Tile {
            res,
            from,
            to: Some(to),
        };
        assert_eq!(
            t,
            [
                tile(Res::Day, 11 * D, 20 * D),
                tile(Res::Hour, 10 * D + 4 * H, 11 * D),
                tile(Res::Minute, s, 10 * D + 4 * H),
                tile(Res::Hour, 20 * D, 20 * D + 2 * H),
                tile(Res::Minute, 20 * D + 2 * H, u),
            ]
        );
        // The tiles cover the range exactly once.
        let covered: i64 = t.iter().map(|t| t.to.unwrap_or(0) - t.from).sum();
        assert_eq!(covered, u - s);
        // Open-ended: days to the end.
        assert_eq!(tiles(5 * D, None, ALL_RES)[0].to, None);
        // Without minute rows the ends round down to the hour.
        let t = tiles(s, Some(u), &[Res::Hour]);
        assert_eq!(t, [tile(Res::Hour, 10 * D + 3 * H, 20 * D + 2 * H)]);
        // Less than a day: no day tile.
        let t = tiles(s, Some(s + 2 * H), ALL_RES);
        assert!(t.iter().all(|t| t.res != Res::Day), "{t:?}");
    }

    #[test]
    fn the_smallest_cuboid_holding_the_dimensions_is_read() {
        let id = |d: &[Dim]| cuboid_for(d).map(|c| c.id);
        assert_eq!(id(&[]), Some(0));
        assert_eq!(id(&[Dim::Team]), Some(1));
        assert_eq!(id(&[Dim::Provider, Dim::Deployment]), Some(2));
        assert_eq!(id(&[Dim::Key]), Some(4));
        assert_eq!(id(&[Dim::Team, Dim::Model]), Some(5));
        assert_eq!(id(&[Dim::Model, Dim::Status]), Some(6));
        // No set holds a key by model: the records answer.
        assert_eq!(id(&[Dim::Key, Dim::Model]), None);
    }

    /// Random records spread over three days, with every dimension varying.
    fn random_rows(seed: u64, n: usize, t0: i64) -> Vec<UsageRow> {
        let mut x = seed;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        (0..n)
            .map(|i| {
                let pick = |v: u64, of: u64| v % of;
                let (a, b, c) = (next(), next(), next());
                let status = [200u16, 200, 200, 429, 500][pick(a, 5) as usize];
                UsageRow {
                    request_id: format!("r{i}"),
                    ts_ms: t0 + i64::try_from(pick(b, 3 * 86_400_000)).unwrap(),
                    surface: ["openai.chat", "anthropic.messages"][pick(c, 2) as usize].into(),
                    principal: "p".into(),
                    requested_model: format!("m{}", pick(a >> 8, 6)),
                    provider: Some(format!("p{}", pick(a >> 16, 3))),
                    deployment_model: (pick(a >> 20, 4) > 0)
                        .then(|| format!("d{}", pick(a >> 24, 2))),
                    status,
                    error_class: (status >= 400).then(|| "upstream".to_string()),
                    streamed: pick(b >> 8, 2) == 0,
                    input_tokens: Some(pick(b >> 12, 2000)),
                    output_tokens: (pick(b >> 24, 5) > 0).then(|| pick(b >> 28, 500)),
                    cached_input_tokens: Some(pick(c >> 8, 100)),
                    latency_us: 1000 + pick(c >> 16, 2_000_000),
                    ttft_us: (pick(c >> 40, 2) == 0).then(|| 500 + pick(c >> 20, 400_000)),
                    attempts: 1 + u32::try_from(pick(c >> 30, 2)).unwrap(),
                    fallback_reason: (pick(c >> 33, 7) == 0).then(|| "server_error".to_string()),
                    key_id: (pick(a >> 30, 10) > 0).then(|| format!("k{}", pick(a >> 34, 20))),
                    user: (pick(a >> 38, 3) > 0).then(|| format!("u{}", pick(a >> 40, 4))),
                    team: (pick(a >> 44, 4) > 0).then(|| format!("t{}", pick(a >> 46, 5))),
                    cost_micro_usd: (pick(b >> 40, 9) > 0)
                        .then(|| i64::try_from(pick(b >> 44, 9000)).unwrap()),
                    cache: [None, Some("hit"), Some("miss")][pick(c >> 50, 3) as usize]
                        .map(str::to_string),
                    cost_saved_micro_usd: Some(7),
                    ..UsageRow::default()
                }
            })
            .collect()
    }

    fn value_of(r: &UsageRow, d: Dim) -> KeyPart {
        dims_of(r)[d.index()].clone()
    }

    fn exact_pct(mut v: Vec<u64>, p: f64) -> Option<f64> {
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        Some(v[rank.clamp(1, v.len()) - 1] as f64 / 1000.0)
    }

    /// The oracle: the same figures by a scan over the records themselves.
    fn scan<'a>(
        rows: &'a [UsageRow],
        f: &Filter,
        group: &[Dim],
        bucket: Option<super::super::query::Bucket>,
        source: Source,
    ) -> BTreeMap<(i64, Vec<KeyPart>), Vec<&'a UsageRow>> {
        // The range the rollups answered for (on their grid), or the exact one.
        let (since, until) = match source {
            Source::Rollups { since, until, .. } => (Some(since), until),
            Source::Records => (f.since_ms, f.until_ms),
        };
        let mut out: BTreeMap<(i64, Vec<KeyPart>), Vec<&UsageRow>> = BTreeMap::new();
        for r in rows {
            if since.is_some_and(|s| r.ts_ms < s)
                || until.is_some_and(|u| r.ts_ms >= u)
                || f.eq.iter().any(|(d, v)| {
                    value_of(r, *d)
                        != match d {
                            Dim::Status => KeyPart::Int(v.parse().unwrap()),
                            _ => KeyPart::Text(Some(v.clone())),
                        }
                })
                || f.status_class.is_some_and(|ok| (r.status < 400) != ok)
            {
                continue;
            }
            let key = group.iter().map(|d| value_of(r, *d)).collect();
            out.entry((bucket.map_or(0, |b| b.start(r.ts_ms)), key))
                .or_default()
                .push(r);
        }
        out
    }

    /// The roller reads beside the writers: records that arrive in the range it is reading
    /// (behind the newest, as a long request's or a replayed spill file's do) are neither
    /// lost nor counted twice.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[allow(clippy::unwrap_used)]
    async fn rolling_beside_writers_counts_every_record_once() {
        use super::super::query::aggregate;
        use super::super::UsageStore;
        const H: i64 = 3_600_000;
        let t0 = 20_000 * 86_400_000;
        for db in crate::store::testing::databases("rollup_beside").await {
            let store = Store::open(&db.url).await.unwrap();
            store.set_minute_retention(std::time::Duration::from_secs(20 * 365 * 86_400));
            let e = db.engine;
            let rows = random_rows(7, 6000, t0);
            // Three hours of records in time order, then stragglers anywhere in them.
            let rows: Vec<UsageRow> = rows
                .into_iter()
                .map(|mut r| {
                    r.ts_ms = t0 + (r.ts_ms - t0) % (3 * H);
                    r
                })
                .collect();
            let mut ordered = rows[..4000].to_vec();
            ordered.sort_by_key(|r| r.ts_ms);
            let stragglers = rows[4000..].to_vec();
            let writer = {
                let store = store.clone();
                tokio::spawn(async move {
                    for chunk in ordered.chunks(100) {
                        store.write_batch(chunk).await.unwrap();
                    }
                    for chunk in stragglers.chunks(7) {
                        store.write_batch(chunk).await.unwrap();
                    }
                })
            };
            while !writer.is_finished() {
                roll(&store, t0 + 3 * H).await.unwrap();
            }
            writer.await.unwrap();
            roll(&store, t0 + 3 * H).await.unwrap();
            let kept = Kept { minutes_from_ms: 0 };
            for group in [vec![], vec![Dim::Model], vec![Dim::Key]] {
                let (got, source) = aggregate(&store, &Filter::default(), &group, None, kept)
                    .await
                    .unwrap();
                assert!(matches!(source, Source::Rollups { .. }), "{e}");
                let n: i64 = got.iter().map(|g| g["requests"].as_i64().unwrap()).sum();
                assert_eq!(n, 6000, "{e} {group:?}");
                let cost: i64 = got
                    .iter()
                    .map(|g| g["cost_micro_usd"].as_i64().unwrap())
                    .sum();
                let want: i64 = rows.iter().map(|r| r.cost_micro_usd.unwrap_or(0)).sum();
                assert_eq!(cost, want, "{e} {group:?}");
            }
            // Every keyed record has exactly one posting.
            let (posted, keyed): (i64, i64) = on_pool!(store.pool(), |p| sqlx::query_as(
                "SELECT (SELECT COUNT(*) FROM usage_key_rows), \
                 (SELECT COUNT(*) FROM usage_rows WHERE key_id IS NOT NULL)"
            )
            .fetch_one(p)
            .await
            .unwrap());
            assert_eq!(posted, keyed, "{e}");
        }
    }

    /// A bucket with more groups than a segment holds is stored in several, which together
    /// hold every group once.
    #[test]
    fn a_huge_bucket_is_split_into_segments() {
        let mut d = Deltas::default();
        let n = GROUPS_PER_SEGMENT + 7;
        for i in 0..n {
            let key = vec![
                KeyPart::Text(Some(format!("k{i}"))),
                KeyPart::Text(None),
                KeyPart::Text(Some("t".into())),
            ];
            let s = Sums {
                requests: 1,
                cost: i64::try_from(i).unwrap(),
                ..Sums::default()
            };
            d.rows.insert((4, Res::Hour, 0, key), s);
        }
        d.rows.insert(
            (1, Res::Hour, 0, vec![KeyPart::Text(None)]),
            Sums::default(),
        );
        let segs = segments(&d);
        let of_4: Vec<_> = segs.iter().filter(|s| s.0 == 4).collect();
        assert_eq!(of_4.len(), 2);
        let (mut groups, mut cost) = (0, 0);
        for (_, _, _, body) in of_4 {
            super::super::segment::decode(
                body,
                CUBOIDS[4].dims,
                |_| true,
                |_, g| {
                    let s = g.into_sums()?;
                    groups += s.requests;
                    cost += s.cost;
                    Ok(())
                },
            )
            .unwrap();
        }
        let n = i64::try_from(n).unwrap();
        assert_eq!((groups, cost), (n, n * (n - 1) / 2));
    }

    /// A segment that cannot be read fails the queries over it with an error and is left
    /// alone by compaction, which goes on merging the buckets after it.
    #[tokio::test]
    #[allow(clippy::unwrap_used)]
    async fn a_damaged_segment_does_not_stop_compaction() {
        const H: i64 = 3_600_000;
        for db in crate::store::testing::databases("rollup_damaged").await {
            let store = Store::open(&db.url).await.unwrap();
            let e = db.engine;
            let team = |t: &str| vec![KeyPart::Text(Some(t.to_string()))];
            let sums = |n: i64| Sums {
                requests: n,
                cost: 10 * n,
                ..Sums::default()
            };
            // Two segments of one team-hour (to merge), and a damaged everything-hour before
            // them in compaction's order.
            let mut segs = Vec::new();
            for n in [2, 3] {
                let mut d = Deltas::default();
                d.rows.insert((1, Res::Hour, 5 * H, team("t1")), sums(n));
                segs.extend(segments(&d));
            }
            segs.push((0, Res::Hour.code(), 5 * H, vec![9, 9, 9, 9, 9]));
            on_pool!(store.pool(), |p| {
                for (c, r, b, body) in &segs {
                    sqlx::query(
                        "INSERT INTO usage_segments (cuboid, res, bucket_ms, body) \
                         VALUES ($1, $2, $3, $4)",
                    )
                    .bind(c)
                    .bind(r)
                    .bind(b)
                    .bind(body.as_slice())
                    .execute(p)
                    .await
                    .unwrap();
                    sqlx::query(
                        "INSERT INTO usage_rollup_dirty (cuboid, res, bucket_ms) \
                         VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    )
                    .bind(c)
                    .bind(r)
                    .bind(b)
                    .execute(p)
                    .await
                    .unwrap();
                }
            });
            compact(&store, 10 * H, 100).await.unwrap();
            let count = |cuboid: i64| {
                let store = store.clone();
                async move {
                    let n: i64 = on_pool!(store.pool(), |p| sqlx::query_scalar(
                        "SELECT COUNT(*) FROM usage_segments WHERE cuboid = $1"
                    )
                    .bind(cuboid)
                    .fetch_one(p)
                    .await
                    .unwrap());
                    n
                }
            };
            assert_eq!(count(1).await, 1, "{e}: the team-hour was merged");
            assert_eq!(count(0).await, 1, "{e}: the damaged segment is kept");
            let kept = Kept { minutes_from_ms: 0 };
            let filter = Filter {
                since_ms: Some(5 * H),
                until_ms: Some(6 * H),
                ..Filter::default()
            };
            let (got, _) = read(&store, &filter, &[Dim::Team], None, Res::Day, kept)
                .await
                .unwrap();
            assert_eq!(got[&(0, team("t1"))].requests, 5, "{e}");
            assert_eq!(got[&(0, team("t1"))].cost, 50, "{e}");
            let err = read(&store, &filter, &[], None, Res::Day, kept)
                .await
                .unwrap_err();
            assert!(err.to_string().contains("damaged"), "{e}: {err}");
        }
    }

    #[tokio::test]
    #[allow(clippy::unwrap_used, clippy::too_many_lines)]
    async fn rollups_equal_a_scan_of_the_raw_records_on_every_engine() {
        use super::super::query::{aggregate, Bucket};
        use super::super::UsageStore;
        const D: i64 = 86_400_000;
        let t0 = 20_000 * D;
        let rows = random_rows(42, 3000, t0);
        for db in crate::store::testing::databases("rollup_equals_scan").await {
            let store = Store::open(&db.url).await.unwrap();
            // The records are from 2024: keep their minute rollups.
            store.set_minute_retention(std::time::Duration::from_secs(20 * 365 * 86_400));
            let e = db.engine;
            // Written in uneven batches (times in any order); half of the time rolled up (a
            // restart can stop anywhere: what is not rolled is after the horizon); then a
            // "spill replay" of stored and new records, some behind the horizon (late) and
            // some after it, which must count each record once.
            for chunk in rows[..2500].chunks(377) {
                store.write_batch(chunk).await.unwrap();
            }
            let rolled = roll(&store, t0 + D + D / 2).await.unwrap();
            let behind = rows[..2500]
                .iter()
                .filter(|r| r.ts_ms < t0 + D + D / 2)
                .count();
            assert_eq!(rolled, behind as u64, "{e}");
            // A roll writes each bucket once: none needs compacting (only buckets an earlier
            // roll, a late record or feedback also wrote are marked; the check after
            // compaction below fails if one of those was missed).
            let marked: i64 = on_pool!(store.pool(), |p| sqlx::query_scalar(
                "SELECT COUNT(*) FROM usage_rollup_dirty"
            )
            .fetch_one(p)
            .await
            .unwrap());
            assert_eq!(marked, 0, "{e}");
            store.write_batch_dedup(&rows[2000..]).await.unwrap();
            // Feedback, one of it replaced.
            let mut scores = HashMap::new();
            for (i, id) in ["r1", "r2", "r3", "r1"].iter().enumerate() {
                let score = [0.5, 1.0, 0.0, 0.25][i];
                crate::store::feedback::upsert(
                    &store,
                    &crate::store::feedback::Feedback {
                        request_id: (*id).into(),
                        feedback_ms: t0,
                        score,
                        label: None,
                        comment: None,
                        actor: "t".into(),
                    },
                )
                .await
                .unwrap();
                scores.insert((*id).to_string(), score);
            }
            let kept = Kept { minutes_from_ms: 0 };
            let queries: Vec<(Filter, Vec<Dim>, Option<Bucket>)> = vec![
                (Filter::default(), vec![], None),
                (Filter::default(), vec![Dim::Team], None),
                (
                    Filter {
                        since_ms: Some(t0 + 3_600_000 * 5 + 60_000 * 7 + 1234),
                        until_ms: Some(t0 + 2 * D + 3_600_000 * 3 + 60_000 * 11),
                        ..Filter::default()
                    },
                    vec![Dim::Model, Dim::Status],
                    None,
                ),
                (
                    Filter {
                        since_ms: Some(t0 + 90 * 60_000),
                        ..Filter::default()
                    },
                    vec![Dim::Model],
                    Some(Bucket::Hour),
                ),
                (
                    Filter {
                        eq: vec![(Dim::Key, "k3".into())],
                        ..Filter::default()
                    },
                    vec![Dim::Model],
                    Some(Bucket::Day),
                ),
                (
                    Filter {
                        status_class: Some(false),
                        eq: vec![(Dim::Team, "t2".into())],
                        ..Filter::default()
                    },
                    vec![Dim::Surface, Dim::Cache],
                    None,
                ),
                (
                    Filter::default(),
                    vec![Dim::Provider, Dim::Deployment],
                    Some(Bucket::Week),
                ),
                (Filter::default(), Dim::ALL.to_vec(), None),
            ];
            for round in ["half rolled", "rolled", "half compacted", "compacted"] {
                for (f, group, bucket) in &queries {
                    let (got, source) = aggregate(&store, f, group, *bucket, kept).await.unwrap();
                    let want = scan(&rows, f, group, *bucket, source);
                    let ctx = format!("{e} {round} {group:?} {bucket:?} {f:?}");
                    assert_eq!(got.len(), want.len(), "{ctx}");
                    for (g, ((_, _), rs)) in got.iter().zip(&want) {
                        let sum =
                            |f: &dyn Fn(&UsageRow) -> i64| rs.iter().map(|r| f(r)).sum::<i64>();
                        let u = |v: Option<u64>| i64::try_from(v.unwrap_or(0)).unwrap();
                        assert_eq!(g["requests"], rs.len() as i64, "{ctx}");
                        assert_eq!(g["errors"], sum(&|r| i64::from(r.status >= 400)), "{ctx}");
                        assert_eq!(g["input_tokens"], sum(&|r| u(r.input_tokens)), "{ctx}");
                        assert_eq!(g["output_tokens"], sum(&|r| u(r.output_tokens)), "{ctx}");
                        assert_eq!(
                            g["cached_input_tokens"],
                            sum(&|r| u(r.cached_input_tokens)),
                            "{ctx}"
                        );
                        assert_eq!(
                            g["cost_micro_usd"],
                            sum(&|r| r.cost_micro_usd.unwrap_or(0)),
                            "{ctx}"
                        );
                        assert_eq!(
                            g["unpriced_requests"],
                            sum(&|r| i64::from(
                                r.cost_micro_usd.is_none() && u(r.input_tokens) > 0
                            )),
                            "{ctx}"
                        );
                        assert_eq!(
                            g["cache_hits"],
                            sum(&|r| i64::from(r.cache.as_deref() == Some("hit"))),
                            "{ctx}"
                        );
                        assert_eq!(g["streamed"], sum(&|r| i64::from(r.streamed)), "{ctx}");
                        assert_eq!(g["retries"], sum(&|r| i64::from(r.attempts) - 1), "{ctx}");
                        assert_eq!(
                            g["fallbacks"],
                            sum(&|r| i64::from(r.fallback_reason.is_some())),
                            "{ctx}"
                        );
                        assert_eq!(
                            g["feedback_count"],
                            sum(&|r| i64::from(scores.contains_key(&r.request_id))),
                            "{ctx}"
                        );
                        for (field, values, p) in [
                            (
                                "p50_latency_ms",
                                rs.iter().map(|r| r.latency_us).collect::<Vec<_>>(),
                                50.0,
                            ),
                            (
                                "p99_latency_ms",
                                rs.iter().map(|r| r.latency_us).collect(),
                                99.0,
                            ),
                            (
                                "p95_ttft_ms",
                                rs.iter().filter_map(|r| r.ttft_us).collect(),
                                95.0,
                            ),
                        ] {
                            match (g[field].as_f64(), exact_pct(values, p)) {
                                (None, None) => {}
                                (Some(a), Some(b)) => assert!(
                                    (a - b).abs()
                                        <= b * super::super::sketch::RELATIVE_ACCURACY + 0.001,
                                    "{ctx} {field}: {a} vs exact {b}"
                                ),
                                other => panic!("{ctx} {field}: {other:?}"),
                            }
                        }
                    }
                }
                if round == "half rolled" {
                    roll(&store, t0 + 10 * D).await.unwrap();
                    continue;
                }
                let n = if round == "rolled" { 40 } else { 1_000_000 };
                compact(&store, t0 + 10 * D, n).await.unwrap();
            }
            // Compaction leaves one segment per bucket (a segment's groups are distinct).
            let dup: i64 = on_pool!(store.pool(), |p| {
                sqlx::query_scalar(
                    "SELECT COUNT(*) FROM (SELECT cuboid, res, bucket_ms FROM usage_segments \
                     GROUP BY cuboid, res, bucket_ms HAVING COUNT(*) > 1) d",
                )
                .fetch_one(p)
                .await
                .unwrap()
            });
            assert_eq!(dup, 0, "{e}");

            // Retention: raw records before the cutoff go (and only they); the rollups keep
            // answering for them until their own retention.
            let cutoff = t0 + D + 12_345;
            let before = rows.iter().filter(|r| r.ts_ms < cutoff).count() as u64;
            let partitions = |store: Store| async move {
                match store.pool() {
                    super::super::db::Pool::Postgres(p) => sqlx::query_scalar::<_, String>(
                        "SELECT c.relname::text FROM pg_inherits i \
                         JOIN pg_class c ON c.oid = i.inhrelid \
                         JOIN pg_class t ON t.oid = i.inhparent \
                         WHERE t.relname = 'usage_rows' \
                         AND t.relnamespace = to_regnamespace(current_schema()) ORDER BY 1",
                    )
                    .fetch_all(p)
                    .await
                    .unwrap(),
                    super::super::db::Pool::Sqlite(_) => Vec::new(),
                }
            };
            let day = |t: i64| {
                let (y, m, d) = crate::policy::clock::civil_from_days(t.div_euclid(D));
                format!("usage_records_d{y:04}{m:02}{d:02}")
            };
            if store.pool().is_postgres() {
                // The writer made each day's partition; nothing went to the default one.
                let mut want: Vec<String> = (0..3).map(|i| day(t0 + i * D)).collect();
                want.push("usage_records_default".into());
                assert_eq!(partitions(store.clone()).await, want, "{e}");
            }
            assert_eq!(store.purge_usage(cutoff, 100).await.unwrap(), before, "{e}");
            assert_eq!(
                store.usage_count().await.unwrap(),
                3000 - before as i64,
                "{e}"
            );
            if store.pool().is_postgres() {
                // The first day went as a partition; the part day before the cutoff in chunks.
                let left = partitions(store.clone()).await;
                assert!(!left.contains(&day(t0)), "{e}: {left:?}");
                assert!(left.contains(&day(t0 + D)), "{e}: {left:?}");
            }
            let total = aggregate(&store, &Filter::default(), &[], None, kept)
                .await
                .unwrap()
                .0;
            assert_eq!(total[0]["requests"], 3000, "{e}");
            // Minute rollups before the cutoff go; hour and day rows stay.
            let gone = purge(&store, cutoff, t0, 100).await.unwrap();
            assert!(gone > 0, "{e}");
            let left: i64 = on_pool!(store.pool(), |p| sqlx::query_scalar(
                "SELECT COUNT(*) FROM usage_segments WHERE res = 1 AND bucket_ms < $1"
            )
            .bind(cutoff)
            .fetch_one(p)
            .await
            .unwrap());
            assert_eq!(left, 0, "{e}");
            let total = aggregate(
                &store,
                &Filter::default(),
                &[],
                None,
                Kept {
                    minutes_from_ms: cutoff,
                },
            )
            .await
            .unwrap()
            .0;
            assert_eq!(
                total[0]["requests"], 3000,
                "{e}: hour and day rollups still count all"
            );
            // Everything before t0 + 2 days, whatever its resolution.
            purge(&store, t0 + 2 * D, t0 + 2 * D, 100).await.unwrap();
            let total = aggregate(&store, &Filter::default(), &[], None, kept)
                .await
                .unwrap()
                .0;
            let after = rows.iter().filter(|r| r.ts_ms >= t0 + 2 * D).count();
            assert_eq!(total[0]["requests"], after as i64, "{e}");
        }
    }
}
