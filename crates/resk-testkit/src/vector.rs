//! Vector store scenarios, one per bullet of `VectorStore`'s `# Behavior` docs.
//!
//! Every scenario makes its own collection (`resk_t_<unique>`) and tenants, so scenarios can run in
//! parallel against one shared server. Collections use 4-dimensional cosine vectors whose similarities
//! are easy to reason about.

use resk_core::{
    CollectionSpec, ErrorKind, Filter, Metric, Scored, TenantId, VectorPurge, VectorQuery,
    VectorRecord, VectorStore,
};
use serde_json::{Map, Value, json};

use crate::unique_id;

/// The spec every scenario collection uses.
pub const SPEC: CollectionSpec = CollectionSpec {
    dims: 4,
    metric: Metric::Cosine,
};

/// A fresh collection name, created with [`SPEC`].
pub async fn collection<S: VectorStore>(store: &S) -> String {
    let name = format!("resk_t_{}", unique_id());
    store.ensure_collection(&name, SPEC).await.unwrap();
    name
}

/// A random tenant.
pub fn tenant() -> TenantId {
    crate::cache::tenant()
}

/// A record with metadata given as a JSON object literal.
pub fn record(tenant: &TenantId, id: &str, vector: [f32; 4], metadata: Value) -> VectorRecord {
    let metadata: Map<String, Value> = match metadata {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    VectorRecord {
        id: id.to_owned(),
        tenant: tenant.clone(),
        vector: vector.to_vec(),
        metadata,
    }
}

/// A query of `k` results, no threshold, no filter.
pub fn query(tenant: &TenantId, vector: [f32; 4], k: usize) -> VectorQuery {
    VectorQuery {
        tenant: tenant.clone(),
        vector: vector.to_vec(),
        k,
        min_similarity: None,
        filter: None,
    }
}

fn ids(found: &[Scored]) -> Vec<&str> {
    found.iter().map(|s| s.id.as_str()).collect()
}

/// Five records at known angles from `[1, 0, 0, 0]`: `a` (identical) … `e` (opposite).
async fn seed<S: VectorStore>(store: &S, coll: &str, t: &TenantId) {
    store
        .upsert(
            coll,
            vec![
                record(t, "a", [1.0, 0.0, 0.0, 0.0], json!({"lang": "en", "n": 1})),
                record(t, "b", [0.9, 0.1, 0.0, 0.0], json!({"lang": "fr", "n": 2})),
                record(t, "c", [0.6, 0.8, 0.0, 0.0], json!({"lang": "en", "n": 3})),
                record(t, "d", [0.0, 1.0, 0.0, 0.0], json!({"lang": "de", "n": 4})),
                record(t, "e", [-1.0, 0.0, 0.0, 0.0], json!({"lang": "en", "n": 5})),
            ],
        )
        .await
        .unwrap();
}

/// Ensuring a collection twice with the same spec is fine, and leaves its records alone.
pub async fn ensure_collection_idempotent<S: VectorStore>(store: &S) {
    let coll = collection(store).await;
    let t = tenant();
    seed(store, &coll, &t).await;
    store.ensure_collection(&coll, SPEC).await.unwrap();
    assert_eq!(
        store
            .query(&coll, &query(&t, [1.0, 0.0, 0.0, 0.0], 10))
            .await
            .unwrap()
            .len(),
        5
    );
}

/// Ensuring an existing collection with other dimensions or another metric is a configuration error.
pub async fn ensure_collection_mismatch<S: VectorStore>(store: &S) {
    let coll = collection(store).await;
    let err = store
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
    let err = store
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
}

/// Upserting an id again replaces its vector and metadata; there is still one record.
pub async fn upsert_idempotent<S: VectorStore>(store: &S) {
    let coll = collection(store).await;
    let t = tenant();
    let first = record(&t, "x", [1.0, 0.0, 0.0, 0.0], json!({"v": 1}));
    store.upsert(&coll, vec![first.clone()]).await.unwrap();
    store.upsert(&coll, vec![first]).await.unwrap();
    store
        .upsert(
            &coll,
            vec![record(&t, "x", [0.0, 1.0, 0.0, 0.0], json!({"v": 2}))],
        )
        .await
        .unwrap();
    let found = store
        .query(&coll, &query(&t, [0.0, 1.0, 0.0, 0.0], 10))
        .await
        .unwrap();
    assert_eq!(ids(&found), ["x"]);
    assert!((found[0].similarity - 1.0).abs() < 1e-3, "{found:?}");
    assert_eq!(found[0].metadata.get("v"), Some(&json!(2)));
}

/// A record or query of the wrong dimensions is rejected, and nothing of its batch is written.
pub async fn dims_mismatch_rejected<S: VectorStore>(store: &S) {
    let coll = collection(store).await;
    let t = tenant();
    let good = record(&t, "good", [1.0, 0.0, 0.0, 0.0], json!({}));
    let mut bad = record(&t, "bad", [1.0, 0.0, 0.0, 0.0], json!({}));
    bad.vector.push(0.0);
    let err = store.upsert(&coll, vec![good, bad]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DimensionMismatch, "{err}");
    let found = store
        .query(&coll, &query(&t, [1.0, 0.0, 0.0, 0.0], 10))
        .await
        .unwrap();
    assert!(
        found.is_empty(),
        "nothing of a rejected batch is written: {found:?}"
    );
    let mut q = query(&t, [1.0, 0.0, 0.0, 0.0], 1);
    q.vector.pop();
    let err = store.query(&coll, &q).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DimensionMismatch, "{err}");
}

