#![doc = include_str!("../README.md")]

use std::{
    fmt,
    hash::{BuildHasher, Hasher},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use resk_core::{
    BackendInfo, Bus, BusEvent, CacheKey, CacheStore, CachedValue, Capabilities, PurgeScope,
    Result, ScanCursor, ScanPage, SetOptions, SharedBus, TenantId,
};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tracing::Instrument as _;

/// Settings of a [`TieredStore`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TieredConfig {
    /// Longest time an entry stays in layer 1, whatever its own TTL: the bound on staleness should
    /// an invalidation be lost without the bus noticing.
    pub l1_max_ttl: Duration,
    /// Bus topic of the invalidations. Stores that share a layer 2 must share the topic; stores on
    /// different layer 2s sharing one bus must not.
    pub topic: String,
}

impl Default for TieredConfig {
    /// Layer-1 TTL capped at 5 minutes, topic `cache.invalidate`.
    fn default() -> Self {
        Self {
            l1_max_ttl: Duration::from_secs(300),
            topic: "cache.invalidate".into(),
        }
    }
}

impl TieredConfig {
    /// Set [`TieredConfig::l1_max_ttl`].
    #[must_use]
    pub fn with_l1_max_ttl(mut self, ttl: Duration) -> Self {
        self.l1_max_ttl = ttl;
        self
    }

    /// Set [`TieredConfig::topic`].
    #[must_use]
    pub fn with_topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = topic.into();
        self
    }
}

/// An invalidation as it travels on the bus (JSON, so it can be read with `redis-cli SUBSCRIBE`).
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Invalidation {
    /// The publishing store, so it skips its own messages.
    from: u64,
    /// Tenant of a key or a tenant purge; absent for a purge of everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tenant: Option<String>,
    /// Key name; absent for purges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
}

struct Shared<L1> {
    l1: L1,
    /// Bumped before every layer-1 eviction, local or remote; see `fill`.
    epoch: AtomicU64,
}

impl<L1: CacheStore> Shared<L1> {
    /// Evict what `msg` names from layer 1.
    async fn apply(&self, msg: &Invalidation) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        let tenant = msg.tenant.as_deref().map(TenantId::new);
        let result = match (tenant, msg.name.as_deref()) {
            (Some(Ok(tenant)), Some(name)) => match CacheKey::new(tenant, name) {
                Ok(key) => self.l1.delete(&key).await.map(|_| ()),
                Err(_) => self.l1.purge(&PurgeScope::All).await.map(|_| ()),
            },
            (Some(Ok(tenant)), None) => {
                self.l1.purge(&PurgeScope::Tenant(tenant)).await.map(|_| ())
            }
            // No tenant, or one this build cannot parse: drop everything rather than guess.
            _ => self.l1.purge(&PurgeScope::All).await.map(|_| ()),
        };
        if let Err(err) = result {
            tracing::warn!(error = %err, "layer-1 eviction failed");
        }
    }

    async fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if let Err(err) = self.l1.purge(&PurgeScope::All).await {
            tracing::warn!(error = %err, "layer-1 clear failed");
        }
    }
}

/// A layer-1 cache in front of a layer-2 cache, coherent across instances; see the crate docs.
pub struct TieredStore<L1, L2> {
    shared: Arc<Shared<L1>>,
    l2: L2,
    bus: SharedBus,
    config: TieredConfig,
    id: u64,
    info: BackendInfo,
    listener: JoinHandle<()>,
}

impl<L1: CacheStore, L2: CacheStore> fmt::Debug for TieredStore<L1, L2> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TieredStore")
            .field("l1", &self.shared.l1)
            .field("l2", &self.l2)
            .field("bus", &self.bus)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<L1, L2> Drop for TieredStore<L1, L2> {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// A random 64-bit id without a random-number dependency: std's hasher keys are random per process
/// and per `RandomState`.
fn random_id() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0x7265_736b);
    hasher.finish()
}

