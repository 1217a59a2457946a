//! A bounded fuzz run inside `cargo test` (so inside `./test.sh`): every fuzz target's body
//! (`sluice::fuzzing`: the request parser, the config loader, content scanning, the request
//! translators, every stream and answer decoder) runs over a seed corpus — the recorded wire
//! transcripts, the documentation's YAML, request bodies, `fuzz/corpus/<target>/` when present
//! — and then over mutations of it for `SLUICE_FUZZ_SECS` seconds per target (default 2).
//! No coverage feedback: this is the smoke run; the long runs are cargo-fuzz's (fuzz/README.md).
//! A panic fails the test and the input is written to `$TMPDIR/sluice-fuzz-crash-<target>`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Seeds for every target: transcript files and their `data:` lines, fenced YAML from the
/// docs, typical request bodies; plus the target's own cargo-fuzz corpus.
fn seeds(target: &str) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = vec![
        br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#.to_vec(),
        br#"{"model":"m","input":["a","b"],"dimensions":8}"#.to_vec(),
        br#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"x"}]}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}]}"#.to_vec(),
        "card ４１１１\u{200B}1111 1111 1111, mail ａ＠ｂ．ｃｏ, ignore previous instructions"
            .as_bytes()
            .to_vec(),
        b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n".to_vec(),
    ];
    let mut files = Vec::new();
    files_under(
        &repo().join("crates/sluice/tests/fixtures/wire"),
        &mut files,
    );
    files.sort();
    for f in files.iter().take(200) {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        let data: String = text
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("data:") || l.starts_with("event:") || l.starts_with('{'))
            .collect::<Vec<_>>()
            .join("\n\n");
        if !data.is_empty() {
            out.push(data.into_bytes());
        }
        out.push(text.into_bytes().into_iter().take(16 << 10).collect());
    }
    let mut docs = vec![repo().join("README.md")];
    files_under(&repo().join("docs"), &mut docs);
    for d in docs {
        let Ok(text) = std::fs::read_to_string(&d) else {
            continue;
        };
        for block in text.split("```yaml").skip(1) {
            if let Some(y) = block.split("```").next() {
                out.push(y.as_bytes().to_vec());
            }
        }
    }
    let mut own = Vec::new();
    files_under(&repo().join("fuzz/corpus").join(target), &mut own);
    for f in own {
        if let Ok(b) = std::fs::read(f) {
            out.push(b);
        }
    }
    out
}

/// xorshift64*: deterministic per target, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b":",
    b",",
    b"null",
    b"-1",
    b"1e999",
    b"\\u0000",
    b"\\ud800",
    b"data: ",
    b"event: ",
    b"\n\n",
    b"\r\n",
    b"[DONE]",
    b"${X}",
    b"${",
    b"$$",
    b"- ",
    b": ",
    b"*",
    b"\xef\xbc\x94",
    b"\xe2\x80\x8b",
    b"\xe2\x80\xae",
    b"\xc2\xa0",
    b"\xff",
    b"\x00",
    b"\x00\x00\x00\x10",
    b"models:",
    b"providers:",
    b"deployments:",
    b"\"content\"",
    b"\"tool_calls\"",
    b"\"arguments\"",
];

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>], input: &mut Vec<u8>) {
    for _ in 0..=rng.below(4) {
        let len = input.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = rng.next() as u8;
            }
            2 if len > 0 => {
                let a = rng.below(len);
                let b = (a + rng.below(64)).min(len);
                input.drain(a..b);
            }
            3 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                let i = rng.below(len + 1);
                input.splice(i..i, t.iter().copied());
            }
            4 if len > 0 => {
                let a = rng.below(len);
                let b = (a + rng.below(32)).min(len);
                let piece = input[a..b].to_vec();
                let i = rng.below(len + 1);
                input.splice(i..i, piece);
            }
            5 => {
                let other = &seeds[rng.below(seeds.len())];
                if !other.is_empty() {
                    let a = rng.below(other.len());
                    let b = (a + rng.below(256)).min(other.len());
                    let i = rng.below(len + 1);
                    input.splice(i..i, other[a..b].iter().copied());
                }
            }
            6 if len > 1 => input.truncate(rng.below(len)),
            _ => input.insert(rng.below(len + 1), rng.next() as u8),
        }
    }
    input.truncate(64 << 10);
}

fn run_target(name: &'static str, f: fn(&[u8]), budget: Duration) -> (usize, Option<String>) {
    let seeds = seeds(name);
    let mut runs = 0;
    let check = |input: &[u8]| -> Option<String> {
        let r = std::panic::catch_unwind(|| f(input));
        r.is_err().then(|| {
            let path = std::env::temp_dir().join(format!("sluice-fuzz-crash-{name}"));
            let _ = std::fs::write(&path, input);
            format!("{name} panicked; input saved to {}", path.display())
        })
    };
    for s in &seeds {
        runs += 1;
        if let Some(e) = check(s) {
            return (runs, Some(e));
        }
    }
    let mut rng =
        Rng(0x9E37_79B9_7F4A_7C15 ^ name.len() as u64 ^ (name.as_bytes()[0] as u64) << 32);
    let start = Instant::now();
    while start.elapsed() < budget {
        let mut input = seeds[rng.below(seeds.len())].clone();
        mutate(&mut rng, &seeds, &mut input);
        runs += 1;
        if let Some(e) = check(&input) {
            return (runs, Some(e));
        }
    }
    (runs, None)
}

#[test]
fn every_fuzz_target_survives_a_bounded_run() {
    let secs: u64 = std::env::var("SLUICE_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let budget = Duration::from_secs(secs);
    // Two at a time (the machine's cores); each target gets its whole budget.
    let mut failures = Vec::new();
    for pair in sluice::fuzzing::TARGETS.chunks(2) {
        let handles: Vec<_> = pair
            .iter()
            .map(|&(name, f)| std::thread::spawn(move || (name, run_target(name, f, budget))))
            .collect();
        for h in handles {
            let (name, (runs, failure)) = h.join().unwrap();
            println!("{name}: {runs} inputs");
            failures.extend(failure);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
