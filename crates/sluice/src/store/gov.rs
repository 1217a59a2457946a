//! Governance records (teams, users, virtual keys) and the store trait that keeps them, on
//! SQLite or PostgreSQL (one implementation: `store::db`'s engine-neutral SQL).
//!
//! Records are stored whole as JSON next to the columns that need indexes or constraints, so
//! a field added later needs no migration. Every write bumps one change marker that the
//! principal cache polls.

use super::db::{on_pool, Store};
use super::StoreError;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::future::Future;

/// A department; keys of the team share its model list, limits and budget.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TeamRecord {
    pub name: String,
    #[serde(default)]
    pub parent: Option<String>,
    #[serde(default)]
    pub limits: Limits,
    /// Limits for one model (name or `*` pattern) within the team, over all its keys.
    #[serde(default)]
    pub model_limits: std::collections::BTreeMap<String, ModelLimits>,
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub created_ms: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelLimits {
    #[serde(default)]
    pub rpm: Option<u64>,
    #[serde(default)]
    pub tpm: Option<u64>,
    #[serde(default)]
    pub max_concurrency: Option<u64>,
}

/// A person (or service) owning keys; its limits and budget apply to all its keys together.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserRecord {
    pub name: String,
    #[serde(default)]
    pub team: Option<String>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub created_ms: i64,
}

/// Everything the principal cache is built from.
#[derive(Debug, Default)]
pub struct GovSnapshot {
    pub teams: Vec<TeamRecord>,
    pub users: Vec<UserRecord>,
    pub keys: Vec<KeyRecord>,
}

/// What a key, user or team may use; `None` means no limit from this level.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Allowed model names or `*` wildcards; `None` = every model.
    #[serde(default)]
    pub models: Option<Vec<String>>,
    #[serde(default)]
    pub rpm: Option<u64>,
    #[serde(default)]
    pub tpm: Option<u64>,
    #[serde(default)]
    pub max_concurrency: Option<u64>,
    #[serde(default)]
    pub budget_micro_usd: Option<i64>,
    /// `daily`, `weekly`, `monthly` (calendar, UTC) or `total`.
    #[serde(default)]
    pub budget_period: Option<String>,
}

