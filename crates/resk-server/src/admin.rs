//! The operator's API (`cache:admin`, always the caller's own tenant): the figures of the last hour,
//! the last semantic decisions, the tenant's entries, and the instance's health. The console
//! at `/console` is a page over these; they are plain JSON for any other tool too.

use std::{sync::Arc, time::Instant};

use axum::{Json, extract::State};
use resk::{
    CacheStore as _, VectorStore as _,
    activity::{Decision, Report},
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    api::{Visibility, rfc3339},
    auth::{Principal, Scope},
    error::ApiError,
    json::ApiQuery,
    state::AppState,
};

/// A `limit` parameter: `default` when absent, else 1-`max` (a 400 `invalid_limit` otherwise).
fn limit(asked: Option<u32>, default: u32, max: u32) -> Result<usize, ApiError> {
    let limit = asked.unwrap_or(default);
    if !(1..=max).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit must be 1-{max}"),
        ));
    }
    Ok(limit as usize)
}

/// `GET /api/admin/overview`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct OverviewResponse {
    /// The caller's tenant.
    pub tenant: String,
    /// This instance's figures for the tenant, per minute over the last hour.
    #[serde(flatten)]
    pub report: Report,
    /// The gateway's savings for the tenant since this instance started (absent without a
    /// gateway).
    pub gateway: Option<GatewayTotals>,
    /// Seconds this instance has been up (figures start with it).
    pub uptime_secs: u64,
}

/// The gateway's savings summed over models.
#[derive(Debug, Serialize, JsonSchema)]
pub struct GatewayTotals {
    /// Requests answered from the cache.
    pub hits: u64,
    /// Requests that went upstream.
    pub misses: u64,
    /// Prompt tokens not sent upstream.
    pub saved_prompt_tokens: u64,
    /// Completion tokens not generated.
    pub saved_completion_tokens: u64,
    /// Dollars not spent, by the price table.
    pub saved_usd: f64,
}

/// `GET /api/admin/decisions` parameters.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionsParams {
    /// How many, newest first (1-200, default 50).
    #[schemars(range(min = 1, max = 200))]
    pub limit: Option<u32>,
}

/// `GET /api/admin/decisions`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct DecisionsResponse {
    /// The tenant's last semantic decisions on this instance, newest first.
    pub decisions: Vec<Decision>,
    /// Whether query text is shown (`LOG_QUERY_TEXT`); otherwise only keyed hashes.
    pub query_text: bool,
}

/// `GET /api/admin/entries` parameters.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EntriesParams {
    /// Search: a key prefix, a subject, or (with `LOG_QUERY_TEXT`) text of the query.
    #[schemars(length(max = 200))]
    pub q: Option<String>,
    /// The `next` of a previous answer.
    #[schemars(length(min = 1, max = 2048))]
    pub cursor: Option<String>,
    /// Entries per page (1-100, default 25).
    #[schemars(range(min = 1, max = 100))]
    pub limit: Option<u32>,
}

/// One entry of `GET /api/admin/entries`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct EntryRow {
    /// Its key (delete it with `DELETE /api/cache/{key}`).
    pub key: String,
    /// The question, only with `LOG_QUERY_TEXT`.
    pub query: Option<String>,
    /// When it was written, RFC 3339.
    pub created_at: String,
    /// When it expires, RFC 3339.
    pub expires_at: String,
    /// Bytes stored (sealed, when encryption is on).
    pub size: usize,
    /// Who may read it.
    pub visibility: Visibility,
    /// The subject it is private to.
    pub owner: Option<String>,
    /// The subject that wrote it.
    pub written_by: Option<String>,
    /// How it arrived (`api`, `gateway`, `ingest`, `warmup`, …).
    pub origin: String,
    /// Right reports on its semantic hits.
    pub feedback_right: u32,
    /// Wrong reports on its semantic hits.
    pub feedback_wrong: u32,
}

/// `GET /api/admin/entries`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct EntriesResponse {
    /// The entries of this page, in key order.
    pub entries: Vec<EntryRow>,
    /// Send back as `cursor` for the next page; `null`: the walk is over.
    pub next: Option<String>,
    /// Whether query text is shown (`LOG_QUERY_TEXT`).
    pub query_text: bool,
}

