//! Authenticated encryption of cache values at rest.

use std::{fmt::Debug, sync::Arc};

use crate::{Result, TenantId};

/// Seals and opens values with an AEAD, bound to a tenant and to associated data.
///
/// CPU-bound, so synchronous and dyn-compatible as written.
///
/// # Contract
/// * `open(t, aad, seal(t, aad, m)) == m` for every tenant `t`, associated data `aad` and message `m`.
/// * Opening with another tenant, other associated data, a modified ciphertext or an unknown key fails
///   with [`crate::ErrorKind::Crypto`], and the error says nothing about keys or plaintext.
/// * Two seals of the same message differ (random nonces), so equal answers are not linkable.
/// * Implementations that support key rotation seal under the current key and open under any
///   configured key.
pub trait Cipher: Send + Sync + Debug + 'static {
    /// Encrypt `plaintext` for `tenant`, binding `aad` (resk passes the cache key).
    fn seal(&self, tenant: &TenantId, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>>;

    /// Decrypt and authenticate what [`Cipher::seal`] produced.
    fn open(&self, tenant: &TenantId, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>>;
}

/// A cipher chosen at run time.
pub type SharedCipher = Arc<dyn Cipher>;
