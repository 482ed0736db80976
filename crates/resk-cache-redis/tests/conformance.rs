//! The shared cache conformance suite against a real Redis (`RESK_TEST_REDIS_URL`), each scenario
//! under its own key prefix.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use resk_cache_redis::{RedisConfig, RedisStore};

async fn store() -> Option<RedisStore> {
    let url = resk_testkit::service_url("REDIS")?;
    let prefix = format!("resk-test-{}", resk_testkit::unique_id());
    Some(
        RedisStore::connect(RedisConfig::new(url).with_prefix(prefix))
            .await
            .unwrap(),
    )
}

resk_testkit::cache_suite_if!(store());
