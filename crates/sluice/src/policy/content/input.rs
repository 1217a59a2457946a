//! guard_input for an OpenAI chat or embeddings request: scans `messages[].content` (strings
//! and text parts) and, when the rule says so, tool-call arguments and tool results; or the
//! embeddings `input`. Only called when
//! some rule applies; the body is rebuilt (unknown fields kept) only when text was redacted.

use super::detectors::Detector;
use super::webhook::Outcome;
use super::{record_hit, scan, Action, PolicyError, PolicyHit, Rule, Vault};
use bytes::Bytes;
use serde_json::Value;
use std::sync::Arc;

pub const STAGE: &str = "input";

/// What guard_input decided for a request that was not blocked.
#[derive(Debug, Default)]
pub struct InputOutcome {
    /// The rewritten body, when something was redacted.
    pub body: Option<Bytes>,
    /// The rule that forces on-prem deployments, if any matched.
    pub route_local: Option<Arc<str>>,
    /// Placeholders handed out, for restoring the answer.
    pub vault: Vault,
}

/// Calls `f` on every scanned text of a chat request (in message order) or of an
/// embeddings request (`input`: a string or an array of strings; token arrays are skipped).
pub fn for_each_text(root: &mut Value, tools: bool, f: &mut dyn FnMut(&mut String)) {
    match root.get_mut("input") {
        Some(Value::String(s)) => f(s),
        Some(Value::Array(items)) => {
            for item in items {
                if let Value::String(s) = item {
                    f(s);
                }
            }
        }
        _ => {}
    }
    let Some(messages) = root.get_mut("messages").and_then(Value::as_array_mut) else {
        return;
    };
    for m in messages {
        let is_tool = m.get("role").and_then(Value::as_str) == Some("tool");
        if !is_tool || tools {
            match m.get_mut("content") {
                Some(Value::String(s)) => f(s),
                Some(Value::Array(parts)) => {
                    for part in parts {
                        if let Some(Value::String(s)) = part.get_mut("text") {
                            f(s);
                        }
                    }
                }
                _ => {}
            }
        }
        if tools {
            if let Some(calls) = m.get_mut("tool_calls").and_then(Value::as_array_mut) {
                for c in calls {
                    if let Some(Value::String(s)) = c.pointer_mut("/function/arguments") {
                        f(s);
                    }
                }
            }
        }
    }
}

pub async fn guard(
    rules: &[&Rule],
    body: &[u8],
    hits: &mut Vec<PolicyHit>,
) -> Result<InputOutcome, PolicyError> {
    let mut root: Value =
        serde_json::from_slice(body).map_err(|e| PolicyError::BadBody(e.to_string()))?;
    let mut out = InputOutcome::default();
    let mut changed = false;
    for rule in rules {
        let mut count = 0usize;
        let mut detail = None;
        for d in &rule.detectors {
            match d {
                Detector::MaxSize(limit) => {
                    let mut total = 0usize;
                    for_each_text(&mut root, rule.scan_tools, &mut |s| total += s.len());
                    if total > *limit {
                        count += 1;
                        detail = Some("the prompt is longer than the rule allows");
                    }
                }
                Detector::Webhook(w) => {
                    let mut joined = String::new();
                    for_each_text(&mut root, rule.scan_tools, &mut |s| {
                        joined.push_str(s);
                        joined.push('\n');
                    });
                    match w.check(&rule.name, STAGE, &joined).await {
                        Outcome::Clean => {}
                        Outcome::Flagged => count += 1,
                        Outcome::FailedClosed => {
                            count += 1;
                            detail = Some("the guardrail service did not answer (fail-closed)");
                        }
                    }
                }
                _ => {}
            }
        }
        if rule.detectors.iter().any(Detector::has_spans) {
            let vault = &mut out.vault;
            for_each_text(&mut root, rule.scan_tools, &mut |s| {
                let r = scan::apply(rule, s, vault);
                count += r.count;
                if let Some(new) = r.rewritten {
                    *s = new;
                    changed = true;
                }
            });
        }
        if count == 0 {
            continue;
        }
        record_hit(hits, rule, STAGE, count);
        match rule.action {
            Action::Block => {
                return Err(PolicyError::Blocked {
                    rule: rule.name.clone(),
                    stage: STAGE,
                    detail,
                })
            }
            Action::RouteLocal => {
                out.route_local.get_or_insert_with(|| rule.name.clone());
            }
            Action::Flag | Action::Redact | Action::RedactReversible => {}
        }
    }
    if changed {
        let bytes = serde_json::to_vec(&root).map_err(|e| PolicyError::BadBody(e.to_string()))?;
        out.body = Some(Bytes::from(bytes));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
