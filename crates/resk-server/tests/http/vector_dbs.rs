//! The semantic flow through the HTTP API on external vector databases running for real on loopback
//! (`RESK_TEST_CHROMA_URL`, `RESK_TEST_PGVECTOR_URL`, `RESK_TEST_MILVUS_URL`, started by `cargo xtask
//! test`), and what happens
//! when the vector database is down or misconfigured.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::{admin, query_ok as query, semantic_app, write_ok as write};
use resk_core::ErrorKind;
use serde_json::json;

/// Paraphrase hit, near miss, delete and purge, on the vector database the arguments select.
async fn semantic_flow(extra: &[&str]) {
    let collection = format!("resk_t_server_{}", resk_testkit::unique_id());
    let mut args = extra.to_vec();
    args.extend(["--vector-collection", &collection]);
    let app = semantic_app(&args).await;
    let w = write(
        &app,
        json!({"query": "How do I reset my password?", "response": {"answer": "Use the reset link."}}),
    )
    .await;
    assert_eq!(w["semantic_indexed"], true, "{w}");
    let para = json!({"query": "how can I reset my password"});
    let r = query(&app, para.clone()).await;
    assert_eq!(r["hit"], true, "{r}");
    assert_eq!(r["source"], "semantic");
    assert_eq!(r["matched_query"], "How do I reset my password?");
    assert_eq!(r["response"], json!({"answer": "Use the reset link."}));
    assert!(r.get("degraded").is_none_or(|d| d == false), "{r}");
    for other in [
        "How do I reset my username?",
        "What is the capital of France?",
    ] {
        assert_eq!(
            query(&app, json!({"query": other})).await["hit"],
            false,
            "{other}"
        );
    }
    // Delete removes the vector too; a purge too.
    let key = w["key"].as_str().unwrap();
    let r = app
        .call("DELETE", &format!("/api/cache/{key}"), Some(&admin()), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(query(&app, para.clone()).await["hit"], false);
    write(
        &app,
        json!({"query": "How do I reset my password?", "response": 2}),
    )
    .await;
    assert_eq!(query(&app, para.clone()).await["hit"], true);
    let r = app.call("DELETE", "/api/cache", Some(&admin()), None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(query(&app, para).await["hit"], false);
}

#[tokio::test]
async fn semantic_flow_on_chroma() {
    let Some(url) = resk_testkit::service_url("CHROMA") else {
        resk_testkit::skip("semantic_flow_on_chroma");
        return;
    };
    semantic_flow(&["--vectordb-type", "chroma", "--chroma-url", &url]).await;
}

#[tokio::test]
async fn semantic_flow_on_pgvector() {
    let Some(url) = resk_testkit::service_url("PGVECTOR") else {
        resk_testkit::skip("semantic_flow_on_pgvector");
        return;
    };
    semantic_flow(&["--vectordb-type", "pgvector", "--pgvector-url", &url]).await;
}

#[tokio::test]
async fn semantic_flow_on_milvus() {
    let Some(url) = resk_testkit::service_url("MILVUS") else {
        resk_testkit::skip("semantic_flow_on_milvus");
        return;
    };
    semantic_flow(&["--vectordb-type", "milvus", "--milvus-url", &url]).await;
}

fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Chroma down at start-up and on every call: the server starts, exact answers continue, semantic
/// lookups are degraded misses (never 5xx), writes keep the exact entry and say why the vector is
/// missing.
#[tokio::test]
async fn a_vector_database_that_is_down_degrades_and_loses_no_exact_write() {
    let url = format!("http://127.0.0.1:{}", closed_port());
    let app = semantic_app(&[
        "--vectordb-type",
        "chroma",
        "--chroma-url",
        &url,
        "--vector-max-retries",
        "0",
    ])
    .await;
    let w = app
        .call(
            "POST",
            "/api/cache",
            Some(&admin()),
            Some(&json!({"query": "How do I reset my password?", "response": 1})),
        )
        .await;
    assert_eq!(w.status, 201, "{}", w.text);
    assert_eq!(w.body["semantic_indexed"], false);
    assert!(
        w.body["semantic_error"]
            .as_str()
            .unwrap()
            .contains("could not connect"),
        "{}",
        w.text
    );
    let exact = query(&app, json!({"query": "How do I reset my password?"})).await;
    assert_eq!(exact["hit"], true, "{exact}");
    let para = query(&app, json!({"query": "how can I reset my password"})).await;
    assert_eq!(
        (para["hit"].clone(), para["degraded"].clone()),
        (json!(false), json!(true)),
        "{para}"
    );
}

/// Configuration mistakes stop the start-up with a clear error.
#[tokio::test]
async fn misconfiguration_fails_at_start_up() {
    let config = crate::common::config(&["--vectordb-type", "pgvector"]);
    let err = resk_server::semantic::build(&config.semantic, Default::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("PGVECTOR_URL"), "{err}");

    let Some(url) = resk_testkit::service_url("CHROMA") else {
        resk_testkit::skip("misconfiguration_fails_at_start_up (chroma part)");
        return;
    };
    // A collection made for another model (other dimensions) is refused, not silently mixed.
    let collection = format!("resk_t_dims_{}", resk_testkit::unique_id());
    let base = [
        "--vectordb-type",
        "chroma",
        "--chroma-url",
        url.as_str(),
        "--vector-collection",
        collection.as_str(),
    ];
    let config = crate::common::config(&base);
    resk_server::semantic::build(&config.semantic, Default::default())
        .await
        .unwrap();
    let mut other = base.to_vec();
    other.extend(["--vector-metric", "l2"]);
    let config = crate::common::config(&other);
    let err = resk_server::semantic::build(&config.semantic, Default::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    // An unknown Chroma database is a clear error on first use.
    let mut bad_db = base.to_vec();
    bad_db.extend(["--chroma-database", "no_such_database"]);
    let config = crate::common::config(&bad_db);
    let err = resk_server::semantic::build(&config.semantic, Default::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::NotFound | ErrorKind::Config),
        "{err}"
    );
}
