//! A mergeable latency sketch for the usage rollups: DDSketch's logarithmic buckets with a
//! relative accuracy of 1 %, stored as a few bytes per occupied bucket.
//!
//! Why not a crate: the rollups hold two sketches per row and most rows see a handful of
//! requests, so what matters is the stored size of a small sketch. `hdrhistogram` allocates
//! its whole range per histogram (tens of KiB) and serialises with a 40-byte header;
//! `sketches-ddsketch` serialises dense `u64` bins. The mapping is one line; the encoding is
//! ours: `varint(buckets)` then per bucket `zigzag-varint(index - previous)`, `varint(count)`.

/// Every quantile is within this relative error of the exact nearest-rank value.
pub const RELATIVE_ACCURACY: f64 = 0.01;

fn gamma() -> f64 {
    (1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY)
}

/// The bucket of `us` microseconds: bucket `i` holds `(gamma^(i-1), gamma^i]`; values below
/// 1 us count as 1 us (bucket 0).
fn index(us: u64) -> i32 {
    if us <= 1 {
        return 0;
    }
    // At most ~2,200 for u64::MAX: the cast cannot overflow.
    #[allow(clippy::cast_possible_truncation)]
    let i = ((us as f64).ln() / gamma().ln()).ceil() as i32;
    i
}

/// The value reported for bucket `i`: within `RELATIVE_ACCURACY` of everything in it.
fn value(i: i32) -> f64 {
    if i == 0 {
        return 1.0;
    }
    2.0 * gamma().powi(i) / (gamma() + 1.0)
}

/// Counts per occupied bucket, ascending by bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sketch {
    bins: Vec<(i32, u64)>,
}

impl Sketch {
    pub fn count(&self) -> u64 {
        self.bins.iter().map(|b| b.1).sum()
    }

    /// Adds one value in microseconds.
    pub fn add(&mut self, us: u64) {
        self.add_n(index(us), 1);
    }

    fn add_n(&mut self, i: i32, n: u64) {
        match self.bins.binary_search_by_key(&i, |b| b.0) {
            Ok(at) => self.bins[at].1 += n,
            Err(at) => self.bins.insert(at, (i, n)),
        }
    }

    /// Adds everything `other` counted.
    pub fn merge(&mut self, other: &Sketch) {
        if self.bins.is_empty() {
            self.bins.clone_from(&other.bins);
            return;
        }
        let mut out = Vec::with_capacity(self.bins.len() + other.bins.len());
        let (a, b) = (&self.bins, &other.bins);
        let (mut i, mut j) = (0, 0);
        while i < a.len() && j < b.len() {
            let (x, y) = (a[i], b[j]);
            if x.0 == y.0 {
                out.push((x.0, x.1 + y.1));
                i += 1;
                j += 1;
            } else if x.0 < y.0 {
                out.push(x);
                i += 1;
            } else {
                out.push(y);
                j += 1;
            }
        }
        out.extend_from_slice(&a[i..]);
        out.extend_from_slice(&b[j..]);
        self.bins = out;
    }

    /// The nearest-rank `p`th percentile (0 < p <= 100), in microseconds, within
    /// [`RELATIVE_ACCURACY`]; `None` when empty.
    pub fn percentile(&self, p: f64) -> Option<f64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let rank = (((p / 100.0) * n as f64).ceil() as u64).clamp(1, n);
        let mut seen = 0;
        for &(i, c) in &self.bins {
            seen += c;
            if seen >= rank {
                return Some(value(i));
            }
        }
        self.bins.last().map(|b| value(b.0))
    }

    /// The stored form (empty sketch: one byte).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + self.bins.len() * 3);
        put(&mut out, self.bins.len() as u64);
        let mut prev = 0i64;
        for &(i, c) in &self.bins {
            let d = i64::from(i) - prev;
            prev = i64::from(i);
            put(&mut out, ((d << 1) ^ (d >> 63)).cast_unsigned());
            put(&mut out, c);
        }
        out
    }

    /// Reads what [`Sketch::encode`] wrote; `None` for anything else.
    pub fn decode(mut b: &[u8]) -> Option<Sketch> {
        let n = take(&mut b)?;
        let mut bins = Vec::with_capacity(usize::try_from(n.min(4096)).ok()?);
        let mut prev = 0i64;
        for _ in 0..n {
            let z = take(&mut b)?;
            let d = (z >> 1).cast_signed() ^ -((z & 1).cast_signed());
            prev = prev.checked_add(d)?;
            bins.push((i32::try_from(prev).ok()?, take(&mut b)?));
        }
        if !b.is_empty() || bins.windows(2).any(|w| w[0].0 >= w[1].0) {
            return None;
        }
        Some(Sketch { bins })
    }
}

fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn take(b: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = b.split_first()?;
        *b = rest;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift), so the test needs no crate.
    fn values(seed: u64, n: usize) -> Vec<u64> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                // Log-uniform between 1 us and ~17 s: the spread latencies have.
                let exp = (s % 2400) as f64 / 100.0;
                2f64.powf(exp) as u64
            })
            .collect()
    }

    fn exact(sorted: &[u64], p: f64) -> f64 {
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1].max(1) as f64
    }

    #[test]
    fn percentiles_are_within_the_stated_error_and_merging_equals_adding() {
        for seed in [1u64, 7, 99, 12345] {
            let v = values(seed, 5000);
            let (left, right) = v.split_at(1234);
            let mut a = Sketch::default();
            left.iter().for_each(|&x| a.add(x));
            let mut b = Sketch::default();
            right.iter().for_each(|&x| b.add(x));
            let mut whole = Sketch::default();
            v.iter().for_each(|&x| whole.add(x));
            a.merge(&b);
            assert_eq!(a, whole, "merge must equal adding everything to one sketch");
            let mut sorted = v.clone();
            sorted.sort_unstable();
            for p in [1.0, 50.0, 90.0, 95.0, 99.0, 100.0] {
                let (got, want) = (whole.percentile(p).unwrap(), exact(&sorted, p));
                assert!(
                    (got - want).abs() <= want * RELATIVE_ACCURACY + 1e-9,
                    "seed {seed} p{p}: {got} vs exact {want}"
                );
            }
        }
        assert_eq!(Sketch::default().percentile(50.0), None);
    }

    #[test]
    fn encoding_round_trips_and_is_small() {
        let mut s = Sketch::default();
        assert_eq!(s.encode(), [0]);
        s.add(1500);
        assert!(s.encode().len() <= 4, "{:?}", s.encode());
        for x in values(3, 10_000) {
            s.add(x);
        }
        let bytes = s.encode();
        assert_eq!(Sketch::decode(&bytes), Some(s.clone()));
        // ~1,100 buckets cover 1 us..17 s at 1 %: a few bytes each, whatever the count.
        assert!(bytes.len() < 5000, "{}", bytes.len());
        // Garbage is refused, not misread.
        assert_eq!(Sketch::decode(&[2, 0]), None);
        assert_eq!(Sketch::decode(&[1, 2, 1, 9]), None);
        assert_eq!(Sketch::decode(&[0xff]), None);
    }
}
