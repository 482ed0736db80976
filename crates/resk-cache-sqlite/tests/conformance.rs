//! The shared cache conformance suite against SQLite, on a file and in memory.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use resk_cache_sqlite::{SqliteConfig, SqliteStore};

mod common;
use common::fresh_path;

mod file {
    use super::*;

    resk_testkit::cache_suite!(async {
        SqliteStore::connect(SqliteConfig::new(fresh_path()))
            .await
            .unwrap()
    });
}

mod memory {
    use super::*;

    resk_testkit::cache_suite!(async {
        SqliteStore::connect(SqliteConfig::in_memory())
            .await
            .unwrap()
    });
}
