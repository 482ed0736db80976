//! The shared VectorStore suite against a real milvus-lite server (`RESK_TEST_MILVUS_URL`, started by
//! `cargo xtask test`), plus what is Milvus's own: similarity scales, escaping, an unreachable server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use resk_core::{ErrorKind, Filter, VectorStore};
use resk_testkit::vector::{query, record, tenant};
use resk_vector_milvus::{MilvusConfig, MilvusVectorStore};
use serde_json::json;

async fn store() -> Option<MilvusVectorStore> {
    let url = resk_testkit::service_url("MILVUS")?;
    Some(
        MilvusVectorStore::connect(MilvusConfig::new(url))
            .await
            .unwrap(),
    )
}

resk_testkit::vector_suite_if!(store());

/// Quotes and backslashes in ids, field names and values are data, never expression syntax; a
/// hyphenated collection name (resk's default `resk-<model>`) works.
#[tokio::test]
async fn hostile_strings_are_data() {
    let Some(store) = store().await else {
        resk_testkit::skip("hostile_strings_are_data");
        return;
    };
    let coll = format!("resk-t-{}", resk_testkit::unique_id());
    store
        .ensure_collection(&coll, resk_testkit::vector::SPEC)
        .await
        .unwrap();
    let t = tenant();
    store
        .upsert(
            &coll,
            vec![
                record(
                    &t,
                    r#"a" or tenant != "x"#,
                    [1.0, 0.0, 0.0, 0.0],
                    json!({"q\"k": "v\\\""}),
                ),
                record(&t, "plain", [0.9, 0.1, 0.0, 0.0], json!({"q\"k": "other"})),
            ],
        )
        .await
        .unwrap();
    let mut q = query(&t, [1.0, 0.0, 0.0, 0.0], 5);
    q.filter = Some(Filter::Eq("q\"k".into(), json!("v\\\"")));
    let found = store.query(&coll, &q).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, r#"a" or tenant != "x"#);
    let n = store
        .delete(&coll, &t, &[r#"a" or tenant != "x"#.to_owned()])
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(
        store
            .query(&coll, &query(&t, [1.0, 0.0, 0.0, 0.0], 5))
            .await
            .unwrap()
            .len(),
        1,
        "only the hostile id was deleted"
    );
}

/// A server that is not there is `Unavailable`; a URI without a scheme is a config error.
#[tokio::test]
async fn unreachable_server_is_unavailable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let mut config = MilvusConfig::new(format!("http://127.0.0.1:{port}"));
    config.timeout = std::time::Duration::from_secs(2);
    let outcome = MilvusVectorStore::connect(config).await;
    let err = match outcome {
        Err(e) => e,
        // The SDK may connect lazily: then the first call fails.
        Ok(store) => store
            .ensure_collection("resk_t_down", resk_testkit::vector::SPEC)
            .await
            .unwrap_err(),
    };
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    let err = MilvusVectorStore::connect(MilvusConfig::new("127.0.0.1:19530"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
}
