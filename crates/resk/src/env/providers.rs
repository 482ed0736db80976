//! The optional embedding providers and vector databases, each behind its cargo feature.

use resk_core::{Error, ErrorKind, Result, SharedEmbedder, SharedVectorStore};

use super::SemanticArgs;

/// The start-up error for a provider left out of this build.
#[allow(dead_code)] // unused when every provider is compiled in
fn not_compiled(provider: &str, feature: &str) -> Error {
    Error::new(
        ErrorKind::Config,
        "config",
        "embedder",
        format!(
            "EMBEDDING_PROVIDER={provider} is not compiled in; rebuild with resk's `{feature}` \
             feature (resk-server: --features embed-{feature})"
        ),
    )
}

/// The start-up error for a vector database left out of this build.
#[allow(dead_code)] // unused when every vector database is compiled in
fn vector_not_compiled(kind: &str, feature: &str) -> Error {
    Error::new(
        ErrorKind::Config,
        "config",
        "vectors",
        format!(
            "VECTORDB_TYPE={kind} is not compiled in; rebuild with resk's `{feature}` feature \
             (resk-server: --features vector-{feature})"
        ),
    )
}

/// `VECTORDB_TYPE=chroma`.
pub(super) fn chroma(args: &SemanticArgs) -> Result<SharedVectorStore> {
    #[cfg(feature = "chroma")]
    {
        use resk_vector_chroma::{ChromaConfig, ChromaVectorStore};
        let mut config = ChromaConfig::new(args.chroma_url.clone());
        config.tenant = args.chroma_tenant.clone();
        config.database = args.chroma_database.clone();
        config.api_key = args.chroma_api_key.clone();
        config.timeout = std::time::Duration::from_secs(args.vector_timeout_secs.max(1));
        config.retry.max_retries = args.vector_max_retries;
        Ok(std::sync::Arc::new(ChromaVectorStore::new(config)?))
    }
    #[cfg(not(feature = "chroma"))]
    {
        let _ = args;
        Err(vector_not_compiled("chroma", "chroma"))
    }
}

/// `VECTORDB_TYPE=qdrant`.
pub(super) fn qdrant(args: &SemanticArgs) -> Result<SharedVectorStore> {
    #[cfg(feature = "qdrant")]
    {
        use resk_vector_qdrant::{QdrantConfig, QdrantVectorStore};
        let mut config = QdrantConfig::new(args.qdrant_url.clone());
        config.api_key = args.qdrant_api_key.clone();
        config.timeout = std::time::Duration::from_secs(args.vector_timeout_secs.max(1));
        config.retry.max_retries = args.vector_max_retries;
        Ok(std::sync::Arc::new(QdrantVectorStore::new(config)?))
    }
    #[cfg(not(feature = "qdrant"))]
    {
        let _ = args;
        Err(vector_not_compiled("qdrant", "qdrant"))
    }
}

/// `VECTORDB_TYPE=weaviate`.
pub(super) fn weaviate(args: &SemanticArgs) -> Result<SharedVectorStore> {
    #[cfg(feature = "weaviate")]
    {
        use resk_vector_weaviate::{WeaviateConfig, WeaviateVectorStore};
        let mut config = WeaviateConfig::new(args.weaviate_url.clone());
        config.api_key = args.weaviate_api_key.clone();
        config.timeout = std::time::Duration::from_secs(args.vector_timeout_secs.max(1));
        config.retry.max_retries = args.vector_max_retries;
        Ok(std::sync::Arc::new(WeaviateVectorStore::new(config)?))
    }
    #[cfg(not(feature = "weaviate"))]
    {
        let _ = args;
        Err(vector_not_compiled("weaviate", "weaviate"))
    }
}

/// `VECTORDB_TYPE=pinecone`.
pub(super) fn pinecone(args: &SemanticArgs) -> Result<SharedVectorStore> {
    #[cfg(feature = "pinecone")]
    {
        use resk_vector_pinecone::{PineconeConfig, PineconeVectorStore};
        let key = args.pinecone_api_key.clone().ok_or_else(|| {
            Error::new(
                ErrorKind::Config,
                "config",
                "vectors",
                "VECTORDB_TYPE=pinecone needs PINECONE_API_KEY",
            )
        })?;
        let mut config = PineconeConfig::new(key);
        config.controller_url = args.pinecone_controller_url.clone();
        config.cloud = args.pinecone_cloud.clone();
        config.region = args.pinecone_region.clone();
        config.plain_http = args.pinecone_plain_http;
        config.timeout = std::time::Duration::from_secs(args.vector_timeout_secs.max(1));
        config.retry.max_retries = args.vector_max_retries;
        Ok(std::sync::Arc::new(PineconeVectorStore::new(config)?))
    }
    #[cfg(not(feature = "pinecone"))]
    {
        let _ = args;
        Err(vector_not_compiled("pinecone", "pinecone"))
    }
}

