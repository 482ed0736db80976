//! [`Cache`]: the read and write flow every entry point calls.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use resk_core::{
    CacheEntry, CacheEntryView, CacheKey, CacheStore, CachedValue, Error, ErrorKind, KeyBuilder,
    KeyInput, Origin, Pair, PurgeScope, Result, ScanCursor, SetOptions, SharedCacheStore, TenantId,
    TtlPolicy, Verdict,
};
use serde::Serialize;
use serde_json::value::RawValue;
use time::OffsetDateTime;
use tracing::Instrument as _;

use crate::{
    ContextPolicy, Hit, Latency, Lookup, Miss, Outcome, PutOptions, Source, Stored,
    flight::Flights,
    lookup::Rejected,
    negative::Remembered,
    privacy,
    semantic::{IndexItem, Semantic},
    stats::{Stats, backend_error, mark_degraded, semantic_error},
    variants::{self, Turns},
    verify::Verification,
};

/// Longest language tag accepted (BCP 47 allows 35 characters).
const MAX_LANGUAGE_LEN: usize = 35;
/// Longest model name accepted.
const MAX_MODEL_LEN: usize = 256;
/// Most candidates a semantic lookup may read.
const MAX_K: usize = 100;

/// An [`ErrorKind::InvalidInput`] error about `field` of a [`Lookup`] or [`PutOptions`]: the
/// error's `op` names the field, so a caller (the HTTP server, say) can tell which one.
pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidInput, "resk", field, message)
}

/// A result concurrent identical calls share.
type Shared<T> = std::result::Result<Arc<T>, Arc<Error>>;

fn unshare<T: Clone>(shared: Shared<T>) -> Result<T> {
    shared
        .map(|v| (*v).clone())
        .map_err(|e| Error::new(e.kind(), e.backend(), e.op(), e.message().to_owned()))
}

/// The cache: exact and semantic lookups over a store, within tenants.
///
/// Cheap to clone (an `Arc` inside); build one with [`Cache::builder`] and share it. Every
/// operation's errors are [`resk_core::Error`]s with an [`ErrorKind`]: `InvalidInput` for a bad
/// [`Lookup`] or answer (its `op` names the field), `Unavailable`/`Backend` for a store that
/// failed a write. A *read* never fails for a backend: a failing layer is skipped and the answer
/// says `degraded`.
///
/// ```
/// use std::sync::Arc;
/// use resk::{Cache, Lookup, PutOptions, TenantId, store::memory::MemoryStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> resk::Result<()> {
/// let cache = Cache::builder()
///     .store(MemoryStore::default())
///     .key_secret(b"a secret of at least thirty-two bytes!!")
///     .build()?;
/// let tenant = TenantId::new("acme")?;
/// let ask = Lookup::new(tenant, "What are your opening hours?");
/// assert!(cache.get(&ask).await?.is_none());
/// cache.put(&ask, "9 to 5, Monday to Friday", &PutOptions::new()).await?;
/// let hit = cache.get(&ask).await?.expect("a hit");
/// assert_eq!(hit.answer_as::<String>()?, "9 to 5, Monday to Friday");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Cache {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("store", &self.inner.store.info().name)
            .field("semantic", &self.inner.semantic.is_some())
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub(crate) store: SharedCacheStore,
    /// The store under layer 1 and encryption, when the builder assembled the stack.
    #[cfg_attr(not(feature = "encryption"), allow(dead_code))]
    pub(crate) raw: Option<SharedCacheStore>,
    #[cfg(feature = "encryption")]
    pub(crate) cipher: Option<resk_core::SharedCipher>,
    pub(crate) keys: KeyBuilder,
    pub(crate) ttl: TtlPolicy,
    pub(crate) jitter_percent: u8,
    pub(crate) grace: Duration,
    pub(crate) max_query_chars: usize,
    pub(crate) context_policy: ContextPolicy,
    pub(crate) log_query_text: bool,
    pub(crate) semantic: Option<Arc<Semantic>>,
    pub(crate) turns: Turns,
    pub(crate) stats: Stats,
    /// Per-tenant figures of the last hour and last semantic decisions (the console's data).
    pub(crate) activity: crate::activity::Activity,
    pub(crate) computing: Flights<Shared<Hit>>,
}

/// `ttl` shortened by a random share of up to `percent` %, so entries written together do not all
/// expire together: never longer than asked (nor than the maximum), never below one second unless
/// asked.
fn jittered(ttl: Duration, percent: u8) -> Duration {
    if percent == 0 {
        return ttl;
    }
    let cut = ttl.mul_f64(f64::from(percent.min(50)) / 100.0 * fastrand::f64());
    ttl.saturating_sub(cut).max(Duration::from_secs(1).min(ttl))
}

impl Cache {
    /// A builder; see [`CacheBuilder`](crate::CacheBuilder).
    pub fn builder() -> crate::CacheBuilder {
        crate::CacheBuilder::default()
    }

    /// A handle that does not keep the cache alive (for background tasks that should end with it).
    pub fn downgrade(&self) -> WeakCache {
        WeakCache(Arc::downgrade(&self.inner))
    }

    /// The store stack (layers included): for data of your own under reserved tenants.
    pub fn store(&self) -> &SharedCacheStore {
        &self.inner.store
    }

    /// The key builder (keys, scopes and pseudonyms are keyed hashes under its secret).
    pub fn keys(&self) -> &KeyBuilder {
        &self.inner.keys
    }

    /// The TTL policy.
    pub fn ttl_policy(&self) -> &TtlPolicy {
        &self.inner.ttl
    }

    /// The semantic layer, when configured.
    pub fn semantic(&self) -> Option<&Arc<Semantic>> {
        self.inner.semantic.as_ref()
    }

    /// Whether the store answers.
    pub async fn ping(&self) -> Result<()> {
        self.inner.store.ping().await
    }

