//! Entries private to their writer (`visibility: "user"`): no other subject of the tenant can read,
//! find semantically, or overwrite them, and the writer's private and shared entries never mix.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::{TestApp, semantic_app, token_for};
use axum::http::StatusCode;
use serde_json::{Value, json};

async fn write(app: &TestApp, token: &str, body: Value) -> Value {
    let r = app.write(token, body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    r.body
}

async fn hit(app: &TestApp, token: &str, body: Value) -> Value {
    let r = app.query(token, body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.body
}

#[tokio::test]
async fn private_entries_stay_with_their_writer() {
    let app = semantic_app(&[]).await;
    let alice = token_for("alice", "acme", "cache:read cache:write");
    let bob = token_for("bob", "acme", "cache:read cache:write");
    let question = "What is my account balance?";
    let private = write(
        &app,
        &alice,
        json!({"query": question, "response": "alice: 42", "visibility": "user"}),
    )
    .await;
    let shared = write(
        &app,
        &alice,
        json!({"query": question, "response": "everyone: ask support"}),
    )
    .await;
    assert_ne!(
        private["key"], shared["key"],
        "private and shared never share a key"
    );

    // Alice reads her private answer back with visibility user, the shared one without.
    let mine = hit(
        &app,
        &alice,
        json!({"query": question, "visibility": "user"}),
    )
    .await;
    assert_eq!(mine["response"], "alice: 42", "{mine}");
    let team = hit(&app, &alice, json!({"query": question})).await;
    assert_eq!(team["response"], "everyone: ask support", "{team}");

    // Bob sees the shared answer only; asking for his own private entries finds nothing, exactly or
    // by paraphrase.
    let r = hit(&app, &bob, json!({"query": question})).await;
    assert_eq!(r["response"], "everyone: ask support");
    for q in [question, "what's my account balance", "my account balance?"] {
        let r = hit(&app, &bob, json!({"query": q, "visibility": "user"})).await;
        assert_eq!(r["hit"], false, "{q}: {r}");
    }
    // Alice finds her private entry by paraphrase.
    let r = hit(
        &app,
        &alice,
        json!({"query": "what's my account balance", "visibility": "user"}),
    )
    .await;
    assert_eq!(r["hit"], true, "{r}");
    assert_eq!(r["response"], "alice: 42");

    // Bob writing "his" private answer to the same question does not overwrite Alice's.
    write(
        &app,
        &bob,
        json!({"query": question, "response": "bob: 7", "visibility": "user"}),
    )
    .await;
    let mine = hit(
        &app,
        &alice,
        json!({"query": question, "visibility": "user"}),
    )
    .await;
    assert_eq!(mine["response"], "alice: 42");
    let his = hit(&app, &bob, json!({"query": question, "visibility": "user"})).await;
    assert_eq!(his["response"], "bob: 7");

    // Even with Alice's key (keys are only ever returned to their writer), Bob cannot delete it.
    let r = app
        .call(
            "DELETE",
            &format!("/api/cache/{}", private["key"].as_str().unwrap()),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["deleted"], false, "answered as for a missing key");
    let mine = hit(
        &app,
        &alice,
        json!({"query": question, "visibility": "user"}),
    )
    .await;
    assert_eq!(mine["response"], "alice: 42", "still there");
    let r = app
        .call(
            "DELETE",
            &format!("/api/cache/{}", private["key"].as_str().unwrap()),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(r.body["deleted"], true, "its owner can");

    let bad = app
        .query(&alice, json!({"query": question, "visibility": "everyone"}))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.text);
}
