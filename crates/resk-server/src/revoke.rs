//! Token revocation by tenant and `jti`.
//!
//! A revocation is written to the cache backend itself, under the reserved tenant [`RESERVED_TENANT`]
//! (no token can name it), until the token's own expiry: on SQLite it survives restarts, on Redis every
//! instance sees it, and it is encrypted like every entry. The instance that revokes knows at once;
//! the others hear it over the bus (Redis pub/sub) and, should they miss the message, read the store
//! again for a `jti` they last saw unrevoked more than [`Revocations::RECHECK`] ago. So a revoked token
//! stops working everywhere within that bound even when the message is lost. WebSocket connections
//! opened with the token listen for the same message and check again on the same schedule, and
//! close (code 4001) when it is revoked.
//!
//! Revocations are scoped by tenant: a revocation names a tenant and a `jti`, and only a token of
//! that tenant with that `jti` is refused, so one tenant's administrator cannot revoke another
//! tenant's token, even knowing its `jti`. An administrator names a `jti` the deployment has seen
//! in a token of the caller's tenant (tokens are noted, pseudonymously, on their first verification
//! by an instance, until their expiry): any other `jti`, another tenant's included, is answered as
//! unknown (404), which says nothing of other tenants. A token never used yet is revoked by sending
//! the token itself, which proves its tenant.
//!
//! A store that cannot be read does not lock every user out: the check fails open for tokens not
//! known to be revoked, counted in `resk_revocation_check_failures_total` and logged.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use resk_core::{BusEvent, BusMessage, CacheKey, Result, SharedBus, SharedCacheStore, TenantId};
use sha2::{Digest, Sha256};

/// The tenant revocations live in. Tokens naming it are refused, so no caller can read, overwrite or
/// purge them.
pub const RESERVED_TENANT: &str = "_resk";

/// Bus topic of revocation messages; the payload is the token's [`ident`].
pub(crate) const TOPIC: &str = "auth.revoked";

/// Longest accepted `jti`, characters.
pub const MAX_JTI_LEN: usize = 256;

/// How a token is named across instances: `tenant/jti` (no tenant contains `/`).
pub(crate) fn ident(tenant: &TenantId, jti: &str) -> Box<str> {
    format!("{tenant}/{jti}").into()
}

/// The token a bus message announces as revoked, if it is a revocation.
pub(crate) fn announced(message: &BusMessage) -> Option<&str> {
    (&*message.topic == TOPIC)
        .then(|| std::str::from_utf8(&message.payload).ok())
        .flatten()
}

/// The revocation list.
#[derive(Clone)]
pub struct Revocations {
    store: SharedCacheStore,
    bus: SharedBus,
    tenant: TenantId,
    max_lifetime: Duration,
    revoked: moka::sync::Cache<Box<str>, (), foldhash::fast::RandomState>,
    clear: moka::sync::Cache<Box<str>, (), foldhash::fast::RandomState>,
}

impl std::fmt::Debug for Revocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revocations")
            .field("known_revoked", &self.revoked.entry_count())
            .finish_non_exhaustive()
    }
}

impl Revocations {
    /// How long a `jti` read as not revoked is trusted before the store is read again.
    pub const RECHECK: Duration = Duration::from_secs(5);

