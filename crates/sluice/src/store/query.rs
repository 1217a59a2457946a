//! Reading usage records back: filters, group-by aggregation (sums, error and fallback
//! counts, latency / TTFT percentiles, tokens per second) and the paged request log.
//!
//! Aggregation reads the rollups (`store::rollup`); the request log pages raw records on
//! the `(ts_ms, rowid)` order. The same SQL runs on SQLite and PostgreSQL.

use super::db::{on_pool, Store};
use super::StoreError;
use serde_json::{json, Map, Value};
use sqlx::Row;

/// A dimension to filter or group by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim {
    Key,
    User,
    Team,
    Model,
    Provider,
    Deployment,
    Status,
    Surface,
    ErrorClass,
    /// The response cache's outcome (`hit`, `semantic-hit`, `miss`, `bypass`).
    Cache,
}

impl Dim {
    pub const ALL: &'static [Dim] = &[
        Dim::Key,
        Dim::User,
        Dim::Team,
        Dim::Model,
        Dim::Provider,
        Dim::Deployment,
        Dim::Status,
        Dim::Surface,
        Dim::ErrorClass,
        Dim::Cache,
    ];

    /// The position in [`Dim::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn parse(s: &str) -> Option<Dim> {
        Some(match s {
            "key" | "key_id" => Dim::Key,
            "user" => Dim::User,
            "team" => Dim::Team,
            "model" => Dim::Model,
            "provider" => Dim::Provider,
            "deployment" | "deployment_model" => Dim::Deployment,
            "status" => Dim::Status,
            "surface" => Dim::Surface,
            "error" | "error_class" => Dim::ErrorClass,
            "cache" => Dim::Cache,
            _ => return None,
        })
    }

    /// The name in API output.
    pub fn name(self) -> &'static str {
        match self {
            Dim::Key => "key",
            Dim::User => "user",
            Dim::Team => "team",
            Dim::Model => "model",
            Dim::Provider => "provider",
            Dim::Deployment => "deployment",
            Dim::Status => "status",
            Dim::Surface => "surface",
            Dim::ErrorClass => "error_class",
            Dim::Cache => "cache",
        }
    }

    /// The column, in the usage records and in the rollups.
    pub(crate) fn column(self) -> &'static str {
        match self {
            Dim::Key => "key_id",
            Dim::User => "user_name",
            Dim::Team => "team",
            Dim::Model => "requested_model",
            Dim::Provider => "provider",
            Dim::Deployment => "deployment_model",
            Dim::Status => "status",
            Dim::Surface => "surface",
            Dim::ErrorClass => "error_class",
            Dim::Cache => "cache",
        }
    }
}

/// Calendar buckets, in UTC; weeks start on Monday.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Hour,
    Day,
    Week,
    Month,
}

impl Bucket {
    pub fn parse(s: &str) -> Option<Bucket> {
        Some(match s {
            "hour" => Bucket::Hour,
            "day" => Bucket::Day,
            "week" => Bucket::Week,
            "month" => Bucket::Month,
            _ => return None,
        })
    }

    /// The start of the bucket holding `ts_ms`, in unix ms.
    pub fn start(self, ts_ms: i64) -> i64 {
        const H: i64 = 3_600_000;
        const D: i64 = 86_400_000;
        match self {
            Bucket::Hour => ts_ms.div_euclid(H) * H,
            Bucket::Day => ts_ms.div_euclid(D) * D,
            // 1970-01-01 was a Thursday: shift so that weeks start on Monday.
            Bucket::Week => (ts_ms + 3 * D).div_euclid(7 * D) * 7 * D - 3 * D,
            Bucket::Month => {
                let (y, m, _) = crate::policy::clock::civil_from_days(ts_ms.div_euclid(D));
                crate::policy::clock::days_from_civil(y, m, 1) * D
            }
        }
    }
}

/// Which records: every present field must match.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    /// Exact matches on dimensions.
    pub eq: Vec<(Dim, String)>,
    /// `ok` (< 400), `error` (>= 400), or nothing.
    pub status_class: Option<bool>,
    /// Only records with compliance content (prompt and answer) stored.
    pub with_content: bool,
    /// Only the records of this request id.
    pub request_id: Option<String>,
}

