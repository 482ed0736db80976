//! The shared cache conformance suite against the memory store, directly and as `SharedCacheStore`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use resk_cache_memory::{MemoryConfig, MemoryStore};

resk_testkit::cache_suite!(async { MemoryStore::new(MemoryConfig::default()) });
