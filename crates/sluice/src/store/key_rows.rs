//! The raw records by key, kept by the roller: `usage_key_rows` holds `(key, time, row id)`
//! for every record before the rollup horizon, so a key's records are found without an index
//! on the records themselves.
//!
//! Why not an index: a `(key_id, ts_ms)` index takes each batch's records at as many places
//! as there are keys, so a 4,000-record transaction dirtied about as many index pages as it
//! had records, and the usage writer wrote 52k records/s with it and 130k without it
//! (bench/README.md). The roller adds a chunk's postings (tens of thousands of records) in
//! one sorted `INSERT ... SELECT`: the same pages, a tenth as often. Records after the horizon
//! (seconds of traffic) are found on the time index; a late record (behind the horizon when
//! written) gets its posting from the writer, in the same transaction.

use super::query::Filter;

/// PostgreSQL's step 7 and SQLite's step 15: the postings, filled for what is rolled already;
/// the records' key index goes.
pub(crate) fn migration(postgres: bool) -> String {
    let (int, without_rowid, index) = if postgres {
        ("BIGINT", "", "usage_records_key")
    } else {
        ("INTEGER", " WITHOUT ROWID", "usage_rows_key")
    };
    format!(
        "CREATE TABLE usage_key_rows (
    pk_key TEXT NOT NULL,
    pk_ms {int} NOT NULL,
    pk_row {int} NOT NULL,
    PRIMARY KEY (pk_key, pk_ms, pk_row)
){without_rowid};
CREATE INDEX usage_key_rows_ms ON usage_key_rows (pk_ms);
INSERT INTO usage_key_rows (pk_key, pk_ms, pk_row)
    SELECT key_id, ts_ms, rowid FROM usage_rows
    WHERE key_id IS NOT NULL AND ts_ms < (SELECT horizon FROM usage_rollup_state);
DROP INDEX IF EXISTS {index};
"
    )
}

/// The postings of the records with these request ids behind the horizon `$h` (late records
/// just written), inside the transaction `$tx`.
macro_rules! post_late {
    ($tx:ident, $ids:expr, $h:expr) => {{
        let ids: &[&str] = $ids;
        for chunk in ids.chunks(500) {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO usage_key_rows (pk_key, pk_ms, pk_row) \
                 SELECT key_id, ts_ms, rowid FROM usage_rows WHERE key_id IS NOT NULL AND ts_ms < ",
            );
            q.push_bind($h).push(" AND request_id IN (");
            let mut list = q.separated(", ");
            for id in chunk {
                list.push_bind(*id);
            }
            q.push(") ON CONFLICT DO NOTHING");
            q.build().execute(&mut *$tx).await?;
        }
    }};
}
pub(crate) use post_late;

/// The first key with postings: one probe of the primary key (its leading column).
pub(crate) const FIRST_KEY: &str = "SELECT MIN(pk_key) FROM usage_key_rows";

/// The first key with postings after `$1`: one probe of the primary key.
pub(crate) const NEXT_KEY: &str = "SELECT MIN(pk_key) FROM usage_key_rows WHERE pk_key > $1";

/// Deletes key `$1`'s postings before `$2`, at most `$3` per statement. Retention walks the
/// keys ([`NEXT_KEY`]): a time index on the postings cost the roller a second B-tree insert
/// per record and the disk 24 bytes a record (bench/README.md).
pub(crate) const PURGE: &str = "DELETE FROM usage_key_rows WHERE (pk_key, pk_ms, pk_row) IN \
     (SELECT pk_key, pk_ms, pk_row FROM usage_key_rows WHERE pk_key = $1 AND pk_ms < $2 \
     LIMIT $3)";

/// The condition on `usage_records` for "the key is `key`" (with `filter`'s time bounds):
/// the rows behind the horizon by their postings, those after it on the time index, as one
/// set of row ids, so that the planner looks the rows up instead of walking the time range
/// (a key's day at 10M records on SQLite: 37 ms walking the day, 3 ms looked up).
pub(crate) fn push_key<'a, DB: sqlx::Database>(
    q: &mut sqlx::QueryBuilder<'a, DB>,
    key: &str,
    filter: &Filter,
) where
    i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    // SQLite looks rows up by id; PostgreSQL's day partitions are indexed on (time, row id)
    // (measured: each engine walks the time range with the other's form).
    let (by, posted, pending) = if DB::NAME == "PostgreSQL" {
        ("(ts_ms, rowid)", "pk_ms, pk_row", "ts_ms, rowid")
    } else {
        ("rowid", "pk_row", "rowid")
    };
    q.push(format_args!(
        " AND {by} IN (SELECT {posted} FROM usage_key_rows WHERE pk_key = "
    ))
    .push_bind(key.to_string());
    filter.push_time(q, "pk_ms");
    q.push(format_args!(
        " UNION ALL SELECT {pending} FROM usage_rows WHERE key_id = "
    ))
    .push_bind(key.to_string())
    .push(" AND ts_ms >= (SELECT horizon FROM usage_rollup_state)");
    filter.push_time(q, "ts_ms");
    q.push(")");
}
