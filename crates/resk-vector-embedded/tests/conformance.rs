//! The shared VectorStore suite, in memory and persisted to a temporary directory.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use resk_vector_embedded::{EmbeddedConfig, EmbeddedVectorStore};

resk_testkit::vector_suite_if!(async { Some(EmbeddedVectorStore::in_memory()) });

mod persisted {
    use super::*;

    async fn store() -> EmbeddedVectorStore {
        // Leaked on purpose: the directory must outlive the store inside each test.
        let dir = Box::leak(Box::new(tempfile::tempdir().unwrap()));
        EmbeddedVectorStore::open(EmbeddedConfig {
            dir: Some(dir.path().to_owned()),
            ..EmbeddedConfig::default()
        })
        .unwrap()
    }

    resk_testkit::vector_suite_if!(async { Some(store().await) });
}
