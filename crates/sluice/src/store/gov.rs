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
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub created_ms: i64,
}

/// What a key or team may use; `None` means no limit from this level.
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

// Admin writes take the write lock up front (`BEGIN IMMEDIATE`): a deferred transaction that
// reads and then writes fails at once with SQLITE_BUSY when the usage writer committed in
// between, instead of waiting out the busy timeout.

/// Teams and keys. Admin writes go here; the request path only reads the in-memory cache.
pub trait GovStore: Send + Sync + 'static {
    /// A number that changes on every write (cheap to poll).
    fn change_marker(&self) -> impl Future<Output = Result<i64, StoreError>> + Send;
    fn load_all(
        &self,
    ) -> impl Future<Output = Result<(Vec<TeamRecord>, Vec<KeyRecord>), StoreError>> + Send;
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
    Team,
}

fn json<T: Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Migrate(format!("encoding a record: {e}")))
}

async fn bump(tx: &mut sqlx::SqliteConnection) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE gov_meta SET version = version + 1")
        .execute(tx)
        .await?;
    Ok(())
}

async fn team_exists(tx: &mut sqlx::SqliteConnection, name: &str) -> Result<bool, sqlx::Error> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM gov_teams WHERE name = ?")
        .bind(name)
        .fetch_one(tx)
        .await?;
    Ok(n > 0)
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

impl GovStore for SqliteStore {
    async fn change_marker(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT version FROM gov_meta")
            .fetch_one(self.pool())
            .await?)
    }

    async fn load_all(&self) -> Result<(Vec<TeamRecord>, Vec<KeyRecord>), StoreError> {
        let teams: Vec<String> = sqlx::query_scalar("SELECT data FROM gov_teams ORDER BY name")
            .fetch_all(self.pool())
            .await?;
        let keys: Vec<String> =
            sqlx::query_scalar("SELECT data FROM gov_keys ORDER BY created_ms, id")
                .fetch_all(self.pool())
                .await?;
        let decode = |what: &str, e: serde_json::Error| {
            StoreError::Migrate(format!("a stored {what} record is unreadable: {e}"))
        };
        let teams = teams
            .iter()
            .map(|t| serde_json::from_str(t).map_err(|e| decode("team", e)))
            .collect::<Result<Vec<_>, _>>()?;
        let keys = keys
            .iter()
            .map(|k| serde_json::from_str(k).map_err(|e| decode("key", e)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((teams, keys))
    }

    async fn insert_team(&self, t: &TeamRecord) -> Result<(), GovStoreError> {
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        if let Some(parent) = &t.parent {
            if !team_exists(&mut tx, parent).await? {
                return Err(GovStoreError::NotFound {
                    what: "parent team",
                    name: parent.clone(),
                });
            }
        }
        let r = sqlx::query("INSERT INTO gov_teams (name, data) VALUES (?, ?)")
            .bind(&t.name)
            .bind(json(t)?)
            .execute(&mut *tx)
            .await;
        match r {
            Err(e) if is_unique_violation(&e) => {
                return Err(GovStoreError::Conflict {
                    what: "team",
                    name: t.name.clone(),
                })
            }
            r => r?,
        };
        bump(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn update_team(&self, t: &TeamRecord) -> Result<(), GovStoreError> {
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        if let Some(parent) = &t.parent {
            if !team_exists(&mut tx, parent).await? {
                return Err(GovStoreError::NotFound {
                    what: "parent team",
                    name: parent.clone(),
                });
            }
        }
        let r = sqlx::query("UPDATE gov_teams SET data = ? WHERE name = ?")
            .bind(json(t)?)
            .bind(&t.name)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() == 0 {
            return Err(GovStoreError::NotFound {
                what: "team",
                name: t.name.clone(),
            });
        }
        bump(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_team(&self, name: &str) -> Result<(), GovStoreError> {
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        let keys: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM gov_keys WHERE team = ? AND json_extract(data, '$.revoked_ms') IS NULL",
        )
        .bind(name)
        .fetch_one(&mut *tx)
        .await?;
        if keys > 0 {
            return Err(GovStoreError::InUse {
                what: "team",
                name: name.to_string(),
                by: format!("{keys} active key(s)"),
            });
        }
        let r = sqlx::query("DELETE FROM gov_teams WHERE name = ?")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() == 0 {
            return Err(GovStoreError::NotFound {
                what: "team",
                name: name.to_string(),
            });
        }
        bump(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn insert_key(&self, k: &KeyRecord) -> Result<(), GovStoreError> {
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        if let Some(team) = &k.team {
            if !team_exists(&mut tx, team).await? {
                return Err(GovStoreError::NotFound {
                    what: "team",
                    name: team.clone(),
                });
            }
        }
        let r = sqlx::query(
            "INSERT INTO gov_keys (id, hash, team, name, created_ms, data) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&k.id)
        .bind(&k.hash)
        .bind(&k.team)
        .bind(&k.name)
        .bind(k.created_ms)
        .bind(json(k)?)
        .execute(&mut *tx)
        .await;
        match r {
            Err(e) if is_unique_violation(&e) => {
                return Err(GovStoreError::Conflict {
                    what: "key",
                    name: k.name.clone().unwrap_or_else(|| k.id.clone()),
                })
            }
            r => r?,
        };
        bump(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn update_key(&self, k: &KeyRecord) -> Result<(), GovStoreError> {
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        if let Some(team) = &k.team {
            if !team_exists(&mut tx, team).await? {
                return Err(GovStoreError::NotFound {
                    what: "team",
                    name: team.clone(),
                });
            }
        }
        let r =
            sqlx::query("UPDATE gov_keys SET hash = ?, team = ?, name = ?, data = ? WHERE id = ?")
                .bind(&k.hash)
                .bind(&k.team)
                .bind(&k.name)
                .bind(json(k)?)
                .bind(&k.id)
                .execute(&mut *tx)
                .await;
        let r = match r {
            Err(e) if is_unique_violation(&e) => {
                return Err(GovStoreError::Conflict {
                    what: "key",
                    name: k.name.clone().unwrap_or_else(|| k.id.clone()),
                })
            }
            r => r?,
        };
        if r.rows_affected() == 0 {
            return Err(GovStoreError::NotFound {
                what: "key",
                name: k.id.clone(),
            });
        }
        bump(&mut tx).await?;
        tx.commit().await?;
        Ok(())
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
        let (teams, keys) = s.load_all().await.unwrap();
        assert_eq!(teams, vec![team]);
        assert_eq!(keys, vec![key]);
        assert_eq!(s.change_marker().await.unwrap(), m0 + 2);
    }
}
