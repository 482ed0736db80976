//! Token revocation by `jti`.
//!
//! A revocation is written to the cache backend itself, under the reserved tenant [`RESERVED_TENANT`]
//! (no token can name it), until the token's own expiry: on SQLite it survives restarts, on Redis every
//! instance sees it, and it is encrypted like every entry. The instance that revokes knows at once;
//! the others hear it over the bus (Redis pub/sub) and, should they miss the message, read the store
//! again for a `jti` they last saw unrevoked more than [`Revocations::RECHECK`] ago. So a revoked token
//! stops working everywhere within that bound even when the message is lost.
//!
//! A store that cannot be read does not lock every user out: the check fails open for tokens not
//! known to be revoked, counted in `resk_revocation_check_failures_total` and logged.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use resk_core::{BusEvent, CacheKey, Result, SharedBus, SharedCacheStore, TenantId};
use sha2::{Digest, Sha256};

/// The tenant revocations live in. Tokens naming it are refused, so no caller can read, overwrite or
/// purge them.
pub const RESERVED_TENANT: &str = "_resk";

/// Bus topic of revocation messages.
const TOPIC: &str = "auth.revoked";

/// Longest accepted `jti`, characters.
pub const MAX_JTI_LEN: usize = 256;

/// The revocation list.
#[derive(Clone)]
pub struct Revocations {
    store: SharedCacheStore,
    bus: SharedBus,
    tenant: TenantId,
    revoked: moka::sync::Cache<Box<str>, ()>,
    clear: moka::sync::Cache<Box<str>, ()>,
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
        Self {
            store,
            bus,
            tenant,
            revoked: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(max_lifetime.max(Duration::from_secs(1)))
                .build(),
            clear: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Self::RECHECK)
                .build(),
        }
    }

    fn key(&self, jti: &str) -> Result<CacheKey> {
        // Hashed: a jti is caller data and may hold any character.
        let digest = Sha256::digest(jti.as_bytes());
        let mut name = String::from("revoked:");
        for b in digest {
            name.push_str(&format!("{b:02x}"));
        }
        CacheKey::new(self.tenant.clone(), name)
    }

    /// Listen for revocations announced by other instances (call once, inside the runtime).
    pub fn spawn_listener(&self) {
        let mut rx = self.bus.subscribe_dyn();
        let revoked = self.revoked.clone();
        let clear = self.clear.clone();
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                match event {
                    BusEvent::Message(m) if &*m.topic == TOPIC => {
                        if let Ok(jti) = std::str::from_utf8(&m.payload) {
                            revoked.insert(jti.into(), ());
                            clear.invalidate(jti);
                        }
                    }
                    BusEvent::Message(_) => {}
                    // Messages may be lost: read the store again for every jti.
                    BusEvent::Gap => clear.invalidate_all(),
                }
            }
        });
    }

    /// Whether `jti` was revoked.
    pub async fn is_revoked(&self, jti: &str) -> bool {
        if self.revoked.contains_key(jti) {
            return true;
        }
        if self.clear.contains_key(jti) {
            return false;
        }
        let found = match self.key(jti) {
            Ok(key) => self.store.get_dyn(&key).await,
            Err(e) => Err(e),
        };
        match found {
            Ok(Some(_)) => {
                self.revoked.insert(jti.into(), ());
                true
            }
            Ok(None) => {
                self.clear.insert(jti.into(), ());
                false
            }
            Err(e) => {
                metrics::counter!("resk_revocation_check_failures_total").increment(1);
                tracing::warn!(error = %e, "could not read the revocation list; token accepted");
                false
            }
        }
    }

    /// Revoke `jti` until `until` (Unix seconds; the token's `exp` plus leeway).
    pub async fn revoke(&self, jti: &str, until: u64) -> Result<()> {
        let now = jsonwebtoken::get_current_timestamp();
        let ttl = Duration::from_secs(until.saturating_sub(now).max(1));
        let key = self.key(jti)?;
        self.store
            .set_dyn(&key, Bytes::from_static(b"1"), Some(ttl))
            .await?;
        self.revoked.insert(jti.into(), ());
        self.clear.invalidate(jti);
        if let Err(e) = self
            .bus
            .publish_dyn(TOPIC, Bytes::copy_from_slice(jti.as_bytes()))
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
