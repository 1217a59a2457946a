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

/// Counts per bucket from `start` on: dense in memory (adding is an index, merging a loop;
/// latencies span a few hundred buckets), sparse when stored. Canonical: the first and last
/// counts are non-zero, so equal sketches compare equal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sketch {
    start: i32,
    counts: Vec<u64>,
}

/// Bucket indexes a `u64` of microseconds can reach (about 2,200), with room.
const MAX_INDEX: i32 = 4096;

impl Sketch {
    pub fn count(&self) -> u64 {
        self.counts.iter().fold(0u64, |a, c| a.saturating_add(*c))
    }

    /// Adds one value in microseconds.
    pub fn add(&mut self, us: u64) {
        self.add_n(index(us), 1);
    }

    /// The bucket a value in microseconds counts in, for [`Sketch::add_buckets`].
    pub fn bucket_of(us: u64) -> i32 {
        index(us)
    }

    /// Adds one value to each of these buckets ([`Sketch::bucket_of`]): what a few values
    /// add, without a sketch of their own to merge (a merge walks the other's whole range).
    pub fn add_buckets(&mut self, buckets: &[i32]) {
        for &i in buckets {
            self.add_n(i, 1);
        }
    }

    /// Makes room for buckets `lo..=hi` (`lo <= hi`).
    fn cover(&mut self, lo: i32, hi: i32) {
        if self.counts.is_empty() {
            self.start = lo;
        }
        if lo < self.start {
            let pad = usize::try_from(self.start - lo).unwrap_or(0);
            self.counts.splice(0..0, std::iter::repeat_n(0, pad));
            self.start = lo;
        }
        let len = usize::try_from(hi - self.start).unwrap_or(0) + 1;
        if len > self.counts.len() {
            self.counts.resize(len, 0);
        }
    }

    fn add_n(&mut self, i: i32, n: u64) {
        if n == 0 {
            return;
        }
        self.cover(i, i);
        self.counts[usize::try_from(i - self.start).unwrap_or(0)] += n;
    }

    /// Adds everything `other` counted.
    pub fn merge(&mut self, other: &Sketch) {
        let Some(last) = other.last() else { return };
        self.cover(other.start, last);
        let at = usize::try_from(other.start - self.start).unwrap_or(0);
        for (mine, theirs) in self.counts[at..].iter_mut().zip(&other.counts) {
            *mine = mine.saturating_add(*theirs);
        }
    }

    /// The last occupied bucket.
    fn last(&self) -> Option<i32> {
        let n = i32::try_from(self.counts.len()).ok()?;
        (n > 0).then(|| self.start + n - 1)
    }

    /// The occupied buckets and their counts, ascending.
    fn bins(&self) -> impl Iterator<Item = (i32, u64)> + '_ {
        (self.start..)
            .zip(self.counts.iter().copied())
            .filter(|b| b.1 > 0)
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
        let mut seen = 0u64;
        for (i, c) in self.bins() {
            seen = seen.saturating_add(c);
            if seen >= rank {
                return Some(value(i));
            }
        }
        self.last().map(value)
    }

    /// The stored form (empty sketch: one byte).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + self.counts.len() * 3);
        self.encode_into(&mut out);
        out
    }

    /// Appends the stored form to `out` ([`Sketch::decode_prefix`] reads it back).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        put(out, self.bins().count() as u64);
        let mut prev = 0i64;
        for (i, c) in self.bins() {
            let d = i64::from(i) - prev;
            prev = i64::from(i);
            put(out, zigzag(d));
            put(out, c);
        }
    }

    /// Reads what [`Sketch::encode`] wrote; `None` for anything else.
    pub fn decode(mut b: &[u8]) -> Option<Sketch> {
        let s = Sketch::decode_prefix(&mut b)?;
        b.is_empty().then_some(s)
    }

    /// Reads one sketch from the front of `b` (encodings are self-delimiting, so several
    /// concatenated read one after another), leaving `b` after it.
    pub fn decode_prefix(b: &mut &[u8]) -> Option<Sketch> {
        let mut s = Sketch::default();
        s.merge_prefix(b)?;
        Some(s)
    }

    /// Adds the sketch at the front of `b` (as [`Sketch::decode_prefix`] reads it) without
    /// decoding it into a sketch of its own, leaving `b` after it.
    pub fn merge_prefix(&mut self, b: &mut &[u8]) -> Option<()> {
        // Two passes: the range first, so the counts grow at most once.
        let mut range: Option<(i32, i32)> = None;
        let mut first = *b;
        each_bin(&mut first, |i, _| {
            range = Some(range.map_or((i, i), |(lo, _)| (lo, i)));
        })?;
        if let Some((lo, hi)) = range {
            self.cover(lo, hi);
            let start = self.start;
            let counts = &mut self.counts;
            each_bin(b, |i, c| {
                let n = &mut counts[usize::try_from(i - start).unwrap_or(0)];
                *n = n.saturating_add(c);
            })?;
        } else {
            *b = first;
        }
        Some(())
    }

    /// Moves `b` past the sketch at its front; `None` if there is none.
    pub fn skip_prefix(b: &mut &[u8]) -> Option<()> {
        each_bin(b, |_, _| {})
    }
}

