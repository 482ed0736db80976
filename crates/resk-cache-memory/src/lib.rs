#![doc = include_str!("../README.md")]

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use moka::{Expiry, policy::EvictionPolicy, sync::Cache};
use resk_core::{
    BackendInfo, CacheKey, CacheStore, CachedValue, Capabilities, Error, ErrorKind, PurgeScope,
    Result, ScanCursor, ScanPage, SetOptions,
};

/// The scheme name of this backend.
pub const SCHEME: &str = "memory";

/// Which entries go first when the cache is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Eviction {
    /// TinyLFU admission with LRU eviction: keeps frequently used answers under scans (default).
    #[default]
    TinyLfu,
    /// Least recently used.
    Lru,
}

/// Configuration of a [`MemoryStore`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryConfig {
    /// Most entries held (default 100 000).
    pub max_entries: u64,
    /// Most bytes of values and keys held (default 256 MiB).
    pub max_bytes: u64,
    /// Eviction policy (default TinyLFU).
    pub eviction: Eviction,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            max_entries: 100_000,
            max_bytes: 256 * 1024 * 1024,
            eviction: Eviction::TinyLfu,
        }
    }
}

impl MemoryConfig {
    /// Set the entry bound.
    #[must_use]
    pub fn with_max_entries(mut self, n: u64) -> Self {
        self.max_entries = n;
        self
    }

    /// Set the byte bound.
    #[must_use]
    pub fn with_max_bytes(mut self, n: u64) -> Self {
        self.max_bytes = n;
        self
    }

    /// Set the eviction policy.
    #[must_use]
    pub fn with_eviction(mut self, eviction: Eviction) -> Self {
        self.eviction = eviction;
        self
    }
}

#[derive(Clone)]
struct Entry {
    bytes: Bytes,
    expires_at: Option<SystemTime>,
    ttl: Option<Duration>,
}

struct EntryExpiry;

impl Expiry<CacheKey, Entry> for EntryExpiry {
    fn expire_after_create(&self, _: &CacheKey, value: &Entry, _: Instant) -> Option<Duration> {
        value.ttl
    }

    fn expire_after_update(
        &self,
        _: &CacheKey,
        value: &Entry,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        value.ttl
    }
}

/// Per-entry bookkeeping moka does not see in the value's length (key, expiry, pointers).
const ENTRY_OVERHEAD: u64 = 96;

/// An in-process, bounded cache store.
#[derive(Clone)]
pub struct MemoryStore {
    cache: Cache<CacheKey, Entry, foldhash::fast::RandomState>,
    info: BackendInfo,
    max_bytes: u64,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("entries", &self.cache.entry_count())
            .field("weighted_size", &self.cache.weighted_size())
            .field("max_bytes", &self.max_bytes)
            .finish()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new(MemoryConfig::default())
    }
}

impl MemoryStore {
    /// A store with the given bounds. Zero bounds are raised to one.
    pub fn new(config: MemoryConfig) -> Self {
        let max_entries = config.max_entries.max(1);
        let max_bytes = config.max_bytes.max(1);
        let min_weight = (max_bytes / max_entries).max(1);
        let policy = match config.eviction {
            Eviction::TinyLfu => EvictionPolicy::tiny_lfu(),
            Eviction::Lru => EvictionPolicy::lru(),
        };
        let cache = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(move |key: &CacheKey, entry: &Entry| -> u32 {
                let size = weight_of(key, entry).max(min_weight);
                u32::try_from(size).unwrap_or(u32::MAX)
            })
            .expire_after(EntryExpiry)
            .eviction_policy(policy)
            // The engine's keys are HMAC digests under a secret (no client can aim them at one
            // bucket), and foldhash is seeded per process: safe here, and a fraction of the cost of
            // std's SipHash on every read.
            .build_with_hasher(foldhash::fast::RandomState::default());
        Self {
            cache,
            info: BackendInfo {
                name: SCHEME,
                capabilities: Capabilities::new(false, false, true),
            },
            max_bytes,
        }
    }

    /// Entries currently held (approximate until pending maintenance runs).
    pub fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }

    /// Weighted size currently held, in bytes (approximate until pending maintenance runs).
    pub fn weighted_size(&self) -> u64 {
        self.cache.weighted_size()
    }

    /// Run moka's pending maintenance (evictions, expirations) now; useful in tests and benchmarks.
    pub async fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks();
    }
}

fn weight_of(key: &CacheKey, entry: &Entry) -> u64 {
    (entry.bytes.len() + key.name().len() + key.tenant().as_str().len()) as u64 + ENTRY_OVERHEAD
}

impl CacheStore for MemoryStore {
    fn info(&self) -> &BackendInfo {
        &self.info
    }

