//! Request and response bodies. The same types validate requests and generate the OpenAPI document.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

// Patterns of "not blank" spell out Rust's `char::is_whitespace` set instead of `\S`: Python's `\s`
// (the fuzzer's engine) also counts U+001C-U+001F, which Rust (and so the server) does not.

/// An optional whole number: JSON Schema counts `30.0` as the integer 30, so it is accepted, and a
/// whole number past `u64::MAX` saturates (a freshness bound of 10^20 s means no bound); fractions
/// and negatives are refused.
fn whole<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    use serde::de::Error as _;
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    if let Some(u) = n.as_u64() {
        return Ok(Some(u));
    }
    match n.as_f64() {
        // `as` saturates at u64::MAX.
        Some(f) if f >= 0.0 && f.fract() == 0.0 => Ok(Some(f as u64)),
        _ => Err(D::Error::custom(format!(
            "invalid value: {n}, expected a non-negative whole number"
        ))),
    }
}

/// Any JSON value but `null`.
fn non_null(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"not": {"type": "null"}})
}

/// `DELETE /api/cache/{key}`: the key a write returned.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct KeyPath {
    /// 64 lowercase hex characters.
    #[schemars(regex(pattern = "^[0-9a-f]{64}$"))]
    pub key: String,
}

/// Who may read an entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// Every user of the tenant (the default).
    #[default]
    Tenant,
    /// Only the token subject that wrote it: the subject is part of the key, so no other subject can
    /// read, overwrite or find it (exactly or semantically). Read it back with `visibility: "user"`.
    User,
}

/// `POST /api/cache`: store an answer.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteRequest {
    /// The user's question. Normalised (case, spacing, Unicode form) before keying. Not blank; at most
    /// `MAX_QUERY_CHARS` characters (10 000 by default).
    #[schemars(
        length(min = 1, max = 10000),
        regex(
            pattern = r"[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
        )
    )]
    pub query: String,
    /// The answer to cache: any JSON value except `null`.
    #[schemars(schema_with = "non_null")]
    pub response: serde_json::Value,
    /// Time to live in seconds (default and maximum are configured on the server; the maximum shown
    /// is the default `CACHE_MAX_TTL_SECS`).
    #[schemars(range(min = 1, max = 604800))]
    #[serde(default, deserialize_with = "whole")]
    pub ttl: Option<u64>,
    /// Grace period in seconds after the TTL during which the entry is still served, flagged
    /// `stale: true`, so the caller can answer at once and refresh it in the background
    /// (stale-while-revalidate). Default `CACHE_STALE_TTL_SECS` (0: none); at most the maximum TTL.
    #[schemars(range(min = 0, max = 604800))]
    #[serde(default, deserialize_with = "whole")]
    pub stale_ttl: Option<u64>,
    /// Answer language (BCP 47 tag such as `en` or `fr-CA`); part of the key.
    #[schemars(regex(pattern = "^[A-Za-z0-9-]{1,35}$"))]
    pub language: Option<String>,
    /// The model that produced the answer; part of the key.
    #[schemars(
        length(min = 1, max = 256),
        regex(
            pattern = r"[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
        )
    )]
    pub model: Option<String>,
    /// Generation parameters that change the answer (temperature, prompt version, …); part of the key.
    pub params: Option<serde_json::Map<String, serde_json::Value>>,
    /// Index the query for semantic lookups (default `true` when the server has semantic caching).
    pub semantic: Option<bool>,
    /// `tenant` (default) or `user`: private to the token's subject.
    pub visibility: Option<Visibility>,
    /// The conversation before the query: an array of `{role, content}` messages (oldest first)
    /// or one string. Part of the key and of the semantic scope: the same query after other turns
    /// never hits. Which part counts: `CONTEXT_TURNS`, `CONTEXT_SYSTEM`.
    pub context: Option<Context>,
}

