//! AES-GCM cipher: round trips, tampering, binding to tenant and key, rotation, configuration errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use resk_core::{Cipher, ErrorKind, TenantId};
use resk_crypto::{AesGcmCipher, FORMAT_VERSION, MasterKey, OVERHEAD};

fn tenant(name: &str) -> TenantId {
    TenantId::new(name).unwrap()
}

const KEY_A: &str = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";
const KEY_B: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

#[test]
fn round_trip_and_format() {
    let c = AesGcmCipher::new(MasterKey::from_base64(KEY_A).unwrap());
    let t = tenant("acme");
    let sealed = c.seal(&t, b"acme/k", b"secret answer").unwrap();
    assert_eq!(sealed.len(), b"secret answer".len() + OVERHEAD);
    assert_eq!(sealed[0], FORMAT_VERSION);
    assert_eq!(AesGcmCipher::key_id_of(&sealed), Some(c.current_key_id()));
    assert!(
        !sealed.windows(6).any(|w| w == b"secret"),
        "plaintext visible in ciphertext"
    );
    assert_eq!(c.open(&t, b"acme/k", &sealed).unwrap(), b"secret answer");
}

#[test]
fn nonces_are_fresh() {
    let c = AesGcmCipher::new(MasterKey::generate());
    let t = tenant("acme");
    let a = c.seal(&t, b"k", b"same").unwrap();
    let b = c.seal(&t, b"k", b"same").unwrap();
    assert_ne!(a, b);
    assert_ne!(a[5..17], b[5..17], "nonce reused");
}

#[test]
fn every_tampered_byte_fails() {
    let c = AesGcmCipher::new(MasterKey::generate());
    let t = tenant("acme");
    let sealed = c.seal(&t, b"k", b"payload").unwrap();
    for i in 0..sealed.len() {
        let mut bad = sealed.clone();
        bad[i] ^= 0x01;
        let err = c.open(&t, b"k", &bad).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Crypto, "byte {i}");
    }
    for len in 0..sealed.len() {
        assert!(
            c.open(&t, b"k", &sealed[..len]).is_err(),
            "truncated to {len}"
        );
    }
}

#[test]
fn bound_to_key_and_tenant() {
    let c = AesGcmCipher::new(MasterKey::generate());
    let sealed = c
        .seal(&tenant("acme"), b"acme/question-1", b"answer")
        .unwrap();
    assert!(
        c.open(&tenant("acme"), b"acme/question-2", &sealed)
            .is_err(),
        "moved to another key"
    );
    assert!(
        c.open(&tenant("evil"), b"acme/question-1", &sealed)
            .is_err(),
        "moved to another tenant"
    );
}

#[test]
fn errors_are_opaque() {
    let c = AesGcmCipher::new(MasterKey::from_base64(KEY_A).unwrap());
    let err = c
        .open(
            &tenant("acme"),
            b"k",
            b"plaintext that is long enough to parse",
        )
        .unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(!text.contains("plaintext"), "{text}");
    assert!(!text.contains(KEY_A), "{text}");
    assert!(!format!("{c:?}").contains(KEY_A));
}

#[test]
fn rotation_reads_old_writes_new() {
    let old = AesGcmCipher::new(MasterKey::from_base64(KEY_A).unwrap());
    let t = tenant("acme");
    let sealed_old = old.seal(&t, b"k", b"written before rotation").unwrap();

    let rotated = AesGcmCipher::new(MasterKey::from_base64(KEY_B).unwrap())
        .with_previous([MasterKey::from_base64(KEY_A).unwrap()])
        .unwrap();
    assert_eq!(
        rotated.open(&t, b"k", &sealed_old).unwrap(),
        b"written before rotation"
    );
    let sealed_new = rotated.seal(&t, b"k", b"new").unwrap();
    assert_eq!(
        AesGcmCipher::key_id_of(&sealed_new),
        Some(rotated.current_key_id())
    );
    assert_ne!(rotated.current_key_id(), old.current_key_id());

    // Once the old key is removed, its entries no longer open (and say so without detail).
    let only_new = AesGcmCipher::new(MasterKey::from_base64(KEY_B).unwrap());
    assert_eq!(
        only_new.open(&t, b"k", &sealed_old).unwrap_err().kind(),
        ErrorKind::Crypto
    );
}

#[test]
fn many_tenants_round_trip_past_the_data_key_cache() {
    let c = AesGcmCipher::new(MasterKey::generate());
    let sealed: Vec<_> = (0..5000)
        .map(|i| {
            let t = tenant(&format!("t{i}"));
            (
                t.clone(),
                c.seal(&t, b"k", format!("v{i}").as_bytes()).unwrap(),
            )
        })
        .collect();
    for (i, (t, s)) in sealed.iter().enumerate() {
        assert_eq!(c.open(t, b"k", s).unwrap(), format!("v{i}").as_bytes());
    }
    // A clone starts with an empty cache and still opens everything.
    let copy = c.clone();
    assert_eq!(copy.open(&sealed[7].0, b"k", &sealed[7].1).unwrap(), b"v7");
}

#[test]
fn duplicate_keys_are_refused() {
    let err = AesGcmCipher::new(MasterKey::from_base64(KEY_A).unwrap())
        .with_previous([MasterKey::from_base64(KEY_A).unwrap()])
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
}

#[test]
fn bad_key_material_is_a_clear_config_error() {
    let not_b64 = MasterKey::from_base64("not base64 !!").unwrap_err();
    assert_eq!(not_b64.kind(), ErrorKind::Config);
    assert!(
        not_b64.to_string().contains("not valid base64"),
        "{not_b64}"
    );
    let short = MasterKey::from_base64("c2hvcnQ=").unwrap_err();
    assert!(short.to_string().contains("got 5 bytes"), "{short}");
    // Unpadded base64 of 32 bytes is accepted too.
    assert!(MasterKey::from_base64(KEY_A.trim_end_matches('=')).is_ok());
    // Generated keys parse back.
    assert!(MasterKey::from_base64(&MasterKey::generate_base64()).is_ok());
}
