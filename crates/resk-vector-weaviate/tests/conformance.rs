//! The shared VectorStore suite against a local fake of Weaviate's REST + GraphQL API (v1.38
//! reference; Weaviate cannot run here), plus the requests the fake records checked against the
//! documented shapes, authentication, bad input and existing-class checks.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod fake;

use fake::FakeWeaviate;
use resk_core::{CollectionSpec, ErrorKind, Filter, Metric, VectorPurge, VectorStore};
use resk_testkit::vector::{query, record, tenant};
use resk_vector_weaviate::{WeaviateConfig, WeaviateVectorStore, class_name, tenant_name};
use serde_json::json;

async fn store() -> Option<WeaviateVectorStore> {
    let fake = FakeWeaviate::start(None).await;
    Some(WeaviateVectorStore::new(WeaviateConfig::new(fake.url)).unwrap())
}

resk_testkit::vector_suite_if!(store());

fn store_with_key(fake: &FakeWeaviate, key: &str) -> WeaviateVectorStore {
    let mut config = WeaviateConfig::new(fake.url.clone());
    config.api_key = Some(key.into());
    WeaviateVectorStore::new(config).unwrap()
}

/// The documented requests: a multi-tenant class without vectorizer, exact-match text properties,
/// batch objects with UUID ids and a tenant, a GraphQL `nearVector` search in the tenant.
#[tokio::test]
async fn sends_the_documented_requests() {
    let fake = FakeWeaviate::start(Some("wv-key-123")).await;
    let store = store_with_key(&fake, "wv-key-123");
    let spec = CollectionSpec {
        dims: 4,
        metric: Metric::Dot,
    };
    store.ensure_collection("faq", spec).await.unwrap();
    let t = tenant();
    store
        .upsert(
            "faq",
            vec![record(
                &t,
                "k1",
                [1.0, 0.0, 0.0, 0.0],
                json!({"lang": "en", "n": 2, "tags": ["a"]}),
            )],
        )
        .await
        .unwrap();
    let mut q = query(&t, [2.0, 0.0, 0.0, 0.0], 3);
    q.filter = Some(Filter::Eq("lang".into(), json!("en")));
    let found = store.query("faq", &q).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, "k1");
    assert!((found[0].similarity - 2.0).abs() < 1e-6, "dot product");
    assert_eq!(
        found[0].metadata,
        json!({"lang": "en", "n": 2, "tags": ["a"]})
            .as_object()
            .unwrap()
            .clone(),
        "metadata comes back exactly, arrays included"
    );

    let reqs = fake.requests();
    let create = reqs
        .iter()
        .find(|(m, p, _)| m == "POST" && p == "/v1/schema")
        .unwrap();
    assert_eq!(
        create.2,
        json!({
            "class": "Resk_faq",
            "description": "resk vector collection faq (dims=4)",
            "vectorizer": "none",
            "vectorIndexType": "hnsw",
            "vectorIndexConfig": {"distance": "dot"},
            "multiTenancyConfig": {"enabled": true, "autoTenantCreation": true, "autoTenantActivation": true},
            "properties": [
                {"name": "resk_id", "dataType": ["text"], "tokenization": "field", "indexFilterable": true, "indexSearchable": false},
                {"name": "resk_metadata", "dataType": ["text"], "indexFilterable": false, "indexSearchable": false},
            ],
        })
    );
    let added: Vec<_> = reqs
        .iter()
        .filter(|(_, p, _)| p == "/v1/schema/Resk_faq/properties")
        .map(|r| r.2.clone())
        .collect();
    assert!(added.contains(&json!({"name": "lang", "dataType": ["text"], "tokenization": "field", "indexFilterable": true, "indexSearchable": false})));
    assert!(added.contains(&json!({"name": "n", "dataType": ["number"], "indexFilterable": true})));
    assert_eq!(added.len(), 2, "arrays are not properties: {added:?}");
    let batch = reqs
        .iter()
        .find(|(m, p, _)| m == "POST" && p == "/v1/batch/objects")
        .unwrap();
    let object = &batch.2["objects"][0];
    assert_eq!(object["class"], "Resk_faq");
    assert_eq!(object["tenant"], tenant_name(&t));
    assert_eq!(object["id"].as_str().unwrap().len(), 36, "a UUID id");
    assert_eq!(object["vector"], json!([1.0, 0.0, 0.0, 0.0]));
    assert_eq!(object["properties"]["resk_id"], "k1");
    let search = reqs
        .iter()
        .rev()
        .find(|(_, p, _)| p == "/v1/graphql")
        .unwrap();
    assert_eq!(
        search.2,
        json!({"query": format!(
            "{{Get{{Resk_faq(nearVector:{{vector:[2,0,0,0]}},limit:3,tenant:\"{}\",where:{{path:[\"lang\"],operator:Equal,valueText:\"en\"}}){{resk_id resk_metadata _additional{{distance}}}}}}}}",
            tenant_name(&t)
        )})
    );
    assert_eq!(fake.tenants("Resk_faq"), [tenant_name(&t)]);
}

