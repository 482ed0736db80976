//! Command line and environment, resolved once at start-up into typed configuration.
//!
//! Every flag has an environment variable of the same meaning (the names of the original Resk-Caching
//! project where it had one). Handlers never read the environment: they get a [`Config`].

use std::{net::IpAddr, sync::Arc, time::Duration};

pub use crate::{
    auth::{JwksConfig, JwtConfig, PublicKeyConfig},
    hub::WsLimits,
    ratelimit::RateLimitConfig,
    telemetry::{LogFormat, OtelArgs},
};
use clap::{Args, Parser, Subcommand, ValueEnum};
pub use resk::env::{
    CacheBackend, EmbeddingProvider, HfStyle, MemoryLimits, OpenAiStyle, ResilienceArgs,
    SemanticArgs, SqliteSync, StoreArgs, StoreConfig, VectorDbType, VectorMetric,
};
use resk_core::{Error, ErrorKind, Result, TenantId};
use zeroize::Zeroizing;

/// The well-known JWT secret of `--dev` mode. Public on purpose: dev mode is for a laptop, never a
/// deployment, and the server says so loudly when it uses it.
pub const DEV_JWT_SECRET: &str = "resk-dev-mode-secret-do-not-use-in-production";

/// Shortest accepted `JWT_SECRET`, in bytes (RFC 7518 §3.2: an HS256 key of at least 256 bits).
pub const MIN_JWT_SECRET_LEN: usize = 32;

/// resk-server: a JWT-protected, encrypted cache for LLM answers.
#[derive(Debug, Parser)]
#[command(
    name = "resk-server",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// What to run; without a subcommand the server starts.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Server options (also accepted after `serve`).
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
// Parsed once at start-up; boxing would only complicate every match on it.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Start the HTTP server (the default).
    Serve(ServeArgs),
    /// Find the similarity threshold that reaches a target precision on labelled query pairs.
    Calibrate(CalibrateArgs),
    /// Mint a short-lived HS256 token signed with JWT_SECRET (for local use and tests).
    Token(TokenArgs),
    /// Print a new random CACHE_ENCRYPTION_KEY (base64 of 32 bytes).
    Keygen,
    /// Re-seal every stored value under CACHE_ENCRYPTION_KEY (reading with it and
    /// CACHE_ENCRYPTION_PREVIOUS_KEYS), so a retired key can then be removed. Takes the server's
    /// configuration; safe while servers run.
    Reencrypt(ServeArgs),
}

/// A price: a finite, non-negative number.
fn price(value: &str) -> Result<f64, String> {
    match value.trim().parse::<f64>() {
        Ok(p) if p.is_finite() && p >= 0.0 => Ok(p),
        _ => Err(format!("{value:?} is not a price (a number >= 0)")),
    }
}

/// JWT settings shared by `serve` and `token`.
#[derive(Clone, Debug, Args)]
pub struct JwtArgs {
    /// HMAC secret (at least 32 / 48 / 64 bytes for HS256 / HS384 / HS512). Required unless a public
    /// key or a JWKS URL is set, or --dev.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// The one algorithm tokens signed with JWT_SECRET may use.
    #[arg(long, env = "JWT_ALGORITHM", value_enum, default_value = "hs256")]
    pub jwt_algorithm: HmacAlgorithm,
    /// PEM file of a public key (SPKI `PUBLIC KEY`, or `RSA PUBLIC KEY`) whose tokens are accepted.
    #[arg(long, env = "JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<std::path::PathBuf>,
    /// The one algorithm the public key verifies.
    #[arg(long, env = "JWT_PUBLIC_KEY_ALGORITHM", value_enum)]
    pub jwt_public_key_algorithm: Option<PublicAlgorithm>,
    /// Key id (`kid`) of the public key; tokens naming another `kid` are not checked with it.
    #[arg(long, env = "JWT_PUBLIC_KEY_ID")]
    pub jwt_public_key_id: Option<String>,
    /// JWKS URL of an identity provider (keys fetched on first use, cached, refreshed for an unknown
    /// `kid` at most once per JWT_JWKS_MIN_REFRESH_SECS and when older than JWT_JWKS_MAX_AGE_SECS).
    #[arg(long, env = "JWT_JWKS_URL")]
    pub jwt_jwks_url: Option<String>,
    /// Shortest time between two JWKS fetches.
    #[arg(long, env = "JWT_JWKS_MIN_REFRESH_SECS", default_value_t = 30)]
    pub jwt_jwks_min_refresh_secs: u64,
    /// Longest a fetched JWKS is used before it is fetched again.
    #[arg(long, env = "JWT_JWKS_MAX_AGE_SECS", default_value_t = 300)]
    pub jwt_jwks_max_age_secs: u64,
    /// Longest accepted token lifetime (`exp - iat`, or `exp - now` without `iat`), seconds; 0: no limit.
    #[arg(long, env = "JWT_MAX_LIFETIME_SECS", default_value_t = 86_400)]
    pub jwt_max_lifetime_secs: u64,
    /// Required `aud` claim, when set.
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Required `iss` claim, when set.
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Claim that names the tenant; tokens without it use the tenant `default`.
    #[arg(long, env = "JWT_TENANT_CLAIM", default_value = "tenant")]
    pub jwt_tenant_claim: String,
    /// Clock-skew leeway for `exp`, `nbf` and `iat`, in seconds.
    #[arg(long, env = "JWT_LEEWAY_SECS", default_value_t = 30)]
    pub jwt_leeway_secs: u64,
    /// Development mode: use a well-known JWT secret when JWT_SECRET is unset. Never in production.
    #[arg(long, env = "RESK_DEV", default_value_t = false)]
    pub dev: bool,
}

