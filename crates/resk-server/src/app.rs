//! Wiring: state, router, middleware and the serve loop.

use std::{sync::Arc, time::Duration};

use aide::openapi::{OpenApi, SecurityScheme};
use axum::{Router, middleware};
use resk::{semantic::Semantic, variants::SharedCounter};
use resk_core::{CacheStore, Error, ErrorKind, LocalBus, Result, SharedBus, SharedCacheStore};

use crate::{
    auth::JwtVerifier,
    config::Config,
    gate::{self, Gate},
    hub::Hub,
    ratelimit::{LocalRateLimiter, RateLimiter},
    routes,
    state::AppState,
    telemetry,
};

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
            max_body_bytes: config.limits.max_body_bytes,
            gateway_timeout: config.limits.gateway_timeout,
            auth_seconds: metrics::histogram!("resk_layer_duration_seconds", "layer" => "auth"),
            rate_limit_seconds: metrics::histogram!("resk_layer_duration_seconds", "layer" => "rate_limit"),
        });

        let mut api = OpenApi::default();
        let router = crate::table::router().finish_api_with(&mut api, |t| {
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
        let gateway = match &config.gateway {
            Some(g) => Some(resk::gateway::Gateway::new(engine.clone(), g.clone())?),
            None => None,
        };
        telemetry::initialize_series(&telemetry::KnownLabels {
            backend: cache.info().name,
            semantic: semantic.as_deref().map(Semantic::providers),
        });
        metrics::gauge!("resk_token_price_per_1k").set(config.cost_per_1k_tokens);
        let hub = Hub::new(bus, config.ws);
        let summary = crate::admin::summary(config, cache.info().name, semantic.as_deref());
        let state = Arc::new(AppState {
            engine,
            gateway,
            cache,
            hub,
            keys: config.store.keys.clone(),
            metrics,
            openapi: Arc::new(api),
            revocations,
            verifier,
            revoke_default_secs,
            idempotency_ttl: config.idempotency_ttl,
            log_query_text: config.log_query_text,
            console: config.console,
            summary,
            started: std::time::Instant::now(),
        });
        if let Some(every) = config.retention_sweep
            && tokio::runtime::Handle::try_current().is_ok()
        {
            spawn_retention_sweep(&state.engine, every);
        }
        let router = router
            .fallback(routes::not_found)
            .method_not_allowed_fallback(routes::method_not_allowed)
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
                    // The request headers a listed origin asks for are allowed: OpenAI's browser
                    // SDK sends its own (`x-stainless-*`, `Cache-Control`, `x-resk-threshold`), and
                    // the origin list, bearer tokens and no credentials are what protect the API.
                    .allow_headers(tower_http::cors::AllowHeaders::mirror_request())
                    .expose_headers([
                        header::RETRY_AFTER,
                        header::AGE,
                        HeaderName::from_static("ratelimit-limit"),
                        HeaderName::from_static("ratelimit-remaining"),
                        HeaderName::from_static("ratelimit-reset"),
                        HeaderName::from_static("x-correlation-id"),
                        HeaderName::from_static("x-resk-cache"),
                        HeaderName::from_static("x-resk-cache-source"),
                        HeaderName::from_static("x-resk-cache-reason"),
                        HeaderName::from_static("x-resk-similarity"),
                        HeaderName::from_static("x-resk-coalesced"),
                        HeaderName::from_static("x-resk-hit-id"),
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
        .context_policy(config.limits.context)
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
