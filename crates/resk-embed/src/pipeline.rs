//! Batching, bounded concurrency, retries, timeouts and dimension checks around any embedder.

use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt, stream};
use resk_core::{Embedder, EmbedderInfo, Embedding, Error, ErrorKind, Result};

use crate::{RetryPolicy, check_dims};

/// How a [`Pipeline`] drives its provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PipelineConfig {
    /// Texts per provider call; capped by the provider's own `max_batch`.
    pub batch_size: usize,
    /// Provider calls in flight at once for one `embed` call.
    pub concurrency: usize,
    /// Bound on each provider call (each attempt); an elapsed call counts as `Unavailable`.
    pub timeout: Duration,
    /// Retries of transient failures.
    pub retry: RetryPolicy,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            batch_size: 2048,
            concurrency: 4,
            timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
        }
    }
}

/// Any [`Embedder`] plus batching, bounded concurrency, retries, timeouts and dimension checks.
///
/// The pipeline is itself an [`Embedder`] with no batch limit (`max_batch = usize::MAX`): callers hand
/// it any number of texts and get one vector per text, in input order.
///
/// ```
/// # use resk_core::{Embedder, EmbedderInfo, Embedding, Result};
/// # #[derive(Debug)] struct Two(EmbedderInfo);
/// # impl Embedder for Two {
/// #     fn info(&self) -> &EmbedderInfo { &self.0 }
/// #     async fn embed(&self, t: &[String]) -> Result<Vec<Embedding>> {
/// #         assert!(t.len() <= 2); Ok(t.iter().map(|s| vec![s.len() as f32]).collect()) }
/// # }
/// # tokio_test(async {
/// use resk_embed::{Pipeline, PipelineConfig};
/// let inner = Two(EmbedderInfo::new("toy", "len", 1, 2));
/// let p = Pipeline::new(inner, PipelineConfig::default());
/// let texts: Vec<String> = ["a", "bb", "ccc", "dddd", "e"].map(String::from).to_vec();
/// let out = p.embed(&texts).await.unwrap();
/// assert_eq!(out, vec![vec![1.0], vec![2.0], vec![3.0], vec![4.0], vec![1.0]]);
/// # });
/// # fn tokio_test(f: impl std::future::Future<Output = ()>) {
/// #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f) }
/// ```
#[derive(Debug)]
pub struct Pipeline<E> {
    inner: E,
    info: EmbedderInfo,
    config: PipelineConfig,
}

impl<E: Embedder> Pipeline<E> {
    /// Wrap `inner`.
    pub fn new(inner: E, config: PipelineConfig) -> Self {
        let inner_info = inner.info();
        let info = EmbedderInfo::new(
            inner_info.provider,
            inner_info.model.clone(),
            inner_info.dims,
            usize::MAX,
        );
        let config = PipelineConfig {
            batch_size: config.batch_size.clamp(1, inner_info.max_batch.max(1)),
            concurrency: config.concurrency.max(1),
            ..config
        };
        Self {
            inner,
            info,
            config,
        }
    }

    /// The wrapped provider.
    pub fn inner(&self) -> &E {
        &self.inner
    }

    async fn call(&self, batch: &[String]) -> Result<Vec<Embedding>> {
        let provider = self.info.provider;
        let timeout = self.config.timeout;
        let vectors = self
            .config
            .retry
            .run(provider, || async move {
                tokio::time::timeout(timeout, self.inner.embed(batch))
                    .await
                    .map_err(|_| {
                        Error::new(
                            ErrorKind::Unavailable,
                            provider,
                            "embed",
                            format!("no answer within {timeout:?}"),
                        )
                    })?
            })
            .await?;
        if vectors.len() != batch.len() {
            return Err(Error::new(
                ErrorKind::Backend,
                provider,
                "embed",
                format!(
                    "the provider returned {} vectors for {} texts",
                    vectors.len(),
                    batch.len()
                ),
            ));
        }
        check_dims(provider, self.info.dims, &vectors)?;
        Ok(vectors)
    }
}