/// A wrong key is `Unauthorized`; filters Weaviate cannot express are `Unsupported` before any
/// request; a metadata field changing type is refused before anything is written.
#[tokio::test]
async fn bad_credentials_and_bad_input_are_clear() {
    let fake = FakeWeaviate::start(Some("right")).await;
    let err = store_with_key(&fake, "wrong")
        .ensure_collection("faq", resk_testkit::vector::SPEC)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");

    let store = store_with_key(&fake, "right");
    let coll = resk_testkit::vector::collection(&store).await;
    let t = tenant();
    store
        .upsert(
            &coll,
            vec![record(&t, "a", [1.0, 0.0, 0.0, 0.0], json!({"n": 1}))],
        )
        .await
        .unwrap();

    let mut q = query(&t, [1.0, 0.0, 0.0, 0.0], 3);
    q.filter = Some(Filter::Eq("my-field".into(), json!("x")));
    let before = fake.requests().len();
    let err = store.query(&coll, &q).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert_eq!(fake.requests().len(), before, "nothing sent");

    let before = fake.requests().len();
    let err = store
        .upsert(
            &coll,
            vec![
                record(&t, "b", [0.0, 1.0, 0.0, 0.0], json!({"n": 2})),
                record(&t, "c", [0.0, 1.0, 0.0, 0.0], json!({"n": "three"})),
            ],
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert!(err.to_string().contains("`n`"), "{err}");
    assert_eq!(fake.requests().len(), before, "nothing sent");
    let err = store
        .upsert(
            &coll,
            vec![record(&t, "c", [0.0, 1.0, 0.0, 0.0], json!({"n": "three"}))],
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    let err = store
        .upsert(
            &coll,
            vec![record(
                &t,
                "d",
                [0.0, 1.0, 0.0, 0.0],
                json!({"resk_id": "x"}),
            )],
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    let found = store
        .query(&coll, &query(&t, [1.0, 0.0, 0.0, 0.0], 10))
        .await
        .unwrap();
    assert_eq!(found.len(), 1, "no partial write: {found:?}");

    // A filter on a field no record has, or with a value of another type, matches nothing.
    q.filter = Some(Filter::Eq("missing".into(), json!("x")));
    assert!(store.query(&coll, &q).await.unwrap().is_empty());
    q.filter = Some(Filter::Eq("n".into(), json!("1")));
    assert!(store.query(&coll, &q).await.unwrap().is_empty());
    q.filter = Some(Filter::Eq("n".into(), json!(1)));
    assert_eq!(store.query(&coll, &q).await.unwrap().len(), 1);
}

/// Tenant names Weaviate would refuse (`.`) map to names it takes; tenants never mix, and purging one
/// deletes its Weaviate tenant (its shard), leaving the others.
#[tokio::test]
async fn tenants_map_to_weaviate_tenants() {
    let fake = FakeWeaviate::start(None).await;
    let store = WeaviateVectorStore::new(WeaviateConfig::new(fake.url.clone())).unwrap();
    let coll = resk_testkit::vector::collection(&store).await;
    let dotted = resk_core::TenantId::new("team.a").unwrap();
    let escaped = resk_core::TenantId::new("team_da").unwrap();
    for t in [&dotted, &escaped] {
        store
            .upsert(&coll, vec![record(t, "x", [1.0, 0.0, 0.0, 0.0], json!({}))])
            .await
            .unwrap();
    }
    let class = class_name(&coll).unwrap();
    let mut tenants = fake.tenants(&class);
    tenants.sort();
    assert_eq!(tenants, ["team__da", "team_da"]);
    assert_eq!(
        store
            .purge(&coll, &VectorPurge::Tenant(dotted.clone()))
            .await
            .unwrap(),
        1
    );
    assert_eq!(fake.tenants(&class), ["team__da"]);
    assert!(
        store
            .query(&coll, &query(&dotted, [1.0, 0.0, 0.0, 0.0], 3))
            .await
            .unwrap()
            .is_empty(),
        "a deleted tenant reads as empty"
    );
    assert_eq!(
        store.delete(&coll, &dotted, &["x".into()]).await.unwrap(),
        0
    );
    assert_eq!(
        store
            .query(&coll, &query(&escaped, [1.0, 0.0, 0.0, 0.0], 3))
            .await
            .unwrap()
            .len(),
        1
    );
}

/// An existing class is checked: other dimensions or metric, no multi-tenancy, tenants not created on
/// write, or a class resk did not make are configuration errors, not silent wrong answers.
#[tokio::test]
async fn an_existing_class_is_checked() {
    let fake = FakeWeaviate::start(None).await;
    let first = WeaviateVectorStore::new(WeaviateConfig::new(fake.url.clone())).unwrap();
    let second = WeaviateVectorStore::new(WeaviateConfig::new(fake.url.clone())).unwrap();
    let spec = resk_testkit::vector::SPEC;
    first.ensure_collection("faq", spec).await.unwrap();
    second.ensure_collection("faq", spec).await.unwrap();
    for other in [
        CollectionSpec {
            dims: 8,
            metric: Metric::Cosine,
        },
        CollectionSpec {
            dims: 4,
            metric: Metric::L2,
        },
    ] {
        let err = second.ensure_collection("faq", other).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    }
    let base = |name: &str, mt: serde_json::Value, description: &str| {
        json!({
            "class": name,
            "description": description,
            "vectorIndexConfig": {"distance": "cosine"},
            "multiTenancyConfig": mt,
            "properties": [],
        })
    };
    fake.put_class(base(
        "Resk_plain",
        json!({"enabled": false}),
        "resk vector collection plain (dims=4)",
    ));
    fake.put_class(base(
        "Resk_manual",
        json!({"enabled": true, "autoTenantCreation": false}),
        "resk vector collection manual (dims=4)",
    ));
    fake.put_class(base(
        "Resk_foreign",
        json!({"enabled": true, "autoTenantCreation": true}),
        "Articles",
    ));
    for (collection, needle) in [
        ("plain", "multi-tenancy"),
        ("manual", "autoTenantCreation"),
        ("foreign", "not created by resk"),
    ] {
        let err = second
            .ensure_collection(collection, spec)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        assert!(err.to_string().contains(needle), "{err}");
    }
    let err = second.ensure_collection("../etc", spec).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
}

/// Weaviate's error answers surface with the server's message, not as empty results: per-object
/// batch failures (HTTP 200 with `result.errors`) and GraphQL `errors` (HTTP 200).
#[tokio::test]
async fn weaviate_errors_are_reported() {
    let fake = FakeWeaviate::start(None).await;
    let store = WeaviateVectorStore::new(WeaviateConfig::new(fake.url.clone())).unwrap();
    let coll = resk_testkit::vector::collection(&store).await;
    let t = tenant();
    store
        .upsert(
            &coll,
            vec![record(&t, "a", [1.0, 0.0, 0.0, 0.0], json!({"n": 1}))],
        )
        .await
        .unwrap();
    // Another tool re-creates the class with `n` as text, behind this store's back.
    let class = class_name(&coll).unwrap();
    fake.put_class(json!({
        "class": class,
        "description": "resk vector collection x (dims=4)",
        "vectorIndexConfig": {"distance": "cosine"},
        "multiTenancyConfig": {"enabled": true, "autoTenantCreation": true},
        "properties": [
            {"name": "resk_id", "dataType": ["text"]},
            {"name": "resk_metadata", "dataType": ["text"]},
            {"name": "n", "dataType": ["text"]},
        ],
    }));
    let err = store
        .upsert(
            &coll,
            vec![record(&t, "b", [1.0, 0.0, 0.0, 0.0], json!({"n": 2}))],
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Backend, "{err}");
    assert!(err.to_string().contains("1 object(s) refused"), "{err}");
    store
        .upsert(
            &coll,
            vec![record(&t, "c", [1.0, 0.0, 0.0, 0.0], json!({}))],
        )
        .await
        .unwrap();
    let mut q = query(&t, [1.0, 0.0, 0.0, 0.0], 3);
    q.filter = Some(Filter::Eq("n".into(), json!(2)));
    let err = store.query(&coll, &q).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Backend, "{err}");
    assert!(err.to_string().contains("valueNumber"), "{err}");
}

/// Filter values, tenants and ids are data: GraphQL syntax in them is escaped, never executed.
#[tokio::test]
async fn hostile_strings_are_data() {
    let fake = FakeWeaviate::start(None).await;
    let store = WeaviateVectorStore::new(WeaviateConfig::new(fake.url.clone())).unwrap();
    let coll = resk_testkit::vector::collection(&store).await;
    let t = tenant();
    let hostile = "en\"}){resk_id}} #\\\n\u{2028}é";
    store
        .upsert(
            &coll,
            vec![
                record(&t, "x\"}", [1.0, 0.0, 0.0, 0.0], json!({"lang": hostile})),
                record(&t, "y", [1.0, 0.0, 0.0, 0.0], json!({"lang": "en"})),
            ],
        )
        .await
        .unwrap();
    let mut q = query(&t, [1.0, 0.0, 0.0, 0.0], 5);
    q.filter = Some(Filter::Eq("lang".into(), json!(hostile)));
    let found = store.query(&coll, &q).await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].id, "x\"}");
    assert_eq!(found[0].metadata["lang"], hostile);
    assert_eq!(store.delete(&coll, &t, &["x\"}".into()]).await.unwrap(), 1);
}

/// The API key never shows in `Debug` output.
#[test]
fn config_debug_hides_the_key() {
    let mut config = WeaviateConfig::new("http://127.0.0.1:8080");
    config.api_key = Some("wv-secret".into());
    let shown = format!("{config:?}");
    assert!(!shown.contains("wv-secret"), "{shown}");
    assert!(shown.contains("<redacted>"));
}