impl<L1: CacheStore, L2: CacheStore> TieredStore<L1, L2> {
    /// Tier `l1` in front of `l2`, listening on `bus` for other instances' invalidations.
    ///
    /// Must be called inside a tokio runtime (it spawns the listener task, stopped on drop).
    pub fn new(l1: L1, l2: L2, bus: SharedBus, config: TieredConfig) -> Self {
        // Registered at zero: an alert on failed invalidations sees the first one.
        metrics::counter!("resk_tiered_invalidations_failed_total").increment(0);
        let shared = Arc::new(Shared {
            l1,
            epoch: AtomicU64::new(0),
        });
        let id = random_id();
        let listener = tokio::spawn(listen(
            Arc::downgrade(&shared),
            bus.subscribe(),
            config.topic.clone(),
            id,
        ));
        let l2_caps = l2.info().capabilities;
        let l2_name = l2.info().name;
        Self {
            shared,
            l2,
            bus,
            config,
            id,
            // Layer 2's name: it is what `ping` checks and what readiness and metrics should name.
            info: BackendInfo {
                name: l2_name,
                capabilities: Capabilities::new(l2_caps.durable, l2_caps.shared, true),
            },
            listener,
        }
    }

    /// Layer 1.
    pub fn l1(&self) -> &L1 {
        &self.shared.l1
    }

    /// Layer 2.
    pub fn l2(&self) -> &L2 {
        &self.l2
    }

    /// Bump the epoch and evict locally, then tell the other instances.
    async fn invalidate(&self, tenant: Option<&TenantId>, name: Option<&str>) {
        let msg = Invalidation {
            from: self.id,
            tenant: tenant.map(|t| t.as_str().to_owned()),
            name: name.map(str::to_owned),
        };
        self.shared.apply(&msg).await;
        self.announce(&msg).await;
    }

    async fn announce(&self, msg: &Invalidation) {
        let payload = match serde_json::to_vec(msg) {
            Ok(payload) => Bytes::from(payload),
            Err(err) => {
                tracing::error!(error = %err, "invalidation not serialisable");
                return;
            }
        };
        if let Err(err) = self.bus.publish(&self.config.topic, payload).await {
            // Layer 2 is already right; other instances' layer 1 may serve the old value until the bus
            // reconnects (a gap clears them) or `l1_max_ttl` passes.
            metrics::counter!("resk_tiered_invalidations_failed_total").increment(1);
            tracing::warn!(error = %err, "invalidation not published");
        }
    }

    fn l1_ttl(&self, remaining: Option<Duration>) -> Duration {
        remaining.map_or(self.config.l1_max_ttl, |r| r.min(self.config.l1_max_ttl))
    }

    /// Copy a layer-2 value into layer 1, unless an invalidation ran meanwhile.
    async fn fill(&self, key: &CacheKey, value: &CachedValue, epoch_before_read: u64) {
        let remaining = value.remaining_ttl();
        if remaining == Some(Duration::ZERO) {
            return;
        }
        let shared = &self.shared;
        if shared.epoch.load(Ordering::SeqCst) != epoch_before_read {
            return;
        }
        let framed = CachedValue::frame(&value.bytes, value.expires_at);
        if shared
            .l1
            .set(
                key,
                framed,
                resk_core::SetOptions::ttl(self.l1_ttl(remaining)),
            )
            .await
            .is_err()
        {
            return;
        }
        // An invalidation that bumped the epoch after the check above may have evicted before our
        // set landed; undo, so layer 1 never keeps a value older than an eviction.
        if shared.epoch.load(Ordering::SeqCst) != epoch_before_read {
            let _ = shared.l1.delete(key).await;
        }
    }
}

async fn listen<L1: CacheStore>(
    shared: std::sync::Weak<Shared<L1>>,
    mut rx: resk_core::BusReceiver,
    topic: String,
    id: u64,
) {
    let received = metrics::counter!("resk_tiered_invalidations_total", "origin" => "remote");
    let cleared = metrics::counter!("resk_tiered_l1_clears_total");
    while let Some(event) = rx.recv().await {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        match event {
            BusEvent::Message(msg) if *msg.topic == *topic => {
                match serde_json::from_slice::<Invalidation>(&msg.payload) {
                    Ok(inv) if inv.from == id => {}
                    Ok(inv) => {
                        received.increment(1);
                        shared.apply(&inv).await;
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "malformed invalidation; clearing layer 1");
                        cleared.increment(1);
                        shared.clear().await;
                    }
                }
            }
            BusEvent::Message(_) => {}
            BusEvent::Gap => {
                cleared.increment(1);
                shared.clear().await;
            }
        }
    }
}

