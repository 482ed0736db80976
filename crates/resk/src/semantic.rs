//! Semantic lookups: embed the query, search the vectors of cached queries within the caller's tenant
//! and scope, and accept the best match above a similarity threshold.
//!
//! The vector store holds, per cached entry, the vector of its query under the entry's key name, with
//! metadata `{scope, expires_at}` and nothing else: the query text itself stays in the (encrypted)
//! cache entry, which a semantic hit reads anyway. A candidate whose entry has expired or was deleted is
//! skipped (and its vector removed), so an expired entry never answers.

use std::{sync::Arc, time::Duration};

use resk_core::{
    CacheKey, CollectionSpec, Embedder, Filter, KeyBuilder, KeyInput, Metric, Result, Scored,
    SharedEmbedder, SharedVectorStore, SharedVerifier, TenantId, VectorPurge, VectorQuery,
    VectorRecord, VectorStore,
};
use time::OffsetDateTime;
use tracing::Instrument as _;

use crate::{
    flight::Flights,
    negative::NegativeCache,
    resilience::{Guard, ResilienceConfig},
    verify::Pipeline,
};

/// Settings of semantic lookups.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct SemanticConfig {
    /// Lowest similarity served (cosine: -1 to 1). Default 0.9.
    pub threshold: f32,
    /// Candidates read per lookup (the best live one is served). Default 5.
    pub top_k: usize,
    /// The vector collection; default: `resk-<embedding model>`.
    pub collection: Option<String>,
    /// The vector metric of a collection this creates. Default cosine.
    pub metric: Metric,
    /// How long a lookup that found nothing (or whose provider failed) is remembered; zero turns
    /// negative caching off. Default 30 s.
    pub negative_ttl: Duration,
    /// Circuit breakers and bulkheads of the embedder and the vector store.
    pub resilience: ResilienceConfig,
    /// At or above this similarity a candidate is served without the band verifiers (the guards
    /// still run); between `threshold` (or a lookup's own threshold) and `accept` a band
    /// verifier must accept it. `None` (default): no band — every candidate at or above the
    /// threshold is served unless a verifier rejects it. Never below `threshold`.
    pub accept: Option<f32>,
    /// Longest a verifier may take on one candidate before it counts as a reject. Default 5 s.
    pub verify_timeout: Duration,
    /// The error rate feedback may let an entry's own bounds reach (see [`crate::feedback`]).
    /// Default 0.05.
    pub target_error: f64,
}

impl Default for SemanticConfig {
    fn default() -> Self {
        Self {
            threshold: 0.9,
            top_k: 5,
            collection: None,
            metric: Metric::Cosine,
            negative_ttl: Duration::from_secs(30),
            resilience: ResilienceConfig::default(),
            accept: None,
            verify_timeout: Duration::from_secs(5),
            target_error: 0.05,
        }
    }
}

impl SemanticConfig {
    /// The first setting out of range, as a [`Config`](resk_core::ErrorKind::Config) error.
    fn check(&self) -> Result<()> {
        let wrong = |message: String| {
            Err(resk_core::Error::new(
                resk_core::ErrorKind::Config,
                "resk",
                "semantic",
                message,
            ))
        };
        if !(self.threshold.is_finite() && (-1.0..=1.0).contains(&self.threshold)) {
            return wrong(format!(
                "the similarity threshold must be between -1 and 1, not {}",
                self.threshold
            ));
        }
        if let Some(accept) = self.accept
            && !(accept.is_finite() && (self.threshold..=1.0).contains(&accept))
        {
            return wrong(format!(
                "the accept bound must be between the threshold ({}) and 1, not {accept}",
                self.threshold
            ));
        }
        if !(0.0..1.0).contains(&self.target_error) {
            return wrong(format!(
                "the target error rate must be at least 0 and below 1, not {}",
                self.target_error
            ));
        }
        if self.top_k == 0 {
            return wrong("top_k must be at least 1".to_owned());
        }
        Ok(())
    }

    /// The defaults with all-MiniLM-L6-v2 (or a sentence-transformers model like it) and token
    /// alignment in the band: candidates from 0.65 are verified, from 0.9 the guards alone
    /// decide. `docs/eval/README.md` shows how they were chosen.
    pub fn for_local_model() -> Self {
        Self {
            threshold: 0.65,
            accept: Some(0.9),
            ..Self::default()
        }
    }
}

