//! The `cache:` section and the per-route `cache:` override: the response cache.

use super::units::{parse_bytes, positive_duration};
use super::ConfigError;
use serde::Deserialize;
use std::time::Duration;

pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);
pub const DEFAULT_MAX_SIZE: u64 = 256 << 20;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    /// `memory` (default); `redis` is not built yet.
    pub backend: Option<String>,
    /// Memory backend: the most bytes of answers kept (`256MiB` default).
    pub max_size: Option<String>,
    /// How long an answer is served (`1h` default).
    pub ttl: Option<String>,
    /// Who shares entries: `key`, `team` (default) or `global`.
    pub scope: Option<String>,
    /// The semantic cache (not built yet): parsed so configs are forward-compatible.
    pub semantic: Option<RawSemantic>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSemantic {
    pub embedding_model: Option<String>,
    pub threshold: Option<f64>,
    /// Asked of the embedding route as `dimensions` (models that can shorten their vectors).
    pub dimensions: Option<u64>,
    /// Longest wait for an embedding; slower is a miss.
    pub timeout: Option<String>,
}

/// A route's `cache:`: `false` turns it off, `true` or a map turns it on (with overrides).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawRouteCache {
    On(bool),
    With(RawRouteCacheFields),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouteCacheFields {
    pub ttl: Option<String>,
    pub semantic: Option<bool>,
    /// Semantic hits also for a last turn that is a tool result, or a forced tool call.
    pub semantic_tools: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheScope {
    Key,
    Team,
    Global,
}

impl CacheScope {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheScope::Key => "key",
            CacheScope::Team => "team",
            CacheScope::Global => "global",
        }
    }
}

/// Where entries live: this process's memory, or Redis (`redis.url`), shared by replicas.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CacheBackend {
    #[default]
    Memory,
    Redis,
}

/// The semantic cache's embedder and how close is close enough.
#[derive(Debug, Clone, PartialEq)]
pub struct SemanticConfig {
    /// A route that serves embeddings.
    pub embedding_model: String,
    /// Cosine similarity of the last user turns at or above which an answer is reused.
    pub threshold: f64,
    pub dimensions: Option<u64>,
    pub timeout: Duration,
}

pub const DEFAULT_THRESHOLD: f64 = 0.92;
pub const DEFAULT_EMBED_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct CacheConfig {
    pub backend: CacheBackend,
    /// `None`: no route may use the semantic cache.
    pub semantic: Option<SemanticConfig>,
    /// The memory backend's bound (with Redis: the bound of each replica's near cache).
    pub max_size: u64,
    pub ttl: Duration,
    pub scope: CacheScope,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            backend: CacheBackend::Memory,
            semantic: None,
            max_size: DEFAULT_MAX_SIZE,
            ttl: DEFAULT_TTL,
            scope: CacheScope::Team,
        }
    }
}

/// A route's cache setting after validation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RouteCache {
    /// Follows the global `cache:` section (off when there is none).
    #[default]
    Inherit,
    Off,
    /// On for this route, with its own TTL when set.
    On {
        ttl: Option<Duration>,
        /// Answers reused for a similar last user turn (needs `cache.semantic`).
        semantic: bool,
        /// ... also when the last turn is a tool result or a tool call is forced.
        semantic_tools: bool,
    },
}

