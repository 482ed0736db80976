//! [`CacheBuilder`]: assemble a [`Cache`] from a store and options, moka-style.

use std::{sync::Arc, time::Duration};

use resk_core::{
    CacheStore, Error, ErrorKind, KeyBuilder, Result, SharedBus, SharedCacheStore, TtlPolicy,
};
use zeroize::Zeroizing;

use crate::{
    Cache, ContextPolicy,
    cache::Inner,
    flight::Flights,
    layers::{Layer1, Layers},
    resilience::ResilienceConfig,
    semantic::Semantic,
    stats::Stats,
    variants::{SharedCounter, Turns},
};

/// Builds a [`Cache`]. Only a store and a key secret are required:
///
/// ```
/// use std::{sync::Arc, time::Duration};
/// use resk::{Cache, TtlPolicy, store::memory::MemoryStore};
///
/// # fn main() -> resk::Result<()> {
/// let cache = Cache::builder()
///     .store(MemoryStore::default())
///     .key_secret(b"a secret of at least thirty-two bytes!!")
///     .ttl(TtlPolicy::new(Duration::from_secs(3600), Duration::from_secs(7 * 86_400))?)
///     .stale_grace(Duration::from_secs(60))
///     .build()?;
/// # let _ = cache;
/// # Ok(())
/// # }
/// ```
///
/// Mistakes are [`ErrorKind::Config`] errors from [`CacheBuilder::build`] that name the fix: no
/// store, a key secret under 32 bytes (or none), an encryption key that is not 32 bytes of base64.
#[derive(Default)]
#[must_use]
pub struct CacheBuilder {
    store: Option<Stack>,
    layer1: Option<Layer1>,
    resilience: Option<ResilienceConfig>,
    encryption_key: Option<Zeroizing<String>>,
    #[cfg(feature = "encryption")]
    cipher: Option<resk_core::SharedCipher>,
    secret: Option<Zeroizing<Vec<u8>>>,
    keys: Option<KeyBuilder>,
    ttl: Option<TtlPolicy>,
    jitter_percent: u8,
    grace: Duration,
    max_query_chars: Option<usize>,
    context_policy: ContextPolicy,
    log_query_text: bool,
    semantic: Option<Arc<Semantic>>,
    shared_turns: Option<Arc<dyn SharedCounter>>,
}

/// The store as given: a concrete one (layers are composed around its type) or an assembled one.
enum Stack {
    /// Compose the layers around the store: the stack, and the bare store when the stack
    /// encrypts (re-encryption reads and writes ciphertext under every layer).
    Build(Box<dyn FnOnce(Layers) -> (SharedCacheStore, Option<SharedCacheStore>) + Send>),
    Ready(SharedCacheStore),
}

impl std::fmt::Debug for CacheBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheBuilder")
            .field("store", &self.store.is_some())
            .field("semantic", &self.semantic.is_some())
            .finish_non_exhaustive()
    }
}

fn config_error(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Config, "resk", "build", message)
}

/// The default most characters of a query.
pub const DEFAULT_MAX_QUERY_CHARS: usize = 10_000;

impl CacheBuilder {
    /// Where entries live: any [`CacheStore`] (`resk::store::memory::MemoryStore`, SQLite, Redis,
    /// your own). Layer 1, the circuit breaker and encryption are placed around it.
    pub fn store<S: CacheStore>(mut self, store: S) -> Self {
        self.store = Some(Stack::Build(Box::new(move |layers: Layers| {
            #[cfg(feature = "encryption")]
            if layers.cipher.is_some() {
                let store = Arc::new(store);
                let bare: SharedCacheStore = store.clone();
                return (crate::layers::stack(store, layers), Some(bare));
            }
            (crate::layers::stack(store, layers), None)
        })));
        self
    }

    /// A store stack assembled elsewhere (resk-server assembles its own from configuration): used
    /// as it is, so layer 1, resilience and encryption set on this builder are refused.
    pub fn assembled_store(mut self, store: SharedCacheStore) -> Self {
        self.store = Some(Stack::Ready(store));
        self
    }

    /// A layer-1 cache (usually a memory store) in front of the store, invalidated over `bus`
    /// across instances; entries stay in it at most `max_ttl`.
    pub fn layer1<S: CacheStore>(mut self, store: S, bus: SharedBus, max_ttl: Duration) -> Self {
        self.layer1 = Some(Layer1 {
            store: Arc::new(store),
            bus,
            max_ttl,
        });
        self
    }

    /// A circuit breaker and a bulkhead around the store.
    pub fn resilience(mut self, config: ResilienceConfig) -> Self {
        self.resilience = Some(config);
        self
    }

    /// Encrypt every value at rest with AES-256-GCM under this key (base64 of 32 bytes, e.g. from
    /// [`crate::crypto::MasterKey::generate_base64`]); the builder places encryption directly
    /// over the store, outside layer 1.
    #[cfg(feature = "encryption")]
    pub fn encryption_key(mut self, base64_key: &str) -> Self {
        self.encryption_key = Some(Zeroizing::new(base64_key.to_owned()));
        self
    }

    /// Encrypt every value at rest with `cipher` (e.g. an
    /// [`AesGcmCipher`](crate::crypto::AesGcmCipher) with previous keys for rotation).
    #[cfg(feature = "encryption")]
    pub fn cipher(mut self, cipher: resk_core::SharedCipher) -> Self {
        self.cipher = Some(cipher);
        self
    }

