//! `Idempotency-Key` on `POST /api/cache`: replays return the original answer without writing again,
//! a reused key with another body is a 409 that writes nothing, keys are per caller and expire.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use crate::common::*;
use axum::{
    body::Body,
    http::{Request, StatusCode},
};
use serde_json::{Value, json};

async fn write_with_key(app: &TestApp, token: &str, key: &str, body: &Value) -> Reply {
    let req = Request::builder()
        .method("POST")
        .uri("/api/cache")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(Body::from(body.to_string()))
        .unwrap();
    app.send(req).await
}

async fn answer(app: &TestApp, token: &str, query: &str) -> Value {
    app.query(token, json!({"query": query})).await.body["response"].clone()
}

#[tokio::test]
async fn a_replay_returns_the_first_answer_without_writing_again() {
    let app = app(&[]);
    let alice = token_for("alice", "acme", "cache:read cache:write");
    let body = json!({"query": "retry me", "response": "first"});
    let first = write_with_key(&app, &alice, "order-42", &body).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    assert!(!first.headers.contains_key("idempotent-replayed"));

    // The entry changes by another write; the replay answers as the first time and changes nothing.
    let other = app
        .write(&alice, json!({"query": "retry me", "response": "second"}))
        .await;
    assert_eq!(other.status, StatusCode::CREATED);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let replay = write_with_key(&app, &alice, "order-42", &body).await;
    assert_eq!(replay.status, StatusCode::CREATED);
    assert_eq!(replay.body, first.body, "same answer, same expires_at");
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    assert_eq!(replay.headers["content-type"], "application/json");
    assert_eq!(
        answer(&app, &alice, "retry me").await,
        "second",
        "the replay wrote"
    );

    // Another caller's identical key is its own.
    let bob = token_for("bob", "acme", "cache:read cache:write");
    let bobs = write_with_key(&app, &bob, "order-42", &body).await;
    assert_eq!(bobs.status, StatusCode::CREATED);
    assert!(!bobs.headers.contains_key("idempotent-replayed"));
    assert_eq!(
        answer(&app, &alice, "retry me").await,
        "first",
        "bob's write ran"
    );
}

#[tokio::test]
async fn a_reused_key_with_another_body_is_a_conflict_and_writes_nothing() {
    let app = app(&[]);
    let alice = token_for("alice", "acme", "cache:read cache:write");
    let first = write_with_key(
        &app,
        &alice,
        "k1",
        &json!({"query": "q one", "response": 1}),
    )
    .await;
    assert_eq!(first.status, StatusCode::CREATED);
    let before = app.entries().await;
    let conflict = write_with_key(
        &app,
        &alice,
        "k1",
        &json!({"query": "q two", "response": 2}),
    )
    .await;
    assert_eq!(conflict.status, StatusCode::CONFLICT, "{}", conflict.text);
    assert_eq!(error_code(&conflict), "idempotency_key_reused");
    assert_eq!(app.entries().await, before);
    assert_eq!(
        app.query(&alice, json!({"query": "q two"})).await.body["hit"],
        false
    );
}

#[tokio::test]
async fn keys_expire() {
    let app = app(&["--idempotency-ttl-secs", "1"]);
    let alice = token_for("alice", "acme", "cache:read cache:write");
    let body = json!({"query": "expiring", "response": "v"});
    assert_eq!(
        write_with_key(&app, &alice, "k", &body).await.status,
        StatusCode::CREATED
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let again = write_with_key(
        &app,
        &alice,
        "k",
        &json!({"query": "expiring", "response": "w"}),
    )
    .await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.text);
    assert!(!again.headers.contains_key("idempotent-replayed"));
    assert_eq!(answer(&app, &alice, "expiring").await, "w");
}

#[tokio::test]
async fn bad_keys_are_refused_and_write_nothing() {
    let app = app(&[]);
    let alice = token_for("alice", "acme", "cache:read cache:write");
    let body = json!({"query": "bad key", "response": 1});
    for key in ["", &"k".repeat(256), "has space", "tab\there"] {
        let r = write_with_key(&app, &alice, key, &body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{key:?}: {}", r.text);
        assert_eq!(error_code(&r), "invalid_idempotency_key");
    }
    assert_eq!(app.entries().await, 0);
    // The header is documented.
    let spec = app.call("GET", "/api/openapi.json", None, None).await.body;
    let params = spec["paths"]["/api/cache"]["post"]["parameters"].to_string();
    assert!(params.contains("Idempotency-Key"), "{params}");
}

/// Requests with one key arriving together: exactly one runs (the key is claimed with an atomic
/// write-if-absent); the others are told it is in progress (409) or, once it is done, get its
/// answer. Before the claim, every one of them ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_requests_with_one_key_run_once() {
    let app = std::sync::Arc::new(app(&[]));
    let alice = token_for("alice", "acme", "cache:read cache:write");
    let body = json!({"query": "only once", "response": "the answer"});
    let replies = futures_util::future::join_all((0..24).map(|_| {
        let app = app.clone();
        let alice = alice.clone();
        let body = body.clone();
        tokio::spawn(async move { write_with_key(&app, &alice, "burst-1", &body).await })
    }))
    .await;
    let replies: Vec<Reply> = replies.into_iter().map(Result::unwrap).collect();
    let ran = replies
        .iter()
        .filter(|r| {
            r.status == StatusCode::CREATED && !r.headers.contains_key("idempotent-replayed")
        })
        .count();
    assert_eq!(
        ran,
        1,
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for r in &replies {
        match r.status {
            StatusCode::CREATED => {}
            StatusCode::CONFLICT => {
                assert_eq!(
                    r.body["error"]["code"], "idempotency_key_in_progress",
                    "{}",
                    r.text
                )
            }
            other => panic!("unexpected {other}: {}", r.text),
        }
    }
    // Once done, a retry replays.
    let retry = write_with_key(&app, &alice, "burst-1", &body).await;
    assert_eq!(retry.status, StatusCode::CREATED);
    assert_eq!(retry.headers["idempotent-replayed"], "true");
}

/// A request that fails gives its key up: the retry runs instead of waiting for the claim to lapse.
#[tokio::test]
async fn a_failed_request_releases_its_key() {
    let app = app(&[]);
    let alice = token_for("alice", "acme", "cache:read cache:write");
    let bad = json!({"query": "q", "response": "a", "ttl": 999_999_999});
    let first = write_with_key(&app, &alice, "fails-1", &bad).await;
    assert_eq!(first.status, StatusCode::BAD_REQUEST, "{}", first.text);
    let again = write_with_key(&app, &alice, "fails-1", &bad).await;
    assert_eq!(
        again.status,
        StatusCode::BAD_REQUEST,
        "not 409 in progress: {}",
        again.text
    );
}