    /// A list kept in `store`, announced on `bus`; known revocations are remembered locally for at
    /// most `max_lifetime` (no token lives longer).
    pub fn new(store: SharedCacheStore, bus: SharedBus, max_lifetime: Duration) -> Self {
        let tenant = TenantId::new(RESERVED_TENANT).unwrap_or_else(|_| TenantId::default_tenant());
        let max_lifetime = max_lifetime.max(Duration::from_secs(1));
        Self {
            store,
            bus,
            tenant,
            max_lifetime,
            revoked: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(max_lifetime)
                // Names of verified tokens only (no client picks them freely): foldhash, not the
                // slower SipHash, on a map read by every request.
                .build_with_hasher(foldhash::fast::RandomState::default()),
            clear: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Self::RECHECK)
                .build_with_hasher(foldhash::fast::RandomState::default()),
        }
    }

    /// The store key of a record of kind `kind` (`revoked`, `seen`) about token `ident`. Hashed:
    /// a `jti` is caller data and may hold any character, and the store need not read tenants.
    fn key(&self, kind: &str, ident: &str) -> Result<CacheKey> {
        let digest = Sha256::digest(ident.as_bytes());
        let mut name = String::with_capacity(kind.len() + 1 + 64);
        name.push_str(kind);
        name.push(':');
        for b in digest {
            name.push_str(&format!("{b:02x}"));
        }
        CacheKey::new(self.tenant.clone(), name)
    }

    /// How long a record about a token living until `until` (Unix seconds) is kept: until then,
    /// at least a second, at most the longest token lifetime.
    fn ttl_until(&self, until: u64) -> Duration {
        let now = jsonwebtoken::get_current_timestamp();
        Duration::from_secs(until.saturating_sub(now).max(1)).min(self.max_lifetime)
    }

    /// Listen for revocations announced by other instances (call once, inside the runtime).
    pub fn spawn_listener(&self) {
        let mut rx = self.bus.subscribe_dyn();
        let revoked = self.revoked.clone();
        let clear = self.clear.clone();
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                match event {
                    BusEvent::Message(m) => {
                        if let Some(ident) = announced(&m) {
                            revoked.insert(ident.into(), ());
                            clear.invalidate(ident);
                        }
                    }
                    // Messages may be lost: read the store again for every jti.
                    BusEvent::Gap => clear.invalidate_all(),
                }
            }
        });
    }

    /// Whether the token `jti` of `tenant` was revoked.
    pub async fn is_revoked(&self, tenant: &TenantId, jti: &str) -> bool {
        self.is_revoked_ident(&ident(tenant, jti)).await
    }

    /// [`Revocations::is_revoked`] for a token's [`ident`].
    pub(crate) async fn is_revoked_ident(&self, ident: &str) -> bool {
        if self.revoked.contains_key(ident) {
            return true;
        }
        if self.clear.contains_key(ident) {
            return false;
        }
        let found = match self.key("revoked", ident) {
            Ok(key) => self.store.get_dyn(&key).await,
            Err(e) => Err(e),
        };
        match found {
            Ok(Some(_)) => {
                self.revoked.insert(ident.into(), ());
                true
            }
            Ok(None) => {
                self.clear.insert(ident.into(), ());
                false
            }
            Err(e) => {
                // Asked again after `RECHECK`, not on every request or WebSocket poll meanwhile.
                self.clear.insert(ident.into(), ());
                metrics::counter!("resk_revocation_check_failures_total").increment(1);
                tracing::warn!(error = %e, "could not read the revocation list; token accepted");
                false
            }
        }
    }

    /// Note that the token named `ident` ([`ident`]), valid until `until` (Unix seconds), was
    /// verified, so its tenant's administrators can revoke it by `jti`. Best effort: a store
    /// failure is logged, never the request's failure.
    pub(crate) async fn note_seen(&self, ident: &str, until: u64) {
        let written = match self.key("seen", ident) {
            Ok(key) => {
                self.store
                    .set_dyn(
                        &key,
                        Bytes::from_static(b"1"),
                        Some(self.ttl_until(until)).into(),
                    )
                    .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            tracing::warn!(error = %e, "could not note a verified token for revocation by jti");
        }
    }

    /// Whether a token `jti` of `tenant` was verified by some instance and has not expired.
    pub async fn was_seen(&self, tenant: &TenantId, jti: &str) -> Result<bool> {
        let key = self.key("seen", &ident(tenant, jti))?;
        Ok(self.store.get_dyn(&key).await?.is_some())
    }

    /// Revoke the token `jti` of `tenant` until `until` (Unix seconds; the token's `exp` plus
    /// leeway, at most the longest token lifetime from now).
    pub async fn revoke(&self, tenant: &TenantId, jti: &str, until: u64) -> Result<()> {
        let ident = ident(tenant, jti);
        let key = self.key("revoked", &ident)?;
        self.store
            .set_dyn(
                &key,
                Bytes::from_static(b"1"),
                Some(self.ttl_until(until)).into(),
            )
            .await?;
        self.revoked.insert(ident.clone(), ());
        self.clear.invalidate(&ident);
        if let Err(e) = self
            .bus
            .publish_dyn(TOPIC, Bytes::copy_from_slice(ident.as_bytes()))
            .await
        {
            // Stored: other instances find it within `RECHECK` anyway.
            tracing::warn!(error = %e, "could not announce a revocation on the bus");
        }
        Ok(())
    }
}

/// Shared handle.
pub type SharedRevocations = Arc<Revocations>;
