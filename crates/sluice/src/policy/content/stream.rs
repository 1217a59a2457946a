//! guard_output on an OpenAI SSE stream. Each chunk's `choices[].delta.content`, and each
//! `choices[].delta.tool_calls[].function.arguments` (for rules with `scan_tools`), joins a
//! pending text of its own (per choice, per tool call); matches are acted on once they start before the emit boundary
//! (pending length minus [`STREAM_WINDOW`]), so a match split across chunks is seen whole
//! and at most the window is held back. At `finish_reason` / `[DONE]` / end everything left
//! is scanned and released. A block ends the stream with an error event; reversible
//! placeholders (which may arrive split) are restored before the text goes out. When every
//! rule only flags, nothing is held back: the window is kept as look-behind only.

use super::detectors::STREAM_WINDOW;
use super::vault::MAX_PLACEHOLDER;
use super::{record_hit, scan, Action, PolicyError, PolicyHit, PolicySet, Vault};
use serde_json::Value;
use std::sync::Arc;

pub const STAGE: &str = "output";

/// What to do with one SSE event.
pub enum EventAction {
    Forward,
    Replace(Vec<u8>),
    Block(PolicyError),
}

/// One text of a stream: a choice's content, or one tool call's arguments in a choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Content(u64),
    Tool(u64, u64),
}

pub struct StreamGuard {
    set: Arc<PolicySet>,
    rules: Vec<usize>,
    vault: Vault,
    /// Per slot: text held back (or, when not holding, the look-behind).
    pending: Vec<(Slot, String)>,
    /// False when no rule can change the text (flag only, nothing to restore).
    hold: bool,
    pub hits: Vec<PolicyHit>,
}

impl StreamGuard {
    pub fn new(set: Arc<PolicySet>, rules: Vec<usize>, vault: Vault) -> Self {
        let hold = vault.has_reversible()
            || rules
                .iter()
                .filter_map(|&i| set.rules.get(i))
                .any(|r| !matches!(r.action, Action::Flag | Action::RouteLocal));
        Self {
            hold,
            set,
            rules,
            vault,
            pending: Vec::new(),
            hits: Vec::new(),
        }
    }

    /// One `data:` payload (not `[DONE]`).
    pub fn on_event(&mut self, payload: &[u8]) -> EventAction {
        let Ok(mut root) = serde_json::from_slice::<Value>(payload) else {
            return EventAction::Forward;
        };
        let Some(choices) = root.get_mut("choices").and_then(Value::as_array_mut) else {
            return EventAction::Forward;
        };
        let mut touched = false;
        for c in choices {
            let idx = c.get("index").and_then(Value::as_u64).unwrap_or(0);
            let finished = c.get("finish_reason").is_some_and(|f| !f.is_null());
            let incoming = match c.pointer_mut("/delta/content") {
                Some(Value::String(s)) => Some(std::mem::take(s)),
                _ => None,
            };
            // Tool-call arguments stream like content, each call on its own.
            if let Some(calls) = c
                .pointer_mut("/delta/tool_calls")
                .and_then(Value::as_array_mut)
            {
                for call in calls {
                    let t = call.get("index").and_then(Value::as_u64).unwrap_or(0);
                    let Some(Value::String(args)) = call.pointer_mut("/function/arguments") else {
                        continue;
                    };
                    let incoming = std::mem::take(args);
                    match self.drain(Slot::Tool(idx, t), &incoming, false, true) {
                        Ok(emit) => *args = emit,
                        Err(e) => return EventAction::Block(e),
                    }
                    touched = true;
                }
            }
            if finished {
                // The choice ended: what its tool calls still hold goes out with it.
                let held: Vec<u64> = self
                    .pending
                    .iter()
                    .filter_map(|p| match p.0 {
                        Slot::Tool(i, t) if i == idx && !p.1.is_empty() => Some(t),
                        _ => None,
                    })
                    .collect();
                for t in held {
                    let emit = match self.drain(Slot::Tool(idx, t), "", true, true) {
                        Ok(e) => e,
                        Err(e) => return EventAction::Block(e),
                    };
                    if emit.is_empty() {
                        continue;
                    }
                    let call = serde_json::json!({"index": t, "function": {"arguments": emit}});
                    if let Some(delta) = c.get_mut("delta").and_then(Value::as_object_mut) {
                        match delta.get_mut("tool_calls").and_then(Value::as_array_mut) {
                            Some(calls) => calls.push(call),
                            None => {
                                delta.insert("tool_calls".into(), Value::Array(vec![call]));
                            }
                        }
                    }
                    touched = true;
                }
            }
            if incoming.is_none() && !finished {
                continue;
            }
            let emit = match self.drain(
                Slot::Content(idx),
                incoming.as_deref().unwrap_or(""),
                finished,
                false,
            ) {
                Ok(e) => e,
                Err(e) => return EventAction::Block(e),
            };
            if incoming.is_some() || !emit.is_empty() {
                if let Some(delta) = c.get_mut("delta").and_then(Value::as_object_mut) {
                    delta.insert("content".into(), Value::String(emit));
                } else if let Some(obj) = c.as_object_mut() {
                    obj.insert("delta".into(), serde_json::json!({ "content": emit }));
                }
                touched = true;
            }
        }
        if !touched || !self.hold {
            // Not holding: the event goes out as it came (its text was only scanned).
            return EventAction::Forward;
        }
        serde_json::to_vec(&root).map_or(EventAction::Forward, EventAction::Replace)
    }

