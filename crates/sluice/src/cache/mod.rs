//! The response cache (exact): answers kept in memory by a hash of the normalised request and
//! its scope, served in the client's own shape (JSON or SSE) without asking a provider.
//!
//! An entry is always an OpenAI `chat.completion` JSON body: a streamed answer is folded into
//! one when it completed, and replayed as a stream when a streaming client asks. Entries are
//! bounded by bytes (moka: TinyLFU admission, LRU eviction) and expire after their TTL.
//! With `cache.backend: redis` they are kept in Redis, shared by every replica, and the
//! memory holds each for at most a second (`redis.rs`).

pub mod embed;
pub mod redis;
pub mod semantic;

use crate::canonical::openai::{decode_response, encode_response, OpenAiStream, StreamEncoder};
use crate::canonical::{ChatResponse, StreamEvent, Usage};
use crate::config::cache::CacheScope;
use crate::providers::native::StreamDecoder;
use bytes::Bytes;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Request members that do not change the answer (so they are not part of the key).
pub(crate) const IGNORED: [&str; 4] = ["user", "metadata", "stream", "stream_options"];

/// The longest TTL `x-sluice-cache-ttl` may ask for.
pub const MAX_TTL: Duration = Duration::from_secs(7 * 86_400);

/// The most of a streamed answer kept for storing (longer answers are not cached).
pub const MAX_STREAM_BYTES: usize = 8 << 20;

pub type Key = [u8; 32];

/// One stored answer.
pub struct Entry {
    /// An OpenAI `chat.completion` JSON body.
    pub body: Bytes,
    pub stored: Instant,
    pub ttl: Duration,
    /// What the original answer cost (the saving of each hit); `None`: unpriced.
    pub cost_micro_usd: Option<i64>,
    /// The route and team it was stored for (for `DELETE /admin/cache`).
    pub route: Arc<str>,
    pub team: Option<Arc<str>>,
}

impl Entry {
    fn remaining(&self) -> Duration {
        self.ttl.saturating_sub(self.stored.elapsed())
    }
}

/// An entry in memory, and how long memory keeps it (its TTL; with Redis at most a second).
#[derive(Clone)]
struct Held {
    entry: Arc<Entry>,
    keep: Duration,
}

struct PerEntryTtl;

impl moka::Expiry<Key, Held> for PerEntryTtl {
    fn expire_after_create(&self, _: &Key, h: &Held, _: Instant) -> Option<Duration> {
        Some(h.keep)
    }
}

/// How long a replica keeps an entry read from (or written to) Redis in memory.
const NEAR_TTL: Duration = Duration::from_secs(1);

/// What a lookup found.
pub enum Lookup {
    Hit(Arc<Entry>),
    Miss,
    /// The backend failed (Redis away, a corrupt entry): served as a miss (`bypass`).
    Failed,
}

pub struct ResponseCache {
    entries: moka::sync::Cache<Key, Held>,
    redis: Option<Arc<redis::RedisCache>>,
    hits: AtomicU64,
    misses: AtomicU64,
    stored: AtomicU64,
    saved: AtomicU64,
    errors: AtomicU64,
    semantic_hits: AtomicU64,
}

impl ResponseCache {
    /// A cache in memory bounded by `max_bytes`; with `redis`, entries are kept there and
    /// memory is each replica's near cache.
    pub fn new(max_bytes: u64, redis: Option<redis::RedisCache>) -> Self {
        Self {
            entries: moka::sync::Cache::builder()
                .max_capacity(max_bytes)
                // Bytes of the answer plus what an entry costs around it.
                .weigher(|_, h: &Held| u32::try_from(h.entry.body.len() + 256).unwrap_or(u32::MAX))
                .expire_after(PerEntryTtl)
                .support_invalidation_closures()
                .build(),
            redis: redis.map(Arc::new),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            stored: AtomicU64::new(0),
            saved: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            semantic_hits: AtomicU64::new(0),
        }
    }

