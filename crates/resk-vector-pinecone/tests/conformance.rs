//! The shared VectorStore suite against a local fake of Pinecone's REST API (version 2025-04; Pinecone
//! cannot run here), plus the documented requests, authentication, readiness and error bodies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod fake;

use std::time::Duration;

use fake::FakePinecone;
use resk_core::{CollectionSpec, ErrorKind, Metric, VectorPurge, VectorStore};
use resk_testkit::vector::{query, record, tenant};
use resk_vector_pinecone::{PineconeConfig, PineconeVectorStore};
use serde_json::json;

const KEY: &str = "pcsk_test_0123456789";

fn config(url: &str, key: &str) -> PineconeConfig {
    let mut c = PineconeConfig::new(key);
    c.controller_url = url.to_owned();
    c.plain_http = true;
    c.retry.base = Duration::from_millis(5);
    c
}

async fn store() -> Option<PineconeVectorStore> {
    let fake = FakePinecone::start(KEY, 0).await;
    Some(PineconeVectorStore::new(config(&fake.url, KEY)).unwrap())
}

resk_testkit::vector_suite_if!(store());

/// The documented requests: index creation with a serverless spec, the tenant as namespace, camelCase
/// query fields, the API key and version headers (checked by the fake on every request).
#[tokio::test]
async fn sends_the_documented_requests() {
    let fake = FakePinecone::start(KEY, 2).await;
    let store = PineconeVectorStore::new(config(&fake.url, KEY)).unwrap();
    store
        .ensure_collection(
            "FAQ_en",
            CollectionSpec {
                dims: 4,
                metric: Metric::L2,
            },
        )
        .await
        .unwrap();
    let t = tenant();
    store
        .upsert(
            "FAQ_en",
            vec![record(
                &t,
                "k1",
                [1.0, 0.0, 0.0, 0.0],
                json!({"lang": "en", "tags": ["a"]}),
            )],
        )
        .await
        .unwrap();
    let found = store
        .query("FAQ_en", &query(&t, [0.0, 0.0, 0.0, 0.0], 3))
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert!(
        (found[0].similarity - 0.5).abs() < 1e-6,
        "distance 1 → 1/(1+1)"
    );

    let reqs = fake.requests();
    let create = reqs.iter().find(|(_, p, _)| p == "/indexes").unwrap();
    assert_eq!(
        create.2,
        json!({"name": "faq-en", "dimension": 4, "metric": "euclidean",
               "spec": {"serverless": {"cloud": "aws", "region": "us-east-1"}},
               "deletion_protection": "disabled"})
    );
    let describes = reqs
        .iter()
        .filter(|(m, p, _)| m == "GET" && p == "/indexes/faq-en")
        .count();
    assert!(
        describes >= 3,
        "waited for readiness: {describes} describes"
    );
    let upsert = reqs
        .iter()
        .find(|(_, p, _)| p.ends_with("/vectors/upsert"))
        .unwrap();
    assert_eq!(upsert.2["namespace"], t.as_str());
    assert_eq!(upsert.2["vectors"][0]["id"], "k1");
    let q = reqs.iter().find(|(_, p, _)| p.ends_with("/query")).unwrap();
    assert_eq!(
        q.2,
        json!({"namespace": t.as_str(), "vector": [0.0, 0.0, 0.0, 0.0], "topK": 3,
               "includeMetadata": true, "includeValues": false})
    );
}

/// A wrong key is `Unauthorized`; nested metadata and null filters are refused before any request; a
/// purge of a tenant without vectors sends no delete.
#[tokio::test]
async fn errors_are_clear() {
    let fake = FakePinecone::start(KEY, 0).await;
    let bad = PineconeVectorStore::new(config(&fake.url, "wrong")).unwrap();
    let err = bad
        .ensure_collection("faq", resk_testkit::vector::SPEC)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    assert!(err.to_string().contains("Invalid API Key"), "{err}");

    let store = PineconeVectorStore::new(config(&fake.url, KEY)).unwrap();
    let coll = resk_testkit::vector::collection(&store).await;
    let t = tenant();
    let before = fake.requests().len();
    let err = store
        .upsert(
            &coll,
            vec![record(
                &t,
                "x",
                [1.0, 0.0, 0.0, 0.0],
                json!({"nested": {"a": 1}}),
            )],
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    let mut q = query(&t, [1.0, 0.0, 0.0, 0.0], 3);
    q.filter = Some(resk_core::Filter::Eq("a".into(), json!(null)));
    assert_eq!(
        store.query(&coll, &q).await.unwrap_err().kind(),
        ErrorKind::Unsupported
    );
    assert_eq!(fake.requests().len(), before, "nothing sent");
    assert_eq!(
        store
            .purge(&coll, &VectorPurge::Tenant(tenant()))
            .await
            .unwrap(),
        0
    );
    assert!(
        !fake
            .requests()
            .iter()
            .any(|(_, p, _)| p.ends_with("/vectors/delete")),
        "no delete for an empty namespace"
    );
    assert_eq!(
        PineconeVectorStore::new(config(&fake.url, ""))
            .unwrap_err()
            .kind(),
        ErrorKind::Config
    );
}