    /// End of stream (`[DONE]` or the body's end): whatever is still held, as SSE events.
    pub fn flush(&mut self) -> Result<Vec<u8>, PolicyError> {
        let mut out = Vec::new();
        let slots: Vec<Slot> = self.pending.iter().map(|p| p.0).collect();
        for slot in slots {
            let emit = self.drain(slot, "", true, matches!(slot, Slot::Tool(..)))?;
            if emit.is_empty() {
                continue;
            }
            let (idx, delta) = match slot {
                Slot::Content(i) => (i, serde_json::json!({ "content": emit })),
                Slot::Tool(i, t) => (
                    i,
                    serde_json::json!({"tool_calls": [{"index": t, "function": {"arguments": emit}}]}),
                ),
            };
            let ev = serde_json::json!({
                "object": "chat.completion.chunk",
                "choices": [{"index": idx, "delta": delta, "finish_reason": null}],
            });
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(ev.to_string().as_bytes());
            out.extend_from_slice(b"\n\n");
        }
        Ok(out)
    }

    /// Adds `incoming` to `key`'s text and returns the text that may go out now. Tool-call
    /// arguments (`tool`) are scanned only by rules with `scan_tools`.
    fn drain(
        &mut self,
        key: Slot,
        incoming: &str,
        last: bool,
        tool: bool,
    ) -> Result<String, PolicyError> {
        let slot = match self.pending.iter().position(|p| p.0 == key) {
            Some(i) => i,
            None => {
                self.pending.push((key, String::new()));
                self.pending.len() - 1
            }
        };
        let mut text = std::mem::take(&mut self.pending[slot].1);
        text.push_str(incoming);
        let mut boundary = if last {
            text.len()
        } else {
            floor_char(&text, text.len().saturating_sub(STREAM_WINDOW))
        };
        for &ri in &self.rules {
            let Some(rule) = self.set.rules.get(ri) else {
                continue;
            };
            if tool && !rule.scan_tools {
                continue;
            }
            let ready: Vec<_> = scan::find(rule, &text)
                .into_iter()
                .filter(|f| f.start < boundary)
                .collect();
            if ready.is_empty() {
                continue;
            }
            record_hit(&mut self.hits, rule, STAGE, ready.len());
            match rule.action {
                Action::Block => {
                    return Err(PolicyError::Blocked {
                        rule: rule.name.clone(),
                        stage: STAGE,
                        detail: None,
                    })
                }
                Action::Redact | Action::RedactReversible => {
                    let cut = ready.iter().map(|f| f.end).max().unwrap_or(0).max(boundary);
                    let reversible = rule.action == Action::RedactReversible;
                    let head = scan::replace(&text[..cut], &ready, &mut self.vault, reversible);
                    boundary = head.len();
                    text = head + &text[cut..];
                }
                Action::Flag | Action::RouteLocal => {
                    boundary = boundary.max(ready.iter().map(|f| f.end).max().unwrap_or(0));
                }
            }
        }
        if !last && self.vault.has_reversible() {
            // Never cut through a placeholder that is still arriving (`[EMA` + `IL_1]`).
            if let Some(open) = text[..boundary].rfind('[') {
                if boundary - open < MAX_PLACEHOLDER && !text[open..boundary].contains(']') {
                    boundary = open;
                }
            }
        }
        let rest = text.split_off(boundary);
        self.pending[slot].1 = rest;
        if !self.hold {
            // Everything went out as it came; `text` was only scanned.
            return Ok(incoming.to_string());
        }
        Ok(if self.vault.has_reversible() {
            self.vault.restore(&text)
        } else {
            text
        })
    }
}

fn floor_char(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The SSE error event that ends a blocked stream, in OpenAI's shape.
pub fn error_event(e: &PolicyError) -> Vec<u8> {
    let body = serde_json::json!({"error": {
        "message": e.to_string(),
        "type": "content_policy_violation",
        "code": "content_policy_violation",
        "param": null,
    }});
    let mut out = b"data: ".to_vec();
    out.extend_from_slice(body.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
    out
}

#[cfg(test)]
mod tests;
