//! The semantic cache: an answer is reused for a request that is the same as a stored one in
//! everything but the wording of its last user turn. Three gates, all required:
//!
//! 1. **Context**: everything but the last user turn's text is identical (route, scope,
//!    system prompt, every earlier turn, tools, parameters): the `context` hash. "Yes, cancel
//!    it" in two different conversations never meet.
//! 2. **Similarity**: the cosine of the two last turns' embeddings is at least the threshold.
//! 3. **Critical tokens**: the numbers, identifiers, quoted strings and negations of the two
//!    last turns are the same, in the same order. "Track order 48213" is not "Track order
//!    48231", "cancel it" is not "don't cancel it", whatever the embeddings say.
//!
//! A request whose last message is a tool result, or that forces a tool call, is not looked up
//! semantically unless the route opts in (`semantic_tools: true`); nor is one whose last turn
//! holds anything but text.
//!
//! The index is in memory: per context, the last turns stored under it (at most
//! `PER_CONTEXT`), scanned exactly. The context gate leaves a handful of candidates per lookup,
//! so an exact scan costs microseconds and never misses a neighbour; an approximate index
//! (HNSW) would only add memory and a recall below 1 (docs/cache.md).

use super::Key;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most last turns kept per context (the oldest goes first).
pub const PER_CONTEXT: usize = 64;

/// What a request brings to a semantic lookup.
#[derive(Debug, Clone)]
pub struct Probe {
    /// Hash of the route, scope and request without its last user turn's text.
    pub context: Key,
    /// The last user turn's text (what is embedded).
    pub text: String,
    pub critical: Vec<String>,
}

/// The request's probe, or `None` when it cannot be looked up semantically: not a chat
/// request, its last message is not a user text turn (a tool result counts only with
/// `tools_ok`), or it forces a tool call (unless `tools_ok`).
pub fn probe(route: &str, scope: &str, body: &[u8], tools_ok: bool) -> Option<Probe> {
    let mut v = super::normalized(body)?;
    let o = v.as_object_mut()?;
    if !tools_ok && forces_tool(o.get("tool_choice")) {
        return None;
    }
    let last = o.get_mut("messages")?.as_array_mut()?.last_mut()?;
    match last.get("role").and_then(Value::as_str) {
        Some("user") => {}
        Some("tool" | "function") if tools_ok => {}
        _ => return None,
    }
    let text = text_of(last.get("content")?)?;
    if text.trim().is_empty() {
        return None;
    }
    if let Some(m) = last.as_object_mut() {
        m.insert("content".into(), Value::String(String::new()));
    }
    let rest = serde_json::to_vec(&v).ok()?;
    let mut h = Sha256::new();
    for part in [b"semantic".as_slice(), route.as_bytes(), scope.as_bytes()] {
        h.update(part);
        h.update([0]);
    }
    h.update(&rest);
    Some(Probe {
        context: h.finalize().into(),
        critical: critical_tokens(&text),
        text,
    })
}

fn forces_tool(choice: Option<&Value>) -> bool {
    match choice {
        Some(Value::String(s)) => s == "required" || s == "any",
        Some(Value::Object(_)) => true,
        _ => false,
    }
}

/// A message's text: a string, or parts that are all text (joined by newlines).
fn text_of(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            let mut out = Vec::with_capacity(parts.len());
            for p in parts {
                if p.get("type").and_then(Value::as_str) != Some("text") {
                    return None;
                }
                out.push(p.get("text")?.as_str()?);
            }
            Some(out.join("\n"))
        }
        _ => None,
    }
}

const NEGATIONS: &[&str] = &[
    "not",
    "no",
    "never",
    "nor",
    "none",
    "nothing",
    "nobody",
    "nowhere",
    "neither",
    "without",
    "cannot",
    "dont",
    "doesnt",
    "didnt",
    "isnt",
    "arent",
    "wasnt",
    "werent",
    "wont",
    "cant",
    "couldnt",
    "shouldnt",
    "wouldnt",
    "hasnt",
    "havent",
    "hadnt",
    "mustnt",
    "neednt",
    "aint",
    "except",
    "unless",
    "exclude",
    "excluding",
];

