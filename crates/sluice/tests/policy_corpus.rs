//! Labelled corpus per detector (`tests/corpus/*.txt`): precision and recall printed, and
//! held to thresholds. A detector that finds anything in a `+` line is right about it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sluice::policy::content::detectors::{Detector, Keywords};
use std::path::Path;

struct Score {
    tp: usize,
    fp: usize,
    fn_: usize,
    misses: Vec<String>,
}

#[allow(clippy::cast_precision_loss)]
fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        1.0
    } else {
        a as f64 / b as f64
    }
}

fn score(d: &Detector, file: &str) -> Score {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut s = Score {
        tp: 0,
        fp: 0,
        fn_: 0,
        misses: Vec::new(),
    };
    for line in text.lines() {
        let (want, example) = match line.split_at_checked(2) {
            Some(("+ ", e)) => (true, e),
            Some(("- ", e)) => (false, e),
            _ => continue,
        };
        let example = example.replace("\\n", "\n");
        let mut found = Vec::new();
        d.find(&example, &mut found);
        let got = !found.is_empty();
        match (want, got) {
            (true, true) => s.tp += 1,
            (true, false) => {
                s.fn_ += 1;
                s.misses.push(format!("missed: {example}"));
            }
            (false, true) => {
                s.fp += 1;
                s.misses.push(format!("false alarm: {example}"));
            }
            (false, false) => {}
        }
    }
    assert!(s.tp + s.fn_ >= 5, "{file}: too few positive examples");
    s
}

#[test]
fn detectors_meet_precision_and_recall_on_the_corpus() {
    let keywords = Keywords::new(
        &["project falcon".into(), "acme".into(), "classified".into()],
        "KEYWORD",
    )
    .unwrap();
    let cases: Vec<(&str, Detector, f64, f64)> = vec![
        ("email", Detector::Email, 0.95, 0.9),
        ("phone", Detector::Phone, 0.95, 0.9),
        ("payment_card", Detector::PaymentCard, 0.95, 0.95),
        ("iban", Detector::Iban, 0.95, 0.95),
        ("ssn", Detector::Ssn, 0.95, 0.95),
        ("ip", Detector::Ip, 0.9, 0.95),
        ("secrets", Detector::Secrets, 0.95, 0.9),
        ("prompt_injection", Detector::PromptInjection, 0.95, 0.9),
        ("keywords", Detector::Keywords(keywords), 1.0, 1.0),
    ];
    let mut failures = Vec::new();
    println!(
        "{:<18} {:>4} {:>4} {:>4} {:>9} {:>7}",
        "detector", "tp", "fp", "fn", "precision", "recall"
    );
    for (name, d, min_p, min_r) in &cases {
        let s = score(d, &format!("{name}.txt"));
        let p = ratio(s.tp, s.tp + s.fp);
        let r = ratio(s.tp, s.tp + s.fn_);
        println!(
            "{name:<18} {:>4} {:>4} {:>4} {p:>9.3} {r:>7.3}",
            s.tp, s.fp, s.fn_
        );
        for m in &s.misses {
            println!("    {m}");
        }
        if p < *min_p || r < *min_r {
            failures.push(format!(
                "{name}: precision {p:.3} (min {min_p}), recall {r:.3} (min {min_r})"
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
