//! Two tiered stores (two "instances") over one real Redis, each with its own Redis bus connection:
//! what one writes, deletes or purges, the other's layer 1 stops serving.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use resk_cache_memory::{MemoryConfig, MemoryStore};
use resk_cache_redis::{RedisBus, RedisConfig, RedisStore};
use resk_cache_tiered::{TieredConfig, TieredStore};
use resk_core::{CacheKey, CacheStore, LocalBus, PurgeScope, TenantId};

type Tiered = TieredStore<MemoryStore, RedisStore>;

/// Two instances on one Redis prefix, or `None` (with a SKIP line) without a Redis.
async fn pair(test: &str) -> Option<(Tiered, Tiered)> {
    let Some(url) = resk_testkit::service_url("REDIS") else {
        resk_testkit::skip(test);
        return None;
    };
    let config =
        RedisConfig::new(url).with_prefix(format!("resk-test-{}", resk_testkit::unique_id()));
    let mut out = Vec::new();
    for _ in 0..2 {
        let l2 = RedisStore::connect(config.clone()).await.unwrap();
        let bus = Arc::new(RedisBus::connect(&config).await.unwrap());
        out.push(TieredStore::new(
            MemoryStore::new(MemoryConfig::default()),
            l2,
            bus,
            TieredConfig::default(),
        ));
    }
    let b = out.pop().unwrap();
    let a = out.pop().unwrap();
    Some((a, b))
}

fn key(tenant: &str, name: &str) -> CacheKey {
    CacheKey::new(TenantId::new(tenant).unwrap(), name).unwrap()
}

/// Wait until `b`'s layer 1 no longer holds `key` (eventual: the message crosses Redis). Returns how
/// long it took, for the log; the bound is only there so a lost message fails instead of hanging.
async fn until_evicted(b: &Tiered, key: &CacheKey) -> Duration {
    let start = Instant::now();
    while b.l1().get(key).await.unwrap().is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "layer 1 of the other instance still holds {key}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    start.elapsed()
}