    /// The fields of `lookup` that make its key, validated.
    fn input<'l>(&self, lookup: &'l Lookup<'_>) -> Result<KeyInput<'l>> {
        let query = lookup.query.as_ref();
        if query.trim().is_empty() {
            return Err(invalid("query", "query must not be empty"));
        }
        let chars = query.chars().count();
        if chars > self.inner.max_query_chars {
            return Err(invalid(
                "query",
                format!(
                    "query is {chars} characters; the maximum is {}",
                    self.inner.max_query_chars
                ),
            ));
        }
        if let Some(lang) = lookup.language.as_deref() {
            let ok = !lang.is_empty()
                && lang.len() <= MAX_LANGUAGE_LEN
                && lang.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
            if !ok {
                return Err(invalid(
                    "language",
                    "language must be a BCP 47 tag such as `en` or `fr-CA`",
                ));
            }
        }
        if let Some(m) = lookup.model.as_deref()
            && (m.trim().is_empty() || m.chars().count() > MAX_MODEL_LEN)
        {
            return Err(invalid(
                "model",
                format!("model must be 1-{MAX_MODEL_LEN} characters, not blank"),
            ));
        }
        if let Some(params) = lookup.params.as_deref()
            && !params.is_object()
        {
            return Err(invalid("params", "params must be a JSON object"));
        }
        let owner = if lookup.private {
            match lookup.subject.as_deref() {
                Some(subject) if !subject.is_empty() => Some(subject),
                _ => {
                    return Err(invalid(
                        "subject",
                        "a private entry needs the subject it is private to",
                    ));
                }
            }
        } else {
            None
        };
        let context = match lookup.context.as_deref() {
            Some(context) => self
                .inner
                .context_policy
                .digest(context, self.max_context_chars())?,
            None => None,
        };
        Ok(KeyInput {
            query,
            language: lookup.language.as_deref(),
            model: lookup.model.as_deref(),
            params: lookup.params.as_deref(),
            owner,
            context,
        })
    }

    /// Longest context accepted, in characters: 64 queries' worth.
    fn max_context_chars(&self) -> usize {
        self.inner.max_query_chars.saturating_mul(64)
    }

    /// The key of `lookup`'s entry (validating it).
    pub fn key(&self, lookup: &Lookup<'_>) -> Result<CacheKey> {
        let input = self.input(lookup)?;
        Ok(self.inner.keys.key(&lookup.tenant, &input))
    }

    fn log_query(&self, op: &'static str, query: &str, outcome: &str) {
        if !tracing::enabled!(tracing::Level::DEBUG) {
            return;
        }
        let hash = self.inner.keys.pseudonym("log", query);
        if self.inner.log_query_text {
            tracing::debug!(op, query_hash = %hash, query, outcome, "cache request");
        } else {
            tracing::debug!(op, query_hash = %hash, outcome, "cache request");
        }
    }

    /// The span of a store call (layer-1 and layer-2 spans of a tiered store nest in it).
    fn span(&self, op: &'static str) -> tracing::Span {
        tracing::debug_span!("cache", backend = self.inner.store.info().name, op)
    }

    fn backend_error(&self, op: &'static str, err: &Error) {
        backend_error(self.inner.store.info().name, op, err);
    }

    /// Count a failed walk of a tenant as a backend error, unless the caller's cursor was bad.
    fn walk_failed(&self, err: &Error) {
        if err.kind() != ErrorKind::InvalidInput {
            self.backend_error("scan", err);
        }
    }

