//! Content policy (pipeline steps guard_input and guard_output): rules from the config, each
//! detectors + action + stage + scope, applied in config order to prompts, answers and streams.
//!
//! - `detectors/` find spans (PII, secrets, injection, custom regex, keyword lists) or judge
//!   the whole text (max size, external webhook);
//! - `normalize.rs` folds evasions (fullwidth, zero-width, bidi, look-alikes) before
//!   detection and maps matches back to the original bytes;
//! - `scan.rs` runs the span detectors of one rule over one text and applies its action;
//! - `input.rs` guards an OpenAI chat request body, `output.rs` a JSON answer, and
//!   `stream.rs` an SSE answer as it passes (bounded look-behind window);
//! - `vault.rs` numbers placeholders (`[EMAIL_1]`) and keeps originals for reversible mode.

pub mod detectors;
pub mod input;
pub mod normalize;
pub mod output;
pub mod scan;
pub mod stream;
pub mod vault;
pub mod webhook;

use detectors::Detector;
use serde::Serialize;
use std::fmt;
use std::sync::Arc;

pub use vault::Vault;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Input,
    Output,
    Both,
}

impl Stage {
    pub fn input(self) -> bool {
        matches!(self, Stage::Input | Stage::Both)
    }
    pub fn output(self) -> bool {
        matches!(self, Stage::Output | Stage::Both)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Block,
    Redact,
    RedactReversible,
    Flag,
    RouteLocal,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Block => "block",
            Action::Redact => "redact",
            Action::RedactReversible => "redact_reversible",
            Action::Flag => "flag",
            Action::RouteLocal => "route_local",
        }
    }
}

/// Who a rule applies to; every field present must match. All empty = global.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// Team id of the caller (filled by virtual keys; `None` today, so such rules never apply).
    pub team: Option<String>,
    /// Virtual key id of the caller (same).
    pub key: Option<String>,
    /// Public model name the request asks for.
    pub model: Option<String>,
}

/// The caller and target of one request, as far as policy scopes care.
#[derive(Debug, Clone, Copy, Default)]
pub struct Subject<'a> {
    pub team: Option<&'a str>,
    pub key_id: Option<&'a str>,
    pub model: &'a str,
}

impl Scope {
    pub fn matches(&self, s: &Subject<'_>) -> bool {
        let eq = |want: &Option<String>, got: Option<&str>| {
            want.as_deref().is_none_or(|w| got == Some(w))
        };
        eq(&self.team, s.team) && eq(&self.key, s.key_id) && eq(&self.model, Some(s.model))
    }
}

#[derive(Debug)]
pub struct Rule {
    pub name: Arc<str>,
    pub stage: Stage,
    pub detectors: Vec<Detector>,
    pub action: Action,
    pub scope: Scope,
    /// Also scan tool-call arguments and tool results (default on).
    pub scan_tools: bool,
}

/// Every rule, in config order.
#[derive(Default)]
pub struct PolicySet {
    pub rules: Vec<Rule>,
}

impl fmt::Debug for PolicySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.rules.iter().map(|r| &r.name))
            .finish()
    }
}

impl PolicySet {
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Indices of the rules for this request and stage, in order. Allocates only when some
    /// rule exists.
    pub fn select(&self, s: &Subject<'_>, output: bool) -> Vec<usize> {
        if self.rules.is_empty() {
            return Vec::new();
        }
        self.rules
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                (if output {
                    r.stage.output()
                } else {
                    r.stage.input()
                }) && r.scope.matches(s)
            })
            .map(|(i, _)| i)
            .collect()
    }
}

/// One rule's effect on one request: recorded in the usage record, never the matched text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyHit {
    pub rule: Arc<str>,
    pub action: &'static str,
    pub stage: &'static str,
    pub count: u32,
}

/// Adds `count` hits of `rule` at `stage`, merging with an existing entry.
pub fn record_hit(hits: &mut Vec<PolicyHit>, rule: &Rule, stage: &'static str, count: usize) {
    if count == 0 {
        return;
    }
    let count = u32::try_from(count).unwrap_or(u32::MAX);
    if let Some(h) = hits
        .iter_mut()
        .find(|h| h.rule == rule.name && h.stage == stage)
    {
        h.count = h.count.saturating_add(count);
    } else {
        hits.push(PolicyHit {
            rule: rule.name.clone(),
            action: rule.action.as_str(),
            stage,
            count,
        });
    }
    tracing::info!(rule = %rule.name, action = rule.action.as_str(), stage, count, "content policy hit");
}

/// Why the content policy stopped a request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PolicyError {
    #[error("blocked by content policy `{rule}` ({stage} stage){}", detail.map(|d| format!(": {d}")).unwrap_or_default())]
    Blocked {
        rule: Arc<str>,
        stage: &'static str,
        detail: Option<&'static str>,
    },
    #[error(
        "content policy `{rule}` requires an on-prem deployment, but model `{model}` has none"
    )]
    NoLocalDeployment { rule: Arc<str>, model: String },
    #[error("content policy could not read the request: {0}")]
    BadBody(String),
}
