//! What the Redis test suites share.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use resk_cache_redis::{RedisConfig, RedisStore};

/// A store on the Redis deployment named by `RESK_TEST_<service>_URL`, under a key prefix of its own
/// so scenarios never see each other's keys; `None` (the suite prints `SKIP`) when it is not set.
pub(crate) async fn store(service: &str) -> Option<RedisStore> {
    let url = resk_testkit::service_url(service)?;
    let prefix = format!("resk-test-{}", resk_testkit::unique_id());
    Some(
        RedisStore::connect(RedisConfig::new(url).with_prefix(prefix))
            .await
            .unwrap(),
    )
}
