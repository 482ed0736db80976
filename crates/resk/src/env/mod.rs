//! Configuration from flags and environment variables (feature `env`), shared by resk-server,
//! resk-ingest and any command-line tool of yours that should read the same settings: the same
//! variable names, defaults, validation and error messages everywhere, turned into a store stack
//! and a [`Semantic`] layer by [`build_store`] and [`build_semantic`].
//!
//! Flatten the argument groups into your own clap parser:
//!
//! ```no_run
//! use clap::Parser;
//!
//! #[derive(Parser)]
//! struct Args {
//!     #[command(flatten)]
//!     store: resk::env::StoreArgs,
//!     #[command(flatten)]
//!     semantic: resk::env::SemanticArgs,
//!     #[command(flatten)]
//!     resilience: resk::env::ResilienceArgs,
//! }
//!
//! # async fn run() -> resk::Result<()> {
//! let args = Args::parse();
//! let store = args.store.resolve(None)?;
//! let built = resk::env::build_store(&store, args.resilience.config()).await?;
//! let mut cache = resk::Cache::builder()
//!     .assembled_store(built.cache)
//!     .keys(store.keys.clone())
//!     .ttl(store.ttl);
//! if args.semantic.enabled {
//!     cache = cache.semantic(
//!         resk::env::build_semantic(&args.semantic, args.resilience.config()).await?,
//!     );
//! }
//! let cache = cache.build()?;
//! # let _ = cache;
//! # Ok(())
//! # }
//! ```
//!
//! clap is the parser because resk-server already uses it for its flags (derive + `env`), so the
//! settings read the same in every binary; the feature keeps it out of library builds.

use std::{sync::Arc, time::Duration};

use clap::{Args, ValueEnum};
use resk_core::{
    Error, ErrorKind, KeyBuilder, LocalBus, Metric, Result, SharedBus, SharedCacheStore,
    SharedCipher, SharedEmbedder, SharedVectorStore, TtlPolicy,
};
use resk_embed::{
    EmbeddingCache, EmbeddingCacheConfig, MicroBatchConfig, MicroBatcher, Pipeline, PipelineConfig,
    RetryPolicy,
};
use zeroize::Zeroizing;

use crate::{
    layers::Layers,
    resilience::ResilienceConfig,
    semantic::{Semantic, SemanticConfig},
};

mod gateway;
mod providers;

pub use gateway::{DisconnectArg, GatewayArgs};

fn config_err(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Config, "config", "load", message)
}

/// Which cache backend stores entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[non_exhaustive]
pub enum CacheBackend {
    /// In-process memory (moka); nothing survives a restart.
    Memory,
    /// One SQLite file (`SQLITE_PATH`); survives restarts and crashes.
    Sqlite,
    /// Redis (`REDIS_URL`), shared by every instance pointing at it.
    Redis,
}

/// How hard SQLite works to make each write durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SqliteSync {
    /// fsync every commit: acknowledged writes survive power loss.
    Full,
    /// fsync at checkpoints: acknowledged writes survive a process crash, maybe not power loss.
    Normal,
}

/// Which embedder turns queries into vectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[non_exhaustive]
pub enum EmbeddingProvider {
    /// Built in, no download: hashed word and character n-grams. Lexical (typos, case, word order,
    /// function words), not semantic.
    Lexical,
    /// A sentence-transformers model run in-process with candle (`EMBEDDING_MODEL_DIR`).
    Local,
    /// The OpenAI embeddings API or any OpenAI-compatible server (`OPENAI_BASE_URL`).
    Openai,
    /// Hugging Face Inference API or a text-embeddings-inference server (`HF_BASE_URL`).
    Hf,
}

impl EmbeddingProvider {
    /// The similarity threshold used when `SEMANTIC_THRESHOLD` is not set: a conservative value for
    /// the provider's typical model (calibrate with `resk-server calibrate` for yours).
    pub fn default_threshold(self) -> f32 {
        match self {
            EmbeddingProvider::Lexical => 0.75,
            // all-MiniLM-L6-v2 scores negations and antonyms up to ~0.92 (docs/pairs.tsv): a high
            // default keeps wrong answers out at the cost of some paraphrases.
            EmbeddingProvider::Local => 0.90,
            EmbeddingProvider::Openai | EmbeddingProvider::Hf => 0.90,
        }
    }
}

/// A verifier of semantic candidates (`SEMANTIC_VERIFIERS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[non_exhaustive]
pub enum VerifierKind {
    /// The rule guards ([`crate::verify::Guards`]).
    Guards,
    /// Token alignment with the local model ([`crate::verify::Alignment`]).
    Alignment,
    /// A cross-encoder checkpoint in `CROSS_ENCODER_DIR` ([`crate::verify::CrossEncoder`]).
    CrossEncoder,
    /// An LLM judge at `JUDGE_BASE_URL` ([`crate::verify::Judge`]).
    Judge,
    /// No verifier: similarity alone decides.
    None,
}

/// Where vectors of cached queries are searched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[non_exhaustive]
pub enum VectorDbType {
    /// The in-process HNSW index (resk-vector-embedded), persisted to `VECTOR_DIR` when set.
    Embedded,
    /// A Chroma server (`CHROMA_URL`), feature `vector-chroma`.
    Chroma,
    /// PostgreSQL with pgvector (`PGVECTOR_URL`), feature `vector-pgvector`.
    Pgvector,
    /// A Qdrant server's REST API (`QDRANT_URL`), feature `vector-qdrant`.
    Qdrant,
    /// Pinecone (`PINECONE_API_KEY`), feature `vector-pinecone`.
    Pinecone,
    /// A Weaviate server (`WEAVIATE_URL`), feature `vector-weaviate`.
    Weaviate,
    /// Milvus over gRPC (`MILVUS_URL`), feature `vector-milvus`.
    Milvus,
}

/// How vectors are compared (the threshold is on this metric's similarity scale).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum VectorMetric {
    /// Cosine similarity in `[-1, 1]` (the default; sentence-embedding models are tuned for it).
    Cosine,
    /// Euclidean distance `d`, as similarity `1 / (1 + d)`.
    L2,
    /// Dot product (equal to cosine for normalised vectors).
    Dot,
}