/// The tokens two last turns must share exactly, in order: quoted strings, numbers, anything
/// that looks like an identifier (digits mixed with letters, `_ . @ / : # -` inside a word,
/// inner capitals, all capitals, a capitalised word that does not start a sentence), and
/// negations (as `not`).
pub fn critical_tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    // Quoted strings first, whole; what is outside them is tokenised below.
    let mut outside = String::with_capacity(text.len());
    while let Some(start) = rest.find(['"', '`', '“', '”']) {
        outside.push_str(&rest[..start]);
        let q = rest[start..].chars().next().unwrap_or('"');
        let close = match q {
            '“' => '”',
            c => c,
        };
        let after = &rest[start + q.len_utf8()..];
        match after.find(close) {
            Some(end) => {
                out.push(format!("\"{}\"", &after[..end]));
                outside.push(' ');
                rest = &after[end + close.len_utf8()..];
            }
            None => {
                rest = after;
            }
        }
    }
    outside.push_str(rest);
    let mut sentence_start = true;
    for raw in outside.split_whitespace() {
        let word = raw.trim_matches(|c: char| !c.is_alphanumeric() && c != '$' && c != '%');
        let ends_sentence = raw.ends_with(['.', '!', '?', ':', ';']);
        if word.is_empty() {
            sentence_start |= ends_sentence;
            continue;
        }
        let folded: String = word
            .chars()
            .filter(|c| *c != '\'' && *c != '’')
            .flat_map(char::to_lowercase)
            .collect();
        let letters = word.chars().filter(|c| c.is_alphabetic()).count();
        let has_digit = word.chars().any(|c| c.is_ascii_digit());
        let inner_punct = word
            .trim_matches(|c: char| !c.is_alphanumeric())
            .chars()
            .any(|c| matches!(c, '_' | '.' | '@' | '/' | ':' | '#' | '-'));
        let upper = word.chars().filter(|c| c.is_uppercase()).count();
        let inner_capital = word.chars().skip(1).any(char::is_uppercase);
        let all_caps = letters >= 2 && upper == letters;
        let proper =
            !sentence_start && letters >= 2 && word.chars().next().is_some_and(char::is_uppercase);
        let lower = word.to_lowercase();
        if NEGATIONS.contains(&folded.as_str()) || lower.ends_with("n't") || lower.ends_with("n’t")
        {
            out.push("not".into());
        } else if has_digit || inner_punct || inner_capital || all_caps || proper {
            out.push(word.to_string());
        }
        sentence_start = ends_sentence;
    }
    out
}

/// Cosine similarity (0 when either vector is zero or their lengths differ).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() || a.is_empty() {
        return 0.0;
    }
    let (mut dot, mut na, mut nb) = (0f32, 0f32, 0f32);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na.sqrt() * nb.sqrt())
    }
}

struct Indexed {
    vector: Arc<[f32]>,
    critical: Vec<String>,
    key: Key,
    expires: Instant,
}

/// Last turns by context, for finding a stored answer to a similar request.
pub struct SemanticIndex {
    contexts: moka::sync::Cache<Key, Arc<Mutex<Vec<Indexed>>>>,
}

impl SemanticIndex {
    pub fn new(max_contexts: u64) -> Self {
        Self {
            contexts: moka::sync::Cache::builder()
                .max_capacity(max_contexts)
                .build(),
        }
    }

    /// The exact key of the most similar stored last turn that passes every gate, and its
    /// similarity.
    pub fn find(&self, p: &Probe, vector: &[f32], threshold: f64) -> Option<(Key, f32)> {
        let bucket = self.contexts.get(&p.context)?;
        let list = bucket.lock().ok()?;
        let now = Instant::now();
        list.iter()
            .filter(|e| e.expires > now && e.critical == p.critical)
            .map(|e| (e.key, cosine(&e.vector, vector)))
            .filter(|(_, sim)| f64::from(*sim) >= threshold)
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }

    /// Remembers that the answer stored under `key` answered `p` (for `ttl`).
    pub fn insert(&self, p: &Probe, vector: Arc<[f32]>, key: Key, ttl: Duration) {
        self.insert_parts(p.context, p.critical.clone(), vector, key, ttl);
    }

