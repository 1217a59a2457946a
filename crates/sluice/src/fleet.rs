//! The replicas of a fleet: each live replica announces itself in Redis (id, version, config
//! hash, start time) every few seconds with a short expiry, so `GET /admin/replicas` lists the
//! live ones and config drift between them is visible. Without `redis:` the list is this
//! replica alone.

use crate::app::AppState;
use crate::config::redis::RedisConfig;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

const BEAT: Duration = Duration::from_secs(2);
/// An entry outlives three missed beats, no more.
const TTL_MS: i64 = 6_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplicaInfo {
    pub id: String,
    pub version: String,
    pub config_hash: String,
    pub listen: String,
    pub started_ms: i64,
}

pub struct Replicas {
    pub id: String,
    started_ms: i64,
    listen: String,
    shared: Option<Shared>,
}

struct Shared {
    conn: ConnectionManager,
    /// `{prefix}`.
    tag: String,
    timeout: Duration,
}

impl Replicas {
    pub fn new(
        redis: Option<&RedisConfig>,
        listen: std::net::SocketAddr,
    ) -> Result<Arc<Self>, redis::RedisError> {
        let shared = match redis {
            None => None,
            Some(r) => {
                let mc = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(r.timeout))
                    .set_response_timeout(Some(r.timeout));
                Some(Shared {
                    conn: ConnectionManager::new_lazy_with_config(
                        redis::Client::open(r.url.as_str())?,
                        mc,
                    )?,
                    tag: format!("{{{}}}", r.key_prefix),
                    timeout: r.timeout,
                })
            }
        };
        Ok(Arc::new(Self {
            id: format!("replica_{:08x}", rand::random::<u32>()),
            started_ms: crate::app::unix_ms(),
            listen: listen.to_string(),
            shared,
        }))
    }

    fn me(&self, app: &AppState) -> ReplicaInfo {
        ReplicaInfo {
            id: self.id.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            config_hash: app.gateway.load().config.hash.clone(),
            listen: self.listen.clone(),
            started_ms: self.started_ms,
        }
    }

    /// Announces this replica every [`BEAT`] until `stop`, then withdraws it.
    pub async fn heartbeat_until(
        self: Arc<Self>,
        app: AppState,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let Some(s) = &self.shared else { return };
        let (set, key) = (
            format!("{}:replicas", s.tag),
            format!("{}:replica:{}", s.tag, self.id),
        );
        loop {
            let now = crate::app::unix_ms();
            let body = serde_json::to_string(&self.me(&app)).unwrap_or_default();
            let mut pipe = redis::pipe();
            pipe.cmd("SET")
                .arg(&key)
                .arg(body)
                .arg("PX")
                .arg(TTL_MS)
                .ignore()
                .cmd("ZADD")
                .arg(&set)
                .arg(now + TTL_MS)
                .arg(&self.id)
                .ignore();
            let mut c = s.conn.clone();
            if let Err(e) = pipe.query_async::<()>(&mut c).await {
                tracing::debug!("announcing this replica in redis failed: {e}");
            }
            tokio::select! {
                () = tokio::time::sleep(BEAT) => {}
                _ = stop.wait_for(|v| *v) => break,
            }
        }
        let mut c = s.conn.clone();
        let _ = redis::pipe()
            .cmd("ZREM")
            .arg(&set)
            .arg(&self.id)
            .ignore()
            .cmd("DEL")
            .arg(&key)
            .ignore()
            .query_async::<()>(&mut c)
            .await;
    }

    /// Every live replica (this one first when Redis does not answer).
    pub async fn list(&self, app: &AppState) -> (Vec<ReplicaInfo>, Option<String>) {
        let me = self.me(app);
        let Some(s) = &self.shared else {
            return (vec![me], None);
        };
        let set = format!("{}:replicas", s.tag);
        let now = crate::app::unix_ms();
        let mut c = s.conn.clone();
        let read = async {
            let ids: Vec<String> = redis::pipe()
                .cmd("ZREMRANGEBYSCORE")
                .arg(&set)
                .arg("-inf")
                .arg(now)
                .ignore()
                .cmd("ZRANGE")
                .arg(&set)
                .arg(0)
                .arg(-1)
                .query_async::<(Vec<String>,)>(&mut c)
                .await?
                .0;
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let keys: Vec<String> = ids
                .iter()
                .map(|id| format!("{}:replica:{id}", s.tag))
                .collect();
            let bodies: Vec<Option<String>> =
                redis::cmd("MGET").arg(keys).query_async(&mut c).await?;
            Ok::<_, redis::RedisError>(
                bodies
                    .into_iter()
                    .flatten()
                    .filter_map(|b| serde_json::from_str::<ReplicaInfo>(&b).ok())
                    .collect(),
            )
        };
        match tokio::time::timeout(s.timeout * 4, read).await {
            Ok(Ok(mut all)) => {
                if !all.iter().any(|r| r.id == me.id) {
                    all.insert(0, me);
                }
                all.sort_by_key(|r| r.started_ms);
                (all, None)
            }
            Ok(Err(e)) => (vec![me], Some(format!("redis: {e}"))),
            Err(_) => (vec![me], Some("redis: no answer in time".to_string())),
        }
    }
}
