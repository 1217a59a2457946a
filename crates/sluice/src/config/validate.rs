//! Raw config -> [`Config`]: every rule checked, every problem reported with its field path.

use super::raw::{
    RawBreaker, RawClassFallbacks, RawConfig, RawPrice, RawRetries, SizeOrText, UsdAmount,
};
use super::units::{parse_bytes, parse_duration};
use super::{
    defaults, BreakerConfig, ClassFallbacks, Config, ConfigError, DataPolicy, DeploymentConfig,
    EnvLookup, Locality, Mode, ModelConfig, RetryConfig, ServerConfig, StoreConfig, Strategy,
    DEFAULT_DRAIN, DEFAULT_LISTEN, DEFAULT_MAX_BODY, DEFAULT_STORE_URL,
};
use crate::policy::prices::Price;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

pub(super) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
pub(super) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub(super) const DEFAULT_STREAM_IDLE: Duration = Duration::from_secs(300);

pub fn validate(raw: RawConfig, env: EnvLookup<'_>) -> Result<Config, Vec<ConfigError>> {
    let mut errs = Vec::new();

    let listen_text = raw.server.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen = listen_text.parse::<SocketAddr>().unwrap_or_else(|_| {
        errs.push(ConfigError::new(
            "server.listen",
            format!("invalid address {listen_text:?}; expected IP:PORT such as 127.0.0.1:8080"),
        ));
        // Placeholder only; the config is rejected because errs is non-empty.
        SocketAddr::from(([127, 0, 0, 1], 8080))
    });
    let master_key = raw.server.master_key.filter(|k| {
        if k.expose().trim().is_empty() {
            errs.push(ConfigError::new(
                "server.master_key",
                "is empty; remove it or set a value (is the environment variable empty?)",
            ));
            false
        } else {
            true
        }
    });
    let max_body_bytes = match &raw.server.max_body_size {
        None => DEFAULT_MAX_BODY,
        Some(SizeOrText::Int(n)) => *n,
        Some(SizeOrText::Text(t)) => parse_bytes(t).unwrap_or_else(|e| {
            errs.push(ConfigError::new("server.max_body_size", e));
            DEFAULT_MAX_BODY
        }),
    };
    if max_body_bytes == 0 {
        errs.push(ConfigError::new(
            "server.max_body_size",
            "must be greater than 0",
        ));
    }
    let drain_timeout = duration(
        &raw.server.drain_timeout,
        "server.drain_timeout",
        DEFAULT_DRAIN,
        &mut errs,
    );
    let edge = edge(
        EdgeFields {
            header_read_timeout: &raw.server.header_read_timeout,
            body_read_timeout: &raw.server.body_read_timeout,
            idle_timeout: &raw.server.idle_timeout,
            max_header_size: &raw.server.max_header_size,
            max_connections: raw.server.max_connections,
        },
        &mut errs,
    );

    let store_url = raw
        .store
        .url
        .unwrap_or_else(|| DEFAULT_STORE_URL.to_string());
    let engine_ok = ["sqlite:", "postgres://", "postgresql://"]
        .iter()
        .any(|p| store_url.starts_with(p));
    if !engine_ok {
        errs.push(ConfigError::new(
            "store.url",
            format!(
                "unsupported store {:?}; use sqlite://PATH or postgres://USER@HOST:PORT/DB",
                super::redact_url(&store_url)
            ),
        ));
    }

    let (raw_providers, raw_models) = match (raw.providers, raw.models) {
        (Some(p), Some(m)) => (p, m),
        (None, None) => defaults::discovered(env),
        (Some(p), None) => (p, Vec::new()),
        (None, Some(m)) => {
            let (p, _) = defaults::discovered(env);
            (p, m)
        }
    };

    let mut providers = Vec::with_capacity(raw_providers.len());
    let mut by_name: HashMap<String, usize> = HashMap::new();
    for (i, rp) in raw_providers.into_iter().enumerate() {
        let path = format!("providers[{i}]");
        if rp.name.trim().is_empty() {
            errs.push(ConfigError::new(
                format!("{path}.name"),
                "must not be empty",
            ));
        } else if by_name.contains_key(&rp.name) {
            errs.push(ConfigError::new(
                format!("{path}.name"),
                format!("duplicate provider name {:?}", rp.name),
            ));
        } else {
            by_name.insert(rp.name.clone(), providers.len());
        }
        let pc = super::providers::provider(rp, &path, &mut errs);
        if raw.mode == Some(Mode::OnPrem) && pc.locality == Locality::Cloud {
            errs.push(ConfigError::new(
                format!("{path}.locality"),
                format!(
                    "provider {:?} is cloud and `mode: on_prem` refuses cloud providers; \
                     remove it or set `locality: on_prem` if it runs inside the organisation",
                    pc.name
                ),
            ));
        }
        providers.push(pc);
    }
    if providers.is_empty() {
        errs.push(ConfigError::new(
            "providers",
            "at least one provider is required",
        ));
    }

    let mut provider_names: Vec<&str> = by_name.keys().map(String::as_str).collect();
    provider_names.sort_unstable();
    let mut models: Vec<ModelConfig> = Vec::with_capacity(raw_models.len());
    let mut model_names: HashMap<String, usize> = HashMap::new();
    for (i, rm) in raw_models.iter().enumerate() {
        let path = format!("models[{i}]");
        if rm.name.trim().is_empty() {
            errs.push(ConfigError::new(
                format!("{path}.name"),
                "must not be empty",
            ));
        } else if model_names.insert(rm.name.clone(), i).is_some() {
            errs.push(ConfigError::new(
                format!("{path}.name"),
                format!("duplicate model name {:?}", rm.name),
            ));
        }
        let wildcard = rm.name.ends_with('*');
        if rm.name.matches('*').count() > usize::from(wildcard) {
            errs.push(ConfigError::new(
                format!("{path}.name"),
                "`*` is only allowed at the end (a wildcard route such as `openai/*`)",
            ));
        }
        for (j, d) in rm.deployments.iter().enumerate() {
            if d.model.contains('*') && (!wildcard || d.model != "*") {
                errs.push(ConfigError::new(
                    format!("{path}.deployments[{j}].model"),
                    "`*` (the requested name after the route's prefix) is only allowed as the whole model of a wildcard route such as `openai/*`",
                ));
            }
        }
        if rm.deployments.is_empty() && rm.complexity.is_none() {
            errs.push(ConfigError::new(
                format!("{path}.deployments"),
                "at least one deployment is required",
            ));
        }
        let mut deployments = Vec::with_capacity(rm.deployments.len());
        for (j, d) in rm.deployments.iter().enumerate() {
            let dpath = format!("{path}.deployments[{j}]");
            let idx = by_name.get(&d.provider).copied();
            if idx.is_none() {
                let hint = did_you_mean(&d.provider, &provider_names)
                    .map(|s| format!("; did you mean {s:?}?"))
                    .unwrap_or_else(|| format!("; providers are: {}", provider_names.join(", ")));
                errs.push(ConfigError::new(
                    format!("{dpath}.provider"),
                    format!("no provider named {:?}{hint}", d.provider),
                ));
            }
            if d.model.trim().is_empty() {
                errs.push(ConfigError::new(
                    format!("{dpath}.model"),
                    "must not be empty",
                ));
            }
            if d.tpm == Some(0) {
                errs.push(ConfigError::new(
                    format!("{dpath}.tpm"),
                    "must be at least 1 (leave it out for no limit)",
                ));
            }
            if d.rpm == Some(0) {
                errs.push(ConfigError::new(
                    format!("{dpath}.rpm"),
                    "must be at least 1 (leave it out for no limit)",
                ));
            }
            let weight = d.weight.unwrap_or(1);
            if weight == 0 {
                errs.push(ConfigError::new(
                    format!("{dpath}.weight"),
                    "must be at least 1",
                ));
            }
            let timeout = d.timeout.as_ref().map(|t| {
                parse_duration(t).unwrap_or_else(|e| {
                    errs.push(ConfigError::new(format!("{dpath}.timeout"), e));
                    DEFAULT_TIMEOUT
                })
            });
            deployments.push(DeploymentConfig {
                provider: idx.unwrap_or(0),
                model: d.model.clone(),
                weight,
                priority: d.priority.unwrap_or(0),
                timeout,
                price: d
                    .price
                    .as_ref()
                    .map(|p| price(p, &format!("{dpath}.price"), &mut errs)),
                rpm: d.rpm,
                tpm: d.tpm,
                timeouts: super::routing::timeouts(d.timeouts.as_ref(), &dpath, &mut errs),
                capabilities: super::routing::capabilities(
                    d.capabilities.as_ref(),
                    &dpath,
                    &mut errs,
                ),
            });
        }
        let strategy = rm.strategy.unwrap_or_default();
        if strategy == Strategy::LowestCost {
            for (j, d) in rm.deployments.iter().enumerate() {
                let priced = d.price.is_some()
                    || rm.price.is_some()
                    || crate::policy::prices::builtin(&d.model).is_some()
                    || crate::policy::prices::builtin(&rm.name).is_some();
                if !priced {
                    errs.push(ConfigError::new(
                        format!("{path}.deployments[{j}].price"),
                        "required with strategy lowest_cost unless the model has a price or is in the built-in catalog (USD per 1M tokens: {input: 2.5, output: 10})",
                    ));
                }
            }
        }
        let data_policy = rm.data_policy.unwrap_or_default();
        if data_policy == DataPolicy::LocalOnly
            && !deployments.iter().any(|d| {
                providers
                    .get(d.provider)
                    .is_some_and(|p| p.locality == Locality::OnPrem)
            })
        {
            errs.push(ConfigError::new(
                format!("{path}.data_policy"),
                "local_only needs at least one deployment on an on_prem provider",
            ));
        }
        models.push(ModelConfig {
            name: rm.name.clone(),
            deployments,
            fallbacks: rm.fallbacks.clone(),
            price: rm
                .price
                .as_ref()
                .map(|p| price(p, &format!("{path}.price"), &mut errs)),
            class_fallbacks: class_fallbacks(rm.fallbacks_by_class.as_ref()),
            strategy,
            retries: retries(rm.retries.as_ref(), &path, &mut errs),
            breaker: breaker(rm.breaker.as_ref(), &path, &mut errs),
            data_policy,
            aliases: rm.aliases.clone(),
            capabilities: super::routing::capabilities(rm.capabilities.as_ref(), &path, &mut errs),
            hedge: super::routing::hedge(rm.hedge.as_ref(), &path, &mut errs),
            complexity: super::routing::complexity(rm.complexity.as_ref(), &path, &mut errs),
            cache: super::cache::route(rm.cache.as_ref(), &path, &mut errs),
        });
    }
    for (i, rm) in raw_models.iter().enumerate() {
        for (j, a) in rm.aliases.iter().enumerate() {
            let apath = format!("models[{i}].aliases[{j}]");
            if a.trim().is_empty() {
                errs.push(ConfigError::new(apath, "must not be empty"));
            } else if model_names.insert(a.clone(), i).is_some() {
                errs.push(ConfigError::new(
                    apath,
                    format!("{a:?} is already a model name or alias"),
                ));
            }
        }
    }
    let mut all_models: Vec<&str> = model_names.keys().map(String::as_str).collect();
    all_models.sort_unstable();
    let global_class = class_fallbacks(raw.fallbacks_by_class.as_ref());
    let mut refs: Vec<(String, Option<&str>, &str)> = Vec::new();
    for (c, list) in CLASS_NAMES.iter().zip(&global_class) {
        for (j, f) in list.iter().enumerate() {
            refs.push((format!("fallbacks_by_class.{c}[{j}]"), None, f));
        }
    }
    for (i, m) in models.iter().enumerate() {
        if let Some(c) = &m.complexity {
            if !m.deployments.is_empty() {
                errs.push(ConfigError::new(
                    format!("models[{i}].deployments"),
                    "a complexity route forwards to `complexity.simple` / `complexity.hard`; leave `deployments` out",
                ));
            }
            for (field, target) in [("simple", &c.simple), ("hard", &c.hard)] {
                let tpath = format!("models[{i}].complexity.{field}");
                let nested = models
                    .iter()
                    .find(|t| t.name == *target || t.aliases.contains(target))
                    .is_some_and(|t| t.complexity.is_some());
                if nested {
                    errs.push(ConfigError::new(
                        tpath,
                        format!("{target:?} is itself a complexity route; name a route with deployments"),
                    ));
                } else {
                    refs.push((tpath, Some(&m.name), target));
                }
            }
        }
        for (j, f) in m.fallbacks.iter().enumerate() {
            refs.push((format!("models[{i}].fallbacks[{j}]"), Some(&m.name), f));
        }
        for (c, list) in CLASS_NAMES.iter().zip(&m.class_fallbacks) {
            for (j, f) in list.iter().enumerate() {
                refs.push((
                    format!("models[{i}].fallbacks_by_class.{c}[{j}]"),
                    Some(&m.name),
                    f,
                ));
            }
        }
    }
    for (path, own, f) in refs {
        if own == Some(f) {
            errs.push(ConfigError::new(path, "a model cannot fall back to itself"));
        } else if !model_names.contains_key(f) {
            let hint = did_you_mean(f, &all_models)
                .map(|s| format!("; did you mean {s:?}?"))
                .unwrap_or_default();
            errs.push(ConfigError::new(
                path,
                format!("no model named {f:?}{hint}"),
            ));
        }
    }

    let alert_webhook =
        raw.governance
            .alert_webhook
            .as_deref()
            .and_then(|u| match u.parse::<http::Uri>() {
                Ok(uri)
                    if matches!(uri.scheme_str(), Some("http" | "https"))
                        && uri.host().is_some() =>
                {
                    Some(uri)
                }
                _ => {
                    errs.push(ConfigError::new(
                        "governance.alert_webhook",
                        format!("{u:?} is not an absolute http(s) URL"),
                    ));
                    None
                }
            });
    let alert_thresholds = raw
        .governance
        .alert_thresholds
        .unwrap_or_else(|| vec![50, 80, 100]);
    for (i, t) in alert_thresholds.iter().enumerate() {
        if !(1..=1000).contains(t) {
            errs.push(ConfigError::new(
                format!("governance.alert_thresholds[{i}]"),
                "must be a percentage from 1 to 1000",
            ));
        }
    }

    let budget_offset_ms = match raw.governance.budget_timezone.as_deref() {
        None => 0,
        Some(tz) => parse_utc_offset(tz).unwrap_or_else(|| {
            errs.push(ConfigError::new(
                "governance.budget_timezone",
                format!("{tz:?} is not UTC or a fixed offset such as +02:00 or -05:30"),
            ));
            0
        }),
    };

    let unpriced_allowed = match raw.governance.unpriced.as_deref() {
        None | Some("deny") => false,
        Some("allow") => true,
        Some(other) => {
            errs.push(ConfigError::new(
                "governance.unpriced",
                format!("{other:?} is not one of: deny, allow"),
            ));
            false
        }
    };
    let cap_output_when_short = match raw.governance.when_budget_short.as_deref() {
        None | Some("reject") => false,
        Some("cap_output") => true,
        Some(other) => {
            errs.push(ConfigError::new(
                "governance.when_budget_short",
                format!("{other:?} is not one of: reject, cap_output"),
            ));
            false
        }
    };
    let default_max_output_tokens = match raw.governance.default_max_output_tokens {
        Some(0) => {
            errs.push(ConfigError::new(
                "governance.default_max_output_tokens",
                "must be at least 1",
            ));
            1
        }
        Some(n) => n,
        None => super::DEFAULT_MAX_OUTPUT_TOKENS,
    };

    let responses = raw.responses.validate().unwrap_or_else(|(path, e)| {
        errs.push(ConfigError::new(path, e));
        super::responses::ResponsesConfig::default()
    });

    let model_set = model_names.keys().cloned().collect();
    let policies = super::policies::policies(raw.policies, &model_set, &mut errs);
    let usage = super::usage::validate(raw.usage, &mut errs);
    let cache = super::cache::validate(raw.cache, &mut errs);
    let redis = super::redis::validate(raw.redis, &mut errs);
    if cache
        .as_ref()
        .is_some_and(|c| c.backend == super::cache::CacheBackend::Redis)
        && redis.is_none()
    {
        errs.push(ConfigError::new(
            "cache.backend",
            "redis needs the `redis:` section (its url is where entries are kept)",
        ));
    }
    let semantic = cache.as_ref().and_then(|c| c.semantic.as_ref());
    if let Some(sem) = semantic {
        if !model_names.contains_key(&sem.embedding_model) {
            errs.push(ConfigError::new(
                "cache.semantic.embedding_model",
                format!(
                    "no model named {:?} serves embeddings here",
                    sem.embedding_model
                ),
            ));
        }
    }
    for (i, m) in models.iter().enumerate() {
        if matches!(m.cache, super::cache::RouteCache::On { semantic: true, .. })
            && semantic.is_none()
        {
            errs.push(ConfigError::new(
                format!("models[{i}].cache.semantic"),
                "needs `cache.semantic` (its embedding_model and threshold)",
            ));
        }
    }

    if !errs.is_empty() {
        return Err(errs);
    }
    Ok(Config {
        responses,
        governance: super::GovernanceConfig {
            alert_webhook,
            alert_thresholds,
            budget_offset_ms,
            unpriced_allowed,
            cap_output_when_short,
            default_max_output_tokens,
        },
        server: ServerConfig {
            listen,
            master_key,
            max_body_bytes,
            drain_timeout,
            allow_unauthenticated: raw.server.allow_unauthenticated,
            public_metrics: raw.server.public_metrics,
            edge,
        },
        store: StoreConfig { url: store_url },
        redis,
        providers,
        models,
        policies: std::sync::Arc::new(policies),
        mode: raw.mode.unwrap_or_default(),
        class_fallbacks: global_class,
        usage,
        cache,
        source: None,
        hash: String::new(),
    })
}

