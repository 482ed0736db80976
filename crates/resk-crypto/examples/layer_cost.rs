//! What the encryption layer adds to a cache hit, measured in process (no network, no scheduler noise):
//! `get` of a typical entry through `EncryptedStore<MemoryStore>` versus the bare `MemoryStore`.
//! `cargo xtask bench` runs it in release mode and prints its line.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::{sync::Arc, time::Instant};

use bytes::Bytes;
use resk_cache_memory::MemoryStore;
use resk_core::{CacheKey, CacheStore, TenantId};
use resk_crypto::{AesGcmCipher, EncryptedStore, MasterKey};

const ITERATIONS: u32 = 200_000;

async fn ns_per_get<S: CacheStore>(store: &S, key: &CacheKey) -> f64 {
    for _ in 0..10_000 {
        std::hint::black_box(store.get(key).await.unwrap());
    }
    let start = Instant::now();
    for _ in 0..ITERATIONS {
        std::hint::black_box(store.get(key).await.unwrap());
    }
    start.elapsed().as_nanos() as f64 / f64::from(ITERATIONS)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // A typical stored entry: ~300 bytes of JSON (answer + metadata).
    let value = Bytes::from(format!(
        r#"{{"schema_version":1,"tenant":"acme","query":"How do I reset my password?","response":{{"text":"{}"}},"created_at":"2026-11-24T06:23:36Z","expires_at":"2026-11-24T07:23:36Z","origin":{{"source":"api"}}}}"#,
        "Open Settings, then Security, then Reset password. ".repeat(2)
    ));
    let key = CacheKey::new(TenantId::new("acme").unwrap(), "0".repeat(64)).unwrap();
    let plain = MemoryStore::default();
    plain
        .set(&key, value.clone(), resk_core::SetOptions::default())
        .await
        .unwrap();
    let encrypted = EncryptedStore::new(
        MemoryStore::default(),
        Arc::new(AesGcmCipher::new(MasterKey::generate())),
    );
    encrypted
        .set(&key, value, resk_core::SetOptions::default())
        .await
        .unwrap();
    let (mut p, mut e) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        p.push(ns_per_get(&plain, &key).await);
        e.push(ns_per_get(&encrypted, &key).await);
    }
    p.sort_by(f64::total_cmp);
    e.sort_by(f64::total_cmp);
    let (p, e) = (p[2], e[2]);
    println!(
        "layer_cost plain_ns={p:.0} encrypted_ns={e:.0} added_ns={:.0}",
        e - p
    );
}
