//! The shared GCRA limiter (`RedisStore::rate_limit`) against a real Redis (`RESK_TEST_REDIS_URL`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use resk_cache_redis::{RedisConfig, RedisStore};
use resk_core::{CacheKey, CacheStore, PurgeScope, TenantId};

/// Two stores (two connection pools, as two server processes would have) on one Redis and prefix.
async fn pair() -> Option<(RedisStore, RedisStore)> {
    let Some(url) = resk_testkit::service_url("REDIS") else {
        resk_testkit::skip("redis rate limit");
        return None;
    };
    let prefix = format!("resk-test-{}", resk_testkit::unique_id());
    let config = RedisConfig::new(url).with_prefix(prefix);
    Some((
        RedisStore::connect(config.clone()).await.unwrap(),
        RedisStore::connect(config).await.unwrap(),
    ))
}

#[tokio::test]
async fn a_burst_of_max_then_refusal_with_the_wait_until_the_next_unit() {
    let Some((a, _)) = pair().await else { return };
    let window = Duration::from_secs(60);
    for expected in (0..5).rev() {
        let out = a.rate_limit("k", 5, window).await.unwrap();
        assert!(out.allowed);
        assert_eq!(out.remaining, expected);
        // Time until the whole burst is back: one refill interval (12 s) per spent unit.
        assert!(out.wait > Duration::from_secs(12 * u64::from(4 - expected)));
        assert!(out.wait <= Duration::from_secs(12 * u64::from(5 - expected)));
    }
    let refused = a.rate_limit("k", 5, window).await.unwrap();
    assert!(!refused.allowed);
    assert_eq!(refused.remaining, 0);
    assert!(refused.wait > Duration::from_secs(11) && refused.wait <= Duration::from_secs(12));
    // A refusal spends nothing: still refused, with no longer a wait.
    let again = a.rate_limit("k", 5, window).await.unwrap();
    assert!(!again.allowed && again.wait <= refused.wait);
    assert!(a.rate_limit("other", 5, window).await.unwrap().allowed);
}

#[tokio::test]
async fn processes_share_one_quota_atomically() {
    let Some((a, b)) = pair().await else { return };
    let window = Duration::from_secs(60);
    // 60 concurrent checks split over two pools: exactly the quota goes through.
    let checks = (0..60).map(|i| {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tokio::spawn(async move { store.rate_limit("shared", 20, window).await.unwrap() })
    });
    let mut allowed = 0;
    for check in checks {
        allowed += usize::from(check.await.unwrap().allowed);
    }
    assert_eq!(allowed, 20);
    assert!(!b.rate_limit("shared", 20, window).await.unwrap().allowed);
}

#[tokio::test]
async fn the_quota_refills_at_window_over_max() {
    let Some((a, _)) = pair().await else { return };
    let window = Duration::from_millis(400);
    assert!(a.rate_limit("r", 2, window).await.unwrap().allowed);
    assert!(a.rate_limit("r", 2, window).await.unwrap().allowed);
    let refused = a.rate_limit("r", 2, window).await.unwrap();
    assert!(!refused.allowed);
    tokio::time::sleep(refused.wait + Duration::from_millis(20)).await;
    assert!(a.rate_limit("r", 2, window).await.unwrap().allowed);
}

#[tokio::test]
async fn counters_expire_and_survive_purges() {
    let Some((a, _)) = pair().await else { return };
    let window = Duration::from_secs(60);
    a.rate_limit("p", 1, window).await.unwrap();
    // Purging every entry of the store, or a tenant named like the counters, resets no limit.
    a.purge(&PurgeScope::All).await.unwrap();
    a.purge(&PurgeScope::Tenant(TenantId::new("rl").unwrap()))
        .await
        .unwrap();
    assert!(!a.rate_limit("p", 1, window).await.unwrap().allowed);
    // …and a counter is not a cache entry.
    let key = CacheKey::new(TenantId::new("rl").unwrap(), "p").unwrap();
    assert!(a.get(&key).await.unwrap().is_none());
    // Every write sets an expiry: the time the key's quota takes to refill, so idle keys cost nothing.
    let url = std::env::var("RESK_TEST_REDIS_URL").unwrap();
    let raw = fred::prelude::Builder::from_config(fred::prelude::Config::from_url(&url).unwrap())
        .build()
        .unwrap();
    fred::prelude::ClientLike::init(&raw).await.unwrap();
    let counter = format!("{}#rl:p", a.prefix());
    let pttl: i64 = fred::prelude::KeysInterface::pttl(&raw, &counter)
        .await
        .unwrap();
    assert!(pttl > 0 && pttl <= 60_000, "PTTL {pttl}");
}
