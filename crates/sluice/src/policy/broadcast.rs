//! Admin changes told to every replica through Redis pub/sub: a replica that wrote a key,
//! team or user publishes on `{prefix}:changes`, and every replica reloads its principal cache
//! at once, so a key revoked through any replica fails everywhere well within a second. The
//! refresher's poll of the store's change marker stays as the resync for a missed message
//! (a replica that was cut from Redis also reloads when it subscribes again).

use super::governance::Governance;
use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use std::sync::{Arc, Weak};
use std::time::Duration;

pub struct Broadcast {
    conn: ConnectionManager,
    client: redis::Client,
    channel: String,
}

impl Broadcast {
    pub fn new(cfg: &crate::config::redis::RedisConfig) -> Result<Arc<Self>, redis::RedisError> {
        let client = redis::Client::open(cfg.url.as_str())?;
        let mc = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(cfg.timeout))
            .set_response_timeout(Some(cfg.timeout));
        Ok(Arc::new(Self {
            conn: ConnectionManager::new_lazy_with_config(client.clone(), mc)?,
            client,
            channel: format!("{{{}}}:changes", cfg.key_prefix),
        }))
    }

    /// Tells the other replicas that keys, teams or users changed. Best effort: a lost
    /// message is caught up by their poll of the store.
    pub async fn changed(&self) {
        let mut c = self.conn.clone();
        let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH")
            .arg(&self.channel)
            .arg("gov")
            .query_async(&mut c)
            .await;
        if let Err(e) = sent {
            tracing::warn!("announcing an admin change over redis failed: {e}");
        }
    }

    /// Reloads `gov` on every message until `stop`; resubscribes after a lost connection.
    pub async fn listen(
        self: Arc<Self>,
        gov: Weak<Governance>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            let run = async {
                let mut ps = self.client.get_async_pubsub().await?;
                ps.subscribe(&self.channel).await?;
                // Whatever was published while unsubscribed is caught up now.
                if let Some(g) = gov.upgrade() {
                    let _ = g.reload().await;
                }
                let mut msgs = ps.on_message();
                while msgs.next().await.is_some() {
                    let Some(g) = gov.upgrade() else { break };
                    if let Err(e) = g.reload().await {
                        tracing::warn!("reloading keys after an admin change failed: {e}");
                    }
                }
                Ok::<(), redis::RedisError>(())
            };
            tokio::select! {
                r = run => {
                    if let Err(e) = r {
                        tracing::debug!("admin change subscription: {e}");
                    }
                }
                _ = stop.wait_for(|s| *s) => return,
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }
}