/// The HMAC algorithm of `JWT_SECRET`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum HmacAlgorithm {
    /// HMAC-SHA-256.
    Hs256,
    /// HMAC-SHA-384.
    Hs384,
    /// HMAC-SHA-512.
    Hs512,
}

impl HmacAlgorithm {
    /// The jsonwebtoken algorithm.
    pub fn algorithm(self) -> jsonwebtoken::Algorithm {
        match self {
            Self::Hs256 => jsonwebtoken::Algorithm::HS256,
            Self::Hs384 => jsonwebtoken::Algorithm::HS384,
            Self::Hs512 => jsonwebtoken::Algorithm::HS512,
        }
    }

    /// Shortest secret, bytes (RFC 7518 §3.2: at least the hash size).
    pub fn min_secret_len(self) -> usize {
        match self {
            Self::Hs256 => 32,
            Self::Hs384 => 48,
            Self::Hs512 => 64,
        }
    }
}

/// The algorithm of `JWT_PUBLIC_KEY_FILE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PublicAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    Rs384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    Rs512,
    /// RSASSA-PSS with SHA-256.
    Ps256,
    /// ECDSA P-256 with SHA-256.
    Es256,
    /// ECDSA P-384 with SHA-384.
    Es384,
    /// Ed25519.
    #[value(name = "eddsa")]
    EdDsa,
}

impl PublicAlgorithm {
    /// The jsonwebtoken algorithm.
    pub fn algorithm(self) -> jsonwebtoken::Algorithm {
        use jsonwebtoken::Algorithm as A;
        match self {
            Self::Rs256 => A::RS256,
            Self::Rs384 => A::RS384,
            Self::Rs512 => A::RS512,
            Self::Ps256 => A::PS256,
            Self::Es256 => A::ES256,
            Self::Es384 => A::ES384,
            Self::EdDsa => A::EdDSA,
        }
    }
}