    /// The secret keys are computed with (HMAC-SHA-256): at least 32 random bytes, kept secret
    /// and stable (another secret finds none of the entries written before).
    pub fn key_secret(mut self, secret: impl AsRef<[u8]>) -> Self {
        self.secret = Some(Zeroizing::new(secret.as_ref().to_vec()));
        self
    }

    /// A key builder made elsewhere (instead of [`CacheBuilder::key_secret`]).
    pub fn keys(mut self, keys: KeyBuilder) -> Self {
        self.keys = Some(keys);
        self
    }

    /// Default and maximum TTL (default: 1 hour and 7 days).
    pub fn ttl(mut self, policy: TtlPolicy) -> Self {
        self.ttl = Some(policy);
        self
    }

    /// Shorten each written TTL by a random share of up to `percent` % (at most 50), so entries
    /// written together do not all expire together.
    pub fn ttl_jitter_percent(mut self, percent: u8) -> Self {
        self.jitter_percent = percent.min(50);
        self
    }

    /// Default grace period after the TTL during which an answer is still served, flagged stale
    /// (stale-while-revalidate). Default: none.
    pub fn stale_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Longest query accepted, in characters (default [`DEFAULT_MAX_QUERY_CHARS`]).
    pub fn max_query_chars(mut self, chars: usize) -> Self {
        self.max_query_chars = Some(chars);
        self
    }

    /// Which part of a lookup's context partitions the cache (default: system messages and the
    /// last 8 others).
    pub fn context_policy(mut self, policy: ContextPolicy) -> Self {
        self.context_policy = policy;
        self
    }

    /// Debug logs carry the query text instead of a keyed hash of it (a debugging switch).
    pub fn log_query_text(mut self, on: bool) -> Self {
        self.log_query_text = on;
        self
    }

    /// Semantic search: an exact miss looks for a cached paraphrase with this layer's embedder
    /// and vector store (see [`Semantic::new`], which checks the collection's dimensions).
    pub fn semantic(mut self, semantic: impl Into<Arc<Semantic>>) -> Self {
        self.semantic = Some(semantic.into());
        self
    }

    /// A counter every instance shares (Redis), for round-robin variants; in-process otherwise.
    pub fn shared_turns(mut self, counter: Arc<dyn SharedCounter>) -> Self {
        self.shared_turns = Some(counter);
        self
    }

    /// The cache, or a `Config` error naming what to fix.
    pub fn build(self) -> Result<Cache> {
        let keys = match (self.keys, self.secret) {
            (Some(keys), _) => keys,
            (None, Some(secret)) => KeyBuilder::new(&secret).map_err(|_| {
                config_error(format!(
                    "the key secret is {} bytes; it must be at least {}: use 32 random bytes",
                    secret.len(),
                    KeyBuilder::MIN_SECRET_LEN
                ))
            })?,
            (None, None) => {
                return Err(config_error(
                    "no key secret: call .key_secret(..) with at least 32 random bytes",
                ));
            }
        };
        #[cfg(feature = "encryption")]
        let cipher = match (self.cipher, self.encryption_key) {
            (Some(cipher), _) => Some(cipher),
            (None, Some(text)) if text.trim().is_empty() => {
                return Err(config_error(
                    "encryption asked for without a key: pass base64 of 32 random bytes \
                     (resk::crypto::MasterKey::generate_base64())",
                ));
            }
            (None, Some(text)) => {
                let key = resk_crypto::MasterKey::from_base64(text.trim()).map_err(|e| {
                    config_error(format!("the encryption key is unusable: {}", e.message()))
                })?;
                Some(Arc::new(resk_crypto::AesGcmCipher::new(key)) as resk_core::SharedCipher)
            }
            (None, None) => None,
        };
        #[cfg(not(feature = "encryption"))]
        let _ = self.encryption_key;
        let layers = Layers {
            resilience: self.resilience,
            layer1: self.layer1,
            #[cfg(feature = "encryption")]
            cipher: cipher.clone(),
        };
        let (store, raw) = match self.store {
            None => {
                return Err(config_error(
                    "no store: call .store(..) with a CacheStore, e.g. \
                     resk::store::memory::MemoryStore::default()",
                ));
            }
            Some(Stack::Ready(store)) => {
                let layered = layers.resilience.is_some() || layers.layer1.is_some();
                #[cfg(feature = "encryption")]
                let layered = layered || layers.cipher.is_some();
                if layered {
                    return Err(config_error(
                        "an assembled store takes no layers: set layer 1, resilience and \
                         encryption when assembling it, or pass the bare store to .store(..)",
                    ));
                }
                (store, None)
            }
            Some(Stack::Build(build)) => build(layers),
        };
        let backend = store.info().name;
        Ok(Cache {
            inner: Arc::new(Inner {
                stats: Stats::new(backend),
                activity: Default::default(),
                store,
                raw,
                #[cfg(feature = "encryption")]
                cipher,
                keys,
                ttl: match self.ttl {
                    Some(ttl) => ttl,
                    None => default_ttl()?,
                },
                jitter_percent: self.jitter_percent,
                grace: self.grace,
                max_query_chars: self.max_query_chars.unwrap_or(DEFAULT_MAX_QUERY_CHARS),
                context_policy: self.context_policy,
                log_query_text: self.log_query_text,
                semantic: self.semantic,
                turns: Turns::new(self.shared_turns),
                computing: Flights::default(),
            }),
        })
    }
}

/// One hour by default, at most 7 days.
fn default_ttl() -> Result<TtlPolicy> {
    TtlPolicy::new(Duration::from_secs(3600), Duration::from_secs(7 * 86_400))
}
