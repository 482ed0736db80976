//! Wiring: state, router, middleware and the serve loop.

use std::{net::SocketAddr, sync::Arc, time::Duration};

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
use resk_core::{
    CacheStore, Error, ErrorKind, KeyBuilder, SharedCacheStore, SharedCipher, TtlPolicy,
};
use resk_crypto::EncryptedStore;

use crate::{
    api::{HealthResponse, PurgeResponse, QueryResponse, ReadyResponse, Source, WriteResponse},
    auth::JwtVerifier,
    config::{CacheBackend, Config, Limits},
    error::ErrorBody,
    gate::{self, Gate},
    ratelimit::LocalRateLimiter,
    routes, telemetry,
};

/// What every handler shares. Built once at start-up from a [`Config`].
pub struct AppState {
    pub(crate) cache: SharedCacheStore,
    pub(crate) stats: Stats,
    pub(crate) source: Source,
    pub(crate) keys: KeyBuilder,
    pub(crate) ttl: TtlPolicy,
    pub(crate) limits: Limits,
    pub(crate) metrics: PrometheusHandle,
    pub(crate) openapi: Arc<OpenApi>,
}

/// Metric handles with fixed labels, registered once so the hot path skips the registry lookup.
pub(crate) struct Stats {
    pub(crate) hits: metrics::Counter,
    pub(crate) misses: metrics::Counter,
    pub(crate) writes: metrics::Counter,
    pub(crate) key_seconds: metrics::Histogram,
    pub(crate) cache_seconds: metrics::Histogram,
}

impl Stats {
    fn new(backend: &'static str) -> Self {
        Self {
            hits: metrics::counter!("resk_cache_lookups_total", "result" => "hit", "source" => backend),
            misses: metrics::counter!("resk_cache_lookups_total", "result" => "miss", "source" => backend),
            writes: metrics::counter!("resk_cache_writes_total", "backend" => backend),
            key_seconds: metrics::histogram!("resk_layer_duration_seconds", "layer" => "key"),
            cache_seconds: metrics::histogram!("resk_layer_duration_seconds", "layer" => "cache"),
        }
    }
}

#[cfg_attr(
    not(any(feature = "cache-memory", feature = "cache-sqlite")),
    allow(dead_code)
)]
fn wrap<S: CacheStore>(store: S, cipher: Option<SharedCipher>) -> SharedCacheStore {
    match cipher {
        Some(cipher) => Arc::new(EncryptedStore::new(store, cipher)),
        None => Arc::new(store),
    }
}

/// The start-up error for a backend named in configuration but left out of this build.
#[cfg_attr(
    all(feature = "cache-memory", feature = "cache-sqlite"),
    allow(dead_code)
)]
fn not_compiled(backend: &str, feature: &str) -> Error {
    Error::new(
        ErrorKind::Config,
        "config",
        "cache",
        format!("backend \"{backend}\" not compiled in; rebuild with --features {feature}"),
    )
}

/// Build the configured cache backend, wrapped in the encryption layer when a key is configured.
pub async fn build_cache(config: &Config) -> resk_core::Result<(SharedCacheStore, Source)> {
    match config.backend {
        CacheBackend::Memory => {
            #[cfg(feature = "cache-memory")]
            {
                use resk_cache_memory::{MemoryConfig, MemoryStore};
                let store = MemoryStore::new(
                    MemoryConfig::default()
                        .with_max_entries(config.memory.max_entries)
                        .with_max_bytes(config.memory.max_bytes),
                );
                Ok((wrap(store, config.cipher.clone()), Source::Memory))
            }
            #[cfg(not(feature = "cache-memory"))]
            {
                Err(not_compiled("memory", "cache-memory"))
            }
        }
        CacheBackend::Sqlite => {
            #[cfg(feature = "cache-sqlite")]
            {
                use resk_cache_sqlite::{Durability, SqliteConfig, SqliteStore};
                let durability = match config.sqlite_sync {
                    crate::config::SqliteSync::Full => Durability::Full,
                    crate::config::SqliteSync::Normal => Durability::Normal,
                };
                let store = SqliteStore::connect(
                    SqliteConfig::new(&config.sqlite_path).with_durability(durability),
                )
                .await?;
                Ok((wrap(store, config.cipher.clone()), Source::Sqlite))
            }
            #[cfg(not(feature = "cache-sqlite"))]
            {
                Err(not_compiled("sqlite", "cache-sqlite"))
            }
        }
        CacheBackend::Redis => {
            #[cfg(feature = "cache-redis")]
            {
                use resk_cache_redis::{RedisConfig, RedisStore};
                let store = RedisStore::connect(
                    RedisConfig::new(&config.redis_url).with_prefix(&config.redis_prefix),
                )
                .await?;
                Ok((wrap(store, config.cipher.clone()), Source::Redis))
            }
            #[cfg(not(feature = "cache-redis"))]
            {
                Err(not_compiled("redis", "cache-redis"))
            }
        }
    }
}

