//! The shared VectorStore suite against a local fake of Qdrant's REST API (v1.17.x API reference;
//! Qdrant cannot run here), plus the requests the fake records checked against the documented shapes,
//! authentication, and error bodies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod fake;

use fake::FakeQdrant;
use resk_core::{CollectionSpec, ErrorKind, Metric, VectorStore};
use resk_testkit::vector::{query, record, tenant};
use resk_vector_qdrant::{QdrantConfig, QdrantVectorStore};
use serde_json::json;

async fn store() -> Option<QdrantVectorStore> {
    let fake = FakeQdrant::start(None).await;
    Some(QdrantVectorStore::new(QdrantConfig::new(fake.url)).unwrap())
}

resk_testkit::vector_suite_if!(store());

/// The documented requests: collection with `vectors.{size, distance}`, an `is_tenant` keyword index,
/// points with UUID ids and the tenant in the payload, queries filtered by tenant.
#[tokio::test]
async fn sends_the_documented_requests() {
    let fake = FakeQdrant::start(Some("qd-key-123")).await;
    let mut config = QdrantConfig::new(fake.url.clone());
    config.api_key = Some("qd-key-123".into());
    let store = QdrantVectorStore::new(config).unwrap();
    store
        .ensure_collection(
            "faq",
            CollectionSpec {
                dims: 4,
                metric: Metric::Dot,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        fake.indexes("faq"),
        [json!({"field": "resk_tenant", "schema": {"type": "keyword", "is_tenant": true}})]
    );
    let t = tenant();
    store
        .upsert(
            "faq",
            vec![record(
                &t,
                "k1",
                [1.0, 0.0, 0.0, 0.0],
                json!({"lang": "en"}),
            )],
        )
        .await
        .unwrap();
    let found = store
        .query("faq", &query(&t, [2.0, 0.0, 0.0, 0.0], 3))
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, "k1");
    assert!((found[0].similarity - 2.0).abs() < 1e-6, "dot product");
    assert_eq!(found[0].metadata.get("lang"), Some(&json!("en")));
    assert!(found[0].metadata.get("resk_tenant").is_none());

    let reqs = fake.requests();
    let (_, path, create) = &reqs[1];
    assert_eq!(path, "/collections/faq");
    assert_eq!(create, &json!({"vectors": {"size": 4, "distance": "Dot"}}));
    let upsert = reqs
        .iter()
        .find(|(m, p, _)| m == "PUT" && p == "/collections/faq/points")
        .unwrap();
    let point = &upsert.2["points"][0];
    assert_eq!(point["id"].as_str().unwrap().len(), 36, "a UUID id");
    assert_eq!(point["payload"]["resk_tenant"], t.as_str());
    assert_eq!(point["payload"]["resk_id"], "k1");
    let q = reqs
        .iter()
        .find(|(_, p, _)| p == "/collections/faq/points/query")
        .unwrap();
    assert_eq!(
        q.2,
        json!({
            "query": [2.0, 0.0, 0.0, 0.0],
            "limit": 3,
            "filter": {"must": [{"key": "resk_tenant", "match": {"value": t.as_str()}}]},
            "with_payload": true
        })
    );
}

/// A wrong key is `Unauthorized`; float equality filters are `Unsupported` before any request.
#[tokio::test]
async fn bad_credentials_and_unsupported_filters_are_clear() {
    let fake = FakeQdrant::start(Some("right")).await;
    let mut config = QdrantConfig::new(fake.url.clone());
    config.api_key = Some("wrong".into());
    let store = QdrantVectorStore::new(config).unwrap();
    let err = store
        .ensure_collection("faq", resk_testkit::vector::SPEC)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");

    let store = store_with_key(&fake, "right");
    let coll = resk_testkit::vector::collection(&store).await;
    let t = tenant();
    let mut q = query(&t, [1.0, 0.0, 0.0, 0.0], 3);
    q.filter = Some(resk_core::Filter::Eq("score".into(), json!(0.5)));
    let before = fake.requests().len();
    let err = store.query(&coll, &q).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert_eq!(fake.requests().len(), before, "nothing sent");
}

fn store_with_key(fake: &FakeQdrant, key: &str) -> QdrantVectorStore {
    let mut config = QdrantConfig::new(fake.url.clone());
    config.api_key = Some(key.into());
    QdrantVectorStore::new(config).unwrap()
}

/// An existing collection of other dimensions is a configuration error, not a silent wrong answer.
#[tokio::test]
async fn an_existing_collection_is_checked() {
    let fake = FakeQdrant::start(None).await;
    let first = QdrantVectorStore::new(QdrantConfig::new(fake.url.clone())).unwrap();
    let second = QdrantVectorStore::new(QdrantConfig::new(fake.url.clone())).unwrap();
    first
        .ensure_collection("faq", resk_testkit::vector::SPEC)
        .await
        .unwrap();
    second
        .ensure_collection("faq", resk_testkit::vector::SPEC)
        .await
        .unwrap();
    let err = second
        .ensure_collection(
            "faq",
            CollectionSpec {
                dims: 8,
                metric: Metric::Cosine,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    let err = second
        .ensure_collection("../etc", resk_testkit::vector::SPEC)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
}
