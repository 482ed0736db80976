//! Behaviour specific to the SQLite store: durability across reopen, the sweeper, clear errors for
//! unusable files.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use bytes::Bytes;
use resk_cache_sqlite::{SqliteConfig, SqliteStore};
use resk_core::{CacheKey, CacheStore, ErrorKind, TenantId};

mod common;
use common::fresh_path;

fn key(name: &str) -> CacheKey {
    CacheKey::new(TenantId::new("acme").unwrap(), name).unwrap()
}

#[tokio::test]
async fn entries_survive_reopening_and_migrations_are_idempotent() {
    let path = fresh_path();
    let store = SqliteStore::connect(SqliteConfig::new(&path))
        .await
        .unwrap();
    store
        .set(
            &key("a"),
            Bytes::from_static(b"kept"),
            resk_core::SetOptions::ttl(Duration::from_secs(600)),
        )
        .await
        .unwrap();
    store
        .set(
            &key("b"),
            Bytes::from_static(b"forever"),
            resk_core::SetOptions::default(),
        )
        .await
        .unwrap();
    store.close().await;
    drop(store);
    let reopened = SqliteStore::connect(SqliteConfig::new(&path))
        .await
        .unwrap();
    assert!(reopened.info().capabilities.durable);
    let a = reopened.get(&key("a")).await.unwrap().unwrap();
    assert_eq!(a.bytes, Bytes::from_static(b"kept"));
    assert!(a.remaining_ttl().unwrap() > Duration::from_secs(590));
    assert_eq!(
        reopened.get(&key("b")).await.unwrap().unwrap().bytes,
        Bytes::from_static(b"forever")
    );
}

#[tokio::test]
async fn sweeper_deletes_expired_rows() {
    let store = SqliteStore::connect(
        SqliteConfig::new(fresh_path()).with_sweep_interval(Duration::from_millis(100)),
    )
    .await
    .unwrap();
    store
        .set(
            &key("short"),
            Bytes::from_static(b"x"),
            resk_core::SetOptions::ttl(Duration::from_millis(50)),
        )
        .await
        .unwrap();
    store
        .set(
            &key("long"),
            Bytes::from_static(b"y"),
            resk_core::SetOptions::ttl(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    // The background sweeper already removed the expired row: nothing is left to sweep.
    assert_eq!(store.sweep_expired().await.unwrap(), 0);
    assert!(store.get(&key("long")).await.unwrap().is_some());
    store
        .set(
            &key("again"),
            Bytes::from_static(b"z"),
            resk_core::SetOptions::ttl(Duration::from_millis(1)),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let swept = store.sweep_expired().await.unwrap();
    assert!(swept <= 1, "only the expired row may be swept, got {swept}");
    assert!(store.get(&key("long")).await.unwrap().is_some());
}

#[tokio::test]
async fn unwritable_location_is_a_clear_config_error() {
    let path = std::path::Path::new("/proc/resk-cannot-write-here/cache.sqlite");
    let err = SqliteStore::connect(SqliteConfig::new(path))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(
        err.to_string()
            .contains("/proc/resk-cannot-write-here/cache.sqlite"),
        "{err}"
    );
}

#[tokio::test]
async fn corrupt_file_is_a_clear_config_error() {
    let path = fresh_path();
    std::fs::write(
        &path,
        b"this is not a SQLite database, just some bytes that pretend".repeat(100),
    )
    .unwrap();
    let err = SqliteStore::connect(SqliteConfig::new(&path))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    let text = err.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
    // The file is left as it was: nothing is overwritten.
    assert!(
        std::fs::read(&path)
            .unwrap()
            .starts_with(b"this is not a SQLite")
    );
}