/// `UTC`, `Z`, `+02:00`, `-0530` -> milliseconds east of UTC.
fn parse_utc_offset(tz: &str) -> Option<i64> {
    let tz = tz.trim();
    if matches!(tz, "UTC" | "utc" | "Z" | "GMT") {
        return Some(0);
    }
    let tz = tz.strip_prefix("UTC").unwrap_or(tz);
    let (sign, rest) = match tz.as_bytes().first()? {
        b'+' => (1, &tz[1..]),
        b'-' => (-1, &tz[1..]),
        _ => return None,
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let h: i64 = digits[..2].parse().ok()?;
    let m: i64 = digits[2..].parse().ok()?;
    (h <= 14 && m < 60).then_some(sign * (h * 60 + m) * 60_000)
}

fn usd(a: &UsdAmount, path: &str, errs: &mut Vec<ConfigError>) -> u64 {
    let text = match a {
        UsdAmount::Int(n) => n.to_string(),
        UsdAmount::Float(f) => format!("{f}"),
        UsdAmount::Text(t) => t.clone(),
    };
    match crate::policy::prices::parse_usd(&text) {
        Ok(v) => u64::try_from(v).unwrap_or(0),
        Err(e) => {
            errs.push(ConfigError::new(path, e));
            0
        }
    }
}

/// A price in USD per 1M tokens -> micro-USD per 1M tokens.
fn price(p: &RawPrice, path: &str, errs: &mut Vec<ConfigError>) -> Price {
    Price {
        input: usd(&p.input, &format!("{path}.input"), errs),
        output: usd(&p.output, &format!("{path}.output"), errs),
        cached_input: p
            .cached_input
            .as_ref()
            .map(|a| usd(a, &format!("{path}.cached_input"), errs)),
        reasoning: p
            .reasoning
            .as_ref()
            .map(|a| usd(a, &format!("{path}.reasoning"), errs)),
        cache_write: p
            .cache_write
            .as_ref()
            .map(|a| usd(a, &format!("{path}.cache_write"), errs)),
    }
}

/// In [`ClassFallbacks`] order.
const CLASS_NAMES: [&str; 4] = [
    "rate_limited",
    "server_error",
    "context_window_exceeded",
    "content_filter",
];

fn class_fallbacks(c: Option<&RawClassFallbacks>) -> ClassFallbacks {
    c.map_or_else(Default::default, |c| {
        [
            c.rate_limited.clone(),
            c.server_error.clone(),
            c.context_window_exceeded.clone(),
            c.content_filter.clone(),
        ]
    })
}

fn retries(r: Option<&RawRetries>, path: &str, errs: &mut Vec<ConfigError>) -> RetryConfig {
    let d = RetryConfig::default();
    let Some(r) = r else { return d };
    if r.max_attempts == Some(0) {
        errs.push(ConfigError::new(
            format!("{path}.retries.max_attempts"),
            "must be at least 1",
        ));
    }
    RetryConfig {
        max_attempts: r.max_attempts,
        backoff: duration(
            &r.backoff,
            &format!("{path}.retries.backoff"),
            d.backoff,
            errs,
        ),
        max_backoff: duration(
            &r.max_backoff,
            &format!("{path}.retries.max_backoff"),
            d.max_backoff,
            errs,
        ),
        deadline: duration(
            &r.deadline,
            &format!("{path}.retries.deadline"),
            d.deadline,
            errs,
        ),
    }
}

fn breaker(b: Option<&RawBreaker>, path: &str, errs: &mut Vec<ConfigError>) -> BreakerConfig {
    let d = BreakerConfig::default();
    let Some(b) = b else { return d };
    if b.error_rate.is_some_and(|r| r == 0 || r > 100) {
        errs.push(ConfigError::new(
            format!("{path}.breaker.error_rate"),
            "must be a percentage from 1 to 100",
        ));
    }
    BreakerConfig {
        failures: b.failures.unwrap_or(d.failures),
        cooldown: duration(
            &b.cooldown,
            &format!("{path}.breaker.cooldown"),
            d.cooldown,
            errs,
        ),
        error_rate: b.error_rate,
        window: duration(&b.window, &format!("{path}.breaker.window"), d.window, errs),
        min_requests: b.min_requests.unwrap_or(d.min_requests).max(1),
    }
}

/// The `server.*` fields of the HTTP edge (the rest of `server` is moved out before).
struct EdgeFields<'a> {
    header_read_timeout: &'a Option<String>,
    body_read_timeout: &'a Option<String>,
    idle_timeout: &'a Option<String>,
    max_header_size: &'a Option<SizeOrText>,
    max_connections: Option<u32>,
}