/// `VECTORDB_TYPE=milvus`.
pub(super) async fn milvus(args: &SemanticArgs) -> Result<SharedVectorStore> {
    #[cfg(feature = "milvus")]
    {
        use resk_vector_milvus::{MilvusConfig, MilvusVectorStore};
        let mut config = MilvusConfig::new(args.milvus_url.clone());
        config.token = args.milvus_token.clone();
        config.database = args.milvus_database.clone();
        config.timeout = std::time::Duration::from_secs(args.vector_timeout_secs.max(1));
        Ok(std::sync::Arc::new(
            MilvusVectorStore::connect(config).await?,
        ))
    }
    #[cfg(not(feature = "milvus"))]
    {
        let _ = args;
        Err(vector_not_compiled("milvus", "milvus"))
    }
}

/// `VECTORDB_TYPE=pgvector`.
pub(super) async fn pgvector(args: &SemanticArgs) -> Result<SharedVectorStore> {
    #[cfg(feature = "pgvector")]
    {
        use resk_vector_pgvector::{PgVectorConfig, PgVectorStore};
        let url = args.pgvector_url.clone().ok_or_else(|| {
            Error::new(
                ErrorKind::Config,
                "config",
                "vectors",
                "VECTORDB_TYPE=pgvector needs PGVECTOR_URL (postgres://user:password@host:port/db)",
            )
        })?;
        let mut config = PgVectorConfig::new(url);
        config.timeout = std::time::Duration::from_secs(args.vector_timeout_secs.max(1));
        Ok(std::sync::Arc::new(PgVectorStore::connect(config).await?))
    }
    #[cfg(not(feature = "pgvector"))]
    {
        let _ = args;
        Err(vector_not_compiled("pgvector", "pgvector"))
    }
}

#[allow(dead_code)]
fn config(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Config, "config", "embedder", message)
}

/// Bytes of word vectors the local embedder keeps for token alignment (some 4 000 questions).
#[cfg(feature = "local")]
const WORD_CACHE_BYTES: u64 = 64 << 20;

/// The loaded local model (what token alignment needs besides the embedder).
#[cfg(feature = "local")]
pub(super) type LocalModel = resk_embed_local::LocalEmbedder;
/// Without the `local` feature there is no local model.
#[cfg(not(feature = "local"))]
#[derive(Debug)]
pub(super) enum LocalModel {}

/// Token alignment on `model`.
pub(super) fn alignment(model: Option<&LocalModel>) -> Result<resk_core::SharedVerifier> {
    #[cfg(feature = "local")]
    if let Some(model) = model {
        return Ok(std::sync::Arc::new(crate::verify::Alignment::new(
            model.clone(),
        )));
    }
    let _ = model;
    Err(config(
        "SEMANTIC_VERIFIERS=alignment needs the local model: set EMBEDDING_PROVIDER=local and EMBEDDING_MODEL_DIR",
    ))
}

/// The cross-encoder in `CROSS_ENCODER_DIR` (loaded on the blocking pool).
pub(super) async fn cross_encoder(args: &SemanticArgs) -> Result<resk_core::SharedVerifier> {
    #[cfg(feature = "local")]
    {
        let dir = args
            .cross_encoder_dir
            .clone()
            .ok_or_else(|| config("SEMANTIC_VERIFIERS=cross-encoder needs CROSS_ENCODER_DIR"))?;
        let model = tokio::task::spawn_blocking(move || {
            resk_embed_local::CrossEncoder::load(&dir, "CROSS_ENCODER_DIR")
        })
        .await
        .map_err(|e| config(e.to_string()))??;
        Ok(std::sync::Arc::new(
            crate::verify::CrossEncoder::new(model)
                .bounds(args.cross_encoder_accept, args.cross_encoder_reject),
        ))
    }
    #[cfg(not(feature = "local"))]
    {
        let _ = args;
        Err(config(
            "SEMANTIC_VERIFIERS=cross-encoder is not compiled in; rebuild with resk's `local` \
             feature (resk-server: --features embed-local)",
        ))
    }
}

/// `EMBEDDING_PROVIDER=local`: the embedder and its model.
pub(super) async fn local(
    args: &SemanticArgs,
    wrapping: super::Wrapping,
) -> Result<(SharedEmbedder, LocalModel)> {
    #[cfg(feature = "local")]
    {
        use resk_embed_local::LocalEmbedder;
        let dir = args.embedding_model_dir.clone().ok_or_else(|| {
            config(
                "EMBEDDING_PROVIDER=local needs EMBEDDING_MODEL_DIR: a directory with the \
                 sentence-transformers files model.safetensors, tokenizer.json and config.json",
            )
        })?;
        let label = args.embedding_model.clone();
        let embedder =
            tokio::task::spawn_blocking(move || LocalEmbedder::load(&dir, label.as_deref()))
                .await
                .map_err(|e| config(e.to_string()))??;
        // Token alignment reads the word vectors the embedding pass computes anyway.
        let embedder = if args.verifiers().contains(&super::VerifierKind::Alignment) {
            embedder.with_word_cache(resk_embed_local::word_cache(WORD_CACHE_BYTES))
        } else {
            embedder
        };
        Ok((super::finish(embedder.clone(), wrapping, 1), embedder))
    }
    #[cfg(not(feature = "local"))]
    {
        let _ = (args, wrapping);
        Err(not_compiled("local", "local"))
    }
}