/// The embedder, the vector store and the lookup settings.
#[derive(Debug)]
pub struct Semantic {
    embedder: SharedEmbedder,
    vectors: SharedVectorStore,
    collection: String,
    spec: CollectionSpec,
    /// Set once the collection is known to exist with `spec`.
    ready: tokio::sync::OnceCell<()>,
    threshold: f32,
    top_k: usize,
    negative: Option<NegativeCache>,
    /// Breaker and bulkhead of the embedder.
    embed_guard: Guard,
    /// Breaker and bulkhead of the vector database.
    vector_guard: Guard,
    /// Searches in flight, shared by concurrent identical lookups.
    searches: Flights<SharedSearch>,
    /// The metrics of the embedding call and of the vector query.
    embed_metrics: Observed,
    query_metrics: Observed,
    /// The decision stage: verifiers and zones.
    pipeline: Pipeline,
    /// The error rate feedback may let an entry's bounds reach.
    target_error: f64,
}

/// A search result as concurrent identical lookups share it.
type SharedSearch = std::result::Result<Arc<Vec<Scored>>, Arc<resk_core::Error>>;

/// One cached query to index.
#[derive(Debug, Clone)]
pub struct IndexItem {
    /// The entry's key (its name is the vector's id).
    pub key: CacheKey,
    /// The query text to embed.
    pub query: String,
    /// The entry's semantic scope ([`Semantic::scope`]).
    pub scope: String,
    /// When the entry expires.
    pub expires_at: OffsetDateTime,
    /// Extra flat metadata stored with the vector (keys `scope` and `expires_at` are reserved).
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

fn slug(model: &str) -> String {
    let s: String = model
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    format!("resk-{s}").chars().take(64).collect()
}

impl Semantic {
    /// Assemble from an embedder and a vector store: the collection (named after the embedding
    /// model unless `config.collection` names it) is created, or checked to have the embedder's
    /// dimensions and the configured metric (a mismatch is an
    /// [`ErrorKind::DimensionMismatch`](resk_core::ErrorKind::DimensionMismatch) or
    /// [`ErrorKind::Config`](resk_core::ErrorKind::Config) error). A vector database that does not
    /// answer does not fail this: lookups are degraded until it does, and the collection is checked
    /// on first use.
    pub async fn new(
        embedder: SharedEmbedder,
        vectors: SharedVectorStore,
        config: SemanticConfig,
    ) -> Result<Self> {
        config.check()?;
        let collection = config
            .collection
            .clone()
            .unwrap_or_else(|| slug(&embedder.info().model));
        let spec = CollectionSpec {
            dims: embedder.info().dims,
            metric: config.metric,
        };
        let ready = tokio::sync::OnceCell::new();
        match vectors.ensure_collection(&collection, spec).await {
            Ok(()) => {
                let _ = ready.set(());
            }
            // A vector database that is down must not keep the exact cache from serving: start,
            // answer semantic lookups as degraded, and check the collection again on use.
            Err(e) if e.is_retryable() => {
                tracing::warn!(error = %e, vectors = vectors.info().name, collection,
                    "vector database unavailable at start-up; semantic lookups are degraded until it answers");
            }
            Err(e) => return Err(e),
        }
        tracing::info!(
            provider = embedder.info().provider,
            model = %embedder.info().model,
            dims = embedder.info().dims,
            vectors = vectors.info().name,
            collection,
            threshold = config.threshold,
            "semantic caching enabled"
        );
        let embed_metrics = Observed::new("embed", embedder.info().provider, "embed");
        let query_metrics = Observed::new("vector", vectors.info().name, "query");
        Ok(Self {
            embedder,
            vectors,
            collection,
            spec,
            ready,
            threshold: config.threshold,
            top_k: config.top_k,
            negative: NegativeCache::new(config.negative_ttl),
            embed_guard: Guard::new("embed", config.resilience),
            vector_guard: Guard::new("vector", config.resilience),
            searches: Flights::default(),
            embed_metrics,
            query_metrics,
            pipeline: Pipeline::new(
                crate::verify::defaults(),
                config.accept,
                config.verify_timeout,
            ),
            target_error: config.target_error,
        })
    }

    /// Decide candidates with `verifiers`, in this order (cheapest first), instead of the default
    /// ([`Guards`](crate::verify::Guards) alone). An empty list decides by similarity alone, as a
    /// plain cosine cache does.
    pub fn with_verifiers(mut self, verifiers: Vec<SharedVerifier>) -> Self {
        self.pipeline = Pipeline::new(verifiers, self.pipeline.accept, self.pipeline.timeout());
        self
    }