/// `POST /api/cache/query`: look an answer up.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    /// The user's question (not blank; at most `MAX_QUERY_CHARS` characters, 10 000 by default).
    #[schemars(
        length(min = 1, max = 10000),
        regex(
            pattern = r"[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
        )
    )]
    pub query: String,
    /// Freshness bound in seconds: an entry written longer ago than this counts as a miss.
    #[schemars(range(min = 1))]
    #[serde(default, deserialize_with = "whole")]
    pub ttl: Option<u64>,
    /// Skip the cache and answer a miss (the caller will regenerate and write the answer).
    #[serde(default)]
    pub force_refresh: bool,
    /// Serve an entry in its grace period after expiry, flagged `stale: true` (default `true`);
    /// `false`: such an entry is a miss.
    pub allow_stale: Option<bool>,
    /// Answer language; must match what the writer sent.
    #[schemars(regex(pattern = "^[A-Za-z0-9-]{1,35}$"))]
    pub language: Option<String>,
    /// Model; must match what the writer sent.
    #[schemars(
        length(min = 1, max = 256),
        regex(
            pattern = r"[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
        )
    )]
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
    #[serde(default, deserialize_with = "whole")]
    pub k: Option<u64>,
    /// Seed of the `deterministic` variant strategy (default: the token's subject).
    pub seed: Option<String>,
    /// `tenant` (default): entries shared by the tenant; `user`: the caller's private entries.
    pub visibility: Option<Visibility>,
    /// The conversation before the query: an array of `{role, content}` messages (oldest first)
    /// or one string. Part of the key and of the semantic scope: the same query after other turns
    /// never hits. Which part counts: `CONTEXT_TURNS`, `CONTEXT_SYSTEM`.
    pub context: Option<Context>,
}

/// A conversation before the query.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Context {
    /// Messages, oldest first.
    Messages(Vec<ContextMessage>),
    /// One text (a summary, a thread id, …).
    Text(String),
}

/// One message of a `context`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContextMessage {
    /// `system`, `user`, `assistant`, `tool`, … (1-32 letters, digits, `-` or `_`).
    #[schemars(length(min = 1, max = 32), regex(pattern = "^[A-Za-z0-9_-]{1,32}$"))]
    pub role: String,
    /// What was said.
    pub content: String,
}

impl Context {
    /// The engine's messages.
    pub fn messages(&self) -> Vec<resk::Message> {
        match self {
            Context::Messages(messages) => messages
                .iter()
                .map(|m| resk::Message::new(m.role.as_str(), m.content.as_str()))
                .collect(),
            Context::Text(text) => vec![resk::Message::new("context", text.as_str())],
        }
    }
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
    /// Shared by the tenant or private to the caller.
    pub visibility: Visibility,
    /// The conversation before the query.
    pub context: Option<&'a Context>,
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
                    visibility: self.visibility.unwrap_or_default(),
                    context: self.context.as_ref(),
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
    /// End of its grace period, when it has one (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stale_until: Option<String>,
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
    /// `true` when a backend failed and the answer is a miss for that reason, not for lack of an entry
    /// (absent: `false`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub degraded: bool,
    /// `true` when the answer is past its TTL, in the grace period its writer gave it: use it, and
    /// regenerate and write a fresh answer (absent: `false`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stale: bool,
    /// How a semantic hit was decided (semantic hits only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
    /// Report this semantic hit right or wrong with it (`POST /api/cache/feedback`; semantic hits
    /// only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hit_id: Option<&'a str>,
    /// Semantic candidates turned down on the way, best first (absent when none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejected: Vec<RejectedCandidate>,
    /// Per-layer latency.
    pub latency_ms: Latency,
}

/// How a semantic candidate was decided.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Verification {
    /// `accept` (served) or `reject`.
    pub verdict: &'static str,
    /// The verifier that decided (`guards`, `alignment`, …), or `similarity` when the similarity
    /// alone did.
    pub by: &'static str,
    /// Why: a label (`negation`, `antonym`, `number`, `swap`, `direction`, `polarity`, `aligned`,
    /// `unaligned`, `above_accept`, `unverified`, `timeout`, `error`), then `: ` and detail.
    pub reason: String,
}

impl From<&resk::verify::Verification> for Verification {
    fn from(v: &resk::verify::Verification) -> Self {
        Self {
            verdict: v.verdict.as_str(),
            by: v.by,
            reason: v.reason.to_string(),
        }
    }
}

/// A semantic candidate the verifiers turned down.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RejectedCandidate {
    /// The candidate entry's key.
    pub key: String,
    /// Its similarity.
    pub similarity: f32,
    /// Who turned it down and why.
    pub verification: Verification,
}

/// `POST /api/cache/feedback`: was a semantic hit right?
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedbackRequest {
    /// The `hit_id` of a semantic hit (from `POST /api/cache/query`).
    #[schemars(length(min = 1, max = 512))]
    pub hit_id: String,
    /// `true`: the cached answer answered the question; `false`: it did not (that question is not
    /// answered by that entry again).
    pub correct: bool,
}

/// Answer to a feedback report.
#[derive(Debug, Serialize, JsonSchema)]
pub struct FeedbackResponse {
    /// Always `true`.
    pub success: bool,
    /// The key of the entry the report was about.
    pub key: String,
    /// Right reports the entry has received.
    pub right: u32,
    /// Wrong reports the entry has received.
    pub wrong: u32,
    /// The entry's floor now: its candidates below this similarity are not served (absent: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub floor: Option<f32>,
    /// The entry's own accept bound now: its candidates from this similarity skip the band
    /// verifiers (absent: the server's `SEMANTIC_ACCEPT`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accept: Option<f32>,
}