/// Options of the server.
#[derive(Clone, Debug, Args)]
pub struct ServeArgs {
    /// Address to bind.
    #[arg(long, env = "HOST", default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port to listen on (0 picks a free one and logs it).
    #[arg(long, env = "PORT", default_value_t = 3000)]
    pub port: u16,
    /// JWT settings.
    #[command(flatten)]
    pub jwt: JwtArgs,
    /// Where entries live: backend, encryption, keys, TTLs.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Largest WebSocket message accepted from a client, in bytes.
    #[arg(long, env = "WS_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024)]
    pub ws_max_message_bytes: usize,
    /// Most channels one WebSocket connection may subscribe to.
    #[arg(long, env = "WS_MAX_SUBSCRIPTIONS", default_value_t = 32)]
    pub ws_max_subscriptions: usize,
    /// Messages queued for one slow WebSocket client before further ones are dropped (and counted).
    #[arg(long, env = "WS_SEND_QUEUE", default_value_t = 256)]
    pub ws_send_queue: usize,
    /// Seconds between server pings; a client that has not answered for two intervals is dropped.
    #[arg(long, env = "WS_PING_SECS", default_value_t = 30)]
    pub ws_ping_secs: u64,
    /// Most concurrent WebSocket connections per instance.
    #[arg(long, env = "WS_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub ws_max_connections: usize,
    /// Shorten each written TTL by a random share of up to this many percent (0-50), so entries
    /// written together do not all expire together; 0: exact TTLs.
    #[arg(long, env = "CACHE_TTL_JITTER_PERCENT", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=50))]
    pub cache_ttl_jitter_percent: u8,
    /// JSON Lines file of entries to store before listening (each line a `POST /api/cache` body plus
    /// `tenant`); a malformed line stops the start-up. See docs/operations.md.
    #[arg(long, env = "WARMUP_FILE")]
    pub warmup_file: Option<std::path::PathBuf>,
    /// Default grace period in seconds after an entry's TTL during which it is still served, flagged
    /// `stale: true` (stale-while-revalidate); a write's `stale_ttl` overrides it. 0: none.
    #[arg(long, env = "CACHE_STALE_TTL_SECS", default_value_t = 0)]
    pub cache_stale_ttl_secs: u64,
    /// Price of 1 000 LLM tokens in your currency, exported as the `resk_token_price_per_1k` gauge so
    /// dashboards turn `resk_tokens_saved_total` into money saved; 0: not priced.
    #[arg(long, env = "COST_PER_1K_TOKENS", default_value_t = 0.0, value_parser = price)]
    pub cost_per_1k_tokens: f64,
    /// How long an `Idempotency-Key` of a write is remembered, in seconds.
    #[arg(long, env = "IDEMPOTENCY_TTL_SECS", default_value_t = 86_400)]
    pub idempotency_ttl_secs: u64,
    /// How often to delete entries older than CACHE_MAX_TTL_SECS (written before it was lowered), in
    /// seconds; 0 turns the sweep off (such entries are still never served).
    #[arg(long, env = "RETENTION_SWEEP_SECS", default_value_t = 3600)]
    pub retention_sweep_secs: u64,
    /// Rate-limit window in milliseconds.
    #[arg(long, env = "RATE_LIMIT_WINDOW_MS", default_value_t = 900_000)]
    pub rate_limit_window_ms: u64,
    /// Requests allowed per subject (or IP, for unauthenticated requests) per window.
    #[arg(long, env = "RATE_LIMIT_MAX", default_value_t = 1000)]
    pub rate_limit_max: u32,
    /// Requests allowed per tenant (all its subjects together) per window; unset: no tenant quota.
    #[arg(long, env = "RATE_LIMIT_TENANT_MAX")]
    pub rate_limit_tenant_max: Option<u32>,
    /// Per-tenant quotas overriding RATE_LIMIT_TENANT_MAX: `tenant=max` pairs, comma-separated.
    #[arg(long, env = "RATE_LIMIT_TENANT_QUOTAS", default_value = "")]
    pub rate_limit_tenant_quotas: String,
    /// Most keys (subjects, addresses, tenants) the in-process limiter tracks at once.
    #[arg(long, env = "RATE_LIMIT_MAX_KEYS", default_value_t = 100_000)]
    pub rate_limit_max_keys: u64,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Longest accepted query, in characters.
    #[arg(long, env = "MAX_QUERY_CHARS", default_value_t = 10_000)]
    pub max_query_chars: usize,
    /// How many of the last conversation turns (`context` messages other than `system`) partition
    /// the cache; older ones are ignored.
    #[arg(long, env = "CONTEXT_TURNS", default_value_t = 8)]
    pub context_turns: usize,
    /// Whether `system` messages of a `context` partition the cache (a different system prompt,
    /// a different answer).
    #[arg(long, env = "CONTEXT_SYSTEM", default_value_t = true, action = clap::ArgAction::Set)]
    pub context_system: bool,
    /// Time limit for one request, in seconds.
    #[arg(long, env = "REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    pub request_timeout_secs: u64,
    /// How long shutdown waits for in-flight requests, in seconds.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,
    /// Time a client has to send a request's headers (and a TLS handshake), in seconds: slow
    /// clients (slowloris) are disconnected.
    #[arg(long, env = "HEADER_READ_TIMEOUT_SECS", default_value_t = 10)]
    pub header_read_timeout_secs: u64,
    /// Reverse proxies (IPs or CIDRs, comma-separated) whose `X-Forwarded-For` names the client;
    /// from any other peer the header is ignored.
    #[arg(long, env = "TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,
    /// Browser origins allowed to call the API cross-origin (comma-separated, exact
    /// `scheme://host[:port]`); none by default. `*` is refused.
    #[arg(long, env = "CORS_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub cors_allowed_origins: Vec<String>,
    /// PEM certificate chain: serve HTTPS (TLS 1.2 and 1.3, rustls) instead of HTTP.
    #[arg(long, env = "TLS_CERT")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of TLS_CERT.
    #[arg(long, env = "TLS_KEY")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Semantic caching.
    #[command(flatten)]
    pub semantic: SemanticArgs,
    /// The OpenAI-compatible gateway.
    #[command(flatten)]
    pub gateway: resk::env::GatewayArgs,
    /// Log filter (`info`, `debug`, `resk_server=debug,info`, …).
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Debugging only: put the raw query text in the debug-level query logs (otherwise they carry a
    /// keyed hash of it). Logs then hold what users asked; see docs/security.md.
    #[arg(long, env = "LOG_QUERY_TEXT", default_value_t = false, action = clap::ArgAction::Set)]
    pub log_query_text: bool,
    /// Serve the operator console at `/console` (its data still needs a `cache:admin` token).
    #[arg(long, env = "CONSOLE_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub console_enabled: bool,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,
    /// OpenTelemetry trace export.
    #[command(flatten)]
    pub otel: OtelArgs,
    /// Circuit breakers and bulkheads.
    #[command(flatten)]
    pub resilience: ResilienceArgs,
}

/// Options of `token`.
#[derive(Clone, Debug, Args)]
pub struct TokenArgs {
    /// JWT settings (the same variables the server reads).
    #[command(flatten)]
    pub jwt: JwtArgs,
    /// Subject (`sub`): who the token is for.
    #[arg(long, default_value = "dev-user")]
    pub sub: String,
    /// Space-separated scopes.
    #[arg(long, default_value = "cache:read cache:write")]
    pub scope: String,
    /// Tenant claim value; omitted: the `default` tenant.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Lifetime in seconds (at most 86400).
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub ttl: u64,
}

/// Options of `calibrate`.
#[derive(Clone, Debug, Args)]
pub struct CalibrateArgs {
    /// TSV file: `label<TAB>query a<TAB>query b`, label 1 = same answer, 0 = different.
    #[arg(long)]
    pub pairs: std::path::PathBuf,
    /// Precision the threshold must reach (0-1).
    #[arg(long, default_value_t = 0.95)]
    pub target_precision: f64,
    /// The embedder to calibrate (the same variables the server reads).
    #[command(flatten)]
    pub semantic: SemanticArgs,
}

fn config_err(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Config, "config", "load", message)
}

