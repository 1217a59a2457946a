//! The response cache's Redis backend (`cache.backend: redis`): entries kept in the fleet's
//! Redis with their TTL, so an answer stored through one replica is a hit through every other.
//! Each replica keeps what it read or wrote in its memory for at most a second (the near
//! cache), so a hot entry costs one Redis read per replica per second, and `DELETE
//! /admin/cache` through any replica is seen by all within a second.
//!
//! An entry is `{prefix}:cache:<route hex>:<team hex>:<key hex>` = one JSON line of what the
//! entry is (stored time, TTL, cost, route, team) then the answer's bytes. Route and team are
//! hex so that clearing by either is a glob that nothing in a name can break.
//!
//! The semantic index follows: a replica that indexes a last turn (`semantic.rs`) also keeps
//! it in Redis (`{prefix}:semvec:<context hex>:<key hex>`, same TTL) and announces it on
//! `{prefix}:semantic`; every replica adds what it hears to its own index, and a replica that
//! starts loads what Redis holds. So a rewording asked through any replica finds an answer
//! stored through any other.
//!
//! The cache never fails a request: a Redis that is away or slow (`redis.timeout`), or an
//! entry that does not parse, is a miss (`bypass`), counted in `sluice_cache_errors_total`
//! and logged once per incident.

use super::{Entry, Key};
use bytes::Bytes;
use redis::aio::ConnectionManager;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct RedisCache {
    client: redis::Client,
    conn: ConnectionManager,
    tag: String,
    timeout: Duration,
    /// Redis failed last time (a warning was logged; the next success logs the recovery).
    down: AtomicBool,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Meta {
    /// Unix ms when the answer was stored.
    s: i64,
    /// TTL in ms.
    t: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    c: Option<i64>,
    r: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    m: Option<String>,
}

/// A semantic index entry as Redis keeps and announces it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SemanticShare {
    /// The context hash and the answer's key, hex.
    pub context: String,
    pub key: String,
    pub critical: Vec<String>,
    pub vector: Vec<f32>,
    /// Left of the answer's TTL when shared.
    pub ttl_ms: u64,
}

/// What a Redis lookup found.
pub enum Found {
    Entry(Entry),
    Nothing,
    /// Redis did not answer, or the entry was unreadable: a miss for this request.
    Failed,
}

