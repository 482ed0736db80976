//! What a caller asks ([`Lookup`], [`PutOptions`]) and what it gets back ([`Hit`], [`Outcome`],
//! [`Stored`]).

use std::{borrow::Cow, time::Duration};

use resk_core::{CacheKey, Error, ErrorKind, Result, TenantId};
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use time::OffsetDateTime;

use crate::{context::Message, verify::Verification};

/// One question asked of the cache: who asks, what, and how a hit may be found.
///
/// The key of an entry is a keyed hash of the tenant, the normalised query, the language, the
/// model, the parameters and (for [`Lookup::private`] entries) the subject, so an answer is only
/// ever found by a lookup of the same tenant with equal fields. The other settings (threshold, k,
/// maximum age, stale, semantic on/off, force refresh) only change how it is found.
///
/// ```
/// use std::time::Duration;
/// use resk::{Lookup, TenantId};
///
/// # fn main() -> resk::Result<()> {
/// let lookup = Lookup::new(TenantId::new("acme")?, "How do I reset my password?")
///     .subject("user-42")
///     .language("en")
///     .model("gpt-4o-mini")
///     .threshold(0.85)
///     .max_age(Duration::from_secs(3600));
/// assert_eq!(lookup.query(), "How do I reset my password?");
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Lookup<'a> {
    pub(crate) tenant: TenantId,
    pub(crate) query: Cow<'a, str>,
    pub(crate) subject: Option<Cow<'a, str>>,
    pub(crate) private: bool,
    pub(crate) language: Option<Cow<'a, str>>,
    pub(crate) model: Option<Cow<'a, str>>,
    pub(crate) params: Option<Cow<'a, serde_json::Value>>,
    pub(crate) threshold: Option<f32>,
    pub(crate) k: Option<usize>,
    pub(crate) max_age: Option<Duration>,
    pub(crate) allow_stale: bool,
    pub(crate) semantic: bool,
    pub(crate) force_refresh: bool,
    pub(crate) seed: Option<Cow<'a, str>>,
    pub(crate) context: Option<Cow<'a, [Message]>>,
}

impl<'a> Lookup<'a> {
    /// `query` in `tenant`, shared by the tenant, semantic search on, stale answers allowed.
    pub fn new(tenant: TenantId, query: impl Into<Cow<'a, str>>) -> Self {
        Self {
            tenant,
            query: query.into(),
            subject: None,
            private: false,
            language: None,
            model: None,
            params: None,
            threshold: None,
            k: None,
            max_age: None,
            allow_stale: true,
            semantic: true,
            force_refresh: false,
            seed: None,
            context: None,
        }
    }