/// Calls `f` with each occupied bucket (ascending) of the encoded sketch at the front of `b`,
/// leaving `b` after it; `None` for anything [`Sketch::encode`] does not write.
fn each_bin(b: &mut &[u8], mut f: impl FnMut(i32, u64)) -> Option<()> {
    let n = take(b)?;
    let mut prev = 0i64;
    for k in 0..n {
        let z = take(b)?;
        let d = unzigzag(z);
        // Ascending, within the buckets a latency can reach.
        if k > 0 && d <= 0 {
            return None;
        }
        prev = prev.checked_add(d)?;
        let i = i32::try_from(prev)
            .ok()
            .filter(|i| (0..=MAX_INDEX).contains(i))?;
        let c = take(b)?;
        if c > 0 {
            f(i, c);
        }
    }
    Some(())
}

/// A signed value as an unsigned one, small magnitudes small (for [`put`]).
pub(crate) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)).cast_unsigned()
}

/// The inverse of [`zigzag`].
pub(crate) fn unzigzag(v: u64) -> i64 {
    (v >> 1).cast_signed() ^ -((v & 1).cast_signed())
}

/// Appends `v` as a LEB128 varint.
pub(crate) fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a LEB128 varint off the front of `b`.
pub(crate) fn take(b: &mut &[u8]) -> Option<u64> {
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
            // Small sketches (one record's, a few records') merge in place: the same.
            let mut c = Sketch::default();
            for few in v.chunks(3) {
                let mut s = Sketch::default();
                few.iter().for_each(|&x| s.add(x));
                c.merge(&s);
            }
            assert_eq!(c, whole, "merging small sketches must equal adding");
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
        // A bucket no latency reaches (index 5,000) would make a 40 kB sketch: refused.
        assert_eq!(Sketch::decode(&[1, 0x90, 0x4E, 1]), None);
        assert!(Sketch::decode(&[1, 0xC0, 0x3E, 1]).is_some());
        // Not ascending: refused.
        assert_eq!(Sketch::decode(&[2, 4, 1, 0, 1]), None);
        assert_eq!(Sketch::decode(&[0xff]), None);
        // Concatenated, they read one after another.
        let mut two = s.encode();
        two.extend(Sketch::default().encode());
        two.extend(s.encode());
        let mut rest = &two[..];
        assert_eq!(Sketch::decode_prefix(&mut rest), Some(s.clone()));
        assert_eq!(Sketch::decode_prefix(&mut rest), Some(Sketch::default()));
        assert_eq!(Sketch::decode_prefix(&mut rest), Some(s.clone()));
        assert!(rest.is_empty());
        assert_eq!(Sketch::decode_prefix(&mut rest), None);
    }
}
