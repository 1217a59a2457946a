//! The `redis:` section: the shared limit state of a fleet (rate limits, concurrency leases,
//! budget reservations) and what a replica does when Redis cannot be reached.

use super::units::positive_duration;
use super::ConfigError;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    /// `redis://host:port[/db]` (no TLS yet); absent = limits are kept in this process's memory.
    pub url: Option<String>,
    /// Prefix of every key Sluice writes (default `sluice`); also the Cluster hash tag.
    pub key_prefix: Option<String>,
    pub on_failure: Option<OnFailure>,
    /// How many replicas share the limits; with `on_failure: local` each replica keeps
    /// limits and budgets divided by this while Redis is unreachable.
    pub replicas: Option<u64>,
    /// How long a concurrency slot or budget hold outlives a replica that stopped renewing it.
    pub lease: Option<String>,
    /// Longest wait for Redis on the request path before it counts as unreachable.
    pub timeout: Option<String>,
    /// Share circuit-breaker openings and closings with the other replicas (pub/sub).
    pub share_breakers: Option<bool>,
}

/// What a replica does when Redis cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Limits and budgets kept per replica, each divided by `replicas`.
    #[default]
    Local,
    /// Limited keys are refused (429) until Redis is back.
    Closed,
}

#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub url: String,
    pub key_prefix: String,
    pub on_failure: OnFailure,
    pub replicas: u64,
    pub lease: Duration,
    pub timeout: Duration,
    /// A breaker that opens (or closes) on one replica does so on every replica.
    pub share_breakers: bool,
}

pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(250);

pub fn validate(raw: RawRedis, errs: &mut Vec<ConfigError>) -> Option<RedisConfig> {
    let mut dur = |field: &str, v: Option<String>, default: Duration| {
        positive_duration(&format!("redis.{field}"), v.as_deref(), default, errs)
    };
    let lease = dur("lease", raw.lease, DEFAULT_LEASE);
    let timeout = dur("timeout", raw.timeout, DEFAULT_TIMEOUT);
    let url = raw.url?;
    // TLS (`rediss://`) is not built in yet: refuse it here rather than fail at first use.
    if !url.starts_with("redis://") {
        errs.push(ConfigError::new(
            "redis.url",
            format!(
                "unsupported URL {url:?}; use redis://HOST:PORT[/DB] (TLS is not supported yet)"
            ),
        ));
    }
    let key_prefix = raw.key_prefix.unwrap_or_else(|| "sluice".to_string());
    // The prefix is the hash tag: braces inside it would split a request's keys over slots.
    if key_prefix.is_empty() || key_prefix.contains(['{', '}']) {
        errs.push(ConfigError::new(
            "redis.key_prefix",
            "must be non-empty and contain no braces",
        ));
    }
    let replicas = match raw.replicas {
        Some(0) => {
            errs.push(ConfigError::new("redis.replicas", "must be at least 1"));
            1
        }
        Some(n) => n,
        None => 1,
    };
    Some(RedisConfig {
        url,
        key_prefix,
        on_failure: raw.on_failure.unwrap_or_default(),
        replicas,
        lease,
        timeout,
        share_breakers: raw.share_breakers.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

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
    fn redis_section_defaults_and_field_paths() {
        let cfg =
            crate::config::from_yaml("redis: {url: redis://127.0.0.1:6379}", &|_| None).unwrap();
        let r = cfg.redis.unwrap();
        assert_eq!(
            (
                r.key_prefix.as_str(),
                r.on_failure,
                r.replicas,
                r.lease,
                r.timeout
            ),
            (
                "sluice",
                OnFailure::Local,
                1,
                DEFAULT_LEASE,
                DEFAULT_TIMEOUT
            )
        );
        assert!(crate::config::from_yaml("{}", &|_| None)
            .unwrap()
            .redis
            .is_none());
        let e = errors(
            "redis: {url: http://x, key_prefix: 'a{b}', replicas: 0, lease: 0s, on_failure: open}",
        );
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("redis.on_failure"), "{e:?}");
        let e = errors("redis: {url: http://x, key_prefix: 'a{b}', replicas: 0, lease: 0s}");
        for field in [
            "redis.url",
            "redis.key_prefix",
            "redis.replicas",
            "redis.lease",
        ] {
            assert!(e.iter().any(|m| m.starts_with(field)), "{field}: {e:?}");
        }
        assert!(!errors("redis: {url: redis://h, typo: 1}").is_empty());
        assert!(errors("redis: {url: rediss://h}")[0].contains("TLS"));
    }
}