impl Filter {
    /// The time bounds, on `column`.
    pub(crate) fn push_time<'a, DB: sqlx::Database>(
        &self,
        q: &mut sqlx::QueryBuilder<'a, DB>,
        column: &str,
    ) where
        i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    {
        if let Some(s) = self.since_ms {
            q.push(format_args!(" AND {column} >= ")).push_bind(s);
        }
        if let Some(u) = self.until_ms {
            q.push(format_args!(" AND {column} < ")).push_bind(u);
        }
    }

    pub(crate) fn push_where<'a, DB: sqlx::Database>(&self, q: &mut sqlx::QueryBuilder<'a, DB>)
    where
        i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
        String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    {
        q.push(" WHERE 1=1");
        self.push_time(q, "ts_ms");
        for (dim, v) in &self.eq {
            if *dim == Dim::Key {
                // No index on the records' key (store::key_rows).
                super::key_rows::push_key(q, v, self);
                continue;
            }
            q.push(format_args!(" AND {} = ", dim.column()));
            if *dim == Dim::Status {
                q.push_bind(v.parse::<i64>().unwrap_or(-1));
            } else {
                q.push_bind(v.clone());
            }
        }
        if let Some(id) = &self.request_id {
            q.push(" AND usage_records.request_id = ")
                .push_bind(id.clone());
        }
        if self.with_content {
            q.push(
                " AND EXISTS (SELECT 1 FROM usage_content c WHERE c.request_id = \
                 usage_records.request_id AND c.ts_ms = usage_records.ts_ms)",
            );
        }
        match self.status_class {
            Some(true) => {
                q.push(" AND status < 400");
            }
            Some(false) => {
                q.push(" AND status >= 400");
            }
            None => {}
        }
    }
}

/// One dimension's value: the status code, or a text (`None`: the record had none).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyPart {
    Int(i64),
    Text(Option<String>),
}

fn ms(us: Option<f64>) -> Option<f64> {
    us.map(|v| (v / 1000.0 * 1000.0).round() / 1000.0)
}

/// Aggregates the records matching `filter`, one row per distinct `group` (+ `bucket`),
/// from the rollups (`store::rollup`): the work grows with the groups and buckets in the
/// range, not with the records. Percentiles are within the sketch's 1 % relative error.
pub async fn aggregate(
    store: &Store,
    filter: &Filter,
    group: &[Dim],
    bucket: Option<Bucket>,
    kept: super::rollup::Kept,
) -> Result<(Vec<Value>, super::rollup::Source), StoreError> {
    use super::rollup::Res;
    let coarsest = if bucket == Some(Bucket::Hour) {
        Res::Hour
    } else {
        Res::Day
    };
    let (groups, source) =
        super::rollup::read(store, filter, group, bucket, coarsest, kept).await?;
    let rows = groups
        .into_iter()
        .filter(|(_, a)| a.requests > 0)
        .map(|((b, key), a)| {
            let mut row = Map::new();
            if bucket.is_some() {
                row.insert(
                    "bucket".into(),
                    json!(crate::policy::governance::rfc3339(b)),
                );
            }
            for (d, v) in group.iter().zip(key) {
                let v = match v {
                    KeyPart::Int(n) => json!(n),
                    KeyPart::Text(t) => json!(t),
                };
                row.insert(d.name().into(), v);
            }
            let n = a.requests.max(1) as f64;
            let gen_secs = a.gen_us as f64 / 1e6;
            // Straight into the row (a `json!` object then merged would build every field
            // twice: thousands of groups per query).
            let mut put = |k: &str, v: Value| {
                row.insert(k.to_string(), v);
            };
            put("requests", json!(a.requests));
            put("errors", json!(a.errors));
            put("error_rate", json!(a.errors as f64 / n));
            put("input_tokens", json!(a.input));
            put("output_tokens", json!(a.output));
            put("cached_input_tokens", json!(a.cached));
            put("cache_write_tokens", json!(a.cache_write));
            put("reasoning_tokens", json!(a.reasoning));
            put("cost_micro_usd", json!(a.cost));
            put("cost_usd", json!(a.cost as f64 / 1e6));
            put("unpriced_requests", json!(a.unpriced));
            put("cache_hits", json!(a.cache_hits));
            put("cache_hit_rate", json!(a.cache_hits as f64 / n));
            put("cost_saved_micro_usd", json!(a.cost_saved));
            put("cost_saved_usd", json!(a.cost_saved as f64 / 1e6));
            put("streamed", json!(a.streamed));
            put("retries", json!((a.attempts - a.requests).max(0)));
            put("fallbacks", json!(a.fallbacks));
            put("fallback_rate", json!(a.fallbacks as f64 / n));
            put("p50_latency_ms", json!(ms(a.latency.percentile(50.0))));
            put("p95_latency_ms", json!(ms(a.latency.percentile(95.0))));
            put("p99_latency_ms", json!(ms(a.latency.percentile(99.0))));
            put("p50_ttft_ms", json!(ms(a.ttft.percentile(50.0))));
            put("p95_ttft_ms", json!(ms(a.ttft.percentile(95.0))));
            put(
                "output_tokens_per_second",
                json!((gen_secs > 0.0)
                    .then(|| (a.gen_tokens as f64 / gen_secs * 10.0).round() / 10.0)),
            );
            put("feedback_count", json!(a.scored));
            put(
                "mean_score",
                json!((a.scored > 0)
                    .then(|| (a.score_sum / a.scored as f64 * 1000.0).round() / 1000.0)),
            );
            Value::Object(row)
        })
        .collect();
    Ok((rows, source))
}

