//! Response variants: one cached entry, several answers (A/B tests, randomised replies).
//!
//! A cached `response` of the shape `{"variants": [...], "variantStrategy": "...", "weights"?: [...],
//! "seed"?: ...}` is answered with one of its variants, chosen per read:
//!
//! * `random`: uniformly at random;
//! * `weighted`: at random in proportion to `weights`;
//! * `round-robin`: in turn, with a counter per entry shared by every instance through Redis when the
//!   server runs on Redis, in this process otherwise; if Redis does not answer within 50 ms the local
//!   counter takes over (and Redis is left alone for 5 s), so a read never stalls on it;
//! * `deterministic`: by a hash of the entry's `seed` and the caller's `seed` (or, without one, the
//!   token's subject), so one user keeps getting the same variant while users spread over all of them
//!   (in proportion to `weights` when given).
//!
//! Bad shapes are refused when written (400), so reads never meet them.

use std::{
    fmt::Debug,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use moka::sync::Cache;
use resk_core::{BoxFuture, Result, TenantId};
use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

/// Most variants per entry.
pub const MAX_VARIANTS: usize = 100;

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

fn bad(message: impl Into<String>) -> resk_core::Error {
    crate::invalid("variants", message)
}

/// Whether a response declares variants (cheap test before parsing).
fn declares_variants(response: &str) -> bool {
    response.trim_start().starts_with('{') && response.contains("\"variantStrategy\"")
}

/// Validate an answer at write time: plain answers pass; a variants answer (an object with a
/// `variants` or `variantStrategy` member) must be well formed. Errors are
/// [`ErrorKind::InvalidInput`](resk_core::ErrorKind::InvalidInput) with op `variants`.
pub fn validate(response: &RawValue) -> Result<()> {
    let text = response.get();
    if !text.trim_start().starts_with('{') {
        return Ok(());
    }
    let Ok(members) = serde_json::from_str::<std::collections::HashMap<String, &RawValue>>(text)
    else {
        return Ok(());
    };
    if !members.contains_key("variantStrategy") && !members.contains_key("variants") {
        return Ok(());
    }
    let spec: Spec<'_> = serde_json::from_str(text).map_err(|e| {
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

/// A counter every instance shares (Redis `INCR`), for round-robin turns.
pub trait SharedCounter: Send + Sync + Debug + 'static {
    /// Increment `name` of `tenant` and return the new value (1 on first use).
    fn next<'a>(&'a self, tenant: &'a TenantId, name: &'a str) -> BoxFuture<'a, Result<u64>>;
}

/// How long an idle turn counter is kept.
pub const TURN_IDLE: Duration = Duration::from_secs(3600);
const SHARED_TIMEOUT: Duration = Duration::from_millis(50);
const SHARED_BACKOFF: Duration = Duration::from_secs(5);

/// Per-entry round-robin turns: shared when a [`SharedCounter`] is configured, local otherwise and
/// whenever the shared one fails (bounded; idle entries are forgotten after an hour).
pub(crate) struct Turns {
    counters: Cache<String, Arc<AtomicU64>>,
    shared: Option<Arc<dyn SharedCounter>>,
    started: Instant,
    /// Milliseconds since `started` before which the shared counter is not tried again.
    shared_paused_until: AtomicU64,
}

impl Turns {
    pub(crate) fn new(shared: Option<Arc<dyn SharedCounter>>) -> Self {
        Self {
            counters: Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(TURN_IDLE)
                .build(),
            shared,
            started: Instant::now(),
            shared_paused_until: AtomicU64::new(0),
        }
    }

    fn local(&self, tenant: &TenantId, key: &str) -> u64 {
        self.counters
            .get_with(format!("{tenant}\0{key}"), Default::default)
            .fetch_add(1, Ordering::Relaxed)
    }

    /// The 0-based turn of this read of entry `key`.
    pub(crate) async fn next(&self, tenant: &TenantId, key: &str) -> u64 {
        let now = self.started.elapsed().as_millis() as u64;
        if let Some(shared) = &self.shared
            && now >= self.shared_paused_until.load(Ordering::Relaxed)
        {
            match tokio::time::timeout(SHARED_TIMEOUT, shared.next(tenant, key)).await {
                Ok(Ok(n)) => return n.saturating_sub(1),
                Ok(Err(err)) => {
                    tracing::warn!(error = %err, "shared round-robin counter failed; using the local one")
                }
                Err(_) => {
                    tracing::warn!("shared round-robin counter timed out; using the local one")
                }
            }
            metrics::counter!("resk_variant_turn_fallbacks_total").increment(1);
            self.shared_paused_until
                .store(now + SHARED_BACKOFF.as_millis() as u64, Ordering::Relaxed);
        }
        self.local(tenant, key)
    }
}

