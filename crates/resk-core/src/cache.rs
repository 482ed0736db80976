//! Cache stores: tenant-aware stores of opaque bytes with per-entry TTLs.
//!
//! A store knows nothing about queries, JSON or encryption: the server (or a layer such as
//! `resk_crypto::EncryptedStore`) turns a [`crate::CacheEntry`] into bytes first. Keeping backends
//! dumb keeps cross-cutting concerns in one place.

use std::{
    fmt::{self, Debug},
    future::Future,
    sync::Arc,
    time::{Duration, SystemTime},
};

use bytes::Bytes;

use crate::{BoxFuture, Error, ErrorKind, Result, TenantId};

/// The address of one cache entry: the tenant it belongs to and a name unique within that tenant.
///
/// Names are any non-empty UTF-8 string of at most [`CacheKey::MAX_NAME_LEN`] bytes. resk-server uses
/// the 64-character hex digest from [`crate::KeyBuilder`]; library users may pick their own names.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey {
    tenant: TenantId,
    name: Arc<str>,
}

impl CacheKey {
    /// Longest accepted name, in bytes.
    pub const MAX_NAME_LEN: usize = 1024;

    /// A key for `name` inside `tenant`.
    ///
    /// ```
    /// use resk_core::{CacheKey, TenantId};
    /// let key = CacheKey::new(TenantId::default_tenant(), "greeting").unwrap();
    /// assert_eq!(key.to_string(), "default/greeting");
    /// ```
    pub fn new(tenant: TenantId, name: impl Into<Arc<str>>) -> Result<Self> {
        let name = name.into();
        if name.is_empty() || name.len() > Self::MAX_NAME_LEN {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "cache",
                "key",
                format!("key name must be 1-{} bytes", Self::MAX_NAME_LEN),
            ));
        }
        Ok(Self { tenant, name })
    }

    /// For names already known to be within bounds.
    pub(crate) fn new_unchecked(tenant: TenantId, name: Arc<str>) -> Self {
        Self { tenant, name }
    }

    /// The tenant the entry belongs to.
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// The name within the tenant.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Bytes that identify this key unambiguously, for use as AEAD associated data.
    ///
    /// `tenant`, a `/` (which no tenant contains), then the name.
    pub fn associated_data(&self) -> Vec<u8> {
        let mut aad = Vec::with_capacity(self.tenant.as_str().len() + 1 + self.name.len());
        aad.extend_from_slice(self.tenant.as_str().as_bytes());
        aad.push(b'/');
        aad.extend_from_slice(self.name.as_bytes());
        aad
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant, self.name)
    }
}

impl Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({self})")
    }
}

/// A value read back from a store, with the absolute expiry the store holds for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedValue {
    /// The bytes written by `set`.
    pub bytes: Bytes,
    /// When the entry expires; `None` when it was written without a TTL.
    pub expires_at: Option<SystemTime>,
    /// The [`BackendInfo::name`] of the store that held the value. Layers pass it through, so behind
    /// a tiered store it names the tier that answered (`"memory"` for layer 1, `"redis"` for layer 2).
    pub source: &'static str,
}

impl CachedValue {
    /// Length of the header [`CachedValue::frame`] puts in front of the bytes.
    pub const FRAME_HEADER_LEN: usize = 8;

    /// `value` behind an 8-byte header holding `expires_at` (Unix milliseconds, big-endian, `0` for
    /// none), for stores whose own expiry read would cost a second command (Redis) or whose own
    /// expiry differs from the entry's (a tiered store's layer 1, capped).
    pub fn frame(value: &[u8], expires_at: Option<SystemTime>) -> Bytes {
        let ms = expires_at
            .and_then(|at| at.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| {
                u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
            });
        let mut out = Vec::with_capacity(Self::FRAME_HEADER_LEN + value.len());
        out.extend_from_slice(&ms.to_be_bytes());
        out.extend_from_slice(value);
        Bytes::from(out)
    }

    /// The inverse of [`CachedValue::frame`] (zero-copy); `None` when `stored` is shorter than the
    /// header.
    pub fn unframe(mut stored: Bytes, source: &'static str) -> Option<Self> {
        if stored.len() < Self::FRAME_HEADER_LEN {
            return None;
        }
        let header = stored.split_to(Self::FRAME_HEADER_LEN);
        let mut ms = [0u8; Self::FRAME_HEADER_LEN];
        ms.copy_from_slice(&header);
        let ms = u64::from_be_bytes(ms);
        Some(Self {
            bytes: stored,
            expires_at: (ms != 0).then(|| std::time::UNIX_EPOCH + Duration::from_millis(ms)),
            source,
        })
    }

