//! The usage records' repeated texts, stored once: each record references one `usage_dims`
//! row holding its surface, principal, model, provider, deployment, error class, key prefix,
//! team, user, tags, catalog version, route and fallback reasons and cache outcome (a
//! "junk dimension": a few thousand distinct combinations serve millions of records). The
//! records themselves live in `usage_rows`; the `usage_records` view joins the two back, so
//! every reader sees whole records.

use super::UsageRow;
use std::collections::HashMap;
use std::fmt::Write as _;

/// The `usage_dims` columns besides `id` and `dkey`, in [`values`] order.
pub(crate) const FIELDS: [&str; 14] = [
    "surface",
    "principal",
    "requested_model",
    "provider",
    "deployment_model",
    "error_class",
    "key_prefix",
    "team",
    "user_name",
    "tags",
    "catalog_version",
    "route_reason",
    "fallback_reason",
    "cache",
];

/// A record's [`FIELDS`].
pub(crate) fn values(r: &UsageRow) -> [Option<&str>; 14] {
    [
        Some(r.surface.as_str()),
        Some(r.principal.as_str()),
        Some(r.requested_model.as_str()),
        r.provider.as_deref(),
        r.deployment_model.as_deref(),
        r.error_class.as_deref(),
        r.key_prefix.as_deref(),
        r.team.as_deref(),
        r.user.as_deref(),
        r.tags.as_deref(),
        r.catalog_version.as_deref(),
        r.route_reason.as_deref(),
        r.fallback_reason.as_deref(),
        r.cache.as_deref(),
    ]
}

/// The unique key of a combination (written into `out`): each field as `<chars>:<text>`, or
/// `-` when absent. Length-prefixed, so no text (a client's tags included) can make two
/// combinations share a key and borrow another's row. [`dkey_sql`] computes the same in SQL.
pub(crate) fn dkey(r: &UsageRow, out: &mut String) {
    out.clear();
    for v in values(r) {
        match v {
            Some(t) => {
                let _ = write!(out, "{}:{t}", t.chars().count());
            }
            None => out.push('-'),
        }
    }
}

/// [`dkey`] as an SQL expression over the columns of `table` (both engines: `length` counts
/// characters on each).
pub(crate) fn dkey_sql(table: &str) -> String {
    FIELDS
        .iter()
        .map(|f| format!("COALESCE(length({table}.{f}) || ':' || {table}.{f}, '-')"))
        .collect::<Vec<_>>()
        .join(" || ")
}

/// The `usage_records` view: every record with its texts, in the column order the table had.
pub(crate) fn view_sql() -> String {
    let cols = [
        "r.rowid",
        "r.request_id",
        "r.ts_ms",
        "d.surface",
        "d.principal",
        "d.requested_model",
        "d.provider",
        "d.deployment_model",
        "r.status",
        "d.error_class",
        "r.streamed",
        "r.input_tokens",
        "r.output_tokens",
        "r.cached_input_tokens",
        "r.reasoning_tokens",
        "r.latency_us",
        "r.ttft_us",
        "r.overhead_us",
        "r.attempts",
        "r.policy_hits",
        "r.key_id",
        "d.key_prefix",
        "d.team",
        "d.user_name",
        "d.tags",
        "r.cost_micro_usd",
        "d.catalog_version",
        "r.cache_write_tokens",
        "d.route_reason",
        "d.fallback_reason",
        "r.attempt_log",
        "d.cache",
        "r.cost_saved_micro_usd",
        "r.request_hash",
    ]
    .iter()
    .map(|c| format!("{c} AS {}", &c[2..]))
    .collect::<Vec<_>>()
    .join(", ");
    format!(
        "CREATE VIEW usage_records AS SELECT {cols} FROM usage_rows r \
         JOIN usage_dims d ON d.id = r.dims;"
    )
}

/// The columns `usage_rows` keeps for itself (the rest are in `usage_dims`), in the order
/// the writer binds them.
pub(crate) const ROW_FIELDS: &str = "request_id, ts_ms, dims, status, streamed, input_tokens, \
     output_tokens, cached_input_tokens, reasoning_tokens, latency_us, ttft_us, overhead_us, \
     attempts, policy_hits, key_id, cost_micro_usd, cache_write_tokens, attempt_log, \
     cost_saved_micro_usd, request_hash";

