//! PostgreSQL day partitions of the raw usage records: `usage_records` (since step 6 the
//! table `usage_rows` under the `usage_records` view, store::dims) is partitioned by
//! `ts_ms`, one partition a UTC day (`usage_records_dYYYYMMDD`) plus a default partition for
//! records of days without one (those stored before partitioning, or a day whose partition
//! could not be created). Retention drops whole day partitions; what is left (the default
//! partition, a part day) is deleted in chunks. SQLite has no partitions.

use super::db::{Pool, Store};
use super::StoreError;
use sqlx::PgPool;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

const DAY: i64 = 86_400_000;

/// Migration (PostgreSQL step 5): the table becomes a partitioned one; what it held moves
/// into the default partition, the row ids carry on.
pub const MIGRATION: &str = r"
ALTER TABLE usage_records RENAME TO usage_records_flat;
ALTER TABLE usage_records_flat RENAME CONSTRAINT usage_records_pkey TO usage_records_flat_pkey;
ALTER INDEX usage_records_request RENAME TO usage_records_flat_request;
ALTER INDEX usage_records_key RENAME TO usage_records_flat_key;
ALTER INDEX usage_records_ts_rowid RENAME TO usage_records_flat_ts_rowid;
CREATE TABLE usage_records (LIKE usage_records_flat INCLUDING DEFAULTS) PARTITION BY RANGE (ts_ms);
ALTER SEQUENCE usage_records_rowid_seq OWNED BY usage_records.rowid;
CREATE INDEX usage_records_ts_rowid ON usage_records (ts_ms, rowid);
CREATE INDEX usage_records_request ON usage_records (request_id);
CREATE INDEX usage_records_key ON usage_records (key_id, ts_ms);
CREATE TABLE usage_records_default PARTITION OF usage_records DEFAULT;
INSERT INTO usage_records SELECT * FROM usage_records_flat;
DROP TABLE usage_records_flat;
";

/// The day partitions known to exist (created or seen by this process).
#[derive(Debug, Clone, Default)]
pub struct Known(Arc<Mutex<HashSet<i64>>>);

fn name(day_ms: i64) -> String {
    let (y, m, d) = crate::policy::clock::civil_from_days(day_ms.div_euclid(DAY));
    format!("usage_records_d{y:04}{m:02}{d:02}")
}

/// The day a partition's name stands for.
fn day_of(name: &str) -> Option<i64> {
    let digits = name.strip_prefix("usage_records_d")?;
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let y = digits[..4].parse().ok()?;
    let m = digits[4..6].parse().ok()?;
    let d = digits[6..].parse().ok()?;
    Some(crate::policy::clock::days_from_civil(y, m, d) * DAY)
}

/// Makes sure the days of `times` have their partitions (PostgreSQL; nothing on SQLite).
/// A partition that cannot be created (the default partition already holds records of that
/// day, or another replica raced us) is logged and skipped: records then go to the default
/// partition, which retention deletes in chunks.
pub async fn ensure(store: &Store, times: impl IntoIterator<Item = i64>) {
    let Pool::Postgres(p) = store.pool() else {
        return;
    };
    let known = store.partitions();
    let wanted: Vec<i64> = {
        let Ok(k) = known.0.lock() else { return };
        let mut days: Vec<i64> = times
            .into_iter()
            .map(|t| t.div_euclid(DAY) * DAY)
            .filter(|d| !k.contains(d))
            .collect();
        days.sort_unstable();
        days.dedup();
        days
    };
    for day in wanted {
        if let Err(e) = create(p, day).await {
            tracing::warn!(
                "usage records of {}: no day partition ({e}); they go to the default partition",
                crate::policy::governance::rfc3339(day)
            );
        }
        // Tried once per process either way: a failure would fail the same way again.
        if let Ok(mut k) = known.0.lock() {
            k.insert(day);
        }
    }
}

async fn create(p: &PgPool, day: i64) -> Result<(), sqlx::Error> {
    let sql = format!(
        "CREATE TABLE IF NOT EXISTS {} PARTITION OF usage_rows FOR VALUES FROM ({day}) TO ({})",
        name(day),
        day + DAY
    );
    sqlx::query(&sql).execute(p).await.map(|_| ())
}

/// Drops the day partitions that end at or before `before_ms`; returns how many records
/// they held.
pub async fn drop_before(store: &Store, before_ms: i64) -> Result<u64, StoreError> {
    let Pool::Postgres(p) = store.pool() else {
        return Ok(0);
    };
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         JOIN pg_class t ON t.oid = i.inhparent \
         WHERE t.relname = 'usage_rows' AND t.relnamespace = to_regnamespace(current_schema())",
    )
    .fetch_all(p)
    .await?;
    let mut total = 0u64;
    for n in names {
        let Some(day) = day_of(&n) else { continue };
        if day + DAY > before_ms {
            continue;
        }
        let rows: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {n}"))
            .fetch_one(p)
            .await?;
        sqlx::query(&format!("DROP TABLE {n}")).execute(p).await?;
        if let Ok(mut k) = store.partitions().0.lock() {
            k.remove(&day);
        }
        total += rows.unsigned_abs();
        tracing::info!(partition = %n, records = rows, "usage records partition past usage.retention dropped");
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_utc_days_both_ways() {
        let day = 20_429 * DAY; // 2025-12-07
        assert_eq!(name(day + 5), "usage_records_d20251207");
        assert_eq!(day_of("usage_records_d20251207"), Some(day));
        assert_eq!(day_of("usage_records_default"), None);
        assert_eq!(day_of("usage_records_d2025120"), None);
    }
}