impl From<VectorMetric> for Metric {
    fn from(m: VectorMetric) -> Self {
        match m {
            VectorMetric::Cosine => resk_core::Metric::Cosine,
            VectorMetric::L2 => resk_core::Metric::L2,
            VectorMetric::Dot => resk_core::Metric::Dot,
        }
    }
}

/// OpenAI authentication style.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OpenAiStyle {
    /// `Authorization: Bearer` and `{base}/embeddings` (OpenAI, vLLM, Ollama, TEI's OpenAI route).
    Openai,
    /// Azure OpenAI: `api-key` header, `{base}/openai/deployments/{EMBEDDING_MODEL}/embeddings?api-version=…`.
    Azure,
}

/// Hugging Face request style.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum HfStyle {
    /// Inference API: `POST {base}/models/{model}/pipeline/feature-extraction`.
    Inference,
    /// text-embeddings-inference: `POST {base}/embed`.
    Tei,
}

/// `EMBEDDING_BATCH_BUSY_WINDOW_MS`'s default: well under one forward pass of the local model
/// (5-10 ms per query on two cores) and over a client's round trip on a LAN, so callers that come
/// straight back share the next pass. Measured in docs/operations.md (`cargo xtask bench batch`).
pub const DEFAULT_BUSY_WINDOW_MS: u64 = 2;

