//! Ciphertext parsing: `open` on any bytes never panics and never succeeds on bytes it did not
//! seal; a sealed value opens only under its own tenant and associated data, and any change to it
//! fails.
#![no_main]

use libfuzzer_sys::fuzz_target;
use resk_core::{Cipher, TenantId};
use resk_crypto::{AesGcmCipher, MasterKey};

fuzz_target!(|data: &[u8]| {
    let cipher = AesGcmCipher::new(MasterKey::from_bytes(&[7; 32]));
    let tenant = TenantId::default_tenant();
    // Arbitrary bytes as a stored value: a forgery would need the key.
    assert!(
        cipher.open(&tenant, b"aad", data).is_err(),
        "forged value opened"
    );

    // The same bytes as a plaintext: round trip, bound to tenant and AAD, tamper-evident.
    let sealed = cipher
        .seal(&tenant, b"aad", data)
        .unwrap_or_else(|e| panic!("sealing failed: {e}"));
    assert_eq!(
        cipher.open(&tenant, b"aad", &sealed).ok().as_deref(),
        Some(data)
    );
    assert!(cipher.open(&tenant, b"other", &sealed).is_err());
    let other = TenantId::new("fuzz-other").unwrap_or_else(|e| panic!("{e}"));
    assert!(cipher.open(&other, b"aad", &sealed).is_err());
    let flip = data.first().map_or(0, |b| usize::from(*b)) % sealed.len();
    let mut tampered = sealed.clone();
    tampered[flip] ^= 0x01;
    assert!(
        cipher.open(&tenant, b"aad", &tampered).is_err(),
        "tampered byte {flip} opened"
    );
    assert!(
        cipher
            .open(&tenant, b"aad", &sealed[..sealed.len() - 1])
            .is_err()
    );
});
