#![allow(clippy::unwrap_used)]
use super::*;
use crate::policy::content::detectors::Detector;
use crate::policy::content::{Rule, Scope, Stage};

fn guard(action: Action, vault: Vault) -> StreamGuard {
    let set = PolicySet {
        rules: vec![Rule {
            name: "r".into(),
            stage: Stage::Output,
            detectors: vec![Detector::Email],
            action,
            scope: Scope::default(),
            scan_tools: true,
        }],
    };
    StreamGuard::new(Arc::new(set), vec![0], vault)
}

fn event(content: Option<&str>, finish: bool) -> Vec<u8> {
    let mut delta = serde_json::Map::new();
    if let Some(c) = content {
        delta.insert("content".into(), c.into());
    }
    serde_json::json!({"choices": [{"index": 0, "delta": delta,
        "finish_reason": if finish { Some("stop") } else { None }}]})
    .to_string()
    .into_bytes()
}

fn content_of(payload: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
    v["choices"][0]["delta"]["content"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// Feeds `text` in pieces of `step` chars; returns what the client saw and whether it ended
/// in a block.
fn run(g: &mut StreamGuard, text: &str, step: usize) -> (String, bool) {
    let chars: Vec<char> = text.chars().collect();
    let mut seen = String::new();
    for piece in chars.chunks(step) {
        let piece: String = piece.iter().collect();
        match g.on_event(&event(Some(&piece), false)) {
            EventAction::Forward => seen.push_str(&piece),
            EventAction::Replace(p) => seen.push_str(&content_of(&p)),
            EventAction::Block(_) => return (seen, true),
        }
    }
    match g.on_event(&event(None, true)) {
        EventAction::Forward => {}
        EventAction::Replace(p) => seen.push_str(&content_of(&p)),
        EventAction::Block(_) => return (seen, true),
    }
    (seen, false)
}

const TEXT: &str = "Sure, write to dana.lee@example.com or to me. Bye!";

#[test]
fn redaction_catches_a_match_split_at_any_point() {
    for step in 1..=TEXT.len() {
        let (seen, blocked) = run(&mut guard(Action::Redact, Vault::default()), TEXT, step);
        assert!(!blocked);
        assert_eq!(
            seen, "Sure, write to [EMAIL_1] or to me. Bye!",
            "step {step}"
        );
    }
}

#[test]
fn block_ends_before_the_match_leaves() {
    for step in 1..=TEXT.len() {
        let mut g = guard(Action::Block, Vault::default());
        let (seen, blocked) = run(&mut g, TEXT, step);
        assert!(blocked, "step {step}");
        assert!(!seen.contains("dana"), "step {step}: {seen}");
        assert_eq!(g.hits.len(), 1);
    }
}

#[test]
fn split_placeholders_are_restored() {
    let mut vault = Vault::default();
    assert_eq!(vault.placeholder("EMAIL", "a@b.io", true), "[EMAIL_1]");
    let answer = "Mail [EMAIL_1] now, [x] stays, and [EMAIL_1] again.";
    for step in 1..=answer.len() {
        let mut v = Vault::default();
        v.placeholder("EMAIL", "a@b.io", true);
        let (seen, _) = run(&mut guard(Action::Flag, v), answer, step);
        assert_eq!(
            seen, "Mail a@b.io now, [x] stays, and a@b.io again.",
            "step {step}"
        );
    }
}

#[test]
fn holds_back_at_most_the_window() {
    let text = "lorem ipsum ".repeat(100);
    let mut g = guard(Action::Redact, Vault::default());
    let mut seen = 0;
    let mut fed = 0;
    for piece in text.as_bytes().chunks(7) {
        let piece = std::str::from_utf8(piece).unwrap();
        fed += piece.len();
        if let EventAction::Replace(p) = g.on_event(&event(Some(piece), false)) {
            seen += content_of(&p).len();
        }
        assert!(fed - seen <= STREAM_WINDOW, "held {} bytes", fed - seen);
    }
    // [DONE] without a finish_reason: flush releases the rest.
    let tail = String::from_utf8(g.flush().unwrap()).unwrap();
    assert!(tail.starts_with("data: "));
    let payload = tail.trim().trim_start_matches("data: ");
    assert_eq!(seen + content_of(payload.as_bytes()).len(), text.len());
}

#[test]
fn flag_only_holds_nothing_back_and_counts_once() {
    for step in 1..=TEXT.len() {
        let mut g = guard(Action::Flag, Vault::default());
        let chars: Vec<char> = TEXT.chars().collect();
        let mut seen = String::new();
        for piece in chars.chunks(step) {
            let piece: String = piece.iter().collect();
            assert!(
                matches!(
                    g.on_event(&event(Some(&piece), false)),
                    EventAction::Forward
                ),
                "step {step}: not forwarded as it came"
            );
            seen.push_str(&piece);
        }
        assert!(g.flush().unwrap().is_empty());
        assert_eq!(seen, TEXT);
        assert_eq!(g.hits.len(), 1, "step {step}");
        assert_eq!(g.hits[0].count, 1, "step {step}");
    }
}
