//! `policies:` -> [`PolicySet`]: detectors compiled (regexes, keyword automata, webhook
//! clients) and every combination checked, each problem reported with its field path.

use super::raw::{RawAction, RawDetector, RawOnError, RawPolicy, RawStage, SizeOrText};
use super::units::{parse_bytes, parse_duration};
use super::ConfigError;
use crate::policy::content::detectors::{Detector, Keywords, BUILTINS};
use crate::policy::content::webhook::Webhook;
use crate::policy::content::{Action, PolicySet, Rule, Scope, Stage};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(2);
/// Compiled size limit of one custom regex (the regex crate's own default is 10 MiB).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

pub fn policies(
    raw: Vec<RawPolicy>,
    models: &HashSet<String>,
    errs: &mut Vec<ConfigError>,
) -> PolicySet {
    let mut names = HashSet::new();
    let mut rules = Vec::with_capacity(raw.len());
    for (i, rp) in raw.into_iter().enumerate() {
        let path = format!("policies[{i}]");
        if rp.name.trim().is_empty() {
            errs.push(ConfigError::new(
                format!("{path}.name"),
                "must not be empty",
            ));
        } else if !names.insert(rp.name.clone()) {
            errs.push(ConfigError::new(
                format!("{path}.name"),
                format!("duplicate policy name {:?}", rp.name),
            ));
        }
        if let Some(r) = rule(rp, &path, models, errs) {
            rules.push(r);
        }
    }
    PolicySet { rules }
}

fn rule(
    rp: RawPolicy,
    path: &str,
    models: &HashSet<String>,
    errs: &mut Vec<ConfigError>,
) -> Option<Rule> {
    let stage = match rp.stage.unwrap_or(RawStage::Input) {
        RawStage::Input => Stage::Input,
        RawStage::Output => Stage::Output,
        RawStage::Both => Stage::Both,
    };
    let action = match rp.action {
        RawAction::Block => Action::Block,
        RawAction::Redact => Action::Redact,
        RawAction::RedactReversible => Action::RedactReversible,
        RawAction::Flag => Action::Flag,
        RawAction::RouteLocal => Action::RouteLocal,
    };
    if rp.detect.is_empty() {
        errs.push(ConfigError::new(
            format!("{path}.detect"),
            "at least one detector is required",
        ));
    }
    if action == Action::RouteLocal && stage != Stage::Input {
        errs.push(ConfigError::new(
            format!("{path}.action"),
            "route_local decides where a request goes, so it needs `stage: input`",
        ));
    }
    let mut detectors = Vec::with_capacity(rp.detect.len());
    for (j, d) in rp.detect.into_iter().enumerate() {
        let dpath = format!("{path}.detect[{j}]");
        if let Some(det) = detector(d, &dpath, errs) {
            let redacts = matches!(action, Action::Redact | Action::RedactReversible);
            if redacts && !det.has_spans() {
                errs.push(ConfigError::new(
                    dpath.clone(),
                    "max_size and webhook judge the whole text and cannot be redacted; use block, flag or route_local",
                ));
            }
            if !det.has_spans() && stage != Stage::Input {
                errs.push(ConfigError::new(
                    dpath,
                    "max_size and webhook detectors run on the input stage only",
                ));
            }
            detectors.push(det);
        }
    }
    let scope = rp.scope.map_or_else(Scope::default, |s| Scope {
        team: s.team,
        key: s.key,
        model: s.model,
    });
    if let Some(m) = &scope.model {
        if !models.contains(m) {
            errs.push(ConfigError::new(
                format!("{path}.scope.model"),
                format!("no model named {m:?}"),
            ));
        }
    }
    Some(Rule {
        name: Arc::from(rp.name.as_str()),
        stage,
        detectors,
        action,
        scope,
        scan_tools: rp.scan_tools.unwrap_or(true),
    })
}

fn label(
    raw: Option<String>,
    default: &'static str,
    path: &str,
    errs: &mut Vec<ConfigError>,
) -> &'static str {
    match raw {
        None => default,
        Some(l)
            if !l.is_empty()
                && l.len() <= 24
                && l.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_') =>
        {
            // A handful of labels per config, alive for the process: leaking is fine.
            Box::leak(l.into_boxed_str())
        }
        Some(_) => {
            errs.push(ConfigError::new(
                format!("{path}.label"),
                "must be 1-24 characters of A-Z, 0-9 and _",
            ));
            default
        }
    }
}

