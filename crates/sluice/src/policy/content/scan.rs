//! One rule over one text: find spans with its detectors, then block, count, or rewrite.

use super::detectors::{normalize, Found};
use super::{Action, Rule, Vault};

/// What a rule found in one text.
pub struct Scanned {
    pub count: usize,
    /// The text with matches replaced, when the action redacts and something matched.
    pub rewritten: Option<String>,
}

/// Every non-overlapping match of the rule's span detectors, in order, as byte ranges of
/// `text`. The detectors see `text` folded (`normalize.rs`: NFKC, no zero-width or bidi
/// characters, Latin look-alikes), so `４１１１` or `41\u{200B}11` is caught; the ranges are
/// mapped back, so a redaction replaces the characters the client sent.
pub fn find(rule: &Rule, text: &str) -> Vec<Found> {
    let folded = super::normalize::fold(text);
    let mut found = Vec::new();
    for d in &rule.detectors {
        d.find(&folded.text, &mut found);
    }
    for f in &mut found {
        (f.start, f.end) = folded.original(f.start, f.end);
    }
    normalize(&mut found);
    found
}

/// Runs `rule` over `text`; redacting actions rewrite with placeholders from `vault`.
pub fn apply(rule: &Rule, text: &str, vault: &mut Vault) -> Scanned {
    let found = find(rule, text);
    let count = found.len();
    let rewritten = match rule.action {
        Action::Redact | Action::RedactReversible if count > 0 => Some(replace(
            text,
            &found,
            vault,
            rule.action == Action::RedactReversible,
        )),
        _ => None,
    };
    Scanned { count, rewritten }
}

/// `text` with each (sorted, non-overlapping) match replaced by its placeholder.
pub fn replace(text: &str, found: &[Found], vault: &mut Vault, reversible: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    for f in found {
        out.push_str(&text[pos..f.start]);
        out.push_str(&vault.placeholder(f.label, &text[f.start..f.end], reversible));
        pos = f.end;
    }
    out.push_str(&text[pos..]);
    out
}