    fn hold(&self, key: Key, entry: Arc<Entry>) {
        let keep = match self.redis {
            Some(_) => entry.remaining().min(NEAR_TTL),
            None => entry.ttl,
        };
        if !keep.is_zero() {
            self.entries.insert(key, Held { entry, keep });
        }
    }

    /// The answer stored for `key` (of `route` and `team`), from memory, then Redis.
    pub async fn lookup(&self, key: &Key, route: &str, team: Option<&str>) -> Lookup {
        let found = match self.entries.get(key) {
            Some(h) => Lookup::Hit(h.entry),
            None => match &self.redis {
                None => Lookup::Miss,
                Some(r) => match r.get(key, route, team).await {
                    redis::Found::Entry(e) if !e.remaining().is_zero() => {
                        let e = Arc::new(e);
                        self.hold(*key, e.clone());
                        Lookup::Hit(e)
                    }
                    redis::Found::Entry(_) | redis::Found::Nothing => Lookup::Miss,
                    redis::Found::Failed => Lookup::Failed,
                },
            },
        };
        match &found {
            Lookup::Hit(e) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                if let Some(c) = e.cost_micro_usd {
                    self.saved.fetch_add(c.unsigned_abs(), Ordering::Relaxed);
                }
            }
            Lookup::Miss => {
                self.misses.fetch_add(1, Ordering::Relaxed);
            }
            Lookup::Failed => {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        found
    }

    /// A hit that was found by similarity (also counted as a hit).
    pub fn semantic_hit(&self) {
        self.semantic_hits.fetch_add(1, Ordering::Relaxed);
    }

    /// Fleet mode: the Redis backend, when the cache uses it.
    pub fn redis(&self) -> Option<&Arc<redis::RedisCache>> {
        self.redis.as_ref()
    }

    pub fn put(&self, key: Key, entry: Entry) {
        self.stored.fetch_add(1, Ordering::Relaxed);
        if let Some(r) = &self.redis {
            r.put(&key, &entry);
        }
        self.hold(key, Arc::new(entry));
    }

    /// Drops every entry, or those of one route and/or team (in Redis too: the other
    /// replicas' near caches forget them within a second). Errors say why.
    pub async fn clear(&self, route: Option<&str>, team: Option<&str>) -> Result<u64, String> {
        let local = if route.is_none() && team.is_none() {
            self.entries.invalidate_all();
            Ok(())
        } else {
            let (r, t) = (route.map(str::to_string), team.map(str::to_string));
            self.entries
                .invalidate_entries_if(move |_, h| {
                    r.as_deref().is_none_or(|r| *h.entry.route == *r)
                        && t.as_deref()
                            .is_none_or(|t| h.entry.team.as_deref() == Some(t))
                })
                .map(|_| ())
        };
        local.map_err(|e| format!("clearing the memory cache: {e}"))?;
        match &self.redis {
            Some(r) => r
                .clear(route, team)
                .await
                .map_err(|e| format!("clearing the cache in redis: {e}")),
            None => Ok(0),
        }
    }

    pub fn stats(&self) -> Value {
        self.entries.run_pending_tasks();
        let hits = self.hits.load(Ordering::Relaxed);
        let misses = self.misses.load(Ordering::Relaxed);
        json!({
            "backend": if self.redis.is_some() { "redis" } else { "memory" },
            "errors": self.errors.load(Ordering::Relaxed),
            "semantic_hits": self.semantic_hits.load(Ordering::Relaxed),
            "entries": self.entries.entry_count(),
            "bytes": self.entries.weighted_size(),
            "hits": hits,
            "misses": misses,
            "hit_rate": if hits + misses == 0 { 0.0 } else { hits as f64 / (hits + misses) as f64 },
            "stored": self.stored.load(Ordering::Relaxed),
            "saved_micro_usd": self.saved.load(Ordering::Relaxed),
        })
    }
}

/// Who shares an entry: the key, its team (callers without one are their own scope), or all.
pub fn scope_id(scope: CacheScope, team: Option<&str>, principal: &str) -> String {
    match (scope, team) {
        (CacheScope::Global, _) => String::new(),
        (CacheScope::Team, Some(t)) => format!("team:{t}"),
        (CacheScope::Team | CacheScope::Key, _) => format!("principal:{principal}"),
    }
}

/// The key of a request: the route, the scope, and the request with JSON key order and
/// whitespace normalised and `user`, `metadata`, `stream`, `stream_options` left out (every
/// message and content part, tools, tool_choice, response_format, sampling, `n`, `seed` and
/// reasoning settings count). `None` when the body is not a JSON object.
pub fn key(route: &str, scope: &str, body: &[u8]) -> Option<Key> {
    let v = normalized(body)?;
    // serde_json's map is ordered by key: the text below is the same for any key order.
    let text = serde_json::to_vec(&v).ok()?;
    let mut h = Sha256::new();
    h.update(route.as_bytes());
    h.update([0]);
    h.update(scope.as_bytes());
    h.update([0]);
    h.update(&text);
    Some(h.finalize().into())
}

/// The request as the cache sees it: without the members that do not change the answer
/// (`IGNORED`, `model`), and with the spellings that mean the same thing made one, so that
/// every surface's request for the same thing is the same entry: `max_tokens` is
/// `max_completion_tokens` (what the Anthropic and Responses surfaces send), and a message
/// whose content is one bare text part is that text. Parts with anything more (a
/// `cache_control`, say) are kept as they are.
pub(crate) fn normalized(body: &[u8]) -> Option<Value> {
    let mut v: Value = serde_json::from_slice(body).ok()?;
    let o = v.as_object_mut()?;
    for k in IGNORED {
        o.remove(k);
    }
    o.remove("model");
    if let Some(m) = o.remove("max_tokens") {
        o.entry("max_completion_tokens").or_insert(m);
    }
    if let Some(messages) = o.get_mut("messages").and_then(Value::as_array_mut) {
        for m in messages {
            let Some(content) = m.get_mut("content") else {
                continue;
            };
            let single_text = content.as_array().and_then(|parts| match parts.as_slice() {
                [p] if p.as_object().is_some_and(|o| o.len() == 2) && p["type"] == "text" => {
                    p["text"].as_str().map(str::to_string)
                }
                _ => None,
            });
            if let Some(t) = single_text {
                *content = Value::String(t);
            }
        }
    }
    Some(v)
}

/// A stored JSON answer as the chunks of an OpenAI stream (with the usage chunk when asked).
pub fn sse_from_json(body: &[u8], include_usage: bool) -> Option<Bytes> {
    let r = decode_response(body).ok()?;
    let created = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["created"].as_u64())
        .unwrap_or(0);
    let mut enc = StreamEncoder::new(r.id.clone(), r.model.clone(), created, include_usage);
    let mut out = Vec::with_capacity(body.len() * 2);
    for e in events_of(&r) {
        enc.event(&e, &mut out);
    }
    enc.finish(&mut out);
    Some(Bytes::from(out))
}