/// `server.header_read_timeout` and the other edge limits: positive, with safe defaults.
fn edge(raw: EdgeFields<'_>, errs: &mut Vec<ConfigError>) -> super::EdgeConfig {
    let d = super::EdgeConfig::default();
    let mut positive = |v: &Option<String>, path: &str, default: Duration| {
        let t = duration(v, path, default, errs);
        if t.is_zero() {
            errs.push(ConfigError::new(path, "must be greater than 0"));
        }
        t
    };
    let header_read_timeout = positive(
        raw.header_read_timeout,
        "server.header_read_timeout",
        d.header_read_timeout,
    );
    let body_read_timeout = positive(
        raw.body_read_timeout,
        "server.body_read_timeout",
        d.body_read_timeout,
    );
    let idle_timeout = positive(raw.idle_timeout, "server.idle_timeout", d.idle_timeout);
    let max_header_bytes = match raw.max_header_size {
        None => d.max_header_bytes,
        Some(SizeOrText::Int(n)) => usize::try_from(*n).unwrap_or(usize::MAX),
        Some(SizeOrText::Text(t)) => parse_bytes(t)
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
            .unwrap_or_else(|e| {
                errs.push(ConfigError::new("server.max_header_size", e));
                d.max_header_bytes
            }),
    };
    // hyper's read buffer cannot be smaller than 8 KiB.
    if max_header_bytes < 8192 {
        errs.push(ConfigError::new(
            "server.max_header_size",
            "must be at least 8KiB",
        ));
    }
    let max_connections = match raw.max_connections {
        None => d.max_connections,
        Some(0) => {
            errs.push(ConfigError::new(
                "server.max_connections",
                "must be greater than 0",
            ));
            d.max_connections
        }
        Some(n) => n as usize,
    };
    super::EdgeConfig {
        header_read_timeout,
        body_read_timeout,
        idle_timeout,
        max_header_bytes,
        max_connections,
    }
}

