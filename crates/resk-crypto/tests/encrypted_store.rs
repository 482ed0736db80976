//! The encryption layer: conformance through the layer, ciphertext-only storage, no downgrade.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use bytes::Bytes;
use resk_cache_memory::MemoryStore;
use resk_core::{CacheKey, CacheStore, TenantId};
use resk_crypto::{AesGcmCipher, EncryptedStore, MasterKey};

fn encrypted() -> EncryptedStore<MemoryStore> {
    EncryptedStore::new(
        MemoryStore::default(),
        Arc::new(AesGcmCipher::new(MasterKey::generate())),
    )
}

resk_testkit::cache_suite!(async { encrypted() });

fn key(tenant: &str, name: &str) -> CacheKey {
    CacheKey::new(TenantId::new(tenant).unwrap(), name).unwrap()
}

#[tokio::test]
async fn inner_store_holds_ciphertext_only() {
    let store = encrypted();
    let k = key("acme", "q");
    store
        .set(
            &k,
            Bytes::from_static(b"the secret answer"),
            resk_core::SetOptions::default(),
        )
        .await
        .unwrap();
    let raw = store.inner().get(&k).await.unwrap().unwrap().bytes;
    assert!(!raw.windows(6).any(|w| w == b"secret"));
    assert_eq!(
        store.get(&k).await.unwrap().unwrap().bytes,
        Bytes::from_static(b"the secret answer")
    );
}

#[tokio::test]
async fn plaintext_in_the_store_is_never_returned() {
    let store = encrypted();
    let k = key("acme", "q");
    store
        .inner()
        .set(
            &k,
            Bytes::from_static(b"{\"planted\":\"plaintext\"}"),
            resk_core::SetOptions::default(),
        )
        .await
        .unwrap();
    assert!(
        store.get(&k).await.unwrap().is_none(),
        "plaintext downgrade"
    );
}

#[tokio::test]
async fn ciphertext_moved_to_another_key_or_tenant_is_a_miss() {
    let store = encrypted();
    let (victim, attacker_key, other_tenant) =
        (key("acme", "q1"), key("acme", "q2"), key("evil", "q1"));
    store
        .set(
            &victim,
            Bytes::from_static(b"answer"),
            resk_core::SetOptions::default(),
        )
        .await
        .unwrap();
    let raw = store.inner().get(&victim).await.unwrap().unwrap().bytes;
    store
        .inner()
        .set(&attacker_key, raw.clone(), resk_core::SetOptions::default())
        .await
        .unwrap();
    store
        .inner()
        .set(&other_tenant, raw, resk_core::SetOptions::default())
        .await
        .unwrap();
    assert!(store.get(&attacker_key).await.unwrap().is_none());
    assert!(store.get(&other_tenant).await.unwrap().is_none());
}
