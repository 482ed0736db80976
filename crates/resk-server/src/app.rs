//! Wiring: state, router, middleware and the serve loop.

use std::{sync::Arc, time::Duration};

use aide::{
    axum::{
        ApiRouter,
        routing::{get_with, post_with},
    },
    openapi::{OpenApi, SecurityScheme},
    transform::TransformOperation,
};
use axum::{Json, Router, extract::DefaultBodyLimit, middleware, routing::get};
use metrics_exporter_prometheus::PrometheusHandle;
use resk::{semantic::Semantic, variants::SharedCounter};
use resk_core::{
    CacheStore, Error, ErrorKind, KeyBuilder, LocalBus, Result, SharedBus, SharedCacheStore,
};

use crate::{
    api::{
        DeleteResponse, HealthResponse, PurgeResponse, QueryResponse, ReadyResponse, WriteResponse,
    },
    auth::JwtVerifier,
    config::Config,
    error::ErrorBody,
    gate::{self, Gate},
    ratelimit::{LocalRateLimiter, RateLimiter},
    routes, telemetry,
    ws::Hub,
};

/// What every handler shares. Built once at start-up from a [`Config`].
pub struct AppState {
    /// The engine every handler calls.
    pub(crate) engine: resk::Cache,
    /// The engine's store stack, for the server's own records (revocations, idempotency keys).
    pub(crate) cache: SharedCacheStore,
    pub(crate) hub: Hub,
    pub(crate) keys: KeyBuilder,
    pub(crate) metrics: PrometheusHandle,
    pub(crate) openapi: Arc<OpenApi>,
    pub(crate) revocations: Arc<crate::revoke::Revocations>,
    /// The gate's verifier (shared verified-token cache), for tokens named in a revocation.
    pub(crate) verifier: JwtVerifier,
    /// Longest a revocation is kept: no token outlives it.
    pub(crate) revoke_default_secs: u64,
    /// How long an `Idempotency-Key` is remembered.
    pub(crate) idempotency_ttl: Duration,
}

/// The cache and the bus the server runs on.
#[derive(Clone, Debug)]
pub struct Backends {
    /// Where entries live (tiered and encrypted as configured).
    pub cache: SharedCacheStore,
    /// Where cache events and WebSocket messages travel: Redis pub/sub with the Redis backend, this
    /// process only otherwise.
    pub bus: SharedBus,
    /// Semantic lookups (embedder + vector store), when enabled.
    pub semantic: Option<Arc<Semantic>>,
    /// Round-robin variant turns shared by every instance (Redis), when available.
    pub turns: Option<Arc<dyn SharedCounter>>,
    /// A rate limiter shared by every instance (Redis), when available; otherwise each instance
    /// limits in-process.
    pub limiter: Option<Arc<dyn RateLimiter>>,
}

impl Backends {
    /// `cache` with an in-process bus and no semantic layer.
    pub fn local(cache: SharedCacheStore) -> Self {
        Self::on_bus(cache, Arc::new(LocalBus::default()))
    }

    /// `cache` and `bus`, no semantic layer, no shared counters.
    fn on_bus(cache: SharedCacheStore, bus: SharedBus) -> Self {
        Self {
            cache,
            bus,
            semantic: None,
            turns: None,
            limiter: None,
        }
    }

    /// The same backends with `semantic` lookups.
    #[must_use]
    pub fn with_semantic(mut self, semantic: Semantic) -> Self {
        self.semantic = Some(Arc::new(semantic));
        self
    }
}

/// Round-robin turns in Redis, shared by every instance on the same Redis and prefix.
#[cfg(feature = "cache-redis")]
#[derive(Debug)]
struct RedisTurns(resk_cache_redis::RedisStore);

#[cfg(feature = "cache-redis")]
impl SharedCounter for RedisTurns {
    fn next<'a>(
        &'a self,
        tenant: &'a resk_core::TenantId,
        name: &'a str,
    ) -> resk_core::BoxFuture<'a, Result<u64>> {
        Box::pin(self.0.next_turn(tenant, name, resk::variants::TURN_IDLE))
    }
}

