//! Detectors: each finds spans of one kind of sensitive or unwanted text. Built-in families
//! live one per file; custom regex and keyword lists are compiled from the config.

pub mod injection;
pub mod keywords;
pub mod pii;
pub mod secrets;

use regex::Regex;
use std::sync::Arc;

pub use keywords::Keywords;

/// One match: a byte range of the scanned text and the placeholder label (`EMAIL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub start: usize,
    pub end: usize,
    pub label: &'static str,
}

/// Longest match (bytes) the stream window guarantees to catch when split across chunks.
/// Longer matches (long JWTs, whole private-key blocks) are still caught by their prefix.
pub const STREAM_WINDOW: usize = 256;

#[derive(Debug)]
pub enum Detector {
    Email,
    Phone,
    PaymentCard,
    Iban,
    Ssn,
    Ip,
    Secrets,
    PromptInjection,
    Regex {
        re: Regex,
        label: &'static str,
    },
    Keywords(Keywords),
    /// The whole prompt (all scanned text) is longer than this many bytes.
    MaxSize(usize),
    Webhook(Arc<super::webhook::Webhook>),
}

/// The built-in names accepted in `detect:`.
pub const BUILTINS: &[&str] = &[
    "email",
    "phone",
    "payment_card",
    "iban",
    "ssn",
    "ip",
    "secrets",
    "prompt_injection",
];

impl Detector {
    pub fn builtin(name: &str) -> Option<Detector> {
        Some(match name {
            "email" => Detector::Email,
            "phone" => Detector::Phone,
            "payment_card" => Detector::PaymentCard,
            "iban" => Detector::Iban,
            "ssn" => Detector::Ssn,
            "ip" => Detector::Ip,
            "secrets" => Detector::Secrets,
            "prompt_injection" => Detector::PromptInjection,
            _ => return None,
        })
    }

    /// True for detectors that find spans (and so can be redacted).
    pub fn has_spans(&self) -> bool {
        !matches!(self, Detector::MaxSize(_) | Detector::Webhook(_))
    }

    /// Appends every match in `text`. Whole-text detectors (size, webhook) find nothing here.
    pub fn find(&self, text: &str, out: &mut Vec<Found>) {
        match self {
            Detector::Email => pii::email(text, out),
            Detector::Phone => pii::phone(text, out),
            Detector::PaymentCard => pii::payment_card(text, out),
            Detector::Iban => pii::iban(text, out),
            Detector::Ssn => pii::ssn(text, out),
            Detector::Ip => pii::ip(text, out),
            Detector::Secrets => secrets::find(text, out),
            Detector::PromptInjection => injection::find(text, out),
            Detector::Regex { re, label } => {
                out.extend(re.find_iter(text).filter(|m| !m.is_empty()).map(|m| Found {
                    start: m.start(),
                    end: m.end(),
                    label,
                }));
            }
            Detector::Keywords(k) => k.find(text, out),
            Detector::MaxSize(_) | Detector::Webhook(_) => {}
        }
    }
}

/// Compiles a built-in pattern. The patterns are constants covered by tests, so a failure
/// is a bug; it disables that pattern rather than taking the gateway down.
pub(crate) fn pattern(p: &str) -> Option<Regex> {
    match Regex::new(p) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::error!("built-in content pattern failed to compile: {e}");
            None
        }
    }
}

/// True when the byte before `start` and the byte at `end` are not word characters.
pub(crate) fn bounded(text: &str, start: usize, end: usize) -> bool {
    let b = text.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let before = start == 0 || !word(b[start - 1]);
    let after = end >= b.len() || !word(b[end]);
    before && after
}

/// Sorts matches and drops those overlapping an earlier (longer-first) one.
pub fn normalize(found: &mut Vec<Found>) {
    found.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
    let mut last_end = 0;
    let mut first = true;
    found.retain(|f| {
        let keep = first || f.start >= last_end;
        if keep {
            last_end = f.end;
            first = false;
        }
        keep
    });
}
