//! Privacy requests: export and erase a subject's entries (and vectors), only within the caller's
//! tenant and with the right scope; maximum retention on read and by the sweep.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use crate::common::*;
use axum::http::StatusCode;
use resk_core::{CacheEntry, CacheStore, KeyInput, Origin, TenantId, VectorStore};
use serde_json::{Value, json};

fn rw(sub: &str, tenant: &str) -> String {
    token_for(sub, tenant, "cache:read cache:write")
}

async fn export(app: &TestApp, token: &str, body: Value) -> Reply {
    app.call("POST", "/api/privacy/export", Some(token), Some(&body))
        .await
}

async fn erase(app: &TestApp, token: &str, body: Value) -> Reply {
    app.call("POST", "/api/privacy/erase", Some(token), Some(&body))
        .await
}

fn queries(reply: &Reply) -> Vec<String> {
    let mut q: Vec<String> = reply.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["query"].as_str().unwrap().to_owned())
        .collect();
    q.sort();
    q
}

/// alice (acme) writes two shared entries and one private one, bob (acme) one, alice of another
/// tenant one.
async fn populated(app: &TestApp) {
    let write = |token: String, body: Value| async move {
        let r = app.write(&token, body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    };
    write(
        rw("alice", "acme"),
        json!({"query": "alice one", "response": {"a": 1}}),
    )
    .await;
    write(
        rw("alice", "acme"),
        json!({"query": "alice two", "response": "two"}),
    )
    .await;
    write(
        rw("alice", "acme"),
        json!({"query": "alice private", "response": 3, "visibility": "user"}),
    )
    .await;
    write(
        rw("bob", "acme"),
        json!({"query": "bob one", "response": "b"}),
    )
    .await;
    write(
        rw("alice", "other"),
        json!({"query": "other tenant alice", "response": "o"}),
    )
    .await;
}

#[tokio::test]
async fn a_subject_exports_its_own_entries_and_only_an_admin_exports_another() {
    let app = app(&[]);
    populated(&app).await;

    let own = export(&app, &rw("alice", "acme"), json!({})).await;
    assert_eq!(own.status, StatusCode::OK, "{}", own.text);
    assert_eq!(own.body["subject"], "alice");
    assert_eq!(own.body["count"], 3);
    assert_eq!(queries(&own), ["alice one", "alice private", "alice two"]);
    let private = own.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["query"] == "alice private")
        .unwrap();
    assert_eq!(private["visibility"], "user");
    assert_eq!(private["response"], 3);
    assert_eq!(private["written_by_subject"], true);
    assert_eq!(private["key"].as_str().unwrap().len(), 64);
    let one = own.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["query"] == "alice one")
        .unwrap();
    assert_eq!(one["response"], json!({"a": 1}));
    assert_eq!(one["visibility"], "tenant");

    // Naming oneself is the same as naming nobody.
    let named = export(&app, &rw("alice", "acme"), json!({"subject": "alice"})).await;
    assert_eq!(named.body["count"], 3);

    // Another subject: 403 without cache:admin, whatever the other scopes.
    let refused = export(&app, &rw("bob", "acme"), json!({"subject": "alice"})).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(error_code(&refused), "insufficient_scope");

    // An admin of acme sees acme's entries of the subject, never another tenant's.
    let bob = export(&app, &admin(), json!({"subject": "bob"})).await;
    assert_eq!(queries(&bob), ["bob one"]);
    let other_admin = token_for("root", "other", "cache:admin");
    let other = export(&app, &other_admin, json!({"subject": "alice"})).await;
    assert_eq!(queries(&other), ["other tenant alice"]);
    let nobody = export(&app, &admin(), json!({"subject": "nobody"})).await;
    assert_eq!(
        (nobody.status, &nobody.body["count"]),
        (StatusCode::OK, &json!(0))
    );
}