/// Semantic-caching settings, shared by resk-server (`serve`, `calibrate`) and resk-ingest.
#[derive(Clone, Debug, Args)]
pub struct SemanticArgs {
    /// Answer paraphrases of cached queries (embed → vector search → threshold).
    #[arg(long = "semantic", env = "SEMANTIC_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub enabled: bool,
    /// Embedder.
    #[arg(
        long,
        env = "EMBEDDING_PROVIDER",
        value_enum,
        default_value = "lexical"
    )]
    pub embedding_provider: EmbeddingProvider,
    /// Model name (OpenAI/HF model or Azure deployment; for `local`, a label for the model directory).
    #[arg(long, env = "EMBEDDING_MODEL")]
    pub embedding_model: Option<String>,
    /// Directory with model.safetensors, tokenizer.json and config.json (`local`).
    #[arg(long, env = "EMBEDDING_MODEL_DIR")]
    pub embedding_model_dir: Option<std::path::PathBuf>,
    /// Output dimensions (OpenAI `dimensions`; checked against every vector).
    #[arg(long, env = "EMBEDDING_DIMENSIONS")]
    pub embedding_dimensions: Option<usize>,
    /// Texts per provider call (capped by the provider's limit).
    #[arg(long, env = "EMBEDDING_BATCH_SIZE", default_value_t = 64)]
    pub embedding_batch_size: usize,
    /// Provider calls in flight per batch job.
    #[arg(long, env = "EMBEDDING_CONCURRENCY", default_value_t = 4)]
    pub embedding_concurrency: usize,
    /// Per-call timeout, seconds.
    #[arg(long, env = "EMBEDDING_TIMEOUT_SECS", default_value_t = 30)]
    pub embedding_timeout_secs: u64,
    /// Retries of 429/5xx/timeouts (exponential backoff with jitter, honouring Retry-After).
    #[arg(long, env = "EMBEDDING_MAX_RETRIES", default_value_t = 3)]
    pub embedding_max_retries: u32,
    /// Micro-batching of concurrent lookups' embeddings: provider calls in flight at once, callers
    /// queueing behind them share the next call (0: off). Default: 1 for `local` (one forward pass
    /// at a time uses the cores best), `EMBEDDING_CONCURRENCY` for `openai` and `hf`, off for
    /// `lexical` (microseconds per text: nothing to gain).
    #[arg(long, env = "EMBEDDING_BATCH_IN_FLIGHT")]
    pub embedding_batch_in_flight: Option<usize>,
    /// Micro-batching: how long a batch waits for more callers once a provider slot is free, in
    /// milliseconds (0: send at once; batches still form while the provider is busy).
    #[arg(long, env = "EMBEDDING_BATCH_WINDOW_MS", default_value_t = 0)]
    pub embedding_batch_window_ms: u64,
    /// Micro-batching under load: how long a batch may wait, in milliseconds, for the callers it
    /// expects (as many as the previous batch answered, plus those that queued behind it), so
    /// callers that come straight back share calls instead of taking turns (0: never wait; a lone
    /// caller is never kept waiting).
    #[arg(long, env = "EMBEDDING_BATCH_BUSY_WINDOW_MS", default_value_t = DEFAULT_BUSY_WINDOW_MS)]
    pub embedding_batch_busy_window_ms: u64,
    /// Vectors kept by the embedding cache (0 disables it).
    #[arg(long, env = "EMBEDDING_CACHE_SIZE", default_value_t = 10_000)]
    pub embedding_cache_size: u64,
    /// Embedding cache lifetime, seconds.
    #[arg(long, env = "EMBEDDING_CACHE_TTL_SECS", default_value_t = 3600)]
    pub embedding_cache_ttl_secs: u64,
    /// OpenAI (or compatible) API key.
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    pub openai_api_key: Option<String>,
    /// OpenAI-compatible base URL.
    #[arg(
        long,
        env = "OPENAI_BASE_URL",
        default_value = "https://api.openai.com/v1"
    )]
    pub openai_base_url: String,
    /// `openai` or `azure` request style.
    #[arg(long, env = "OPENAI_API_STYLE", value_enum, default_value = "openai")]
    pub openai_api_style: OpenAiStyle,
    /// Azure `api-version`.
    #[arg(long, env = "OPENAI_API_VERSION", default_value = "2024-02-01")]
    pub openai_api_version: String,
    /// Hugging Face token.
    #[arg(long, env = "HF_API_TOKEN", hide_env_values = true)]
    pub hf_api_token: Option<String>,
    /// Hugging Face Inference base URL, or a TEI server's URL.
    #[arg(
        long,
        env = "HF_BASE_URL",
        default_value = "https://router.huggingface.co/hf-inference"
    )]
    pub hf_base_url: String,
    /// `inference` (HF Inference API) or `tei` (text-embeddings-inference `/embed`).
    #[arg(long, env = "HF_API_STYLE", value_enum, default_value = "inference")]
    pub hf_api_style: HfStyle,
    /// Similarity a match must reach (default per provider; see `EmbeddingProvider::default_threshold`).
    #[arg(long, env = "SEMANTIC_THRESHOLD")]
    pub semantic_threshold: Option<f32>,
    /// At or above this similarity a candidate is served once the guards pass it; between
    /// `SEMANTIC_THRESHOLD` and this, a band verifier must accept it. Default: 0.9 with token
    /// alignment, else the threshold (no band).
    #[arg(long, env = "SEMANTIC_ACCEPT")]
    pub semantic_accept: Option<f32>,
    /// The verifiers of semantic candidates, in order (comma-separated): `guards` (rule checks),
    /// `alignment` (token alignment with the local model; `EMBEDDING_PROVIDER=local`), or `none`
    /// (similarity alone). Default: `guards,alignment` with the local model, `guards` otherwise.
    #[arg(long, env = "SEMANTIC_VERIFIERS", value_enum, value_delimiter = ',')]
    pub semantic_verifiers: Option<Vec<VerifierKind>>,
    /// The error rate feedback may let an entry's own bounds reach (0 to under 1): right reports
    /// lower an entry's accept bound only while its reported error rate stays within this.
    #[arg(long, env = "SEMANTIC_TARGET_ERROR", default_value_t = 0.05)]
    pub semantic_target_error: f64,
    /// Directory of a BERT-family cross-encoder (sequence-classification) checkpoint:
    /// `config.json`, `model.safetensors`, `tokenizer.json` (`SEMANTIC_VERIFIERS=cross-encoder`).
    #[arg(long, env = "CROSS_ENCODER_DIR")]
    pub cross_encoder_dir: Option<std::path::PathBuf>,
    /// Cross-encoder score (0-1) at or above which a candidate is accepted.
    #[arg(long, env = "CROSS_ENCODER_ACCEPT", default_value_t = 0.5)]
    pub cross_encoder_accept: f32,
    /// Cross-encoder score below which a candidate is rejected (between the two: no opinion).
    #[arg(long, env = "CROSS_ENCODER_REJECT", default_value_t = 0.5)]
    pub cross_encoder_reject: f32,
    /// OpenAI-compatible API base of the LLM judge (`SEMANTIC_VERIFIERS=judge`), e.g.
    /// `https://api.openai.com/v1` or a local vLLM/Ollama `/v1`.
    #[arg(long, env = "JUDGE_BASE_URL")]
    pub judge_base_url: Option<String>,
    /// The judge's API key (sent as a bearer token; never logged).
    #[arg(long, env = "JUDGE_API_KEY", hide_env_values = true)]
    pub judge_api_key: Option<String>,
    /// The judge's model.
    #[arg(long, env = "JUDGE_MODEL", default_value = "gpt-4o-mini")]
    pub judge_model: String,
    /// Time limit of one judge call, in milliseconds (keep it under SEMANTIC_VERIFY_TIMEOUT_MS).
    #[arg(long, env = "JUDGE_TIMEOUT_MS", default_value_t = 1500)]
    pub judge_timeout_ms: u64,
    /// Dollars per 1 000 prompt tokens / completion tokens of the judge (cost metrics).
    #[arg(long, env = "JUDGE_PRICE_PER_1K_PROMPT", default_value_t = 0.0)]
    pub judge_price_per_1k_prompt: f64,
    /// Dollars per 1 000 completion tokens of the judge.
    #[arg(long, env = "JUDGE_PRICE_PER_1K_COMPLETION", default_value_t = 0.0)]
    pub judge_price_per_1k_completion: f64,
    /// On a judge error, abstain (the other verifiers decide) instead of rejecting; start-up then
    /// checks the judge answers.
    #[arg(long, env = "JUDGE_FAIL_OPEN", default_value_t = false, action = clap::ArgAction::Set)]
    pub judge_fail_open: bool,
    /// Longest a verifier may take on one candidate, in milliseconds (then: rejected, degraded).
    #[arg(long, env = "SEMANTIC_VERIFY_TIMEOUT_MS", default_value_t = 2000)]
    pub semantic_verify_timeout_ms: u64,
    /// Candidates examined per lookup.
    #[arg(long, env = "SEMANTIC_TOP_K", default_value_t = 5)]
    pub semantic_top_k: usize,
    /// Remember for this many seconds that a query's semantic lookup found nothing, or that its
    /// embedding / vector call failed, and answer the same query from that memory meanwhile (a miss,
    /// or a degraded miss); 0: off. A semantic write to the tenant forgets its "no match" answers.
    #[arg(long, env = "NEGATIVE_CACHE_TTL_SECS", default_value_t = 5)]
    pub negative_cache_ttl_secs: u64,
    /// Vector store.
    #[arg(long, env = "VECTORDB_TYPE", value_enum, default_value = "embedded")]
    pub vectordb_type: VectorDbType,
    /// Directory of the embedded index; default: `<SQLITE_PATH>.vectors` with the SQLite backend,
    /// memory only otherwise.
    #[arg(long, env = "VECTOR_DIR")]
    pub vector_dir: Option<std::path::PathBuf>,
    /// Collection name; default `resk-<model>`.
    #[arg(long, env = "VECTOR_COLLECTION")]
    pub vector_collection: Option<String>,
    /// fsync every vector write (embedded index).
    #[arg(long, env = "VECTOR_SYNC", default_value_t = false, action = clap::ArgAction::Set)]
    pub vector_sync: bool,
    /// Similarity measure of the collection (fixed when the collection is created).
    #[arg(long, env = "VECTOR_METRIC", value_enum, default_value = "cosine")]
    pub vector_metric: VectorMetric,
    /// Per-request timeout of an external vector database, in seconds.
    #[arg(long, env = "VECTOR_TIMEOUT_SECS", default_value_t = 10)]
    pub vector_timeout_secs: u64,
    /// Retries of a transient external vector-database failure (timeouts, 429, 5xx).
    #[arg(long, env = "VECTOR_MAX_RETRIES", default_value_t = 2)]
    pub vector_max_retries: u32,
    /// Chroma server URL.
    #[arg(long, env = "CHROMA_URL", default_value = "http://127.0.0.1:8000")]
    pub chroma_url: String,
    /// Chroma tenant (must exist).
    #[arg(long, env = "CHROMA_TENANT", default_value = "default_tenant")]
    pub chroma_tenant: String,
    /// Chroma database (must exist).
    #[arg(long, env = "CHROMA_DATABASE", default_value = "default_database")]
    pub chroma_database: String,
    /// Chroma token, sent as `x-chroma-token`.
    #[arg(long, env = "CHROMA_API_KEY", hide_env_values = true)]
    pub chroma_api_key: Option<String>,
    /// PostgreSQL URL for pgvector (`postgres://user:password@host:port/database`).
    #[arg(long, env = "PGVECTOR_URL", hide_env_values = true)]
    pub pgvector_url: Option<String>,
    /// Qdrant REST URL.
    #[arg(long, env = "QDRANT_URL", default_value = "http://127.0.0.1:6333")]
    pub qdrant_url: String,
    /// Qdrant API key, sent as `api-key`.
    #[arg(long, env = "QDRANT_API_KEY", hide_env_values = true)]
    pub qdrant_api_key: Option<String>,
    /// Weaviate base URL (no `/v1`).
    #[arg(long, env = "WEAVIATE_URL", default_value = "http://127.0.0.1:8080")]
    pub weaviate_url: String,
    /// Weaviate API key, sent as `Authorization: Bearer`.
    #[arg(long, env = "WEAVIATE_API_KEY", hide_env_values = true)]
    pub weaviate_api_key: Option<String>,
    /// Pinecone API key.
    #[arg(long, env = "PINECONE_API_KEY", hide_env_values = true)]
    pub pinecone_api_key: Option<String>,
    /// Pinecone control plane.
    #[arg(
        long,
        env = "PINECONE_CONTROLLER_URL",
        default_value = "https://api.pinecone.io"
    )]
    pub pinecone_controller_url: String,
    /// Cloud of the serverless indexes resk creates.
    #[arg(long, env = "PINECONE_CLOUD", default_value = "aws")]
    pub pinecone_cloud: String,
    /// Region of the serverless indexes resk creates.
    #[arg(long, env = "PINECONE_REGION", default_value = "us-east-1")]
    pub pinecone_region: String,
    /// Reach index hosts over plain HTTP (Pinecone Local).
    #[arg(long, env = "PINECONE_PLAIN_HTTP", default_value_t = false, action = clap::ArgAction::Set)]
    pub pinecone_plain_http: bool,
    /// Milvus gRPC endpoint.
    #[arg(long, env = "MILVUS_URL", default_value = "http://127.0.0.1:19530")]
    pub milvus_url: String,
    /// Milvus token (`user:password`, or a Zilliz Cloud API key).
    #[arg(long, env = "MILVUS_TOKEN", hide_env_values = true)]
    pub milvus_token: Option<String>,
    /// Milvus database (the server's default when unset).
    #[arg(long, env = "MILVUS_DATABASE")]
    pub milvus_database: Option<String>,
}

