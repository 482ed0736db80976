//! Token revocation by `jti`: self-revocation (logout), admin revocation, the reserved tenant, and
//! revocations shared by instances through the cache backend and the bus.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use axum::http::StatusCode;
use common::*;
use resk_cache_memory::MemoryStore;
use resk_core::{LocalBus, SharedBus, SharedCacheStore};
use resk_server::{App, Backends};
use serde_json::{Value, json};

fn token_with_jti(sub: &str, scope: &str, jti: &str) -> String {
    sign(&json!({
        "sub": sub, "tenant": "acme", "scope": scope, "jti": jti,
        "exp": now() + 600, "iat": now(),
    }))
}

async fn revoke(app: &TestApp, token: &str, body: Value) -> Reply {
    app.call("POST", "/api/auth/revoke", Some(token), Some(&body))
        .await
}

async fn status(app: &TestApp, token: &str) -> StatusCode {
    app.query(token, json!({"query": "q"})).await.status
}

#[tokio::test]
async fn a_token_revokes_itself() {
    let app = app(&[]);
    let first = token_with_jti("alice", "cache:read", "jti-first");
    let second = token_with_jti("alice", "cache:read", "jti-second");
    assert_eq!(status(&app, &first).await, StatusCode::OK);
    let r = revoke(&app, &first, json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["jti"], "jti-first");
    assert!(r.body["until"].as_u64().unwrap() >= now() + 590);
    let refused = app.query(&first, json!({"query": "q"})).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert!(
        refused.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("token revoked")
    );
    assert_eq!(
        status(&app, &second).await,
        StatusCode::OK,
        "only that jti is revoked"
    );
    // Without a jti there is nothing to revoke.
    let r = revoke(&app, &token_for("bob", "acme", "cache:read"), json!({})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&r), "no_jti");
}

#[tokio::test]
async fn admins_revoke_other_tokens_and_others_cannot() {
    let app = app(&[]);
    let bob = token_with_jti("bob", "cache:read", "bob-1");
    let carol = token_with_jti("carol", "cache:read cache:write", "carol-1");
    let r = revoke(&app, &carol, json!({"jti": "bob-1"})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert_eq!(status(&app, &bob).await, StatusCode::OK);

    let admin = token_with_jti("alice", "cache:read cache:admin", "alice-1");
    let r = revoke(&app, &admin, json!({"jti": "bob-1", "exp": now() + 600})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(status(&app, &bob).await, StatusCode::UNAUTHORIZED);

    for bad in [
        json!({"jti": ""}),
        json!({"jti": "x".repeat(257)}),
        json!({"jti": 5}),
        json!({"jti": "x", "extra": true}),
    ] {
        let r = revoke(&app, &admin, bad.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.text);
    }
    // A revocation cannot be stretched past the longest token lifetime.
    let r = revoke(
        &app,
        &admin,
        json!({"jti": "z", "exp": now() + 10 * 365 * 86_400}),
    )
    .await;
    assert!(
        r.body["until"].as_u64().unwrap() <= now() + 86_400 + 60,
        "{}",
        r.text
    );
}

#[tokio::test]
async fn the_reserved_tenant_cannot_be_named() {
    let app = app(&[]);
    let token = sign(&json!({
        "sub": "mallory", "tenant": "_resk", "scope": "cache:read cache:write cache:admin",
        "exp": now() + 600, "iat": now(),
    }));
    assert_eq!(status(&app, &token).await, StatusCode::UNAUTHORIZED);
}

fn instance(store: &MemoryStore, bus: &SharedBus) -> TestApp {
    let config = config(&[]);
    let shared: SharedCacheStore = Arc::new(store.clone());
    let router = App::with_backends(
        &config,
        Backends {
            cache: shared,
            bus: bus.clone(),
            semantic: None,
            turns: None,
            limiter: None,
        },
    )
    .router;
    TestApp {
        router,
        store: store.clone(),
        config,
    }
}

/// Instances on one backend share revocations: one that never saw the token reads the store, one
/// that already accepted it hears the bus.
#[tokio::test]
async fn instances_share_revocations() {
    let store = MemoryStore::default();
    let bus: SharedBus = Arc::new(LocalBus::default());
    let a = instance(&store, &bus);
    let b = instance(&store, &bus);
    let quiet: SharedBus = Arc::new(LocalBus::default());
    let c = instance(&store, &quiet);

    let token = token_with_jti("alice", "cache:read", "shared-1");
    assert_eq!(status(&b, &token).await, StatusCode::OK, "b accepts it");
    let r = revoke(&a, &token, json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        status(&c, &token).await,
        StatusCode::UNAUTHORIZED,
        "c (another bus) reads the revocation from the shared store"
    );
    // b accepted the token before; the bus message reaches it asynchronously.
    let mut refused = false;
    for _ in 0..200 {
        if status(&b, &token).await == StatusCode::UNAUTHORIZED {
            refused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(refused, "b heard the revocation on the bus");
}
