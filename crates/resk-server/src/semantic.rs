//! Semantic search from configuration: the embedder and vector store named by `EMBEDDING_PROVIDER`
//! and `VECTORDB_TYPE` (built by [`resk::env`]), assembled into the engine's [`Semantic`] layer.

pub use resk::env::{build_embedder, build_vectors};
use resk::resilience::ResilienceConfig;
pub use resk::semantic::{IndexItem, Semantic, SemanticConfig};
use resk_core::{Result, SharedEmbedder, SharedVectorStore};

use resk::env::SemanticArgs;

/// The semantic layer from settings: the configured embedder and vector store, the collection
/// created or checked.
pub async fn build(args: &SemanticArgs, resilience: ResilienceConfig) -> Result<Semantic> {
    resk::env::build_semantic(args, resilience).await
}

/// The semantic layer around given parts, with the settings of `args` (tests, embedding
/// applications).
pub async fn from_parts(
    embedder: SharedEmbedder,
    vectors: SharedVectorStore,
    args: &SemanticArgs,
) -> Result<Semantic> {
    let config = resk::env::semantic_config(args, ResilienceConfig::default());
    Semantic::new(embedder, vectors, config).await
}
