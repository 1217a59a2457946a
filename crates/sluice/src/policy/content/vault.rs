//! Placeholders for redacted text: `[EMAIL_1]`, numbered per label within one request, the
//! same original always getting the same placeholder. Reversible entries are restored in the
//! answer; plain redactions are numbered too but forgotten.

use std::collections::HashMap;

#[derive(Debug, Default)]
pub struct Vault {
    /// (placeholder, original, reversible), in the order they were made.
    entries: Vec<(String, String, bool)>,
    /// original -> index in `entries`, and placeholder -> index: one prompt can hold 100k
    /// distinct matches, so lookups must not scan (that was O(n²) in distinct matches).
    by_original: HashMap<String, usize>,
    by_placeholder: HashMap<String, usize>,
    counters: HashMap<&'static str, u32>,
}

/// Longest placeholder we restore (`[` + label + `_` + number + `]`).
pub const MAX_PLACEHOLDER: usize = 40;

impl Vault {
    pub fn placeholder(&mut self, label: &'static str, original: &str, reversible: bool) -> String {
        if let Some(e) = self
            .by_original
            .get(original)
            .and_then(|&i| self.entries.get_mut(i))
        {
            e.2 |= reversible;
            return e.0.clone();
        }
        let n = self.counters.entry(label).or_insert(0);
        *n += 1;
        let p = format!("[{label}_{n}]");
        let i = self.entries.len();
        self.entries
            .push((p.clone(), original.to_string(), reversible));
        self.by_original.insert(original.to_string(), i);
        self.by_placeholder.insert(p.clone(), i);
        p
    }

    /// True when an answer needs restoring.
    pub fn has_reversible(&self) -> bool {
        self.entries.iter().any(|e| e.2)
    }

    /// The original behind a reversible placeholder.
    fn reversible(&self, placeholder: &str) -> Option<&str> {
        let e = self.entries.get(*self.by_placeholder.get(placeholder)?)?;
        e.2.then_some(e.1.as_str())
    }

    /// Replaces every reversible placeholder in `text` by its original.
    pub fn restore(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(i) = rest.find('[') {
            out.push_str(&rest[..i]);
            let tail = &rest[i..];
            let hit = tail
                .find(']')
                .filter(|&j| j < MAX_PLACEHOLDER)
                .and_then(|j| self.reversible(&tail[..=j]).map(|o| (j, o)));
            match hit {
                Some((j, original)) => {
                    out.push_str(original);
                    rest = &tail[j + 1..];
                }
                None => {
                    out.push('[');
                    rest = &tail[1..];
                }
            }
        }
        out.push_str(rest);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbering_and_restore() {
        let mut v = Vault::default();
        assert_eq!(v.placeholder("EMAIL", "a@x.io", true), "[EMAIL_1]");
        assert_eq!(v.placeholder("EMAIL", "b@x.io", false), "[EMAIL_2]");
        assert_eq!(v.placeholder("EMAIL", "a@x.io", true), "[EMAIL_1]");
        assert_eq!(
            v.restore("to [EMAIL_1] not [EMAIL_2] [x"),
            "to a@x.io not [EMAIL_2] [x"
        );
        assert_eq!(v.placeholder("PHONE", "1", true), "[PHONE_1]");
    }

    #[test]
    fn many_distinct_originals_round_trip() {
        let mut v = Vault::default();
        let emails: Vec<String> = (0..20_000).map(|i| format!("u{i}@x.io")).collect();
        let text: Vec<String> = emails
            .iter()
            .map(|e| v.placeholder("EMAIL", e, true))
            .collect();
        assert_eq!(text[19_999], "[EMAIL_20000]");
        assert_eq!(v.restore(&text.join(" ")), emails.join(" "));
    }
}
