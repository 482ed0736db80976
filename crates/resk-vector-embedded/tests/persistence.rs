//! Records survive a reopen; deletes and purges too; compaction keeps exactly the live records.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use resk_core::{CollectionSpec, ErrorKind, Metric, VectorPurge, VectorStore};
use resk_testkit::vector::{query, record, tenant};
use resk_vector_embedded::{EmbeddedConfig, EmbeddedVectorStore};
use serde_json::json;

fn open(dir: &std::path::Path) -> EmbeddedVectorStore {
    EmbeddedVectorStore::open(EmbeddedConfig {
        dir: Some(dir.to_owned()),
        ..EmbeddedConfig::default()
    })
    .unwrap()
}

const SPEC: CollectionSpec = CollectionSpec {
    dims: 4,
    metric: Metric::Cosine,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_reopen_with_deletes_purges_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (tenant(), tenant());
    {
        let s = open(dir.path());
        s.ensure_collection("cache", SPEC).await.unwrap();
        // Enough overwrites to trigger compaction (frames > 2 × live and > 1024).
        for round in 0..3 {
            let batch = (0..500)
                .map(|i| {
                    let x = i as f32 / 500.0;
                    record(
                        &a,
                        &format!("r{i}"),
                        [1.0, x, round as f32, 0.0],
                        json!({"i": i}),
                    )
                })
                .collect();
            s.upsert("cache", batch).await.unwrap();
        }
        s.upsert(
            "cache",
            vec![record(&b, "r0", [0.0, 0.0, 0.0, 1.0], json!({}))],
        )
        .await
        .unwrap();
        assert_eq!(
            s.delete("cache", &a, &["r1".into(), "r2".into()])
                .await
                .unwrap(),
            2
        );
        assert_eq!(s.len("cache"), 499);
    }
    let log = dir.path().join("cache").join("log.bin");
    let size_after_compaction = std::fs::metadata(&log).unwrap().len();
    // 1500 upserts were written; compaction must have folded them down.
    assert!(
        size_after_compaction < 1200 * 60,
        "log is {size_after_compaction} bytes"
    );

    let s = open(dir.path());
    assert_eq!(s.collection_names(), ["cache"]);
    assert_eq!(s.len("cache"), 499);
    // Exact search: neighbouring records differ in the 7th digit of their cosine, a tie for any
    // approximate index; this test is about what survived, not about recall.
    let found = s
        .exact_query("cache", &query(&a, [1.0, 0.5, 2.0, 0.0], 1))
        .unwrap();
    assert_eq!(found[0].id, "r250", "the last round's vectors were kept");
    assert_eq!(found[0].metadata.get("i"), Some(&json!(250)));
    let gone = s
        .exact_query("cache", &query(&a, [1.0, 0.002, 2.0, 0.0], 3))
        .unwrap();
    assert!(
        gone.iter().all(|h| h.id != "r1"),
        "deleted records stay deleted"
    );
    // The spec is persisted: another spec is refused after a restart too.
    let err = s
        .ensure_collection(
            "cache",
            CollectionSpec {
                dims: 8,
                metric: Metric::Cosine,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);

    s.purge("cache", &VectorPurge::Tenant(a.clone()))
        .await
        .unwrap();
    drop(s);
    let s = open(dir.path());
    assert_eq!(
        s.len("cache"),
        1,
        "the purge was persisted; b's record stays"
    );
    assert!(
        s.query("cache", &query(&a, [1.0, 0.0, 0.0, 0.0], 5))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_torn_tail_loses_only_the_torn_write() {
    let dir = tempfile::tempdir().unwrap();
    let t = tenant();
    {
        let s = open(dir.path());
        s.ensure_collection("c", SPEC).await.unwrap();
        s.upsert(
            "c",
            vec![record(&t, "kept", [1.0, 0.0, 0.0, 0.0], json!({}))],
        )
        .await
        .unwrap();
    }
    // Simulate a crash in the middle of the next append.
    let log = dir.path().join("c").join("log.bin");
    let mut bytes = std::fs::read(&log).unwrap();
    bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3, 4, 1, 9]);
    std::fs::write(&log, &bytes).unwrap();

    let s = open(dir.path());
    assert_eq!(s.len("c"), 1);
    s.upsert(
        "c",
        vec![record(&t, "after", [0.0, 1.0, 0.0, 0.0], json!({}))],
    )
    .await
    .unwrap();
    drop(s);
    assert_eq!(
        open(dir.path()).len("c"),
        2,
        "writes after the cut are readable"
    );
}

#[tokio::test]
async fn bad_collection_names_and_non_finite_vectors_are_rejected() {
    let s = EmbeddedVectorStore::in_memory();
    let err = s.ensure_collection("../etc", SPEC).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    s.ensure_collection("ok", SPEC).await.unwrap();
    let err = s
        .upsert(
            "ok",
            vec![record(&tenant(), "n", [f32::NAN, 0.0, 0.0, 0.0], json!({}))],
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[test]
fn one_process_per_directory() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path());
    let err = EmbeddedVectorStore::open(EmbeddedConfig {
        dir: Some(dir.path().to_owned()),
        ..EmbeddedConfig::default()
    })
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.message().contains("another process"), "{err}");
    drop(first);
    open(dir.path());
}