pub(super) fn duration(
    v: &Option<String>,
    path: &str,
    default: Duration,
    errs: &mut Vec<ConfigError>,
) -> Duration {
    match v {
        None => default,
        Some(t) => parse_duration(t).unwrap_or_else(|e| {
            errs.push(ConfigError::new(path, e));
            default
        }),
    }
}

pub(super) fn check_url(url: &str) -> Result<(), String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("invalid URL {url:?}: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => {
            return Err(format!(
                "invalid URL {url:?}: must start with http:// or https://"
            ))
        }
    }
    if uri.authority().is_none() {
        return Err(format!("invalid URL {url:?}: no host"));
    }
    if uri.query().is_some() {
        return Err(format!("invalid URL {url:?}: must not have a query string"));
    }
    Ok(())
}

/// The closest candidate, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(input: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(input, c), *c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn budget_timezones_are_utc_or_fixed_offsets() {
        assert_eq!(parse_utc_offset("UTC"), Some(0));
        assert_eq!(parse_utc_offset("+02:00"), Some(7_200_000));
        assert_eq!(parse_utc_offset("-0530"), Some(-19_800_000));
        assert_eq!(parse_utc_offset("Europe/Paris"), None);
        assert_eq!(parse_utc_offset("+25:00"), None);
    }

    #[test]
    fn governance_section_is_checked_with_field_paths() {
        let errs = crate::config::from_yaml(
            "governance: {alert_webhook: 'ftp://x', alert_thresholds: [0], budget_timezone: Mars}",
            &|_| None,
        )
        .unwrap_err();
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "governance.alert_webhook",
                "governance.alert_thresholds[0]",
                "governance.budget_timezone"
            ]
        );
        let cfg = crate::config::from_yaml(
            "governance: {alert_webhook: 'http://127.0.0.1:9/h', budget_timezone: '+01:00'}\n\
             models: [{name: m, price: {input: 2.5, output: '10'}, deployments: [{provider: mock, model: mock-1, price: {input: 0, output: 0.000001}}]}]",
            &|_| None,
        )
        .unwrap();
        assert_eq!(cfg.governance.budget_offset_ms, 3_600_000);
        assert_eq!(cfg.governance.alert_thresholds, [50, 80, 100]);
        let m = &cfg.models[0];
        assert_eq!(
            m.price.map(|p| (p.input, p.output)),
            Some((2_500_000, 10_000_000))
        );
        assert_eq!(m.deployments[0].price.map(|p| p.output), Some(1));
    }
}