    /// Whether the entry has expired.
    pub fn is_expired(&self) -> bool {
        self.expires_at.is_some_and(|at| at <= SystemTime::now())
    }

    /// Time left before expiry (`None` for no expiry; zero once past it).
    pub fn remaining_ttl(&self) -> Option<Duration> {
        self.expires_at.map(|at| {
            at.duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let at = std::time::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let v = CachedValue::unframe(CachedValue::frame(b"value", Some(at)), "x").unwrap();
        assert_eq!(
            (&v.bytes[..], v.expires_at, v.source),
            (&b"value"[..], Some(at), "x")
        );
        let v = CachedValue::unframe(CachedValue::frame(b"", None), "x").unwrap();
        assert_eq!((&v.bytes[..], v.expires_at), (&b""[..], None));
        assert!(CachedValue::unframe(Bytes::from_static(b"short"), "x").is_none());
    }
}

/// Which entries a purge removes.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PurgeScope {
    /// Every entry of every tenant in this store (or this store's key prefix, for shared engines).
    All,
    /// Every entry of one tenant, and nothing else.
    Tenant(TenantId),
}

impl PurgeScope {
    /// Whether `key` is in this scope.
    pub fn contains(&self, key: &CacheKey) -> bool {
        match self {
            Self::All => true,
            Self::Tenant(t) => key.tenant() == t,
        }
    }
}

/// What a backend can do, so callers and the conformance suite need not guess.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// Entries survive a process restart.
    pub durable: bool,
    /// Several processes can share the same entries.
    pub shared: bool,
    /// The store may evict live entries under memory pressure (a bounded cache).
    pub evicts: bool,
}

impl Capabilities {
    /// Capabilities with every flag set as given.
    pub const fn new(durable: bool, shared: bool, evicts: bool) -> Self {
        Self {
            durable,
            shared,
            evicts,
        }
    }
}

/// A backend's name and capabilities, as returned by `info()`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendInfo {
    /// Short scheme-like name (`"memory"`, `"sqlite"`, `"redis"`); used in metrics labels and errors.
    pub name: &'static str,
    /// What the backend can do.
    pub capabilities: Capabilities,
}

/// A tenant-aware store of bytes with per-entry TTLs.
///
/// # Contract
/// * Implementations are cheap to share (`&self` everywhere) and safe under concurrent use.
/// * Keys of different tenants never see each other: no `get`, `delete` or tenant purge on one tenant
///   reads or removes another tenant's entry, even when names are equal.
/// * Values are opaque bytes; the store never inspects or transforms them.
///
/// # Behavior
/// * `get` after `set` returns the bytes written, byte for byte (`set_then_get`, `large_value`,
///   `unicode_names`); a missing key is `Ok(None)` (`missing_is_none`).
/// * A second `set` of the same key replaces the value and its TTL (`overwrite_replaces`).
/// * `set` with [`SetOptions::if_absent`] writes only when no live entry has the key, atomically:
///   of concurrent such writers of one key exactly one writes and gets `true`, and the value read
///   afterwards is that writer's (`if_absent_one_winner`); an expired entry counts as absent
///   (`if_absent_over_expired`).
/// * An entry is never returned after its TTL has elapsed (`ttl_expires`); `ttl: None` means no expiry.
/// * `delete` removes one entry and reports whether it existed (`delete_removes`).
/// * `purge(All)` removes every entry; `purge(Tenant(t))` removes exactly `t`'s entries; both return
///   how many were removed (`purge_all`, `purge_tenant_only`).
/// * Concurrent writers to distinct and equal keys leave the store consistent: every distinct key
///   readable, each equal key holding one of the written values (`concurrent_writers`).
/// * `scan` walks the live entries of its scope page by page, each page bounded by `limit`, following
///   the cursor each page returns; every entry present throughout a walk is seen (`scan_pages`).
/// * `ping` succeeds when the backend can serve requests.
pub trait CacheStore: Send + Sync + Debug + 'static {
    /// The backend's name and capabilities.
    fn info(&self) -> &BackendInfo;

    /// Read one entry.
    fn get(&self, key: &CacheKey) -> impl Future<Output = Result<Option<CachedValue>>> + Send;

    /// Write one entry as `options` say: by default replacing any previous value, kept for
    /// `options.ttl` (`None`: until evicted or deleted). Returns whether the value was written:
    /// always `true` unless [`SetOptions::if_absent`] found a live entry.
    fn set(
        &self,
        key: &CacheKey,
        value: Bytes,
        options: SetOptions,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Remove one entry; `true` if it existed.
    fn delete(&self, key: &CacheKey) -> impl Future<Output = Result<bool>> + Send;

    /// Remove every entry in `scope`; returns how many were removed.
    fn purge(&self, scope: &PurgeScope) -> impl Future<Output = Result<u64>> + Send;

    /// Check the backend can serve requests (used by readiness probes).
    fn ping(&self) -> impl Future<Output = Result<()>> + Send;

    /// One page of the live entries in `scope`: start with `cursor: None` and pass each page's
    /// [`ScanPage::next`] to the next call; `next: None` ends the walk.
    ///
    /// * A page holds at most `limit` entries (a `limit` of 0 counts as 1). A page may be shorter,
    ///   even empty, with a `next`: only `next: None` says the walk is over.
    /// * A call's I/O is bounded by `limit`, not by the size of the store: SQLite reads one indexed
    ///   range, Redis a few `SCAN` steps and one pipelined read. (The memory store, whose map keeps
    ///   no order, passes over its entries once per page, in memory.)
    /// * Every entry present throughout the walk is seen at least once; entries written or removed
    ///   during it may or may not be. Ordered stores (memory, SQLite) return each entry exactly once,
    ///   in key order; Redis follows `SCAN`, which may return an entry twice.
    /// * A cursor only positions a walk inside the scope it is used with: one sent back by a
    ///   client can never reach another tenant. A cursor the store cannot read is
    ///   [`crate::ErrorKind::InvalidInput`].
    ///
    /// For maintenance that must see every entry (a privacy export or erasure, a retention sweep,
    /// a re-encryption), never for request paths.
    fn scan(
        &self,
        scope: &PurgeScope,
        cursor: Option<&ScanCursor>,
        limit: usize,
    ) -> impl Future<Output = Result<ScanPage>> + Send;
}

