//! The stored form of the rollups: one row per (dimension set, resolution, bucket) and write
//! (a roll chunk, a late batch, a compaction), its groups packed in one binary `body`.
//!
//! Why not a row per group: at the generator's 30-day spread almost every record opens its
//! own key-hour, team-model-hour and outcome-hour group, and each group as a row of 34
//! columns and three indexes cost the roller ~13 µs and the disk ~170 bytes; readers paid the
//! driver's per-row cost for every group they merged. Packed, a roll chunk of 50,000 records
//! writes a few thousand rows, and a reader decodes groups in memory.
//!
//! A body is LZ4-compressed (a block behind its 4-byte little-endian size: the texts and
//! small numbers of neighbouring groups repeat; measured in bench/README.md). Uncompressed,
//! it is `varint(groups)`, then per group `varint(length)` and the group: each of the
//! set's dimension values (a text as `varint(bytes + 1)` and its bytes, 0 for none; the
//! status as a varint), the 17 integer sums as zigzag varints ([`super::rollup::Sums`] order),
//! the score sum (a 0 byte for +0.0, else a 1 and its 8 little-endian bytes), the latency and TTFT sketches
//! ([`Sketch::encode_into`]). The length lets a reader filtering on a value skip a group
//! without decoding its sums.

use super::query::{Dim, KeyPart};
use super::rollup::Sums;
use super::sketch::{put, take, unzigzag, zigzag, Sketch};

/// The integer sums in stored order.
fn ints(s: &Sums) -> [i64; 17] {
    [
        s.requests,
        s.errors,
        s.unpriced,
        s.input,
        s.output,
        s.cached,
        s.cache_write,
        s.reasoning,
        s.cost,
        s.cache_hits,
        s.cost_saved,
        s.streamed,
        s.attempts,
        s.fallbacks,
        s.gen_tokens,
        s.gen_us,
        s.scored,
    ]
}

/// The body holding `groups` (each the values of `dims`, in order, and its sums).
pub fn encode<'a>(
    dims: &[Dim],
    groups: impl ExactSizeIterator<Item = (&'a [KeyPart], &'a Sums)>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + groups.len() * 48);
    put(&mut out, groups.len() as u64);
    let mut g = Vec::with_capacity(128);
    for (key, s) in groups {
        g.clear();
        for (i, d) in dims.iter().enumerate() {
            match (d, key.get(i)) {
                (Dim::Status, Some(KeyPart::Int(n))) => put(&mut g, zigzag(*n)),
                (Dim::Status, _) => put(&mut g, 0),
                (_, Some(KeyPart::Text(Some(t)))) => {
                    put(&mut g, t.len() as u64 + 1);
                    g.extend_from_slice(t.as_bytes());
                }
                _ => put(&mut g, 0),
            }
        }
        for n in ints(s) {
            put(&mut g, zigzag(n));
        }
        // Most groups have no feedback: a zero tag, else 1 and the sum's 8 bytes.
        if s.score_sum.to_bits() == 0 {
            g.push(0);
        } else {
            g.push(1);
            g.extend_from_slice(&s.score_sum.to_le_bytes());
        }
        s.latency.encode_into(&mut g);
        s.ttft.encode_into(&mut g);
        put(&mut out, g.len() as u64);
        out.extend_from_slice(&g);
    }
    lz4_flex::block::compress_prepend_size(&out)
}

/// The largest body a segment holds uncompressed (a bucket's groups: thousands, not
/// millions); a damaged size is refused rather than allocated.
const MAX_BODY: usize = 256 << 20;

/// A dimension value as it sits in a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    Int(i64),
    Text(Option<&'a str>),
}

impl Value<'_> {
    pub fn to_part(self) -> KeyPart {
        match self {
            Value::Int(n) => KeyPart::Int(n),
            Value::Text(t) => KeyPart::Text(t.map(str::to_string)),
        }
    }
}

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
#[error("a stored usage rollup is damaged (cannot be decoded)")]
pub struct Damaged;

/// A group's sums as read from a body: the sketches still encoded, so that adding the group
/// to another (most reads) needs no sketch of its own.
#[derive(Debug)]
pub struct Group<'a> {
    sums: Sums,
    latency: &'a [u8],
    ttft: &'a [u8],
}

impl Group<'_> {
    /// Adds the group to `into`.
    pub fn merge_into(self, into: &mut Sums) -> Result<(), Damaged> {
        into.merge(&self.sums);
        into.latency
            .merge_prefix(&mut { self.latency })
            .ok_or(Damaged)?;
        into.ttft.merge_prefix(&mut { self.ttft }).ok_or(Damaged)
    }

    pub fn into_sums(self) -> Result<Sums, Damaged> {
        let mut s = Sums::default();
        self.merge_into(&mut s)?;
        Ok(s)
    }
}