pub fn validate(raw: Option<RawCache>, errs: &mut Vec<ConfigError>) -> Option<CacheConfig> {
    let raw = raw?;
    let mut cfg = CacheConfig::default();
    match raw.backend.as_deref() {
        None | Some("memory") => {}
        // That `redis:` is configured too is checked where both sections are known.
        Some("redis") => cfg.backend = CacheBackend::Redis,
        Some(other) => errs.push(ConfigError::new(
            "cache.backend",
            format!("{other:?} is not one of: memory, redis"),
        )),
    }
    if let Some(t) = raw.max_size.as_deref() {
        match parse_bytes(t) {
            Ok(n) if n > 0 => cfg.max_size = n,
            Ok(_) => errs.push(ConfigError::new("cache.max_size", "must be more than 0")),
            Err(e) => errs.push(ConfigError::new("cache.max_size", e)),
        }
    }
    cfg.ttl = positive_duration("cache.ttl", raw.ttl.as_deref(), cfg.ttl, errs);
    match raw.scope.as_deref() {
        None | Some("team") => {}
        Some("key") => cfg.scope = CacheScope::Key,
        Some("global") => cfg.scope = CacheScope::Global,
        Some(other) => errs.push(ConfigError::new(
            "cache.scope",
            format!("{other:?} is not one of: key, team, global"),
        )),
    }
    if let Some(sem) = raw.semantic {
        let threshold = sem.threshold.unwrap_or(DEFAULT_THRESHOLD);
        if !(threshold > 0.0 && threshold <= 1.0) {
            errs.push(ConfigError::new(
                "cache.semantic.threshold",
                format!("must be more than 0 and at most 1, got {threshold}"),
            ));
        }
        let timeout = positive_duration(
            "cache.semantic.timeout",
            sem.timeout.as_deref(),
            DEFAULT_EMBED_TIMEOUT,
            errs,
        );
        match sem.embedding_model {
            // That it names a route is checked where the routes are known.
            Some(m) if !m.is_empty() => {
                cfg.semantic = Some(SemanticConfig {
                    embedding_model: m,
                    threshold,
                    dimensions: sem.dimensions,
                    timeout,
                });
            }
            _ => errs.push(ConfigError::new(
                "cache.semantic.embedding_model",
                "required: the route that serves embeddings for the semantic cache",
            )),
        }
    }
    Some(cfg)
}

pub fn route(raw: Option<&RawRouteCache>, path: &str, errs: &mut Vec<ConfigError>) -> RouteCache {
    match raw {
        None => RouteCache::Inherit,
        Some(RawRouteCache::On(false)) => RouteCache::Off,
        Some(RawRouteCache::On(true)) => RouteCache::On {
            ttl: None,
            semantic: false,
            semantic_tools: false,
        },
        Some(RawRouteCache::With(f)) => {
            // `None` (the global TTL) when absent or wrong (the error is reported).
            let field = format!("{path}.cache.ttl");
            let ttl = Some(positive_duration(
                &field,
                f.ttl.as_deref(),
                Duration::ZERO,
                errs,
            ))
            .filter(|d| !d.is_zero());
            RouteCache::On {
                ttl,
                semantic: f.semantic.unwrap_or(false),
                semantic_tools: f.semantic_tools.unwrap_or(false),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    fn errors(yaml: &str) -> Vec<String> {
        match crate::config::from_yaml(yaml, &|_| None) {
            Ok(_) => Vec::new(),
            Err(e) => e
                .into_iter()
                .map(|e| format!("{}: {}", e.path, e.message))
                .collect(),
        }
    }

    #[test]
    fn the_redis_backend_needs_the_redis_section() {
        let e = errors("cache: {backend: redis}\n");
        assert!(
            e.iter()
                .any(|m| m.starts_with("cache.backend: redis needs")),
            "{e:?}"
        );
        let ok = errors("cache: {backend: redis}\nredis: {url: \"redis://127.0.0.1:6379\"}\n");
        assert!(ok.is_empty(), "{ok:?}");
        let bad = errors("cache: {backend: disk}\n");
        assert!(
            bad.iter().any(|m| m.contains("not one of: memory, redis")),
            "{bad:?}"
        );
    }

    #[test]
    fn semantic_routes_need_an_embedding_route_and_a_sane_threshold() {
        let models = "providers: [{name: p, kind: mock}]\nmodels:\n  - {name: chat, cache: {semantic: true}, deployments: [{provider: p, model: m}]}\n  - {name: emb, deployments: [{provider: p, model: e}]}\n";
        let e = errors(models);
        assert!(
            e.iter()
                .any(|m| m.starts_with("models[0].cache.semantic: needs")),
            "{e:?}"
        );
        let ok = errors(&format!(
            "{models}cache: {{semantic: {{embedding_model: emb}}}}\n"
        ));
        assert!(ok.is_empty(), "{ok:?}");
        let e = errors(&format!(
            "{models}cache: {{semantic: {{embedding_model: nope, threshold: 1.5}}}}\n"
        ));
        assert!(
            e.iter()
                .any(|m| m.starts_with("cache.semantic.embedding_model: no model named \"nope\"")),
            "{e:?}"
        );
        assert!(
            e.iter().any(|m| m.starts_with("cache.semantic.threshold")),
            "{e:?}"
        );
    }
}
