//! Strategies: the order to try the available deployments of one priority tier in.

use super::catalog::Needs;
use super::Deployment;
use crate::config::Strategy;
use rand::Rng;
use std::sync::atomic::{AtomicUsize, Ordering};

/// One in this many lowest-latency decisions tries a random deployment first, so that a
/// deployment that was slow once gets measured again.
const EXPLORE_ONE_IN: u32 = 20;

/// Reorders `tier` (already filtered to available deployments) in place.
pub fn order(
    strategy: Strategy,
    tier: &mut [&Deployment],
    rr: &AtomicUsize,
    needs: Option<&Needs>,
) {
    if tier.len() < 2 {
        return;
    }
    let mut rng = rand::thread_rng();
    match strategy {
        Strategy::Weighted => weighted(tier, &mut rng),
        Strategy::RoundRobin => {
            let start = rr.fetch_add(1, Ordering::Relaxed) % tier.len();
            tier.rotate_left(start);
        }
        Strategy::LeastOutstanding => {
            // Power of two choices: two random picks, the less loaded goes first; the rest
            // follow by load (as fallbacks within the tier).
            let n = tier.len();
            let a = rng.gen_range(0..n);
            let mut b = rng.gen_range(0..n - 1);
            if b >= a {
                b += 1;
            }
            let load = |d: &Deployment| d.health.in_flight.load(Ordering::Relaxed);
            let first = if load(tier[b]) < load(tier[a]) { b } else { a };
            tier.swap(0, first);
            tier[1..].sort_by_key(|d| load(d));
        }
        Strategy::LowestLatency => {
            // Unmeasured deployments (EWMA 0) sort first, so each gets measured.
            tier.sort_by_key(|d| d.health.ewma_us());
            if rng.gen_range(0..EXPLORE_ONE_IN) == 0 {
                let k = rng.gen_range(0..tier.len());
                tier.swap(0, k);
            }
        }
        Strategy::LowestCost => tier.sort_by_key(|d| d.cost_rank),
        Strategy::CheapestCapable => match needs {
            // The plan already left out the incapable; the estimate weighs this request's
            // prompt and output sizes.
            Some(n) => tier.sort_by_key(|d| d.estimated_cost(n)),
            None => tier.sort_by_key(|d| d.cost_rank),
        },
        Strategy::MostHeadroom => {
            // Most remaining capacity first; ties (e.g. nothing known) go to the less loaded,
            // then to a random rotation. Keys are computed once (each reads the clock).
            let start = rng.gen_range(0..tier.len());
            tier.rotate_left(start);
            tier.sort_by_cached_key(|d| {
                (
                    std::cmp::Reverse(d.health.headroom_permille(d.rpm, d.tpm)),
                    d.health.in_flight.load(Ordering::Relaxed),
                )
            });
        }
    }
}

/// Weighted random order, without replacement.
fn weighted(tier: &mut [&Deployment], rng: &mut impl Rng) {
    for start in 0..tier.len() - 1 {
        let rest = &tier[start..];
        let total: u64 = rest.iter().map(|d| u64::from(d.weight)).sum();
        let mut pick = rng.gen_range(0..total.max(1));
        let mut idx = rest.len() - 1;
        for (i, d) in rest.iter().enumerate() {
            let w = u64::from(d.weight);
            if pick < w {
                idx = i;
                break;
            }
            pick -= w;
        }
        tier.swap(start, start + idx);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::tests::table;
    use std::sync::atomic::Ordering;

    const THREE: &str = concat!(
        "providers:\n  - {name: a, kind: mock}\n  - {name: b, kind: mock}\n  - {name: c, kind: mock}\n",
        "models:\n  - name: m\n    strategy: STRATEGY\n",
        "    deployments: [{provider: a, model: x}, {provider: b, model: y}, {provider: c, model: z}]\n",
    );

    #[test]
    fn least_outstanding_never_puts_the_busiest_first() {
        let (t, _) = table(&THREE.replace("STRATEGY", "least_outstanding"));
        let route = t.get("m").unwrap();
        for (d, n) in route.deployments.iter().zip([5, 0, 9]) {
            d.health.in_flight.store(n, Ordering::Relaxed);
        }
        let mut firsts = std::collections::HashMap::new();
        for _ in 0..300 {
            let c = t.candidates(route);
            *firsts.entry(c[0].model.to_string()).or_insert(0) += 1;
            // The rest follow by load.
            let loads: Vec<u32> = c[1..]
                .iter()
                .map(|d| d.health.in_flight.load(Ordering::Relaxed))
                .collect();
            assert!(loads.windows(2).all(|w| w[0] <= w[1]), "{loads:?}");
        }
        assert_eq!(
            firsts.get("z"),
            None,
            "the busiest loses every pair it is in"
        );
        // y (idle) wins whenever it is drawn: 2 of 3 pairs.
        assert!(firsts["y"] > 150, "{firsts:?}");
    }

    #[test]
    fn lowest_latency_prefers_the_fastest_and_still_explores() {
        let (t, _) = table(&THREE.replace("STRATEGY", "lowest_latency"));
        let route = t.get("m").unwrap();
        for (d, us) in route.deployments.iter().zip([3000, 1000, 2000]) {
            d.health.record_success(us);
        }
        let mut fastest = 0;
        for _ in 0..1000 {
            if &*t.candidates(route)[0].model == "y" {
                fastest += 1;
            }
        }
        // 1 in 20 explores (and may still pick y): between ~95 % and 100 % exclusive.
        assert!((900..1000).contains(&fastest), "{fastest}");
    }
}
