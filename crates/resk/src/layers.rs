//! The store stack: a store behind its circuit breaker and bulkhead, under an optional layer 1,
//! under optional encryption — the one order every entry point uses.
//!
//! Encryption goes outermost, so layer 1 holds ciphertext too and nothing in process memory is
//! plaintext at rest; the breaker innermost, so layer 1 still answers while the store behind it
//! is refused. The stack is composed with generics (one virtual call for the whole stack, not one
//! per layer).

use std::{sync::Arc, time::Duration};

use resk_cache_tiered::{TieredConfig, TieredStore};
use resk_core::{CacheStore, SharedBus, SharedCacheStore};

use crate::resilience::{GuardedStore, ResilienceConfig};

/// A layer-1 cache in front of the store: entries are read from it first and written through it;
/// writes and deletes are announced on `bus` so every instance drops its stale copy.
#[derive(Clone, Debug)]
pub struct Layer1 {
    /// The fast store (usually a memory store).
    pub store: SharedCacheStore,
    /// Where invalidations travel (a local bus for one process, Redis pub/sub for many).
    pub bus: SharedBus,
    /// Longest an entry is kept in layer 1 (an invalidation lost on the bus is healed by then).
    pub max_ttl: Duration,
}

/// The layers around a store. Every field is optional; the default is the bare store.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Layers {
    /// Circuit breaker and bulkhead around the store (for stores across a network or a disk).
    pub resilience: Option<ResilienceConfig>,
    /// A layer-1 cache in front of the store.
    pub layer1: Option<Layer1>,
    /// Seal every value with this cipher (AES-256-GCM with [`crate::crypto::AesGcmCipher`]).
    #[cfg(feature = "encryption")]
    pub cipher: Option<resk_core::SharedCipher>,
}

/// `store` with `layers` around it.
pub fn stack<S: CacheStore>(store: S, layers: Layers) -> SharedCacheStore {
    match layers.resilience {
        Some(config) => with_layer1(GuardedStore::new(store, config), layers),
        None => with_layer1(store, layers),
    }
}

fn with_layer1<S: CacheStore>(store: S, layers: Layers) -> SharedCacheStore {
    match layers.layer1.clone() {
        Some(l1) => {
            let tiered = TieredStore::new(
                l1.store,
                store,
                l1.bus,
                TieredConfig::default().with_l1_max_ttl(l1.max_ttl),
            );
            sealed(tiered, layers)
        }
        None => sealed(store, layers),
    }
}

fn sealed<S: CacheStore>(store: S, layers: Layers) -> SharedCacheStore {
    #[cfg(feature = "encryption")]
    if let Some(cipher) = layers.cipher {
        return Arc::new(resk_crypto::EncryptedStore::new(store, cipher));
    }
    let _ = layers;
    Arc::new(store)
}