    /// The names of the verifiers, in order.
    pub fn verifiers(&self) -> Vec<&'static str> {
        self.pipeline.names()
    }

    /// The accept bound (`None`: a lookup's threshold).
    pub fn accept(&self) -> Option<f32> {
        self.pipeline.accept
    }

    /// The error rate feedback may let an entry's bounds reach.
    pub fn target_error(&self) -> f64 {
        self.target_error
    }

    /// The decision stage.
    pub(crate) fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// A readiness probe of the vector store: one round trip asking it for the collection (created
    /// with its spec if absent, as the first write would). Not through the circuit breaker, so it
    /// tells how the store is now, not what the breaker remembers.
    pub async fn probe(&self) -> Result<()> {
        self.vectors
            .ensure_collection(&self.collection, self.spec)
            .await
    }

    /// Make sure the collection exists with its spec (once; retried on every call until it succeeds).
    async fn ready(&self) -> Result<()> {
        self.ready
            .get_or_try_init(|| self.vectors.ensure_collection(&self.collection, self.spec))
            .await
            .map(|_| ())
    }

    /// The embedding and vector providers' names (metric labels).
    pub fn providers(&self) -> (&'static str, &'static str) {
        (self.embedder.info().provider, self.vectors.info().name)
    }

    /// The embedder in use.
    pub fn embedder(&self) -> &SharedEmbedder {
        &self.embedder
    }

    /// The vector store in use.
    pub fn vectors(&self) -> &SharedVectorStore {
        &self.vectors
    }

    /// The collection holding this server's vectors.
    pub fn collection(&self) -> &str {
        &self.collection
    }

    /// The default similarity threshold.
    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// The default number of candidates.
    pub fn top_k(&self) -> usize {
        self.top_k
    }

    /// Remembered outcomes of recent lookups; `None` when negative caching is off.
    pub(crate) fn negative(&self) -> Option<&NegativeCache> {
        self.negative.as_ref()
    }

    /// The scope of a request: only entries of equal scope are compared.
    pub fn scope(&self, keys: &KeyBuilder, tenant: &TenantId, input: &KeyInput<'_>) -> String {
        keys.scope(tenant, &self.embedder.info().model, input)
    }

