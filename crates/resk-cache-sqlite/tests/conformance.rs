//! The shared cache conformance suite against SQLite, on a file and in memory.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use resk_cache_sqlite::{SqliteConfig, SqliteStore};

/// A fresh database file under cargo's per-package temporary directory (inside the target dir).
pub fn fresh_path() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("resk-sqlite-tests");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{}.sqlite", resk_testkit::unique_id()))
}

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
