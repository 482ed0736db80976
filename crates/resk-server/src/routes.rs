//! Handlers. Each reads as one straight line: authorise → validate → key → cache → respond.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Json,
    extract::{Path, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use resk_core::{
    CacheEntry, CacheEntryView, CacheKey, CacheStore, CachedValue, KeyInput, Origin, PurgeScope,
};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use tracing::Instrument as _;

use crate::{
    api::{
        DeleteResponse, EraseResponse, ExportRequest, ExportResponse, ExportedEntry,
        HealthResponse, KeyFields, Latency, PurgeResponse, QueryRequest, QueryResponse,
        ReadyResponse, RevokeRequest, RevokeResponse, Source, SubjectRequest, Visibility,
        WriteRequest, WriteResponse,
    },
    app::AppState,
    auth::{Principal, Scope},
    config::Limits,
    error::ApiError,
    idempotency::{IdempotencyKey, Seen, Slot},
    json::{ApiJson, ApiJsonDigest},
    negative::Remembered,
    semantic::IndexItem,
    variants,
};

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// The fields of a request that decide its key, validated.
struct Scoped<'a> {
    query: &'a str,
    language: Option<&'a str>,
    model: Option<&'a str>,
    params: Option<serde_json::Value>,
    /// The subject, for entries private to it.
    owner: Option<&'a str>,
}

const MAX_LANGUAGE_LEN: usize = 35;
const MAX_MODEL_LEN: usize = 256;

fn validate<'a>(
    limits: &Limits,
    fields: KeyFields<'a>,
    subject: &'a str,
) -> Result<Scoped<'a>, ApiError> {
    let KeyFields {
        query,
        language,
        model,
        params,
        visibility,
    } = fields;
    if query.trim().is_empty() {
        return Err(ApiError::bad_request(
            "invalid_query",
            "query must not be empty",
        ));
    }
    let chars = query.chars().count();
    if chars > limits.max_query_chars {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!(
                "query is {chars} characters; the maximum is {}",
                limits.max_query_chars
            ),
        ));
    }
    if let Some(lang) = language {
        let ok = !lang.is_empty()
            && lang.len() <= MAX_LANGUAGE_LEN
            && lang.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !ok {
            return Err(ApiError::bad_request(
                "invalid_language",
                "language must be a BCP 47 tag such as `en` or `fr-CA`",
            ));
        }
    }
    if let Some(m) = model
        && (m.trim().is_empty() || m.chars().count() > MAX_MODEL_LEN)
    {
        return Err(ApiError::bad_request(
            "invalid_model",
            format!("model must be 1-{MAX_MODEL_LEN} characters, not blank"),
        ));
    }
    Ok(Scoped {
        query,
        language,
        model,
        params: params.cloned().map(serde_json::Value::Object),
        owner: (visibility == Visibility::User).then_some(subject),
    })
}

impl Scoped<'_> {
    fn input(&self) -> KeyInput<'_> {
        KeyInput {
            query: self.query,
            language: self.language,
            model: self.model,
            params: self.params.as_ref(),
            owner: self.owner,
        }
    }
}

fn cache_key(app: &AppState, principal: &Principal, scoped: &Scoped<'_>) -> CacheKey {
    app.keys.key(&principal.tenant, &scoped.input())
}

/// `ttl` shortened by a random share of up to `percent` %, so entries written together do not all
/// expire together: never longer than asked (nor than the maximum), never below one second unless
/// asked.
fn jittered(ttl: std::time::Duration, percent: u8) -> std::time::Duration {
    if percent == 0 {
        return ttl;
    }
    let cut = ttl.mul_f64(f64::from(percent.min(50)) / 100.0 * fastrand::f64());
    ttl.saturating_sub(cut)
        .max(std::time::Duration::from_secs(1).min(ttl))
}

/// The debug-level line of one read or write: a keyed hash of the query (stable per query, so
/// lines can be correlated, and meaningless without the server's key secret), or the raw text when
/// `LOG_QUERY_TEXT` is on.
fn log_query(app: &AppState, op: &'static str, query: &str, outcome: &str) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let hash = app.keys.pseudonym("log", query);
    if app.log_query_text {
        tracing::debug!(op, query_hash = %hash, query, outcome, "cache request");
    } else {
        tracing::debug!(op, query_hash = %hash, outcome, "cache request");
    }
}

