//! Governance records (teams, virtual keys) and the store trait that keeps them; the SQLite
//! implementation is here, a Postgres one will implement the same trait for a fleet.
//!
//! Records are stored whole as JSON next to the columns that need indexes or constraints, so
//! a field added later needs no migration. Every write bumps one change marker that the
//! principal cache polls.

use super::sqlite::SqliteStore;
use super::StoreError;
use serde::{Deserialize, Serialize};
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
    /// Sum of recorded cost since `since_ms` for a usage column (`key_id` or `team`).
    fn spend_since(
        &self,
        scope: SpendScope,
        value: &str,
        since_ms: i64,
    ) -> impl Future<Output = Result<i64, StoreError>> + Send;
}

#[derive(Debug, Clone, Copy)]
pub enum SpendScope {
    Key,
    User,
    Team,
}

fn json<T: Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Migrate(format!("encoding a record: {e}")))
}

type Tx = sqlx::Transaction<'static, sqlx::Sqlite>;
type Query<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

// Admin writes take the write lock up front (`BEGIN IMMEDIATE`): a deferred transaction that
// reads and then writes fails at once with SQLITE_BUSY when the usage writer committed in
// between, instead of waiting out the busy timeout.
async fn begin(s: &SqliteStore) -> Result<Tx, GovStoreError> {
    Ok(s.pool().begin_with("BEGIN IMMEDIATE").await?)
}

/// Bumps the change marker and commits.
async fn commit(mut tx: Tx) -> Result<(), GovStoreError> {
    sqlx::query("UPDATE gov_meta SET version = version + 1")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Fails with `NotFound` unless `name` (when given) is a row of `table`.
async fn require(
    tx: &mut Tx,
    table: &'static str,
    what: &'static str,
    name: Option<&String>,
) -> Result<(), GovStoreError> {
    let Some(name) = name else { return Ok(()) };
    let sql = match table {
        "gov_users" => "SELECT COUNT(*) FROM gov_users WHERE name = ?",
        _ => "SELECT COUNT(*) FROM gov_teams WHERE name = ?",
    };
    let n: i64 = sqlx::query_scalar(sql)
        .bind(name)
        .fetch_one(&mut **tx)
        .await?;
    if n == 0 {
        return Err(GovStoreError::NotFound {
            what,
            name: name.clone(),
        });
    }
    Ok(())
}

/// Fails with `InUse` while active keys match `filter` (a JSON path of the key record).
async fn unused(
    tx: &mut Tx,
    what: &'static str,
    path: &'static str,
    name: &str,
) -> Result<(), GovStoreError> {
    let keys: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM gov_keys WHERE json_extract(data, ?) = ? \
         AND json_extract(data, '$.revoked_ms') IS NULL",
    )
    .bind(path)
    .bind(name)
    .fetch_one(&mut **tx)
    .await?;
    if keys > 0 {
        return Err(GovStoreError::InUse {
            what,
            name: name.to_string(),
            by: format!("{keys} active key(s)"),
        });
    }
    Ok(())
}

/// Runs one write: a UNIQUE violation is `Conflict`, touching no row is `NotFound`.
async fn write(
    tx: &mut Tx,
    q: Query<'_>,
    what: &'static str,
    name: &str,
) -> Result<(), GovStoreError> {
    match q.execute(&mut **tx).await {
        Err(sqlx::Error::Database(d)) if d.is_unique_violation() => Err(GovStoreError::Conflict {
            what,
            name: name.to_string(),
        }),
        Err(e) => Err(e.into()),
        Ok(r) if r.rows_affected() == 0 => Err(GovStoreError::NotFound {
            what,
            name: name.to_string(),
        }),
        Ok(_) => Ok(()),
    }
}

async fn load<T: serde::de::DeserializeOwned>(
    s: &SqliteStore,
    sql: &'static str,
    what: &str,
) -> Result<Vec<T>, StoreError> {
    let rows: Vec<String> = sqlx::query_scalar(sql).fetch_all(s.pool()).await?;
    rows.iter()
        .map(|r| {
            serde_json::from_str(r).map_err(|e| {
                StoreError::Migrate(format!("a stored {what} record is unreadable: {e}"))
            })
        })
        .collect()
}

