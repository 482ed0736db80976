#![doc = include_str!("../README.md")]

mod batch;
mod cache;
mod pipeline;

pub use batch::{MicroBatchConfig, MicroBatcher};
pub use cache::{EmbeddingCache, EmbeddingCacheConfig};
pub use pipeline::{Pipeline, PipelineConfig};
pub use resk_http::RetryPolicy;

use resk_core::{Embedding, Error, ErrorKind, Result};

/// Check that every vector has `dims` values; the error names the provider and both sizes.
pub fn check_dims(provider: &'static str, dims: usize, vectors: &[Embedding]) -> Result<()> {
    match vectors.iter().find(|v| v.len() != dims) {
        None => Ok(()),
        Some(bad) => Err(Error::new(
            ErrorKind::DimensionMismatch,
            provider,
            "embed",
            format!(
                "the provider returned a vector of {} values; {dims} were expected (check the model and \
                 `EMBEDDING_DIMENSIONS`)",
                bad.len()
            ),
        )),
    }
}

/// Scale `v` to unit length in place (a zero vector stays zero).
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        for x in v {
            *x /= norm;
        }
    }
}