fn semantic_error(op: &'static str, err: &resk_core::Error) {
    metrics::counter!("resk_semantic_errors_total", "op" => op, "kind" => err.kind().as_str())
        .increment(1);
    tracing::warn!(op, error = %err, "semantic layer error");
}

/// Count a query answered without `layer` (it failed); returns `true` for the `degraded` flag.
fn mark_degraded(layer: &'static str) -> bool {
    metrics::counter!("resk_degraded_responses_total", "layer" => layer).increment(1);
    true
}

/// LLM tokens in `bytes` of text, estimated at 4 bytes a token (OpenAI's rule of thumb for
/// English; an estimate for dashboards, not billing).
fn estimated_tokens(bytes: usize) -> u64 {
    u64::try_from(bytes.div_ceil(4)).unwrap_or(u64::MAX)
}

/// The span of a cache-backend call (layer-1 and layer-2 spans of a tiered store nest in it).
fn cache_span(app: &AppState, op: &'static str) -> tracing::Span {
    tracing::info_span!("cache", backend = app.cache.info().name, op)
}

fn backend_error(app: &AppState, op: &'static str, err: &resk_core::Error) {
    let backend = app.cache.info().name;
    metrics::counter!("resk_backend_errors_total", "backend" => backend, "op" => op).increment(1);
    tracing::warn!(backend, op, error = %err, "cache backend error");
}

