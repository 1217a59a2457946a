//! What the detectors see: the text folded so that evasions look like the plain thing, with a
//! map back to the original bytes so that redaction replaces what the client actually sent.
//!
//! Folding, per character: zero-width characters, bidi controls and soft hyphens are removed;
//! everything else goes through NFKC (fullwidth `１２３` -> `123`, NBSP -> space, ligatures,
//! superscripts), and Cyrillic / Greek letters that look like Latin ones become those Latin
//! letters (`рassword` with a Cyrillic `р`). Per character, not per string: composition
//! across characters does not matter to the detectors, and it keeps the map simple.
//!
//! ASCII text (nearly every prompt) is not copied: the detectors run on it directly.

use unicode_normalization::UnicodeNormalization;

/// Text as the detectors see it, and how to find the original bytes of a span of it.
pub struct Folded<'a> {
    pub text: std::borrow::Cow<'a, str>,
    /// Pieces in order: identity runs (same bytes on both sides) and single transformed
    /// characters. Empty when `text` is borrowed (identity).
    pieces: Vec<Piece>,
}

#[derive(Debug, Clone, Copy)]
struct Piece {
    norm: usize,
    norm_len: usize,
    orig: usize,
    orig_len: usize,
    identity: bool,
}

/// Removed before detection: zero-width space / joiners, word joiner, BOM, soft hyphen,
/// Mongolian vowel separator, and the bidi embedding, override and isolate controls.
pub fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{061C}' | '\u{FEFF}')
}

/// Latin look-alikes from Cyrillic and Greek, as far as they fool a reader in a word.
fn confusable(c: char) -> Option<char> {
    Some(match c {
        'а' => 'a',
        'е' => 'e',
        'о' => 'o',
        'р' => 'p',
        'с' => 'c',
        'х' => 'x',
        'у' => 'y',
        'і' => 'i',
        'ј' => 'j',
        'ѕ' => 's',
        'һ' => 'h',
        'ԁ' => 'd',
        'ԛ' => 'q',
        'ԝ' => 'w',
        'А' => 'A',
        'В' => 'B',
        'Е' => 'E',
        'К' => 'K',
        'М' => 'M',
        'Н' => 'H',
        'О' => 'O',
        'Р' => 'P',
        'С' => 'C',
        'Т' => 'T',
        'Х' => 'X',
        'І' => 'I',
        'Ј' => 'J',
        'Ѕ' => 'S',
        'ο' => 'o',
        'α' => 'a',
        'ν' => 'v',
        'ι' => 'i',
        'Α' => 'A',
        'Β' => 'B',
        'Ε' => 'E',
        'Ζ' => 'Z',
        'Η' => 'H',
        'Ι' => 'I',
        'Κ' => 'K',
        'Μ' => 'M',
        'Ν' => 'N',
        'Ο' => 'O',
        'Ρ' => 'P',
        'Τ' => 'T',
        'Υ' => 'Y',
        'Χ' => 'X',
        _ => return None,
    })
}

/// Folds `text` (see the module docs).
pub fn fold(text: &str) -> Folded<'_> {
    if text.is_ascii() {
        return Folded {
            text: std::borrow::Cow::Borrowed(text),
            pieces: Vec::new(),
        };
    }
    let mut out = String::with_capacity(text.len());
    let mut pieces: Vec<Piece> = Vec::new();
    let mut buf = [0u8; 4];
    for (o, c) in text.char_indices() {
        let orig_len = c.len_utf8();
        let norm = out.len();
        let same = c.is_ascii();
        if same {
            out.push(c);
        } else if is_invisible(c) {
            // Removed: a zero-length piece.
        } else if let Some(l) = confusable(c) {
            out.push(l);
        } else {
            for n in std::iter::once(c).nfkc() {
                out.push(confusable(n).unwrap_or(n));
            }
        }
        let norm_len = out.len() - norm;
        let identity = same || (norm_len == orig_len && out[norm..] == *c.encode_utf8(&mut buf));
        match pieces.last_mut() {
            Some(p) if identity && p.identity && p.orig + p.orig_len == o => {
                p.norm_len += norm_len;
                p.orig_len += orig_len;
            }
            _ => pieces.push(Piece {
                norm,
                norm_len,
                orig: o,
                orig_len,
                identity,
            }),
        }
    }
    Folded {
        text: std::borrow::Cow::Owned(out),
        pieces,
    }
}

impl Folded<'_> {
    /// The original byte range of the folded range `start..end` (`start < end`): a range
    /// that starts or ends inside a transformed character covers all of it, and characters
    /// removed inside the range are inside the original range too.
    pub fn original(&self, start: usize, end: usize) -> (usize, usize) {
        if self.pieces.is_empty() {
            return (start, end);
        }
        (self.orig_start(start), self.orig_end(end))
    }

    /// The piece holding folded byte `p` (the first non-empty piece ending after it).
    fn piece_at(&self, p: usize) -> Option<&Piece> {
        let i = self.pieces.partition_point(|x| x.norm + x.norm_len <= p);
        self.pieces.get(i)
    }

    fn orig_start(&self, p: usize) -> usize {
        match self.piece_at(p) {
            Some(x) if x.identity => x.orig + (p - x.norm),
            Some(x) => x.orig,
            None => self.pieces.last().map_or(p, |x| x.orig + x.orig_len),
        }
    }

    fn orig_end(&self, p: usize) -> usize {
        match p.checked_sub(1).and_then(|q| self.piece_at(q)) {
            Some(x) if x.identity => x.orig + (p - x.norm),
            Some(x) => x.orig + x.orig_len,
            None => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span_of<'a>(orig: &'a str, f: &Folded<'_>, needle: &str) -> &'a str {
        let s = f
            .text
            .find(needle)
            .unwrap_or_else(|| panic!("{needle:?} not in {:?}", f.text));
        let (a, b) = f.original(s, s + needle.len());
        &orig[a..b]
    }

    #[test]
    fn ascii_is_borrowed() {
        let f = fold("plain text 123");
        assert!(matches!(f.text, std::borrow::Cow::Borrowed(_)));
        assert_eq!(f.original(6, 10), (6, 10));
    }

    #[test]
    fn fullwidth_zero_width_bidi_and_homoglyphs_fold_and_map_back() {
        let orig = "card ４１１１\u{200B}1111 now";
        let f = fold(orig);
        assert_eq!(f.text, "card 41111111 now");
        assert_eq!(span_of(orig, &f, "41111111"), "４１１１\u{200B}1111");
        assert_eq!(span_of(orig, &f, "now"), "now");
        let orig = "a\u{202E}b\u{00A0}c рassword é";
        let f = fold(orig);
        assert_eq!(f.text, "ab c password é");
        assert_eq!(span_of(orig, &f, "password"), "рassword");
        assert_eq!(span_of(orig, &f, "b c"), "b\u{00A0}c");
        // A ligature folds into two letters; a match inside it covers the whole ligature.
        let orig = "xﬁy";
        let f = fold(orig);
        assert_eq!(f.text, "xfiy");
        assert_eq!(span_of(orig, &f, "i"), "ﬁ");
    }
}