    fn parse<'v>(&self, value: &'v CachedValue) -> Option<CacheEntryView<'v>> {
        match CacheEntryView::parse(&value.bytes) {
            Ok(entry) => Some(entry),
            Err(err) => {
                self.backend_error("decode", &err);
                None
            }
        }
    }

    /// The answer to `lookup`, if one is cached: the exact entry, or on an exact miss (and with
    /// semantic search configured) the best live paraphrase above the threshold.
    pub async fn get(&self, lookup: &Lookup<'_>) -> Result<Option<Hit>> {
        Ok(self.lookup(lookup).await?.hit())
    }

    /// Like [`Cache::get`], and on a miss also whether a layer failed and the time per layer.
    pub async fn lookup(&self, lookup: &Lookup<'_>) -> Result<Outcome> {
        let activity = &self.inner.activity;
        match self.lookup_inner(lookup).await {
            Ok((outcome, tokens_saved)) => {
                let query_hash = || self.inner.keys.pseudonym("log", &lookup.query);
                let asked = crate::activity::Asked {
                    query_hash: &query_hash,
                    query: self.inner.log_query_text.then_some(&*lookup.query),
                    tokens_saved,
                };
                activity.lookup(&lookup.tenant, &outcome, &asked);
                Ok(outcome)
            }
            Err(e) => {
                if e.kind() != ErrorKind::InvalidInput {
                    activity.error(&lookup.tenant);
                }
                Err(e)
            }
        }
    }

    /// The lookup, and the LLM tokens its hit counted as saved in `resk_tokens_saved_total` (the
    /// activity records the same figure).
    async fn lookup_inner(&self, lookup: &Lookup<'_>) -> Result<(Outcome, u64)> {
        let start = Instant::now();
        if lookup.max_age.is_some_and(|d| d.as_secs() == 0) {
            return Err(invalid("max_age", "max_age must be at least 1 second"));
        }
        let input = self.input(lookup)?;
        if lookup
            .threshold
            .is_some_and(|t| !(t.is_finite() && (-1.0..=1.0).contains(&t)))
        {
            return Err(invalid(
                "threshold",
                "threshold must be a number between -1 and 1",
            ));
        }
        if lookup.k.is_some_and(|k| !(1..=MAX_K).contains(&k)) {
            return Err(invalid("k", format!("k must be 1-{MAX_K}")));
        }
        let inner = &*self.inner;
        let key = inner.keys.key(&lookup.tenant, &input);
        let mut latency = Latency {
            key: start.elapsed(),
            ..Latency::default()
        };
        inner.stats.key_seconds.record(latency.key.as_secs_f64());

        let mut degraded = false;
        let found = if lookup.force_refresh {
            None
        } else {
            let cache_start = Instant::now();
            let read = inner.store.get(&key).instrument(self.span("get")).await;
            latency.cache = cache_start.elapsed();
            inner
                .stats
                .cache_seconds
                .record(latency.cache.as_secs_f64());
            match read {
                Ok(found) => found,
                Err(err) => {
                    // A read never fails the lookup: the caller regenerates, as on a miss.
                    self.backend_error("get", &err);
                    degraded = mark_degraded("cache");
                    None
                }
            }
        };

        let now = OffsetDateTime::now_utc();
        let usable = Usable {
            tenant: &lookup.tenant,
            subject: lookup.subject.as_deref(),
            now,
            allow_stale: lookup.allow_stale,
            max_age: lookup.max_age,
            retention: inner.ttl.max_ttl(),
        };
        let exact = found
            .as_ref()
            .and_then(|value| self.parse(value))
            .filter(|e| usable.check(e));

        // Exact miss: look for a cached paraphrase.
        let (matched, rejected) = if exact.is_none()
            && !lookup.force_refresh
            && lookup.semantic
            && let Some(sem) = &inner.semantic
        {
            let search = SemanticSearch {
                cache: self,
                sem,
                lookup,
                input: &input,
                key: &key,
                usable: &usable,
            };
            // Boxed: the search holds the embedder's, the vector store's and the verifiers'
            // futures, which an exact hit's future would otherwise carry (and copy) too.
            Box::pin(search.run(&mut latency, &mut degraded)).await
        } else {
            (None, Vec::new())
        };
        let semantic_entry = matched.as_ref().and_then(|m| self.parse(&m.value));

        let (entry, source, hit_key, similarity, verification) =
            match (exact, semantic_entry, &matched) {
                (Some(entry), _, _) => (
                    entry,
                    Source::Store(found.as_ref().map_or("", |v| v.source)),
                    &key,
                    None,
                    None,
                ),
                (None, Some(entry), Some(m)) => (
                    entry,
                    Source::Semantic,
                    &m.key,
                    Some(m.similarity),
                    Some(m.verification.clone()),
                ),
                _ => {
                    inner.stats.misses.increment(1);
                    self.log_query("query", &lookup.query, "miss");
                    latency.total = start.elapsed();
                    let miss = Miss {
                        degraded,
                        latency,
                        rejected,
                    };
                    return Ok((Outcome::Miss(miss), 0));
                }
            };
        // Past its TTL, in the grace period its writer gave it.
        let stale = now >= entry.expires_at;
        let tokens_saved = inner
            .stats
            .hit(source, entry.query.len() + entry.response.get().len());
        if stale {
            inner.stats.stale.increment(1);
        }
        if let Some(similarity) = similarity {
            inner.stats.similarity.record(f64::from(similarity));
        }
        self.log_query(
            "query",
            &lookup.query,
            if similarity.is_some() {
                "semantic hit"
            } else {
                "hit"
            },
        );
        let seed = lookup
            .seed
            .as_deref()
            .or(lookup.subject.as_deref())
            .unwrap_or_default();
        let variant = variants::pick(
            entry.response,
            &lookup.tenant,
            hit_key.name(),
            seed,
            &inner.turns,
        )
        .await;
        latency.total = start.elapsed();
        let hit = Hit {
            answer: variant.map_or(entry.response, |(_, v)| v).to_owned(),
            source,
            key: hit_key.clone(),
            similarity,
            matched_query: similarity.map(|_| entry.query.into_owned()),
            variant: variant.map(|(i, _)| i),
            created_at: entry.created_at,
            expires_at: entry.expires_at,
            stale,
            degraded,
            latency,
            hit_id: similarity.map(|s| crate::feedback::hit_id(&inner.keys, hit_key, &key, s)),
            verification,
        };
        Ok((Outcome::Hit(hit), tokens_saved))
    }

    /// Store `answer` (any `Serialize`: a string, a JSON value, your own type) as the answer to
    /// `lookup`, and index its query for semantic lookups (unless the lookup turns semantic off).
    ///
    /// The entry is written before it is indexed: a failure to index leaves it stored for exact
    /// lookups and is reported in [`Stored::semantic_error`], not as an error.
    pub async fn put<T: Serialize + ?Sized>(
        &self,
        lookup: &Lookup<'_>,
        answer: &T,
        options: &PutOptions,
    ) -> Result<Stored> {
        let raw = serde_json::value::to_raw_value(answer)
            .map_err(|e| invalid("response", format!("response is not serialisable: {e}")))?;
        self.put_raw(lookup, raw, options).await
    }

    async fn put_raw(
        &self,
        lookup: &Lookup<'_>,
        raw: Box<RawValue>,
        options: &PutOptions,
    ) -> Result<Stored> {
        let prepared = self.prepare(lookup, raw, options)?;
        self.write(&prepared)
            .await
            .inspect_err(|_| self.inner.activity.error(&lookup.tenant))?;
        let indexed = self.index(&lookup.tenant, &[&prepared]).await;
        Ok(prepared.stored(indexed))
    }

    /// Store many answers at once (a corpus): all are validated first (the first bad one is the
    /// error, and nothing is written), their queries are embedded in one batch and indexed, then
    /// the entries are written. Vectors go first, so an interrupted run leaves entries missing,
    /// never unindexed entries: running it again redoes what is missing.
    pub async fn put_many<T: Serialize>(
        &self,
        items: &[(Lookup<'_>, T, PutOptions)],
    ) -> Result<Vec<Stored>> {
        let prepared = items
            .iter()
            .map(|(lookup, answer, options)| {
                let raw = serde_json::value::to_raw_value(answer).map_err(|e| {
                    invalid("response", format!("response is not serialisable: {e}"))
                })?;
                self.prepare(lookup, raw, options)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut tenants: Vec<&TenantId> = prepared.iter().map(|p| p.key.tenant()).collect();
        tenants.sort();
        tenants.dedup();
        for tenant in tenants {
            let batch: Vec<&Prepared> = prepared
                .iter()
                .filter(|p| p.key.tenant() == tenant)
                .collect();
            if let Err(err) = self.index(tenant, &batch).await {
                // A batch that cannot be indexed is not written: rerun to resume.
                return Err(Error::new(
                    err.kind(),
                    "resk",
                    "index",
                    format!("vectors not written, so neither were the entries: {err}"),
                ));
            }
        }
        // Every batch was indexed: an entry's query is in the index exactly when it has a scope.
        let mut stored = Vec::with_capacity(prepared.len());
        for p in prepared {
            self.write(&p).await?;
            let indexed = p.scope.is_some();
            stored.push(p.stored(Ok(indexed)));
        }
        Ok(stored)
    }

    /// Validate a write and build its entry.
    fn prepare(
        &self,
        lookup: &Lookup<'_>,
        raw: Box<RawValue>,
        options: &PutOptions,
    ) -> Result<Prepared> {
        let inner = &*self.inner;
        let input = self.input(lookup)?;
        if raw.get() == "null" {
            return Err(invalid("response", "response must not be null"));
        }
        variants::validate(&raw)?;
        let ttl = inner
            .ttl
            .resolve(options.ttl.map(|d| d.as_secs()))
            .map_err(|e| invalid("ttl", e.message().to_owned()))?;
        let ttl = jittered(ttl, inner.jitter_percent);
        let grace = options.stale_ttl.unwrap_or(inner.grace);
        if grace.as_secs() > inner.ttl.max_ttl().as_secs() {
            return Err(invalid(
                "stale_ttl",
                format!(
                    "stale_ttl must be at most the maximum TTL ({} seconds)",
                    inner.ttl.max_ttl().as_secs()
                ),
            ));
        }
        let grace = Duration::from_secs(grace.as_secs());
        let key = inner.keys.key(&lookup.tenant, &input);
        let mut entry = CacheEntry::new(
            lookup.tenant.clone(),
            lookup.query.to_string(),
            raw,
            ttl,
            Origin {
                source: options.origin.as_deref().unwrap_or("library").to_owned(),
                subject: lookup.subject.as_deref().map(str::to_owned),
            },
        )?;
        entry.owner = input.owner.map(str::to_owned);
        entry.set_grace(grace)?;
        let bytes = Bytes::from(entry.to_bytes()?);
        let scope = inner
            .semantic
            .as_ref()
            .filter(|_| lookup.semantic)
            .map(|sem| sem.scope(&inner.keys, &lookup.tenant, &input));
        Ok(Prepared {
            key,
            entry,
            bytes,
            ttl,
            grace,
            scope,
            metadata: options.metadata.clone(),
        })
    }

    /// Write a prepared entry (the store keeps it through its grace period).
    async fn write(&self, p: &Prepared) -> Result<()> {
        self.inner
            .store
            .set(
                &p.key,
                p.bytes.clone(),
                resk_core::SetOptions::ttl(p.ttl + p.grace),
            )
            .instrument(self.span("set"))
            .await
            .inspect_err(|e| self.backend_error("set", e))?;
        self.inner.stats.writes.increment(1);
        self.log_query("write", &p.entry.query, "stored");
        Ok(())
    }

    /// Index the queries of `prepared` (of `tenant`) that have a scope, in one embedding call:
    /// whether any was indexed, or why they were not (logged and counted).
    async fn index(&self, tenant: &TenantId, prepared: &[&Prepared]) -> Result<bool> {
        let Some(sem) = &self.inner.semantic else {
            return Ok(false);
        };
        let items: Vec<IndexItem> = prepared
            .iter()
            .filter_map(|p| {
                p.scope.as_ref().map(|scope| IndexItem {
                    key: p.key.clone(),
                    query: p.entry.query.clone(),
                    scope: scope.clone(),
                    expires_at: p.entry.servable_until(),
                    metadata: p.metadata.clone(),
                })
            })
            .collect();
        if items.is_empty() {
            return Ok(false);
        }
        match sem.index(tenant, &items).await {
            Ok(()) => {
                if let Some(negative) = sem.negative() {
                    negative.tenant_changed(tenant.as_str());
                }
                Ok(true)
            }
            Err(err) => {
                semantic_error("index", &err);
                Err(err)
            }
        }
    }

    /// The cached answer to `lookup`, or the answer `init` computes, stored with `options`.
    ///
    /// Concurrent calls with equal lookups share one computation: `init` runs once, the other
    /// callers wait for it and get its answer (a leader cancelled meanwhile hands over: the next
    /// waiter runs its own `init`). An error of `init` is every waiter's error and nothing is
    /// stored. A store that fails the write does not lose the answer: it is returned, flagged
    /// [`Hit::degraded`].
    ///
    /// ```
    /// use resk::{Cache, Lookup, PutOptions, Source, TenantId, store::memory::MemoryStore};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> resk::Result<()> {
    /// let cache = Cache::builder()
    ///     .store(MemoryStore::default())
    ///     .key_secret(b"a secret of at least thirty-two bytes!!")
    ///     .build()?;
    /// let ask = Lookup::new(TenantId::new("acme")?, "Capital of France?");
    /// let first = cache
    ///     .get_or_insert_with(&ask, &PutOptions::new(), || async { Ok("Paris") })
    ///     .await?;
    /// assert_eq!(first.source, Source::Computed);
    /// let again = cache
    ///     .get_or_insert_with(&ask, &PutOptions::new(), || async { Ok("never called") })
    ///     .await?;
    /// assert_eq!(again.answer_as::<String>()?, "Paris");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_or_insert_with<T, F, Fut>(
        &self,
        lookup: &Lookup<'_>,
        options: &PutOptions,
        init: F,
    ) -> Result<Hit>
    where
        T: Serialize,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let key = self.key(lookup)?;
        // Everything the outcome depends on: the key, who asks, and how a hit may be found.
        let flight = format!(
            "{}\u{0}{}\u{0}{:?}\u{0}{:?}\u{0}{:?}\u{0}{:?}\u{0}{}\u{0}{}\u{0}{}",
            lookup.tenant,
            key.name(),
            lookup.subject,
            lookup.threshold.map(f32::to_bits),
            lookup.k,
            lookup.max_age,
            lookup.allow_stale,
            lookup.semantic,
            lookup.force_refresh,
        );
        let call = async {
            let computed: Result<Hit> = async {
                let start = Instant::now();
                let mut degraded = false;
                if !lookup.force_refresh {
                    match self.lookup(lookup).await? {
                        Outcome::Hit(hit) => return Ok(hit),
                        Outcome::Miss(miss) => degraded = miss.degraded,
                    }
                }
                let answer = init().await?;
                let raw = serde_json::value::to_raw_value(&answer).map_err(|e| {
                    invalid("response", format!("response is not serialisable: {e}"))
                })?;
                let (stored, degraded) = match self.put_raw(lookup, raw.clone(), options).await {
                    Ok(stored) => (Some(stored), degraded),
                    Err(err) if err.kind() == ErrorKind::InvalidInput => return Err(err),
                    // Logged and counted by the write; the answer is not lost.
                    Err(_) => (None, mark_degraded("cache")),
                };
                let now = OffsetDateTime::now_utc();
                Ok(Hit {
                    answer: raw,
                    source: Source::Computed,
                    similarity: None,
                    matched_query: None,
                    variant: None,
                    created_at: now,
                    expires_at: stored.as_ref().map_or(now, |s| s.expires_at),
                    key: stored.map_or_else(|| key.clone(), |s| s.key),
                    stale: false,
                    degraded,
                    latency: Latency {
                        total: start.elapsed(),
                        ..Latency::default()
                    },
                    verification: None,
                    hit_id: None,
                })
            }
            .await;
            computed.map(Arc::new).map_err(Arc::new)
        };
        unshare(self.inner.computing.run(flight, call).await.0)
    }

    /// Delete the entry `key` (and its vector). An entry private to another subject than
    /// `subject` is left alone and reported as absent, like a missing one. Whether it existed.
    pub async fn delete(&self, key: &CacheKey, subject: Option<&str>) -> Result<bool> {
        let inner = &*self.inner;
        let found = inner
            .store
            .get(key)
            .await
            .inspect_err(|e| self.backend_error("get", e))?;
        if let Some(value) = &found
            && let Ok(view) = CacheEntryView::parse(&value.bytes)
            && !readable_by(&view, subject)
        {
            return Ok(false);
        }
        self.remove(key).await
    }

    /// Delete the entry `key` (and its vector) whoever it is private to: a tenant
    /// administrator's delete. Whether it existed.
    pub async fn remove(&self, key: &CacheKey) -> Result<bool> {
        let inner = &*self.inner;
        let deleted = inner
            .store
            .delete(key)
            .await
            .inspect_err(|e| self.backend_error("delete", e))?;
        if let Some(sem) = &inner.semantic
            && let Err(err) = sem.delete(key.tenant(), &[key.name().to_owned()]).await
        {
            semantic_error("delete", &err);
        }
        Ok(deleted)
    }

    /// Delete every entry of `tenant` and its vectors; how many entries were deleted.
    pub async fn purge(&self, tenant: &TenantId) -> Result<u64> {
        let inner = &*self.inner;
        let purged = inner
            .store
            .purge(&PurgeScope::Tenant(tenant.clone()))
            .await
            .inspect_err(|e| self.backend_error("purge", e))?;
        metrics::counter!("resk_cache_purged_entries_total").increment(purged);
        if let Some(sem) = &inner.semantic
            && let Err(err) = sem.purge(tenant).await
        {
            // Left-over vectors only point at purged entries, which lookups skip.
            semantic_error("purge", &err);
        }
        Ok(purged)
    }

    /// The entries `subject` wrote or owns in `tenant` (GDPR articles 15 and 20), from `cursor`
    /// on: at most [`privacy::EXPORT_BUDGET`] entries of the tenant are read per call, and
    /// [`Export::next`] goes on. A cursor the store cannot read is an `InvalidInput` error.
    pub async fn export_subject(
        &self,
        tenant: &TenantId,
        subject: &str,
        cursor: Option<ScanCursor>,
    ) -> Result<Export> {
        let (entries, next) = privacy::export(
            &self.inner.store,
            tenant,
            subject,
            cursor,
            privacy::EXPORT_BUDGET,
        )
        .await
        .inspect_err(|e| self.walk_failed(e))?;
        Ok(Export { entries, next })
    }

    /// A page of `tenant`'s entries (decrypted, as a read would see them) that pass `filter`,
    /// walking at most [`privacy::EXPORT_BUDGET`] entries from `cursor` in pages of `limit`
    /// (1-500): the console's entry list. The answer may hold fewer than `limit` entries, or a few
    /// more (a page read is kept whole), with a `next` to go on from; `next: None` ends the walk.
    pub async fn entries(
        &self,
        tenant: &TenantId,
        filter: &EntryFilter,
        cursor: Option<ScanCursor>,
        limit: usize,
    ) -> Result<EntriesPage> {
        let limit = limit.clamp(1, 500);
        let mut entries = Vec::new();
        let next = privacy::walk_pages(
            &self.inner.store,
            &PurgeScope::Tenant(tenant.clone()),
            cursor,
            privacy::EXPORT_BUDGET,
            limit,
            |key, entry, size| {
                if entry.tenant == *tenant && filter.matches(&key, &entry) {
                    entries.push(EntryInfo { key, entry, size });
                }
                entries.len() < limit
            },
        )
        .await
        .inspect_err(|e| self.walk_failed(e))?;
        // Redis's SCAN may name a key twice.
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        entries.dedup_by(|a, b| a.key == b.key);
        Ok(EntriesPage { entries, next })
    }

    /// `tenant`'s figures over the last hour on this instance (see [`crate::activity`]).
    pub fn activity(&self, tenant: &TenantId) -> crate::activity::Report {
        self.inner.activity.report(tenant)
    }

    /// `tenant`'s last `limit` semantic decisions on this instance, newest first (see
    /// [`crate::activity`]).
    pub fn decisions(&self, tenant: &TenantId, limit: usize) -> Vec<crate::activity::Decision> {
        self.inner.activity.decisions(tenant, limit)
    }

    /// Count dollars a hit of `tenant` saved (the gateway's priced savings) in its activity.
    #[cfg(feature = "gateway")]
    pub(crate) fn record_saving(&self, tenant: &TenantId, usd: f64) {
        self.inner.activity.saved(tenant, usd);
    }

    /// Delete every entry `subject` wrote or owns in `tenant`, with their vectors (GDPR article
    /// 17): the whole tenant is walked once.
    pub async fn erase_subject(&self, tenant: &TenantId, subject: &str) -> Result<Erased> {
        let keys = privacy::subject_keys(&self.inner.store, tenant, subject)
            .await
            .inspect_err(|e| self.backend_error("scan", e))?;
        let erased = privacy::delete_all(
            &self.inner.store,
            self.inner.semantic.as_deref(),
            tenant,
            &keys,
        )
        .await
        .inspect_err(|e| self.backend_error("delete", e))?;
        Ok(Erased { keys, erased })
    }

    /// Delete every entry older than the maximum TTL (written before it was lowered; such
    /// entries are never served anyway) in every tenant `keep` does not exempt; how many.
    pub async fn sweep_retention(
        &self,
        keep: &(dyn Fn(&TenantId) -> bool + Send + Sync),
    ) -> Result<u64> {
        privacy::sweep_retention(
            &self.inner.store,
            self.inner.semantic.as_deref(),
            self.inner.ttl.max_ttl(),
            keep,
        )
        .await
    }

    /// Record whether the semantic hit `hit_id` (from [`Hit::hit_id`]) answered its question
    /// rightly, with the matched entry (see [`crate::feedback`]): a wrong report stops that
    /// question→entry pairing at once and raises the entry's floor; right reports can lower its
    /// accept bound within the target error rate. An id not signed for `tenant` (another tenant's,
    /// a forged one) or whose entry is gone is an [`ErrorKind::NotFound`] error, and nothing changes.
    pub async fn feedback(
        &self,
        tenant: &TenantId,
        hit_id: &str,
        correct: bool,
    ) -> Result<crate::feedback::Recorded> {
        let inner = &*self.inner;
        let not_found =
            |message: &str| Error::new(ErrorKind::NotFound, "resk", "feedback", message);
        let hit = crate::feedback::parse_hit_id(&inner.keys, tenant, hit_id)
            .ok_or_else(|| not_found("no such semantic hit in this tenant"))?;
        let value = inner
            .store
            .get(&hit.entry)
            .instrument(self.span("get"))
            .await?
            .ok_or_else(|| {
                not_found("the entry of this hit is gone (expired, deleted or purged)")
            })?;
        let mut entry = CacheEntry::from_bytes(&value.bytes)?;
        let now = OffsetDateTime::now_utc();
        let left = entry.servable_until() - now;
        let ttl = Duration::try_from(left)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                not_found("the entry of this hit is gone (expired, deleted or purged)")
            })?;
        let feedback = entry.feedback.get_or_insert_with(Default::default);
        crate::feedback::record(feedback, &hit.query, hit.similarity, correct);
        let target = inner.semantic.as_ref().map_or(0.05, |s| s.target_error());
        let bounds = crate::feedback::bounds(feedback, target);
        let (right, wrong) = (feedback.right, feedback.wrong);
        inner
            .store
            .set(
                &hit.entry,
                Bytes::from(entry.to_bytes()?),
                SetOptions::ttl(ttl),
            )
            .instrument(self.span("set"))
            .await?;
        inner.stats.feedback(correct);
        inner.activity.reported(
            tenant,
            hit_id,
            crate::activity::Reported {
                correct,
                floor: bounds.floor,
                accept: bounds.accept,
                right,
                wrong,
            },
        );
        Ok(crate::feedback::Recorded {
            key: hit.entry,
            similarity: hit.similarity,
            right,
            wrong,
            bounds,
        })
    }

    /// Choose the similarity threshold from labelled pairs with the configured embedder: the
    /// lowest threshold whose precision on `pairs` reaches `target_precision`. Needs semantic
    /// search (a `Config` error otherwise).
    pub async fn calibrate(
        &self,
        pairs: &[crate::calibrate::Pair],
        target_precision: f64,
    ) -> Result<crate::calibrate::Calibration> {
        let Some(sem) = &self.inner.semantic else {
            return Err(Error::new(
                ErrorKind::Config,
                "resk",
                "calibrate",
                "calibration needs semantic search: give the builder a Semantic layer",
            ));
        };
        crate::calibrate::calibrate(sem.embedder(), pairs, target_precision).await
    }

    /// Re-seal every stored value under the current encryption key, so a retired key can be
    /// dropped (see [`crate::reencrypt`]). Needs a cache built with an encryption key over a
    /// store given to the builder (a `Config` error otherwise).
    #[cfg(feature = "encryption")]
    pub async fn reencrypt(&self) -> Result<crate::reencrypt::ReencryptReport> {
        match (&self.inner.raw, &self.inner.cipher) {
            (Some(raw), Some(cipher)) => crate::reencrypt::reencrypt(raw, cipher).await,
            _ => Err(Error::new(
                ErrorKind::Config,
                "resk",
                "reencrypt",
                "re-encryption needs a cache built with an encryption key",
            )),
        }
    }
}