    /// [`SemanticIndex::insert`] from its parts (an entry another replica indexed).
    pub fn insert_parts(
        &self,
        context: Key,
        critical: Vec<String>,
        vector: Arc<[f32]>,
        key: Key,
        ttl: Duration,
    ) {
        let bucket = self
            .contexts
            .get_with(context, || Arc::new(Mutex::new(Vec::new())));
        let Ok(mut list) = bucket.lock() else { return };
        let now = Instant::now();
        list.retain(|e| e.expires > now && e.key != key);
        if list.len() >= PER_CONTEXT {
            list.remove(0);
        }
        list.push(Indexed {
            vector,
            critical,
            key,
            expires: now + ttl,
        });
    }

    pub fn clear(&self) {
        self.contexts.invalidate_all();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn body(system: &str, last: &str) -> Vec<u8> {
        serde_json::json!({"model": "m", "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": last}]})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn the_context_is_everything_but_the_last_turns_text() {
        let a = probe(
            "r",
            "s",
            &body("be brief", "How do I reset my password?"),
            false,
        )
        .unwrap();
        let b = probe(
            "r",
            "s",
            &body("be brief", "how can I reset my password"),
            false,
        )
        .unwrap();
        assert_eq!(a.context, b.context);
        assert_eq!(a.text, "How do I reset my password?");
        let c = probe(
            "r",
            "s",
            &body("be long", "How do I reset my password?"),
            false,
        )
        .unwrap();
        assert_ne!(a.context, c.context, "a different system prompt");
        let d = probe(
            "r",
            "t",
            &body("be brief", "How do I reset my password?"),
            false,
        )
        .unwrap();
        assert_ne!(a.context, d.context, "another scope");
    }

    #[test]
    fn tool_turns_and_forced_tools_only_with_the_opt_in() {
        let tool = serde_json::json!({"model": "m", "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]})
        .to_string();
        assert!(probe("r", "s", tool.as_bytes(), false).is_none());
        assert!(probe("r", "s", tool.as_bytes(), true).is_some());
        let forced = serde_json::json!({"model": "m", "tool_choice": "required",
            "messages": [{"role": "user", "content": "weather?"}]})
        .to_string();
        assert!(probe("r", "s", forced.as_bytes(), false).is_none());
        let image = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]})
        .to_string();
        assert!(probe("r", "s", image.as_bytes(), true).is_none());
    }

    #[test]
    fn critical_tokens_catch_numbers_names_quotes_and_negations() {
        assert_eq!(critical_tokens("Track order 48213 please"), ["48213"]);
        assert_ne!(
            critical_tokens("Track order 48213"),
            critical_tokens("Track order 48231")
        );
        assert_eq!(critical_tokens("Please don't cancel it"), ["not"]);
        assert_eq!(critical_tokens("Please cancel it"), Vec::<String>::new());
        assert_eq!(
            critical_tokens("What is the capital of France?"),
            ["France"]
        );
        assert_eq!(
            critical_tokens("Rename \"old name\" to `new_name` in userService"),
            ["\"old name\"", "\"new_name\"", "userService"]
        );
        assert_eq!(
            critical_tokens("Email bob@example.com about SKU-12"),
            ["bob@example.com", "SKU-12"]
        );
        // A capital that starts a sentence is not a name.
        assert_eq!(critical_tokens("Hello. Where is it?"), Vec::<String>::new());
        assert_eq!(critical_tokens("I never said that"), ["not"]);
    }

    #[test]
    fn the_index_needs_every_gate() {
        let ix = SemanticIndex::new(100);
        let p = probe("r", "s", &body("x", "cancel order 12"), false).unwrap();
        let v: Arc<[f32]> = Arc::from(vec![1.0, 0.0, 0.0]);
        ix.insert(&p, v, [7; 32], Duration::from_secs(60));
        assert_eq!(
            ix.find(&p, &[0.99, 0.1, 0.0], 0.9).map(|f| f.0),
            Some([7; 32])
        );
        assert!(ix.find(&p, &[0.5, 0.8, 0.0], 0.9).is_none(), "too far");
        let other = probe("r", "s", &body("x", "cancel order 13"), false).unwrap();
        assert_eq!(other.context, p.context);
        assert!(
            ix.find(&other, &[1.0, 0.0, 0.0], 0.9).is_none(),
            "another number"
        );
        let elsewhere = probe("r", "s", &body("y", "cancel order 12"), false).unwrap();
        assert!(
            ix.find(&elsewhere, &[1.0, 0.0, 0.0], 0.9).is_none(),
            "another context"
        );
    }
}