/// Build the configured backends, with the semantic layer when enabled.
pub async fn build_backends(config: &Config) -> Result<Backends> {
    // The recorder before any backend: a metric handle taken before it exists records nothing,
    // ever (the bus, layer 1 and the breakers take theirs as they are built).
    telemetry::metrics_handle();
    let mut backends = build_cache(config).await?;
    if config.semantic.enabled {
        backends = backends
            .with_semantic(crate::semantic::build(&config.semantic, config.resilience).await?);
    }
    Ok(backends)
}

/// The cache and bus only (no embedder, no vector store): for maintenance commands.
pub(crate) async fn build_backends_without_semantic(config: &Config) -> Result<Backends> {
    build_cache(config).await
}

async fn build_cache(config: &Config) -> Result<Backends> {
    let built = resk::env::build_store(&config.store, config.resilience).await?;
    #[allow(unused_mut)] // unchanged without Redis
    let mut backends = Backends::on_bus(built.cache, built.bus);
    #[cfg(feature = "cache-redis")]
    if let Some(store) = built.redis {
        use crate::ratelimit::RedisRateLimiter;
        backends.turns = Some(Arc::new(RedisTurns(store.clone())));
        backends.limiter = Some(Arc::new(RedisRateLimiter::new(
            store,
            config.store.keys.clone(),
            &config.rate_limit,
        )));
    }
    Ok(backends)
}

