#![doc = include_str!("../README.md")]

pub mod activity;
mod builder;
mod cache;
pub mod calibrate;
pub mod context;
#[cfg(feature = "env")]
pub mod env;
pub mod eval;
pub mod feedback;
mod flight;
#[cfg(feature = "gateway")]
pub mod gateway;
pub mod layers;
mod lookup;
mod negative;
pub mod privacy;
#[cfg(feature = "encryption")]
pub mod reencrypt;
pub mod resilience;
pub mod semantic;
mod stats;
pub mod variants;
pub mod verify;

pub use builder::{CacheBuilder, DEFAULT_MAX_QUERY_CHARS};
pub(crate) use cache::invalid;
pub use cache::{Cache, EntriesPage, EntryFilter, EntryInfo, Erased, Export, WeakCache};
pub use context::{ContextPolicy, Message};
pub use lookup::{Hit, Latency, Lookup, Miss, Outcome, PutOptions, Rejected, Source, Stored};
pub use resk_core::{
    CacheEntry, CacheKey, CacheStore, Embedder, Error, ErrorKind, KeyBuilder, Result, ScanCursor,
    SharedCacheStore, SharedEmbedder, SharedVectorStore, TenantId, TtlPolicy, VectorStore,
};
pub use semantic::{Semantic, SemanticConfig};
pub use stats::backend_error as record_backend_error;

/// The traits and types every backend implements (`resk-core`), for writing your own.
pub use resk_core as core;

/// Cache stores: where entries live.
pub mod store {
    /// The in-process moka cache (feature `memory`, default).
    #[cfg(feature = "memory")]
    pub use resk_cache_memory as memory;
    /// Redis: the shared store, bus and counters of many instances (feature `redis`).
    #[cfg(feature = "redis")]
    pub use resk_cache_redis as redis;
    /// SQLite: a durable file (feature `sqlite`).
    #[cfg(feature = "sqlite")]
    pub use resk_cache_sqlite as sqlite;
    /// Layer 1 over layer 2 with invalidation over a bus.
    pub use resk_cache_tiered as tiered;
}

/// Embedders: text to vectors.
pub mod embed {
    /// Batching, retries, timeouts and the embedding cache around any embedder.
    pub use resk_embed::*;
    /// Hugging Face Inference API and text-embeddings-inference (feature `hf`).
    #[cfg(feature = "hf")]
    pub use resk_embed_hf as hf;
    /// The dependency-free lexical embedder (feature `lexical`, default).
    #[cfg(feature = "lexical")]
    pub use resk_embed_lexical as lexical;
    /// In-process sentence-transformers models with candle (feature `local`).
    #[cfg(feature = "local")]
    pub use resk_embed_local as local;
    /// OpenAI and OpenAI-compatible embeddings (feature `openai`).
    #[cfg(feature = "openai")]
    pub use resk_embed_openai as openai;
}

/// Vector stores: where the vectors of cached queries live.
pub mod vector {
    /// Chroma (feature `chroma`).
    #[cfg(feature = "chroma")]
    pub use resk_vector_chroma as chroma;
    /// The embedded HNSW index (feature `embedded`, default).
    #[cfg(feature = "embedded")]
    pub use resk_vector_embedded as embedded;
    /// Milvus (feature `milvus`).
    #[cfg(feature = "milvus")]
    pub use resk_vector_milvus as milvus;
    /// PostgreSQL + pgvector (feature `pgvector`).
    #[cfg(feature = "pgvector")]
    pub use resk_vector_pgvector as pgvector;
    /// Pinecone (feature `pinecone`).
    #[cfg(feature = "pinecone")]
    pub use resk_vector_pinecone as pinecone;
    /// Qdrant (feature `qdrant`).
    #[cfg(feature = "qdrant")]
    pub use resk_vector_qdrant as qdrant;
    /// Weaviate (feature `weaviate`).
    #[cfg(feature = "weaviate")]
    pub use resk_vector_weaviate as weaviate;
}

/// AES-256-GCM at rest (feature `encryption`).
#[cfg(feature = "encryption")]
pub use resk_crypto as crypto;
