//! Response variants: one cached entry, several answers (A/B tests, randomised replies).
//!
//! A cached `response` of the shape `{"variants": [...], "variantStrategy": "...", "weights"?: [...],
//! "seed"?: ...}` is answered with one of its variants, chosen per read:
//!
//! * `random`: uniformly at random;
//! * `weighted`: at random in proportion to `weights`;
//! * `round-robin`: in turn, with a counter per entry in this process (instances behind a load
//!   balancer each keep their own turn);
//! * `deterministic`: by a hash of the entry's `seed` and the caller's `seed` (or, without one, the
//!   token's subject), so one user keeps getting the same variant while users spread over all of them
//!   (in proportion to `weights` when given).
//!
//! Bad shapes are refused when written (400), so reads never meet them.

use std::sync::atomic::{AtomicU64, Ordering};

use moka::sync::Cache;
use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// Most variants per entry.
pub(crate) const MAX_VARIANTS: usize = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Strategy {
    Random,
    RoundRobin,
    Deterministic,
    Weighted,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Spec<'a> {
    #[serde(borrow)]
    variants: Vec<&'a RawValue>,
    variant_strategy: Strategy,
    #[serde(default)]
    weights: Option<Vec<f64>>,
    #[serde(default, borrow)]
    seed: Option<&'a RawValue>,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_variants", message)
}

/// Whether a response declares variants (cheap test before parsing).
fn declares_variants(response: &str) -> bool {
    response.trim_start().starts_with('{') && response.contains("\"variantStrategy\"")
}

/// Validate a response at write time: plain responses pass; a variants response must be well formed.
pub fn validate(response: &serde_json::Value) -> Result<(), ApiError> {
    let Some(obj) = response.as_object() else {
        return Ok(());
    };
    if !obj.contains_key("variantStrategy") && !obj.contains_key("variants") {
        return Ok(());
    }
    let text = response.to_string();
    let spec: Spec<'_> = serde_json::from_str(&text).map_err(|e| {
        bad(format!(
            "a response with `variants` must be {{variants: [...], variantStrategy: \
             random|round-robin|deterministic|weighted, weights?: [numbers], seed?}}: {e}"
        ))
    })?;
    let n = spec.variants.len();
    if n == 0 || n > MAX_VARIANTS {
        return Err(bad(format!("variants must hold 1-{MAX_VARIANTS} answers")));
    }
    if spec.variants.iter().any(|v| v.get() == "null") {
        return Err(bad("a variant must not be null"));
    }
    match (&spec.weights, spec.variant_strategy) {
        (None, Strategy::Weighted) => {
            return Err(bad("variantStrategy `weighted` needs `weights`"));
        }
        (Some(w), _) if w.len() != n => {
            return Err(bad(format!(
                "weights has {} numbers for {n} variants",
                w.len()
            )));
        }
        (Some(w), _) if w.iter().any(|x| !x.is_finite() || *x < 0.0) => {
            return Err(bad("weights must be finite and not negative"));
        }
        (Some(w), _) if w.iter().sum::<f64>() <= 0.0 => {
            return Err(bad("weights must not all be zero"));
        }
        _ => {}
    }
    Ok(())
}

/// Per-entry round-robin turns, bounded (idle entries are forgotten after an hour).
pub(crate) struct Turns {
    counters: Cache<String, std::sync::Arc<AtomicU64>>,
}

impl Turns {
    pub(crate) fn new() -> Self {
        Self {
            counters: Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(std::time::Duration::from_secs(3600))
                .build(),
        }
    }

    fn next(&self, key: &str) -> u64 {
        self.counters
            .get_with(key.to_owned(), Default::default)
            .fetch_add(1, Ordering::Relaxed)
    }
}

/// The variant a read gets: `(index, answer)`, or `None` for a plain response.
pub(crate) fn pick<'a>(
    response: &'a RawValue,
    key: &str,
    caller_seed: &str,
    turns: &Turns,
) -> Option<(usize, &'a RawValue)> {
    if !declares_variants(response.get()) {
        return None;
    }
    let spec: Spec<'a> = serde_json::from_str(response.get()).ok()?;
    let n = spec.variants.len();
    if n == 0 {
        return None;
    }
    let index = match spec.variant_strategy {
        Strategy::Random => fastrand::usize(0..n),
        Strategy::Weighted => weighted(spec.weights.as_deref(), fastrand::f64(), n),
        Strategy::RoundRobin => (turns.next(key) % n as u64) as usize,
        Strategy::Deterministic => {
            let mut h = Sha256::new();
            h.update(spec.seed.map_or("", |s| s.get()).as_bytes());
            h.update([0]);
            h.update(caller_seed.as_bytes());
            let d = h.finalize();
            let x = u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
            // 53 random bits → a uniform float in [0, 1).
            let u = (x >> 11) as f64 / (1u64 << 53) as f64;
            weighted(spec.weights.as_deref(), u, n)
        }
    };
    spec.variants.get(index).map(|v| (index, *v))
}