/// `POST /api/cache`.
pub(crate) async fn write_entry(
    State(app): State<Arc<AppState>>,
    principal: Principal,
    idempotency: IdempotencyKey,
    ApiJsonDigest(req, digest): ApiJsonDigest<WriteRequest>,
) -> Result<Response, ApiError> {
    principal.require(Scope::Write)?;
    let slot = match &idempotency.0 {
        Some(key) => Some(Slot::new(&app.keys, &principal, key, &digest)?),
        None => None,
    };
    if let Some(slot) = &slot
        && let Seen::Replay(status, body) = slot.check(&app.cache).await.inspect_err(|e| {
            metrics::counter!("resk_idempotency_checks_total", "result" => e.code()).increment(1)
        })?
    {
        metrics::counter!("resk_idempotency_checks_total", "result" => "replayed").increment(1);
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
        return Ok(response);
    }
    let body = store_entry(&app, &principal, &req).await?;
    if let Some(slot) = &slot {
        // The entry is written: a failure to remember the answer costs a retry a second write of the
        // same value, not the write itself.
        if let Err(err) = slot
            .record(&app.cache, StatusCode::CREATED, &body, app.idempotency_ttl)
            .await
        {
            backend_error(&app, "idempotency", &err);
        }
    }
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// Validate and store one entry for `principal` (index it, announce it): what `POST /api/cache`
/// does once the request is admitted, and what the start-up warm-up does for each line of its file.
pub(crate) async fn store_entry(
    app: &Arc<AppState>,
    principal: &Principal,
    req: &WriteRequest,
) -> Result<WriteResponse, ApiError> {
    let scoped = validate(&app.limits, req.key_fields(), &principal.subject)?;
    if req.response.is_null() {
        return Err(ApiError::bad_request(
            "invalid_response",
            "response must not be null",
        ));
    }
    variants::validate(&req.response)?;
    let ttl = app
        .ttl
        .resolve(req.ttl)
        .map_err(|e| ApiError::bad_request("invalid_ttl", e.message()))?;
    let ttl = jittered(ttl, app.ttl_jitter_percent);
    let stale_ttl = req.stale_ttl.unwrap_or(app.stale_ttl_secs);
    if stale_ttl > app.ttl.max_ttl().as_secs() {
        return Err(ApiError::bad_request(
            "invalid_stale_ttl",
            format!(
                "stale_ttl must be at most the maximum TTL ({} seconds)",
                app.ttl.max_ttl().as_secs()
            ),
        ));
    }
    let grace = Duration::from_secs(stale_ttl);
    let key = cache_key(app, principal, &scoped);
    let mut entry = CacheEntry::new(
        principal.tenant.clone(),
        req.query.clone(),
        CacheEntry::raw(&req.response)?,
        ttl,
        Origin {
            source: "api".into(),
            subject: Some(principal.subject.to_string()),
        },
    )?;
    entry.owner = scoped.owner.map(str::to_owned);
    entry.set_grace(grace)?;
    let bytes = entry.to_bytes()?;
    // The store keeps the entry through its grace period.
    app.cache
        .set(&key, Bytes::from(bytes), Some(ttl + grace))
        .instrument(cache_span(app, "set"))
        .await
        .inspect_err(|e| {
            backend_error(app, "set", e);
        })?;
    app.stats.writes.increment(1);
    log_query(app, "write", &req.query, "stored");
    let mut semantic_indexed = false;
    let mut semantic_error_text = None;
    if let Some(sem) = app
        .semantic
        .as_ref()
        .filter(|_| req.semantic != Some(false))
    {
        let item = IndexItem {
            key: key.clone(),
            query: req.query.clone(),
            scope: sem.scope(&app.keys, &principal.tenant, &scoped.input()),
            expires_at: entry.servable_until(),
            metadata: serde_json::Map::new(),
        };
        match sem.index(&principal.tenant, &[item]).await {
            Ok(()) => {
                semantic_indexed = true;
                if let Some(negative) = sem.negative() {
                    negative.tenant_changed(principal.tenant.as_str());
                }
            }
            Err(err) => {
                semantic_error("index", &err);
                semantic_error_text = Some(format!(
                    "the entry is stored for exact lookups, but semantic indexing failed: {}",
                    err.message()
                ));
            }
        }
    }
    let expires_at = rfc3339(entry.expires_at);
    app.hub
        .cache_event(
            &principal.tenant,
            serde_json::json!({ "event": "set", "key": key.name(), "expires_at": expires_at }),
        )
        .await;
    let body = WriteResponse {
        success: true,
        key: key.name().to_owned(),
        ttl: ttl.as_secs(),
        expires_at,
        stale_until: entry.stale_until.map(rfc3339),
        semantic_indexed,
        semantic_error: semantic_error_text,
    };
    Ok(body)
}

/// `POST /api/cache/query`.
pub(crate) async fn query_entry(
    State(app): State<Arc<AppState>>,
    principal: Principal,
    ApiJson(req): ApiJson<QueryRequest>,
) -> Result<Response, ApiError> {
    let start = Instant::now();
    principal.require(Scope::Read)?;
    if req.ttl == Some(0) {
        return Err(ApiError::bad_request(
            "invalid_ttl",
            "ttl must be at least 1 second",
        ));
    }
    let scoped = validate(&app.limits, req.key_fields(), &principal.subject)?;
    if req
        .threshold
        .is_some_and(|t| !(t.is_finite() && (-1.0..=1.0).contains(&t)))
    {
        return Err(ApiError::bad_request(
            "invalid_threshold",
            "threshold must be a number between -1 and 1",
        ));
    }
    if req.k.is_some_and(|k| !(1..=100).contains(&k)) {
        return Err(ApiError::bad_request("invalid_k", "k must be 1-100"));
    }
    let key = cache_key(&app, &principal, &scoped);
    let key_ms = ms(start);
    app.stats.key_seconds.record(key_ms / 1e3);

    let mut latency = Latency {
        key: key_ms,
        ..Latency::default()
    };
    let mut degraded = false;
    let found = if req.force_refresh {
        None
    } else {
        let cache_start = Instant::now();
        let read = app
            .cache
            .get(&key)
            .instrument(cache_span(&app, "get"))
            .await;
        latency.cache = ms(cache_start);
        app.stats.cache_seconds.record(latency.cache / 1e3);
        match read {
            Ok(found) => found,
            Err(err) => {
                // A read never fails the request: the caller regenerates, as on a miss.
                backend_error(&app, "get", &err);
                degraded = mark_degraded("cache");
                None
            }
        }
    };

    let now = OffsetDateTime::now_utc();
    let allow_stale = req.allow_stale != Some(false);
    let usable = |e: &CacheEntryView<'_>| {
        e.tenant == principal.tenant.as_str()
            && e.readable_by(&principal.subject)
            && now
                < if allow_stale {
                    e.servable_until()
                } else {
                    e.expires_at
                }
            && !crate::privacy::past_retention(e.created_at, now, app.ttl.max_ttl())
            && req.ttl.is_none_or(|max_age| {
                (now - e.created_at).whole_seconds() < i64::try_from(max_age).unwrap_or(i64::MAX)
            })
    };
    let exact = found
        .as_ref()
        .and_then(|value| parse_entry(&app, value))
        .filter(usable);

    // Exact miss: look for a cached paraphrase.
    let matched = if exact.is_none() && !req.force_refresh && req.semantic != Some(false) {
        match &app.semantic {
            Some(sem) => {
                let lookup = SemanticLookup {
                    app: &app,
                    sem,
                    principal: &principal,
                    scoped: &scoped,
                    key: &key,
                    req: &req,
                    usable: &usable,
                };
                lookup.run(&mut latency, &mut degraded).await
            }
            None => None,
        }
    } else {
        None
    };
    let semantic_entry = matched
        .as_ref()
        .and_then(|(value, _, _)| parse_entry(&app, value));

    let (entry, source, hit_key, similarity) = match (&exact, &semantic_entry, &matched) {
        (Some(entry), _, _) => (
            Some(entry),
            found
                .as_ref()
                .and_then(|value| Source::from_backend(value.source)),
            Some(key.name()),
            None,
        ),
        (None, Some(entry), Some((_, matched_key, similarity))) => (
            Some(entry),
            Some(Source::Semantic),
            Some(matched_key.name()),
            Some(*similarity),
        ),
        _ => (None, None, None, None),
    };
    // Past its TTL, in the grace period its writer gave it.
    let stale = entry.is_some_and(|e| now >= e.expires_at);
    match (entry, source) {
        (Some(entry), Some(source)) => {
            app.stats.hits[source.index()].increment(1);
            if stale {
                metrics::counter!("resk_stale_answers_total").increment(1);
            }
            app.stats.tokens_saved[source.index()].increment(estimated_tokens(
                entry.query.len() + entry.response.get().len(),
            ));
        }
        (Some(_), None) => app.stats.other_hits.increment(1),
        (None, _) => app.stats.misses.increment(1),
    }
    if let Some(similarity) = similarity {
        app.stats.similarity.record(f64::from(similarity));
    }
    log_query(
        &app,
        "query",
        &req.query,
        match (entry.is_some(), source) {
            (true, Some(Source::Semantic)) => "semantic hit",
            (true, _) => "hit",
            (false, _) => "miss",
        },
    );
    latency.total = ms(start);
    let seed = req
        .seed
        .clone()
        .unwrap_or_else(|| principal.subject.to_string());
    let body = match entry {
        Some(entry) => {
            let variant = variants::pick(
                entry.response,
                &principal.tenant,
                hit_key.unwrap_or_default(),
                &seed,
                &app.turns,
            )
            .await;
            QueryResponse {
                hit: true,
                source,
                response: Some(variant.map_or(entry.response, |(_, v)| v)),
                key: hit_key,
                similarity,
                matched_query: similarity.map(|_| entry.query.as_ref()),
                variant: variant.map(|(i, _)| i),
                created_at: Some(entry.created_at),
                expires_at: Some(entry.expires_at),
                degraded,
                stale,
                latency_ms: latency,
            }
        }
        None => QueryResponse {
            hit: false,
            source: None,
            response: None,
            key: None,
            similarity: None,
            matched_query: None,
            variant: None,
            created_at: None,
            expires_at: None,
            degraded,
            stale,
            latency_ms: latency,
        },
    };
    json_response(&body)
}