/// A built application: the router plus the pieces the serve loop maintains.
pub struct App {
    /// The complete router, state applied.
    pub router: Router,
    limiter: Arc<dyn RateLimiter>,
    state: Arc<AppState>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

fn secured<'a>(op: TransformOperation<'a>, scope: &'static str) -> TransformOperation<'a> {
    op.security_requirement_scopes("bearer", [scope])
        .response::<400, Json<ErrorBody>>()
        .response::<401, Json<ErrorBody>>()
        .response::<403, Json<ErrorBody>>()
        .response::<429, Json<ErrorBody>>()
}

fn with_body(op: TransformOperation<'_>) -> TransformOperation<'_> {
    op.response::<413, Json<ErrorBody>>()
        .response::<415, Json<ErrorBody>>()
}

impl App {
    /// Build the application from `config`, with the configured backends.
    pub async fn build(config: &Config) -> Result<Self> {
        Self::with_backends(config, build_backends(config).await?)
    }

    /// Build the application around existing backends.
    pub fn with_backends(config: &Config, backends: Backends) -> Result<Self> {
        let Backends {
            cache,
            bus,
            semantic,
            turns,
            limiter,
        } = backends;
        // The recorder first: the handles registered below are bound to it.
        let metrics = telemetry::metrics_handle();
        aide::generate::infer_responses(false);
        aide::generate::on_error(|err| tracing::warn!(error = %err, "OpenAPI generation"));
        let limiter: Arc<dyn RateLimiter> =
            limiter.unwrap_or_else(|| Arc::new(LocalRateLimiter::new(&config.rate_limit)));
        let revoke_default_secs = config
            .jwt
            .max_lifetime
            .map_or(365 * 86_400, |d| d.as_secs())
            + config.jwt.leeway.as_secs();
        let revocations = Arc::new(crate::revoke::Revocations::new(
            cache.clone(),
            bus.clone(),
            Duration::from_secs(revoke_default_secs),
        ));
        if tokio::runtime::Handle::try_current().is_ok() {
            revocations.spawn_listener();
        }
        let verifier = JwtVerifier::new(&config.jwt);
        let gate = Arc::new(Gate {
            revocations: revocations.clone(),
            tls: config.tls.is_some(),
            trusted_proxies: config.trusted_proxies.clone(),
            verifier: verifier.clone(),
            limiter: limiter.clone(),
            rates: config.rate_limit.clone(),
            timeout: config.limits.request_timeout,
            auth_seconds: metrics::histogram!("resk_layer_duration_seconds", "layer" => "auth"),
            rate_limit_seconds: metrics::histogram!("resk_layer_duration_seconds", "layer" => "rate_limit"),
        });

        let protected = ApiRouter::new()
            .api_route(
                "/api/cache",
                post_with(routes::write_entry, |op| {
                    with_body(secured(op, "cache:write"))
                        .summary("Store an answer")
                        .description("Stores `response` under the canonical key of `query` in the caller's tenant. \
                             With an `Idempotency-Key` header a retry gets the first answer again (header \
                             `Idempotent-Replayed: true`) instead of writing again; the same key with another \
                             body is a 409.")
                        .response::<201, Json<WriteResponse>>()
                        .response::<409, Json<ErrorBody>>()
                        .response::<503, Json<ErrorBody>>()
                })
                .delete_with(routes::purge, |op| {
                    secured(op, "cache:admin")
                        .summary("Purge the caller's tenant")
                        .response::<200, Json<PurgeResponse>>()
                }),
            )
            .api_route(
                "/api/auth/revoke",
                post_with(routes::revoke, |op| {
                    with_body(secured(op, "cache:read"))
                        .summary("Revoke a token")
                        .description(
                            "Without `jti` or `token`: revokes the caller's own token (logout; any scope). \
                             With `jti`: revokes that token of the caller's tenant (needs `cache:admin`); \
                             a `jti` not seen in a token of the caller's tenant is a 404. With `token`: \
                             revokes that token, used or not (its own subject, or `cache:admin` of its \
                             tenant; another tenant's token is a 404). The revocation lasts until the \
                             token expires; every instance refuses the token, and closes its WebSockets, \
                             within 5 s, at once on this one.",
                        )
                        .response::<200, Json<crate::api::RevokeResponse>>()
                        .response::<404, Json<ErrorBody>>()
                        .response::<503, Json<ErrorBody>>()
                }),
            )
            .api_route(
                "/api/privacy/export",
                post_with(routes::privacy_export, |op| {
                    with_body(secured(op, "cache:read"))
                        .summary("Export a subject's entries")
                        .description(
                            "Every entry the subject wrote, or that is private to it, in the caller's tenant \
                             (GDPR access and portability). Without `subject`: the caller's own entries; \
                             another subject needs `cache:admin`. Each call reads a bounded stretch of the \
                             tenant: send the answer's `next` back as `cursor` until it is null.",
                        )
                        .response::<200, Json<crate::api::ExportResponse>>()
                        .response::<404, Json<ErrorBody>>()
                        .response::<503, Json<ErrorBody>>()
                }),
            )
            .api_route(
                "/api/privacy/erase",
                post_with(routes::privacy_erase, |op| {
                    with_body(secured(op, "cache:write"))
                        .summary("Erase a subject's entries")
                        .description(
                            "Deletes every entry the subject wrote, or that is private to it, in the caller's                              tenant, with their vectors (GDPR erasure). Without `subject`: the caller's own                              entries (`cache:write`); another subject needs `cache:admin`.",
                        )
                        .response::<200, Json<crate::api::EraseResponse>>()
                        .response::<503, Json<ErrorBody>>()
                }),
            )
            .api_route(
                "/api/cache/{key}",
                aide::axum::routing::delete_with(routes::delete_entry, |op| {
                    secured(op, "cache:write")
                        .summary("Delete one entry")
                        .description("Removes the entry of the caller's tenant under `key` (as returned by a write).")
                        .response::<200, Json<DeleteResponse>>()
                        .response::<503, Json<ErrorBody>>()
                }),
            )
            .api_route(
                crate::ws::ROUTE,
                get_with(crate::ws::upgrade, |op| {
                    secured(op, "cache:read")
                        .response::<426, Json<ErrorBody>>()
                        .summary("WebSocket pub/sub")
                        .description(
                            "Upgrades to a WebSocket (subprotocol `resk.v1`). Browsers pass the token as a \
                             `bearer.<jwt>` subprotocol. Messages: subscribe, unsubscribe, publish, ping; \
                             the server publishes cache events on the `cache` channel.",
                        )
                        // aide declares the 101 itself for the `WebSocketUpgrade` extractor.
                        .response::<503, Json<ErrorBody>>()
                }),
            )
            .api_route(
                "/api/cache/query",
                post_with(routes::query_entry, |op| {
                    with_body(secured(op, "cache:read"))
                        .summary("Look an answer up")
                        .description("A miss is a 200 with `hit: false`, not an error.")
                        .response::<200, Json<QueryResponse<'static>>>()
                }),
            );

        let public = ApiRouter::new()
            .api_route(
                "/health",
                get_with(routes::health, |op| {
                    op.summary("Liveness")
                        .response::<200, Json<HealthResponse>>()
                }),
            )
            .api_route(
                "/ready",
                get_with(routes::ready, |op| {
                    op.summary("Readiness: backends reachable")
                        .response::<200, Json<ReadyResponse>>()
                        .response::<503, Json<ErrorBody>>()
                }),
            )
            .route("/api/openapi.json", get(routes::openapi))
            .route("/api/metrics", get(routes::metrics));

        let mut api = OpenApi::default();
        let router = public.merge(protected).finish_api_with(&mut api, |t| {
            t.title("resk")
                .version(env!("CARGO_PKG_VERSION"))
                .description("A secure cache for LLM chatbot answers.")
                .security_scheme(
                    "bearer",
                    SecurityScheme::Http {
                        scheme: "bearer".into(),
                        bearer_format: Some("JWT".into()),
                        description: Some(
                            "HS256 JWT with `exp`, `sub`, and scopes in the `scope` claim".into(),
                        ),
                        extensions: Default::default(),
                    },
                )
        });
        let engine = engine(config, &cache, semantic.clone(), turns)?;
        telemetry::initialize_series(&telemetry::KnownLabels {
            backend: cache.info().name,
            semantic: semantic.as_deref().map(Semantic::providers),
        });
        metrics::gauge!("resk_token_price_per_1k").set(config.cost_per_1k_tokens);
        let hub = Hub::new(bus, config.ws);
        let state = Arc::new(AppState {
            engine,
            cache,
            hub,
            keys: config.store.keys.clone(),
            metrics,
            openapi: Arc::new(api),
            revocations,
            verifier,
            revoke_default_secs,
            idempotency_ttl: config.idempotency_ttl,
        });
        if let Some(every) = config.retention_sweep
            && tokio::runtime::Handle::try_current().is_ok()
        {
            spawn_retention_sweep(&state.engine, every);
        }
        let router = router
            .fallback(routes::not_found)
            .method_not_allowed_fallback(routes::method_not_allowed)
            .layer(DefaultBodyLimit::max(config.limits.max_body_bytes))
            .layer(middleware::from_fn_with_state(gate, gate::pipeline))
            .with_state(state.clone());
        // Outermost, so preflight requests (which carry no token) are answered here.
        let router = if config.cors_origins.is_empty() {
            router
        } else {
            use axum::http::{HeaderName, Method, header};
            router.layer(
                tower_http::cors::CorsLayer::new()
                    .allow_origin(tower_http::cors::AllowOrigin::list(
                        config.cors_origins.clone(),
                    ))
                    .allow_methods([Method::GET, Method::POST, Method::DELETE])
                    .allow_headers([
                        header::AUTHORIZATION,
                        header::CONTENT_TYPE,
                        HeaderName::from_static("x-correlation-id"),
                    ])
                    .expose_headers([
                        header::RETRY_AFTER,
                        HeaderName::from_static("ratelimit-limit"),
                        HeaderName::from_static("ratelimit-remaining"),
                        HeaderName::from_static("ratelimit-reset"),
                        HeaderName::from_static("x-correlation-id"),
                    ])
                    .allow_credentials(false)
                    .max_age(Duration::from_secs(600)),
            )
        };
        Ok(Self {
            router,
            limiter,
            state,
        })
    }

    /// Store the entries of a warm-up file through this app's write path (see [`crate::warmup`]).
    pub async fn warm_up(&self, path: &std::path::Path) -> Result<crate::warmup::WarmupReport> {
        crate::warmup::run(&self.state, path).await
    }
}

/// The engine over the assembled store: configuration turned into a [`resk::Cache`].
fn engine(
    config: &Config,
    cache: &SharedCacheStore,
    semantic: Option<Arc<Semantic>>,
    turns: Option<Arc<dyn SharedCounter>>,
) -> Result<resk::Cache> {
    let mut builder = resk::Cache::builder()
        .assembled_store(cache.clone())
        .keys(config.store.keys.clone())
        .ttl(config.store.ttl)
        .ttl_jitter_percent(config.ttl_jitter_percent)
        .stale_grace(Duration::from_secs(config.stale_ttl_secs))
        .max_query_chars(config.limits.max_query_chars)
        .log_query_text(config.log_query_text);
    if let Some(semantic) = semantic {
        builder = builder.semantic(semantic);
    }
    if let Some(turns) = turns {
        builder = builder.shared_turns(turns);
    }
    builder.build()
}

/// Delete entries older than `max_age` every `every` (first after one period), until the app is
/// dropped: the task holds its backends weakly, so it never keeps a cache or a vector index (and
/// the index's lock) alive after the app is gone. Entries are written with a TTL of at most
/// `max_age`, so this only finds entries written before `CACHE_MAX_TTL_SECS` was lowered.
fn spawn_retention_sweep(engine: &resk::Cache, every: Duration) {
    let engine = engine.downgrade();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(engine) = engine.upgrade() else {
                break;
            };
            let reserved =
                |tenant: &resk_core::TenantId| tenant.as_str() == crate::revoke::RESERVED_TENANT;
            match engine.sweep_retention(&reserved).await {
                Ok(0) => {}
                Ok(deleted) => {
                    metrics::counter!("resk_retention_deleted_entries_total").increment(deleted);
                    tracing::info!(
                        audit = "retention_sweep",
                        deleted,
                        "entries past the maximum retention deleted"
                    );
                }
                Err(err) => {
                    tracing::warn!(error = %err, "retention sweep failed; retrying next period");
                }
            }
        }
    });
}

