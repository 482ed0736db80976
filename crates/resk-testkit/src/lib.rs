#![doc = include_str!("../README.md")]
// A test kit: failing loudly is its job.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod cache;

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

/// Expands one `#[tokio::test]` per cache scenario, on the store and on it as a `SharedCacheStore`.
///
/// `$make` is an expression evaluating to a future of a fresh, isolated `CacheStore`.
#[macro_export]
macro_rules! cache_suite {
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
            large_value,
            unicode_names,
            binary_values,
            concurrent_writers,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __cache_suite {
    ($make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let store = $make.await;
                $crate::cache::$name(&store).await;
            }
        )*

        /// The same scenarios through `Arc<dyn CacheStoreDyn>`.
        mod shared {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let store: $crate::__private::SharedCacheStore =
                        ::std::sync::Arc::new($make.await);
                    $crate::cache::$name(&store).await;
                }
            )*
        }
    };
}

#[doc(hidden)]
pub mod __private {
    pub use resk_core::SharedCacheStore;
}
