//! The shared cache conformance suite, unchanged, against tiered stores: memory over memory (always)
//! and memory over a real Redis (`RESK_TEST_REDIS_URL`) with the Redis bus.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use resk_cache_memory::{MemoryConfig, MemoryStore};
use resk_cache_redis::{RedisBus, RedisConfig, RedisStore};
use resk_cache_tiered::{TieredConfig, TieredStore};
use resk_core::LocalBus;

fn l1() -> MemoryStore {
    MemoryStore::new(MemoryConfig::default())
}

mod over_memory {
    use super::*;

    async fn store() -> TieredStore<MemoryStore, MemoryStore> {
        TieredStore::new(
            l1(),
            MemoryStore::new(MemoryConfig::default()),
            Arc::new(LocalBus::default()),
            TieredConfig::default(),
        )
    }

    resk_testkit::cache_suite!(store());
}

mod over_redis {
    use super::*;

    async fn store() -> Option<TieredStore<MemoryStore, RedisStore>> {
        let url = resk_testkit::service_url("REDIS")?;
        let prefix = format!("resk-test-{}", resk_testkit::unique_id());
        let config = RedisConfig::new(url).with_prefix(prefix);
        let l2 = RedisStore::connect(config.clone()).await.unwrap();
        let bus = Arc::new(RedisBus::connect(&config).await.unwrap());
        Some(TieredStore::new(l1(), l2, bus, TieredConfig::default()))
    }

    resk_testkit::cache_suite_if!(store());
}