/// A [`Cache`] that is not kept alive by this handle: [`WeakCache::upgrade`] gives it back while
/// another handle holds it.
#[derive(Clone)]
pub struct WeakCache(std::sync::Weak<Inner>);

impl std::fmt::Debug for WeakCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeakCache")
            .field("alive", &(self.0.strong_count() > 0))
            .finish()
    }
}

impl WeakCache {
    /// The cache, unless every [`Cache`] handle was dropped.
    pub fn upgrade(&self) -> Option<Cache> {
        self.0.upgrade().map(|inner| Cache { inner })
    }
}

/// A validated write.
struct Prepared {
    key: CacheKey,
    entry: CacheEntry,
    bytes: Bytes,
    ttl: Duration,
    grace: Duration,
    /// The semantic scope, when the query is to be indexed.
    scope: Option<String>,
    metadata: serde_json::Map<String, serde_json::Value>,
}

impl Prepared {
    fn stored(self, indexed: Result<bool>) -> Stored {
        let (semantic_indexed, semantic_error) = match indexed {
            Ok(indexed) => (indexed, None),
            Err(err) => (
                false,
                Some(format!(
                    "the entry is stored for exact lookups, but semantic indexing failed: {}",
                    err.message()
                )),
            ),
        };
        Stored {
            key: self.key,
            ttl: self.ttl,
            expires_at: self.entry.expires_at,
            stale_until: self.entry.stale_until,
            semantic_indexed,
            semantic_error,
        }
    }
}