/// A completed OpenAI stream folded into the `chat.completion` JSON it adds up to.
pub fn json_from_sse(sse: &[u8]) -> Option<Bytes> {
    let mut dec = OpenAiStream::default();
    let mut events = Vec::new();
    dec.feed(sse, &mut events).ok()?;
    dec.finish(&mut events).ok()?;
    let r = ChatResponse::from_events(&events);
    let created = crate::app::unix_ms() / 1000;
    let v = encode_response(&r, u64::try_from(created).unwrap_or(0));
    serde_json::to_vec(&v).ok().map(Bytes::from)
}

/// The events a whole answer streams as.
fn events_of(r: &ChatResponse) -> Vec<StreamEvent> {
    let mut out = vec![StreamEvent::Start {
        id: r.id.clone(),
        model: r.model.clone(),
    }];
    for t in &r.thinking {
        if let Some(d) = &t.redacted {
            out.push(StreamEvent::RedactedThinking(d.clone()));
            continue;
        }
        out.push(StreamEvent::Thinking(t.text.clone()));
        if let Some(s) = &t.signature {
            out.push(StreamEvent::ThinkingSignature(s.clone()));
        }
    }
    if let Some(t) = &r.text {
        out.push(StreamEvent::Text(t.clone()));
    }
    for (i, c) in r.tool_calls.iter().enumerate() {
        let index = u32::try_from(i).unwrap_or(u32::MAX);
        out.push(StreamEvent::ToolCallStart {
            index,
            id: c.id.clone(),
            name: c.name.clone(),
        });
        out.push(StreamEvent::ToolCallArgs {
            index,
            delta: c.arguments.clone(),
        });
    }
    out.push(StreamEvent::Finish(r.finish));
    out.push(StreamEvent::Usage(r.usage.unwrap_or_default()));
    out
}