impl SemanticArgs {
    /// Check ranges; the error names the variable.
    pub fn validate(&self) -> Result<()> {
        if let Some(t) = self.semantic_threshold
            && !(t.is_finite() && (-1.0..=1.0).contains(&t))
        {
            return Err(config_err("SEMANTIC_THRESHOLD must be between -1 and 1"));
        }
        if let Some(a) = self.semantic_accept
            && !(a.is_finite() && (-1.0..=1.0).contains(&a))
        {
            return Err(config_err("SEMANTIC_ACCEPT must be between -1 and 1"));
        }
        if self.semantic_accept.is_some_and(|a| a < self.threshold()) {
            return Err(config_err(
                "SEMANTIC_ACCEPT must not be below SEMANTIC_THRESHOLD (the band runs from the threshold up to accept)",
            ));
        }
        if !(0.0..1.0).contains(&self.semantic_target_error) {
            return Err(config_err(
                "SEMANTIC_TARGET_ERROR must be at least 0 and below 1 (e.g. 0.05)",
            ));
        }
        if self.semantic_verify_timeout_ms == 0 {
            return Err(config_err("SEMANTIC_VERIFY_TIMEOUT_MS must be at least 1"));
        }
        let verifiers = self.verifiers();
        if verifiers.contains(&VerifierKind::None) && verifiers.len() > 1 {
            return Err(config_err(
                "SEMANTIC_VERIFIERS: `none` cannot be combined with other verifiers",
            ));
        }
        if verifiers.contains(&VerifierKind::Alignment)
            && self.embedding_provider != EmbeddingProvider::Local
        {
            return Err(config_err(
                "SEMANTIC_VERIFIERS=alignment needs the local model: set EMBEDDING_PROVIDER=local and EMBEDDING_MODEL_DIR",
            ));
        }
        if verifiers.contains(&VerifierKind::CrossEncoder) && self.cross_encoder_dir.is_none() {
            return Err(config_err(
                "SEMANTIC_VERIFIERS=cross-encoder needs CROSS_ENCODER_DIR: a directory with a BERT \
                 sequence-classification checkpoint (config.json, model.safetensors, tokenizer.json)",
            ));
        }
        if verifiers.contains(&VerifierKind::Judge) && self.judge_base_url.is_none() {
            return Err(config_err(
                "SEMANTIC_VERIFIERS=judge needs JUDGE_BASE_URL: an OpenAI-compatible API base such as https://api.openai.com/v1",
            ));
        }
        if self.judge_timeout_ms == 0 {
            return Err(config_err("JUDGE_TIMEOUT_MS must be at least 1"));
        }
        let unit = |x: f32| x.is_finite() && (0.0..=1.0).contains(&x);
        if !unit(self.cross_encoder_accept)
            || !unit(self.cross_encoder_reject)
            || self.cross_encoder_reject > self.cross_encoder_accept
        {
            return Err(config_err(
                "CROSS_ENCODER_ACCEPT and CROSS_ENCODER_REJECT must be between 0 and 1, reject at most accept",
            ));
        }
        if !(1..=100).contains(&self.semantic_top_k) {
            return Err(config_err("SEMANTIC_TOP_K must be 1-100"));
        }
        if self.embedding_batch_size == 0
            || self.embedding_concurrency == 0
            || self.embedding_timeout_secs == 0
        {
            return Err(config_err(
                "EMBEDDING_BATCH_SIZE, EMBEDDING_CONCURRENCY and EMBEDDING_TIMEOUT_SECS must be at least 1",
            ));
        }
        if self.embedding_batch_window_ms > 1000 || self.embedding_batch_busy_window_ms > 1000 {
            return Err(config_err(
                "EMBEDDING_BATCH_WINDOW_MS and EMBEDDING_BATCH_BUSY_WINDOW_MS must be at most 1000 (a semantic lookup may wait that long)",
            ));
        }
        if self.embedding_dimensions == Some(0) {
            return Err(config_err("EMBEDDING_DIMENSIONS must be at least 1"));
        }
        Ok(())
    }