/// The semantic half of a lookup, run on an exact miss.
struct SemanticLookup<'a, U> {
    app: &'a Arc<AppState>,
    sem: &'a Arc<crate::semantic::Semantic>,
    principal: &'a Principal,
    scoped: &'a Scoped<'a>,
    /// The exact key of the query.
    key: &'a CacheKey,
    req: &'a QueryRequest,
    usable: &'a U,
}

impl<U: Fn(&CacheEntryView<'_>) -> bool> SemanticLookup<'_, U> {
    /// The best live candidate's value, key and similarity; `None` on a miss. Failures set
    /// `degraded` (the request still answers, as a miss).
    async fn run(
        &self,
        latency: &mut Latency,
        degraded: &mut bool,
    ) -> Option<(CachedValue, CacheKey, f32)> {
        let (sem, tenant) = (self.sem, &self.principal.tenant);
        let threshold = self.req.threshold.unwrap_or(sem.threshold());
        let k = self
            .req
            .k
            .map_or(sem.top_k(), |k| usize::try_from(k).unwrap_or(usize::MAX));
        let Some(negative) = sem.negative() else {
            return self.lookup(threshold, k, latency, degraded).await.0;
        };
        // Everything the outcome depends on: the query (its key), who asks (visibility), and the
        // request's threshold, k, maximum age and stale switch.
        let lookup_key = format!(
            "{tenant}\u{0}{}\u{0}{}\u{0}{}\u{0}{k}\u{0}{:?}\u{0}{:?}",
            self.key.name(),
            self.principal.subject,
            threshold.to_bits(),
            self.req.ttl,
            self.req.allow_stale,
        );
        match negative.check(tenant.as_str(), lookup_key) {
            Ok(Remembered::NoMatch) => None,
            Ok(Remembered::Failed(layer)) => {
                *degraded = mark_degraded(layer);
                None
            }
            Err(pending) => {
                let (found, outcome) = self.lookup(threshold, k, latency, degraded).await;
                if let Some(outcome) = outcome {
                    negative.remember(pending, outcome);
                }
                found
            }
        }
    }

    /// The lookup itself, and what to remember of it: `NoMatch`, `Failed` for a provider error,
    /// nothing after a hit or a cache-backend error.
    async fn lookup(
        &self,
        threshold: f32,
        k: usize,
        latency: &mut Latency,
        degraded: &mut bool,
    ) -> (Option<(CachedValue, CacheKey, f32)>, Option<Remembered>) {
        let (app, sem, tenant) = (self.app, self.sem, &self.principal.tenant);
        let scope = sem.scope(&app.keys, tenant, &self.scoped.input());
        let embed_start = Instant::now();
        let vector = sem.embed(self.scoped.query).await;
        latency.embed = ms(embed_start);
        app.stats.embed_seconds.record(latency.embed / 1e3);
        let vector = match vector {
            Ok(vector) => vector,
            Err(err) => {
                semantic_error("embed", &err);
                *degraded = mark_degraded("embed");
                return (None, Some(Remembered::Failed("embed")));
            }
        };
        let search_start = Instant::now();
        // Equal key name: equal query text and scope, so equal vector.
        let flight = format!(
            "{tenant}\u{0}{}\u{0}{k}\u{0}{}",
            self.key.name(),
            threshold.to_bits()
        );
        let candidates = sem
            .search_shared(flight, tenant, &scope, vector, k, threshold)
            .await;
        latency.vector = ms(search_start);
        app.stats.vector_seconds.record(latency.vector / 1e3);
        let candidates = match candidates {
            Ok(candidates) => candidates,
            Err(err) => {
                semantic_error("search", &err);
                *degraded = mark_degraded("vector");
                return (None, Some(Remembered::Failed("vector")));
            }
        };
        let read_start = Instant::now();
        let mut stale = Vec::new();
        let mut matched = None;
        let mut read_failed = false;
        for candidate in candidates {
            let Ok(candidate_key) = CacheKey::new(tenant.clone(), candidate.id.clone()) else {
                continue;
            };
            match app
                .cache
                .get(&candidate_key)
                .instrument(cache_span(app, "get"))
                .await
            {
                Ok(Some(value)) => {
                    if parse_entry(app, &value).is_some_and(|e| (self.usable)(&e)) {
                        matched = Some((value, candidate_key, candidate.similarity));
                        break;
                    }
                    if value.is_expired() {
                        stale.push(candidate.id);
                    }
                }
                Ok(None) => stale.push(candidate.id),
                Err(err) => {
                    backend_error(app, "get", &err);
                    *degraded = mark_degraded("cache");
                    read_failed = true;
                    break;
                }
            }
        }
        latency.cache += ms(read_start);
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
        (matched, remember)
    }
}

fn parse_entry<'v>(app: &AppState, value: &'v CachedValue) -> Option<CacheEntryView<'v>> {
    match CacheEntryView::parse(&value.bytes) {
        Ok(entry) => Some(entry),
        Err(err) => {
            backend_error(app, "decode", &err);
            None
        }
    }
}