/// Answer to a purge.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PurgeResponse {
    /// Always `true`.
    pub success: bool,
    /// How many entries of the caller's tenant were removed.
    pub purged: u64,
}

/// `POST /api/auth/revoke`: `jti` or `token`, not both.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
// Both given as strings is refused (a `null` counts as absent, as serde reads it).
#[schemars(extend("not" = {
    "required": ["jti", "token"],
    "properties": {"jti": {"type": "string"}, "token": {"type": "string"}}
}))]
pub struct RevokeRequest {
    /// The `jti` of a token of the caller's tenant to revoke (needs `cache:admin`). Absent, with
    /// no `token`: the caller's own token.
    #[serde(default)]
    #[schemars(length(min = 1, max = 256))]
    pub jti: Option<String>,
    /// A token to revoke, sent whole (instead of `jti`): how a token never used yet is revoked.
    /// Its own subject may revoke it; otherwise it needs `cache:admin` of its tenant.
    #[serde(default)]
    #[schemars(length(min = 1, max = 8192))]
    pub token: Option<String>,
    /// When the revoked token expires (Unix seconds); the revocation lasts until then. Default: now
    /// plus the maximum token lifetime.
    #[serde(default, deserialize_with = "whole")]
    pub exp: Option<u64>,
}

/// Answer to a revocation.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RevokeResponse {
    /// Always `true`.
    pub revoked: bool,
    /// The revoked `jti`.
    pub jti: String,
    /// Until when (Unix seconds) the revocation is kept.
    pub until: u64,
}

/// `POST /api/privacy/export` and `POST /api/privacy/erase`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubjectRequest {
    /// The subject (token `sub`) whose entries are meant, in the caller's tenant. Absent, or the
    /// caller's own subject: the caller's own entries. Another subject needs `cache:admin`.
    #[serde(default)]
    #[schemars(length(min = 1, max = 256))]
    pub subject: Option<String>,
}

/// `POST /api/privacy/export`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportRequest {
    /// The subject (token `sub`) whose entries are meant, in the caller's tenant. Absent, or the
    /// caller's own subject: the caller's own entries. Another subject needs `cache:admin`.
    #[serde(default)]
    #[schemars(length(min = 1, max = 256))]
    pub subject: Option<String>,
    /// Where to go on: the `next` of the previous answer. Absent: from the start.
    #[serde(default)]
    #[schemars(length(min = 1, max = 2048))]
    pub cursor: Option<String>,
}

/// One entry of a privacy export.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ExportedEntry {
    /// The entry's key (as a write returned it).
    pub key: String,
    /// The query as written.
    pub query: String,
    /// The cached answer.
    pub response: serde_json::Value,
    /// When it was written (RFC 3339).
    pub created_at: String,
    /// When it stops being served (RFC 3339).
    pub expires_at: String,
    /// `user` if private to the subject, `tenant` if shared with its tenant.
    pub visibility: Visibility,
    /// Whether the subject wrote it (otherwise it is only private to the subject).
    pub written_by_subject: bool,
}

/// Answer to `POST /api/privacy/export`: the subject's entries in one stretch of the caller's
/// tenant. Each call reads a bounded part of the tenant; send `next` back as `cursor` until it is
/// `null` to have every entry.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ExportResponse {
    /// The subject exported.
    pub subject: String,
    /// How many entries in this answer.
    pub count: usize,
    /// This answer's entries, in key order (on Redis an entry may, rarely, come again in a later
    /// answer: compare keys).
    pub entries: Vec<ExportedEntry>,
    /// The `cursor` of the next call; `null`: the export is complete.
    pub next: Option<String>,
}

/// Answer to `POST /api/privacy/erase`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct EraseResponse {
    /// Always `true`.
    pub success: bool,
    /// The subject erased.
    pub subject: String,
    /// How many entries were deleted (with their vectors).
    pub erased: u64,
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

/// RFC 3339 timestamps as the API writes them.
pub(crate) mod rfc3339 {
    use time::{OffsetDateTime, format_description::well_known::Rfc3339};

    /// `at` as RFC 3339 text (empty for a year past 9999, which no entry has).
    ///
    /// Answers serialise their timestamps with time's own `rfc3339::option`: formatting on the
    /// stack through `format_into` was tried and measured slower (`cargo xtask bench
    /// instructions`: 1 548 instructions for a hit's two timestamps, against 1 357).
    pub(crate) fn string(at: OffsetDateTime) -> String {
        at.format(&Rfc3339).unwrap_or_default()
    }
}