/// `EMBEDDING_PROVIDER=openai`.
pub(super) fn openai(args: &SemanticArgs, wrapping: super::Wrapping) -> Result<SharedEmbedder> {
    #[cfg(feature = "openai")]
    {
        use resk_embed_openai::{Auth, OpenAiConfig, OpenAiEmbedder};
        let key = args
            .openai_api_key
            .clone()
            .filter(|k| !k.is_empty())
            .ok_or_else(|| config("EMBEDDING_PROVIDER=openai needs OPENAI_API_KEY"))?;
        let model = args
            .embedding_model
            .clone()
            .unwrap_or_else(|| "text-embedding-3-small".to_owned());
        let auth = match args.openai_api_style {
            super::OpenAiStyle::Openai => Auth::Bearer(key),
            super::OpenAiStyle::Azure => Auth::Azure {
                api_key: key,
                api_version: args.openai_api_version.clone(),
            },
        };
        let embedder = OpenAiEmbedder::new(OpenAiConfig {
            base_url: args.openai_base_url.clone(),
            auth,
            model,
            dimensions: args.embedding_dimensions,
            timeout: std::time::Duration::from_secs(args.embedding_timeout_secs),
        })?;
        let in_flight = args.embedding_concurrency;
        Ok(super::finish(embedder, wrapping, in_flight))
    }
    #[cfg(not(feature = "openai"))]
    {
        let _ = (args, wrapping);
        Err(not_compiled("openai", "openai"))
    }
}

/// `EMBEDDING_PROVIDER=hf`.
pub(super) fn hf(args: &SemanticArgs, wrapping: super::Wrapping) -> Result<SharedEmbedder> {
    #[cfg(feature = "hf")]
    {
        use resk_embed_hf::{HfConfig, HfEmbedder, HfStyle};
        let model = args
            .embedding_model
            .clone()
            .ok_or_else(|| config("EMBEDDING_PROVIDER=hf needs EMBEDDING_MODEL"))?;
        let dims = args.embedding_dimensions.ok_or_else(|| {
            config(
                "EMBEDDING_PROVIDER=hf needs EMBEDDING_DIMENSIONS (e.g. 384 for all-MiniLM-L6-v2)",
            )
        })?;
        let style = match args.hf_api_style {
            super::HfStyle::Inference => HfStyle::Inference,
            super::HfStyle::Tei => HfStyle::Tei,
        };
        let embedder = HfEmbedder::new(HfConfig {
            base_url: args.hf_base_url.clone(),
            token: args.hf_api_token.clone().filter(|t| !t.is_empty()),
            model,
            dims,
            style,
            timeout: std::time::Duration::from_secs(args.embedding_timeout_secs),
        })?;
        let in_flight = args.embedding_concurrency;
        Ok(super::finish(embedder, wrapping, in_flight))
    }
    #[cfg(not(feature = "hf"))]
    {
        let _ = (args, wrapping);
        Err(not_compiled("hf", "hf"))
    }
}

/// `EMBEDDING_PROVIDER=lexical`.
pub(super) fn lexical(wrapping: super::Wrapping) -> Result<SharedEmbedder> {
    #[cfg(feature = "lexical")]
    {
        Ok(super::finish(
            resk_embed_lexical::LexicalEmbedder::new(),
            wrapping,
            0,
        ))
    }
    #[cfg(not(feature = "lexical"))]
    {
        let _ = wrapping;
        Err(not_compiled("lexical", "lexical"))
    }
}

/// `VECTORDB_TYPE=embedded`.
pub(super) async fn embedded(args: &SemanticArgs) -> Result<SharedVectorStore> {
    #[cfg(feature = "embedded")]
    {
        use resk_vector_embedded::{EmbeddedConfig, EmbeddedVectorStore};
        let config = EmbeddedConfig {
            dir: args.vector_dir.clone(),
            sync: args.vector_sync,
            ..EmbeddedConfig::default()
        };
        let store = tokio::task::spawn_blocking(move || EmbeddedVectorStore::open(config))
            .await
            .map_err(|e| Error::new(ErrorKind::Backend, "embedded", "open", e.to_string()))??;
        Ok(std::sync::Arc::new(store))
    }
    #[cfg(not(feature = "embedded"))]
    {
        let _ = args;
        Err(vector_not_compiled("embedded", "embedded"))
    }
}