impl GovStore for SqliteStore {
    async fn change_marker(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT version FROM gov_meta")
            .fetch_one(self.pool())
            .await?)
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
        let mut tx = begin(self).await?;
        require(&mut tx, "gov_teams", "team", u.team.as_ref()).await?;
        let data = json(u)?;
        let q = sqlx::query("INSERT INTO gov_users (name, team, data) VALUES (?, ?, ?)")
            .bind(&u.name)
            .bind(&u.team)
            .bind(data);
        write(&mut tx, q, "user", &u.name).await?;
        commit(tx).await
    }

    async fn update_user(&self, u: &UserRecord) -> Result<(), GovStoreError> {
        let mut tx = begin(self).await?;
        require(&mut tx, "gov_teams", "team", u.team.as_ref()).await?;
        let data = json(u)?;
        let q = sqlx::query("UPDATE gov_users SET team = ?, data = ? WHERE name = ?")
            .bind(&u.team)
            .bind(data)
            .bind(&u.name);
        write(&mut tx, q, "user", &u.name).await?;
        commit(tx).await
    }

    async fn delete_user(&self, name: &str) -> Result<(), GovStoreError> {
        let mut tx = begin(self).await?;
        unused(&mut tx, "user", "$.user", name).await?;
        let q = sqlx::query("DELETE FROM gov_users WHERE name = ?").bind(name);
        write(&mut tx, q, "user", name).await?;
        commit(tx).await
    }

    async fn insert_team(&self, t: &TeamRecord) -> Result<(), GovStoreError> {
        let mut tx = begin(self).await?;
        require(&mut tx, "gov_teams", "parent team", t.parent.as_ref()).await?;
        let data = json(t)?;
        let q = sqlx::query("INSERT INTO gov_teams (name, data) VALUES (?, ?)")
            .bind(&t.name)
            .bind(data);
        write(&mut tx, q, "team", &t.name).await?;
        commit(tx).await
    }

    async fn update_team(&self, t: &TeamRecord) -> Result<(), GovStoreError> {
        let mut tx = begin(self).await?;
        require(&mut tx, "gov_teams", "parent team", t.parent.as_ref()).await?;
        let data = json(t)?;
        let q = sqlx::query("UPDATE gov_teams SET data = ? WHERE name = ?")
            .bind(data)
            .bind(&t.name);
        write(&mut tx, q, "team", &t.name).await?;
        commit(tx).await
    }

    async fn delete_team(&self, name: &str) -> Result<(), GovStoreError> {
        let mut tx = begin(self).await?;
        unused(&mut tx, "team", "$.team", name).await?;
        let q = sqlx::query("DELETE FROM gov_teams WHERE name = ?").bind(name);
        write(&mut tx, q, "team", name).await?;
        commit(tx).await
    }

    async fn insert_key(&self, k: &KeyRecord) -> Result<(), GovStoreError> {
        let mut tx = begin(self).await?;
        require(&mut tx, "gov_teams", "team", k.team.as_ref()).await?;
        require(&mut tx, "gov_users", "user", k.user.as_ref()).await?;
        let data = json(k)?;
        let q = sqlx::query(
            "INSERT INTO gov_keys (id, hash, team, name, created_ms, data) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&k.id)
        .bind(&k.hash)
        .bind(&k.team)
        .bind(&k.name)
        .bind(k.created_ms)
        .bind(data);
        write(&mut tx, q, "key", k.name.as_deref().unwrap_or(&k.id)).await?;
        commit(tx).await
    }

    async fn update_key(&self, k: &KeyRecord) -> Result<(), GovStoreError> {
        let mut tx = begin(self).await?;
        require(&mut tx, "gov_teams", "team", k.team.as_ref()).await?;
        require(&mut tx, "gov_users", "user", k.user.as_ref()).await?;
        let data = json(k)?;
        let q =
            sqlx::query("UPDATE gov_keys SET hash = ?, team = ?, name = ?, data = ? WHERE id = ?")
                .bind(&k.hash)
                .bind(&k.team)
                .bind(&k.name)
                .bind(data)
                .bind(&k.id);
        write(&mut tx, q, "key", k.name.as_deref().unwrap_or(&k.id)).await?;
        commit(tx).await
    }

    async fn spend_since(
        &self,
        scope: SpendScope,
        value: &str,
        since_ms: i64,
    ) -> Result<i64, StoreError> {
        let sql = match scope {
            SpendScope::Key => {
                "SELECT COALESCE(SUM(cost_micro_usd), 0) FROM usage_records WHERE key_id = ? AND ts_ms >= ?"
            }
            SpendScope::User => {
                "SELECT COALESCE(SUM(cost_micro_usd), 0) FROM usage_records WHERE user_name = ? AND ts_ms >= ?"
            }
            SpendScope::Team => {
                "SELECT COALESCE(SUM(cost_micro_usd), 0) FROM usage_records WHERE team = ? AND ts_ms >= ?"
            }
        };
        Ok(sqlx::query_scalar(sql)
            .bind(value)
            .bind(since_ms)
            .fetch_one(self.pool())
            .await?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn teams_and_keys_round_trip_with_conflicts_and_markers() {
        let s = SqliteStore::open("sqlite::memory:").await.unwrap();
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
