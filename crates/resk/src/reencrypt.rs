//! Key rotation: re-seal every stored value under the current encryption key, so a retired key can
//! be dropped from the cipher's previous keys.
//!
//! The walk reads the bare store (under any layer 1 and under encryption) and opens each value with
//! the cipher's keys itself, so it can tell what it could not open; it seals under the current key,
//! keeping each entry's remaining TTL. Every value is rewritten, whatever key sealed it: a rewrite
//! under the current key changes nothing a reader sees. Safe while other writers run: just before
//! rewriting an entry it is read again, and an entry changed meanwhile is left alone (its new value
//! is already under the current key); the window left is the few microseconds between that read
//! and the write.
//!
//! Values no key opens are left exactly as they are and counted in
//! [`ReencryptReport::unreadable`] (and named, tenant only, in a warning), so a caller never drops
//! the key those values need believing the rotation is complete.

use resk_core::{CacheStore, PurgeScope, Result, ScanCursor, SharedCacheStore, SharedCipher};

/// Entries rewritten per page of the walk.
const PAGE: usize = 500;

/// What a re-encryption did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReencryptReport {
    /// Values re-sealed under the current key.
    pub rewritten: u64,
    /// Values changed (or removed) by someone else during the walk, left as they were.
    pub changed_meanwhile: u64,
    /// Values no key of the cipher opens, left as they were: dropping a previous key makes them
    /// unreadable for good.
    pub unreadable: u64,
}

/// Re-seal every value of the bare `store` (ciphertext in and out) with `cipher`'s current key.
pub async fn reencrypt(store: &SharedCacheStore, cipher: &SharedCipher) -> Result<ReencryptReport> {
    store.ping().await?;
    let mut report = ReencryptReport::default();
    let mut cursor: Option<ScanCursor> = None;
    loop {
        let page = store.scan(&PurgeScope::All, cursor.as_ref(), PAGE).await?;
        for (key, value) in page.entries {
            let ttl = value.remaining_ttl();
            if ttl.is_some_and(|t| t.is_zero()) {
                continue;
            }
            let aad = key.associated_data();
            let Ok(plaintext) = cipher.open(key.tenant(), &aad, &value.bytes) else {
                tracing::warn!(
                    tenant = %key.tenant(),
                    "a stored value opens under none of the configured keys; left as it is"
                );
                report.unreadable += 1;
                continue;
            };
            let sealed = cipher.seal(key.tenant(), &aad, &plaintext)?;
            match store.get(&key).await? {
                Some(now) if now.bytes == value.bytes => {
                    store.set(&key, sealed.into(), ttl.into()).await?;
                    report.rewritten += 1;
                }
                _ => report.changed_meanwhile += 1,
            }
        }
        cursor = page.next;
        if cursor.is_none() {
            return Ok(report);
        }
    }
}
