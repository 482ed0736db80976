//! A layer that encrypts values on their way into any cache store.

use bytes::Bytes;
use resk_core::{
    BackendInfo, CacheKey, CacheStore, CachedValue, PurgeScope, Result, ScanCursor, ScanPage,
    SetOptions, SharedCipher,
};

/// Wraps a [`CacheStore`] so it only ever sees ciphertext.
///
/// Values are sealed with the key's tenant and [`CacheKey::associated_data`], so a value moved to
/// another key or tenant inside the store no longer opens. A stored value that does not open is
/// **never** returned: `get` answers `Ok(None)` (a miss), logs a warning naming only the key's tenant
/// and the failure, and increments `resk_crypto_open_failures_total{backend}`.
///
/// ```
/// use std::sync::Arc;
/// use resk_crypto::{AesGcmCipher, EncryptedStore, MasterKey};
/// # fn wrap<S: resk_core::CacheStore>(store: S) {
/// let store = EncryptedStore::new(store, Arc::new(AesGcmCipher::new(MasterKey::generate())));
/// # }
/// ```
#[derive(Debug)]
pub struct EncryptedStore<S> {
    inner: S,
    cipher: SharedCipher,
    /// `resk_layer_duration_seconds{layer="crypto"}`, registered once (a registry lookup per
    /// operation allocated on every hit).
    seconds: metrics::Histogram,
}

impl<S: CacheStore> EncryptedStore<S> {
    /// Encrypt everything written to `inner` with `cipher`.
    pub fn new(inner: S, cipher: SharedCipher) -> Self {
        // Registered at zero: an alert on values that fail to open sees the first one.
        metrics::counter!("resk_crypto_open_failures_total", "backend" => inner.info().name)
            .increment(0);
        let seconds = metrics::histogram!("resk_layer_duration_seconds", "layer" => "crypto");
        Self {
            inner,
            cipher,
            seconds,
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }
}

/// Run one cipher operation inside a `crypto` span (a child of the request's span in traces) and
/// record its time in `seconds` (the `crypto` layer of `resk_layer_duration_seconds`).
fn timed<T>(seconds: &metrics::Histogram, op: &'static str, f: impl FnOnce() -> T) -> T {
    let span = tracing::debug_span!("crypto", op);
    let _entered = span.enter();
    let start = std::time::Instant::now();
    let out = f();
    seconds.record(start.elapsed().as_secs_f64());
    out
}

impl<S: CacheStore> EncryptedStore<S> {
    /// The plaintext of `value` stored under `key`; `None` (logged and counted) if it does not open.
    fn open(&self, key: &CacheKey, value: CachedValue) -> Option<CachedValue> {
        let opened = timed(&self.seconds, "open", || {
            self.cipher
                .open(key.tenant(), &key.associated_data(), &value.bytes)
        });
        match opened {
            Ok(plaintext) => Some(CachedValue {
                bytes: Bytes::from(plaintext),
                expires_at: value.expires_at,
                source: value.source,
            }),
            Err(err) => {
                let backend = self.inner.info().name;
                metrics::counter!("resk_crypto_open_failures_total", "backend" => backend)
                    .increment(1);
                tracing::warn!(
                    tenant = %key.tenant(),
                    backend,
                    error = %err,
                    "stored value failed to decrypt; treated as a miss"
                );
                None
            }
        }
    }
}

#[deny(clippy::missing_trait_methods)]
impl<S: CacheStore> CacheStore for EncryptedStore<S> {
    fn info(&self) -> &BackendInfo {
        self.inner.info()
    }

    async fn get(&self, key: &CacheKey) -> Result<Option<CachedValue>> {
        let Some(value) = self.inner.get(key).await? else {
            return Ok(None);
        };
        Ok(self.open(key, value))
    }

    async fn set(&self, key: &CacheKey, value: Bytes, options: SetOptions) -> Result<bool> {
        let sealed = timed(&self.seconds, "seal", || {
            self.cipher
                .seal(key.tenant(), &key.associated_data(), &value)
        })?;
        self.inner.set(key, Bytes::from(sealed), options).await
    }

    fn delete(&self, key: &CacheKey) -> impl Future<Output = Result<bool>> + Send {
        self.inner.delete(key)
    }

    fn purge(&self, scope: &PurgeScope) -> impl Future<Output = Result<u64>> + Send {
        self.inner.purge(scope)
    }

    fn ping(&self) -> impl Future<Output = Result<()>> + Send {
        self.inner.ping()
    }

    /// Opens every value of the inner page; one that does not open is left out (as `get` treats
    /// it as a miss, logged and counted), so the page may be shorter than the inner one. The
    /// cursor is the inner store's.
    async fn scan(
        &self,
        scope: &PurgeScope,
        cursor: Option<&ScanCursor>,
        limit: usize,
    ) -> Result<ScanPage> {
        let page = self.inner.scan(scope, cursor, limit).await?;
        Ok(ScanPage {
            entries: page
                .entries
                .into_iter()
                .filter_map(|(key, value)| Some((key.clone(), self.open(&key, value)?)))
                .collect(),
            next: page.next,
        })
    }
}