    async fn get(&self, key: &CacheKey) -> Result<Option<CachedValue>> {
        let Some(entry) = self.cache.get(key) else {
            return Ok(None);
        };
        let value = CachedValue {
            bytes: entry.bytes,
            expires_at: entry.expires_at,
            source: SCHEME,
        };
        Ok((!value.is_expired()).then_some(value))
    }

    async fn set(&self, key: &CacheKey, value: Bytes, options: SetOptions) -> Result<bool> {
        let now = SystemTime::now();
        let entry = Entry {
            expires_at: options.ttl.map(|t| now + t),
            ttl: options.ttl,
            bytes: value,
        };
        if weight_of(key, &entry) > self.max_bytes {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                SCHEME,
                "set",
                format!(
                    "value of {} bytes exceeds the cache capacity",
                    entry.bytes.len()
                ),
            ));
        }
        if options.if_absent {
            // moka's entry API runs this under the key's lock: of concurrent writers one inserts
            // (or replaces an entry already expired), the others find its entry.
            let written = self
                .cache
                .entry_by_ref(key)
                .or_insert_with_if(
                    || entry,
                    |existing| existing.expires_at.is_some_and(|at| at <= now),
                )
                .is_fresh();
            return Ok(written);
        }
        self.cache.insert(key.clone(), entry);
        Ok(true)
    }

    async fn delete(&self, key: &CacheKey) -> Result<bool> {
        let now = SystemTime::now();
        Ok(self
            .cache
            .remove(key)
            .is_some_and(|e| e.expires_at.is_none_or(|at| at > now)))
    }

    async fn purge(&self, scope: &PurgeScope) -> Result<u64> {
        let matching: Vec<_> = self
            .cache
            .iter()
            .filter(|(key, _)| match scope {
                PurgeScope::Tenant(t) => key.tenant() == t,
                _ => true,
            })
            .map(|(key, _)| key)
            .collect();
        let mut removed = 0;
        for key in matching {
            if self.cache.remove(&*key).is_some() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    async fn scan(
        &self,
        scope: &PurgeScope,
        cursor: Option<&ScanCursor>,
        limit: usize,
    ) -> Result<ScanPage> {
        // moka iterates in no order: take the keys in scope after the cursor, then sort and cut.
        let after = cursor.map(ScanCursor::resume_key).transpose()?;
        let candidates = self
            .cache
            .iter()
            .filter(|(key, _)| scope.contains(key) && after.as_ref().is_none_or(|a| **key > *a))
            .map(|(key, entry)| {
                let value = CachedValue {
                    bytes: entry.bytes,
                    expires_at: entry.expires_at,
                    source: SCHEME,
                };
                ((*key).clone(), value)
            })
            .collect();
        resk_core::cache::scan_page(candidates, scope, cursor, limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use resk_core::TenantId;

    fn key(name: &str) -> CacheKey {
        CacheKey::new(TenantId::default_tenant(), name).unwrap()
    }

    #[tokio::test]
    async fn entry_bound_holds_for_small_values() {
        let store = MemoryStore::new(
            MemoryConfig::default()
                .with_max_entries(50)
                .with_max_bytes(1 << 20),
        );
        for i in 0..500 {
            store
                .set(
                    &key(&format!("k{i}")),
                    Bytes::from_static(b"v"),
                    resk_core::SetOptions::default(),
                )
                .await
                .unwrap();
        }
        store.run_pending_tasks().await;
        assert!(
            store.entry_count() <= 50,
            "entries: {}",
            store.entry_count()
        );
    }

    #[tokio::test]
    async fn byte_bound_holds_for_large_values() {
        let store = MemoryStore::new(
            MemoryConfig::default()
                .with_max_entries(1000)
                .with_max_bytes(1 << 20),
        );
        let value = Bytes::from(vec![7u8; 100 * 1024]);
        for i in 0..50 {
            store
                .set(
                    &key(&format!("k{i}")),
                    value.clone(),
                    resk_core::SetOptions::default(),
                )
                .await
                .unwrap();
        }
        store.run_pending_tasks().await;
        assert!(
            store.weighted_size() <= 1 << 20,
            "bytes: {}",
            store.weighted_size()
        );
        assert!(
            store.entry_count() <= 10,
            "entries: {}",
            store.entry_count()
        );
    }

    #[tokio::test]
    async fn value_larger_than_capacity_is_refused() {
        let store = MemoryStore::new(MemoryConfig::default().with_max_bytes(1024));
        let err = store
            .set(
                &key("big"),
                Bytes::from(vec![0u8; 4096]),
                resk_core::SetOptions::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(store.get(&key("big")).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn lru_policy_works() {
        let store = MemoryStore::new(MemoryConfig::default().with_eviction(Eviction::Lru));
        store
            .set(
                &key("a"),
                Bytes::from_static(b"1"),
                resk_core::SetOptions::default(),
            )
            .await
            .unwrap();
        assert_eq!(
            store.get(&key("a")).await.unwrap().unwrap().bytes,
            Bytes::from_static(b"1")
        );
    }
}
