//! Credentials: cloud provider keys, private-key blocks, JWTs, common API-key formats, and
//! high-entropy tokens that look like generated secrets.

use super::{pattern, Found};
use regex::Regex;
use std::sync::LazyLock;

/// Known formats, one alternation (one pass over the text).
static KNOWN: LazyLock<Option<Regex>> = LazyLock::new(|| {
    pattern(concat!(
        r"(?-u)",
        // AWS access key ids
        r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}\b",
        // PEM private keys: the whole block, or the header when the block is cut short
        r"|-----BEGIN [A-Z ]{0,20}PRIVATE KEY-----(?:[A-Za-z0-9+/=\s:,-]{0,8192}?-----END [A-Z ]{0,20}PRIVATE KEY-----)?",
        // JSON Web Tokens
        r"|\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
        // OpenAI / Anthropic style keys
        r"|\bsk-(?:proj-|ant-(?:api\d\d-)?)?[A-Za-z0-9_-]{20,}",
        // GitHub tokens
        r"|\bgh[pousr]_[A-Za-z0-9]{36,}\b|\bgithub_pat_[A-Za-z0-9_]{40,}",
        // Slack tokens
        r"|\bxox[abprs]-[A-Za-z0-9-]{10,}",
        // Google API keys
        r"|\bAIza[0-9A-Za-z_-]{35}",
        // Stripe live keys
        r"|\b[sr]k_live_[0-9A-Za-z]{20,}",
        // Azure / generic connection strings with a key
        r"|AccountKey=[A-Za-z0-9+/=]{20,}",
    ))
});

/// Candidates for the entropy check: long runs of token characters.
static TOKEN: LazyLock<Option<Regex>> = LazyLock::new(|| pattern(r"(?-u)\b[A-Za-z0-9+/_=-]{32,}"));

/// Bits per character above which a mixed-case alphanumeric token is taken for a secret.
/// Hex digests (at most 4 bits) and words stay below it.
const ENTROPY_BITS: f64 = 4.2;

pub fn find(text: &str, out: &mut Vec<Found>) {
    if let Some(re) = KNOWN.as_ref() {
        out.extend(re.find_iter(text).map(|m| Found {
            start: m.start(),
            end: m.end(),
            label: "SECRET",
        }));
    }
    let Some(re) = TOKEN.as_ref() else { return };
    for m in re.find_iter(text) {
        let s = m.as_str();
        if out
            .iter()
            .any(|f| f.start <= m.start() && m.start() < f.end)
        {
            continue;
        }
        if looks_generated(s) {
            out.push(Found {
                start: m.start(),
                end: m.end(),
                label: "SECRET",
            });
        }
    }
}

/// Mixed upper, lower and digits, no long runs of one class (words, paths), high entropy.
fn looks_generated(s: &str) -> bool {
    let b = s.as_bytes();
    let upper = b.iter().filter(|c| c.is_ascii_uppercase()).count();
    let lower = b.iter().filter(|c| c.is_ascii_lowercase()).count();
    let digit = b.iter().filter(|c| c.is_ascii_digit()).count();
    if upper < 3 || lower < 3 || digit < 3 {
        return false;
    }
    entropy(b) >= ENTROPY_BITS
}

/// Shannon entropy in bits per byte.
pub fn entropy(b: &[u8]) -> f64 {
    let mut counts = [0u32; 256];
    for &c in b {
        counts[usize::from(c)] += 1;
    }
    #[allow(clippy::cast_precision_loss)]
    let n = b.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_compile() {
        assert!(KNOWN.is_some() && TOKEN.is_some());
    }

    #[test]
    fn hex_digests_are_not_secrets() {
        let mut out = Vec::new();
        find(
            "commit e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            &mut out,
        );
        assert!(out.is_empty(), "{out:?}");
        find("key AKIAIOSFODNN7EXAMPLE here", &mut out);
        assert_eq!(out.len(), 1);
    }
}