/// A built application: the router plus the pieces the serve loop maintains.
pub struct App {
    /// The complete router, state applied.
    pub router: Router,
    limiter: Arc<LocalRateLimiter>,
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
    /// Build the application from `config`, with the configured cache backend.
    pub async fn build(config: &Config) -> resk_core::Result<Self> {
        let (cache, source) = build_cache(config).await?;
        Ok(Self::with_cache(config, cache, source))
    }

    /// Build the application around an existing cache store.
    pub fn with_cache(config: &Config, cache: SharedCacheStore, source: Source) -> Self {
        aide::generate::infer_responses(false);
        aide::generate::on_error(|err| tracing::warn!(error = %err, "OpenAPI generation"));
        let limiter = Arc::new(LocalRateLimiter::new(config.rate_limit));
        let gate = Arc::new(Gate {
            verifier: JwtVerifier::new(&config.jwt),
            limiter: limiter.clone(),
            timeout: config.limits.request_timeout,
        });

        let protected = ApiRouter::new()
            .api_route(
                "/api/cache",
                post_with(routes::write_entry, |op| {
                    with_body(secured(op, "cache:write"))
                        .summary("Store an answer")
                        .description("Stores `response` under the canonical key of `query` in the caller's tenant.")
                        .response::<201, Json<WriteResponse>>()
                        .response::<503, Json<ErrorBody>>()
                })
                .delete_with(routes::purge, |op| {
                    secured(op, "cache:admin")
                        .summary("Purge the caller's tenant")
                        .response::<200, Json<PurgeResponse>>()
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
        let metrics = telemetry::metrics_handle();
        let stats = Stats::new(cache.info().name);
        let state = Arc::new(AppState {
            cache,
            stats,
            source,
            keys: config.keys.clone(),
            ttl: config.ttl,
            limits: config.limits,
            metrics,
            openapi: Arc::new(api),
        });
        let router = router
            .fallback(routes::not_found)
            .method_not_allowed_fallback(routes::method_not_allowed)
            .layer(DefaultBodyLimit::max(config.limits.max_body_bytes))
            .layer(middleware::from_fn_with_state(gate, gate::pipeline))
            .with_state(state);
        Self { router, limiter }
    }
}

/// Bind, serve until SIGINT/SIGTERM, then drain in-flight requests for at most the grace period.
pub async fn serve(config: Config) -> resk_core::Result<()> {
    let app = App::build(&config).await?;
    if config.jwt.dev_secret {
        tracing::warn!(
            "DEV MODE: tokens are verified with the public development secret; \
             anyone can mint one. Never expose this server."
        );
    }
    if config.cipher.is_none() {
        tracing::warn!("CACHE_ENCRYPTION_KEY is not set: cached values are stored unencrypted");
    }
    app.limiter.spawn_janitor(Duration::from_secs(60));
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
    tracing::info!(address = %local, backend = ?config.backend, "resk-server listening");

    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let server = axum::serve(
        listener,
        app.router
            .into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown_signal().await;
        tracing::info!("shutdown signal received; draining in-flight requests");
        let _ = stop_tx.send(true);
    });
    let grace = config.shutdown_grace;
    tokio::select! {
        result = std::future::IntoFuture::into_future(server) => {
            result.map_err(|e| Error::new(ErrorKind::Backend, "server", "serve", e.to_string()))?;
            tracing::info!("shutdown complete");
        }
        _ = async {
            let _ = stop_rx.wait_for(|stopped| *stopped).await;
            tokio::time::sleep(grace).await;
        } => {
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
