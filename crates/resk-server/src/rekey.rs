//! `resk-server reencrypt`: re-seal every stored value under the current encryption key, so a
//! retired key can be dropped from `CACHE_ENCRYPTION_PREVIOUS_KEYS` (the walk itself is
//! [`resk::reencrypt`]).
//!
//! Exit codes: 0 every value is under the current key; [`EXIT_UNREADABLE`] some values opened under
//! none of the configured keys (everything else was re-sealed); 2 configuration error; 1 any other
//! failure (the walk stopped; run it again).

use resk::reencrypt::ReencryptReport;
use resk_core::{Error, ErrorKind, Result};

use crate::config::{CacheBackend, Config};

/// Exit code of `resk-server reencrypt` when some values could not be opened by any configured key.
pub const EXIT_UNREADABLE: u8 = 3;

/// Re-seal every value of the configured backend under the current key.
pub async fn reencrypt(config: &Config) -> Result<ReencryptReport> {
    let config_err =
        |msg: &str| Error::new(ErrorKind::Config, "reencrypt", "start", msg.to_owned());
    let Some(cipher) = config.store.cipher.clone() else {
        return Err(config_err(
            "CACHE_ENCRYPTION_KEY is not set: there is no key to re-encrypt under",
        ));
    };
    if config.store.backend == CacheBackend::Memory {
        return Err(config_err(
            "CACHE_BACKEND=memory keeps nothing outside the server process; re-encrypt SQLite or Redis",
        ));
    }
    // The raw store: ciphertext in and out, no layer 1 in between.
    let mut raw_config = config.clone();
    raw_config.store.cipher = None;
    raw_config.store.l1_max_ttl = None;
    let store = crate::app::build_backends_without_semantic(&raw_config)
        .await?
        .cache;
    resk::reencrypt::reencrypt(&store, &cipher).await
}
