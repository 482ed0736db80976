//! Semantic search from configuration: the embedder and the vector store named by
//! `EMBEDDING_PROVIDER` and `VECTORDB_TYPE`, assembled into a [`resk::Semantic`] (the lookups
//! themselves are the engine's).

use std::{sync::Arc, time::Duration};

use resk::resilience::ResilienceConfig;
pub use resk::semantic::{IndexItem, Semantic, SemanticConfig};
use resk_core::{Embedder, Result, SharedEmbedder, SharedVectorStore};
use resk_embed::{EmbeddingCache, EmbeddingCacheConfig, Pipeline, PipelineConfig, RetryPolicy};

use crate::config::{EmbeddingProvider, SemanticArgs, VectorDbType};

/// `inner` behind the shared pipeline, behind the embedding cache when configured.
pub(crate) fn finish<E: Embedder>(
    inner: E,
    pipeline: PipelineConfig,
    cache: Option<EmbeddingCacheConfig>,
) -> SharedEmbedder {
    let p = Pipeline::new(inner, pipeline);
    match cache {
        Some(c) => Arc::new(EmbeddingCache::new(p, c)),
        None => Arc::new(p),
    }
}

/// Build the configured embedder with the shared pipeline (batching, concurrency, retries, timeout,
/// dimension checks) and the embedding cache in front.
pub async fn build_embedder(args: &SemanticArgs) -> Result<SharedEmbedder> {
    let pipeline = PipelineConfig {
        batch_size: args.embedding_batch_size,
        concurrency: args.embedding_concurrency,
        timeout: Duration::from_secs(args.embedding_timeout_secs),
        retry: RetryPolicy {
            max_retries: args.embedding_max_retries,
            ..RetryPolicy::default()
        },
    };
    let cache = (args.embedding_cache_size > 0).then(|| EmbeddingCacheConfig {
        max_entries: args.embedding_cache_size,
        ttl: Duration::from_secs(args.embedding_cache_ttl_secs),
    });
    match args.embedding_provider {
        EmbeddingProvider::Lexical => Ok(finish(
            resk_embed_lexical::LexicalEmbedder::new(),
            pipeline,
            cache,
        )),
        EmbeddingProvider::Local => crate::providers::local(args, pipeline, cache).await,
        EmbeddingProvider::Openai => crate::providers::openai(args, pipeline, cache),
        EmbeddingProvider::Hf => crate::providers::hf(args, pipeline, cache),
    }
}

/// Build the configured vector store.
pub async fn build_vectors(args: &SemanticArgs) -> Result<SharedVectorStore> {
    match args.vectordb_type {
        VectorDbType::Embedded => {
            use resk_vector_embedded::{EmbeddedConfig, EmbeddedVectorStore};
            let config = EmbeddedConfig {
                dir: args.vector_dir.clone(),
                sync: args.vector_sync,
                ..EmbeddedConfig::default()
            };
            let store = tokio::task::spawn_blocking(move || EmbeddedVectorStore::open(config))
                .await
                .map_err(|e| {
                    resk_core::Error::new(
                        resk_core::ErrorKind::Backend,
                        "embedded",
                        "open",
                        e.to_string(),
                    )
                })??;
            Ok(Arc::new(store))
        }
        VectorDbType::Chroma => crate::providers::chroma(args),
        VectorDbType::Pgvector => crate::providers::pgvector(args).await,
        VectorDbType::Qdrant => crate::providers::qdrant(args),
        VectorDbType::Pinecone => crate::providers::pinecone(args),
        VectorDbType::Weaviate => crate::providers::weaviate(args),
        VectorDbType::Milvus => crate::providers::milvus(args).await,
    }
}

/// The engine's settings from `args`.
pub fn config(args: &SemanticArgs, resilience: ResilienceConfig) -> SemanticConfig {
    let mut config = SemanticConfig::default();
    config.threshold = args.threshold();
    config.top_k = args.semantic_top_k;
    config.collection = args.vector_collection.clone();
    config.metric = args.vector_metric.into();
    config.negative_ttl = Duration::from_secs(args.negative_cache_ttl_secs);
    config.resilience = resilience;
    config
}

/// The semantic layer from settings: the configured embedder and vector store, the collection
/// created or checked.
pub async fn build(args: &SemanticArgs, resilience: ResilienceConfig) -> Result<Semantic> {
    let embedder = build_embedder(args).await?;
    let vectors = build_vectors(args).await?;
    Semantic::new(embedder, vectors, config(args, resilience)).await
}

/// The semantic layer around given parts, with the settings of `args` (tests, embedding
/// applications).
pub async fn from_parts(
    embedder: SharedEmbedder,
    vectors: SharedVectorStore,
    args: &SemanticArgs,
) -> Result<Semantic> {
    Semantic::new(embedder, vectors, config(args, ResilienceConfig::default())).await
}
