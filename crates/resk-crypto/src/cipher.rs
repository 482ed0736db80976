//! AES-256-GCM with HKDF-derived per-tenant data keys.

use std::{collections::HashMap, fmt, sync::RwLock};

use aes_gcm::{
    Aes256Gcm, KeyInit, Nonce,
    aead::{Aead, AeadCore, OsRng, Payload, rand_core::RngCore},
};
use base64::Engine;
use hkdf::Hkdf;
use resk_core::{Cipher, Error, ErrorKind, Result, TenantId};
use sha2::Sha256;
use zeroize::Zeroizing;

/// Version byte at the start of every ciphertext.
pub const FORMAT_VERSION: u8 = 1;
const KEY_ID_LEN: usize = 4;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 1 + KEY_ID_LEN;
/// Bytes a sealed value adds to its plaintext.
pub const OVERHEAD: usize = HEADER_LEN + NONCE_LEN + TAG_LEN;

const SALT: &[u8] = b"resk/aes-256-gcm/v1";
const BACKEND: &str = "aes-gcm";

/// A 4-byte key identifier derived from a master key; shown as 8 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId([u8; KEY_ID_LEN]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// A 256-bit master key. Zeroized on drop; `Debug` shows only its id.
#[derive(Clone)]
pub struct MasterKey {
    id: KeyId,
    /// HKDF pseudo-random key extracted from the master key (what data keys are expanded from).
    prk: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

fn config_error(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Config, BACKEND, "load-key", message)
}

impl MasterKey {
    /// Length of a master key in bytes.
    pub const LEN: usize = 32;

    /// Wrap 32 raw key bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        let (prk, _) = Hkdf::<Sha256>::extract(Some(SALT), bytes);
        let mut prk_bytes = Zeroizing::new([0u8; 32]);
        prk_bytes.copy_from_slice(&prk);
        let mut id = [0u8; KEY_ID_LEN];
        // Expanding 4 bytes from a 32-byte PRK cannot fail (the limit is 255 * 32 bytes).
        let _ =
            Hkdf::<Sha256>::from_prk(&prk_bytes[..]).map(|hk| hk.expand(b"resk/key-id", &mut id));
        Self {
            id: KeyId(id),
            prk: prk_bytes,
        }
    }

    /// Parse a base64 (standard alphabet, padded or not) encoding of 32 bytes.
    ///
    /// Errors say what is wrong (not base64, wrong length) and never echo the input.
    ///
    /// ```
    /// use resk_crypto::MasterKey;
    /// assert!(MasterKey::from_base64("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").is_ok());
    /// assert!(MasterKey::from_base64("c2hvcnQ=").unwrap_err().to_string().contains("32 bytes"));
    /// ```
    pub fn from_base64(encoded: &str) -> Result<Self> {
        let trimmed = encoded.trim();
        let decoded = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(trimmed)
                .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(trimmed))
                .map_err(|_| config_error("encryption key is not valid base64"))?,
        );
        let bytes: &[u8; 32] = decoded.as_slice().try_into().map_err(|_| {
            config_error(format!(
                "encryption key must decode to 32 bytes (AES-256), got {} bytes",
                decoded.len()
            ))
        })?;
        Ok(Self::from_bytes(bytes))
    }

    /// A fresh random key from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(&mut bytes[..]);
        Self::from_bytes(&bytes)
    }

    /// A new random key encoded as base64, for `resk-server keygen`-style tooling.
    pub fn generate_base64() -> Zeroizing<String> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(&mut bytes[..]);
        Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&bytes[..]))
    }

    /// This key's id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    fn data_key(&self, tenant: &TenantId) -> Result<Aes256Gcm> {
        let crypto = || {
            Error::new(
                ErrorKind::Crypto,
                BACKEND,
                "derive",
                "key derivation failed",
            )
        };
        let hk = Hkdf::<Sha256>::from_prk(&self.prk[..]).map_err(|_| crypto())?;
        let mut okm = Zeroizing::new([0u8; 32]);
        hk.expand_multi_info(
            &[b"resk/data-key/", tenant.as_str().as_bytes()],
            &mut okm[..],
        )
        .map_err(|_| crypto())?;
        Aes256Gcm::new_from_slice(&okm[..]).map_err(|_| crypto())
    }
}

/// Most derived (key, tenant) data keys kept ready; past this the cache is emptied and refilled.
const DATA_KEY_CACHE: usize = 4096;

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
type DataKeys = FastMap<KeyId, FastMap<TenantId, Aes256Gcm>>;

/// AES-256-GCM cipher with a current key for writing and any number of previous keys for reading.
///
/// Derived per-tenant data keys (HKDF plus the AES key schedule) are kept in a bounded map, so a hit
/// does not re-derive them; the AES key schedules are zeroized when dropped.
pub struct AesGcmCipher {
    current: MasterKey,
    previous: Vec<MasterKey>,
    /// Hashed with foldhash: read on every seal and open, keyed by configured key ids and tenant
    /// ids (which a caller's own tokens fix), where std's SipHash costs more than the lookup.
    data_keys: RwLock<DataKeys>,
}

