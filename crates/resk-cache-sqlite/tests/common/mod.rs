//! Helpers shared by this crate's integration tests.
#![allow(clippy::unwrap_used)]

/// A fresh database file under cargo's per-package temporary directory (inside the target dir).
pub(crate) fn fresh_path() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("resk-sqlite-tests");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{}.sqlite", resk_testkit::unique_id()))
}
