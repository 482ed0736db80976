//! The shared VectorStore suite against a real PostgreSQL with pgvector (`RESK_TEST_PGVECTOR_URL`,
//! started by `cargo xtask test`), plus what is pgvector's own.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use resk_core::{CollectionSpec, ErrorKind, Metric, VectorStore};
use resk_testkit::vector::{query, record, tenant};
use resk_vector_pgvector::{PgVectorConfig, PgVectorStore};
use serde_json::json;

async fn store() -> Option<PgVectorStore> {
    let url = resk_testkit::service_url("PGVECTOR")?;
    Some(
        PgVectorStore::connect(PgVectorConfig::new(url))
            .await
            .unwrap(),
    )
}

resk_testkit::vector_suite_if!(store());

/// A second instance finds the collection and its spec; ensure races between instances create it once;
/// hostile names and metadata are plain data.
#[tokio::test]
async fn instances_share_collections_and_names_are_data() {
    let Some(first) = store().await else {
        resk_testkit::skip("instances_share_collections_and_names_are_data");
        return;
    };
    let second = store().await.unwrap();
    let coll = format!("resk_t_\"; DROP TABLE x; -- {}", resk_testkit::unique_id());
    let spec = resk_testkit::vector::SPEC;
    let (a, b) = tokio::join!(
        first.ensure_collection(&coll, spec),
        second.ensure_collection(&coll, spec)
    );
    a.unwrap();
    b.unwrap();
    let err = second
        .ensure_collection(
            &coll,
            CollectionSpec {
                dims: 4,
                metric: Metric::L2,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    let t = tenant();
    first
        .upsert(
            &coll,
            vec![record(
                &t,
                "it's",
                [1.0, 0.0, 0.0, 0.0],
                json!({"q'uote": "a'b"}),
            )],
        )
        .await
        .unwrap();
    let mut q = query(&t, [1.0, 0.0, 0.0, 0.0], 3);
    q.filter = Some(resk_core::Filter::Eq("q'uote".into(), json!("a'b")));
    let found = second.query(&coll, &q).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, "it's");
}

/// A server that is not there is `Unavailable`; a malformed URL is a config error.
#[tokio::test]
async fn unreachable_server_is_unavailable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let mut config = PgVectorConfig::new(format!("postgres://postgres@127.0.0.1:{port}/x"));
    config.timeout = std::time::Duration::from_secs(2);
    let err = PgVectorStore::connect(config).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    let err = PgVectorStore::connect(PgVectorConfig::new("mysql://nope"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
}
