//! Validation of the routing additions: per-deployment timeouts, capability overrides,
//! hedging, complexity rules and active health checks.

use super::raw::{RawCapabilities, RawComplexity, RawHealthCheck, RawHedge, RawTimeouts};
use super::units::parse_duration;
use super::{
    CapabilityOverride, ComplexityConfig, ConfigError, DeploymentTimeouts, HealthCheckConfig,
    HedgeAfter, HedgeConfig,
};
use std::time::Duration;

/// Multi-step reasoning cues that make a prompt "hard" unless `complexity.keywords` says otherwise.
pub const DEFAULT_HARD_KEYWORDS: &[&str] = &[
    "step by step",
    "step-by-step",
    "prove",
    "proof",
    "derive",
    "analyze",
    "analyse",
    "algorithm",
    "debug",
    "refactor",
    "optimize",
    "trade-off",
    "tradeoffs",
    "compare and contrast",
    "plan ",
    "reason about",
];

fn opt_duration(v: Option<&String>, path: String, errs: &mut Vec<ConfigError>) -> Option<Duration> {
    let t = v?;
    match parse_duration(t) {
        Ok(d) if d.is_zero() => {
            errs.push(ConfigError::new(path, "must be greater than 0"));
            None
        }
        Ok(d) => Some(d),
        Err(e) => {
            errs.push(ConfigError::new(path, e));
            None
        }
    }
}

pub fn timeouts(
    t: Option<&RawTimeouts>,
    path: &str,
    errs: &mut Vec<ConfigError>,
) -> DeploymentTimeouts {
    let Some(t) = t else {
        return DeploymentTimeouts::default();
    };
    let p = |f: &str| format!("{path}.timeouts.{f}");
    let out = DeploymentTimeouts {
        connect: opt_duration(t.connect.as_ref(), p("connect"), errs),
        first_token: opt_duration(t.first_token.as_ref(), p("first_token"), errs),
        idle: opt_duration(t.idle.as_ref(), p("idle"), errs),
        total: opt_duration(t.total.as_ref(), p("total"), errs),
    };
    if let (Some(ft), Some(total)) = (out.first_token, out.total) {
        if ft > total {
            errs.push(ConfigError::new(
                p("first_token"),
                "must not be longer than timeouts.total",
            ));
        }
    }
    out
}

pub fn capabilities(
    c: Option<&RawCapabilities>,
    path: &str,
    errs: &mut Vec<ConfigError>,
) -> CapabilityOverride {
    let Some(c) = c else {
        return CapabilityOverride::default();
    };
    if c.context_window == Some(0) {
        errs.push(ConfigError::new(
            format!("{path}.capabilities.context_window"),
            "must be at least 1 (tokens)",
        ));
    }
    if c.max_output == Some(0) {
        errs.push(ConfigError::new(
            format!("{path}.capabilities.max_output"),
            "must be at least 1 (tokens)",
        ));
    }
    CapabilityOverride {
        context_window: c.context_window,
        max_output: c.max_output,
        vision: c.vision,
        tools: c.tools,
        json_schema: c.json_schema,
        reasoning: c.reasoning,
    }
}

pub fn hedge(h: Option<&RawHedge>, path: &str, errs: &mut Vec<ConfigError>) -> Option<HedgeConfig> {
    let h = h?;
    let p = |f: &str| format!("{path}.hedge.{f}");
    let after = if h.after.trim() == "p95" {
        HedgeAfter::P95 {
            initial: opt_duration(h.initial.as_ref(), p("initial"), errs)
                .unwrap_or(Duration::from_secs(1)),
            min: h
                .min
                .as_ref()
                .map_or(Ok(Duration::from_millis(20)), |m| parse_duration(m))
                .unwrap_or_else(|e| {
                    errs.push(ConfigError::new(p("min"), e));
                    Duration::ZERO
                }),
        }
    } else {
        if h.initial.is_some() || h.min.is_some() {
            errs.push(ConfigError::new(
                p("after"),
                "`initial` and `min` only apply with `after: p95`",
            ));
        }
        match parse_duration(&h.after) {
            Ok(d) if !d.is_zero() => HedgeAfter::Fixed(d),
            Ok(_) => {
                errs.push(ConfigError::new(p("after"), "must be greater than 0"));
                HedgeAfter::Fixed(Duration::from_secs(1))
            }
            Err(_) => {
                errs.push(ConfigError::new(
                    p("after"),
                    format!("{:?} is neither a duration (e.g. 300ms) nor `p95`", h.after),
                ));
                HedgeAfter::Fixed(Duration::from_secs(1))
            }
        }
    };
    Some(HedgeConfig { after })
}

pub fn complexity(
    c: Option<&RawComplexity>,
    path: &str,
    errs: &mut Vec<ConfigError>,
) -> Option<ComplexityConfig> {
    let c = c?;
    if c.long_prompt_tokens == Some(0) {
        errs.push(ConfigError::new(
            format!("{path}.complexity.long_prompt_tokens"),
            "must be at least 1",
        ));
    }
    let keywords = match &c.keywords {
        Some(k) => {
            for (i, w) in k.iter().enumerate() {
                if w.trim().is_empty() {
                    errs.push(ConfigError::new(
                        format!("{path}.complexity.keywords[{i}]"),
                        "must not be empty",
                    ));
                }
            }
            k.iter().map(|w| w.to_lowercase()).collect()
        }
        None => DEFAULT_HARD_KEYWORDS
            .iter()
            .map(|s| (*s).to_string())
            .collect(),
    };
    Some(ComplexityConfig {
        simple: c.simple.clone(),
        hard: c.hard.clone(),
        long_prompt_tokens: c.long_prompt_tokens.unwrap_or(2000),
        code: c.code.unwrap_or(true),
        tools: c.tools.unwrap_or(true),
        keywords,
        max_simple_messages: c.max_simple_messages.unwrap_or(12),
    })
}

pub fn health_check(
    h: Option<&RawHealthCheck>,
    path: &str,
    has_url: bool,
    errs: &mut Vec<ConfigError>,
) -> Option<HealthCheckConfig> {
    let h = h?;
    let p = |f: &str| format!("{path}.health_check.{f}");
    if !has_url {
        errs.push(ConfigError::new(
            format!("{path}.health_check"),
            "only for providers reached over HTTP (not kind mock)",
        ));
    }
    let interval =
        opt_duration(Some(&h.interval), p("interval"), errs).unwrap_or(Duration::from_secs(10));
    let timeout =
        opt_duration(h.timeout.as_ref(), p("timeout"), errs).unwrap_or(Duration::from_secs(5));
    let path_value = h.path.clone().unwrap_or_else(|| "/models".to_string());
    if !path_value.starts_with('/') {
        errs.push(ConfigError::new(p("path"), "must start with `/`"));
    }
    Some(HealthCheckConfig {
        interval,
        path: path_value,
        timeout,
    })
}
