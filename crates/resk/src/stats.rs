//! Metric handles with fixed labels, registered once when a [`Cache`](crate::Cache) is built so
//! the hot path skips the registry lookup. With no `metrics` recorder installed they cost nothing.

use metrics::{Counter, Histogram};

use crate::Source;

/// The store names with their own `source` label; others count as `other`.
const STORES: [&str; 3] = ["memory", "sqlite", "redis"];

pub(crate) struct Stats {
    /// Exact hits by store, in [`STORES`] order.
    store_hits: [Counter; STORES.len()],
    semantic_hits: Counter,
    other_hits: Counter,
    pub(crate) misses: Counter,
    pub(crate) writes: Counter,
    pub(crate) key_seconds: Histogram,
    pub(crate) cache_seconds: Histogram,
    pub(crate) embed_seconds: Histogram,
    pub(crate) vector_seconds: Histogram,
    store_tokens_saved: [Counter; STORES.len()],
    semantic_tokens_saved: Counter,
    pub(crate) similarity: Histogram,
    pub(crate) stale: Counter,
    feedback_right: std::sync::atomic::AtomicU64,
    feedback_wrong: std::sync::atomic::AtomicU64,
    /// The verdict counters met so far, by verifier, verdict and reason label (at most
    /// [`VERDICT_HANDLES`]; labels beyond go through the registry).
    verdicts: std::sync::RwLock<Vec<VerdictCounter>>,
}

/// How many verdict counters [`Stats::verdict`] keeps: the built-in verifiers' reason labels with
/// room to spare; a custom verifier with more distinct reasons still counts, through the registry.
const VERDICT_HANDLES: usize = 64;

/// One series of `resk_semantic_verdicts_total`.
struct VerdictCounter {
    by: &'static str,
    verdict: resk_core::Verdict,
    label: Box<str>,
    counter: Counter,
}

impl Stats {
    pub(crate) fn new(backend: &'static str) -> Self {
        Self {
            store_hits: STORES.map(|source| {
                metrics::counter!("resk_cache_lookups_total", "result" => "hit", "source" => source)
            }),
            semantic_hits: metrics::counter!("resk_cache_lookups_total", "result" => "hit", "source" => "semantic"),
            other_hits: metrics::counter!("resk_cache_lookups_total", "result" => "hit", "source" => "other"),
            misses: metrics::counter!("resk_cache_lookups_total", "result" => "miss", "source" => "none"),
            writes: metrics::counter!("resk_cache_writes_total", "backend" => backend),
            key_seconds: metrics::histogram!("resk_layer_duration_seconds", "layer" => "key"),
            cache_seconds: metrics::histogram!("resk_layer_duration_seconds", "layer" => "cache"),
            embed_seconds: metrics::histogram!("resk_layer_duration_seconds", "layer" => "embed"),
            vector_seconds: metrics::histogram!("resk_layer_duration_seconds", "layer" => "vector"),
            store_tokens_saved: STORES
                .map(|source| metrics::counter!("resk_tokens_saved_total", "source" => source)),
            semantic_tokens_saved: metrics::counter!("resk_tokens_saved_total", "source" => "semantic"),
            similarity: metrics::histogram!("resk_semantic_similarity"),
            stale: metrics::counter!("resk_stale_answers_total"),
            feedback_right: Default::default(),
            feedback_wrong: Default::default(),
            verdicts: Default::default(),
        }
    }

    /// Count a hit from `source` that saved an LLM call over `bytes` of query and answer; the
    /// tokens counted as saved (0 where none are counted).
    pub(crate) fn hit(&self, source: Source, bytes: usize) -> u64 {
        let (hits, saved) = match source {
            Source::Semantic => (&self.semantic_hits, Some(&self.semantic_tokens_saved)),
            Source::Store(name) => match STORES.iter().position(|s| *s == name) {
                Some(i) => (&self.store_hits[i], Some(&self.store_tokens_saved[i])),
                None => (&self.other_hits, None),
            },
            Source::Computed => return 0,
        };
        hits.increment(1);
        let Some(saved) = saved else {
            return 0;
        };
        let tokens = estimated_tokens(bytes);
        saved.increment(tokens);
        tokens
    }
}

impl Stats {
    /// Count a feedback report (`resk_feedback_total{verdict}`) and update the estimated error
    /// rate of semantic hits (`resk_semantic_estimated_error_rate`: wrong reports over all reports
    /// this process received).
    pub(crate) fn feedback(&self, correct: bool) {
        use std::sync::atomic::Ordering;
        let verdict = if correct { "right" } else { "wrong" };
        metrics::counter!("resk_feedback_total", "verdict" => verdict).increment(1);
        let (right, wrong) = if correct {
            (
                self.feedback_right.fetch_add(1, Ordering::Relaxed) + 1,
                self.feedback_wrong.load(Ordering::Relaxed),
            )
        } else {
            (
                self.feedback_right.load(Ordering::Relaxed),
                self.feedback_wrong.fetch_add(1, Ordering::Relaxed) + 1,
            )
        };
        metrics::gauge!("resk_semantic_estimated_error_rate")
            .set(wrong as f64 / (right + wrong).max(1) as f64);
    }