/// Serialise `body` straight into a response (the body may borrow from data the handler owns).
fn json_response<T: serde::Serialize>(body: &T) -> Result<Response, ApiError> {
    let bytes = serde_json::to_vec(body).map_err(|e| {
        tracing::error!(error = %e, "response serialisation failed");
        ApiError::internal()
    })?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        bytes,
    )
        .into_response())
}

/// `DELETE /api/cache`: purge the caller's tenant.
pub(crate) async fn purge(
    State(app): State<Arc<AppState>>,
    principal: Principal,
) -> Result<Json<PurgeResponse>, ApiError> {
    principal.require(Scope::Admin)?;
    let purged = app
        .cache
        .purge(&PurgeScope::Tenant(principal.tenant.clone()))
        .await
        .inspect_err(|e| backend_error(&app, "purge", e))?;
    metrics::counter!("resk_cache_purged_entries_total").increment(purged);
    if let Some(sem) = &app.semantic
        && let Err(err) = sem.purge(&principal.tenant).await
    {
        // Left-over vectors only point at purged entries, which lookups skip.
        semantic_error("purge", &err);
    }
    app.hub
        .cache_event(
            &principal.tenant,
            serde_json::json!({ "event": "purge", "purged": purged }),
        )
        .await;
    tracing::info!(
        audit = "cache_purged",
        subject = %principal.subject,
        tenant = %principal.tenant,
        purged,
        "tenant cache purged"
    );
    Ok(Json(PurgeResponse {
        success: true,
        purged,
    }))
}

