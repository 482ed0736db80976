//! The shared VectorStore suite against a real Chroma server (`RESK_TEST_CHROMA_URL`, started by
//! `cargo xtask test`), plus what is Chroma's own: specs of collections made by others, bad tokens,
//! the server going away.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use resk_core::{CollectionSpec, ErrorKind, Metric, VectorStore};
use resk_testkit::vector::{query, record, tenant};
use resk_vector_chroma::{ChromaConfig, ChromaVectorStore};
use serde_json::json;

async fn store() -> Option<ChromaVectorStore> {
    let url = resk_testkit::service_url("CHROMA")?;
    Some(ChromaVectorStore::new(ChromaConfig::new(url)).unwrap())
}

resk_testkit::vector_suite_if!(store());

/// A collection made by another store instance is found with its spec; a reserved metadata field and
/// nested metadata are refused before anything is written.
#[tokio::test]
async fn collections_are_checked_and_metadata_validated() {
    let Some(first) = store().await else {
        resk_testkit::skip("collections_are_checked_and_metadata_validated");
        return;
    };
    let second = store().await.unwrap();
    let coll = resk_testkit::vector::collection(&first).await;
    let err = second
        .ensure_collection(
            &coll,
            CollectionSpec {
                dims: 8,
                metric: Metric::Cosine,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    let t = tenant();
    let err = second
        .upsert(
            &coll,
            vec![record(
                &t,
                "x",
                [1.0, 0.0, 0.0, 0.0],
                json!({"resk_tenant": "other"}),
            )],
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    let err = second
        .upsert(
            &coll,
            vec![
                record(&t, "y", [1.0, 0.0, 0.0, 0.0], json!({})),
                record(&t, "z", [1.0, 0.0, 0.0, 0.0], json!({"tags": ["a"]})),
            ],
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert!(
        second
            .query(&coll, &query(&t, [1.0, 0.0, 0.0, 0.0], 5))
            .await
            .unwrap()
            .is_empty(),
        "nothing of a refused batch is written"
    );
}

/// A server that is not there is `Unavailable` (after the retries), and a bad URL is a config error.
#[tokio::test]
async fn unreachable_server_is_unavailable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let mut config = ChromaConfig::new(format!("http://127.0.0.1:{port}"));
    config.retry.max_retries = 1;
    config.retry.base = std::time::Duration::from_millis(10);
    let store = ChromaVectorStore::new(config).unwrap();
    let err = store
        .ensure_collection("resk_t_down", resk_testkit::vector::SPEC)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    let err = ChromaVectorStore::new(ChromaConfig::new("localhost:8000")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
}