    /// Count a decision of the verification stage
    /// (`resk_semantic_verdicts_total{verifier, verdict, reason}`).
    pub(crate) fn verdict(&self, v: &crate::verify::Verification) {
        // A kept handle, not the registry: this runs right after a forward pass has evicted the
        // CPU caches, where the registry's lookup (a key built, hashed and compared) took ~6 µs
        // in a probe build under load.
        let label = v.label();
        let same =
            |c: &VerdictCounter| c.by == v.by && c.verdict == v.verdict && *c.label == *label;
        if let Ok(known) = self.verdicts.read()
            && let Some(c) = known.iter().find(|c| same(c))
        {
            c.counter.increment(1);
            return;
        }
        let counter = metrics::counter!(
            "resk_semantic_verdicts_total",
            "verifier" => v.by,
            "verdict" => v.verdict.as_str(),
            "reason" => label.to_owned(),
        );
        counter.increment(1);
        if let Ok(mut known) = self.verdicts.write()
            && known.len() < VERDICT_HANDLES
            && !known.iter().any(same)
        {
            known.push(VerdictCounter {
                by: v.by,
                verdict: v.verdict,
                label: label.into(),
                counter,
            });
        }
    }
}

/// LLM tokens in `bytes` of text, estimated at 4 bytes a token (OpenAI's rule of thumb for
/// English; an estimate for dashboards, not billing).
fn estimated_tokens(bytes: usize) -> u64 {
    u64::try_from(bytes.div_ceil(4)).unwrap_or(u64::MAX)
}

/// Count a failure of the semantic layer's `op`.
pub(crate) fn semantic_error(op: &'static str, err: &resk_core::Error) {
    metrics::counter!("resk_semantic_errors_total", "op" => op, "kind" => err.kind().as_str())
        .increment(1);
    tracing::warn!(op, error = %err, "semantic layer error");
}

/// Count a lookup answered without `layer` (it failed); returns `true` for the `degraded` flag.
pub(crate) fn mark_degraded(layer: &'static str) -> bool {
    metrics::counter!("resk_degraded_responses_total", "layer" => layer).increment(1);
    true
}

/// Count (`resk_backend_errors_total{backend, op}`) and log a failure of the store `backend`'s
/// `op`: for callers that use [`Cache::store`](crate::Cache::store) for records of their own.
pub fn backend_error(backend: &'static str, op: &'static str, err: &resk_core::Error) {
    metrics::counter!("resk_backend_errors_total", "backend" => backend, "op" => op).increment(1);
    tracing::warn!(backend, op, error = %err, "cache backend error");
}

#[cfg(test)]
mod tests {
    use std::{
        collections::HashMap,
        sync::{Arc, Mutex, atomic::AtomicU64},
    };

    use metrics::{Key, KeyName, Metadata, Recorder, SharedString, Unit};
    use resk_core::Verdict;

    use super::*;
    use crate::verify::Verification;

    /// Counters by name and labels (`name{a=x,b=y}`); gauges and histograms ignored.
    #[derive(Default)]
    struct Counts(Mutex<HashMap<String, Arc<AtomicU64>>>);

    impl Counts {
        fn get(&self, series: &str) -> u64 {
            self.0
                .lock()
                .unwrap()
                .get(series)
                .map_or(0, |c| c.load(std::sync::atomic::Ordering::SeqCst))
        }
    }

    impl Recorder for Counts {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            let series = format!("{}{{{}}}", key.name(), labels.join(","));
            let counter = self.0.lock().unwrap().entry(series).or_default().clone();
            Counter::from_arc(counter)
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> metrics::Gauge {
            metrics::Gauge::noop()
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    #[test]
    fn verdicts_count_per_series_with_kept_handles_and_beyond_them() {
        let counts = Counts::default();
        metrics::with_local_recorder(&counts, || {
            let stats = Stats::new("memory");
            let accept = Verification::new(Verdict::Accept, "similarity", "above_accept");
            for _ in 0..3 {
                stats.verdict(&accept);
            }
            // One series per reason label: the part before the first `:`.
            stats.verdict(&Verification::new(
                Verdict::Reject,
                "guards",
                "antonym: on vs off",
            ));
            stats.verdict(&Verification::new(
                Verdict::Reject,
                "guards",
                "antonym: up vs down",
            ));
            stats.verdict(&Verification::new(Verdict::Accept, "guards", "antonym"));
            // More distinct series than handles kept: each still counts, kept or not.
            for i in 0..VERDICT_HANDLES + 10 {
                stats.verdict(&Verification::new(
                    Verdict::Reject,
                    "custom",
                    format!("r{i}"),
                ));
                stats.verdict(&Verification::new(
                    Verdict::Reject,
                    "custom",
                    format!("r{i}"),
                ));
            }
            stats.verdict(&accept);
        });
        let series = |by: &str, verdict: &str, reason: &str| {
            counts.get(&format!(
                "resk_semantic_verdicts_total{{verifier={by},verdict={verdict},reason={reason}}}"
            ))
        };
        assert_eq!(series("similarity", "accept", "above_accept"), 4);
        assert_eq!(series("guards", "reject", "antonym"), 2);
        assert_eq!(series("guards", "accept", "antonym"), 1);
        for i in 0..VERDICT_HANDLES + 10 {
            assert_eq!(series("custom", "reject", &format!("r{i}")), 2, "r{i}");
        }
    }
}
