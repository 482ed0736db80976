//! `resk-server reencrypt`: re-seal every stored value under the current encryption key, so a
//! retired key can be dropped from `CACHE_ENCRYPTION_PREVIOUS_KEYS`.
//!
//! The walk reads the raw store (under any cache layer 1) and opens each value with the configured
//! keys itself, so it can tell what it could not open; it seals under `CACHE_ENCRYPTION_KEY`,
//! keeping each entry's remaining TTL. Every value is rewritten, whatever key sealed it: a rewrite
//! under the current key changes nothing a reader sees. Safe while servers run: just before
//! rewriting an entry it is read again, and an entry a client changed meanwhile is left alone (its
//! new value is already under the current key); the window left is the few microseconds between
//! that read and the write.
//!
//! Values no configured key opens are left exactly as they are, counted in
//! [`ReencryptReport::unreadable`] and named (tenant only) in a warning: the command then exits
//! with [`EXIT_UNREADABLE`], so a script never drops the key those values need believing the
//! rotation is complete.

use resk_core::{CacheStore, Error, ErrorKind, PurgeScope, Result, ScanCursor};

use crate::config::{CacheBackend, Config};

/// Entries rewritten per page of the walk.
const PAGE: usize = 500;

/// Exit code of `resk-server reencrypt` when some values could not be opened by any configured key
/// (everything else was re-sealed). 0: every value is under the current key; 2: configuration
/// error; 1: any other failure (the walk stopped; run it again).
pub const EXIT_UNREADABLE: u8 = 3;

/// What a re-encryption did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReencryptReport {
    /// Values re-sealed under the current key.
    pub rewritten: u64,
    /// Values changed (or removed) by someone else during the walk, left as they were.
    pub changed_meanwhile: u64,
    /// Values no configured key opens, left as they were: dropping a previous key makes them
    /// unreadable for good.
    pub unreadable: u64,
}

/// Re-seal every value of the configured backend under the current key.
pub async fn reencrypt(config: &Config) -> Result<ReencryptReport> {
    let config_err =
        |msg: &str| Error::new(ErrorKind::Config, "reencrypt", "start", msg.to_owned());
    let Some(cipher) = config.cipher.clone() else {
        return Err(config_err(
            "CACHE_ENCRYPTION_KEY is not set: there is no key to re-encrypt under",
        ));
    };
    if config.backend == CacheBackend::Memory {
        return Err(config_err(
            "CACHE_BACKEND=memory keeps nothing outside the server process; re-encrypt SQLite or Redis",
        ));
    }
    // The raw store: ciphertext in and out, no layer 1 in between.
    let mut raw_config = config.clone();
    raw_config.cipher = None;
    raw_config.l1_max_ttl = None;
    let store = crate::app::build_backends_without_semantic(&raw_config)
        .await?
        .cache;
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
                    store.set(&key, sealed.into(), ttl).await?;
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
