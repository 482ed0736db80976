//! The shared cache conformance suite, unchanged, against a Redis Cluster
//! (`RESK_TEST_REDIS_CLUSTER_URL`, e.g. `redis-cluster://127.0.0.1:7000?node=127.0.0.1:7001`;
//! `cargo xtask test` starts a private three-primary cluster). Keys of one tenant land on different
//! primaries, so purges must scan every primary and unlink per hash slot.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

resk_testkit::cache_suite_if!(common::store("REDIS_CLUSTER"));

/// The bus works across a cluster too (classic pub/sub is broadcast to every node).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bus_spans_the_cluster() {
    use resk_cache_redis::{RedisBus, RedisConfig};
    use resk_core::{Bus, BusEvent};
    let Some(url) = resk_testkit::service_url("REDIS_CLUSTER") else {
        resk_testkit::skip("bus_spans_the_cluster");
        return;
    };
    let config =
        RedisConfig::new(url).with_prefix(format!("resk-test-{}", resk_testkit::unique_id()));
    let (a, b) = (
        RedisBus::connect(&config).await.unwrap(),
        RedisBus::connect(&config).await.unwrap(),
    );
    let mut rx = b.subscribe();
    a.publish("t", bytes::Bytes::from_static(b"hello"))
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let event = tokio::time::timeout_at(deadline.into(), rx.recv())
            .await
            .expect("message not received within 5 s");
        if let Some(BusEvent::Message(m)) = event {
            assert_eq!((&*m.topic, &m.payload[..]), ("t", &b"hello"[..]));
            break;
        }
    }
}