    /// Who asks: reads see the entries private to this subject, and writes record it as the writer
    /// (the subject a privacy export or erasure finds them by).
    #[must_use]
    pub fn subject(mut self, subject: impl Into<Cow<'a, str>>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// The entry is private to the subject: part of its key, readable by that subject only. Needs
    /// [`Lookup::subject`].
    #[must_use]
    pub fn private(mut self) -> Self {
        self.private = true;
        self
    }

    /// A BCP 47 language tag (`en`, `fr-CA`): answers in other languages are other entries.
    #[must_use]
    pub fn language(mut self, language: impl Into<Cow<'a, str>>) -> Self {
        self.language = Some(language.into());
        self
    }

    /// The LLM the answer came from: answers of other models are other entries.
    #[must_use]
    pub fn model(mut self, model: impl Into<Cow<'a, str>>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// Generation parameters (a JSON object: temperature, system prompt …) that change the answer:
    /// canonicalised (member order does not matter) and part of the key.
    #[must_use]
    pub fn params(mut self, params: serde_json::Value) -> Self {
        self.params = Some(Cow::Owned(params));
        self
    }

    /// [`Lookup::params`], borrowed.
    #[must_use]
    pub fn params_ref(mut self, params: &'a serde_json::Value) -> Self {
        self.params = Some(Cow::Borrowed(params));
        self
    }

    /// Lowest similarity a semantic hit may have (-1 to 1), instead of the cache's default.
    #[must_use]
    pub fn threshold(mut self, threshold: f32) -> Self {
        self.threshold = Some(threshold);
        self
    }

    /// Candidates a semantic lookup reads (1-100), instead of the cache's default.
    #[must_use]
    pub fn top_k(mut self, k: usize) -> Self {
        self.k = Some(k);
        self
    }

    /// Only answers written less than `max_age` ago (whole seconds, at least one).
    #[must_use]
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = Some(max_age);
        self
    }

    /// Whether an answer past its TTL but inside the grace period its writer gave it may be served
    /// (flagged [`Hit::stale`]). Default `true`.
    #[must_use]
    pub fn allow_stale(mut self, allow: bool) -> Self {
        self.allow_stale = allow;
        self
    }

    /// Whether an exact miss looks for a cached paraphrase (reads), and whether a write is indexed
    /// for semantic lookups. Default `true`; without semantic search configured it changes nothing.
    #[must_use]
    pub fn semantic(mut self, on: bool) -> Self {
        self.semantic = on;
        self
    }

    /// Skip the lookup: [`Cache::get`](crate::Cache::get) misses, and
    /// [`Cache::get_or_insert_with`](crate::Cache::get_or_insert_with) computes and stores afresh.
    #[must_use]
    pub fn force_refresh(mut self, force: bool) -> Self {
        self.force_refresh = force;
        self
    }

    /// The seed of the `deterministic` variant strategy (default: the subject), so one user keeps
    /// getting one variant.
    #[must_use]
    pub fn variant_seed(mut self, seed: impl Into<Cow<'a, str>>) -> Self {
        self.seed = Some(seed.into());
        self
    }

    /// The conversation before the query (oldest first). The part the cache's
    /// [`ContextPolicy`](crate::ContextPolicy) counts partitions the cache: the same query after
    /// other turns neither hits nor is hit by this one. Only the query is embedded.
    #[must_use]
    pub fn context(mut self, context: impl Into<Cow<'a, [Message]>>) -> Self {
        self.context = Some(context.into());
        self
    }

    /// A context given as one text (a conversation summary, a document id, …).
    #[must_use]
    pub fn context_text(self, text: impl Into<String>) -> Self {
        self.context(vec![Message::new("context", text)])
    }

    /// The tenant.
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// The query text.
    pub fn query(&self) -> &str {
        &self.query
    }

    /// The subject, if one was given.
    pub fn subject_id(&self) -> Option<&str> {
        self.subject.as_deref()
    }
}

/// How an entry is written.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct PutOptions {
    /// Time to live (whole seconds); default: the cache's default TTL. Longer than the cache's
    /// maximum is an error.
    pub ttl: Option<Duration>,
    /// Grace period after the TTL during which the answer is still served, flagged stale
    /// (stale-while-revalidate); default: the cache's. At most the maximum TTL.
    pub stale_ttl: Option<Duration>,
    /// Extra flat metadata stored with the entry's vector (keys `scope` and `expires_at` are
    /// reserved).
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// What wrote the entry (recorded in it; default `library`).
    pub origin: Option<Cow<'static, str>>,
}

impl PutOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// With a TTL.
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// With a grace period after the TTL.
    #[must_use]
    pub fn stale_ttl(mut self, grace: Duration) -> Self {
        self.stale_ttl = Some(grace);
        self
    }

    /// Recording `origin` as what wrote the entry.
    #[must_use]
    pub fn origin(mut self, origin: impl Into<Cow<'static, str>>) -> Self {
        self.origin = Some(origin.into());
        self
    }

    /// With vector metadata.
    #[must_use]
    pub fn metadata(mut self, metadata: serde_json::Map<String, serde_json::Value>) -> Self {
        self.metadata = metadata;
        self
    }
}

/// Where an answer came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Source {
    /// An exact hit, read from the store of this name (`memory`, `sqlite`, `redis`, or a custom
    /// store's [`BackendInfo::name`](resk_core::BackendInfo::name)); with a layer 1, `memory` when
    /// layer 1 answered.
    Store(&'static str),
    /// A cached paraphrase found by vector search ([`Hit::similarity`], [`Hit::matched_query`]).
    Semantic,
    /// Nothing was cached: the closure of
    /// [`Cache::get_or_insert_with`](crate::Cache::get_or_insert_with) ran (in this call or in a
    /// concurrent one this call waited for) and its answer was stored.
    Computed,
}