/// How [`CacheStore::set`] writes (object_store's `PutOptions` shape: grows without breaking
/// callers). `Some(ttl).into()` and `None.into()` make the plain write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SetOptions {
    /// Time to live; `None`: until evicted or deleted.
    pub ttl: Option<Duration>,
    /// Write only if no live entry has the key (atomically: `SET NX`, `INSERT … ON CONFLICT`,
    /// moka's entry API).
    pub if_absent: bool,
}

impl SetOptions {
    /// A plain write that expires after `ttl`.
    pub fn ttl(ttl: Duration) -> Self {
        Self {
            ttl: Some(ttl),
            if_absent: false,
        }
    }

    /// The same write, only if no live entry has the key.
    #[must_use]
    pub fn if_absent(mut self) -> Self {
        self.if_absent = true;
        self
    }
}

impl From<Option<Duration>> for SetOptions {
    fn from(ttl: Option<Duration>) -> Self {
        Self {
            ttl,
            if_absent: false,
        }
    }
}

/// Where a [`CacheStore::scan`] walk goes on. Made by the store that returned it and opaque to
/// everyone else: a key for ordered stores ([`ScanCursor::after`]), a `SCAN` position for Redis.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ScanCursor(Box<str>);

impl ScanCursor {
    /// Longest cursor text accepted back from a caller, bytes.
    pub const MAX_LEN: usize = 2 * CacheKey::MAX_NAME_LEN;

    /// A cursor from its text (what [`ScanCursor::as_str`] gave out). Text longer than
    /// [`ScanCursor::MAX_LEN`] is [`crate::ErrorKind::InvalidInput`].
    pub fn new(text: impl Into<Box<str>>) -> Result<Self> {
        let text = text.into();
        if text.is_empty() || text.len() > Self::MAX_LEN {
            return Err(bad_cursor());
        }
        Ok(Self(text))
    }

    /// The cursor's text, to hand to a client and take back with [`ScanCursor::new`].
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The cursor of an ordered store: the walk goes on after `key`.
    pub fn after(key: &CacheKey) -> Self {
        Self(format!("{}/{}", key.tenant(), key.name()).into())
    }

    /// The key an [`ScanCursor::after`] cursor resumes after; another cursor is
    /// [`crate::ErrorKind::InvalidInput`].
    pub fn resume_key(&self) -> Result<CacheKey> {
        let (tenant, name) = self.0.split_once('/').ok_or_else(bad_cursor)?;
        let tenant = TenantId::new(tenant).map_err(|_| bad_cursor())?;
        CacheKey::new(tenant, name).map_err(|_| bad_cursor())
    }
}

impl fmt::Display for ScanCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn bad_cursor() -> Error {
    Error::new(
        ErrorKind::InvalidInput,
        "cache",
        "scan",
        "not a cursor returned by this store's walk",
    )
}

/// One page of a [`CacheStore::scan`] walk.
#[derive(Clone, Debug, Default)]
pub struct ScanPage {
    /// Entries of the scope, at most the `limit` asked for.
    pub entries: Vec<(CacheKey, CachedValue)>,
    /// Where the walk goes on; `None`: it is over.
    pub next: Option<ScanCursor>,
}

