//! Content-policy cost: the full default rule set on a 4 KiB prompt (target <= 50 us), the
//! no-policy path, and the per-chunk cost on a stream. `cargo bench -p sluice-bench-policy`.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use sluice::policy::content::stream::StreamGuard;
use sluice::policy::content::{input, scan, Rule, Subject, Vault};
use sluice_bench_policy::{chat_body, default_rules, prompt};
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

/// Polls a future that never waits (no webhook rules) to completion.
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

fn bench(c: &mut Criterion) {
    let set = default_rules();
    let text = prompt(4096);
    let body = chat_body(&text);
    let subject = Subject {
        team: None,
        key_id: None,
        model: "m",
    };
    let input_rules: Vec<&Rule> = set
        .select(&subject, false)
        .into_iter()
        .filter_map(|i| set.rules.get(i))
        .collect();

    c.bench_function("guard_input: default rules, 4 KiB chat body", |b| {
        b.iter(|| {
            let mut hits = Vec::new();
            let out = ready(input::guard(&input_rules, black_box(&body), &mut hits));
            black_box((out.is_ok(), hits.len()))
        });
    });
    c.bench_function("detectors only: default rules, 4 KiB text", |b| {
        b.iter(|| {
            let mut n = 0;
            for r in &input_rules {
                n += scan::find(r, black_box(&text)).len();
            }
            black_box(n)
        });
    });
    let empty = sluice::policy::content::PolicySet::default();
    c.bench_function("no policy: rule selection", |b| {
        b.iter(|| black_box(empty.select(black_box(&subject), false)).len());
    });

    let output: Vec<usize> = set.select(&subject, true);
    let event = serde_json::json!({"id": "c", "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": "the rollout plan for "}, "finish_reason": null}]})
    .to_string()
    .into_bytes();
    c.bench_function("stream: one chunk through the output guard", |b| {
        let mut g = StreamGuard::new(set.clone(), output.clone(), Vault::default());
        b.iter(|| match g.on_event(black_box(&event)) {
            sluice::policy::content::stream::EventAction::Replace(p) => black_box(p.len()),
            _ => 0,
        });
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