impl Source {
    /// A short lowercase name: the store's name, `semantic` or `computed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Store(name) => name,
            Source::Semantic => "semantic",
            Source::Computed => "computed",
        }
    }
}

/// Time spent per layer of one lookup.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Latency {
    /// Validating and computing the key.
    pub key: Duration,
    /// Reading the store (the exact entry, then semantic candidates).
    pub cache: Duration,
    /// Embedding the query.
    pub embed: Duration,
    /// Searching the vectors.
    pub vector: Duration,
    /// The whole lookup.
    pub total: Duration,
}

/// A cached answer.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Hit {
    /// The answer, exactly as written (for a variants answer, the variant served).
    pub answer: Box<RawValue>,
    /// Where it came from.
    pub source: Source,
    /// The key of the entry that answered (for a semantic hit, the matched entry's).
    pub key: CacheKey,
    /// Similarity of the matched query (semantic hits only).
    pub similarity: Option<f32>,
    /// The cached query that matched (semantic hits only).
    pub matched_query: Option<String>,
    /// Which variant of a variants answer was served (0-based).
    pub variant: Option<usize>,
    /// When the entry was written.
    pub created_at: OffsetDateTime,
    /// When the entry expires (its TTL; a stale answer is past it).
    pub expires_at: OffsetDateTime,
    /// Past its TTL, in the grace period its writer gave it: serve it, and refresh it.
    pub stale: bool,
    /// A layer failed on the way (the semantic layer, say) and was skipped.
    pub degraded: bool,
    /// Time per layer.
    pub latency: Latency,
    /// How a semantic hit was decided: by which verifier, and why (`None` for an exact hit).
    pub verification: Option<Verification>,
    /// The id to report this semantic hit right or wrong with
    /// ([`Cache::feedback`](crate::Cache::feedback)); `None` for an exact hit.
    pub hit_id: Option<String>,
}

impl Hit {
    /// The answer as JSON text.
    pub fn answer_json(&self) -> &str {
        self.answer.get()
    }

    /// The answer decoded as `T` (a `String` for a text answer, your own type for a structured
    /// one); a mismatch is an [`ErrorKind::InvalidInput`] error.
    pub fn answer_as<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_str(self.answer.get()).map_err(|e| {
            Error::new(
                ErrorKind::InvalidInput,
                "resk",
                "answer",
                format!("the cached answer is not of the type asked for: {e}"),
            )
        })
    }
}

/// No answer.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Miss {
    /// A layer failed (the store, the embedder, the vector store): the miss may be for that
    /// reason, not for lack of an entry.
    pub degraded: bool,
    /// Time per layer.
    pub latency: Latency,
    /// Semantic candidates that were found and turned down, best first, with why.
    pub rejected: Vec<Rejected>,
}

/// A semantic candidate the decision stage turned down.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Rejected {
    /// The candidate entry's key.
    pub key: CacheKey,
    /// Its similarity.
    pub similarity: f32,
    /// Who turned it down and why.
    pub verification: Verification,
}

/// The full result of [`Cache::lookup`](crate::Cache::lookup).
#[derive(Clone, Debug)]
pub enum Outcome {
    /// An answer was found.
    Hit(Hit),
    /// None was.
    Miss(Miss),
}

impl Outcome {
    /// The hit, if any.
    pub fn hit(self) -> Option<Hit> {
        match self {
            Outcome::Hit(hit) => Some(hit),
            Outcome::Miss(_) => None,
        }
    }
}

/// What a write stored.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Stored {
    /// The entry's key.
    pub key: CacheKey,
    /// The TTL applied (after jitter).
    pub ttl: Duration,
    /// When the entry expires.
    pub expires_at: OffsetDateTime,
    /// The end of its grace period, when it has one.
    pub stale_until: Option<OffsetDateTime>,
    /// Whether its query was indexed for semantic lookups.
    pub semantic_indexed: bool,
    /// Why indexing failed, when it did (the entry is stored for exact lookups anyway).
    pub semantic_error: Option<String>,
}