/// Read `key` through `b` until its layer 1 holds it. A read does not fill layer 1 while an
/// invalidation arrives meanwhile (the epoch check in `fill`), and the other instance's writes just
/// before announce theirs over the bus, which `b` may still be applying.
async fn until_filled(b: &Tiered, key: &CacheKey) {
    let start = Instant::now();
    loop {
        b.get(key).await.unwrap().unwrap();
        if b.l1().get(key).await.unwrap().is_some() {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "layer 1 of the other instance never kept {key}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_fill_layer_one_with_the_remaining_ttl() {
    let Some((a, b)) = pair("reads_fill_layer_one_with_the_remaining_ttl").await else {
        return;
    };
    let k = key("acme", "q1");
    a.set(
        &k,
        Bytes::from_static(b"answer"),
        resk_core::SetOptions::ttl(Duration::from_secs(60)),
    )
    .await
    .unwrap();
    assert_eq!(a.get(&k).await.unwrap().unwrap().source, "memory");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // B has never seen the key: layer 2 answers and fills B's layer 1.
    let from_l2 = b.get(&k).await.unwrap().unwrap();
    assert_eq!(from_l2.source, "redis");
    let from_l1 = b.get(&k).await.unwrap().unwrap();
    assert_eq!(from_l1.source, "memory");
    assert_eq!(from_l1.bytes, from_l2.bytes);
    // The entry's own expiry is reported, and the layer-1 copy expires with the entry (written ~300 ms
    // ago with 60 s), not 60 s after the fill.
    assert_eq!(from_l1.expires_at, from_l2.expires_at);
    let held = b
        .l1()
        .get(&k)
        .await
        .unwrap()
        .unwrap()
        .remaining_ttl()
        .unwrap();
    let entry = from_l2.remaining_ttl().unwrap();
    assert!(
        held <= entry + Duration::from_millis(50),
        "layer 1 holds {held:?} of {entry:?}"
    );
    assert!(
        held < Duration::from_millis(59_800),
        "layer-1 TTL restarted at the fill: {held:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_delete_or_purge_on_one_instance_evicts_the_other() {
    let Some((a, b)) = pair("a_write_delete_or_purge_on_one_instance_evicts_the_other").await
    else {
        return;
    };
    let k = key("acme", "q");
    let ttl = Some(Duration::from_secs(60));

    // Overwrite: B must not keep serving the old value from its layer 1.
    a.set(&k, Bytes::from_static(b"v1"), ttl.into())
        .await
        .unwrap();
    assert_eq!(&b.get(&k).await.unwrap().unwrap().bytes[..], b"v1");
    a.set(&k, Bytes::from_static(b"v2"), ttl.into())
        .await
        .unwrap();
    let t_set = until_evicted(&b, &k).await;
    assert_eq!(&b.get(&k).await.unwrap().unwrap().bytes[..], b"v2");

    // Delete.
    assert!(a.delete(&k).await.unwrap());
    let t_delete = until_evicted(&b, &k).await;
    assert!(b.get(&k).await.unwrap().is_none());

    // Purge of one tenant: B's copy of that tenant goes, its copy of another tenant stays.
    let other = key("globex", "q");
    a.set(&k, Bytes::from_static(b"v3"), ttl.into())
        .await
        .unwrap();
    // Straight into layer 2: no invalidation of `other` is on its way to B, which could evict B's
    // copy after the check below and fail the last assertion for a reason that is not the purge.
    a.l2()
        .set(&other, Bytes::from_static(b"g"), ttl.into())
        .await
        .unwrap();
    until_filled(&b, &k).await;
    until_filled(&b, &other).await;
    assert_eq!(
        a.purge(&PurgeScope::Tenant(TenantId::new("acme").unwrap()))
            .await
            .unwrap(),
        1
    );
    let t_purge = until_evicted(&b, &k).await;
    assert!(b.get(&k).await.unwrap().is_none());
    assert_eq!(b.l1().get(&other).await.unwrap().unwrap().source, "memory");
    eprintln!(
        "eviction seen by the other instance after: set {t_set:?}, delete {t_delete:?}, purge {t_purge:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_invalidations_do_not_evict_own_fresh_writes() {
    let l2 = MemoryStore::new(MemoryConfig::default());
    let store = TieredStore::new(
        MemoryStore::new(MemoryConfig::default()),
        l2,
        Arc::new(LocalBus::default()),
        TieredConfig::default(),
    );
    let k = key("acme", "q");
    store
        .set(
            &k,
            Bytes::from_static(b"v"),
            resk_core::SetOptions::ttl(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    // Give the listener time to see (and skip) its own message.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(store.l1().get(&k).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bus_gap_clears_layer_one() {
    let bus = Arc::new(LocalBus::default());
    let store = TieredStore::new(
        MemoryStore::new(MemoryConfig::default()),
        MemoryStore::new(MemoryConfig::default()),
        bus.clone(),
        TieredConfig::default(),
    );
    let k = key("acme", "q");
    store
        .set(
            &k,
            Bytes::from_static(b"v"),
            resk_core::SetOptions::default(),
        )
        .await
        .unwrap();
    bus.deliver(resk_core::BusEvent::Gap);
    let start = Instant::now();
    while store.l1().get(&k).await.unwrap().is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "gap did not clear layer 1"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Layer 2 still answers, and refills layer 1.
    assert_eq!(store.get(&k).await.unwrap().unwrap().source, "memory");
    assert!(store.l1().get(&k).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layer_one_ttl_is_capped() {
    let store = TieredStore::new(
        MemoryStore::new(MemoryConfig::default()),
        MemoryStore::new(MemoryConfig::default()),
        Arc::new(LocalBus::default()),
        TieredConfig::default().with_l1_max_ttl(Duration::from_millis(200)),
    );
    let k = key("acme", "q");
    store
        .set(
            &k,
            Bytes::from_static(b"v"),
            resk_core::SetOptions::ttl(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    let l1 = store.l1().get(&k).await.unwrap().unwrap();
    assert!(l1.remaining_ttl().unwrap() <= Duration::from_millis(200));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(store.l1().get(&k).await.unwrap().is_none());
    // Layer 2 keeps the full TTL.
    assert!(
        store
            .l2()
            .get(&k)
            .await
            .unwrap()
            .unwrap()
            .remaining_ttl()
            .unwrap()
            > Duration::from_secs(3000)
    );
}