/// The index `u ∈ [0, 1)` falls on when `[0, 1)` is cut in proportion to `weights` (equal cuts
/// without weights).
fn weighted(weights: Option<&[f64]>, u: f64, n: usize) -> usize {
    let Some(weights) = weights.filter(|w| w.len() == n) else {
        return ((u * n as f64) as usize).min(n - 1);
    };
    let total: f64 = weights.iter().sum();
    let mut target = u * total;
    for (i, w) in weights.iter().enumerate() {
        if target < *w {
            return i;
        }
        target -= w;
    }
    weights.iter().rposition(|w| *w > 0.0).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;

    fn raw(v: serde_json::Value) -> Box<RawValue> {
        RawValue::from_string(v.to_string()).unwrap()
    }

    /// Pearson's chi-square statistic of `counts` against `expected` proportions.
    fn chi_square(counts: &[u64], expected: &[f64]) -> f64 {
        let total: u64 = counts.iter().sum();
        let sum: f64 = expected.iter().sum();
        counts
            .iter()
            .zip(expected)
            .map(|(&c, &p)| {
                let e = total as f64 * p / sum;
                (c as f64 - e).powi(2) / e
            })
            .sum()
    }

    // Critical values of chi-square at p = 0.001: a correct sampler fails one run in a thousand.
    const CHI2_CRIT_DF2: f64 = 13.816;
    const CHI2_CRIT_DF3: f64 = 16.266;

    fn counts(
        response: &RawValue,
        n: usize,
        draws: usize,
        seed_of: impl Fn(usize) -> String,
    ) -> Vec<u64> {
        let turns = Turns::new();
        let mut c = vec![0u64; n];
        for i in 0..draws {
            let (idx, _) = pick(response, "k", &seed_of(i), &turns).unwrap();
            c[idx] += 1;
        }
        c
    }

    #[test]
    fn random_is_uniform() {
        let r = raw(json!({"variants": ["a", "b", "c", "d"], "variantStrategy": "random"}));
        let c = counts(&r, 4, 20_000, |_| String::new());
        let chi = chi_square(&c, &[1.0; 4]);
        assert!(chi < CHI2_CRIT_DF3, "{c:?} chi2 = {chi}");
    }

    #[test]
    fn weighted_follows_weights_and_never_picks_zero_weight() {
        let r = raw(
            json!({"variants": ["a", "b", "c", "z"], "variantStrategy": "weighted",
                           "weights": [0.5, 0.3, 0.2, 0.0]}),
        );
        let c = counts(&r, 4, 20_000, |_| String::new());
        assert_eq!(c[3], 0);
        let chi = chi_square(&c[..3], &[0.5, 0.3, 0.2]);
        assert!(chi < CHI2_CRIT_DF2, "{c:?} chi2 = {chi}");
    }

    #[test]
    fn deterministic_is_stable_per_seed_and_spreads_over_seeds() {
        let r = raw(
            json!({"variants": ["a", "b", "c"], "variantStrategy": "deterministic", "seed": 42}),
        );
        let turns = Turns::new();
        for user in ["alice", "bob", "carol"] {
            let first = pick(&r, "k", user, &turns).unwrap().0;
            for _ in 0..20 {
                assert_eq!(pick(&r, "k", user, &turns).unwrap().0, first);
            }
        }
        let c = counts(&r, 3, 6_000, |i| format!("user-{i}"));
        let chi = chi_square(&c, &[1.0; 3]);
        assert!(chi < CHI2_CRIT_DF2, "{c:?} chi2 = {chi}");
        // Weighted deterministic spread.
        let w = raw(
            json!({"variants": ["a", "b"], "variantStrategy": "deterministic", "weights": [9, 1]}),
        );
        let c = counts(&w, 2, 10_000, |i| format!("user-{i}"));
        let chi = chi_square(&c, &[9.0, 1.0]);
        assert!(chi < 10.828, "{c:?} chi2 = {chi}");
    }

    #[test]
    fn round_robin_cycles_exactly() {
        let r = raw(json!({"variants": ["a", "b", "c"], "variantStrategy": "round-robin"}));
        let turns = Turns::new();
        let order: Vec<usize> = (0..7)
            .map(|_| pick(&r, "k", "", &turns).unwrap().0)
            .collect();
        assert_eq!(order, [0, 1, 2, 0, 1, 2, 0]);
        // Another entry has its own turn.
        assert_eq!(pick(&r, "other", "", &turns).unwrap().0, 0);
    }

    #[test]
    fn plain_responses_pass_through() {
        let turns = Turns::new();
        assert!(pick(&raw(json!({"answer": "x"})), "k", "", &turns).is_none());
        assert!(pick(&raw(json!("variantStrategy")), "k", "", &turns).is_none());
        assert!(validate(&json!({"answer": "x"})).is_ok());
    }

    #[test]
    fn bad_shapes_are_refused() {
        for bad in [
            json!({"variants": [], "variantStrategy": "random"}),
            json!({"variants": ["a"], "variantStrategy": "sometimes"}),
            json!({"variants": ["a", "b"], "variantStrategy": "weighted"}),
            json!({"variants": ["a", "b"], "variantStrategy": "weighted", "weights": [1]}),
            json!({"variants": ["a", "b"], "variantStrategy": "weighted", "weights": [1, -1]}),
            json!({"variants": ["a", "b"], "variantStrategy": "weighted", "weights": [0, 0]}),
            json!({"variants": ["a", null], "variantStrategy": "random"}),
            json!({"variants": "a", "variantStrategy": "random"}),
            json!({"variants": ["a"]}),
            json!({"variants": ["a"], "variantStrategy": "random", "extra": 1}),
        ] {
            assert!(validate(&bad).is_err(), "{bad}");
        }
    }
}
