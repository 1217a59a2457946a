//! Keyword and phrase lists: one Aho-Corasick automaton per list, ASCII case-insensitive,
//! whole words only (a keyword inside a longer word does not match).

use super::{bounded, Found};
use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

#[derive(Debug)]
pub struct Keywords {
    ac: AhoCorasick,
    label: &'static str,
}

impl Keywords {
    pub fn new(words: &[String], label: &'static str) -> Result<Self, String> {
        let ac = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::LeftmostLongest)
            .build(words)
            .map_err(|e| e.to_string())?;
        Ok(Self { ac, label })
    }

    pub fn find(&self, text: &str, out: &mut Vec<Found>) {
        for m in self.ac.find_iter(text) {
            if bounded(text, m.start(), m.end()) {
                out.push(Found {
                    start: m.start(),
                    end: m.end(),
                    label: self.label,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn whole_words_any_case() {
        let k = Keywords::new(&["project falcon".into(), "acme".into()], "KEYWORD").unwrap();
        let mut out = Vec::new();
        k.find("About Project FALCON and acmeCorp, ACME.", &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].start, 35);
    }
}