/// `POST /api/auth/revoke`: revoke the caller's own token, a token of its tenant by `jti`
/// (`cache:admin`), or a token sent whole.
pub(crate) async fn revoke(
    State(app): State<Arc<AppState>>,
    principal: Principal,
    ApiJson(req): ApiJson<RevokeRequest>,
) -> Result<Json<RevokeResponse>, ApiError> {
    let now = jsonwebtoken::get_current_timestamp();
    let most = now + app.revoke_default_secs.max(1);
    // One answer for "never seen" and "another tenant's": no oracle for other tenants' tokens.
    let unknown = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "token_not_found",
            "no token of your tenant is known by this jti or text (a jti is known from the token's \
             first use until it expires; a token sent whole must verify); to revoke a token not \
             used yet, send it as `token`",
        )
    };
    let (jti, until) = match (req.jti, req.token) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "jti_and_token",
                "send `jti` or `token`, not both",
            ));
        }
        (None, None) => {
            let Some(own) = principal.jti.clone() else {
                return Err(ApiError::bad_request(
                    "no_jti",
                    "this token has no jti claim, so it cannot be revoked; tokens minted by \
                     `resk-server token` carry one",
                ));
            };
            (own.to_string(), principal.valid_until())
        }
        (Some(jti), None) => {
            principal.require(Scope::Admin)?;
            if jti.is_empty() || jti.chars().count() > crate::revoke::MAX_JTI_LEN {
                return Err(ApiError::bad_request(
                    "invalid_jti",
                    format!("jti must be 1-{} bytes", crate::revoke::MAX_JTI_LEN),
                ));
            }
            let seen = app
                .revocations
                .was_seen(&principal.tenant, &jti)
                .await
                .inspect_err(|e| backend_error(&app, "revoke", e))?;
            if !seen {
                return Err(unknown());
            }
            (jti, req.exp.unwrap_or(most).min(most))
        }
        (None, Some(token)) => {
            // A text that does not verify names no token of the caller's tenant: the same 404.
            let Ok(named) = app.verifier.verify(&token).await else {
                return Err(unknown());
            };
            if named.tenant != principal.tenant {
                return Err(unknown());
            }
            if named.subject != principal.subject {
                principal.require(Scope::Admin)?;
            }
            let Some(jti) = named.jti.clone() else {
                return Err(ApiError::bad_request(
                    "no_jti",
                    "that token has no jti claim, so it cannot be revoked",
                ));
            };
            (jti.to_string(), named.valid_until().min(most))
        }
    };
    app.revocations
        .revoke(&principal.tenant, &jti, until)
        .await
        .inspect_err(|e| backend_error(&app, "revoke", e))?;
    metrics::counter!("resk_tokens_revoked_total").increment(1);
    tracing::info!(
        audit = "token_revoked",
        subject = %principal.subject,
        tenant = %principal.tenant,
        jti = %jti,
        until,
        "token revoked"
    );
    Ok(Json(RevokeResponse {
        revoked: true,
        jti,
        until,
    }))
}

