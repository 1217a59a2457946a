//! guard_output for a JSON chat answer: output rules over `choices[].message.content` (and
//! tool-call arguments when configured), then reversible placeholders restored.

use super::{record_hit, scan, Action, PolicyError, PolicyHit, Rule, Vault};
use bytes::Bytes;
use serde_json::Value;

pub const STAGE: &str = "output";

/// Calls `f` on every text of a chat completion answer.
fn for_each_text(root: &mut Value, tools: bool, f: &mut dyn FnMut(&mut String)) {
    let Some(choices) = root.get_mut("choices").and_then(Value::as_array_mut) else {
        return;
    };
    for c in choices {
        let Some(m) = c.get_mut("message") else {
            continue;
        };
        if let Some(Value::String(s)) = m.get_mut("content") {
            f(s);
        }
        if tools {
            if let Some(calls) = m.get_mut("tool_calls").and_then(Value::as_array_mut) {
                for call in calls {
                    if let Some(Value::String(s)) = call.pointer_mut("/function/arguments") {
                        f(s);
                    }
                }
            }
        }
    }
}

/// The answer to send instead of `body` (`None`: send it unchanged), or the block.
pub fn guard_json(
    rules: &[&Rule],
    vault: &mut Vault,
    body: &[u8],
    hits: &mut Vec<PolicyHit>,
) -> Result<Option<Bytes>, PolicyError> {
    let Ok(mut root) = serde_json::from_slice::<Value>(body) else {
        return Ok(None);
    };
    let mut changed = false;
    for rule in rules {
        let mut count = 0;
        for_each_text(&mut root, rule.scan_tools, &mut |s| {
            let r = scan::apply(rule, s, vault);
            count += r.count;
            if let Some(new) = r.rewritten {
                *s = new;
                changed = true;
            }
        });
        record_hit(hits, rule, STAGE, count);
        if count > 0 && rule.action == Action::Block {
            return Err(PolicyError::Blocked {
                rule: rule.name.clone(),
                stage: STAGE,
                detail: None,
            });
        }
    }
    if vault.has_reversible() {
        for_each_text(&mut root, true, &mut |s| {
            let restored = vault.restore(s);
            if restored != *s {
                *s = restored;
                changed = true;
            }
        });
    }
    if !changed {
        return Ok(None);
    }
    serde_json::to_vec(&root)
        .map(|b| Some(Bytes::from(b)))
        .map_err(|e| PolicyError::BadBody(e.to_string()))
}