    /// Embed and upsert the queries of `items` (one embedding call, one upsert).
    pub async fn index(&self, tenant: &TenantId, items: &[IndexItem]) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let texts: Vec<String> = items.iter().map(|i| i.query.clone()).collect();
        let vectors = self.embed_texts(&texts).await?;
        let records = items
            .iter()
            .zip(vectors)
            .map(|(item, vector)| {
                let mut metadata = item.metadata.clone();
                metadata.insert("scope".into(), item.scope.clone().into());
                metadata.insert(
                    "expires_at".into(),
                    ((item.expires_at.unix_timestamp_nanos() / 1_000_000) as i64).into(),
                );
                VectorRecord {
                    id: item.key.name().to_owned(),
                    tenant: tenant.clone(),
                    vector,
                    metadata,
                }
            })
            .collect();
        self.vector_call("upsert", async {
            self.ready().await?;
            self.vectors.upsert(&self.collection, records).await
        })
        .await
    }

    /// Embed `texts` (through the embedding cache) in an `embed` span, timed and counted.
    async fn embed_texts(&self, texts: &[String]) -> Result<Vec<resk_core::Embedding>> {
        let info = self.embedder.info();
        let span = tracing::debug_span!(
            "embed",
            provider = info.provider,
            model = %info.model,
            texts = texts.len(),
        );
        let call = self.embed_metrics.call(self.embedder.embed(texts));
        self.embed_guard.call("embed", call).instrument(span).await
    }

    /// `call` to the vector database as operation `op`, in a `vector` span, timed and counted.
    async fn vector_call<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let metrics = Observed::new("vector", self.vectors.info().name, op);
        self.observed_vector_call(&metrics, call).await
    }

    /// [`Semantic::vector_call`] with the operation's metric handles taken beforehand (`metrics`
    /// names the operation).
    async fn observed_vector_call<T>(
        &self,
        metrics: &Observed,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let (provider, op) = (metrics.provider, metrics.op);
        self.vector_guard
            .call(op, metrics.call(call))
            .instrument(tracing::debug_span!("vector", provider, op))
            .await
    }

    /// Embed `query`.
    pub async fn embed(&self, query: &str) -> Result<Vec<f32>> {
        let mut v = self.embed_texts(&[query.to_owned()]).await?;
        v.pop().ok_or_else(|| {
            resk_core::Error::new(
                resk_core::ErrorKind::Backend,
                self.embedder.info().provider,
                "embed",
                "no vector returned",
            )
        })
    }

    /// Candidates for `vector` within `tenant` and `scope`, best first, none below `threshold`.
    pub async fn search(
        &self,
        tenant: &TenantId,
        scope: &str,
        vector: Vec<f32>,
        k: usize,
        threshold: f32,
    ) -> Result<Vec<Scored>> {
        self.observed_vector_call(&self.query_metrics, async {
            self.ready().await?;
            self.vectors
                .query(
                    &self.collection,
                    &VectorQuery {
                        tenant: tenant.clone(),
                        vector,
                        k,
                        min_similarity: Some(threshold),
                        filter: Some(Filter::Eq("scope".into(), scope.into())),
                    },
                )
                .await
        })
        .await
    }

    /// [`Semantic::search`], shared with the concurrent searches of the same `flight` (callers with
    /// equal `flight` must pass equal arguments): concurrent misses of one query cost one search.
    pub(crate) async fn search_shared(
        &self,
        flight: String,
        tenant: &TenantId,
        scope: &str,
        vector: Vec<f32>,
        k: usize,
        threshold: f32,
    ) -> Result<Arc<Vec<Scored>>> {
        let search = async {
            self.search(tenant, scope, vector, k, threshold)
                .await
                .map(Arc::new)
                .map_err(Arc::new)
        };
        match self.searches.run(flight, search).await.0 {
            Ok(found) => Ok(found),
            Err(err) => Err(resk_core::Error::new(
                err.kind(),
                err.backend(),
                err.op(),
                err.message().to_owned(),
            )),
        }
    }

    /// Remove the vectors of `ids` in `tenant`.
    pub async fn delete(&self, tenant: &TenantId, ids: &[String]) -> Result<u64> {
        self.vector_call("delete", async {
            self.ready().await?;
            self.vectors.delete(&self.collection, tenant, ids).await
        })
        .await
    }

    /// Remove every vector of `tenant`.
    pub async fn purge(&self, tenant: &TenantId) -> Result<u64> {
        self.vector_call("purge", async {
            self.ready().await?;
            self.vectors
                .purge(&self.collection, &VectorPurge::Tenant(tenant.clone()))
                .await
        })
        .await
    }
}

/// The metric handles of one provider operation on the hot path (`embed`, the vector `query`),
/// taken once: the `metrics!` macros look the labelled series up in the recorder's registry on
/// every call, and on a semantic lookup that lookup runs right after the embedding's forward pass
/// has evicted the CPU caches (a few µs per series, measured).
#[derive(Debug)]
struct Observed {
    kind: &'static str,
    provider: &'static str,
    op: &'static str,
    seconds: metrics::Histogram,
    ok: metrics::Counter,
}

impl Observed {
    fn new(kind: &'static str, provider: &'static str, op: &'static str) -> Self {
        Self {
            kind,
            provider,
            op,
            seconds: metrics::histogram!(
                "resk_provider_request_duration_seconds",
                "kind" => kind,
                "provider" => provider,
                "op" => op,
            ),
            ok: metrics::counter!(
                "resk_provider_requests_total",
                "kind" => kind,
                "provider" => provider,
                "op" => op,
                "outcome" => "ok",
            ),
        }
    }

    /// Await `call` to the provider: its latency goes to `resk_provider_request_duration_seconds`,
    /// its outcome (`ok` or the error kind, e.g. `rate_limited` for a spent quota) to
    /// `resk_provider_requests_total`.
    async fn call<T>(&self, call: impl Future<Output = Result<T>>) -> Result<T> {
        let start = std::time::Instant::now();
        let out = call.await;
        self.seconds.record(start.elapsed().as_secs_f64());
        match &out {
            Ok(_) => self.ok.increment(1),
            Err(err) => failed(self.kind, self.provider, self.op, err),
        }
        out
    }
}

/// Count a failed provider call under its error kind.
fn failed(kind: &'static str, provider: &'static str, op: &'static str, err: &resk_core::Error) {
    metrics::counter!(
        "resk_provider_requests_total",
        "kind" => kind,
        "provider" => provider,
        "op" => op,
        "outcome" => err.kind().as_str(),
    )
    .increment(1);
}