/// The subject a privacy request is about: the caller's own (needing `own_scope`), or another
/// subject of the caller's tenant (needing `cache:admin`).
fn privacy_subject(
    principal: &Principal,
    requested: Option<String>,
    own_scope: Scope,
) -> Result<String, ApiError> {
    match requested {
        Some(other) if other != *principal.subject => {
            principal.require(Scope::Admin)?;
            if other.is_empty() || other.chars().count() > 256 {
                return Err(ApiError::bad_request(
                    "invalid_subject",
                    "subject must be 1-256 characters",
                ));
            }
            Ok(other)
        }
        _ => {
            principal.require(own_scope)?;
            Ok(principal.subject.to_string())
        }
    }
}

/// `POST /api/privacy/export`: every entry a subject wrote or owns in the caller's tenant.
pub(crate) async fn privacy_export(
    State(app): State<Arc<AppState>>,
    principal: Principal,
    ApiJson(req): ApiJson<ExportRequest>,
) -> Result<Json<ExportResponse>, ApiError> {
    let subject = privacy_subject(&principal, req.subject, Scope::Read)?;
    let cursor = req
        .cursor
        .map(resk_core::ScanCursor::new)
        .transpose()
        .map_err(|_| {
            ApiError::bad_request(
                "invalid_cursor",
                format!(
                    "cursor must be 1-{} bytes: the `next` of a previous export answer",
                    resk_core::ScanCursor::MAX_LEN
                ),
            )
        })?;
    let (found, next) = crate::privacy::export(
        &app.cache,
        &principal.tenant,
        &subject,
        cursor,
        crate::privacy::EXPORT_BUDGET,
    )
    .await
    .map_err(|e| {
        // A cursor is a position in this tenant's walk; one the store cannot read names none.
        if e.kind() == resk_core::ErrorKind::InvalidInput {
            return ApiError::new(
                StatusCode::NOT_FOUND,
                "cursor_not_found",
                "no position of this export is known by this cursor; send the `next` of a \
                 previous answer, or start again without a cursor",
            );
        }
        backend_error(&app, "scan", &e);
        e.into()
    })?;
    let entries: Vec<ExportedEntry> = found
        .into_iter()
        .map(|(key, entry)| ExportedEntry {
            key: key.name().to_owned(),
            response: serde_json::from_str(entry.response.get()).unwrap_or_default(),
            created_at: rfc3339(entry.created_at),
            expires_at: rfc3339(entry.expires_at),
            visibility: if entry.owner.is_some() {
                Visibility::User
            } else {
                Visibility::Tenant
            },
            written_by_subject: entry.origin.subject.as_deref() == Some(subject.as_str()),
            query: entry.query,
        })
        .collect();
    metrics::counter!("resk_privacy_requests_total", "kind" => "export").increment(1);
    tracing::info!(
        audit = "privacy_export",
        subject = %principal.subject,
        tenant = %principal.tenant,
        data_subject_pseudonym = %app.keys.pseudonym("audit", &subject),
        entries = entries.len(),
        "subject's entries exported"
    );
    Ok(Json(ExportResponse {
        subject,
        count: entries.len(),
        entries,
        next: next.map(|c| c.as_str().to_owned()),
    }))
}