fn detector(d: RawDetector, path: &str, errs: &mut Vec<ConfigError>) -> Option<Detector> {
    let c = match d {
        RawDetector::Builtin(name) => {
            return Detector::builtin(&name).or_else(|| {
                errs.push(ConfigError::new(
                    path,
                    format!(
                        "unknown detector {name:?}; built-ins are: {}; or use {{regex: ...}}, {{keywords: [...]}}, {{webhook: {{url: ...}}}}, {{max_size: ...}}",
                        BUILTINS.join(", ")
                    ),
                ));
                None
            });
        }
        RawDetector::Custom(c) => c,
    };
    let kinds = usize::from(c.regex.is_some())
        + usize::from(c.keywords.is_some())
        + usize::from(c.webhook.is_some())
        + usize::from(c.max_size.is_some());
    if kinds != 1 {
        errs.push(ConfigError::new(
            path,
            "a custom detector needs exactly one of regex, keywords, webhook, max_size",
        ));
        return None;
    }
    if let Some(p) = c.regex {
        let label = label(c.label, "MATCH", path, errs);
        return match regex::RegexBuilder::new(&p)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
        {
            Ok(re) if re.is_match("") => {
                errs.push(ConfigError::new(
                    format!("{path}.regex"),
                    "matches the empty string",
                ));
                None
            }
            Ok(re) => Some(Detector::Regex { re, label }),
            Err(e) => {
                errs.push(ConfigError::new(
                    format!("{path}.regex"),
                    format!("invalid regex: {e}"),
                ));
                None
            }
        };
    }
    if let Some(words) = c.keywords {
        let label = label(c.label, "KEYWORD", path, errs);
        if words.is_empty() || words.iter().any(|w| w.trim().is_empty()) {
            errs.push(ConfigError::new(
                format!("{path}.keywords"),
                "must be a non-empty list of non-empty phrases",
            ));
            return None;
        }
        return match Keywords::new(&words, label) {
            Ok(k) => Some(Detector::Keywords(k)),
            Err(e) => {
                errs.push(ConfigError::new(format!("{path}.keywords"), e));
                None
            }
        };
    }
    if c.label.is_some() {
        errs.push(ConfigError::new(
            format!("{path}.label"),
            "only used with regex or keywords",
        ));
    }
    if let Some(size) = c.max_size {
        let n = match size {
            SizeOrText::Int(n) => n,
            SizeOrText::Text(t) => parse_bytes(&t)
                .map_err(|e| errs.push(ConfigError::new(format!("{path}.max_size"), e)))
                .ok()?,
        };
        if n == 0 {
            errs.push(ConfigError::new(
                format!("{path}.max_size"),
                "must be greater than 0",
            ));
        }
        return Some(Detector::MaxSize(usize::try_from(n).unwrap_or(usize::MAX)));
    }
    let w = c.webhook?;
    let url = w.url.trim();
    let uri = match super::validate::check_url(url)
        .and_then(|()| url.parse::<http::Uri>().map_err(|e| e.to_string()))
    {
        Ok(u) => u,
        Err(e) => {
            errs.push(ConfigError::new(format!("{path}.webhook.url"), e));
            return None;
        }
    };
    let timeout = match &w.timeout {
        None => DEFAULT_WEBHOOK_TIMEOUT,
        Some(t) => match parse_duration(t) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                errs.push(ConfigError::new(
                    format!("{path}.webhook.timeout"),
                    "must be greater than 0",
                ));
                DEFAULT_WEBHOOK_TIMEOUT
            }
            Err(e) => {
                errs.push(ConfigError::new(format!("{path}.webhook.timeout"), e));
                DEFAULT_WEBHOOK_TIMEOUT
            }
        },
    };
    let fail_closed = w.on_error.unwrap_or(RawOnError::Closed) == RawOnError::Closed;
    Some(Detector::Webhook(Arc::new(Webhook::new(
        uri,
        timeout,
        fail_closed,
    ))))
}
