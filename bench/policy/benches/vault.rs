//! Reversible redaction at scale: one prompt with 10k, 50k and 100k distinct emails, each
//! replaced by a placeholder and then restored. Placeholder lookup is by hash map, so the
//! time per email stays flat as the count grows. The baseline, measured in the same run, is
//! the former linear-search vault (copied below as it was): its time per email grows with
//! the count, O(n²) in total, so it runs on smaller counts only.
//! `cargo bench -p sluice-bench-policy --bench vault`.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sluice::policy::content::Vault;

/// The vault before issue 14, for the baseline: entries searched linearly.
#[derive(Default)]
struct LinearVault {
    entries: Vec<(String, String, bool)>,
    counters: Vec<(&'static str, u32)>,
}

impl LinearVault {
    fn placeholder(&mut self, label: &'static str, original: &str, reversible: bool) -> String {
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

    fn restore(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(i) = rest.find('[') {
            out.push_str(&rest[..i]);
            let tail = &rest[i..];
            let hit = tail.find(']').filter(|&j| j < 40).and_then(|j| {
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

fn emails(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("user{i}@example.com")).collect()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("vault: distinct emails in one prompt");
    g.sample_size(10);
    for n in [10_000usize, 50_000, 100_000] {
        let emails = emails(n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("hash map", n), &emails, |b, emails| {
            b.iter(|| {
                let mut v = Vault::default();
                let mut text = String::with_capacity(emails.len() * 16);
                for e in emails {
                    text.push_str(&v.placeholder("EMAIL", e, true));
                    text.push(' ');
                }
                black_box(v.restore(black_box(&text)).len())
            });
        });
    }
    for n in [2_500usize, 5_000, 10_000] {
        let emails = emails(n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(
            BenchmarkId::new("linear (before)", n),
            &emails,
            |b, emails| {
                b.iter(|| {
                    let mut v = LinearVault::default();
                    let mut text = String::with_capacity(emails.len() * 16);
                    for e in emails {
                        text.push_str(&v.placeholder("EMAIL", e, true));
                        text.push(' ');
                    }
                    black_box(v.restore(black_box(&text)).len())
                });
            },
        );
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
