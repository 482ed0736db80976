//! `resk-server reencrypt`: re-seal every stored value under the current encryption key, so a
//! retired key can be dropped from `CACHE_ENCRYPTION_PREVIOUS_KEYS`.
//!
//! Reads go through the same encrypted store the server uses (any configured key opens a value),
//! writes seal under `CACHE_ENCRYPTION_KEY`, keeping each entry's remaining TTL. Every value is
//! rewritten, whatever key sealed it: the plaintext layer cannot see key ids, and a rewrite under
//! the current key changes nothing a reader sees. Safe while servers run: just before rewriting an
//! entry it is read again, and an entry a client changed meanwhile is left alone (its new value is
//! already under the current key); the window left is the few microseconds between that read and
//! the write. Values no configured key opens are left as they are and counted.

use resk_core::{CacheKey, CacheStore, Error, ErrorKind, PurgeScope, Result};

use crate::config::{CacheBackend, Config};

/// Entries rewritten per page of the walk.
const PAGE: usize = 500;

/// What a re-encryption did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReencryptReport {
    /// Values re-sealed under the current key.
    pub rewritten: u64,
    /// Values changed (or removed) by someone else during the walk, left as they were.
    pub changed_meanwhile: u64,
}

/// Re-seal every value of the configured backend under the current key.
pub async fn reencrypt(config: &Config) -> Result<ReencryptReport> {
    let config_err =
        |msg: &str| Error::new(ErrorKind::Config, "reencrypt", "start", msg.to_owned());
    if config.cipher.is_none() {
        return Err(config_err(
            "CACHE_ENCRYPTION_KEY is not set: there is no key to re-encrypt under",
        ));
    }
    if config.backend == CacheBackend::Memory {
        return Err(config_err(
            "CACHE_BACKEND=memory keeps nothing outside the server process; re-encrypt SQLite or Redis",
        ));
    }
    let cache = crate::app::build_backends_without_semantic(config)
        .await?
        .cache;
    cache.ping().await?;
    let mut report = ReencryptReport::default();
    let mut after: Option<CacheKey> = None;
    loop {
        let page = cache.scan(&PurgeScope::All, after.as_ref(), PAGE).await?;
        let last = page.len() < PAGE;
        after = page.last().map(|(key, _)| key.clone()).or(after);
        for (key, value) in page {
            let ttl = value.remaining_ttl();
            if ttl.is_some_and(|t| t.is_zero()) {
                continue;
            }
            match cache.get(&key).await? {
                Some(now) if now.bytes == value.bytes => {
                    cache.set(&key, value.bytes, ttl).await?;
                    report.rewritten += 1;
                }
                _ => report.changed_meanwhile += 1,
            }
        }
        if last {
            return Ok(report);
        }
    }
}