    /// These settings with the defaults that depend on the store: with the SQLite backend and no
    /// `VECTOR_DIR`, the embedded index is kept beside the database (`<SQLITE_PATH>.vectors`), so
    /// every program on the same settings (the server, ingest) reads the same vectors.
    pub fn for_store(&self, store: &StoreConfig) -> SemanticArgs {
        let mut semantic = self.clone();
        if semantic.vector_dir.is_none() && store.backend == CacheBackend::Sqlite {
            let mut dir = store.sqlite_path.clone().into_os_string();
            dir.push(".vectors");
            semantic.vector_dir = Some(dir.into());
        }
        semantic
    }

    /// The threshold in force: `SEMANTIC_THRESHOLD`, else 0.65 with token alignment (its band
    /// verifies what the cosine cannot), else the provider's default.
    pub fn threshold(&self) -> f32 {
        self.semantic_threshold.unwrap_or_else(|| {
            if self.aligns() {
                SemanticConfig::for_local_model().threshold
            } else {
                self.embedding_provider.default_threshold()
            }
        })
    }

    /// The accept bound in force: `SEMANTIC_ACCEPT`, else 0.9 with token alignment, else none
    /// (no band: the threshold serves); never below the threshold.
    pub fn accept(&self) -> Option<f32> {
        let threshold = self.threshold();
        self.semantic_accept
            .or_else(|| {
                self.aligns()
                    .then(|| SemanticConfig::for_local_model().accept)
                    .flatten()
            })
            .map(|a| a.max(threshold))
    }

    /// The verifiers in force, in order.
    pub fn verifiers(&self) -> Vec<VerifierKind> {
        match &self.semantic_verifiers {
            Some(list) if !list.is_empty() => list.clone(),
            _ if self.embedding_provider == EmbeddingProvider::Local => {
                vec![VerifierKind::Guards, VerifierKind::Alignment]
            }
            _ => vec![VerifierKind::Guards],
        }
    }

    /// Whether token alignment is among the verifiers.
    fn aligns(&self) -> bool {
        self.verifiers().contains(&VerifierKind::Alignment)
    }
}

/// Circuit breakers and bulkheads around the layer-2 cache, the embedder and the vector database.
#[derive(Clone, Debug, Args)]
pub struct ResilienceArgs {
    /// Consecutive failures of a dependency (unavailable, backend error, rate limited) after which
    /// its calls are refused at once for a moment instead of waiting for timeouts; 0: no breakers.
    #[arg(long, env = "BREAKER_FAILURES", default_value_t = 5)]
    pub breaker_failures: u32,
    /// Longest a breaker stays open (it opens for 0.5 s, doubling with jitter up to this), in seconds.
    #[arg(long, env = "BREAKER_OPEN_SECS", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub breaker_open_secs: u64,
    /// Most calls in flight to one dependency; more are refused at once (bulkhead).
    #[arg(long, env = "BULKHEAD_MAX_IN_FLIGHT", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub bulkhead_max_in_flight: u64,
}

impl ResilienceArgs {
    /// The settings these arguments describe.
    pub fn config(&self) -> ResilienceConfig {
        ResilienceConfig {
            breaker_failures: self.breaker_failures,
            breaker_max_open: Duration::from_secs(self.breaker_open_secs),
            max_in_flight: usize::try_from(self.bulkhead_max_in_flight).unwrap_or(usize::MAX),
        }
    }
}

/// Where entries live: the backend, its connection, layer 1, encryption, the key secret, TTLs.
#[derive(Clone, Debug, Args)]
pub struct StoreArgs {
    /// Cache backend.
    #[arg(long, env = "CACHE_BACKEND", value_enum, default_value = "memory")]
    pub cache_backend: CacheBackend,
    /// Most entries in the memory cache.
    #[arg(long, env = "CACHE_MAX_ENTRIES", default_value_t = 100_000)]
    pub cache_max_entries: u64,
    /// Most bytes in the memory cache.
    #[arg(long, env = "CACHE_MAX_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub cache_max_bytes: u64,
    /// SQLite database file for CACHE_BACKEND=sqlite (created if missing).
    #[arg(long, env = "SQLITE_PATH", default_value = "resk-cache.sqlite")]
    pub sqlite_path: std::path::PathBuf,
    /// SQLite commit durability.
    #[arg(long, env = "SQLITE_SYNCHRONOUS", value_enum, default_value = "full")]
    pub sqlite_synchronous: SqliteSync,
    /// Redis URL for CACHE_BACKEND=redis (`redis://[user:password@]host:port/db`).
    #[arg(
        long,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379/0",
        hide_env_values = true
    )]
    pub redis_url: String,
    /// Prefix of every Redis key resk writes; purges never touch keys outside it.
    #[arg(long, env = "REDIS_KEY_PREFIX", default_value = "resk")]
    pub redis_key_prefix: String,
    /// Keep a layer-1 memory cache (bounded by CACHE_MAX_ENTRIES / CACHE_MAX_BYTES) in front of SQLite
    /// or Redis. With Redis, other instances' writes, deletes and purges evict it over Redis pub/sub.
    #[arg(long, env = "CACHE_L1", default_value_t = true, action = clap::ArgAction::Set)]
    pub cache_l1: bool,
    /// Longest time an entry stays in layer 1 whatever its TTL, in seconds: the staleness bound should
    /// an invalidation message be lost.
    #[arg(long, env = "CACHE_L1_MAX_TTL_SECS", default_value_t = 300)]
    pub cache_l1_max_ttl_secs: u64,
    /// AES-256-GCM master key, base64 of 32 bytes (`resk-server keygen` makes one). Unset: values are
    /// stored unencrypted.
    #[arg(long, env = "CACHE_ENCRYPTION_KEY", hide_env_values = true)]
    pub cache_encryption_key: Option<String>,
    /// Earlier master keys, comma-separated base64, still accepted for reading (key rotation).
    #[arg(long, env = "CACHE_ENCRYPTION_PREVIOUS_KEYS", hide_env_values = true)]
    pub cache_encryption_previous_keys: Option<String>,
    /// Secret for HMAC cache keys, at least 32 bytes. Unset: derived from JWT_SECRET (rotating the JWT
    /// secret then also empties the cache).
    #[arg(long, env = "CACHE_KEY_SECRET", hide_env_values = true)]
    pub cache_key_secret: Option<String>,
    /// TTL of entries written without one, in seconds.
    #[arg(long, env = "CACHE_DEFAULT_TTL_SECS", default_value_t = 3600)]
    pub cache_default_ttl_secs: u64,
    /// Longest TTL a writer may ask for, in seconds.
    #[arg(long, env = "CACHE_MAX_TTL_SECS", default_value_t = 7 * 24 * 3600)]
    pub cache_max_ttl_secs: u64,
}