impl JwtArgs {
    /// Validate into a [`JwtConfig`].
    pub fn resolve(&self) -> Result<JwtConfig> {
        let mut public_keys = Vec::new();
        match (&self.jwt_public_key_file, self.jwt_public_key_algorithm) {
            (Some(path), Some(alg)) => {
                let pem = std::fs::read(path).map_err(|e| {
                    config_err(format!("JWT_PUBLIC_KEY_FILE {}: {e}", path.display()))
                })?;
                let key = PublicKeyConfig {
                    kid: self.jwt_public_key_id.clone().filter(|k| !k.is_empty()),
                    algorithm: alg.algorithm(),
                    pem,
                };
                crate::auth::decoding_key(&key).map_err(|e| {
                    config_err(format!(
                        "JWT_PUBLIC_KEY_FILE {} is not a {alg:?} public key in PEM: {e}",
                        path.display()
                    ))
                })?;
                public_keys.push(key);
            }
            (Some(_), None) => {
                return Err(config_err(
                    "JWT_PUBLIC_KEY_FILE needs JWT_PUBLIC_KEY_ALGORITHM (rs256, rs384, rs512, ps256, es256, es384 or eddsa)",
                ));
            }
            (None, Some(_)) => {
                return Err(config_err(
                    "JWT_PUBLIC_KEY_ALGORITHM is set without JWT_PUBLIC_KEY_FILE",
                ));
            }
            (None, None) => {}
        }
        let jwks = match self.jwt_jwks_url.as_deref().filter(|u| !u.is_empty()) {
            Some(url) if url.starts_with("https://") || url.starts_with("http://") => {
                Some(JwksConfig {
                    url: url.to_owned(),
                    min_refresh: Duration::from_secs(self.jwt_jwks_min_refresh_secs),
                    max_age: Duration::from_secs(self.jwt_jwks_max_age_secs.max(1)),
                })
            }
            Some(url) => {
                return Err(config_err(format!(
                    "JWT_JWKS_URL must be an http(s) URL (got {url:?})"
                )));
            }
            None => None,
        };
        let has_public = !public_keys.is_empty() || jwks.is_some();
        let alg = self.jwt_algorithm;
        let (secret, dev_secret) = match (&self.jwt_secret, self.dev) {
            (Some(s), _) => (Some(s.clone().into_bytes()), false),
            (None, _) if has_public => (None, false),
            (None, true) => (Some(DEV_JWT_SECRET.as_bytes().to_vec()), true),
            (None, false) => {
                return Err(config_err(
                    "JWT_SECRET is not set: set a secret of at least 32 bytes \
                     (e.g. `openssl rand -base64 48`), JWT_PUBLIC_KEY_FILE or JWT_JWKS_URL, or start \
                     with --dev (RESK_DEV=true) for local development",
                ));
            }
        };
        if let Some(secret) = &secret {
            let min = if dev_secret {
                MIN_JWT_SECRET_LEN
            } else {
                alg.min_secret_len()
            };
            if secret.len() < min {
                return Err(config_err(format!(
                    "JWT_SECRET is {} bytes; {alg:?} needs at least {min}",
                    secret.len()
                )));
            }
        }
        if self.jwt_tenant_claim.trim().is_empty() {
            return Err(config_err("JWT_TENANT_CLAIM must not be empty"));
        }
        Ok(JwtConfig {
            secret: secret.map(|s| Arc::new(Zeroizing::new(s))),
            hmac_algorithm: if dev_secret {
                jsonwebtoken::Algorithm::HS256
            } else {
                alg.algorithm()
            },
            public_keys,
            jwks,
            max_lifetime: (self.jwt_max_lifetime_secs > 0)
                .then(|| Duration::from_secs(self.jwt_max_lifetime_secs)),
            audience: self.jwt_audience.clone().filter(|s| !s.is_empty()),
            issuer: self.jwt_issuer.clone().filter(|s| !s.is_empty()),
            tenant_claim: self.jwt_tenant_claim.clone(),
            leeway: Duration::from_secs(self.jwt_leeway_secs),
            dev_secret,
        })
    }
}