#[tokio::test]
async fn erasure_deletes_every_entry_of_the_subject_in_the_tenant_and_nothing_else() {
    let app = app(&[]);
    populated(&app).await;
    let before = app.entries().await;

    // bob cannot erase alice; nothing is deleted.
    let refused = erase(&app, &rw("bob", "acme"), json!({"subject": "alice"})).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(app.entries().await, before);

    let erased = erase(&app, &admin(), json!({"subject": "alice"})).await;
    assert_eq!(erased.status, StatusCode::OK, "{}", erased.text);
    assert_eq!(
        erased.body,
        json!({"success": true, "subject": "alice", "erased": 3})
    );
    assert_eq!(app.entries().await, before - 3);
    for q in ["alice one", "alice two"] {
        let r = app.query(&rw("bob", "acme"), json!({"query": q})).await;
        assert_eq!(r.body["hit"], false, "{q}");
    }
    let private = app
        .query(
            &rw("alice", "acme"),
            json!({"query": "alice private", "visibility": "user"}),
        )
        .await;
    assert_eq!(private.body["hit"], false);
    // bob's entry and the other tenant's alice are untouched.
    let bob = app
        .query(&rw("bob", "acme"), json!({"query": "bob one"}))
        .await;
    assert_eq!(bob.body["hit"], true);
    let other = app
        .query(
            &rw("alice", "other"),
            json!({"query": "other tenant alice"}),
        )
        .await;
    assert_eq!(other.body["hit"], true);
    // Erasing again finds nothing; a subject may erase itself with cache:write.
    assert_eq!(
        erase(&app, &admin(), json!({"subject": "alice"}))
            .await
            .body["erased"],
        0
    );
    let own = erase(&app, &rw("bob", "acme"), json!({})).await;
    assert_eq!(own.body["erased"], 1);
    let read_only = erase(&app, &token_for("carol", "acme", "cache:read"), json!({})).await;
    assert_eq!(read_only.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn erasure_deletes_the_vectors_too() {
    let config = config(&[]);
    let semantic = resk_server::semantic::build(&config.semantic, Default::default())
        .await
        .unwrap();
    let vectors = semantic.vectors().clone();
    let collection = semantic.collection().to_owned();
    let app = semantic_app_with(config, semantic);
    let alice = app
        .write(
            &rw("alice", "acme"),
            json!({"query": "How do I reset my password?", "response": 1}),
        )
        .await;
    let bob = app
        .write(
            &rw("bob", "acme"),
            json!({"query": "where is the billing page", "response": 2}),
        )
        .await;
    // A paraphrase of alice's question hits semantically before the erasure, not after.
    let paraphrase = json!({"query": "how can I reset my password"});
    let hit = app.query(&rw("dave", "acme"), paraphrase.clone()).await;
    assert_eq!(hit.body["hit"], true, "{}", hit.text);
    let erased = erase(&app, &admin(), json!({"subject": "alice"})).await;
    assert_eq!(erased.body["erased"], 1);
    let miss = app.query(&rw("dave", "acme"), paraphrase).await;
    assert_eq!(miss.body["hit"], false, "{}", miss.text);
    // The vector itself is gone (deleting it again removes nothing), bob's is still there.
    let acme = TenantId::new("acme").unwrap();
    let id = |r: &Reply| r.body["key"].as_str().unwrap().to_owned();
    assert_eq!(
        vectors
            .delete(&collection, &acme, &[id(&alice)])
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        vectors
            .delete(&collection, &acme, &[id(&bob)])
            .await
            .unwrap(),
        1
    );
}

#[tokio::test]
async fn bad_privacy_requests_are_refused_clearly() {
    let app = app(&[]);
    populated(&app).await;
    let before = app.entries().await;
    let long = "x".repeat(257);
    for (body, code) in [
        (json!({"subject": ""}), StatusCode::BAD_REQUEST),
        (json!({"subject": long}), StatusCode::BAD_REQUEST),
        (json!({"subject": 5}), StatusCode::BAD_REQUEST),
        (json!({"subjet": "alice"}), StatusCode::BAD_REQUEST),
        (json!(["alice"]), StatusCode::BAD_REQUEST),
    ] {
        for path in ["/api/privacy/export", "/api/privacy/erase"] {
            let r = app.call("POST", path, Some(&admin()), Some(&body)).await;
            assert_eq!(r.status, code, "{path} {body}: {}", r.text);
            error_code(&r);
        }
    }
    let no_token = app
        .call("POST", "/api/privacy/erase", None, Some(&json!({})))
        .await;
    assert_eq!(no_token.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.entries().await,
        before,
        "a refused request deleted entries"
    );
}

/// An entry older than CACHE_MAX_TTL_SECS (written before the maximum was lowered, with a longer
/// TTL) is never served, and the retention sweep deletes it; younger entries stay.
#[tokio::test]
async fn entries_past_the_maximum_retention_are_not_served_and_are_swept() {
    let app = app(&[
        "--cache-max-ttl-secs",
        "60",
        "--cache-default-ttl-secs",
        "60",
        "--retention-sweep-secs",
        "1",
    ]);
    let acme = TenantId::new("acme").unwrap();
    let key = app.config.store.keys.key(
        &acme,
        &KeyInput {
            query: "an old question",
            ..Default::default()
        },
    );
    let mut entry = CacheEntry::new(
        acme,
        "an old question".into(),
        CacheEntry::raw(&json!("old")).unwrap(),
        Duration::from_secs(7 * 86_400),
        Origin {
            source: "api".into(),
            subject: Some("alice".into()),
        },
    )
    .unwrap();
    entry.created_at -= time::Duration::seconds(120);
    app.store
        .set(
            &key,
            entry.to_bytes().unwrap().into(),
            resk_core::SetOptions::ttl(Duration::from_secs(86_400)),
        )
        .await
        .unwrap();
    let young = app
        .write(
            &rw("alice", "acme"),
            json!({"query": "a new question", "response": "new"}),
        )
        .await;
    assert_eq!(young.status, StatusCode::CREATED);

    let old = app
        .query(&rw("alice", "acme"), json!({"query": "an old question"}))
        .await;
    assert_eq!(old.body["hit"], false, "{}", old.text);
    // The sweep (every second here) deletes it from the store; the young entry stays.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while app.store.get(&key).await.unwrap().is_some() {
        assert!(std::time::Instant::now() < deadline, "not swept after 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let new = app
        .query(&rw("alice", "acme"), json!({"query": "a new question"}))
        .await;
    assert_eq!(new.body["hit"], true);
}

/// An export call reads at most 2 000 entries of the tenant and answers `next`; following the
/// cursors yields every entry of the subject exactly once, and nothing of another subject or
/// tenant. A made-up cursor is a 400 and the store is left as it was.
#[tokio::test]
async fn exports_page_with_a_cursor_and_bound_each_call() {
    let app = app(&["--rate-limit-max", "100000"]);
    let (alice, bob) = (rw("alice", "acme"), rw("bob", "acme"));
    let mut expected = Vec::new();
    for i in 0..2_600 {
        let (token, query) = if i % 10 == 0 {
            expected.push(format!("alice {i}"));
            (&alice, format!("alice {i}"))
        } else {
            (&bob, format!("bob {i}"))
        };
        let r = app
            .write(token, json!({"query": query, "response": i}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }
    let r = app
        .write(
            &rw("alice", "other"),
            json!({"query": "other tenant", "response": 0}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);

    let mut found = Vec::new();
    let mut calls = 0;
    let mut cursor = Value::Null;
    loop {
        let body = if cursor.is_null() {
            json!({})
        } else {
            json!({"cursor": cursor})
        };
        let r = export(&app, &alice, body).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        calls += 1;
        assert_eq!(r.body["count"], r.body["entries"].as_array().unwrap().len());
        assert!(
            r.body["count"].as_u64().unwrap() <= 2_000,
            "{}",
            r.body["count"]
        );
        found.extend(queries(&r));
        cursor = r.body["next"].clone();
        if cursor.is_null() {
            break;
        }
        assert!(cursor.is_string(), "{}", r.text);
    }
    assert_eq!(
        calls, 2,
        "2 601 entries in the tenant: two calls of at most 2 000"
    );
    found.sort();
    expected.sort();
    assert_eq!(found, expected);

    let before = app.entries().await;
    for bad in [
        json!({"cursor": ""}),
        json!({"cursor": 7}),
        json!({"cursor": "x".repeat(5000)}),
    ] {
        let r = export(&app, &alice, bad.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.text);
    }
    // Well formed, but no position of this walk: not found.
    let r = export(&app, &alice, json!({"cursor": "not a cursor"})).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    assert_eq!(error_code(&r), "cursor_not_found");
    assert_eq!(app.entries().await, before);
}
