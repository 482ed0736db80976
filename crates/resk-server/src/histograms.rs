//! Histogram samples gathered per thread before they reach the Prometheus exporter.
//!
//! `metrics-exporter-prometheus` keeps every sample of a histogram in one lock-free list until its
//! upkeep folds them into buckets; when two worker threads serve hits at once, both cores write that
//! list's index, ready bits and slots, and an exact hit (six samples) cost ~1.9 µs more than with
//! one thread (`benches/hit_path.rs`, `threads = [1, 2]`; docs/operations.md). [`PerCoreHistograms`]
//! wraps the exporter's recorder: each thread appends to a list of its own, and [`Pending::flush`]
//! hands the lists to the exporter in bulk — from the upkeep thread, and before every render — so a
//! scrape sees every sample recorded before it. Counters and gauges are the exporter's own.
//!
//! No crate module is imported here: `routes` (the render) and `telemetry` (the recorder) both use it.

use std::sync::OnceLock;

use metrics_exporter_prometheus::PrometheusHandle;

/// The Prometheus text of `handle`, histogram samples still held per core included.
pub(crate) fn render(handle: &PrometheusHandle) -> String {
    pending().flush();
    handle.render()
}

/// The samples every [`PerCoreHistograms`] of the process holds until the next flush.
pub(crate) fn pending() -> &'static Pending {
    static PENDING: OnceLock<Pending> = OnceLock::new();
    PENDING.get_or_init(Pending::default)
}

/// Histograms whose samples wait in per-core lists before they reach the exporter's, by key.
#[derive(Default)]
pub(crate) struct Pending(
    std::sync::Mutex<std::collections::HashMap<metrics::Key, std::sync::Arc<Sharded>>>,
);

impl Pending {
    /// Hand every held sample to the exporter (before its upkeep folds them, and before a render).
    pub(crate) fn flush(&self) {
        let all: Vec<_> = match self.0.lock() {
            Ok(map) => map.values().cloned().collect(),
            Err(_) => return,
        };
        for histogram in all {
            histogram.flush();
        }
    }
}

/// Lists per histogram: a thread keeps to one (threads are numbered as they first record), so two
/// worker threads never write the same list.
const SHARDS: usize = 16;

/// Samples one list holds before its thread hands them over itself (a bound on memory if the
/// upkeep thread could not start).
const SHARD_CAP: usize = 4096;

/// One list, alone on its cache lines.
#[repr(align(128))]
#[derive(Default)]
struct Shard(std::sync::Mutex<Vec<f64>>);

impl Shard {
    /// The samples held, leaving the list empty (none from a list poisoned by a panic).
    fn take(&self) -> Vec<f64> {
        self.0
            .lock()
            .map(|mut samples| std::mem::take(&mut *samples))
            .unwrap_or_default()
    }
}

/// A histogram of the exporter with its samples gathered per thread first (see the module docs).
struct Sharded {
    inner: metrics::Histogram,
    shards: [Shard; SHARDS],
}

impl Sharded {
    fn new(inner: metrics::Histogram) -> Self {
        Self {
            inner,
            shards: std::array::from_fn(|_| Shard::default()),
        }
    }

    fn flush(&self) {
        for shard in &self.shards {
            self.hand_over(shard.take());
        }
    }

    fn hand_over(&self, samples: Vec<f64>) {
        for value in samples {
            self.inner.record(value);
        }
    }
}

impl metrics::HistogramFn for Sharded {
    fn record(&self, value: f64) {
        thread_local! {
            static SHARD: usize = {
                static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
                NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % SHARDS
            };
        }
        let shard = &self.shards[SHARD.with(|s| *s)];
        let full = match shard.0.lock() {
            Ok(mut samples) => {
                samples.push(value);
                (samples.len() >= SHARD_CAP).then(|| std::mem::take(&mut *samples))
            }
            // A thread panicked while pushing: record directly rather than lose the sample.
            Err(_) => Some(vec![value]),
        };
        // Only this thread's own list: the hot path leaves the other threads' lists alone.
        if let Some(samples) = full {
            self.hand_over(samples);
        }
    }
}

/// A recorder that hands out [`Sharded`] histograms over `inner`'s, one per key; counters and
/// gauges are `inner`'s own.
pub(crate) struct PerCoreHistograms<R> {
    inner: R,
    pending: &'static Pending,
}

impl<R> PerCoreHistograms<R> {
    pub(crate) fn new(inner: R, pending: &'static Pending) -> Self {
        Self { inner, pending }
    }
}

impl<R: metrics::Recorder> metrics::Recorder for PerCoreHistograms<R> {
    fn describe_counter(
        &self,
        key: metrics::KeyName,
        unit: Option<metrics::Unit>,
        description: metrics::SharedString,
    ) {
        self.inner.describe_counter(key, unit, description);
    }

    fn describe_gauge(
        &self,
        key: metrics::KeyName,
        unit: Option<metrics::Unit>,
        description: metrics::SharedString,
    ) {
        self.inner.describe_gauge(key, unit, description);
    }

    fn describe_histogram(
        &self,
        key: metrics::KeyName,
        unit: Option<metrics::Unit>,
        description: metrics::SharedString,
    ) {
        self.inner.describe_histogram(key, unit, description);
    }

    fn register_counter(
        &self,
        key: &metrics::Key,
        metadata: &metrics::Metadata<'_>,
    ) -> metrics::Counter {
        self.inner.register_counter(key, metadata)
    }

    fn register_gauge(
        &self,
        key: &metrics::Key,
        metadata: &metrics::Metadata<'_>,
    ) -> metrics::Gauge {
        self.inner.register_gauge(key, metadata)
    }

    fn register_histogram(
        &self,
        key: &metrics::Key,
        metadata: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        let Ok(mut map) = self.pending.0.lock() else {
            return self.inner.register_histogram(key, metadata);
        };
        let sharded = map
            .entry(key.clone())
            .or_insert_with(|| {
                std::sync::Arc::new(Sharded::new(self.inner.register_histogram(key, metadata)))
            })
            .clone();
        metrics::Histogram::from_arc(sharded)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use metrics_exporter_prometheus::PrometheusBuilder;

    use super::*;

    #[test]
    fn histogram_samples_held_per_thread_reach_the_exporter_on_flush_and_past_the_cap() {
        use metrics::Recorder as _;
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[0.001, 0.01])
            .unwrap()
            .build_recorder();
        let handle = recorder.handle();
        let pending: &'static Pending = Box::leak(Box::default());
        let recorder = PerCoreHistograms::new(recorder, pending);
        let key = metrics::Key::from_name("test_seconds");
        let meta = metrics::Metadata::new("t", metrics::Level::INFO, None);
        let histogram = recorder.register_histogram(&key, &meta);
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        histogram.record(0.001);
                    }
                });
            }
        });
        // Registered again (as `histogram!` does at each call site): the same series.
        recorder.register_histogram(&key, &meta).record(0.002);
        assert!(!handle.render().contains("test_seconds_count 2001"));
        pending.flush();
        let text = handle.render();
        assert!(text.contains("test_seconds_count 2001"), "{text}");
        assert!(text.contains("test_seconds_sum 2.002"), "{text}");
        // A list that reaches the cap is handed over by the thread that filled it.
        for _ in 0..SHARD_CAP {
            histogram.record(0.001);
        }
        let text = handle.render();
        let count = format!("test_seconds_count {}", 2001 + SHARD_CAP);
        assert!(text.contains(&count), "{text}");
    }
}
