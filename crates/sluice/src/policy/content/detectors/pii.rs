//! Personal data: email, phone numbers (international and North-American formats), payment
//! cards (Luhn + issuer prefix), IBAN (mod-97), US SSN, IPv4/IPv6. Locale packs would add
//! files like this one (national ids, local phone formats) and a name in `BUILTINS`.

use super::{bounded, pattern, Found};
use regex::Regex;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

static EMAIL: LazyLock<Option<Regex>> = LazyLock::new(|| {
    pattern(
        r"(?i-u)[a-z0-9][a-z0-9._%+-]*@[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*\.([a-z]{2,24})\b",
    )
});
static PHONE: LazyLock<Option<Regex>> = LazyLock::new(|| {
    pattern(
        r"(?-u)\+[1-9][0-9]{0,3}(?:[ .-]?\(?[0-9]{1,5}\)?){2,6}|\(?\b[2-9][0-9]{2}\)?[ .-][0-9]{3}[ .-][0-9]{4}\b",
    )
});
static CARD: LazyLock<Option<Regex>> =
    LazyLock::new(|| pattern(r"(?-u)\b[0-9](?:[ -]?[0-9]){12,18}\b"));
static IBAN: LazyLock<Option<Regex>> = LazyLock::new(|| {
    pattern(r"(?-u)\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b")
});
static SSN: LazyLock<Option<Regex>> =
    LazyLock::new(|| pattern(r"(?-u)\b([0-9]{3})-([0-9]{2})-([0-9]{4})\b"));
static IPV4: LazyLock<Option<Regex>> =
    LazyLock::new(|| pattern(r"(?-u)\b[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\b"));
static IPV6: LazyLock<Option<Regex>> =
    LazyLock::new(|| pattern(r"(?i-u)[0-9a-f]{0,4}:[0-9a-f:.]*:[0-9a-f.]*"));

/// Top-level domains that are really file extensions (`logo@2x.png`).
const FILE_EXTENSIONS: &[&str] = &[
    "png", "jpg", "jpeg", "gif", "svg", "webp", "js", "ts", "py", "rs", "css", "html", "json",
];

fn push(out: &mut Vec<Found>, start: usize, end: usize, label: &'static str) {
    out.push(Found { start, end, label });
}

pub fn email(text: &str, out: &mut Vec<Found>) {
    let Some(re) = EMAIL.as_ref() else { return };
    if memchr::memchr(b'@', text.as_bytes()).is_none() {
        return;
    }
    for c in re.captures_iter(text) {
        let (Some(m), Some(tld)) = (c.get(0), c.get(1)) else {
            continue;
        };
        let tld = tld.as_str().to_ascii_lowercase();
        let prev = text[..m.start()].chars().next_back();
        // `user@host` inside a word or a path segment is not an address on its own.
        if prev.is_some_and(|p| p.is_alphanumeric() || p == '/' || p == '.')
            || FILE_EXTENSIONS.contains(&tld.as_str())
        {
            continue;
        }
        push(out, m.start(), m.end(), "EMAIL");
    }
}

fn digits(s: &str) -> impl Iterator<Item = u32> + '_ {
    s.chars().filter_map(|c| c.to_digit(10))
}

pub fn phone(text: &str, out: &mut Vec<Found>) {
    let Some(re) = PHONE.as_ref() else { return };
    for m in re.find_iter(text) {
        let s = m.as_str().trim_end_matches([' ', '.', '-', '(']);
        let n = digits(s).count();
        let prev = text[..m.start()].chars().next_back();
        if prev.is_some_and(|p| p.is_ascii_digit() || p == '.') {
            continue;
        }
        let international = s.starts_with('+');
        if (international && (8..=15).contains(&n)) || (!international && n == 10) {
            push(out, m.start(), m.start() + s.len(), "PHONE");
        }
    }
}

/// The Luhn checksum over the digits of `s`.
pub fn luhn(s: &str) -> bool {
    let mut sum = 0;
    let mut double = false;
    let mut n = 0;
    for d in s.chars().rev().filter_map(|c| c.to_digit(10)) {
        let v = if double {
            let x = d * 2;
            if x > 9 {
                x - 9
            } else {
                x
            }
        } else {
            d
        };
        sum += v;
        double = !double;
        n += 1;
    }
    n > 0 && sum % 10 == 0
}

/// Issuer prefixes (Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay, Maestro).
fn known_issuer(d: &str) -> bool {
    let p2: u32 = d.get(..2).and_then(|p| p.parse().ok()).unwrap_or(0);
    let p4: u32 = d.get(..4).and_then(|p| p.parse().ok()).unwrap_or(0);
    d.starts_with('4')
        || (51..=55).contains(&p2)
        || (2221..=2720).contains(&p4)
        || p2 == 34
        || p2 == 37
        || p4 == 6011
        || p2 == 65
        || p2 == 35
        || p2 == 36
        || p2 == 38
        || p2 == 30
        || p2 == 62
        || p2 == 50
        || (56..=69).contains(&p2)
}

