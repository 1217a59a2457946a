//! Prompt-injection heuristics: instruction-override phrases, role-play jailbreak patterns,
//! and hidden Unicode tag characters (U+E0000..U+E007F, invisible text smuggled in a prompt).

use super::{pattern, Found};
use regex::Regex;
use std::sync::LazyLock;

static PHRASES: LazyLock<Option<Regex>> = LazyLock::new(|| {
    pattern(concat!(
        r"(?i-u)",
        // instruction override
        r"\b(?:ignore|disregard|forget|override|bypass)\s+(?:all\s+|any\s+|the\s+|your\s+|of\s+|my\s+)*(?:previous|prior|above|earlier|preceding|system|original|initial)\s+(?:instructions?|prompts?|rules|directions|guidelines|messages|context)",
        r"|\b(?:reveal|print|show|repeat|output|leak)\s+(?:me\s+)?(?:your|the)\s+(?:system\s+prompt|hidden\s+instructions|initial\s+instructions|original\s+prompt)",
        r"|\bnew\s+instructions\s*:",
        // role-play jailbreaks
        r"|\b(?:you\s+are\s+now|from\s+now\s+on\s+you\s+are|pretend\s+(?:to\s+be|you\s+are)|act\s+as|roleplay\s+as)\s+(?:an?\s+)?(?:DAN|unfiltered|unrestricted|uncensored|jailbroken|evil|amoral)\b",
        r"|\bdo\s+anything\s+now\b|\bdeveloper\s+mode\s+(?:enabled|on|activated)\b",
        r"|\bwithout\s+(?:any\s+)?(?:restrictions|filters|guidelines|safety)\s+(?:or|and)\s+(?:restrictions|filters|guidelines|censorship|limits)\b",
    ))
});

pub fn find(text: &str, out: &mut Vec<Found>) {
    if let Some(re) = PHRASES.as_ref() {
        out.extend(re.find_iter(text).map(|m| Found {
            start: m.start(),
            end: m.end(),
            label: "INJECTION",
        }));
    }
    // Tag characters are encoded F3 A0 80..81 xx in UTF-8.
    let b = text.as_bytes();
    let mut run: Option<(usize, usize)> = None;
    for i in memchr::memchr_iter(0xF3, b) {
        if b.get(i + 1) == Some(&0xA0) && matches!(b.get(i + 2), Some(0x80 | 0x81)) {
            run = match run {
                Some((s, e)) if e == i => Some((s, i + 4)),
                Some((s, e)) => {
                    out.push(Found {
                        start: s,
                        end: e,
                        label: "INJECTION",
                    });
                    Some((i, i + 4))
                }
                None => Some((i, i + 4)),
            };
        }
    }
    if let Some((start, end)) = run {
        out.push(Found {
            start,
            end,
            label: "INJECTION",
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_characters_are_one_span() {
        let hidden: String = "hi"
            .chars()
            .map(|c| char::from_u32(0xE0000 + c as u32).unwrap_or(' '))
            .collect();
        let text = format!("hello {hidden} world");
        let mut out = Vec::new();
        find(&text, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(&text[out[0].start..out[0].end], hidden);
    }
}