/// A virtual key. The key itself is never stored: only its SHA-256 and a short prefix.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub id: String,
    /// Hex SHA-256 of the full key.
    pub hash: String,
    /// The first characters of the key, safe to show (`sk-sluice-1a2b3c4d`).
    pub prefix: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub team: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    /// `admin`, `team_admin`, `viewer`; `None` = inference only.
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub expires_at_ms: Option<i64>,
    pub created_ms: i64,
    #[serde(default)]
    pub revoked_ms: Option<i64>,
    /// After a rotation: the replaced key's hash, accepted until `previous_valid_until_ms`.
    #[serde(default)]
    pub previous_hash: Option<String>,
    #[serde(default)]
    pub previous_valid_until_ms: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum GovStoreError {
    #[error("{what} {name:?} already exists")]
    Conflict { what: &'static str, name: String },
    #[error("no {what} named {name:?}")]
    NotFound { what: &'static str, name: String },
    #[error("{what} {name:?} is still used by {by}")]
    InUse {
        what: &'static str,
        name: String,
        by: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for GovStoreError {
    fn from(e: sqlx::Error) -> Self {
        GovStoreError::Store(StoreError::Db(e))
    }
}

/// Teams and keys. Admin writes go here; the request path only reads the in-memory cache.
pub trait GovStore: Send + Sync + 'static {
    /// A number that changes on every write (cheap to poll).
    fn change_marker(&self) -> impl Future<Output = Result<i64, StoreError>> + Send;
    fn load_all(&self) -> impl Future<Output = Result<GovSnapshot, StoreError>> + Send;
    fn insert_user(&self, u: &UserRecord)
        -> impl Future<Output = Result<(), GovStoreError>> + Send;
    fn update_user(&self, u: &UserRecord)
        -> impl Future<Output = Result<(), GovStoreError>> + Send;
    fn delete_user(&self, name: &str) -> impl Future<Output = Result<(), GovStoreError>> + Send;
    fn insert_team(&self, t: &TeamRecord)
        -> impl Future<Output = Result<(), GovStoreError>> + Send;
    fn update_team(&self, t: &TeamRecord)
        -> impl Future<Output = Result<(), GovStoreError>> + Send;
    fn delete_team(&self, name: &str) -> impl Future<Output = Result<(), GovStoreError>> + Send;
    /// Inserts a key; its team (if any) must exist.
    fn insert_key(&self, k: &KeyRecord) -> impl Future<Output = Result<(), GovStoreError>> + Send;
    fn update_key(&self, k: &KeyRecord) -> impl Future<Output = Result<(), GovStoreError>> + Send;
    /// Sum of recorded cost since `since_ms` of each of `values` of a scope (keys, users or
    /// teams), in one read however many (values without records are left out).
    fn spend_since(
        &self,
        scope: SpendScope,
        values: &[String],
        since_ms: i64,
    ) -> impl Future<Output = Result<HashMap<String, i64>, StoreError>> + Send;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpendScope {
    Key,
    User,
    Team,
}

fn json<T: Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Migrate(format!("encoding a record: {e}")))
}

/// Runs `$body` in a write transaction `$tx` on `$store`, then bumps the change marker and
/// commits. Errors inside `$body` roll back (the transaction is dropped).
macro_rules! admin_write {
    ($store:expr, |$tx:ident| $body:block) => {{
        let pool = $store.pool();
        on_pool!(pool, |p| {
            let mut $tx = p.begin_with(pool.begin_write()).await?;
            $body
            sqlx::query("UPDATE gov_meta SET version = version + 1")
                .execute(&mut *$tx)
                .await?;
            $tx.commit().await?;
        });
        Ok(())
    }};
}

/// Fails with `NotFound` unless `$name` (an `Option<&String>`) is a row of `$table`.
macro_rules! require {
    ($tx:ident, $table:literal, $what:expr, $name:expr) => {
        if let Some(name) = $name {
            let n: i64 =
                sqlx::query_scalar(concat!("SELECT COUNT(*) FROM ", $table, " WHERE name = $1"))
                    .bind(name)
                    .fetch_one(&mut *$tx)
                    .await?;
            if n == 0 {
                return Err(GovStoreError::NotFound {
                    what: $what,
                    name: name.clone(),
                });
            }
        }
    };
}

/// Fails with `InUse` while active keys name `$name` in their field `$field`.
macro_rules! unused {
    ($store:expr, $tx:ident, $what:expr, $field:literal, $name:expr) => {
        let pool = $store.pool();
        let sql = format!(
            "SELECT COUNT(*) FROM gov_keys WHERE {} = $1 AND {} IS NULL",
            pool.json_text("data", $field),
            pool.json_text("data", "revoked_ms"),
        );
        let keys: i64 = sqlx::query_scalar(&sql)
            .bind($name)
            .fetch_one(&mut *$tx)
            .await?;
        if keys > 0 {
            return Err(GovStoreError::InUse {
                what: $what,
                name: $name.to_string(),
                by: format!("{keys} active key(s)"),
            });
        }
    };
}

/// Runs one write: a UNIQUE violation is `Conflict`, touching no row is `NotFound`.
macro_rules! write {
    ($tx:ident, $q:expr, $what:expr, $name:expr) => {
        match $q.execute(&mut *$tx).await {
            Err(sqlx::Error::Database(d)) if d.is_unique_violation() => {
                return Err(GovStoreError::Conflict {
                    what: $what,
                    name: $name.to_string(),
                })
            }
            Err(e) => return Err(e.into()),
            Ok(r) if r.rows_affected() == 0 => {
                return Err(GovStoreError::NotFound {
                    what: $what,
                    name: $name.to_string(),
                })
            }
            Ok(_) => {}
        }
    };
}

async fn load<T: serde::de::DeserializeOwned>(
    s: &Store,
    sql: &'static str,
    what: &str,
) -> Result<Vec<T>, StoreError> {
    let rows: Vec<String> = on_pool!(s.pool(), |p| sqlx::query_scalar(sql).fetch_all(p).await?);
    rows.iter()
        .map(|r| {
            serde_json::from_str(r).map_err(|e| {
                StoreError::Migrate(format!("a stored {what} record is unreadable: {e}"))
            })
        })
        .collect()
}

impl GovStore for Store {
    async fn change_marker(&self) -> Result<i64, StoreError> {
        Ok(on_pool!(self.pool(), |p| sqlx::query_scalar(
            "SELECT version FROM gov_meta"
        )
        .fetch_one(p)
        .await?))
    }

    async fn load_all(&self) -> Result<GovSnapshot, StoreError> {
        Ok(GovSnapshot {
            teams: load(self, "SELECT data FROM gov_teams ORDER BY name", "team").await?,
            users: load(self, "SELECT data FROM gov_users ORDER BY name", "user").await?,
            keys: load(
                self,
                "SELECT data FROM gov_keys ORDER BY created_ms, id",
                "key",
            )
            .await?,
        })
    }

    async fn insert_user(&self, u: &UserRecord) -> Result<(), GovStoreError> {
        let data = json(u)?;
        admin_write!(self, |tx| {
            require!(tx, "gov_teams", "team", u.team.as_ref());
            let q = sqlx::query("INSERT INTO gov_users (name, team, data) VALUES ($1, $2, $3)")
                .bind(&u.name)
                .bind(&u.team)
                .bind(&data);
            write!(tx, q, "user", &u.name);
        })
    }

    async fn update_user(&self, u: &UserRecord) -> Result<(), GovStoreError> {
        let data = json(u)?;
        admin_write!(self, |tx| {
            require!(tx, "gov_teams", "team", u.team.as_ref());
            let q = sqlx::query("UPDATE gov_users SET team = $1, data = $2 WHERE name = $3")
                .bind(&u.team)
                .bind(&data)
                .bind(&u.name);
            write!(tx, q, "user", &u.name);
        })
    }

    async fn delete_user(&self, name: &str) -> Result<(), GovStoreError> {
        admin_write!(self, |tx| {
            unused!(self, tx, "user", "user", name);
            let q = sqlx::query("DELETE FROM gov_users WHERE name = $1").bind(name);
            write!(tx, q, "user", name);
        })
    }

    async fn insert_team(&self, t: &TeamRecord) -> Result<(), GovStoreError> {
        let data = json(t)?;
        admin_write!(self, |tx| {
            require!(tx, "gov_teams", "parent team", t.parent.as_ref());
            let q = sqlx::query("INSERT INTO gov_teams (name, data) VALUES ($1, $2)")
                .bind(&t.name)
                .bind(&data);
            write!(tx, q, "team", &t.name);
        })
    }

    async fn update_team(&self, t: &TeamRecord) -> Result<(), GovStoreError> {
        let data = json(t)?;
        admin_write!(self, |tx| {
            require!(tx, "gov_teams", "parent team", t.parent.as_ref());
            let q = sqlx::query("UPDATE gov_teams SET data = $1 WHERE name = $2")
                .bind(&data)
                .bind(&t.name);
            write!(tx, q, "team", &t.name);
        })
    }

    async fn delete_team(&self, name: &str) -> Result<(), GovStoreError> {
        admin_write!(self, |tx| {
            unused!(self, tx, "team", "team", name);
            let q = sqlx::query("DELETE FROM gov_teams WHERE name = $1").bind(name);
            write!(tx, q, "team", name);
        })
    }

    async fn insert_key(&self, k: &KeyRecord) -> Result<(), GovStoreError> {
        let data = json(k)?;
        let label = k.name.as_deref().unwrap_or(&k.id);
        admin_write!(self, |tx| {
            require!(tx, "gov_teams", "team", k.team.as_ref());
            require!(tx, "gov_users", "user", k.user.as_ref());
            let q = sqlx::query(
                "INSERT INTO gov_keys (id, hash, team, name, created_ms, data) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&k.id)
            .bind(&k.hash)
            .bind(&k.team)
            .bind(&k.name)
            .bind(k.created_ms)
            .bind(&data);
            write!(tx, q, "key", label);
        })
    }

    async fn update_key(&self, k: &KeyRecord) -> Result<(), GovStoreError> {
        let data = json(k)?;
        let label = k.name.as_deref().unwrap_or(&k.id);
        admin_write!(self, |tx| {
            require!(tx, "gov_teams", "team", k.team.as_ref());
            require!(tx, "gov_users", "user", k.user.as_ref());
            let q = sqlx::query(
                "UPDATE gov_keys SET hash = $1, team = $2, name = $3, data = $4 WHERE id = $5",
            )
            .bind(&k.hash)
            .bind(&k.team)
            .bind(&k.name)
            .bind(&data)
            .bind(&k.id);
            write!(tx, q, "key", label);
        })
    }

    async fn spend_since(
        &self,
        scope: SpendScope,
        values: &[String],
        since_ms: i64,
    ) -> Result<HashMap<String, i64>, StoreError> {
        // Whole hours from the rollups (a month of spend is a few dozen segments, and outlives
        // raw retention); the part-hour before them from the raw records, on the time index
        // (under an hour of records). Budget periods start on the hour unless a calendar
        // offset is not whole hours. One value: its groups only (the others skipped); more:
        // every value's at once (a start seeding a thousand keys reads once, not 1,000 times).
        use super::query::{Dim, Filter, KeyPart};
        use super::rollup::{Kept, Res};
        let (dim, column) = match scope {
            SpendScope::Key => (Dim::Key, "key_id"),
            SpendScope::User => (Dim::User, "user_name"),
            SpendScope::Team => (Dim::Team, "team"),
        };
        let mut out: HashMap<String, i64> = HashMap::new();
        if values.is_empty() {
            return Ok(out);
        }
        let wanted: std::collections::HashSet<&str> = values.iter().map(String::as_str).collect();
        let whole = Res::Hour.ceil(since_ms);
        let filter = Filter {
            since_ms: Some(whole),
            eq: match values {
                [one] => vec![(dim, one.clone())],
                _ => Vec::new(),
            },
            ..Filter::default()
        };
        let (groups, _) = super::rollup::read(
            self,
            &filter,
            &[dim],
            None,
            Res::Day,
            Kept { minutes_from_ms: 0 },
        )
        .await?;
        for ((_, key), s) in groups {
            if let Some(KeyPart::Text(Some(v))) = key.first() {
                if wanted.contains(v.as_str()) {
                    *out.entry(v.clone()).or_default() += s.cost;
                }
            }
        }
        if whole == since_ms {
            return Ok(out);
        }
        let sql = format!(
            "SELECT {column}, CAST(COALESCE(SUM(cost_micro_usd), 0) AS BIGINT) FROM usage_records \
             WHERE {column} IS NOT NULL AND ts_ms >= $1 AND ts_ms < $2 GROUP BY {column}"
        );
        let edge: Vec<(String, i64)> = on_pool!(self.pool(), |p| sqlx::query_as(&sql)
            .bind(since_ms)
            .bind(whole)
            .fetch_all(p)
            .await?);
        for (v, cost) in edge {
            if wanted.contains(v.as_str()) {
                *out.entry(v).or_default() += cost;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn teams_and_keys_round_trip_with_conflicts_and_markers() {
        for db in crate::store::testing::databases("gov_round_trip").await {
            round_trip(&Store::open(&db.url).await.unwrap()).await;
        }
    }

    async fn round_trip(s: &Store) {
        let m0 = s.change_marker().await.unwrap();
        let team = TeamRecord {
            name: "eng".into(),
            ..Default::default()
        };
        s.insert_team(&team).await.unwrap();
        assert!(matches!(
            s.insert_team(&team).await,
            Err(GovStoreError::Conflict { .. })
        ));
        let key = KeyRecord {
            id: "key_1".into(),
            hash: "h1".into(),
            team: Some("nope".into()),
            ..Default::default()
        };
        assert!(matches!(
            s.insert_key(&key).await,
            Err(GovStoreError::NotFound { .. })
        ));
        let key = KeyRecord {
            team: Some("eng".into()),
            ..key
        };
        s.insert_key(&key).await.unwrap();
        assert!(matches!(
            s.delete_team("eng").await,
            Err(GovStoreError::InUse { .. })
        ));
        let snap = s.load_all().await.unwrap();
        assert_eq!(snap.teams, vec![team]);
        assert_eq!(snap.keys, vec![key.clone()]);
        let ghost = KeyRecord {
            id: "key_2".into(),
            hash: "h2".into(),
            user: Some("ghost".into()),
            ..Default::default()
        };
        assert!(matches!(
            s.insert_key(&ghost).await,
            Err(GovStoreError::NotFound { what: "user", .. })
        ));
        assert_eq!(s.change_marker().await.unwrap(), m0 + 2);
    }
}