/// One readiness check of `GET /api/admin/health`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Check {
    /// The dependency (`memory`, `sqlite`, `redis`, `tiered`, …).
    pub name: String,
    /// Whether it answered.
    pub ok: bool,
    /// How long it took, milliseconds.
    pub ms: f64,
    /// Why not, when not.
    pub error: Option<String>,
}

/// `GET /api/admin/health`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct AdminHealthResponse {
    /// `ready`, or `degraded` when a check failed or a breaker is not closed.
    pub status: &'static str,
    /// Readiness checks, run now.
    pub checks: Vec<Check>,
    /// Every circuit breaker of this instance.
    pub breakers: Vec<resk::resilience::BreakerStatus>,
    /// The build.
    pub build: Build,
    /// The configuration in effect (no secret, no key, no token).
    pub config: serde_json::Value,
    /// Seconds this instance has been up.
    pub uptime_secs: u64,
}

/// What was built.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Build {
    /// resk-server's version.
    pub version: &'static str,
    /// `release` or `debug`.
    pub profile: &'static str,
}

impl Build {
    pub(crate) const THIS: Build = Build {
        version: env!("CARGO_PKG_VERSION"),
        profile: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
    };
}

/// `GET /api/admin/overview`.
pub(crate) async fn overview(
    State(app): State<Arc<AppState>>,
    principal: Principal,
) -> Result<Json<OverviewResponse>, ApiError> {
    principal.require(Scope::Admin)?;
    let gateway = app.gateway.as_ref().map(|g| {
        let t = g.total_savings(&principal.tenant);
        GatewayTotals {
            hits: t.hits,
            misses: t.misses,
            saved_prompt_tokens: t.saved_prompt_tokens,
            saved_completion_tokens: t.saved_completion_tokens,
            saved_usd: t.saved_usd,
        }
    });
    Ok(Json(OverviewResponse {
        tenant: principal.tenant.as_str().to_owned(),
        report: app.engine.activity(&principal.tenant),
        gateway,
        uptime_secs: app.started.elapsed().as_secs(),
    }))
}

/// `GET /api/admin/decisions`.
pub(crate) async fn decisions(
    State(app): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(params): ApiQuery<DecisionsParams>,
) -> Result<Json<DecisionsResponse>, ApiError> {
    principal.require(Scope::Admin)?;
    let limit = limit(params.limit, 50, 200)?;
    Ok(Json(DecisionsResponse {
        decisions: app.engine.decisions(&principal.tenant, limit),
        query_text: app.log_query_text,
    }))
}

/// `GET /api/admin/entries`.
pub(crate) async fn entries(
    State(app): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(params): ApiQuery<EntriesParams>,
) -> Result<Json<EntriesResponse>, ApiError> {
    principal.require(Scope::Admin)?;
    let limit = limit(params.limit, 25, 100)?;
    let cursor = crate::routes::scan_cursor(params.cursor)?;
    let mut filter = resk::EntryFilter::default();
    if let Some(q) = params
        .q
        .map(|q| q.trim().to_owned())
        .filter(|q| !q.is_empty())
    {
        if q.chars().count() > 200 {
            return Err(ApiError::bad_request(
                "invalid_q",
                "q must be at most 200 characters",
            ));
        }
        filter.any = true;
        if q.bytes().all(|b| b.is_ascii_hexdigit()) {
            filter.key_prefix = Some(q.to_ascii_lowercase());
        }
        if app.log_query_text {
            filter.query_contains = Some(q.clone());
        }
        filter.subject = Some(q);
    }
    let page = app
        .engine
        .entries(&principal.tenant, &filter, cursor, limit)
        .await
        .map_err(crate::routes::walk_error)?;
    let entries = page
        .entries
        .into_iter()
        .map(|info| {
            let entry = info.entry;
            let (right, wrong) = entry
                .feedback
                .as_ref()
                .map_or((0, 0), |f| (f.right, f.wrong));
            EntryRow {
                key: info.key.name().to_owned(),
                query: app.log_query_text.then_some(entry.query),
                created_at: rfc3339::string(entry.created_at),
                expires_at: rfc3339::string(entry.expires_at),
                size: info.size,
                visibility: if entry.owner.is_some() {
                    Visibility::User
                } else {
                    Visibility::Tenant
                },
                owner: entry.owner,
                written_by: entry.origin.subject,
                origin: entry.origin.source,
                feedback_right: right,
                feedback_wrong: wrong,
            }
        })
        .collect();
    Ok(Json(EntriesResponse {
        entries,
        next: page.next.map(|c| c.as_str().to_owned()),
        query_text: app.log_query_text,
    }))
}