/// Request limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest body, bytes.
    pub max_body_bytes: usize,
    /// Longest query, characters.
    pub max_query_chars: usize,
    /// Which part of a request's `context` partitions the cache.
    pub context: resk::ContextPolicy,
    /// Per-request time limit.
    pub request_timeout: Duration,
    /// Time limit of a gateway request until its answer begins: every upstream attempt and the
    /// waits between them, plus REQUEST_TIMEOUT_SECS for resk's own part.
    pub gateway_timeout: Duration,
}

/// `tenant=max,tenant=max` into a map; every tenant valid, every max at least 1.
fn parse_tenant_quotas(spec: &str) -> Result<std::collections::HashMap<TenantId, u32>> {
    let mut out = std::collections::HashMap::new();
    for pair in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = |why: &str| config_err(format!("RATE_LIMIT_TENANT_QUOTAS: \"{pair}\": {why}"));
        let (tenant, max) = pair
            .split_once('=')
            .ok_or_else(|| bad("expected tenant=max"))?;
        let tenant = TenantId::new(tenant.trim()).map_err(|e| bad(e.message()))?;
        let max: u32 = max
            .trim()
            .parse()
            .ok()
            .filter(|m| *m >= 1)
            .ok_or_else(|| bad("max must be a whole number of at least 1"))?;
        if out.insert(tenant, max).is_some() {
            return Err(bad("tenant named twice"));
        }
    }
    Ok(out)
}

