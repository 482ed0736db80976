//! Embedders: text in, vectors out. Implementations live in the `resk-embed-*` crates.

use std::{fmt::Debug, future::Future, sync::Arc};

use crate::{BoxFuture, Error, ErrorKind, Result};

/// One embedding vector.
pub type Embedding = Vec<f32>;

/// An embedder's model, output size and batch limit.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EmbedderInfo {
    /// Provider name (`"openai"`, `"local"`, …); used in metrics labels.
    pub provider: &'static str,
    /// Model identifier, part of the semantic scope: vectors of different models are never compared.
    pub model: String,
    /// Number of values in every vector this embedder returns.
    pub dims: usize,
    /// Most texts accepted by one `embed` call.
    pub max_batch: usize,
}

impl EmbedderInfo {
    /// Describe an embedder.
    pub fn new(
        provider: &'static str,
        model: impl Into<String>,
        dims: usize,
        max_batch: usize,
    ) -> Self {
        Self {
            provider,
            model: model.into(),
            dims,
            max_batch,
        }
    }

    /// The checks every provider makes at the top of `embed`: at most [`Self::max_batch`] texts,
    /// none of them blank (an embedding of nothing means nothing, and providers refuse it in
    /// their own words). Both are [`ErrorKind::InvalidInput`] errors.
    pub fn check_texts(&self, texts: &[String]) -> Result<()> {
        self.check_batch(texts.len())?;
        if let Some(i) = texts.iter().position(|t| t.trim().is_empty()) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                self.provider,
                "embed",
                format!("text {i} is blank; every text to embed must have content"),
            ));
        }
        Ok(())
    }

    /// An [`ErrorKind::InvalidInput`] error when `texts` exceeds [`Self::max_batch`]: the check every
    /// provider makes at the top of `embed`.
    pub fn check_batch(&self, texts: usize) -> Result<()> {
        if texts <= self.max_batch {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::InvalidInput,
            self.provider,
            "embed",
            format!("{texts} texts; at most {} per call", self.max_batch),
        ))
    }
}

/// Turns texts into vectors.
///
/// # Contract
/// * The output has one vector per input, in input order.
/// * Every vector has exactly `info().dims` values; a provider answer of another size is an error of
///   kind [`crate::ErrorKind::DimensionMismatch`], never a silently truncated vector.
/// * At most `info().max_batch` texts per call; more is an [`crate::ErrorKind::InvalidInput`] error
///   (batching across calls is a layer's job, not each provider's). A blank text is one too; an
///   empty batch is an empty answer, without a provider call.
/// * Each vector depends on its text only: the same text gives the same vector, alone or in any
///   batch, in any position.
/// * Transient provider failures surface as [`crate::ErrorKind::Unavailable`] or
///   [`crate::ErrorKind::RateLimited`], so retry layers can tell them apart from bad input.
/// * API keys never appear in errors or logs.
pub trait Embedder: Send + Sync + Debug + 'static {
    /// Model, dimensions and batch limit.
    fn info(&self) -> &EmbedderInfo;

    /// Embed `texts`; see the contract for ordering and sizes.
    fn embed(&self, texts: &[String]) -> impl Future<Output = Result<Vec<Embedding>>> + Send;
}

/// The object-safe twin of [`Embedder`]; blanket-implemented, never implemented by hand.
#[allow(missing_docs)] // each method mirrors the Embedder method of the same name
pub trait EmbedderDyn: Send + Sync + Debug + 'static {
    fn info_dyn(&self) -> &EmbedderInfo;
    fn embed_dyn<'a>(&'a self, texts: &'a [String]) -> BoxFuture<'a, Result<Vec<Embedding>>>;
}

impl<T: Embedder + ?Sized> EmbedderDyn for T {
    fn info_dyn(&self) -> &EmbedderInfo {
        self.info()
    }
    fn embed_dyn<'a>(&'a self, texts: &'a [String]) -> BoxFuture<'a, Result<Vec<Embedding>>> {
        Box::pin(self.embed(texts))
    }
}

impl<T: EmbedderDyn + ?Sized> Embedder for Arc<T> {
    fn info(&self) -> &EmbedderInfo {
        (**self).info_dyn()
    }
    async fn embed(&self, texts: &[String]) -> Result<Vec<Embedding>> {
        (**self).embed_dyn(texts).await
    }
}

/// An embedder chosen at run time.
pub type SharedEmbedder = Arc<dyn EmbedderDyn>;
