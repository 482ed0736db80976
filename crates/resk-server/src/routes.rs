//! Handlers. Each reads as one straight line: authorise → validate → key → cache → respond.

use std::{sync::Arc, time::Duration};

use axum::{
    Json,
    extract::{Path, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use resk::{Lookup, Outcome, PutOptions};
use resk_core::{CacheKey, CacheStore};

use crate::{
    api::{
        DeleteResponse, EraseResponse, ExportRequest, ExportResponse, ExportedEntry,
        FeedbackRequest, FeedbackResponse, HealthResponse, KeyFields, Latency, PurgeResponse,
        QueryRequest, QueryResponse, ReadyResponse, RejectedCandidate, RevokeRequest,
        RevokeResponse, Source, SubjectRequest, Visibility, WriteRequest, WriteResponse, rfc3339,
    },
    auth::{Principal, Scope},
    error::ApiError,
    idempotency::{IdempotencyKey, Seen, Slot},
    json::{ApiJson, ApiJsonDigest},
    state::AppState,
};

fn backend_error(app: &AppState, op: &'static str, err: &resk_core::Error) {
    resk::record_backend_error(app.cache.info().name, op, err);
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// An engine error as the API answers it: a bad field of the request is a 400 whose code names
/// the field (the engine's error names it as its `op`).
fn engine_error(err: resk_core::Error) -> ApiError {
    if err.kind() != resk_core::ErrorKind::InvalidInput || err.backend() != "resk" {
        return err.into();
    }
    let code = match err.op() {
        "query" => "invalid_query",
        "language" => "invalid_language",
        "model" => "invalid_model",
        "threshold" => "invalid_threshold",
        "k" => "invalid_k",
        "ttl" | "max_age" => "invalid_ttl",
        "stale_ttl" => "invalid_stale_ttl",
        "response" => "invalid_response",
        "variants" => "invalid_variants",
        "params" => "invalid_params",
        "subject" => "invalid_subject",
        "context" => "invalid_context",
        _ => "invalid_input",
    };
    ApiError::bad_request(code, err.message().to_owned())
}

/// The engine's question for a request's key fields, asked by `principal`.
fn lookup<'a>(principal: &'a Principal, fields: KeyFields<'a>) -> Lookup<'a> {
    let KeyFields {
        query,
        language,
        model,
        params,
        visibility,
        context,
    } = fields;
    let mut lookup = Lookup::new(principal.tenant.clone(), query).subject(&*principal.subject);
    if let Some(language) = language {
        lookup = lookup.language(language);
    }
    if let Some(model) = model {
        lookup = lookup.model(model);
    }
    if let Some(params) = params {
        lookup = lookup.params(serde_json::Value::Object(params.clone()));
    }
    if visibility == Visibility::User {
        lookup = lookup.private();
    }
    if let Some(context) = context {
        lookup = lookup.context(context.messages());
    }
    lookup
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
        && let Seen::Replay(status, body) = slot.claim(&app.cache).await.inspect_err(|e| {
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
    let body = match store_entry(&app, &principal, &req).await {
        Ok(body) => body,
        Err(err) => {
            // Not answered: give the key up, so a retry runs rather than waits for it to lapse.
            if let Some(slot) = &slot
                && let Err(e) = slot.release(&app.cache).await
            {
                backend_error(&app, "idempotency", &e);
            }
            return Err(err);
        }
    };
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
    let mut ask = lookup(principal, req.key_fields());
    if req.semantic == Some(false) {
        ask = ask.semantic(false);
    }
    let mut options = PutOptions::new().origin("api");
    if let Some(ttl) = req.ttl {
        options = options.ttl(Duration::from_secs(ttl));
    }
    if let Some(stale_ttl) = req.stale_ttl {
        options = options.stale_ttl(Duration::from_secs(stale_ttl));
    }
    let stored = app
        .engine
        .put(&ask, &req.response, &options)
        .await
        .map_err(engine_error)?;
    let expires_at = rfc3339::string(stored.expires_at);
    app.hub
        .cache_event(
            &principal.tenant,
            serde_json::json!({ "event": "set", "key": stored.key.name(), "expires_at": expires_at }),
        )
        .await;
    Ok(WriteResponse {
        success: true,
        key: stored.key.name().to_owned(),
        ttl: stored.ttl.as_secs(),
        expires_at,
        stale_until: stored.stale_until.map(rfc3339::string),
        semantic_indexed: stored.semantic_indexed,
        semantic_error: stored.semantic_error,
    })
}

/// `POST /api/cache/query`.
pub(crate) async fn query_entry(
    State(app): State<Arc<AppState>>,
    principal: Principal,
    ApiJson(req): ApiJson<QueryRequest>,
) -> Result<Response, ApiError> {
    principal.require(Scope::Read)?;
    if req.ttl == Some(0) {
        return Err(ApiError::bad_request(
            "invalid_ttl",
            "ttl must be at least 1 second",
        ));
    }
    let mut ask = lookup(&principal, req.key_fields())
        .force_refresh(req.force_refresh)
        .allow_stale(req.allow_stale != Some(false))
        .semantic(req.semantic != Some(false));
    if let Some(max_age) = req.ttl {
        ask = ask.max_age(Duration::from_secs(max_age));
    }
    if let Some(threshold) = req.threshold {
        ask = ask.threshold(threshold);
    }
    if let Some(k) = req.k {
        ask = ask.top_k(usize::try_from(k).unwrap_or(usize::MAX));
    }
    if let Some(seed) = &req.seed {
        ask = ask.variant_seed(seed.as_str());
    }
    let outcome = app.engine.lookup(&ask).await.map_err(engine_error)?;
    let latency = |l: resk::Latency| Latency {
        key: ms(l.key),
        cache: ms(l.cache),
        embed: ms(l.embed),
        vector: ms(l.vector),
        total: ms(l.total),
    };
    let body = match &outcome {
        Outcome::Hit(hit) => QueryResponse {
            hit: true,
            source: match hit.source {
                resk::Source::Semantic => Some(Source::Semantic),
                resk::Source::Store(name) => Source::from_backend(name),
                _ => None,
            },
            response: Some(&hit.answer),
            key: Some(hit.key.name()),
            similarity: hit.similarity,
            matched_query: hit.matched_query.as_deref(),
            variant: hit.variant,
            created_at: Some(hit.created_at),
            expires_at: Some(hit.expires_at),
            degraded: hit.degraded,
            stale: hit.stale,
            verification: hit.verification.as_ref().map(Into::into),
            hit_id: hit.hit_id.as_deref(),
            rejected: Vec::new(),
            latency_ms: latency(hit.latency),
        },
        Outcome::Miss(miss) => QueryResponse {
            hit: false,
            source: None,
            response: None,
            key: None,
            similarity: None,
            matched_query: None,
            variant: None,
            created_at: None,
            expires_at: None,
            degraded: miss.degraded,
            stale: false,
            verification: None,
            hit_id: None,
            rejected: miss
                .rejected
                .iter()
                .map(|r| RejectedCandidate {
                    key: r.key.name().to_owned(),
                    similarity: r.similarity,
                    verification: (&r.verification).into(),
                })
                .collect(),
            latency_ms: latency(miss.latency),
        },
    };
    json_response(&body)
}

/// Serialise `body` straight into a response (the body may borrow from data the handler owns).
fn json_response<T: serde::Serialize>(body: &T) -> Result<Response, ApiError> {
    // Sized for a typical answer up front: growing from serde_json's default cost two
    // reallocations per hit.
    let mut bytes = Vec::with_capacity(1024);
    serde_json::to_writer(&mut bytes, body).map_err(|e| {
        tracing::error!(error = %e, "response serialisation failed");
        ApiError::internal()
    })?;
    let mut response = Response::new(axum::body::Body::from(bytes));
    let headers = response.headers_mut();
    // Room for every header the gate adds (security, correlation id, content length): the map is
    // allocated once instead of grown three times.
    headers.reserve(16);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// `POST /api/cache/feedback`: report a semantic hit right or wrong.
pub(crate) async fn feedback(
    State(app): State<Arc<AppState>>,
    principal: Principal,
    ApiJson(req): ApiJson<FeedbackRequest>,
) -> Result<Json<FeedbackResponse>, ApiError> {
    principal.require(Scope::Write)?;
    let recorded = app
        .engine
        .feedback(&principal.tenant, &req.hit_id, req.correct)
        .await
        .map_err(|err| match err.kind() {
            resk::ErrorKind::NotFound => ApiError::new(
                StatusCode::NOT_FOUND,
                "hit_not_found",
                err.message().to_owned(),
            ),
            _ => engine_error(err),
        })?;
    Ok(Json(FeedbackResponse {
        success: true,
        key: recorded.key.name().to_owned(),
        right: recorded.right,
        wrong: recorded.wrong,
        floor: recorded.bounds.floor,
        accept: recorded.bounds.accept,
    }))
}

/// `DELETE /api/cache`: purge the caller's tenant.
pub(crate) async fn purge(
    State(app): State<Arc<AppState>>,
    principal: Principal,
) -> Result<Json<PurgeResponse>, ApiError> {
    principal.require(Scope::Admin)?;
    let purged = app
        .engine
        .purge(&principal.tenant)
        .await
        .map_err(engine_error)?;
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
    let cursor = scan_cursor(req.cursor)?;
    let resk::Export {
        entries: found,
        next,
        ..
    } = app
        .engine
        .export_subject(&principal.tenant, &subject, cursor)
        .await
        .map_err(walk_error)?;
    let entries: Vec<ExportedEntry> = found
        .into_iter()
        .map(|(key, entry)| ExportedEntry {
            key: key.name().to_owned(),
            response: serde_json::from_str(entry.response.get()).unwrap_or_default(),
            created_at: rfc3339::string(entry.created_at),
            expires_at: rfc3339::string(entry.expires_at),
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

/// A cursor a client sent back (`None`: from the start); an empty or over-long one is a 400.
pub(crate) fn scan_cursor(text: Option<String>) -> Result<Option<resk_core::ScanCursor>, ApiError> {
    text.map(resk_core::ScanCursor::new)
        .transpose()
        .map_err(|_| {
            ApiError::bad_request(
                "invalid_cursor",
                format!(
                    "cursor must be 1-{} bytes: the `next` of a previous answer",
                    resk_core::ScanCursor::MAX_LEN
                ),
            )
        })
}

/// A failed walk of a tenant as the API answers it: a cursor is a position in this tenant's walk,
/// and one the store cannot read names none (404).
pub(crate) fn walk_error(e: resk_core::Error) -> ApiError {
    if e.kind() == resk_core::ErrorKind::InvalidInput {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "cursor_not_found",
            "no position of this walk is known by this cursor; send the `next` of a previous \
             answer, or start again without a cursor",
        );
    }
    e.into()
}

/// `POST /api/privacy/erase`: delete every entry a subject wrote or owns in the caller's tenant,
/// with their vectors.
pub(crate) async fn privacy_erase(
    State(app): State<Arc<AppState>>,
    principal: Principal,
    ApiJson(req): ApiJson<SubjectRequest>,
) -> Result<Json<EraseResponse>, ApiError> {
    let subject = privacy_subject(&principal, req.subject, Scope::Write)?;
    let resk::Erased { keys, erased, .. } = app
        .engine
        .erase_subject(&principal.tenant, &subject)
        .await
        .map_err(engine_error)?;
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
    // answer is the same as for a missing key. The tenant's administrator (who may purge it all)
    // deletes any entry of it.
    let deleted = if principal.has(Scope::Admin) {
        app.engine.remove(&key).await
    } else {
        app.engine.delete(&key, Some(&principal.subject)).await
    }
    .map_err(engine_error)?;
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
        crate::histograms::render(&app.metrics),
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