/// Bind, serve until SIGINT/SIGTERM, then drain in-flight requests for at most the grace period.
pub async fn serve(config: Config) -> Result<()> {
    let app = App::build(&config).await?;
    if let Some(path) = &config.warmup_file {
        app.warm_up(path).await?;
    }
    if config.jwt.dev_secret {
        tracing::warn!(
            "DEV MODE: tokens are verified with the public development secret; \
             anyone can mint one. Never expose this server."
        );
    }
    if config.store.cipher.is_none() {
        tracing::warn!("CACHE_ENCRYPTION_KEY is not set: cached values are stored unencrypted");
    }
    if config.log_query_text {
        tracing::warn!(
            "LOG_QUERY_TEXT is on: debug logs carry what users ask, in clear. A debugging switch;              turn it off and treat these logs as personal data."
        );
    }
    let listener = tokio::net::TcpListener::bind((config.host, config.port))
        .await
        .map_err(|e| {
            Error::new(
                ErrorKind::Config,
                "server",
                "bind",
                format!("cannot listen on {}:{}: {e}", config.host, config.port),
            )
        })?;
    let local = listener.local_addr().map_err(|e| {
        Error::new(
            ErrorKind::Backend,
            "server",
            "bind",
            format!("no local address: {e}"),
        )
    })?;
    tracing::info!(address = %local, backend = ?config.store.backend, "resk-server listening");

    let grace = config.shutdown_grace;
    let tls = config.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    // Slowloris: a client that does not finish its headers in time is disconnected.
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(config.header_read_timeout);
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let builder = Arc::new(builder);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let signal = shutdown_signal();
    tokio::pin!(signal);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut signal => break,
        };
        let _ = stream.set_nodelay(true);
        let router = app.router.clone();
        let service =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                tower::ServiceExt::oneshot(router.clone(), req)
            });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        let handshake = config.header_read_timeout;
        tokio::spawn(async move {
            let result = match tls {
                None => {
                    let conn = builder.serve_connection_with_upgrades(
                        hyper_util::rt::TokioIo::new(stream),
                        service,
                    );
                    watcher.watch(conn).await
                }
                Some(acceptor) => {
                    let Ok(Ok(stream)) =
                        tokio::time::timeout(handshake, acceptor.accept(stream)).await
                    else {
                        metrics::counter!("resk_tls_handshake_failures_total").increment(1);
                        return;
                    };
                    let conn = builder.serve_connection_with_upgrades(
                        hyper_util::rt::TokioIo::new(stream),
                        service,
                    );
                    watcher.watch(conn).await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    tracing::info!("shutdown signal received; draining in-flight requests");
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("shutdown complete"),
        () = tokio::time::sleep(grace) => {
            tracing::warn!(grace_secs = grace.as_secs(), "grace period over; exiting with requests in flight");
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