#[deny(clippy::missing_trait_methods)]
impl<L1: CacheStore, L2: CacheStore> CacheStore for TieredStore<L1, L2> {
    fn info(&self) -> &BackendInfo {
        &self.info
    }

    async fn get(&self, key: &CacheKey) -> Result<Option<CachedValue>> {
        match self
            .shared
            .l1
            .get(key)
            .instrument(tracing::debug_span!("cache.l1", op = "get"))
            .await
        {
            Ok(Some(held)) => {
                // Layer 1 holds the entry's own expiry in a header: its store-level TTL is capped.
                if let Some(value) = CachedValue::unframe(held.bytes, held.source)
                    && !value.is_expired()
                {
                    return Ok(Some(value));
                }
            }
            Ok(None) => {}
            Err(err) => tracing::warn!(error = %err, "layer-1 read failed; reading layer 2"),
        }
        let epoch = self.shared.epoch.load(Ordering::SeqCst);
        let value = self
            .l2
            .get(key)
            .instrument(tracing::debug_span!("cache.l2", op = "get"))
            .await?;
        if let Some(value) = &value {
            self.fill(key, value, epoch).await;
        }
        Ok(value)
    }

    async fn set(&self, key: &CacheKey, value: Bytes, options: SetOptions) -> Result<bool> {
        let ttl = options.ttl;
        let framed = CachedValue::frame(&value, ttl.map(|t| std::time::SystemTime::now() + t));
        // Layer 2 decides (`if_absent` is its atomic write); layer 1 follows what it decided.
        let written = self
            .l2
            .set(key, value, options)
            .instrument(tracing::debug_span!("cache.l2", op = "set"))
            .await?;
        if !written {
            return Ok(false);
        }
        let msg = Invalidation {
            from: self.id,
            tenant: Some(key.tenant().as_str().to_owned()),
            name: Some(key.name().to_owned()),
        };
        // Bump first so a concurrent fill of the old value undoes itself, then hold the new value.
        self.shared.epoch.fetch_add(1, Ordering::SeqCst);
        if self
            .shared
            .l1
            .set(key, framed, Some(self.l1_ttl(ttl)).into())
            .await
            .is_err()
        {
            // Too large for layer 1, say: at least do not keep the old value there.
            let _ = self.shared.l1.delete(key).await;
        }
        self.announce(&msg).await;
        Ok(true)
    }

    async fn delete(&self, key: &CacheKey) -> Result<bool> {
        let existed = self.l2.delete(key).await?;
        self.invalidate(Some(key.tenant()), Some(key.name())).await;
        Ok(existed)
    }

    async fn purge(&self, scope: &PurgeScope) -> Result<u64> {
        let purged = self.l2.purge(scope).await?;
        match scope {
            PurgeScope::Tenant(tenant) => self.invalidate(Some(tenant), None).await,
            _ => self.invalidate(None, None).await,
        }
        Ok(purged)
    }

    fn ping(&self) -> impl Future<Output = Result<()>> + Send {
        self.l2.ping()
    }

    /// Layer 2 holds every entry (layer 1 only a subset of it): walks read layer 2 alone and leave
    /// layer 1 as it is.
    fn scan(
        &self,
        scope: &PurgeScope,
        cursor: Option<&ScanCursor>,
        limit: usize,
    ) -> impl Future<Output = Result<ScanPage>> + Send {
        self.l2.scan(scope, cursor, limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalidations_have_a_compact_readable_form() {
        let msg = Invalidation {
            from: 7,
            tenant: Some("acme".into()),
            name: None,
        };
        let json = serde_json::to_string(&msg).unwrap();
        assert_eq!(json, r#"{"from":7,"tenant":"acme"}"#);
        assert_eq!(serde_json::from_str::<Invalidation>(&json).unwrap(), msg);
        assert_ne!(random_id(), random_id());
    }
}