/// Bounds of a memory store (the memory backend's, and layer 1's).
#[derive(Clone, Copy, Debug)]
pub struct MemoryLimits {
    /// Most entries.
    pub max_entries: u64,
    /// Most bytes.
    pub max_bytes: u64,
}

/// [`StoreArgs`], validated.
#[derive(Clone)]
#[non_exhaustive]
pub struct StoreConfig {
    /// Cache backend.
    pub backend: CacheBackend,
    /// Memory backend bounds (also layer 1's).
    pub memory: MemoryLimits,
    /// Layer-1 TTL cap, when a layer 1 is kept in front of SQLite or Redis.
    pub l1_max_ttl: Option<Duration>,
    /// SQLite database file.
    pub sqlite_path: std::path::PathBuf,
    /// SQLite commit durability.
    pub sqlite_sync: SqliteSync,
    /// Redis URL.
    pub redis_url: String,
    /// Redis key prefix.
    pub redis_prefix: String,
    /// Encryption at rest, when configured.
    pub cipher: Option<SharedCipher>,
    /// Cache key derivation.
    pub keys: KeyBuilder,
    /// TTL policy.
    pub ttl: TtlPolicy,
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("backend", &self.backend)
            .field("memory", &self.memory)
            .field("l1_max_ttl", &self.l1_max_ttl)
            .field("encryption", &self.cipher.is_some())
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// The cache key secret derived from another secret (resk-server derives it from `JWT_SECRET` when
/// `CACHE_KEY_SECRET` is unset): HKDF-SHA-256, so the two secrets cannot be told from each other.
pub fn derive_key_secret(parent: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let mut derived = Zeroizing::new(vec![0u8; 32]);
    hkdf::Hkdf::<sha2::Sha256>::new(Some(b"resk/cache-key-secret/v1"), parent)
        .expand(b"resk/cache-key-secret", &mut derived)
        .map_err(|_| config_err("could not derive the cache key secret"))?;
    Ok(derived)
}

impl StoreArgs {
    /// Validate every option; the first problem is a `Config` error naming the variable.
    /// `derived_secret` is the key secret to use when `CACHE_KEY_SECRET` is unset, with the name of
    /// the variable it comes from (see [`derive_key_secret`]).
    pub fn resolve(
        &self,
        derived_secret: Option<(&str, Zeroizing<Vec<u8>>)>,
    ) -> Result<StoreConfig> {
        let cipher = match &self.cache_encryption_key {
            None => {
                if self.cache_encryption_previous_keys.is_some() {
                    return Err(config_err(
                        "CACHE_ENCRYPTION_PREVIOUS_KEYS is set but CACHE_ENCRYPTION_KEY is not",
                    ));
                }
                None
            }
            Some(current) => Some(cipher(
                current,
                self.cache_encryption_previous_keys.as_deref(),
            )?),
        };
        let key_secret: Zeroizing<Vec<u8>> = match (&self.cache_key_secret, derived_secret) {
            (Some(s), _) if s.len() < KeyBuilder::MIN_SECRET_LEN => {
                return Err(config_err("CACHE_KEY_SECRET must be at least 32 bytes"));
            }
            (Some(s), _) => Zeroizing::new(s.clone().into_bytes()),
            (None, Some((_, derived))) => derived,
            (None, None) => {
                return Err(config_err(
                    "CACHE_KEY_SECRET (at least 32 bytes) is required when JWT_SECRET is unset",
                ));
            }
        };
        let keys = KeyBuilder::new(&key_secret)?;
        if self.cache_max_ttl_secs > TtlPolicy::LONGEST.as_secs() {
            return Err(config_err(format!(
                "CACHE_MAX_TTL_SECS must be at most {} (100 years)",
                TtlPolicy::LONGEST.as_secs()
            )));
        }
        let ttl = TtlPolicy::new(
            Duration::from_secs(self.cache_default_ttl_secs),
            Duration::from_secs(self.cache_max_ttl_secs),
        )
        .map_err(|_| {
            config_err("CACHE_DEFAULT_TTL_SECS must be at least 1 and at most CACHE_MAX_TTL_SECS")
        })?;
        if self.redis_key_prefix.is_empty() || self.redis_key_prefix.contains(char::is_whitespace) {
            return Err(config_err(
                "REDIS_KEY_PREFIX must be non-empty and without white space",
            ));
        }
        if self.cache_l1 && self.cache_l1_max_ttl_secs == 0 {
            return Err(config_err("CACHE_L1_MAX_TTL_SECS must be at least 1"));
        }
        Ok(StoreConfig {
            backend: self.cache_backend,
            memory: MemoryLimits {
                max_entries: self.cache_max_entries,
                max_bytes: self.cache_max_bytes,
            },
            l1_max_ttl: self
                .cache_l1
                .then(|| Duration::from_secs(self.cache_l1_max_ttl_secs)),
            sqlite_path: self.sqlite_path.clone(),
            sqlite_sync: self.sqlite_synchronous,
            redis_url: self.redis_url.clone(),
            redis_prefix: self.redis_key_prefix.clone(),
            cipher,
            keys,
            ttl,
        })
    }
}

/// The AES-256-GCM cipher of `CACHE_ENCRYPTION_KEY` and `CACHE_ENCRYPTION_PREVIOUS_KEYS`.
fn cipher(current: &str, previous: Option<&str>) -> Result<SharedCipher> {
    use resk_crypto::{AesGcmCipher, MasterKey};
    let current = MasterKey::from_base64(current)
        .map_err(|e| config_err(format!("CACHE_ENCRYPTION_KEY: {}", e.message())))?;
    let previous = previous
        .iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|k| {
            MasterKey::from_base64(k)
                .map_err(|e| config_err(format!("CACHE_ENCRYPTION_PREVIOUS_KEYS: {}", e.message())))
        })
        .collect::<Result<Vec<_>>>()?;
    let cipher = AesGcmCipher::new(current).with_previous(previous)?;
    Ok(Arc::new(cipher))
}

