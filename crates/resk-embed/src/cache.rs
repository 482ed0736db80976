//! `text → vector` memory, so a repeated miss does not pay for its embedding twice, and concurrent
//! misses of one text share one provider call.

use std::{sync::Arc, time::Duration};

use moka::future::Cache;
use resk_core::{Embedder, EmbedderInfo, Embedding, Error, ErrorKind, Result};
use sha2::{Digest, Sha256};

/// Size and lifetime of an [`EmbeddingCache`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EmbeddingCacheConfig {
    /// Most vectors kept.
    pub max_entries: u64,
    /// How long a vector is kept after it was computed.
    pub ttl: Duration,
}

impl Default for EmbeddingCacheConfig {
    fn default() -> Self {
        Self {
            max_entries: 10_000,
            ttl: Duration::from_secs(3600),
        }
    }
}

/// An [`Embedder`] that remembers vectors by a SHA-256 of (model, text).
///
/// Only the digest is kept as the key, never the text. Texts already cached are answered from memory;
/// the rest go to the inner embedder in one call, and the answer is stitched back in input order.
///
/// A single text (a query, the hot path) is loaded through moka's `try_get_with`, which runs one
/// load per key at a time: 100 concurrent misses of one query cost one provider call, the other 99
/// wait for its vector (or its error). moka's future cache was chosen over a hand-written
/// singleflight map for exactly this coalescing.
#[derive(Debug)]
pub struct EmbeddingCache<E> {
    inner: E,
    cache: Cache<[u8; 32], Arc<[f32]>>,
}

impl<E: Embedder> EmbeddingCache<E> {
    /// Wrap `inner`.
    pub fn new(inner: E, config: EmbeddingCacheConfig) -> Self {
        Self {
            inner,
            cache: Cache::builder()
                .max_capacity(config.max_entries)
                .time_to_live(config.ttl)
                .build(),
        }
    }

    /// Vectors currently held (after moka's pending maintenance).
    pub async fn len(&self) -> u64 {
        self.cache.run_pending_tasks().await;
        self.cache.entry_count()
    }

    /// Whether no vector is held.
    pub async fn is_empty(&self) -> bool {
        self.len().await == 0
    }

    fn digest(&self, text: &str) -> [u8; 32] {
        let model = &self.inner.info().model;
        let mut h = Sha256::new();
        h.update((model.len() as u64).to_be_bytes());
        h.update(model.as_bytes());
        h.update(text.as_bytes());
        h.finalize().into()
    }
}