/// `POST /api/privacy/erase`: delete every entry a subject wrote or owns in the caller's tenant,
/// with their vectors.
pub(crate) async fn privacy_erase(
    State(app): State<Arc<AppState>>,
    principal: Principal,
    ApiJson(req): ApiJson<SubjectRequest>,
) -> Result<Json<EraseResponse>, ApiError> {
    let subject = privacy_subject(&principal, req.subject, Scope::Write)?;
    let keys = crate::privacy::subject_keys(&app.cache, &principal.tenant, &subject)
        .await
        .inspect_err(|e| backend_error(&app, "scan", e))?;
    let erased = crate::privacy::delete_all(
        &app.cache,
        app.semantic.as_deref(),
        &principal.tenant,
        &keys,
    )
    .await
    .inspect_err(|e| backend_error(&app, "delete", e))?;
    for key in &keys {
        app.hub
            .cache_event(
                &principal.tenant,
                serde_json::json!({ "event": "delete", "key": key.name() }),
            )
            .await;
    }
    metrics::counter!("resk_privacy_requests_total", "kind" => "erase").increment(1);
    tracing::info!(
        audit = "privacy_erase",
        subject = %principal.subject,
        tenant = %principal.tenant,
        data_subject_pseudonym = %app.keys.pseudonym("audit", &subject),
        erased,
        "subject's entries erased"
    );
    Ok(Json(EraseResponse {
        success: true,
        subject,
        erased,
    }))
}

/// The length of the keys the API hands out (hex HMAC-SHA-256).
const KEY_LEN: usize = 64;

/// `DELETE /api/cache/{key}`: remove one entry of the caller's tenant by the key a write returned.
pub(crate) async fn delete_entry(
    State(app): State<Arc<AppState>>,
    principal: Principal,
    Path(crate::api::KeyPath { key: name }): Path<crate::api::KeyPath>,
) -> Result<Json<DeleteResponse>, ApiError> {
    principal.require(Scope::Write)?;
    let well_formed = name.len() == KEY_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !well_formed {
        return Err(ApiError::bad_request(
            "invalid_key",
            "key must be the 64 lowercase hex characters a write returned",
        ));
    }
    let key = CacheKey::new(principal.tenant.clone(), name)
        .map_err(|e| ApiError::bad_request("invalid_key", e.message()))?;
    // Another subject's private entry is not deleted, even by someone who learnt its key; the
    // answer is the same as for a missing key.
    let found = app
        .cache
        .get(&key)
        .await
        .inspect_err(|e| backend_error(&app, "get", e))?;
    if let Some(value) = &found
        && let Ok(view) = CacheEntryView::parse(&value.bytes)
        && !view.readable_by(&principal.subject)
    {
        return Ok(Json(DeleteResponse {
            success: true,
            deleted: false,
        }));
    }
    let deleted = app
        .cache
        .delete(&key)
        .await
        .inspect_err(|e| backend_error(&app, "delete", e))?;
    if let Some(sem) = &app.semantic
        && let Err(err) = sem
            .delete(&principal.tenant, &[key.name().to_owned()])
            .await
    {
        semantic_error("delete", &err);
    }
    if deleted {
        app.hub
            .cache_event(
                &principal.tenant,
                serde_json::json!({ "event": "delete", "key": key.name() }),
            )
            .await;
    }
    Ok(Json(DeleteResponse {
        success: true,
        deleted,
    }))
}

/// `GET /health`: the process is up.
pub(crate) async fn health() -> Json<HealthResponse> {
    Json(HealthResponse { status: "ok" })
}

/// `GET /ready`: the backends answer.
pub(crate) async fn ready(
    State(app): State<Arc<AppState>>,
) -> Result<Json<ReadyResponse>, ApiError> {
    let name = app.cache.info().name;
    match app.cache.ping().await {
        Ok(()) => {
            let mut checks = serde_json::Map::new();
            checks.insert(name.into(), "ok".into());
            Ok(Json(ReadyResponse {
                status: "ready",
                checks,
            }))
        }
        Err(err) => {
            backend_error(&app, "ping", &err);
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "a backend is not reachable",
            )
            .with_details(serde_json::json!({ "checks": { name: err.message() } })))
        }
    }
}

/// `GET /api/metrics`: Prometheus text exposition.
pub(crate) async fn metrics(
    State(app): State<Arc<AppState>>,
) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.metrics.render(),
    )
}

/// `GET /api/openapi.json`.
pub(crate) async fn openapi(State(app): State<Arc<AppState>>) -> axum::response::Response {
    use axum::response::IntoResponse;
    Json(app.openapi.as_ref()).into_response()
}

/// The JSON 404 for unknown routes.
pub(crate) async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

/// The JSON 405 for known routes with another method.
pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}