/// What [`Cache::export_subject`] found.
#[derive(Debug)]
#[non_exhaustive]
pub struct Export {
    /// The subject's entries among those read, each once, in key order.
    pub entries: Vec<(CacheKey, CacheEntry)>,
    /// Where the walk goes on; `None`: it is over.
    pub next: Option<ScanCursor>,
}

/// Which entries [`Cache::entries`] lists: all of them by default.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct EntryFilter {
    /// Keys starting with this.
    pub key_prefix: Option<String>,
    /// Entries written by, or private to, this subject.
    pub subject: Option<String>,
    /// Entries whose query contains this text (ASCII case-insensitive).
    pub query_contains: Option<String>,
    /// Whether an entry passing any one of the set conditions passes (a search box), rather than
    /// every one of them.
    pub any: bool,
}

impl EntryFilter {
    fn matches(&self, key: &CacheKey, entry: &CacheEntry) -> bool {
        let tests = [
            self.key_prefix
                .as_deref()
                .map(|p| key.name().starts_with(p)),
            self.subject
                .as_deref()
                .map(|s| privacy::belongs_to(entry, s)),
            self.query_contains.as_deref().map(|q| {
                entry
                    .query
                    .to_ascii_lowercase()
                    .contains(&q.to_ascii_lowercase())
            }),
        ];
        let mut set = tests.into_iter().flatten().peekable();
        if set.peek().is_none() {
            return true;
        }
        if self.any {
            set.any(|t| t)
        } else {
            set.all(|t| t)
        }
    }
}