/// Results come best first, at most `k`, with similarities on the metric's scale.
pub async fn top_k_order<S: VectorStore>(store: &S) {
    let coll = collection(store).await;
    let t = tenant();
    seed(store, &coll, &t).await;
    let q = [1.0, 0.0, 0.0, 0.0];
    let found = store.query(&coll, &query(&t, q, 3)).await.unwrap();
    assert_eq!(ids(&found), ["a", "b", "c"]);
    let all = store.query(&coll, &query(&t, q, 50)).await.unwrap();
    assert_eq!(ids(&all), ["a", "b", "c", "d", "e"]);
    let refs = [
        [1.0, 0.0, 0.0, 0.0],
        [0.9, 0.1, 0.0, 0.0],
        [0.6, 0.8, 0.0, 0.0],
        [0.0, 1.0, 0.0, 0.0],
        [-1.0, 0.0, 0.0, 0.0],
    ];
    for (hit, v) in all.iter().zip(refs) {
        let want = Metric::Cosine.similarity(&q, &v);
        assert!(
            (hit.similarity - want).abs() < 1e-3,
            "{}: {} vs {want}",
            hit.id,
            hit.similarity
        );
    }
    assert_eq!(found[0].metadata.get("lang"), Some(&json!("en")));
}

/// `min_similarity` drops weaker results.
pub async fn threshold_drops<S: VectorStore>(store: &S) {
    let coll = collection(store).await;
    let t = tenant();
    seed(store, &coll, &t).await;
    let mut q = query(&t, [1.0, 0.0, 0.0, 0.0], 10);
    q.min_similarity = Some(0.9);
    assert_eq!(ids(&store.query(&coll, &q).await.unwrap()), ["a", "b"]);
    q.min_similarity = Some(0.5);
    assert_eq!(ids(&store.query(&coll, &q).await.unwrap()), ["a", "b", "c"]);
}

/// `Eq` and `In` filters keep exactly the matching records, still `k` of them when enough match.
pub async fn filter_eq_in<S: VectorStore>(store: &S) {
    let coll = collection(store).await;
    let t = tenant();
    seed(store, &coll, &t).await;
    let mut q = query(&t, [1.0, 0.0, 0.0, 0.0], 2);
    q.filter = Some(Filter::Eq("lang".into(), json!("en")));
    assert_eq!(ids(&store.query(&coll, &q).await.unwrap()), ["a", "c"]);
    q.k = 10;
    q.filter = Some(Filter::In("lang".into(), vec![json!("fr"), json!("de")]));
    assert_eq!(ids(&store.query(&coll, &q).await.unwrap()), ["b", "d"]);
    q.filter = Some(Filter::Eq("lang".into(), json!("it")));
    assert!(store.query(&coll, &q).await.unwrap().is_empty());
}

/// `And` and `Or` combine filters.
pub async fn filter_and_or<S: VectorStore>(store: &S) {
    let coll = collection(store).await;
    let t = tenant();
    seed(store, &coll, &t).await;
    let mut q = query(&t, [1.0, 0.0, 0.0, 0.0], 10);
    q.filter = Some(Filter::And(vec![
        Filter::Eq("lang".into(), json!("en")),
        Filter::In("n".into(), vec![json!(3), json!(5)]),
    ]));
    assert_eq!(ids(&store.query(&coll, &q).await.unwrap()), ["c", "e"]);
    q.filter = Some(Filter::Or(vec![
        Filter::Eq("lang".into(), json!("de")),
        Filter::Eq("n".into(), json!(1)),
    ]));
    assert_eq!(ids(&store.query(&coll, &q).await.unwrap()), ["a", "d"]);
}

/// A query on an empty collection, an unknown tenant or an unknown collection finds nothing.
pub async fn query_empty<S: VectorStore>(store: &S) {
    let coll = collection(store).await;
    let t = tenant();
    assert!(
        store
            .query(&coll, &query(&t, [1.0, 0.0, 0.0, 0.0], 5))
            .await
            .unwrap()
            .is_empty()
    );
    let missing = format!("resk_t_missing_{}", unique_id());
    assert!(
        store
            .query(&missing, &query(&t, [1.0, 0.0, 0.0, 0.0], 5))
            .await
            .unwrap()
            .is_empty()
    );
}

