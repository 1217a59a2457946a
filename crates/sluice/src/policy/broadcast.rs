//! Admin changes told to every replica through Redis pub/sub: a replica that wrote a key,
//! team or user publishes on `{prefix}:changes`, and every replica reloads its principal cache
//! at once, so a key revoked through any replica fails everywhere well within a second. The
//! refresher's poll of the store's change marker stays as the resync for a missed message
//! (a replica that was cut from Redis also reloads when it subscribes again).
//!
//! With `redis.share_breakers: true`, circuit-breaker transitions travel the same way on
//! `{prefix}:breakers`: a breaker that opens on one replica opens for the same cooldown on
//! every replica (they stop sending to a failing deployment at once), and one that closes
//! closes everywhere. Each replica still probes on its own when its cooldown ends.

use super::governance::Governance;
use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use std::sync::{Arc, Weak};
use std::time::Duration;

pub struct Broadcast {
    conn: ConnectionManager,
    client: redis::Client,
    channel: String,
    /// `{prefix}:breakers`, when breakers are shared.
    breakers: Option<String>,
    /// This replica, so that it ignores its own breaker messages.
    me: String,
}

/// A breaker message on `{prefix}:breakers`.
#[derive(serde::Serialize, serde::Deserialize)]
struct BreakerMsg {
    from: String,
    provider: String,
    model: String,
    /// Open for this long; absent: closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    open_for_ms: Option<u64>,
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
            breakers: cfg
                .share_breakers
                .then(|| format!("{{{}}}:breakers", cfg.key_prefix)),
            me: format!("{}-{:x}", std::process::id(), rand::random::<u64>()),
        }))
    }

    /// Publishes this replica's breaker transitions until the sender side is gone.
    pub async fn publish_breakers(
        self: Arc<Self>,
        mut events: tokio::sync::mpsc::UnboundedReceiver<crate::router::health::BreakerEvent>,
    ) {
        let Some(channel) = self.breakers.clone() else {
            return;
        };
        while let Some(e) = events.recv().await {
            let msg = BreakerMsg {
                from: self.me.clone(),
                provider: e.provider.to_string(),
                model: e.model.to_string(),
                open_for_ms: e.open_for_ms,
            };
            let Ok(text) = serde_json::to_string(&msg) else {
                continue;
            };
            let mut c = self.conn.clone();
            let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(text)
                .query_async(&mut c)
                .await;
            if let Err(e) = sent {
                tracing::debug!("sharing a breaker transition over redis failed: {e}");
            }
        }
    }

    /// Applies another replica's breaker transition to this replica's deployments.
    fn apply_breaker(&self, payload: &str, app: &crate::app::AppState) {
        let Ok(m) = serde_json::from_str::<BreakerMsg>(payload) else {
            return;
        };
        if m.from == self.me {
            return;
        }
        let gw = app.gateway.load();
        for (provider, model, h) in gw.models.health() {
            if **provider != *m.provider || **model != *m.model {
                continue;
            }
            match m.open_for_ms {
                Some(ms) => h.open_for(ms.saturating_mul(1000)),
                None => h.close(),
            }
            tracing::info!(
                provider = %m.provider,
                model = %m.model,
                "breaker {} by another replica",
                if m.open_for_ms.is_some() { "opened" } else { "closed" }
            );
        }
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
        app: crate::app::AppState,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            let run = async {
                let mut ps = self.client.get_async_pubsub().await?;
                ps.subscribe(&self.channel).await?;
                if let Some(b) = &self.breakers {
                    ps.subscribe(b).await?;
                }
                // Whatever was published while unsubscribed is caught up now.
                if let Some(g) = gov.upgrade() {
                    let _ = g.reload().await;
                }
                let mut msgs = ps.on_message();
                while let Some(msg) = msgs.next().await {
                    if self.breakers.as_deref() == Some(msg.get_channel_name()) {
                        if let Ok(payload) = msg.get_payload::<String>() {
                            self.apply_breaker(&payload, &app);
                        }
                        continue;
                    }
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
