//! WARMUP_FILE: entries stored through the write path before the server listens; a malformed file
//! stops the start-up before anything is stored.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use crate::common::{TestApp, config, token_for};
use axum::http::StatusCode;
use resk_cache_memory::MemoryStore;
use resk_core::{ErrorKind, SharedCacheStore};
use resk_server::{App, Backends};
use serde_json::json;

fn file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("resk-warmup");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{}-{name}.jsonl", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

fn app() -> (App, MemoryStore) {
    let store = MemoryStore::default();
    let shared: SharedCacheStore = Arc::new(store.clone());
    (
        App::with_backends(&config(&[]), Backends::local(shared)).unwrap(),
        store,
    )
}

#[tokio::test]
async fn warm_up_entries_are_hits_for_their_tenant_only() {
    let path = file(
        "good",
        r#"{"tenant": "acme", "query": "What are your opening hours?", "response": "9 to 5", "ttl": 86400}

{"tenant": "globex", "subject": "ops", "query": "Where is the office?", "response": {"city": "Springfield"}, "language": "en"}
"#,
    );
    let (app, store) = app();
    let report = app.warm_up(&path).await.unwrap();
    assert_eq!((report.stored, report.failed), (2, 0));
    let app = TestApp {
        router: app.router,
        store,
        config: config(&[]),
    };
    let acme = token_for("alice", "acme", "cache:read");
    let hit = app
        .query(&acme, json!({"query": "what are your opening hours?"}))
        .await;
    assert_eq!(
        (hit.body["hit"].clone(), hit.body["response"].clone()),
        (json!(true), json!("9 to 5")),
        "{}",
        hit.text
    );
    let other = app
        .query(
            &acme,
            json!({"query": "Where is the office?", "language": "en"}),
        )
        .await;
    assert_eq!(other.status, StatusCode::OK);
    assert_eq!(other.body["hit"], false, "another tenant's warm-up entry");
    let globex = token_for("bob", "globex", "cache:read");
    let hit = app
        .query(
            &globex,
            json!({"query": "Where is the office?", "language": "en"}),
        )
        .await;
    assert_eq!(hit.body["response"]["city"], "Springfield", "{}", hit.text);
}

#[tokio::test]
async fn a_bad_warm_up_file_stops_the_start_up_and_stores_nothing() {
    let good = r#"{"tenant": "acme", "query": "q1", "response": 1}"#;
    for (name, second_line, expected) in [
        ("json", "{not json", "line 2: not a JSON object"),
        (
            "tenant",
            r#"{"query": "q2", "response": 2}"#,
            "line 2: tenant is missing",
        ),
        (
            "badtenant",
            r#"{"tenant": "a b", "query": "q2", "response": 2}"#,
            "line 2: tenant",
        ),
        (
            "unknown",
            r#"{"tenant": "acme", "query": "q2", "response": 2, "tll": 5}"#,
            "line 2: unknown field `tll`",
        ),
        (
            "null",
            r#"{"tenant": "acme", "query": "q2", "response": null, "ttl": 5}"#,
            "line 2: response must not be null",
        ),
    ] {
        let path = file(name, &format!("{good}\n{second_line}\n"));
        let (app, store) = app();
        let err = app.warm_up(&path).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{name}: {err}");
        assert!(err.to_string().contains(expected), "{name}: {err}");
        store.run_pending_tasks().await;
        if name != "null" {
            // Parse errors are found before anything is stored.
            assert_eq!(store.entry_count(), 0, "{name}");
        }
    }
    let (app, _) = app();
    let err = app
        .warm_up(std::path::Path::new("/nonexistent/warmup.jsonl"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(
        err.to_string().contains("/nonexistent/warmup.jsonl"),
        "{err}"
    );
}
