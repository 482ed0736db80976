//! `text → vector` memory, so a repeated miss does not pay for its embedding twice.

use std::{sync::Arc, time::Duration};

use moka::sync::Cache;
use resk_core::{Embedder, EmbedderInfo, Embedding, Result};
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

    /// Vectors currently held (approximate; moka counts lazily).
    pub fn len(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }

    /// Whether no vector is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
        let keys: Vec<[u8; 32]> = texts.iter().map(|t| self.digest(t)).collect();
        let mut out: Vec<Option<Embedding>> = keys
            .iter()
            .map(|k| self.cache.get(k).map(|v| v.to_vec()))
            .collect();
        let missing: Vec<usize> = (0..texts.len()).filter(|&i| out[i].is_none()).collect();
        let provider = self.inner.info().provider;
        metrics::counter!("resk_embed_cache_hits_total", "provider" => provider)
            .increment((texts.len() - missing.len()) as u64);
        metrics::counter!("resk_embed_cache_misses_total", "provider" => provider)
            .increment(missing.len() as u64);
        if !missing.is_empty() {
            let batch: Vec<String> = missing.iter().map(|&i| texts[i].clone()).collect();
            let vectors = self.inner.embed(&batch).await?;
            for (&i, vector) in missing.iter().zip(vectors) {
                self.cache.insert(keys[i], Arc::from(vector.as_slice()));
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
        assert_eq!(c.len(), 4);
    }
}
