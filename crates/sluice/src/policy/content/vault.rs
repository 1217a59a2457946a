//! Placeholders for redacted text: `[EMAIL_1]`, numbered per label within one request, the
//! same original always getting the same placeholder. Reversible entries are restored in the
//! answer; plain redactions are numbered too but forgotten.

#[derive(Debug, Default)]
pub struct Vault {
    /// (placeholder, original, reversible)
    entries: Vec<(String, String, bool)>,
    counters: Vec<(&'static str, u32)>,
}

/// Longest placeholder we restore (`[` + label + `_` + number + `]`).
pub const MAX_PLACEHOLDER: usize = 40;

impl Vault {
    pub fn placeholder(&mut self, label: &'static str, original: &str, reversible: bool) -> String {
        if let Some(e) = self.entries.iter_mut().find(|e| e.1 == original) {
            e.2 |= reversible;
            return e.0.clone();
        }
        let n = match self.counters.iter_mut().find(|c| c.0 == label) {
            Some(c) => {
                c.1 += 1;
                c.1
            }
            None => {
                self.counters.push((label, 1));
                1
            }
        };
        let p = format!("[{label}_{n}]");
        self.entries
            .push((p.clone(), original.to_string(), reversible));
        p
    }

    /// True when an answer needs restoring.
    pub fn has_reversible(&self) -> bool {
        self.entries.iter().any(|e| e.2)
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
                .and_then(|j| {
                    let p = &tail[..=j];
                    self.entries
                        .iter()
                        .find(|e| e.2 && e.0 == p)
                        .map(|e| (j, e.1.as_str()))
                });
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
    }
}