/// `GET /api/admin/health`.
pub(crate) async fn health(
    State(app): State<Arc<AppState>>,
    principal: Principal,
) -> Result<Json<AdminHealthResponse>, ApiError> {
    principal.require(Scope::Admin)?;
    let mut checks = vec![check(app.cache.info().name.to_owned(), app.cache.ping()).await];
    if let Some(semantic) = app.engine.semantic() {
        let name = format!("vector store ({})", semantic.vectors().info().name);
        checks.push(check(name, semantic.probe()).await);
    }
    let breakers = resk::resilience::breakers();
    let healthy = checks.iter().all(|c| c.ok)
        && breakers
            .iter()
            .all(|b| b.state == resk::resilience::BreakerState::Closed);
    Ok(Json(AdminHealthResponse {
        status: if healthy { "ready" } else { "degraded" },
        checks,
        breakers,
        build: Build::THIS,
        config: app.summary.clone(),
        uptime_secs: app.started.elapsed().as_secs(),
    }))
}

/// How long a readiness probe may take before it counts as failed.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Run one readiness probe, timed and bounded by [`PROBE_TIMEOUT`].
async fn check(name: String, probe: impl Future<Output = resk::Result<()>>) -> Check {
    let start = Instant::now();
    let result = match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
        Ok(result) => result.map_err(|e| e.message().to_owned()),
        Err(_) => Err(format!("no answer within {} s", PROBE_TIMEOUT.as_secs())),
    };
    Check {
        name,
        ok: result.is_ok(),
        ms: start.elapsed().as_secs_f64() * 1e3,
        error: result.err(),
    }
}

/// The configuration summary of `GET /api/admin/health`: what an operator checks, never a secret
/// (no key, no token, no URL: URLs may carry credentials).
pub(crate) fn summary(
    config: &crate::Config,
    backend: &str,
    semantic: Option<&resk::Semantic>,
) -> serde_json::Value {
    serde_json::json!({
        "backend": backend,
        // A layer 1 sits in front of a remote or durable store only.
        "layer1": config.store.l1_max_ttl.is_some()
            && config.store.backend != resk::env::CacheBackend::Memory,
        "encryption_at_rest": config.store.cipher.is_some(),
        "ttl_default_secs": config.store.ttl.default_ttl().as_secs(),
        "ttl_max_secs": config.store.ttl.max_ttl().as_secs(),
        "stale_ttl_secs": config.stale_ttl_secs,
        "semantic": semantic.map(|s| {
            let (embedder, vectors) = s.providers();
            serde_json::json!({
                "embedder": embedder,
                "vector_store": vectors,
                "threshold": s.threshold(),
                "accept": s.accept(),
                "top_k": s.top_k(),
                "verifiers": s.verifiers(),
                "target_error": s.target_error(),
            })
        }),
        "gateway": config.gateway.as_ref().map(|g| serde_json::json!({
            "upstreams": g.upstreams.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(),
            "allowed_models": g.allowed_models,
        })),
        "rate_limit": {
            "max": config.rate_limit.max,
            "window_ms": config.rate_limit.window.as_millis() as u64,
            "tenant_max": config.rate_limit.tenant_max,
        },
        "limits": {
            "max_body_bytes": config.limits.max_body_bytes,
            "max_query_chars": config.limits.max_query_chars,
            "request_timeout_ms": config.limits.request_timeout.as_millis() as u64,
        },
        "tls": config.tls.is_some(),
        "cors_origins": config.cors_origins.len(),
        "trusted_proxies": config.trusted_proxies.len(),
        "log_query_text": config.log_query_text,
        "breaker_failures": config.resilience.breaker_failures,
    })
}