/// A position in the request log (newest first): records before this `(ts_ms, rowid)`.
#[derive(Debug, Clone, Copy)]
pub struct Cursor {
    pub ts_ms: i64,
    pub rowid: i64,
}

impl Cursor {
    pub fn parse(s: &str) -> Option<Cursor> {
        let (a, b) = s.split_once('_')?;
        Some(Cursor {
            ts_ms: a.parse().ok()?,
            rowid: b.parse().ok()?,
        })
    }

    pub fn encode(self) -> String {
        format!("{}_{}", self.ts_ms, self.rowid)
    }
}

const LOG_COLUMNS: &[&str] = &[
    "request_id",
    "ts_ms",
    "surface",
    "principal",
    "requested_model",
    "provider",
    "deployment_model",
    "status",
    "error_class",
    "streamed",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cost_micro_usd",
    "catalog_version",
    "latency_us",
    "ttft_us",
    "overhead_us",
    "attempts",
    "route_reason",
    "fallback_reason",
    "policy_hits",
    "attempt_log",
    "cache",
    "cost_saved_micro_usd",
    "key_id",
    "key_prefix",
    "team",
    "user_name",
    "tags",
    "request_hash",
];

/// One page of the request log, newest first, and the cursor for the next page.
pub async fn requests(
    store: &Store,
    filter: &Filter,
    before: Option<Cursor>,
    limit: u32,
    with_content: bool,
) -> Result<(Vec<Value>, Option<Cursor>), StoreError> {
    let key = filter
        .eq
        .iter()
        .find(|(d, _)| *d == Dim::Key)
        .map(|(_, v)| v.clone());
    let (out, next) = on_pool!(store.pool(), |p| {
        let mut q = sqlx::QueryBuilder::new("");
        let columns = |q: &mut sqlx::QueryBuilder<'_, _>, rowid: &str| {
            q.push("SELECT ").push(rowid).push(" AS rowid");
            for c in LOG_COLUMNS {
                q.push(", ").push(*c);
            }
        };
        let cursor = |q: &mut sqlx::QueryBuilder<'_, _>, columns: &str| {
            if let Some(c) = before {
                // A row-value comparison: both engines walk the (ts_ms, rowid) index from it.
                q.push(format_args!(" AND ({columns}) < ("))
                    .push_bind(c.ts_ms)
                    .push(", ")
                    .push_bind(c.rowid)
                    .push(")");
            }
        };
        let fetch = i64::from(limit) + 1;
        let pg = store.pool().is_postgres();
        if let Some(key) = key {
            // A key's records: those behind the rollup horizon newest first along their
            // postings (store::key_rows), those after it along the time index.
            let mut rest = filter.clone();
            rest.eq.retain(|(d, _)| *d != Dim::Key);
            q.push("SELECT * FROM (");
            columns(&mut q, "usage_records.rowid");
            q.push(if pg {
                // One lookup per posting, newest first, until the page is full: the fenced
                // (OFFSET 0) lateral subquery keeps PostgreSQL from planning a join of the
                // key's postings with every partition (150 ms a page at 1M records).
                " FROM usage_key_rows CROSS JOIN LATERAL (SELECT * FROM usage_records \
                 WHERE usage_records.ts_ms = usage_key_rows.pk_ms \
                 AND usage_records.rowid = usage_key_rows.pk_row OFFSET 0) usage_records"
            } else {
                " FROM usage_key_rows JOIN usage_records ON usage_records.ts_ms = \
                 usage_key_rows.pk_ms AND usage_records.rowid = usage_key_rows.pk_row"
            });
            rest.push_where(&mut q);
            q.push(" AND pk_key = ").push_bind(key.clone());
            rest.push_time(&mut q, "pk_ms");
            cursor(&mut q, "pk_ms, pk_row");
            q.push(" ORDER BY pk_ms DESC, pk_row DESC LIMIT ")
                .push_bind(fetch)
                .push(") rolled UNION ALL SELECT * FROM (");
            columns(&mut q, "rowid");
            q.push(" FROM usage_records");
            rest.push_where(&mut q);
            q.push(" AND key_id = ")
                .push_bind(key)
                .push(" AND ts_ms >= (SELECT horizon FROM usage_rollup_state)");
            cursor(&mut q, "ts_ms, rowid");
            q.push(" ORDER BY ts_ms DESC, rowid DESC LIMIT ")
                .push_bind(fetch)
                .push(") pending");
        } else {
            columns(&mut q, "rowid");
            q.push(" FROM usage_records");
            filter.push_where(&mut q);
            cursor(&mut q, "ts_ms, rowid");
        }
        q.push(" ORDER BY ts_ms DESC, rowid DESC LIMIT ")
            .push_bind(fetch);
        let rows = q.build().fetch_all(p).await?;
        let mut out = Vec::with_capacity(rows.len());
        let mut last = None;
        for r in rows.iter().take(limit as usize) {
            let mut m = Map::new();
            for (i, c) in LOG_COLUMNS.iter().enumerate() {
                let v: Value = match *c {
                    "streamed" => json!(r.try_get::<bool, _>(i + 1)?),
                    "policy_hits" | "tags" | "attempt_log" => r
                        .try_get::<Option<String>, _>(i + 1)?
                        .and_then(|t| serde_json::from_str(&t).ok())
                        .unwrap_or(Value::Null),
                    _ => match r.try_get_raw(i + 1).map(|v| sqlx::ValueRef::is_null(&v)) {
                        Ok(true) => Value::Null,
                        _ => r
                            .try_get::<i64, _>(i + 1)
                            .map(Value::from)
                            .or_else(|_| r.try_get::<String, _>(i + 1).map(Value::from))?,
                    },
                };
                let name = if *c == "user_name" { "user" } else { c };
                m.insert(name.into(), v);
            }
            let ts: i64 = r.try_get("ts_ms")?;
            m.insert("time".into(), json!(crate::policy::governance::rfc3339(ts)));
            if let Some(c) = m.get("cost_micro_usd").and_then(Value::as_i64) {
                m.insert("cost_usd".into(), json!(c as f64 / 1e6));
            }
            last = Some(Cursor {
                ts_ms: ts,
                rowid: r.try_get(0)?,
            });
            out.push(Value::Object(m));
        }
        if with_content {
            for row in &mut out {
                let id = row["request_id"].as_str().unwrap_or_default().to_string();
                let ts = row["ts_ms"].as_i64().unwrap_or_default();
                let c = sqlx::query(
                    "SELECT prompt, response FROM usage_content WHERE request_id = $1 AND ts_ms = $2 LIMIT 1",
                )
                .bind(id)
                .bind(ts)
                .fetch_optional(p)
                .await?;
                if let (Some(c), Some(o)) = (c, row.as_object_mut()) {
                    o.insert("prompt".into(), json!(c.try_get::<String, _>(0)?));
                    o.insert("response".into(), json!(c.try_get::<String, _>(1)?));
                }
            }
        }
        (out, (rows.len() > limit as usize).then_some(last).flatten())
    });
    let mut out = out;
    let ids: Vec<String> = out
        .iter()
        .filter_map(|r| r["request_id"].as_str().map(str::to_string))
        .collect();
    let feedback = super::feedback::for_requests(store, &ids).await?;
    for row in &mut out {
        let f = row["request_id"].as_str().and_then(|id| feedback.get(id));
        row["feedback"] = f.map_or(Value::Null, |f| {
            json!({"score": f.score, "label": f.label, "comment": f.comment,
                   "time": crate::policy::governance::rfc3339(f.feedback_ms)})
        });
    }
    Ok((out, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_start_on_calendar_boundaries() {
        // 2026-11-26T15:42:10Z, a Thursday.
        let t = 1_795_707_730_000;
        let iso = |ms| crate::policy::governance::rfc3339(ms);
        assert_eq!(iso(t), "2026-11-26T15:42:10Z");
        assert_eq!(iso(Bucket::Hour.start(t)), "2026-11-26T15:00:00Z");
        assert_eq!(iso(Bucket::Day.start(t)), "2026-11-26T00:00:00Z");
        assert_eq!(iso(Bucket::Week.start(t)), "2026-11-23T00:00:00Z");
        assert_eq!(iso(Bucket::Month.start(t)), "2026-11-01T00:00:00Z");
    }

    /// The request ids of the first page (up to 10) of `filter`'s request log.
    #[allow(clippy::unwrap_used)]
    async fn ids(store: &Store, filter: &Filter) -> Vec<String> {
        let (page, _) = requests(store, filter, None, 10, false).await.unwrap();
        page.iter()
            .map(|r| r["request_id"].as_str().unwrap().to_string())
            .collect()
    }

    #[tokio::test]
    #[allow(clippy::unwrap_used)]
    async fn a_keys_records_are_found_on_both_sides_of_the_rollup_horizon() {
        use crate::store::{UsageRow, UsageStore};
        let row = |i: i64, key: &str| UsageRow {
            request_id: format!("r{i}"),
            ts_ms: 1000 + i,
            surface: "openai.chat".into(),
            principal: "p".into(),
            requested_model: if i % 3 == 0 { "a" } else { "b" }.into(),
            status: if i == 4 { 500 } else { 200 },
            latency_us: 1000,
            attempts: 1,
            key_id: Some(key.into()),
            ..Default::default()
        };
        for db in crate::store::testing::databases("key_rows").await {
            let store = Store::open(&db.url).await.unwrap();
            let e = db.engine;
            let rows: Vec<UsageRow> = (0..12)
                .map(|i| row(i, if i % 2 == 0 { "k1" } else { "k2" }))
                .collect();
            store.write_batch(&rows).await.unwrap();
            // Half rolled (postings for r0..r5); then a late k1 record behind the horizon,
            // posted by the writer.
            crate::store::rollup::roll(&store, 1006).await.unwrap();
            store
                .write_batch(&[row(3, "k1")].map(|mut r| {
                    r.request_id = "late".into();
                    r
                }))
                .await
                .unwrap();
            let k1 = Filter {
                eq: vec![(Dim::Key, "k1".into())],
                ..Filter::default()
            };
            let mut seen = Vec::new();
            let mut cursor = None;
            loop {
                let (page, next) = requests(&store, &k1, cursor, 2, false).await.unwrap();
                assert!(page.len() <= 2, "{e}");
                seen.extend(
                    page.iter()
                        .map(|r| r["request_id"].as_str().unwrap().to_string()),
                );
                match next {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            assert_eq!(seen, ["r10", "r8", "r6", "r4", "late", "r2", "r0"], "{e}");
            // With another filter, and a time range.
            let failed = Filter {
                status_class: Some(false),
                ..k1.clone()
            };
            assert_eq!(ids(&store, &failed).await, ["r4"], "{e}");
            let ranged = Filter {
                since_ms: Some(1003),
                until_ms: Some(1009),
                ..k1.clone()
            };
            assert_eq!(
                ids(&store, &ranged).await,
                ["r8", "r6", "r4", "late"],
                "{e}"
            );
            // A key by model is summed from the records: the same seven.
            let kept = crate::store::rollup::Kept { minutes_from_ms: 0 };
            let (g, source) = aggregate(&store, &k1, &[Dim::Key, Dim::Model], None, kept)
                .await
                .unwrap();
            assert_eq!(source, crate::store::rollup::Source::Records, "{e}");
            let n: i64 = g.iter().map(|r| r["requests"].as_i64().unwrap()).sum();
            assert_eq!(n, 7, "{e}: {g:?}");
            // Retention takes the postings with the records.
            store.purge_usage(1005, 2).await.unwrap();
            assert_eq!(ids(&store, &k1).await, ["r10", "r8", "r6"], "{e}");
            let left: i64 = crate::store::db::on_pool!(store.pool(), |p| sqlx::query_scalar(
                "SELECT COUNT(*) FROM usage_key_rows WHERE pk_ms < 1005"
            )
            .fetch_one(p)
            .await
            .unwrap());
            assert_eq!(left, 0, "{e}");
        }
    }

    #[tokio::test]
    #[allow(clippy::unwrap_used)]
    async fn aggregates_and_pages_the_same_on_every_engine() {
        use crate::store::{UsageRow, UsageStore};
        for db in crate::store::testing::databases("query_engines").await {
            let store = Store::open(&db.url).await.unwrap();
            let rows: Vec<UsageRow> = (0..5u16)
                .map(|i| UsageRow {
                    request_id: format!("r{i}"),
                    ts_ms: 1000 + i64::from(i),
                    surface: "openai.chat".into(),
                    principal: "p".into(),
                    requested_model: if i < 3 { "a" } else { "b" }.into(),
                    status: if i == 4 { 500 } else { 200 },
                    streamed: i % 2 == 0,
                    input_tokens: Some(10),
                    output_tokens: Some(u64::from(i)),
                    cost_micro_usd: Some(100),
                    latency_us: 1000 * (u64::from(i) + 1),
                    attempts: 1,
                    tags: Some(r#"{"app":"x"}"#.into()),
                    ..Default::default()
                })
                .collect();
            store.write_batch(&rows).await.unwrap();
            let e = db.engine;
            let kept = crate::store::rollup::Kept { minutes_from_ms: 0 };
            let g = aggregate(
                &store,
                &Filter::default(),
                &[Dim::Model, Dim::Status],
                None,
                kept,
            )
            .await
            .unwrap()
            .0;
            assert_eq!(g.len(), 3, "{e}: {g:?}");
            assert_eq!(
                (g[0]["model"].as_str(), g[0]["status"].as_i64()),
                (Some("a"), Some(200))
            );
            assert_eq!(g[0]["requests"], 3, "{e}");
            assert_eq!(g[0]["input_tokens"], 30, "{e}");
            assert_eq!(g[0]["cost_micro_usd"], 300, "{e}");
            assert_eq!(g[0]["streamed"], 2, "{e}");
            let p50 = g[0]["p50_latency_ms"].as_f64().unwrap();
            assert!((p50 - 2.0).abs() <= 0.02, "{e}: {p50}");
            assert_eq!(g[2]["errors"], 1, "{e}");
            // The request log, newest first, in pages of two.
            let all = Filter::default();
            let mut seen = Vec::new();
            let mut cursor = None;
            loop {
                let (page, next) = requests(&store, &all, cursor, 2, false).await.unwrap();
                seen.extend(
                    page.iter()
                        .map(|r| r["request_id"].as_str().unwrap().to_string()),
                );
                assert_eq!(page[0]["tags"]["app"], "x", "{e}");
                assert!(page[0]["streamed"].is_boolean(), "{e}");
                match next {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            assert_eq!(seen, ["r4", "r3", "r2", "r1", "r0"], "{e}");
            let failed = Filter {
                eq: vec![(Dim::Status, "500".into())],
                ..Filter::default()
            };
            let (page, _) = requests(&store, &failed, None, 10, false).await.unwrap();
            assert_eq!(page.len(), 1, "{e}");
            assert_eq!(page[0]["status"], 500, "{e}");
            assert_eq!(page[0]["provider"], Value::Null, "{e}");
        }
    }
}