impl RedisCache {
    pub fn new(cfg: &crate::config::redis::RedisConfig) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(cfg.url.as_str())?;
        let mc = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(cfg.timeout))
            .set_response_timeout(Some(cfg.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        Ok(Self {
            conn: ConnectionManager::new_lazy_with_config(client.clone(), mc)?,
            client,
            tag: format!("{{{}}}", cfg.key_prefix),
            timeout: cfg.timeout,
            down: AtomicBool::new(false),
        })
    }

    fn redis_key(&self, key: &Key, route: &str, team: Option<&str>) -> String {
        format!(
            "{}:cache:{}:{}:{}",
            self.tag,
            hex::encode(route),
            hex::encode(team.unwrap_or_default()),
            hex::encode(key)
        )
    }

    pub async fn get(&self, key: &Key, route: &str, team: Option<&str>) -> Found {
        let k = self.redis_key(key, route, team);
        let mut c = self.conn.clone();
        let got = tokio::time::timeout(
            self.timeout,
            redis::cmd("GET")
                .arg(&k)
                .query_async::<Option<Vec<u8>>>(&mut c),
        )
        .await;
        let raw = match got {
            Ok(Ok(v)) => {
                self.up();
                v
            }
            Ok(Err(e)) => return self.failed("lookup", &e.to_string()),
            Err(_) => return self.failed("lookup", "no answer within redis.timeout"),
        };
        let Some(raw) = raw else {
            return Found::Nothing;
        };
        match decode(&raw) {
            Some(e) => Found::Entry(e),
            None => {
                crate::telemetry::metrics::cache_error("corrupt");
                tracing::warn!(key = %k, "an unreadable response cache entry in redis: treated as a miss");
                Found::Failed
            }
        }
    }

    /// Stores `e` with its TTL, in the background (a failed store only costs a later miss).
    pub fn put(self: &Arc<Self>, key: &Key, e: &Entry) {
        let k = self.redis_key(key, &e.route, e.team.as_deref());
        let value = encode(e);
        let ms = u64::try_from(e.ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let this = self.clone();
        tokio::spawn(async move {
            let mut c = this.conn.clone();
            let sent = tokio::time::timeout(
                this.timeout,
                redis::cmd("SET")
                    .arg(&k)
                    .arg(value)
                    .arg("PX")
                    .arg(ms)
                    .query_async::<()>(&mut c),
            )
            .await;
            match sent {
                Ok(Ok(())) => this.up(),
                Ok(Err(e)) => {
                    this.failed("store", &e.to_string());
                }
                Err(_) => {
                    this.failed("store", "no answer within redis.timeout");
                }
            }
        });
    }

    /// Deletes every entry, or those of a route and/or team; how many.
    pub async fn clear(
        &self,
        route: Option<&str>,
        team: Option<&str>,
    ) -> Result<u64, redis::RedisError> {
        let pattern = format!(
            "{}:cache:{}:{}:*",
            self.tag,
            route.map_or_else(|| "*".to_string(), hex::encode),
            team.map_or_else(|| "*".to_string(), hex::encode)
        );
        let mut c = self.conn.clone();
        let mut cursor: u64 = 0;
        let mut gone = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut c)
                .await?;
            if !keys.is_empty() {
                gone += redis::cmd("UNLINK")
                    .arg(&keys)
                    .query_async::<u64>(&mut c)
                    .await?;
            }
            if next == 0 {
                return Ok(gone);
            }
            cursor = next;
        }
    }

    fn semantic_channel(&self) -> String {
        format!("{}:semantic", self.tag)
    }

    /// Keeps a semantic index entry in Redis and tells the other replicas (in the background).
    pub fn share_semantic(self: &Arc<Self>, e: SemanticShare) {
        let this = self.clone();
        tokio::spawn(async move {
            let Ok(text) = serde_json::to_string(&e) else {
                return;
            };
            let k = format!("{}:semvec:{}:{}", this.tag, e.context, e.key);
            let mut c = this.conn.clone();
            let mut pipe = redis::pipe();
            pipe.cmd("SET")
                .arg(&k)
                .arg(&text)
                .arg("PX")
                .arg(e.ttl_ms.max(1))
                .ignore()
                .cmd("PUBLISH")
                .arg(this.semantic_channel())
                .arg(&text)
                .ignore();
            let sent = tokio::time::timeout(this.timeout, pipe.query_async::<()>(&mut c)).await;
            match sent {
                Ok(Ok(())) => this.up(),
                Ok(Err(err)) => {
                    this.failed("semantic_share", &err.to_string());
                }
                Err(_) => {
                    this.failed("semantic_share", "no answer within redis.timeout");
                }
            }
        });
    }

    /// Loads the semantic entries Redis holds, then adds every one announced, into `index`,
    /// until `stop`; resubscribes (and reloads) after a lost connection.
    pub async fn follow_semantic(
        self: Arc<Self>,
        index: Arc<dyn Fn(SemanticShare) + Send + Sync>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        use futures_util::StreamExt;
        loop {
            let run = async {
                let mut ps = self.client.get_async_pubsub().await?;
                ps.subscribe(self.semantic_channel()).await?;
                self.load_semantic(index.as_ref()).await?;
                let mut msgs = ps.on_message();
                while let Some(m) = msgs.next().await {
                    if let Some(e) = m
                        .get_payload::<String>()
                        .ok()
                        .and_then(|t| serde_json::from_str::<SemanticShare>(&t).ok())
                    {
                        index(e);
                    }
                }
                Ok::<(), redis::RedisError>(())
            };
            tokio::select! {
                r = run => {
                    if let Err(e) = r {
                        tracing::debug!("semantic cache subscription: {e}");
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

    async fn load_semantic(
        &self,
        index: &(dyn Fn(SemanticShare) + Send + Sync),
    ) -> Result<(), redis::RedisError> {
        let mut c = self.conn.clone();
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}:semvec:*", self.tag))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut c)
                .await?;
            if !keys.is_empty() {
                let values: Vec<Option<String>> =
                    redis::cmd("MGET").arg(&keys).query_async(&mut c).await?;
                for v in values.into_iter().flatten() {
                    if let Ok(e) = serde_json::from_str::<SemanticShare>(&v) {
                        index(e);
                    }
                }
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    fn up(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            tracing::info!("the response cache reaches redis again");
        }
    }

    fn failed(&self, stage: &'static str, why: &str) -> Found {
        crate::telemetry::metrics::cache_error(stage);
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "the response cache cannot reach redis ({why}): requests go to providers \
                 (cache bypass) until it is back"
            );
        }
        Found::Failed
    }
}

fn encode(e: &Entry) -> Vec<u8> {
    let age = u64::try_from(e.stored.elapsed().as_millis()).unwrap_or(0);
    let meta = Meta {
        s: crate::app::unix_ms() - i64::try_from(age).unwrap_or(0),
        t: u64::try_from(e.ttl.as_millis()).unwrap_or(u64::MAX),
        c: e.cost_micro_usd,
        r: e.route.to_string(),
        m: e.team.as_deref().map(str::to_string),
    };
    let mut out = serde_json::to_vec(&meta).unwrap_or_default();
    out.push(b'\n');
    out.extend_from_slice(&e.body);
    out
}

fn decode(raw: &[u8]) -> Option<Entry> {
    let nl = raw.iter().position(|&b| b == b'\n')?;
    let meta: Meta = serde_json::from_slice(&raw[..nl]).ok()?;
    let age_ms = u64::try_from(crate::app::unix_ms() - meta.s).unwrap_or(0);
    let now = Instant::now();
    Some(Entry {
        body: Bytes::copy_from_slice(&raw[nl + 1..]),
        stored: now
            .checked_sub(Duration::from_millis(age_ms))
            .unwrap_or(now),
        ttl: Duration::from_millis(meta.t),
        cost_micro_usd: meta.c,
        route: Arc::from(meta.r),
        team: meta.m.map(Arc::from),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn entries_round_trip_and_garbage_does_not_parse() {
        let e = Entry {
            body: Bytes::from_static(b"{\"a\":\"line\\nbreak\"}\n"),
            stored: Instant::now() - Duration::from_secs(3),
            ttl: Duration::from_secs(60),
            cost_micro_usd: Some(42),
            route: Arc::from("chat"),
            team: Some(Arc::from("eng")),
        };
        let back = decode(&encode(&e)).unwrap();
        assert_eq!(back.body, e.body);
        assert_eq!(back.ttl, e.ttl);
        assert_eq!(back.cost_micro_usd, Some(42));
        assert_eq!((&*back.route, back.team.as_deref()), ("chat", Some("eng")));
        let age = back.stored.elapsed().as_secs_f64();
        assert!((2.5..4.0).contains(&age), "{age}");
        assert!(decode(b"not json\n{}").is_none());
        assert!(decode(b"no newline").is_none());
    }
}