impl<E: Embedder> Embedder for Pipeline<E> {
    fn info(&self) -> &EmbedderInfo {
        &self.info
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Embedding>> {
        if texts.len() <= self.config.batch_size {
            return self.call(texts).await;
        }
        // Batches of texts of similar length waste less on padding (a local model pads every text
        // of a batch to its longest), as sentence-transformers' own `encode` does: sort by length,
        // embed, and put the vectors back in input order.
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(texts[i].len()));
        let sorted: Vec<String> = order.iter().map(|&i| texts[i].clone()).collect();
        // Futures are built up front (not in a stream closure) so their lifetimes stay concrete.
        let calls: Vec<_> = sorted
            .chunks(self.config.batch_size)
            .map(|batch| self.call(batch))
            .collect();
        let batches: Vec<Vec<Embedding>> = stream::iter(calls)
            .buffered(self.config.concurrency)
            .try_collect()
            .await?;
        let mut out: Vec<Embedding> = vec![Vec::new(); texts.len()];
        for (&i, vector) in order.iter().zip(batches.into_iter().flatten()) {
            out[i] = vector;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    };

    use super::*;

    /// Records batch sizes and peak concurrency; fails the first call of every batch once.
    #[derive(Debug)]
    struct Probe {
        info: EmbedderInfo,
        in_flight: AtomicUsize,
        peak: AtomicUsize,
        sizes: Mutex<Vec<usize>>,
        flaky: Mutex<std::collections::HashSet<String>>,
        wrong_dims: bool,
    }

    impl Probe {
        fn new(max_batch: usize) -> Self {
            Self {
                info: EmbedderInfo::new("probe", "m", 2, max_batch),
                in_flight: AtomicUsize::new(0),
                peak: AtomicUsize::new(0),
                sizes: Mutex::new(Vec::new()),
                flaky: Mutex::new(Default::default()),
                wrong_dims: false,
            }
        }
    }

    impl Embedder for Probe {
        fn info(&self) -> &EmbedderInfo {
            &self.info
        }
        async fn embed(&self, texts: &[String]) -> Result<Vec<Embedding>> {
            assert!(texts.len() <= self.info.max_batch);
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.peak.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(5)).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            if self.flaky.lock().unwrap().insert(texts[0].clone()) {
                return Err(Error::new(ErrorKind::Unavailable, "probe", "embed", "503"));
            }
            self.sizes.lock().unwrap().push(texts.len());
            let dims = if self.wrong_dims { 3 } else { 2 };
            Ok(texts
                .iter()
                .map(|t| {
                    let mut v = vec![0.0; dims];
                    v[0] = t.parse().unwrap();
                    v
                })
                .collect())
        }
    }

    fn config(concurrency: usize) -> PipelineConfig {
        PipelineConfig {
            batch_size: 1000,
            concurrency,
            timeout: Duration::from_secs(5),
            retry: RetryPolicy {
                max_retries: 2,
                base: Duration::from_millis(1),
                max: Duration::from_millis(5),
            },
        }
    }

    #[tokio::test]
    async fn batches_in_order_with_bounded_concurrency_and_retries() {
        let p = Pipeline::new(Probe::new(7), config(3));
        let texts: Vec<String> = (0..50).map(|i| i.to_string()).collect();
        let out = p.embed(&texts).await.unwrap();
        let firsts: Vec<f32> = out.iter().map(|v| v[0]).collect();
        assert_eq!(firsts, (0..50).map(|i| i as f32).collect::<Vec<_>>());
        let sizes = p.inner().sizes.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 50);
        assert!(sizes.iter().all(|&s| s <= 7), "{sizes:?}");
        let peak = p.inner().peak.load(Ordering::SeqCst);
        assert!((2..=3).contains(&peak), "peak concurrency {peak}");
    }

    #[tokio::test]
    async fn wrong_dimensions_are_an_error() {
        let mut probe = Probe::new(4);
        probe.wrong_dims = true;
        let p = Pipeline::new(probe, config(1));
        let err = p.embed(&["1".to_owned()]).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::DimensionMismatch);
    }

    #[derive(Debug)]
    struct Slow(EmbedderInfo);
    impl Embedder for Slow {
        fn info(&self) -> &EmbedderInfo {
            &self.0
        }
        async fn embed(&self, _: &[String]) -> Result<Vec<Embedding>> {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(vec![])
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_provider_times_out_as_unavailable() {
        let p = Pipeline::new(
            Slow(EmbedderInfo::new("slow", "m", 2, 8)),
            PipelineConfig {
                timeout: Duration::from_secs(2),
                ..config(1)
            },
        );
        let err = p.embed(&["x".to_owned()]).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
    }
}