/// SQLite's step 14: the records are copied into `usage_rows` (rowids kept) with their
/// texts moved into `usage_dims`, and `usage_records` becomes the view.
pub(crate) fn sqlite_migration() -> String {
    let fields = FIELDS.join(", ");
    let d = dims_table("INTEGER PRIMARY KEY");
    let key = dkey_sql("u");
    let row_fields = ROW_FIELDS.replace("dims, ", "");
    let view = view_sql();
    format!(
        "{d}
INSERT INTO usage_dims (dkey, {fields}) SELECT DISTINCT {key}, {fields} FROM usage_records u;
CREATE TABLE usage_rows (
    rowid INTEGER PRIMARY KEY,
    request_id TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    dims INTEGER NOT NULL,
    status INTEGER NOT NULL,
    streamed INTEGER NOT NULL,
    input_tokens INTEGER,
    output_tokens INTEGER,
    cached_input_tokens INTEGER,
    reasoning_tokens INTEGER,
    latency_us INTEGER NOT NULL,
    ttft_us INTEGER,
    overhead_us INTEGER,
    attempts INTEGER NOT NULL,
    policy_hits TEXT,
    key_id TEXT,
    cost_micro_usd INTEGER,
    cache_write_tokens INTEGER,
    attempt_log TEXT,
    cost_saved_micro_usd INTEGER,
    request_hash INTEGER
);
INSERT INTO usage_rows (rowid, dims, {row_fields})
    SELECT u.rowid, d.id, {u_fields} FROM usage_records u JOIN usage_dims d ON d.dkey = {key}
    ORDER BY u.rowid;
DROP TABLE usage_records;
CREATE INDEX usage_rows_ts ON usage_rows (ts_ms);
CREATE INDEX usage_rows_request ON usage_rows (request_id);
CREATE INDEX usage_rows_key ON usage_rows (key_id, ts_ms);
{view}
",
        u_fields = prefixed("u", &row_fields),
    )
}

/// PostgreSQL's step 6: the same, in place (the partitioned table keeps its partitions and
/// indexes and is renamed `usage_rows`; dropped columns cost nothing until rows are
/// rewritten).
pub(crate) fn postgres_migration() -> String {
    let fields = FIELDS.join(", ");
    let d = dims_table("BIGSERIAL PRIMARY KEY");
    let key = dkey_sql("u");
    let drops = FIELDS
        .iter()
        .map(|f| format!("DROP COLUMN {f}"))
        .collect::<Vec<_>>()
        .join(", ");
    let view = view_sql();
    format!(
        "{d}
INSERT INTO usage_dims (dkey, {fields}) SELECT DISTINCT {key}, {fields} FROM usage_records u;
ALTER TABLE usage_records ADD COLUMN dims BIGINT;
UPDATE usage_records u SET dims = d.id FROM usage_dims d WHERE d.dkey = {key};
ALTER TABLE usage_records ALTER COLUMN dims SET NOT NULL;
ALTER TABLE usage_records {drops};
ALTER TABLE usage_records RENAME TO usage_rows;
{view}
"
    )
}

fn dims_table(id: &str) -> String {
    format!(
        "CREATE TABLE usage_dims (
    id {id},
    dkey TEXT NOT NULL UNIQUE,
    surface TEXT NOT NULL,
    principal TEXT NOT NULL,
    requested_model TEXT NOT NULL,
    provider TEXT,
    deployment_model TEXT,
    error_class TEXT,
    key_prefix TEXT,
    team TEXT,
    user_name TEXT,
    tags TEXT,
    catalog_version TEXT,
    route_reason TEXT,
    fallback_reason TEXT,
    cache TEXT
);"
    )
}