/// What the stored answer used, for the hit's record.
pub fn usage_of(body: &[u8]) -> Option<Usage> {
    crate::canonical::usage::from_openai_json(body)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn keys_ignore_order_whitespace_and_delivery_fields() {
        let a = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0,"stream":true,"user":"u1"}"#;
        let b = br#"{ "temperature" : 0, "messages" : [ {"content":"hi", "role":"user"} ], "model":"m", "metadata":{"x":1}}"#;
        assert_eq!(key("r", "s", a), key("r", "s", b));
        let c = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0.5}"#;
        assert_ne!(key("r", "s", a), key("r", "s", c), "sampling counts");
        assert_ne!(key("r", "s", a), key("r", "t", a), "scope counts");
        assert_ne!(key("r", "s", a), key("q", "s", a), "route counts");
        assert_eq!(key("r", "s", b"[1]"), None);
        // The same request as the Anthropic and Responses surfaces spell it.
        let chat = br#"{"model":"m","max_tokens":50,"messages":[{"role":"user","content":"hi"}]}"#;
        let other = br#"{"model":"m","max_completion_tokens":50,"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}"#;
        assert_eq!(key("r", "s", chat), key("r", "s", other));
        let marked = br#"{"model":"m","max_tokens":50,"messages":[{"role":"user","content":[{"type":"text","text":"hi","cache_control":{"type":"ephemeral"}}]}]}"#;
        assert_ne!(
            key("r", "s", chat),
            key("r", "s", marked),
            "vendor fields count"
        );
    }

    #[test]
    fn answers_replay_between_json_and_sse() {
        let json = br#"{"id":"c1","object":"chat.completion","created":7,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;
        let sse = sse_from_json(json, true).unwrap();
        let text = String::from_utf8(sse.to_vec()).unwrap();
        assert!(
            text.contains("Hello there") && text.ends_with("data: [DONE]\n\n"),
            "{text}"
        );
        assert!(text.contains("\"completion_tokens\":2"), "{text}");
        let back = json_from_sse(&sse).unwrap();
        let v: Value = serde_json::from_slice(&back).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "Hello there");
        assert_eq!(v["usage"]["completion_tokens"], 2);
    }

    fn hit(c: &ResponseCache, k: Key) -> bool {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        matches!(rt.block_on(c.lookup(&k, "a", None)), Lookup::Hit(_))
    }

    #[test]
    fn entries_are_bounded_expire_and_clear_by_route_and_team() {
        let c = ResponseCache::new(1 << 20, None);
        let entry = |route: &str, team: Option<&str>, ttl| Entry {
            body: Bytes::from_static(b"{}"),
            stored: Instant::now(),
            ttl,
            cost_micro_usd: Some(5),
            route: Arc::from(route),
            team: team.map(Arc::from),
        };
        c.put([1; 32], entry("a", Some("t1"), Duration::from_secs(60)));
        c.put([2; 32], entry("b", Some("t2"), Duration::from_secs(60)));
        c.put([3; 32], entry("a", Some("t2"), Duration::from_millis(1)));
        std::thread::sleep(Duration::from_millis(20));
        assert!(!hit(&c, [3; 32]), "expired");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(rt.block_on(c.clear(Some("a"), None)), Ok(0));
        c.entries.run_pending_tasks();
        assert!(!hit(&c, [1; 32]));
        assert!(hit(&c, [2; 32]));
        assert_eq!(c.stats()["saved_micro_usd"], 5);
    }
}
