//! Reversible redaction at scale: one prompt with 10k, 50k and 100k distinct emails, each
//! replaced by a placeholder and restored. Placeholder lookup is by hash map, so the time per
//! email stays flat as the count grows (it grew linearly per email, O(n²) in total, with the
//! former linear search). `cargo bench -p sluice-bench-policy --bench vault`.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sluice::policy::content::Vault;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("vault: distinct emails in one prompt");
    g.sample_size(10);
    for n in [10_000usize, 50_000, 100_000] {
        let emails: Vec<String> = (0..n).map(|i| format!("user{i}@example.com")).collect();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(
            BenchmarkId::new("redact + restore", n),
            &emails,
            |b, emails| {
                b.iter(|| {
                    let mut v = Vault::default();
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