/// The start-up error for a backend named in configuration but left out of this build.
#[allow(dead_code)] // unused when every backend is compiled in
fn not_compiled(backend: &str, feature: &str) -> Error {
    Error::new(
        ErrorKind::Config,
        "config",
        "cache",
        format!(
            "backend \"{backend}\" not compiled in; rebuild with resk's `{feature}` feature \
             (resk-server: --features cache-{feature})"
        ),
    )
}

/// A configured store stack and what came with it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct BuiltStore {
    /// Where entries live (layer 1, breaker and encryption as configured; see [`crate::layers`]).
    pub cache: SharedCacheStore,
    /// Where invalidations and events travel: Redis pub/sub with the Redis backend, this process
    /// only otherwise.
    pub bus: SharedBus,
    /// The Redis connection, with the Redis backend (for shared counters and rate limits).
    #[cfg(feature = "redis")]
    pub redis: Option<resk_cache_redis::RedisStore>,
}

#[cfg(feature = "memory")]
fn memory_store(config: &StoreConfig) -> resk_cache_memory::MemoryStore {
    use resk_cache_memory::{MemoryConfig, MemoryStore};
    MemoryStore::new(
        MemoryConfig::default()
            .with_max_entries(config.memory.max_entries)
            .with_max_bytes(config.memory.max_bytes),
    )
}

/// `store` with the layers `config` asks for: breaker and bulkhead and layer 1 when `remote` (a
/// memory store needs neither), encryption when configured.
#[allow(dead_code)] // unused when no backend is compiled in
fn stack<S: resk_core::CacheStore>(
    config: &StoreConfig,
    store: S,
    remote: bool,
    bus: &SharedBus,
    resilience: ResilienceConfig,
) -> Result<SharedCacheStore> {
    let mut layers = Layers {
        cipher: config.cipher.clone(),
        ..Layers::default()
    };
    if remote {
        layers.resilience = Some(resilience);
        if let Some(max_ttl) = config.l1_max_ttl {
            #[cfg(feature = "memory")]
            {
                layers.layer1 = Some(crate::layers::Layer1 {
                    store: Arc::new(memory_store(config)),
                    bus: bus.clone(),
                    max_ttl,
                });
            }
            #[cfg(not(feature = "memory"))]
            {
                let _ = (max_ttl, bus);
                return Err(not_compiled(
                    "memory (layer 1; or set CACHE_L1=false)",
                    "memory",
                ));
            }
        }
    }
    Ok(crate::layers::stack(store, layers))
}

/// Connect the configured backend and assemble its stack.
pub async fn build_store(config: &StoreConfig, resilience: ResilienceConfig) -> Result<BuiltStore> {
    let local = || -> SharedBus { Arc::new(LocalBus::default()) };
    match config.backend {
        CacheBackend::Memory => {
            #[cfg(feature = "memory")]
            {
                let bus = local();
                Ok(BuiltStore {
                    cache: stack(config, memory_store(config), false, &bus, resilience)?,
                    bus,
                    #[cfg(feature = "redis")]
                    redis: None,
                })
            }
            #[cfg(not(feature = "memory"))]
            {
                let _ = (local, resilience);
                Err(not_compiled("memory", "memory"))
            }
        }
        CacheBackend::Sqlite => {
            #[cfg(feature = "sqlite")]
            {
                use resk_cache_sqlite::{Durability, SqliteConfig, SqliteStore};
                let durability = match config.sqlite_sync {
                    SqliteSync::Full => Durability::Full,
                    SqliteSync::Normal => Durability::Normal,
                };
                let store = SqliteStore::connect(
                    SqliteConfig::new(&config.sqlite_path).with_durability(durability),
                )
                .await?;
                let bus = local();
                Ok(BuiltStore {
                    cache: stack(config, store, true, &bus, resilience)?,
                    bus,
                    #[cfg(feature = "redis")]
                    redis: None,
                })
            }
            #[cfg(not(feature = "sqlite"))]
            {
                let _ = (local, resilience);
                Err(not_compiled("sqlite", "sqlite"))
            }
        }
        CacheBackend::Redis => {
            #[cfg(feature = "redis")]
            {
                use resk_cache_redis::{RedisBus, RedisConfig, RedisStore};
                let _ = local;
                let redis = RedisConfig::new(&config.redis_url).with_prefix(&config.redis_prefix);
                let store = RedisStore::connect(redis.clone()).await?;
                let bus: SharedBus = Arc::new(RedisBus::connect(&redis).await?);
                Ok(BuiltStore {
                    cache: stack(config, store.clone(), true, &bus, resilience)?,
                    bus,
                    redis: Some(store),
                })
            }
            #[cfg(not(feature = "redis"))]
            {
                let _ = (local, resilience);
                Err(not_compiled("redis", "redis"))
            }
        }
    }
}

/// How every provider is wrapped: the pipeline, micro-batching, the embedding cache.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Wrapping {
    pipeline: PipelineConfig,
    cache: Option<EmbeddingCacheConfig>,
    batch_in_flight: Option<usize>,
    batch_window: Duration,
    batch_busy_window: Duration,
    batch_max: usize,
}

impl Wrapping {
    /// The micro-batching of a provider whose own default is `in_flight` slots (0: off).
    fn microbatch(&self, in_flight: usize) -> Option<MicroBatchConfig> {
        let in_flight = self.batch_in_flight.unwrap_or(in_flight);
        (in_flight > 0).then_some(MicroBatchConfig {
            in_flight,
            max_batch: self.batch_max,
            window: self.batch_window,
            busy_window: self.batch_busy_window,
        })
    }
}