/// One entry of [`Cache::entries`].
#[derive(Debug)]
#[non_exhaustive]
pub struct EntryInfo {
    /// Its key.
    pub key: CacheKey,
    /// The entry, decrypted.
    pub entry: CacheEntry,
    /// Bytes the store holds for it (sealed, when encryption is on).
    pub size: usize,
}

/// What [`Cache::entries`] found.
#[derive(Debug)]
#[non_exhaustive]
pub struct EntriesPage {
    /// The entries that passed the filter, in key order.
    pub entries: Vec<EntryInfo>,
    /// Where the walk goes on; `None`: it is over.
    pub next: Option<ScanCursor>,
}

/// What [`Cache::erase_subject`] did.
#[derive(Debug)]
#[non_exhaustive]
pub struct Erased {
    /// The keys of the subject's entries.
    pub keys: Vec<CacheKey>,
    /// How many of them existed when deleted.
    pub erased: u64,
}

fn readable_by(entry: &CacheEntryView<'_>, subject: Option<&str>) -> bool {
    match (&entry.owner, subject) {
        (None, _) => true,
        (Some(owner), Some(subject)) => owner == subject,
        (Some(_), None) => false,
    }
}

/// Whether an entry may answer a lookup.
struct Usable<'a> {
    tenant: &'a TenantId,
    subject: Option<&'a str>,
    now: OffsetDateTime,
    allow_stale: bool,
    max_age: Option<Duration>,
    retention: Duration,
}