/// Everything the server needs, validated.
#[derive(Clone)]
pub struct Config {
    /// Bind address.
    pub host: IpAddr,
    /// Port.
    pub port: u16,
    /// JWT verification.
    pub jwt: JwtConfig,
    /// WebSocket limits.
    pub ws: WsLimits,
    /// How often the retention sweep runs; `None`: never.
    pub retention_sweep: Option<Duration>,
    /// Whether query logs carry the raw query text (debugging) rather than its keyed hash.
    pub log_query_text: bool,
    /// Whether the operator console is served at `/console`.
    pub console: bool,
    /// How long an `Idempotency-Key` is remembered.
    pub idempotency_ttl: Duration,
    /// Most a written TTL is shortened by, in percent (TTL jitter).
    pub ttl_jitter_percent: u8,
    /// Price of 1 000 tokens (for the cost-saved estimate).
    pub cost_per_1k_tokens: f64,
    /// Default grace period after the TTL (stale-while-revalidate), in seconds.
    pub stale_ttl_secs: u64,
    /// Entries to store before listening.
    pub warmup_file: Option<std::path::PathBuf>,
    /// Circuit breakers and bulkheads.
    pub resilience: resk::resilience::ResilienceConfig,
    /// Rate limits.
    pub rate_limit: RateLimitConfig,
    /// Request limits.
    pub limits: Limits,
    /// Shutdown grace period.
    pub shutdown_grace: Duration,
    /// Time to receive a request's headers (and the TLS handshake).
    pub header_read_timeout: Duration,
    /// TLS, when configured.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Origins allowed cross-origin (CORS); empty: none.
    pub cors_origins: Vec<axum::http::HeaderValue>,
    /// Semantic caching (validated; `enabled = false` turns it off).
    pub semantic: SemanticArgs,
    /// The OpenAI-compatible gateway, when an upstream is configured.
    pub gateway: Option<resk::gateway::GatewayConfig>,
    /// Where entries live: backend, layer 1, encryption, keys, TTLs.
    pub store: StoreConfig,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("host", &self.host)
            .field("tls", &self.tls.is_some())
            .field("port", &self.port)
            .field("jwt", &self.jwt)
            .field("store", &self.store)
            .field("ws", &self.ws)
            .field("retention_sweep", &self.retention_sweep)
            .field("log_query_text", &self.log_query_text)
            .field("console", &self.console)
            .field("idempotency_ttl", &self.idempotency_ttl)
            .field("ttl_jitter_percent", &self.ttl_jitter_percent)
            .field("cost_per_1k_tokens", &self.cost_per_1k_tokens)
            .field("stale_ttl_secs", &self.stale_ttl_secs)
            .field("warmup_file", &self.warmup_file)
            .field("resilience", &self.resilience)
            .field("rate_limit", &self.rate_limit)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl ServeArgs {
    /// Validate every option; the first problem is returned as a `Config` error naming the variable.
    pub fn resolve(&self) -> Result<Config> {
        let jwt = self.jwt.resolve()?;
        let derived = match &jwt.secret {
            Some(secret) => Some(("JWT_SECRET", resk::env::derive_key_secret(secret)?)),
            None => None,
        };
        let store = self.store.resolve(derived)?;
        if self.cache_stale_ttl_secs > self.store.cache_max_ttl_secs {
            return Err(config_err(
                "CACHE_STALE_TTL_SECS must be at most CACHE_MAX_TTL_SECS",
            ));
        }
        if self.rate_limit_max == 0
            || self.rate_limit_window_ms == 0
            || self.rate_limit_tenant_max == Some(0)
        {
            return Err(config_err(
                "RATE_LIMIT_MAX, RATE_LIMIT_TENANT_MAX and RATE_LIMIT_WINDOW_MS must be at least 1",
            ));
        }
        if self.max_body_bytes < 1024 {
            return Err(config_err("MAX_BODY_BYTES must be at least 1024"));
        }
        if self.max_query_chars == 0 {
            return Err(config_err("MAX_QUERY_CHARS must be at least 1"));
        }
        if self.ws_max_message_bytes < 256
            || self.ws_max_subscriptions == 0
            || self.ws_send_queue == 0
            || self.ws_ping_secs == 0
            || self.ws_max_connections == 0
        {
            return Err(config_err(
                "WS_MAX_MESSAGE_BYTES must be at least 256, and WS_MAX_SUBSCRIPTIONS, WS_SEND_QUEUE, \
                 WS_PING_SECS and WS_MAX_CONNECTIONS at least 1",
            ));
        }
        self.semantic.validate()?;
        if self.request_timeout_secs == 0 {
            return Err(config_err("REQUEST_TIMEOUT_SECS must be at least 1"));
        }
        let gateway = self.gateway.resolve(|name| std::env::var(name).ok())?;
        let request_timeout = Duration::from_secs(self.request_timeout_secs);
        let gateway_timeout = gateway.as_ref().map_or(request_timeout, |g| {
            let attempts = g.timeouts.retry.max_retries.saturating_add(1);
            (g.timeouts.response + g.timeouts.retry.max)
                .saturating_mul(attempts)
                .saturating_add(request_timeout)
        });
        Ok(Config {
            host: self.host,
            port: self.port,
            jwt,
            ws: WsLimits {
                max_message_bytes: self.ws_max_message_bytes,
                max_subscriptions: self.ws_max_subscriptions,
                send_queue: self.ws_send_queue,
                ping_interval: Duration::from_secs(self.ws_ping_secs),
                max_connections: self.ws_max_connections,
            },
            log_query_text: self.log_query_text,
            console: self.console_enabled,
            idempotency_ttl: Duration::from_secs(self.idempotency_ttl_secs.max(1)),
            ttl_jitter_percent: self.cache_ttl_jitter_percent,
            cost_per_1k_tokens: self.cost_per_1k_tokens,
            stale_ttl_secs: self.cache_stale_ttl_secs,
            warmup_file: self.warmup_file.clone(),
            resilience: self.resilience.config(),
            retention_sweep: (self.retention_sweep_secs > 0)
                .then(|| Duration::from_secs(self.retention_sweep_secs)),
            rate_limit: RateLimitConfig {
                window: Duration::from_millis(self.rate_limit_window_ms),
                max: self.rate_limit_max,
                tenant_max: self.rate_limit_tenant_max,
                tenant_quotas: parse_tenant_quotas(&self.rate_limit_tenant_quotas)?,
                max_keys: self.rate_limit_max_keys.max(1),
            },
            limits: Limits {
                max_body_bytes: self.max_body_bytes,
                max_query_chars: self.max_query_chars,
                context: resk::ContextPolicy::new(self.context_turns, self.context_system),
                request_timeout,
                gateway_timeout,
            },
            shutdown_grace: Duration::from_secs(self.shutdown_grace_secs),
            header_read_timeout: Duration::from_secs(self.header_read_timeout_secs.max(1)),
            tls: self.tls()?,
            cors_origins: self.cors_origins()?,
            trusted_proxies: self
                .trusted_proxies
                .iter()
                .map(|p| p.trim())
                .filter(|p| !p.is_empty())
                .map(|p| {
                    p.parse::<ipnet::IpNet>()
                        .or_else(|_| p.parse::<IpAddr>().map(ipnet::IpNet::from))
                        .map_err(|_| {
                            config_err(format!(
                                "TRUSTED_PROXIES: {p:?} is not an IP address or CIDR"
                            ))
                        })
                })
                .collect::<Result<_>>()?,
            semantic: self.semantic.for_store(&store),
            gateway,
            store,
        })
    }
}

impl ServeArgs {
    /// `CORS_ALLOWED_ORIGINS`, each an exact origin: a scheme, a host, an optional port, nothing else.
    fn cors_origins(&self) -> Result<Vec<axum::http::HeaderValue>> {
        let mut out = Vec::new();
        for raw in &self.cors_allowed_origins {
            let origin = raw.trim();
            if origin.is_empty() {
                continue;
            }
            if origin == "*" {
                return Err(config_err(
                    "CORS_ALLOWED_ORIGINS: `*` is refused; list the origins that may call the API",
                ));
            }
            let rest = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"));
            let valid = rest.is_some_and(|host| {
                !host.is_empty()
                    && host.chars().all(|c| {
                        c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']')
                    })
            });
            if !valid {
                return Err(config_err(format!(
                    "CORS_ALLOWED_ORIGINS: {origin:?} is not an origin (scheme://host[:port], no path)"
                )));
            }
            out.push(
                axum::http::HeaderValue::from_str(origin)
                    .map_err(|_| config_err(format!("CORS_ALLOWED_ORIGINS: {origin:?}")))?,
            );
        }
        Ok(out)
    }