impl<E: Embedder> Embedder for EmbeddingCache<E> {
    fn info(&self) -> &EmbedderInfo {
        self.inner.info()
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Embedding>> {
        let provider = self.inner.info().provider;
        if let [text] = texts {
            let key = self.digest(text);
            let loaded = std::sync::atomic::AtomicBool::new(false);
            let vector = self
                .cache
                .try_get_with(key, async {
                    loaded.store(true, std::sync::atomic::Ordering::Relaxed);
                    let mut vectors = self.inner.embed(std::slice::from_ref(text)).await?;
                    let vector = vectors.pop().ok_or_else(|| {
                        Error::new(ErrorKind::Backend, provider, "embed", "no vector returned")
                    })?;
                    Ok::<_, Error>(Arc::from(vector.as_slice()))
                })
                .await
                .map_err(|shared| shared.replicate())?;
            let counter = if loaded.load(std::sync::atomic::Ordering::Relaxed) {
                "resk_embed_cache_misses_total"
            } else {
                "resk_embed_cache_hits_total"
            };
            metrics::counter!(counter, "provider" => provider).increment(1);
            return Ok(vec![vector.to_vec()]);
        }
        let keys: Vec<[u8; 32]> = texts.iter().map(|t| self.digest(t)).collect();
        let mut out: Vec<Option<Embedding>> = Vec::with_capacity(keys.len());
        for key in &keys {
            out.push(self.cache.get(key).await.map(|v| v.to_vec()));
        }
        let missing: Vec<usize> = (0..texts.len()).filter(|&i| out[i].is_none()).collect();
        metrics::counter!("resk_embed_cache_hits_total", "provider" => provider)
            .increment((texts.len() - missing.len()) as u64);
        metrics::counter!("resk_embed_cache_misses_total", "provider" => provider)
            .increment(missing.len() as u64);
        if !missing.is_empty() {
            let batch: Vec<String> = missing.iter().map(|&i| texts[i].clone()).collect();
            let vectors = self.inner.embed(&batch).await?;
            for (&i, vector) in missing.iter().zip(vectors) {
                self.cache
                    .insert(keys[i], Arc::from(vector.as_slice()))
                    .await;
                out[i] = Some(vector);
            }
        }
        Ok(out.into_iter().flatten().collect())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[derive(Debug)]
    struct Counting(EmbedderInfo, AtomicUsize);
    impl Embedder for Counting {
        fn info(&self) -> &EmbedderInfo {
            &self.0
        }
        async fn embed(&self, texts: &[String]) -> Result<Vec<Embedding>> {
            self.1.fetch_add(texts.len(), Ordering::SeqCst);
            Ok(texts.iter().map(|t| vec![t.len() as f32]).collect())
        }
    }

    #[tokio::test]
    async fn repeated_texts_are_embedded_once_and_order_is_kept() {
        let c = EmbeddingCache::new(
            Counting(EmbedderInfo::new("c", "m", 1, 100), AtomicUsize::new(0)),
            EmbeddingCacheConfig::default(),
        );
        let a: Vec<String> = ["a", "bb"].map(String::from).to_vec();
        assert_eq!(c.embed(&a).await.unwrap(), vec![vec![1.0], vec![2.0]]);
        let b: Vec<String> = ["ccc", "a", "bb", "dddd"].map(String::from).to_vec();
        assert_eq!(
            c.embed(&b).await.unwrap(),
            vec![vec![3.0], vec![1.0], vec![2.0], vec![4.0]]
        );
        assert_eq!(c.inner.1.load(Ordering::SeqCst), 4, "a and bb were cached");
        assert_eq!(c.len().await, 4);
    }

    /// An embedder that takes its time, so concurrent calls overlap.
    #[derive(Debug)]
    struct Slow(EmbedderInfo, AtomicUsize);
    impl Embedder for Slow {
        fn info(&self) -> &EmbedderInfo {
            &self.0
        }
        async fn embed(&self, texts: &[String]) -> Result<Vec<Embedding>> {
            self.1.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            if texts.iter().any(|t| t == "fail") {
                return Err(Error::new(ErrorKind::Unavailable, "slow", "embed", "down"));
            }
            Ok(texts.iter().map(|t| vec![t.len() as f32]).collect())
        }
    }

    /// 100 concurrent misses of one query: exactly one provider call, every caller gets the vector;
    /// a failure is shared too, and not cached.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_misses_of_one_text_cost_one_call() {
        let c = Arc::new(EmbeddingCache::new(
            Slow(EmbedderInfo::new("s", "m", 1, 100), AtomicUsize::new(0)),
            EmbeddingCacheConfig::default(),
        ));
        let calls: Vec<_> = (0..100)
            .map(|_| {
                let c = c.clone();
                tokio::spawn(async move { c.embed(&["same question".to_owned()]).await })
            })
            .collect();
        for call in calls {
            assert_eq!(call.await.unwrap().unwrap(), vec![vec![13.0]]);
        }
        assert_eq!(c.inner.1.load(Ordering::SeqCst), 1);

        let calls: Vec<_> = (0..20)
            .map(|_| {
                let c = c.clone();
                tokio::spawn(async move { c.embed(&["fail".to_owned()]).await })
            })
            .collect();
        for call in calls {
            let err = call.await.unwrap().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Unavailable);
        }
        assert_eq!(
            c.inner.1.load(Ordering::SeqCst),
            2,
            "one call for 20 failing misses"
        );
        assert!(c.embed(&["fail".to_owned()]).await.is_err());
        assert_eq!(c.inner.1.load(Ordering::SeqCst), 3, "errors are not cached");
    }
}