impl Usable<'_> {
    fn check(&self, e: &CacheEntryView<'_>) -> bool {
        e.tenant == self.tenant.as_str()
            && readable_by(e, self.subject)
            && self.now
                < if self.allow_stale {
                    e.servable_until()
                } else {
                    e.expires_at
                }
            && !privacy::past_retention(e.created_at, self.now, self.retention)
            && self.max_age.is_none_or(|max_age| {
                (self.now - e.created_at).whole_seconds()
                    < i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX)
            })
    }
}

/// The candidate a semantic search serves.
struct Matched {
    value: CachedValue,
    key: CacheKey,
    similarity: f32,
    verification: Verification,
}

/// The semantic half of a lookup, run on an exact miss.
struct SemanticSearch<'a> {
    cache: &'a Cache,
    sem: &'a Arc<Semantic>,
    lookup: &'a Lookup<'a>,
    input: &'a KeyInput<'a>,
    /// The exact key of the query.
    key: &'a CacheKey,
    usable: &'a Usable<'a>,
}

impl SemanticSearch<'_> {
    /// The best live candidate's value, key and similarity; `None` on a miss. Failures set
    /// `degraded` (the lookup still answers, as a miss).
    async fn run(
        &self,
        latency: &mut Latency,
        degraded: &mut bool,
    ) -> (Option<Matched>, Vec<Rejected>) {
        let (sem, tenant) = (self.sem, &self.lookup.tenant);
        let threshold = self.lookup.threshold.unwrap_or(sem.threshold());
        let k = self.lookup.k.unwrap_or(sem.top_k());
        let Some(negative) = sem.negative() else {
            let (matched, rejected, _) = self.search(threshold, k, latency, degraded).await;
            return (matched, rejected);
        };
        // Everything the outcome depends on: the query (its key), who asks (visibility), and the
        // lookup's threshold, k, maximum age and stale switch.
        let lookup_key = format!(
            "{tenant}\u{0}{}\u{0}{}\u{0}{}\u{0}{k}\u{0}{:?}\u{0}{:?}",
            self.key.name(),
            self.lookup.subject.as_deref().unwrap_or_default(),
            threshold.to_bits(),
            self.lookup.max_age.map(|d| d.as_secs()),
            self.lookup.allow_stale,
        );
        match negative.check(tenant.as_str(), lookup_key) {
            Ok(Remembered::NoMatch) => (None, Vec::new()),
            Ok(Remembered::Failed(layer)) => {
                *degraded = mark_degraded(layer);
                (None, Vec::new())
            }
            Err(pending) => {
                let (found, rejected, outcome) = self.search(threshold, k, latency, degraded).await;
                if let Some(outcome) = outcome {
                    negative.remember(pending, outcome);
                }
                (found, rejected)
            }
        }
    }

    /// Decide a candidate whose entry has feedback: a query reported wrong for it, or a
    /// similarity under its learnt floor, is turned down; at or above its learnt accept bound it
    /// skips the band verifiers.
    async fn decide_with_feedback(
        &self,
        sem: &Semantic,
        feedback: &resk_core::Feedback,
        pair: &Pair<'_>,
        prepared: &crate::verify::PreparedQuery,
        threshold: f32,
    ) -> crate::verify::Decision {
        let reject = |reason: String| crate::verify::Decision {
            verification: Verification::new(Verdict::Reject, "feedback", reason),
            degraded: false,
        };
        if feedback.blocked.iter().any(|q| q == self.key.name()) {
            return reject(
                "reported_wrong: this question was reported wrongly answered by it".into(),
            );
        }
        let bounds = crate::feedback::bounds(feedback, sem.target_error());
        if let Some(floor) = bounds.floor
            && pair.similarity < floor
        {
            return reject(format!("below_entry_floor: {floor:.3}"));
        }
        sem.pipeline()
            .decide(pair, prepared, threshold, bounds.accept)
            .await
    }

    /// The search itself, and what to remember of it: `NoMatch`, `Failed` for a provider error,
    /// nothing after a hit or a store error.
    async fn search(
        &self,
        threshold: f32,
        k: usize,
        latency: &mut Latency,
        degraded: &mut bool,
    ) -> (Option<Matched>, Vec<Rejected>, Option<Remembered>) {
        let (cache, sem, tenant) = (self.cache, self.sem, &self.lookup.tenant);
        let stats = &cache.inner.stats;
        let scope = sem.scope(&cache.inner.keys, tenant, self.input);
        // Made before the embedding, like everything that does not need its vector: the forward
        // pass evicts the CPU caches, so work after it runs from memory (this `format!` took ~7 µs
        // after it, measured). Equal key name: equal query text and scope, so equal vector.
        let flight = format!(
            "{tenant}\u{0}{}\u{0}{k}\u{0}{}",
            self.key.name(),
            threshold.to_bits()
        );
        // The conversation turns the verifiers compare (validated when the key was made).
        let turns = match self.lookup.context.as_deref() {
            Some(context) => cache
                .inner
                .context_policy
                .select(context, cache.max_context_chars())
                .unwrap_or_default(),
            None => Vec::new(),
        };
        // The verifiers' analysis of the query runs while the embedding does (polled second, once
        // the embedding has been handed to its model): before the forward pass, not after it. The
        // embedding's time ends when its vector is there (an embedding-cache hit is there before
        // the analysis runs).
        let embed_start = Instant::now();
        let ((vector, embedded), prepared) = tokio::join!(
            biased;
            async { (sem.embed(&self.lookup.query).await, Instant::now()) },
            async { sem.pipeline().prepare(&self.lookup.query) },
        );
        latency.embed = embedded.duration_since(embed_start);
        stats.embed_seconds.record(latency.embed.as_secs_f64());
        let vector = match vector {
            Ok(vector) => vector,
            Err(err) => {
                semantic_error("embed", &err);
                *degraded = mark_degraded("embed");
                return (None, Vec::new(), Some(Remembered::Failed("embed")));
            }
        };
        let search_start = Instant::now();
        let candidates = sem
            .search_shared(flight, tenant, &scope, vector, k, threshold)
            .await;
        latency.vector = search_start.elapsed();
        stats.vector_seconds.record(latency.vector.as_secs_f64());
        let candidates = match candidates {
            Ok(candidates) => candidates,
            Err(err) => {
                semantic_error("search", &err);
                *degraded = mark_degraded("vector");
                return (None, Vec::new(), Some(Remembered::Failed("vector")));
            }
        };
        let read_start = Instant::now();
        let mut stale = Vec::new();
        let mut matched = None;
        let mut read_failed = false;
        let mut rejected = Vec::new();
        for candidate in candidates.iter() {
            let Ok(candidate_key) = CacheKey::new(tenant.clone(), candidate.id.clone()) else {
                continue;
            };
            match cache
                .inner
                .store
                .get(&candidate_key)
                .instrument(cache.span("get"))
                .await
            {
                Ok(Some(value)) => {
                    let Some(entry) = cache.parse(&value).filter(|e| self.usable.check(e)) else {
                        if value.is_expired() {
                            stale.push(candidate.id.clone());
                        }
                        continue;
                    };
                    let pair = Pair::new(&self.lookup.query, &entry.query, candidate.similarity)
                        .with_context(&turns);
                    let decision = match entry.feedback.as_ref() {
                        Some(feedback) => {
                            self.decide_with_feedback(sem, feedback, &pair, &prepared, threshold)
                                .await
                        }
                        None => {
                            sem.pipeline()
                                .decide(&pair, &prepared, threshold, None)
                                .await
                        }
                    };
                    *degraded |= decision.degraded;
                    stats.verdict(&decision.verification);
                    if decision.verification.verdict == Verdict::Accept {
                        drop(entry);
                        matched = Some(Matched {
                            value,
                            key: candidate_key,
                            similarity: candidate.similarity,
                            verification: decision.verification,
                        });
                        break;
                    }
                    tracing::debug!(
                        candidate = candidate_key.name(),
                        similarity = candidate.similarity,
                        by = decision.verification.by,
                        reason = %decision.verification.reason,
                        "semantic candidate rejected"
                    );
                    rejected.push(Rejected {
                        key: candidate_key,
                        similarity: candidate.similarity,
                        verification: decision.verification,
                    });
                }
                Ok(None) => stale.push(candidate.id.clone()),
                Err(err) => {
                    cache.backend_error("get", &err);
                    *degraded = mark_degraded("cache");
                    read_failed = true;
                    break;
                }
            }
        }
        latency.cache += read_start.elapsed();
        if !stale.is_empty() {
            // Vectors whose entries expired or were deleted elsewhere: drop them.
            let sem = Arc::clone(sem);
            let tenant = tenant.clone();
            tokio::spawn(async move {
                if let Err(err) = sem.delete(&tenant, &stale).await {
                    semantic_error("delete", &err);
                }
            });
        }
        let remember = (matched.is_none() && !read_failed).then_some(Remembered::NoMatch);
        (matched, rejected, remember)
    }
}