    /// The rustls configuration of `TLS_CERT` / `TLS_KEY`: TLS 1.3 and 1.2 (rustls offers only
    /// AEAD suites with forward secrecy), ALPN `h2` and `http/1.1`.
    fn tls(&self) -> Result<Option<Arc<rustls::ServerConfig>>> {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
        let (cert, key) = match (&self.tls_cert, &self.tls_key) {
            (None, None) => return Ok(None),
            (Some(c), Some(k)) => (c, k),
            _ => return Err(config_err("TLS_CERT and TLS_KEY go together")),
        };
        let certs = CertificateDer::pem_file_iter(cert)
            .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
            .map_err(|e| config_err(format!("TLS_CERT {}: {e}", cert.display())))?;
        if certs.is_empty() {
            return Err(config_err(format!(
                "TLS_CERT {} holds no certificate",
                cert.display()
            )));
        }
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| config_err(format!("TLS_KEY {}: {e}", key.display())))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| config_err(format!("TLS: {e}")))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| config_err(format!("TLS_CERT / TLS_KEY do not make a key pair: {e}")))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Some(Arc::new(config)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> ServeArgs {
        let mut all = vec!["resk-server"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).unwrap().serve
    }

    #[test]
    fn tls_needs_a_readable_certificate_and_key_pair() {
        let fixture = |n: &str| format!("{}/tests/fixtures/tls/{n}", env!("CARGO_MANIFEST_DIR"));
        let secret = "0123456789abcdef0123456789abcdef";
        let (cert, key, ca) = (fixture("cert.pem"), fixture("key.pem"), fixture("ca.pem"));
        let ok = parse(&[
            "--jwt-secret",
            secret,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ])
        .resolve()
        .unwrap();
        assert!(ok.tls.is_some());
        for (args, needle) in [
            (vec!["--tls-cert", cert.as_str()], "go together"),
            (
                vec!["--tls-cert", "/nonexistent.pem", "--tls-key", key.as_str()],
                "/nonexistent.pem",
            ),
            (
                vec!["--tls-cert", key.as_str(), "--tls-key", key.as_str()],
                "no certificate",
            ),
            (
                vec!["--tls-cert", ca.as_str(), "--tls-key", key.as_str()],
                "key pair",
            ),
        ] {
            let mut all = vec!["--jwt-secret", secret];
            all.extend(args);
            let err = parse(&all).resolve().unwrap_err();
            assert!(err.to_string().contains(needle), "{needle}: {err}");
        }
    }

    #[test]
    fn refuses_to_start_without_secret() {
        let err = parse(&[]).resolve().unwrap_err();
        assert!(err.to_string().contains("JWT_SECRET is not set"), "{err}");
    }

    #[test]
    fn dev_mode_uses_the_dev_secret() {
        let cfg = parse(&["--dev"]).resolve().unwrap();
        assert!(cfg.jwt.dev_secret);
    }

    #[test]
    fn short_secret_is_refused() {
        let err = parse(&["--jwt-secret", "short"]).resolve().unwrap_err();
        assert!(err.to_string().contains("at least 32"), "{err}");
    }

    #[test]
    fn bad_encryption_keys_are_clear() {
        let secret = "x".repeat(32);
        let err = parse(&["--jwt-secret", &secret, "--cache-encryption-key", "abc$"])
            .resolve()
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("CACHE_ENCRYPTION_KEY: encryption key is not valid base64"),
            "{err}"
        );
        let err = parse(&[
            "--jwt-secret",
            &secret,
            "--cache-encryption-key",
            "c2hvcnQ=",
        ])
        .resolve()
        .unwrap_err();
        assert!(err.to_string().contains("must decode to 32 bytes"), "{err}");
        let err = parse(&[
            "--jwt-secret",
            &secret,
            "--cache-encryption-previous-keys",
            "c2hvcnQ=",
        ])
        .resolve()
        .unwrap_err();
        assert!(
            err.to_string().contains("CACHE_ENCRYPTION_KEY is not"),
            "{err}"
        );
    }

    #[test]
    fn ttl_policy_is_validated() {
        let secret = "x".repeat(32);
        let err = parse(&["--jwt-secret", &secret, "--cache-default-ttl-secs", "0"])
            .resolve()
            .unwrap_err();
        assert!(err.to_string().contains("CACHE_DEFAULT_TTL_SECS"), "{err}");
    }

    #[test]
    fn micro_batch_windows_are_bounded() {
        let secret = "x".repeat(32);
        let ok = parse(&["--jwt-secret", &secret]).resolve().unwrap();
        assert_eq!(
            ok.semantic.embedding_batch_busy_window_ms,
            resk::env::DEFAULT_BUSY_WINDOW_MS
        );
        for flag in [
            "--embedding-batch-window-ms",
            "--embedding-batch-busy-window-ms",
        ] {
            let ok = parse(&["--jwt-secret", &secret, flag, "1000"]).resolve();
            assert!(ok.is_ok(), "{flag} 1000");
            let err = parse(&["--jwt-secret", &secret, flag, "1001"])
                .resolve()
                .unwrap_err();
            assert!(err.to_string().contains("at most 1000"), "{flag}: {err}");
        }
    }
}