/// Calls `f` with each group of `body` (the values of `dims`) that `keep` accepts, and its
/// sums; groups `keep` refuses are skipped without decoding their sums.
pub fn decode(
    body: &[u8],
    dims: &[Dim],
    mut keep: impl FnMut(&[Value<'_>]) -> bool,
    mut f: impl FnMut(&[Value<'_>], Group<'_>) -> Result<(), Damaged>,
) -> Result<(), Damaged> {
    let (size, packed) = body.split_first_chunk::<4>().ok_or(Damaged)?;
    let size = usize::try_from(u32::from_le_bytes(*size)).map_err(|_| Damaged)?;
    if size > MAX_BODY {
        return Err(Damaged);
    }
    let raw = lz4_flex::block::decompress(packed, size).map_err(|_| Damaged)?;
    if raw.len() != size {
        return Err(Damaged);
    }
    let mut b = &raw[..];
    let n = take(&mut b).ok_or(Damaged)?;
    let mut values: Vec<Value<'_>> = Vec::with_capacity(dims.len());
    for _ in 0..n {
        let len = usize::try_from(take(&mut b).ok_or(Damaged)?).map_err(|_| Damaged)?;
        let (mut g, rest) = b.split_at_checked(len).ok_or(Damaged)?;
        b = rest;
        values.clear();
        for d in dims {
            let v = take(&mut g).ok_or(Damaged)?;
            values.push(if *d == Dim::Status {
                Value::Int(unzigzag(v))
            } else if v == 0 {
                Value::Text(None)
            } else {
                let l = usize::try_from(v - 1).map_err(|_| Damaged)?;
                let (t, rest) = g.split_at_checked(l).ok_or(Damaged)?;
                g = rest;
                Value::Text(Some(std::str::from_utf8(t).map_err(|_| Damaged)?))
            });
        }
        if !keep(&values) {
            continue;
        }
        let mut n = [0i64; 17];
        for slot in &mut n {
            *slot = unzigzag(take(&mut g).ok_or(Damaged)?);
        }
        let (&tag, rest) = g.split_first().ok_or(Damaged)?;
        g = rest;
        let score_sum = match tag {
            0 => 0.0,
            1 => {
                let (score, rest) = g.split_first_chunk::<8>().ok_or(Damaged)?;
                g = rest;
                f64::from_le_bytes(*score)
            }
            _ => return Err(Damaged),
        };
        let s = Sums {
            requests: n[0],
            errors: n[1],
            unpriced: n[2],
            input: n[3],
            output: n[4],
            cached: n[5],
            cache_write: n[6],
            reasoning: n[7],
            cost: n[8],
            cache_hits: n[9],
            cost_saved: n[10],
            streamed: n[11],
            attempts: n[12],
            fallbacks: n[13],
            gen_tokens: n[14],
            gen_us: n[15],
            scored: n[16],
            score_sum,
            ..Sums::default()
        };
        let latency = g;
        Sketch::skip_prefix(&mut g).ok_or(Damaged)?;
        let ttft = g;
        Sketch::skip_prefix(&mut g).ok_or(Damaged)?;
        f(
            &values,
            Group {
                sums: s,
                latency,
                ttft,
            },
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_round_trip_and_filters_skip_groups() {
        let dims = [Dim::Key, Dim::Status, Dim::Team];
        let mut a = Sums {
            requests: 3,
            errors: 1,
            cost: -5,
            gen_us: i64::MAX,
            score_sum: 1.25,
            ..Sums::default()
        };
        a.latency.add(1200);
        a.latency.add(90_000);
        a.ttft.add(300);
        let b = Sums {
            requests: 1,
            input: 77,
            ..Sums::default()
        };
        let ka = vec![
            KeyPart::Text(Some("key-é".into())),
            KeyPart::Int(503),
            KeyPart::Text(None),
        ];
        let kb = vec![
            KeyPart::Text(None),
            KeyPart::Int(200),
            KeyPart::Text(Some(String::new())),
        ];
        let body = encode(&dims, [(&ka[..], &a), (&kb[..], &b)].into_iter());
        let mut got = Vec::new();
        decode(
            &body,
            &dims,
            |_| true,
            |v, g| {
                got.push((
                    v.iter().map(|x| x.to_part()).collect::<Vec<_>>(),
                    g.into_sums()?,
                ));
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(got, vec![(ka.clone(), a.clone()), (kb.clone(), b)]);
        // A filter on the status sees every group's values and decodes only what it keeps.
        let mut seen = 0;
        let mut kept = Vec::new();
        decode(
            &body,
            &dims,
            |v| {
                seen += 1;
                v[1] == Value::Int(503)
            },
            |v, g| {
                kept.push((v[0].to_part(), g.into_sums()?.requests));
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(seen, 2);
        assert_eq!(kept, vec![(KeyPart::Text(Some("key-é".into())), 3)]);
        // Cut short or garbled: an error, never a panic.
        for cut in 0..body.len() {
            assert!(
                decode(
                    &body[..cut],
                    &dims,
                    |_| true,
                    |_, g| g.into_sums().map(drop)
                )
                .is_err(),
                "{cut}"
            );
        }
        assert!(decode(&[5, 200], &dims, |_| true, |_, _| Ok(())).is_err());
    }
}