/// The [`CacheStore::scan`] page of `entries` (any order), for backends whose own listing is
/// unordered: those in `scope` after the cursor's key, sorted, at most `limit`, with an
/// [`ScanCursor::after`] cursor when more remain. Costs one pass over `entries` (a partial sort).
pub fn scan_page(
    mut entries: Vec<(CacheKey, CachedValue)>,
    scope: &PurgeScope,
    cursor: Option<&ScanCursor>,
    limit: usize,
) -> Result<ScanPage> {
    let limit = limit.max(1);
    let after = cursor.map(ScanCursor::resume_key).transpose()?;
    entries.retain(|(key, value)| {
        scope.contains(key) && after.as_ref().is_none_or(|a| key > a) && !value.is_expired()
    });
    let more = entries.len() > limit;
    if more {
        // Only the first `limit` need sorting.
        entries.select_nth_unstable_by(limit, |a, b| a.0.cmp(&b.0));
        entries.truncate(limit);
    }
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let next = more
        .then(|| entries.last().map(|(key, _)| ScanCursor::after(key)))
        .flatten();
    Ok(ScanPage { entries, next })
}

/// The object-safe twin of [`CacheStore`]; blanket-implemented, never implemented by hand.
#[allow(missing_docs)] // each method mirrors the CacheStore method of the same name
pub trait CacheStoreDyn: Send + Sync + Debug + 'static {
    fn info_dyn(&self) -> &BackendInfo;
    fn get_dyn<'a>(&'a self, key: &'a CacheKey) -> BoxFuture<'a, Result<Option<CachedValue>>>;
    fn set_dyn<'a>(
        &'a self,
        key: &'a CacheKey,
        value: Bytes,
        options: SetOptions,
    ) -> BoxFuture<'a, Result<bool>>;
    fn delete_dyn<'a>(&'a self, key: &'a CacheKey) -> BoxFuture<'a, Result<bool>>;
    fn purge_dyn<'a>(&'a self, scope: &'a PurgeScope) -> BoxFuture<'a, Result<u64>>;
    fn ping_dyn(&self) -> BoxFuture<'_, Result<()>>;
    fn scan_dyn<'a>(
        &'a self,
        scope: &'a PurgeScope,
        cursor: Option<&'a ScanCursor>,
        limit: usize,
    ) -> BoxFuture<'a, Result<ScanPage>>;
}

impl<T: CacheStore + ?Sized> CacheStoreDyn for T {
    fn info_dyn(&self) -> &BackendInfo {
        self.info()
    }
    fn get_dyn<'a>(&'a self, key: &'a CacheKey) -> BoxFuture<'a, Result<Option<CachedValue>>> {
        Box::pin(self.get(key))
    }
    fn set_dyn<'a>(
        &'a self,
        key: &'a CacheKey,
        value: Bytes,
        options: SetOptions,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(self.set(key, value, options))
    }
    fn delete_dyn<'a>(&'a self, key: &'a CacheKey) -> BoxFuture<'a, Result<bool>> {
        Box::pin(self.delete(key))
    }
    fn purge_dyn<'a>(&'a self, scope: &'a PurgeScope) -> BoxFuture<'a, Result<u64>> {
        Box::pin(self.purge(scope))
    }
    fn ping_dyn(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.ping())
    }
    fn scan_dyn<'a>(
        &'a self,
        scope: &'a PurgeScope,
        cursor: Option<&'a ScanCursor>,
        limit: usize,
    ) -> BoxFuture<'a, Result<ScanPage>> {
        Box::pin(self.scan(scope, cursor, limit))
    }
}

impl<T: CacheStoreDyn + ?Sized> CacheStore for Arc<T> {
    fn info(&self) -> &BackendInfo {
        (**self).info_dyn()
    }
    async fn get(&self, key: &CacheKey) -> Result<Option<CachedValue>> {
        (**self).get_dyn(key).await
    }
    async fn set(&self, key: &CacheKey, value: Bytes, options: SetOptions) -> Result<bool> {
        (**self).set_dyn(key, value, options).await
    }
    async fn delete(&self, key: &CacheKey) -> Result<bool> {
        (**self).delete_dyn(key).await
    }
    async fn purge(&self, scope: &PurgeScope) -> Result<u64> {
        (**self).purge_dyn(scope).await
    }
    async fn ping(&self) -> Result<()> {
        (**self).ping_dyn().await
    }
    async fn scan(
        &self,
        scope: &PurgeScope,
        cursor: Option<&ScanCursor>,
        limit: usize,
    ) -> Result<ScanPage> {
        (**self).scan_dyn(scope, cursor, limit).await
    }
}

/// A cache store chosen at run time.
pub type SharedCacheStore = Arc<dyn CacheStoreDyn>;