/// The variant a read gets: `(index, answer)`, or `None` for a plain response.
pub(crate) async fn pick<'a>(
    response: &'a RawValue,
    tenant: &TenantId,
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
        Strategy::RoundRobin => (turns.next(tenant, key).await % n as u64) as usize,
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

    fn tenant() -> TenantId {
        TenantId::new("t").unwrap()
    }

    async fn counts(
        response: &RawValue,
        n: usize,
        draws: usize,
        seed_of: impl Fn(usize) -> String,
    ) -> Vec<u64> {
        let turns = Turns::new(None);
        let mut c = vec![0u64; n];
        for i in 0..draws {
            let (idx, _) = pick(response, &tenant(), "k", &seed_of(i), &turns)
                .await
                .unwrap();
            c[idx] += 1;
        }
        c
    }

    #[tokio::test]
    async fn random_is_uniform() {
        let r = raw(json!({"variants": ["a", "b", "c", "d"], "variantStrategy": "random"}));
        let c = counts(&r, 4, 20_000, |_| String::new()).await;
        let chi = chi_square(&c, &[1.0; 4]);
        assert!(chi < CHI2_CRIT_DF3, "{c:?} chi2 = {chi}");
    }

    #[tokio::test]
    async fn weighted_follows_weights_and_never_picks_zero_weight() {
        let r = raw(
            json!({"variants": ["a", "b", "c", "z"], "variantStrategy": "weighted",
                           "weights": [0.5, 0.3, 0.2, 0.0]}),
        );
        let c = counts(&r, 4, 20_000, |_| String::new()).await;
        assert_eq!(c[3], 0);
        let chi = chi_square(&c[..3], &[0.5, 0.3, 0.2]);
        assert!(chi < CHI2_CRIT_DF2, "{c:?} chi2 = {chi}");
    }

    #[tokio::test]
    async fn deterministic_is_stable_per_seed_and_spreads_over_seeds() {
        let r = raw(
            json!({"variants": ["a", "b", "c"], "variantStrategy": "deterministic", "seed": 42}),
        );
        let turns = Turns::new(None);
        for user in ["alice", "bob", "carol"] {
            let first = pick(&r, &tenant(), "k", user, &turns).await.unwrap().0;
            for _ in 0..20 {
                let again = pick(&r, &tenant(), "k", user, &turns).await.unwrap().0;
                assert_eq!(again, first);
            }
        }
        let c = counts(&r, 3, 6_000, |i| format!("user-{i}")).await;
        let chi = chi_square(&c, &[1.0; 3]);
        assert!(chi < CHI2_CRIT_DF2, "{c:?} chi2 = {chi}");
        // Weighted deterministic spread.
        let w = raw(
            json!({"variants": ["a", "b"], "variantStrategy": "deterministic", "weights": [9, 1]}),
        );
        let c = counts(&w, 2, 10_000, |i| format!("user-{i}")).await;
        let chi = chi_square(&c, &[9.0, 1.0]);
        assert!(chi < 10.828, "{c:?} chi2 = {chi}");
    }

    #[tokio::test]
    async fn round_robin_cycles_exactly() {
        let r = raw(json!({"variants": ["a", "b", "c"], "variantStrategy": "round-robin"}));
        let turns = Turns::new(None);
        let mut order = Vec::new();
        for _ in 0..7 {
            order.push(pick(&r, &tenant(), "k", "", &turns).await.unwrap().0);
        }
        assert_eq!(order, [0, 1, 2, 0, 1, 2, 0]);
        // Another entry has its own turn.
        assert_eq!(pick(&r, &tenant(), "other", "", &turns).await.unwrap().0, 0);
    }

    /// A shared counter that never answers.
    #[derive(Debug)]
    struct Hung(std::sync::atomic::AtomicUsize);
    impl SharedCounter for Hung {
        fn next<'a>(&'a self, _: &'a TenantId, _: &'a str) -> BoxFuture<'a, Result<u64>> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Box::pin(std::future::pending())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_shared_counter_never_stalls_reads() {
        let hung = Arc::new(Hung(Default::default()));
        let turns = Turns::new(Some(hung.clone()));
        let r = raw(json!({"variants": ["a", "b"], "variantStrategy": "round-robin"}));
        let mut order = Vec::new();
        for _ in 0..4 {
            order.push(pick(&r, &tenant(), "k", "", &turns).await.unwrap().0);
        }
        assert_eq!(order, [0, 1, 0, 1], "the local counter took over");
        assert_eq!(
            hung.0.load(Ordering::SeqCst),
            1,
            "after one timeout the shared counter is left alone for a while"
        );
    }

    #[tokio::test]
    async fn plain_responses_pass_through() {
        let turns = Turns::new(None);
        let plain = raw(json!({"answer": "x"}));
        assert!(pick(&plain, &tenant(), "k", "", &turns).await.is_none());
        let text = raw(json!("variantStrategy"));
        assert!(pick(&text, &tenant(), "k", "", &turns).await.is_none());
        assert!(validate(&raw(json!({"answer": "x"}))).is_ok());
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
            assert!(validate(&raw(bad.clone())).is_err(), "{bad}");
        }
    }
}