impl Clone for AesGcmCipher {
    fn clone(&self) -> Self {
        Self {
            current: self.current.clone(),
            previous: self.previous.clone(),
            data_keys: RwLock::default(),
        }
    }
}

impl fmt::Debug for AesGcmCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AesGcmCipher")
            .field("current", &self.current.id)
            .field(
                "previous",
                &self.previous.iter().map(|k| k.id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl AesGcmCipher {
    /// A cipher that seals and opens with `current` only.
    pub fn new(current: MasterKey) -> Self {
        Self {
            current,
            previous: Vec::new(),
            data_keys: RwLock::default(),
        }
    }

    /// Also open values sealed under `previous` keys (rotation). Fails if two keys share an id.
    pub fn with_previous(mut self, previous: impl IntoIterator<Item = MasterKey>) -> Result<Self> {
        for key in previous {
            if key.id == self.current.id || self.previous.iter().any(|k| k.id == key.id) {
                return Err(config_error(format!(
                    "encryption key {} is configured twice (or two keys share an id)",
                    key.id
                )));
            }
            self.previous.push(key);
        }
        Ok(self)
    }

    /// The id new values are sealed under.
    pub fn current_key_id(&self) -> KeyId {
        self.current.id
    }

    /// The key id a sealed value names, if it is long enough to have one.
    pub fn key_id_of(sealed: &[u8]) -> Option<KeyId> {
        let id = sealed.get(1..HEADER_LEN)?;
        Some(KeyId(id.try_into().ok()?))
    }

    fn key(&self, id: KeyId) -> Option<&MasterKey> {
        std::iter::once(&self.current)
            .chain(self.previous.iter())
            .find(|k| k.id == id)
    }

    /// Run `f` with the data key of `master` for `tenant`, derived once and then reused. Looked up
    /// by `&str` and used in place, so a hit touches no shared reference count.
    fn with_data_key<R>(
        &self,
        master: &MasterKey,
        tenant: &TenantId,
        f: impl FnOnce(&Aes256Gcm) -> R,
    ) -> Result<R> {
        if let Ok(keys) = self.data_keys.read()
            && let Some(key) = keys.get(&master.id).and_then(|m| m.get(tenant.as_str()))
        {
            return Ok(f(key));
        }
        let key = master.data_key(tenant)?;
        let out = f(&key);
        if let Ok(mut keys) = self.data_keys.write() {
            let per_key = keys.entry(master.id).or_default();
            if per_key.len() >= DATA_KEY_CACHE {
                per_key.clear();
            }
            per_key.insert(tenant.clone(), key);
        }
        Ok(out)
    }
}

fn full_aad(header: &[u8], tenant: &TenantId, aad: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(header.len() + 2 + tenant.as_str().len() + aad.len());
    out.extend_from_slice(header);
    // Tenant ids are at most 64 bytes, so one length byte is enough and keeps the encoding injective.
    out.push(tenant.as_str().len() as u8);
    out.extend_from_slice(tenant.as_str().as_bytes());
    out.extend_from_slice(aad);
    out
}

fn open_failed() -> Error {
    Error::new(ErrorKind::Crypto, BACKEND, "open", "decryption failed")
}

impl Cipher for AesGcmCipher {
    fn seal(&self, tenant: &TenantId, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let mut header = [0u8; HEADER_LEN];
        header[0] = FORMAT_VERSION;
        header[1..].copy_from_slice(&self.current.id.0);
        let aad = full_aad(&header, tenant, aad);
        let payload = Payload {
            msg: plaintext,
            aad: &aad,
        };
        let ciphertext = self
            .with_data_key(&self.current, tenant, |cipher| {
                cipher.encrypt(&nonce, payload)
            })?
            .map_err(|_| Error::new(ErrorKind::Crypto, BACKEND, "seal", "encryption failed"))?;
        let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
        out.extend_from_slice(&header);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }

    fn open(&self, tenant: &TenantId, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>> {
        if sealed.len() < OVERHEAD || sealed[0] != FORMAT_VERSION {
            return Err(open_failed());
        }
        let id = Self::key_id_of(sealed).ok_or_else(open_failed)?;
        let key = self.key(id).ok_or_else(|| {
            Error::new(
                ErrorKind::Crypto,
                BACKEND,
                "open",
                "value sealed under an unknown key",
            )
        })?;
        let (header, rest) = sealed.split_at(HEADER_LEN);
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let aad = full_aad(header, tenant, aad);
        let payload = Payload {
            msg: ciphertext,
            aad: &aad,
        };
        self.with_data_key(key, tenant, |cipher| {
            cipher.decrypt(Nonce::from_slice(nonce), payload)
        })?
        .map_err(|_| open_failed())
    }
}
