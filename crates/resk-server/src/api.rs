//! Request and response bodies. The same types validate requests and generate the OpenAPI document.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `POST /api/cache`: store an answer.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteRequest {
    /// The user's question. Normalised (case, spacing, Unicode form) before keying.
    #[schemars(length(min = 1))]
    pub query: String,
    /// The answer to cache: any JSON value except `null`.
    pub response: serde_json::Value,
    /// Time to live in seconds (default and maximum are configured on the server).
    #[schemars(range(min = 1))]
    pub ttl: Option<u64>,
    /// Answer language (BCP 47 tag such as `en` or `fr-CA`); part of the key.
    pub language: Option<String>,
    /// The model that produced the answer; part of the key.
    pub model: Option<String>,
    /// Generation parameters that change the answer (temperature, prompt version, …); part of the key.
    pub params: Option<serde_json::Map<String, serde_json::Value>>,
    /// Index the query for semantic lookups (default `true` when the server has semantic caching).
    pub semantic: Option<bool>,
}

/// `POST /api/cache/query`: look an answer up.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    /// The user's question.
    #[schemars(length(min = 1))]
    pub query: String,
    /// Freshness bound in seconds: an entry written longer ago than this counts as a miss.
    #[schemars(range(min = 1))]
    pub ttl: Option<u64>,
    /// Skip the cache and answer a miss (the caller will regenerate and write the answer).
    #[serde(default)]
    pub force_refresh: bool,
    /// Answer language; must match what the writer sent.
    pub language: Option<String>,
    /// Model; must match what the writer sent.
    pub model: Option<String>,
    /// Generation parameters; must match what the writer sent (key order does not matter).
    pub params: Option<serde_json::Map<String, serde_json::Value>>,
    /// On an exact miss, look for a cached paraphrase (default `true` when the server has semantic
    /// caching).
    pub semantic: Option<bool>,
    /// Similarity a paraphrase must reach (default: the server's `SEMANTIC_THRESHOLD`).
    #[schemars(range(min = -1.0, max = 1.0))]
    pub threshold: Option<f32>,
    /// Candidates examined (default: the server's `SEMANTIC_TOP_K`).
    #[schemars(range(min = 1, max = 100))]
    pub k: Option<usize>,
    /// Seed of the `deterministic` variant strategy (default: the token's subject).
    pub seed: Option<String>,
}

/// The fields of a request that decide its cache key, borrowed.
#[derive(Clone, Copy, Debug)]
pub struct KeyFields<'a> {
    /// The question.
    pub query: &'a str,
    /// Answer language.
    pub language: Option<&'a str>,
    /// Model.
    pub model: Option<&'a str>,
    /// Generation parameters.
    pub params: Option<&'a serde_json::Map<String, serde_json::Value>>,
}

macro_rules! key_fields {
    ($($ty:ty),*) => {$(
        impl $ty {
            /// The fields that decide the cache key.
            pub fn key_fields(&self) -> KeyFields<'_> {
                KeyFields {
                    query: &self.query,
                    language: self.language.as_deref(),
                    model: self.model.as_deref(),
                    params: self.params.as_ref(),
                }
            }
        }
    )*};
}

key_fields!(WriteRequest, QueryRequest);

/// Answer to a successful write.
#[derive(Debug, Serialize, JsonSchema)]
pub struct WriteResponse {
    /// Always `true`.
    pub success: bool,
    /// The entry's key: an HMAC of the normalised query and its scope, never the query itself.
    pub key: String,
    /// The TTL applied, in seconds.
    pub ttl: u64,
    /// When the entry expires (RFC 3339).
    pub expires_at: String,
    /// Whether the query was indexed for semantic lookups.
    pub semantic_indexed: bool,
    /// Why semantic indexing failed (the exact entry is stored regardless).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub semantic_error: Option<String>,
}

/// Which layer answered a hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The in-process memory cache.
    Memory,
    /// The SQLite file.
    Sqlite,
    /// Redis.
    Redis,
    /// A cached paraphrase found by vector search.
    Semantic,
}

impl Source {
    /// Every source, in index order.
    pub const ALL: [Source; 4] = [
        Source::Memory,
        Source::Sqlite,
        Source::Redis,
        Source::Semantic,
    ];

    /// The lowercase name, as serialised.
    pub const fn as_str(self) -> &'static str {
        match self {
            Source::Memory => "memory",
            Source::Sqlite => "sqlite",
            Source::Redis => "redis",
            Source::Semantic => "semantic",
        }
    }

    /// The source for a store's backend name (`CachedValue::source`).
    pub fn from_backend(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Index into per-source arrays.
    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

/// Answer to a single-entry delete.
#[derive(Debug, Serialize, JsonSchema)]
pub struct DeleteResponse {
    /// Always `true`.
    pub success: bool,
    /// Whether an entry existed under the key.
    pub deleted: bool,
}

/// Time spent per layer, in milliseconds.
#[derive(Debug, Default, Serialize, JsonSchema)]
pub struct Latency {
    /// The whole lookup.
    pub total: f64,
    /// Validation and key derivation.
    pub key: f64,
    /// Cache read, including decryption (both reads on a semantic hit).
    pub cache: f64,
    /// Embedding the query (semantic lookups only).
    pub embed: f64,
    /// Vector search (semantic lookups only).
    pub vector: f64,
}

/// Answer to a lookup: a hit with the cached answer, or a miss.
///
/// Borrows the answer and key from the stored entry, so a hit is serialised without copying them.
#[derive(Debug, Serialize, JsonSchema)]
pub struct QueryResponse<'a> {
    /// Whether a cached answer was found.
    pub hit: bool,
    /// Which layer answered (hits only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// The cached answer (hits only), exactly as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<serde_json::Value>")]
    pub response: Option<&'a serde_json::value::RawValue>,
    /// The entry's key (hits only; on a semantic hit, the matched entry's key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<&'a str>,
    /// Similarity of the matched query (semantic hits only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub similarity: Option<f32>,
    /// The cached query that matched (semantic hits only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matched_query: Option<&'a str>,
    /// Which variant of a variants response was chosen (0-based).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<usize>,
    /// When the entry was written (RFC 3339, hits only).
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    #[schemars(with = "Option<String>")]
    pub created_at: Option<time::OffsetDateTime>,
    /// When the entry expires (RFC 3339, hits only).
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    #[schemars(with = "Option<String>")]
    pub expires_at: Option<time::OffsetDateTime>,
    /// `true` when a backend failed and the answer is a miss for that reason, not for lack of an entry.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub degraded: bool,
    /// Per-layer latency.
    pub latency_ms: Latency,
}

/// Answer to a purge.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PurgeResponse {
    /// Always `true`.
    pub success: bool,
    /// How many entries of the caller's tenant were removed.
    pub purged: u64,
}

/// `GET /health`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct HealthResponse {
    /// `ok`.
    pub status: &'static str,
}

/// `GET /ready` when ready.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ReadyResponse {
    /// `ready`.
    pub status: &'static str,
    /// Backend name → `ok`.
    pub checks: serde_json::Map<String, serde_json::Value>,
}
