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
        metrics::counter!(
            "resk_semantic_verdicts_total",
            "verifier" => v.by,
            "verdict" => v.verdict.as_str(),
            "reason" => v.label().to_owned(),
        )
        .increment(1);
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
