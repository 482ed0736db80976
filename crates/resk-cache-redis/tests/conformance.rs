//! The shared cache conformance suite against a real Redis (`RESK_TEST_REDIS_URL`), each scenario
//! under its own key prefix.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

resk_testkit::cache_suite_if!(common::store("REDIS"));

/// The bus contract on Redis pub/sub.
mod bus {
    use resk_cache_redis::{RedisBus, RedisConfig};

    async fn bus() -> Option<RedisBus> {
        let url = resk_testkit::service_url("REDIS")?;
        let prefix = format!("resk-test-{}", resk_testkit::unique_id());
        Some(
            RedisBus::connect(&RedisConfig::new(url).with_prefix(prefix))
                .await
                .unwrap(),
        )
    }

    resk_testkit::bus_suite_if!(bus());
}