/// `delete` removes the given ids and counts those that existed.
pub async fn delete_removes<S: VectorStore>(store: &S) {
    let coll = collection(store).await;
    let t = tenant();
    seed(store, &coll, &t).await;
    let n = store
        .delete(&coll, &t, &["a".into(), "c".into(), "nope".into()])
        .await
        .unwrap();
    assert_eq!(n, 2);
    let found = store
        .query(&coll, &query(&t, [1.0, 0.0, 0.0, 0.0], 10))
        .await
        .unwrap();
    assert_eq!(ids(&found), ["b", "d", "e"]);
    assert_eq!(store.delete(&coll, &t, &["a".into()]).await.unwrap(), 0);
}

/// Tenants never see, delete or purge each other's records, even under equal ids.
pub async fn tenants_are_isolated<S: VectorStore>(store: &S) {
    let coll = collection(store).await;
    let (a, b) = (tenant(), tenant());
    seed(store, &coll, &a).await;
    store
        .upsert(
            &coll,
            vec![record(&b, "a", [0.0, 0.0, 1.0, 0.0], json!({"lang": "en"}))],
        )
        .await
        .unwrap();
    let found_b = store
        .query(&coll, &query(&b, [1.0, 0.0, 0.0, 0.0], 10))
        .await
        .unwrap();
    assert_eq!(ids(&found_b), ["a"]);
    assert!(found_b[0].similarity < 0.5, "b's `a` is b's own vector");
    assert_eq!(store.delete(&coll, &b, &["b".into()]).await.unwrap(), 0);
    store
        .purge(&coll, &VectorPurge::Tenant(b.clone()))
        .await
        .unwrap();
    assert_eq!(
        store
            .query(&coll, &query(&a, [1.0, 0.0, 0.0, 0.0], 10))
            .await
            .unwrap()
            .len(),
        5,
        "purging b leaves a intact"
    );
}

/// `purge` removes one tenant's records, or all, and counts them.
pub async fn purge_tenant<S: VectorStore>(store: &S) {
    let coll = collection(store).await;
    let (a, b) = (tenant(), tenant());
    seed(store, &coll, &a).await;
    seed(store, &coll, &b).await;
    assert_eq!(
        store
            .purge(&coll, &VectorPurge::Tenant(a.clone()))
            .await
            .unwrap(),
        5
    );
    assert!(
        store
            .query(&coll, &query(&a, [1.0, 0.0, 0.0, 0.0], 10))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .query(&coll, &query(&b, [1.0, 0.0, 0.0, 0.0], 10))
            .await
            .unwrap()
            .len(),
        5
    );
    assert_eq!(store.purge(&coll, &VectorPurge::All).await.unwrap(), 5);
    assert!(
        store
            .query(&coll, &query(&b, [1.0, 0.0, 0.0, 0.0], 10))
            .await
            .unwrap()
            .is_empty()
    );
}

/// Similarities are on each metric's documented scale ([`Metric::similarity`]): a backend's own
/// distance or score is converted, and results rank by it (unnormalised vectors rank by length under
/// dot product).
pub async fn similarity_scales<S: VectorStore>(store: &S) {
    let t = tenant();
    let q = [1.0, 0.0, 0.0, 0.0];
    let vectors = [
        ("same", [1.0, 0.0, 0.0, 0.0]),
        ("tilted", [0.6, 0.8, 0.0, 0.0]),
        ("long", [2.0, 1.0, 0.5, 0.0]),
    ];
    for metric in [Metric::Cosine, Metric::L2, Metric::Dot] {
        let coll = format!("resk_t_{}_{}", metric.as_str(), unique_id());
        store
            .ensure_collection(&coll, CollectionSpec { dims: 4, metric })
            .await
            .unwrap();
        store
            .upsert(
                &coll,
                vectors
                    .iter()
                    .map(|(id, v)| record(&t, id, *v, json!({})))
                    .collect(),
            )
            .await
            .unwrap();
        let found = store.query(&coll, &query(&t, q, 3)).await.unwrap();
        assert_eq!(found.len(), 3, "{metric:?}");
        let mut want: Vec<(&str, f32)> = vectors
            .iter()
            .map(|(id, v)| (*id, metric.similarity(&q, v)))
            .collect();
        want.sort_by(|a, b| b.1.total_cmp(&a.1));
        for (hit, (id, sim)) in found.iter().zip(&want) {
            assert_eq!(hit.id, *id, "{metric:?}: {found:?}");
            assert!(
                (hit.similarity - sim).abs() < 1e-4,
                "{metric:?} {id}: {} vs {sim}",
                hit.similarity
            );
        }
    }
}

/// Operations other than `query` on a collection never ensured fail with `NotFound`.
pub async fn unknown_collection_not_found<S: VectorStore>(store: &S) {
    let missing = format!("resk_t_missing_{}", unique_id());
    let t = tenant();
    let err = store
        .upsert(
            &missing,
            vec![record(&t, "a", [1.0, 0.0, 0.0, 0.0], json!({}))],
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
}