/// `inner` behind the shared pipeline, micro-batching (`in_flight`: the provider's default slots,
/// 0 for off) and the embedding cache, each when configured: a repeated text is answered from the
/// cache before it queues for a batch.
#[allow(dead_code)] // unused when no embedder is compiled in
pub(crate) fn finish<E: resk_core::Embedder>(
    inner: E,
    wrapping: Wrapping,
    in_flight: usize,
) -> SharedEmbedder {
    let p = Pipeline::new(inner, wrapping.pipeline);
    match (wrapping.microbatch(in_flight), wrapping.cache) {
        (Some(b), Some(c)) => Arc::new(EmbeddingCache::new(MicroBatcher::new(p, b), c)),
        (Some(b), None) => Arc::new(MicroBatcher::new(p, b)),
        (None, Some(c)) => Arc::new(EmbeddingCache::new(p, c)),
        (None, None) => Arc::new(p),
    }
}

/// The configured embedder with the shared pipeline (batching, concurrency, retries, timeout,
/// dimension checks) and the embedding cache in front.
pub async fn build_embedder(args: &SemanticArgs) -> Result<SharedEmbedder> {
    Ok(build_embedder_and_model(args).await?.0)
}

/// The configured embedder, and the local model when the provider is `local` (token alignment
/// runs on it).
async fn build_embedder_and_model(
    args: &SemanticArgs,
) -> Result<(SharedEmbedder, Option<providers::LocalModel>)> {
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
    let wrapping = Wrapping {
        pipeline,
        cache,
        batch_in_flight: args.embedding_batch_in_flight,
        batch_window: Duration::from_millis(args.embedding_batch_window_ms),
        batch_busy_window: Duration::from_millis(args.embedding_batch_busy_window_ms),
        batch_max: args.embedding_batch_size,
    };
    match args.embedding_provider {
        EmbeddingProvider::Lexical => Ok((providers::lexical(wrapping)?, None)),
        EmbeddingProvider::Local => {
            let (embedder, model) = providers::local(args, wrapping).await?;
            Ok((embedder, Some(model)))
        }
        EmbeddingProvider::Openai => Ok((providers::openai(args, wrapping)?, None)),
        EmbeddingProvider::Hf => Ok((providers::hf(args, wrapping)?, None)),
    }
}

/// The configured embedder and verifiers (`SEMANTIC_VERIFIERS`), as `resk-server calibrate` uses
/// them.
pub async fn build_embedder_with_verifiers(
    args: &SemanticArgs,
) -> Result<(SharedEmbedder, Vec<resk_core::SharedVerifier>)> {
    let (embedder, model) = build_embedder_and_model(args).await?;
    let verifiers = build_verifiers(args, model.as_ref()).await?;
    Ok((embedder, verifiers))
}

/// The LLM judge of `args`; with `JUDGE_FAIL_OPEN`, checked to answer.
async fn judge(args: &SemanticArgs) -> Result<resk_core::SharedVerifier> {
    let base = args
        .judge_base_url
        .clone()
        .ok_or_else(|| config_err("SEMANTIC_VERIFIERS=judge needs JUDGE_BASE_URL"))?;
    let mut config = crate::verify::JudgeConfig::new(base, args.judge_model.clone());
    config.api_key = args.judge_api_key.clone();
    config.timeout = Duration::from_millis(args.judge_timeout_ms);
    config.price_per_1k_prompt = args.judge_price_per_1k_prompt;
    config.price_per_1k_completion = args.judge_price_per_1k_completion;
    config.fail_open = args.judge_fail_open;
    let judge = crate::verify::Judge::new(config)
        .map_err(|e| config_err(format!("JUDGE_BASE_URL: {}", e.message())))?;
    if args.judge_fail_open {
        judge.probe().await.map_err(|e| {
            config_err(format!(
                "JUDGE_FAIL_OPEN is set and the judge at JUDGE_BASE_URL does not answer ({}): \
                 fix JUDGE_BASE_URL / JUDGE_API_KEY, or leave JUDGE_FAIL_OPEN off",
                e.message()
            ))
        })?;
    }
    Ok(Arc::new(judge))
}

/// The verifiers `args` name, built (`model`: the local model, for alignment).
async fn build_verifiers(
    args: &SemanticArgs,
    model: Option<&providers::LocalModel>,
) -> Result<Vec<resk_core::SharedVerifier>> {
    let mut out: Vec<resk_core::SharedVerifier> = Vec::new();
    for kind in args.verifiers() {
        match kind {
            VerifierKind::None => {}
            VerifierKind::Guards => out.push(Arc::new(crate::verify::Guards::default())),
            VerifierKind::Alignment => out.push(providers::alignment(model)?),
            VerifierKind::CrossEncoder => out.push(providers::cross_encoder(args).await?),
            VerifierKind::Judge => out.push(judge(args).await?),
        }
    }
    Ok(out)
}

/// The configured vector store.
pub async fn build_vectors(args: &SemanticArgs) -> Result<SharedVectorStore> {
    match args.vectordb_type {
        VectorDbType::Embedded => providers::embedded(args).await,
        VectorDbType::Chroma => providers::chroma(args),
        VectorDbType::Pgvector => providers::pgvector(args).await,
        VectorDbType::Qdrant => providers::qdrant(args),
        VectorDbType::Pinecone => providers::pinecone(args),
        VectorDbType::Weaviate => providers::weaviate(args),
        VectorDbType::Milvus => providers::milvus(args).await,
    }
}

/// The engine's semantic settings from `args`.
pub fn semantic_config(args: &SemanticArgs, resilience: ResilienceConfig) -> SemanticConfig {
    SemanticConfig {
        threshold: args.threshold(),
        top_k: args.semantic_top_k,
        collection: args.vector_collection.clone(),
        metric: args.vector_metric.into(),
        negative_ttl: Duration::from_secs(args.negative_cache_ttl_secs),
        resilience,
        accept: args.accept(),
        verify_timeout: Duration::from_millis(args.semantic_verify_timeout_ms),
        target_error: args.semantic_target_error,
    }
}

/// The semantic layer from settings: the configured embedder and vector store, the collection
/// created or checked.
pub async fn build_semantic(args: &SemanticArgs, resilience: ResilienceConfig) -> Result<Semantic> {
    let (embedder, model) = build_embedder_and_model(args).await?;
    let verifiers = build_verifiers(args, model.as_ref()).await?;
    let vectors = build_vectors(args).await?;
    Ok(
        Semantic::new(embedder, vectors, semantic_config(args, resilience))
            .await?
            .with_verifiers(verifiers),
    )
}