pub fn payment_card(text: &str, out: &mut Vec<Found>) {
    let Some(re) = CARD.as_ref() else { return };
    for m in re.find_iter(text) {
        let s = m.as_str();
        let d: String = s.chars().filter(char::is_ascii_digit).collect();
        // Mixed separators (`1234-5678 9012`) are unlikely for a card written by a person.
        let mixed = s.contains(' ') && s.contains('-');
        if (13..=19).contains(&d.len()) && !mixed && known_issuer(&d) && luhn(&d) {
            push(out, m.start(), m.end(), "CARD");
        }
    }
}

/// ISO 13616: move the first four characters to the end, letters to numbers, mod 97 == 1.
pub fn iban_valid(s: &str) -> bool {
    let c: Vec<char> = s.chars().filter(|c| !c.is_whitespace()).collect();
    if !(15..=34).contains(&c.len()) {
        return false;
    }
    let mut rem: u32 = 0;
    for ch in c[4..].iter().chain(&c[..4]) {
        let v = match ch.to_digit(36) {
            Some(v) => v,
            None => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

pub fn iban(text: &str, out: &mut Vec<Found>) {
    let Some(re) = IBAN.as_ref() else { return };
    for m in re.find_iter(text) {
        if iban_valid(m.as_str()) {
            push(out, m.start(), m.end(), "IBAN");
        }
    }
}

pub fn ssn(text: &str, out: &mut Vec<Found>) {
    let Some(re) = SSN.as_ref() else { return };
    for c in re.captures_iter(text) {
        let (Some(m), Some(a), Some(g), Some(s)) = (c.get(0), c.get(1), c.get(2), c.get(3)) else {
            continue;
        };
        let area = a.as_str();
        let ok = area != "000"
            && area != "666"
            && !area.starts_with('9')
            && g.as_str() != "00"
            && s.as_str() != "0000";
        // Part of a longer dashed number (a date, a serial) is not an SSN.
        let rest = &text[m.end()..];
        let longer = rest.starts_with('-') && rest[1..].starts_with(|c: char| c.is_ascii_digit());
        if ok && !longer && !text[..m.start()].ends_with('-') {
            push(out, m.start(), m.end(), "SSN");
        }
    }
}

pub fn ip(text: &str, out: &mut Vec<Found>) {
    if let Some(re) = IPV4.as_ref() {
        for m in re.find_iter(text) {
            let before = &text[..m.start()];
            let after = &text[m.end()..];
            // `1.2.3.4.5` is a version, not an address.
            let dotted = |s: &str| s.starts_with(|c: char| c.is_ascii_digit());
            if before.ends_with('.') || (after.starts_with('.') && dotted(&after[1..])) {
                continue;
            }
            if m.as_str().parse::<Ipv4Addr>().is_ok() {
                push(out, m.start(), m.end(), "IP");
            }
        }
    }
    if memchr::memchr(b':', text.as_bytes()).is_none() {
        return;
    }
    if let Some(re) = IPV6.as_ref() {
        for m in re.find_iter(text) {
            let s = m.as_str().trim_end_matches('.');
            let groups = s.split(':').filter(|g| !g.is_empty()).count();
            if groups >= 2
                && bounded(text, m.start(), m.start() + s.len())
                && s.parse::<Ipv6Addr>().is_ok()
            {
                push(out, m.start(), m.start() + s.len(), "IP");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(f: fn(&str, &mut Vec<Found>), text: &str) -> Vec<String> {
        let mut out = Vec::new();
        f(text, &mut out);
        out.iter()
            .map(|m| text[m.start..m.end].to_string())
            .collect()
    }

    #[test]
    fn patterns_compile() {
        for p in [&EMAIL, &PHONE, &CARD, &IBAN, &SSN, &IPV4, &IPV6] {
            assert!(p.is_some());
        }
    }

    #[test]
    fn checksums() {
        assert!(luhn("4111111111111111"));
        assert!(!luhn("4111111111111112"));
        assert!(iban_valid("GB82 WEST 1234 5698 7654 32"));
        assert!(!iban_valid("GB82 WEST 1234 5698 7654 33"));
    }

    #[test]
    fn spans_are_exact() {
        assert_eq!(
            labels(email, "mail bob.s@example.co.uk."),
            ["bob.s@example.co.uk"]
        );
        assert_eq!(
            labels(payment_card, "card 4111-1111-1111-1111 ok"),
            ["4111-1111-1111-1111"]
        );
        assert_eq!(
            labels(phone, "call +44 20 7946 0958 now"),
            ["+44 20 7946 0958"]
        );
        assert_eq!(
            labels(ip, "host 10.0.0.5 and ::1 and fe80::1ff:fe23:4567:890a"),
            ["10.0.0.5", "fe80::1ff:fe23:4567:890a"]
        );
    }
}
