//! What every handler shares, built once at start-up (by `app`).

use std::{sync::Arc, time::Duration};

use aide::openapi::OpenApi;
use metrics_exporter_prometheus::PrometheusHandle;
use resk_core::{KeyBuilder, SharedCacheStore};

use crate::{auth::JwtVerifier, hub::Hub, revoke::Revocations};

/// What every handler shares. Built once at start-up from a [`crate::Config`].
pub(crate) struct AppState {
    /// The engine every handler calls.
    pub(crate) engine: resk::Cache,
    /// The OpenAI-compatible gateway over the engine, when an upstream is configured.
    pub(crate) gateway: Option<resk::gateway::Gateway>,
    /// The engine's store stack, for the server's own records (revocations, idempotency keys).
    pub(crate) cache: SharedCacheStore,
    pub(crate) hub: Hub,
    pub(crate) keys: KeyBuilder,
    pub(crate) metrics: PrometheusHandle,
    pub(crate) openapi: Arc<OpenApi>,
    pub(crate) revocations: Arc<Revocations>,
    /// The gate's verifier (shared verified-token cache), for tokens named in a revocation.
    pub(crate) verifier: JwtVerifier,
    /// Longest a revocation is kept: no token outlives it.
    pub(crate) revoke_default_secs: u64,
    /// How long an `Idempotency-Key` is remembered.
    pub(crate) idempotency_ttl: Duration,
    /// Whether the operator's views show query text (`LOG_QUERY_TEXT`).
    pub(crate) log_query_text: bool,
    /// Whether `/console` is served.
    pub(crate) console: bool,
    /// The configuration summary of `GET /api/admin/health` (no secrets).
    pub(crate) summary: serde_json::Value,
    /// When the app was built (uptime).
    pub(crate) started: std::time::Instant,
}