#[tokio::test]
async fn a_batch_repeating_an_id_keeps_its_last_record() {
    let s = EmbeddedVectorStore::in_memory();
    s.ensure_collection("c", SPEC).await.unwrap();
    let t = tenant();
    let mut batch: Vec<_> = (0..600)
        .map(|i| record(&t, &format!("r{i}"), [1.0, i as f32, 0.0, 0.0], json!({})))
        .collect();
    batch.push(record(
        &t,
        "r1",
        [0.0, 0.0, 0.0, 1.0],
        json!({"last": true}),
    ));
    s.upsert("c", batch).await.unwrap();
    assert_eq!(s.len("c"), 600);
    // Exact search: 599 vectors orthogonal to the query are a degenerate case for any graph index,
    // and this test is about which record a repeated id keeps, not about recall.
    let found = s
        .exact_query("c", &query(&t, [0.0, 0.0, 0.0, 1.0], 1))
        .unwrap();
    assert_eq!(found[0].id, "r1");
    assert_eq!(found[0].metadata.get("last"), Some(&json!(true)));
}

#[tokio::test]
async fn l2_and_dot_similarities_follow_the_documented_scales() {
    let s = EmbeddedVectorStore::in_memory();
    let t = tenant();
    for (name, metric) in [("l2", Metric::L2), ("dot", Metric::Dot)] {
        s.ensure_collection(name, CollectionSpec { dims: 4, metric })
            .await
            .unwrap();
        s.upsert(
            name,
            vec![
                record(&t, "same", [1.0, 0.0, 0.0, 0.0], json!({})),
                record(&t, "orthogonal", [0.0, 1.0, 0.0, 0.0], json!({})),
                record(&t, "long", [2.0, 0.0, 0.0, 0.0], json!({})),
            ],
        )
        .await
        .unwrap();
        let q = [1.0, 0.0, 0.0, 0.0];
        let found = s.query(name, &query(&t, q, 3)).await.unwrap();
        for hit in &found {
            let v = match hit.id.as_str() {
                "same" => [1.0, 0.0, 0.0, 0.0],
                "orthogonal" => [0.0, 1.0, 0.0, 0.0],
                _ => [2.0, 0.0, 0.0, 0.0],
            };
            let want = metric.similarity(&q, &v);
            assert!(
                (hit.similarity - want).abs() < 1e-4,
                "{name} {}: {} vs {want}",
                hit.id,
                hit.similarity
            );
        }
        let order: Vec<&str> = found.iter().map(|h| h.id.as_str()).collect();
        match metric {
            // L2: distance 0, 1, √2 → similarity 1, 0.5, 0.41.
            Metric::L2 => assert_eq!(order, ["same", "long", "orthogonal"]),
            // Dot: 2, 1, 0 — unnormalised vectors rank by length too.
            _ => assert_eq!(order, ["long", "same", "orthogonal"]),
        }
    }
}

/// A query confined to a small scope is answered exactly from the scope's members (not by a
/// filtered graph search over the whole tenant): the same ranking and scores as the graph gives
/// without the filter, for every metric; an empty or deleted-out scope answers nothing.
#[tokio::test]
async fn small_scopes_are_searched_exactly_with_the_graphs_scores() {
    use resk_core::Filter;
    for metric in [Metric::Cosine, Metric::L2, Metric::Dot] {
        let s = EmbeddedVectorStore::in_memory();
        let spec = CollectionSpec { dims: 4, metric };
        s.ensure_collection("cache", spec).await.unwrap();
        let t = tenant();
        let mut batch = Vec::new();
        for i in 0..300 {
            let x = i as f32 / 300.0;
            let scope = if i % 3 == 0 { "mine" } else { "other" };
            batch.push(record(
                &t,
                &format!("r{i}"),
                [0.2, x, 1.0 - x, 0.1],
                json!({"scope": scope}),
            ));
        }
        s.upsert("cache", batch).await.unwrap();
        let probe = [0.2, 0.8, 0.2, 0.1];
        let mut scoped = query(&t, probe, 5);
        scoped.filter = Some(Filter::And(vec![Filter::Eq("scope".into(), json!("mine"))]));
        let exact = s.query("cache", &scoped).await.unwrap();
        assert_eq!(exact.len(), 5, "{metric:?}");
        // The graph's own answer over the whole tenant, kept to the scope's members.
        let all = s.query("cache", &query(&t, probe, 300)).await.unwrap();
        let graph: Vec<_> = all
            .iter()
            .filter(|r| r.metadata["scope"] == "mine")
            .take(5)
            .collect();
        // Equal scores (points symmetric about the probe) may come in either order.
        for (a, b) in exact.iter().zip(&graph) {
            assert!(
                (a.similarity - b.similarity).abs() < 1e-4,
                "{metric:?}: {} vs {}",
                a.similarity,
                b.similarity
            );
        }
        let mut ids: Vec<&str> = exact.iter().map(|r| r.id.as_str()).collect();
        let mut want: Vec<&str> = graph.iter().map(|r| r.id.as_str()).collect();
        ids.sort_unstable();
        want.sort_unstable();
        assert_eq!(ids, want, "{metric:?}");
        let mut empty = query(&t, probe, 5);
        empty.filter = Some(Filter::Eq("scope".into(), json!("nobody")));
        assert!(s.query("cache", &empty).await.unwrap().is_empty());
        let ids: Vec<String> = (0..300).step_by(3).map(|i| format!("r{i}")).collect();
        s.delete("cache", &t, &ids).await.unwrap();
        assert!(
            s.query("cache", &scoped).await.unwrap().is_empty(),
            "{metric:?}"
        );
    }
}