fn prefixed(table: &str, fields: &str) -> String {
    fields
        .split(',')
        .map(|f| format!("{table}.{}", f.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Combinations this process has stored (key -> id), so a batch normally resolves its
/// records' rows without a query. Rows are never deleted, so an id stays valid; the map is
/// cleared when it grows past `CACHE_MAX` entries.
#[derive(Debug, Default)]
pub(crate) struct Cache(std::sync::Mutex<HashMap<String, i64>>);

const CACHE_MAX: usize = 200_000;

/// Combinations per multi-row INSERT (15 parameters each: under SQLite's default bound of
/// 999 parameters).
pub(crate) const DIMS_PER_INSERT: usize = 60;

impl Cache {
    /// Each record's id where known (0 where not), and the records' unknown keys, sorted
    /// (writers insert them in one order, so two PostgreSQL writers cannot deadlock),
    /// with a record that has each.
    pub(crate) fn lookup<'r>(
        &self,
        rows: &[&'r UsageRow],
    ) -> (Vec<i64>, Vec<(String, &'r UsageRow)>) {
        let mut ids = vec![0; rows.len()];
        let mut missing = std::collections::BTreeMap::new();
        let mut key = String::with_capacity(160);
        let map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (i, r) in rows.iter().enumerate() {
            dkey(r, &mut key);
            match map.get(key.as_str()) {
                Some(&id) => ids[i] = id,
                None => {
                    missing.entry(key.clone()).or_insert(*r);
                }
            }
        }
        (ids, missing.into_iter().collect())
    }

    /// Adds what a committed transaction stored or found.
    pub(crate) fn remember(&self, found: HashMap<String, i64>) {
        if found.is_empty() {
            return;
        }
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() + found.len() > CACHE_MAX {
            map.clear();
        }
        map.extend(found);
    }
}

/// Resolves every record of `$rows` (`&[&UsageRow]`) to its `usage_dims` id inside the
/// transaction `$tx`, given what [`Cache::lookup`] found (looked up before the transaction:
/// on SQLite it holds the write lock), inserting the combinations not stored yet; evaluates
/// to `(ids, found)`,
/// `found` being for [`Cache::remember`] once the transaction has committed.
macro_rules! resolve {
    ($tx:ident, $rows:expr, $looked_up:expr) => {{
        use $crate::store::dims::{dkey, values, DIMS_PER_INSERT, FIELDS};
        let rows: &[&$crate::store::UsageRow] = $rows;
        let (mut ids, missing): (Vec<i64>, Vec<(String, &$crate::store::UsageRow)>) = $looked_up;
        let mut found = std::collections::HashMap::new();
        for chunk in missing.chunks(DIMS_PER_INSERT) {
            let mut q = sqlx::QueryBuilder::new(format!(
                "INSERT INTO usage_dims (dkey, {}) ",
                FIELDS.join(", ")
            ));
            q.push_values(chunk, |mut b, (k, r)| {
                b.push_bind(k.as_str());
                for v in values(r) {
                    b.push_bind(v);
                }
            });
            q.push(" ON CONFLICT (dkey) DO NOTHING");
            q.build().execute(&mut *$tx).await?;
            let mut q = sqlx::QueryBuilder::new("SELECT dkey, id FROM usage_dims WHERE dkey IN (");
            let mut keys = q.separated(", ");
            for (k, _) in chunk {
                keys.push_bind(k.as_str());
            }
            q.push(")");
            let got: Vec<(String, i64)> = q.build_query_as().fetch_all(&mut *$tx).await?;
            found.extend(got);
        }
        if !missing.is_empty() {
            let mut key = String::new();
            for (i, r) in rows.iter().enumerate() {
                if ids[i] == 0 {
                    dkey(r, &mut key);
                    // Inserted or found just now, in this transaction.
                    ids[i] = found
                        .get(key.as_str())
                        .copied()
                        .ok_or($crate::store::StoreError::Db(sqlx::Error::RowNotFound))?;
                }
            }
        }
        (ids, found)
    }};
}
pub(crate) use resolve;

#[cfg(test)]
mod tests {
    use super::*;

    fn row(tags: Option<&str>, team: Option<&str>) -> UsageRow {
        UsageRow {
            surface: "openai.chat".into(),
            principal: "key:a".into(),
            requested_model: "m".into(),
            tags: tags.map(str::to_string),
            team: team.map(str::to_string),
            ..UsageRow::default()
        }
    }

    #[test]
    fn keys_tell_every_combination_apart() {
        let k = |r: &UsageRow| {
            let mut s = String::new();
            dkey(r, &mut s);
            s
        };
        // A tag that spells the next field cannot pose as another combination.
        let a = row(Some("x"), None);
        let b = row(Some("x-"), None);
        let c = row(Some("x"), Some("-"));
        let d = row(None, Some("x"));
        let keys = [k(&a), k(&b), k(&c), k(&d)];
        for i in 0..keys.len() {
            for j in 0..i {
                assert_ne!(keys[i], keys[j], "{i} and {j}");
            }
        }
        assert_eq!(k(&a), k(&a.clone()));
        // Characters, not bytes, as SQL's length() counts.
        let e = row(Some("é"), None);
        assert!(k(&e).contains("1:é"), "{}", k(&e));
    }
}
