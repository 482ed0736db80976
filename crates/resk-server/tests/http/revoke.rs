//! Token revocation by `jti`: self-revocation (logout), admin revocation, the reserved tenant, and
//! revocations shared by instances through the cache backend and the bus.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use crate::common::*;
use axum::http::StatusCode;
use resk_cache_memory::MemoryStore;
use resk_core::{LocalBus, SharedBus, SharedCacheStore};
use resk_server::{App, Backends};
use serde_json::{Value, json};

/// A token of acme with a `jti`.
fn acme_token(sub: &str, scope: &str, jti: &str) -> String {
    token_with_jti(sub, "acme", scope, jti)
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
    let first = acme_token("alice", "cache:read", "jti-first");
    let second = acme_token("alice", "cache:read", "jti-second");
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
    let bob = acme_token("bob", "cache:read", "bob-1");
    let carol = acme_token("carol", "cache:read cache:write", "carol-1");
    let r = revoke(&app, &carol, json!({"jti": "bob-1"})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert_eq!(status(&app, &bob).await, StatusCode::OK);

    let admin = acme_token("alice", "cache:read cache:admin", "alice-1");
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
        json!({"jti": "bob-1", "exp": now() + 10 * 365 * 86_400}),
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
    .unwrap()
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

    let token = acme_token("alice", "cache:read", "shared-1");
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

/// Revocation is scoped by tenant: an administrator of globex cannot revoke acme's token even
/// knowing its jti (404, the same answer as for a jti never seen, and nothing revoked), revokes its
/// own tenant's tokens by jti once seen, and revokes a token never used by sending it whole.
#[tokio::test]
async fn revocation_is_scoped_to_the_callers_tenant() {
    let app = app(&[]);
    let victim = token_with_jti("bob", "acme", "cache:read", "shared-jti");
    let twin = token_with_jti("eve", "globex", "cache:read", "shared-jti");
    let globex_admin = token_with_jti("gina", "globex", "cache:read cache:admin", "g-admin");
    assert_eq!(status(&app, &victim).await, StatusCode::OK);

    for body in [
        json!({"jti": "shared-jti"}),
        json!({"jti": "never-seen"}),
        json!({"token": victim}),
    ] {
        let r = revoke(&app, &globex_admin, body.clone()).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{body}: {}", r.text);
        assert_eq!(error_code(&r), "token_not_found", "{}", r.text);
    }
    assert_eq!(
        status(&app, &victim).await,
        StatusCode::OK,
        "another tenant's admin revoked nothing"
    );

    // globex's own token with the same jti, once seen, is globex's to revoke, and only it.
    assert_eq!(status(&app, &twin).await, StatusCode::OK);
    let r = revoke(&app, &globex_admin, json!({"jti": "shared-jti"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(status(&app, &twin).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        status(&app, &victim).await,
        StatusCode::OK,
        "acme's twin lives"
    );

    // A token never used is revoked by sending it: by its own subject, or an admin of its tenant.
    let unused = token_with_jti("gus", "globex", "cache:read", "unused-1");
    let r = revoke(&app, &globex_admin, json!({"token": unused})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["jti"], "unused-1");
    assert_eq!(status(&app, &unused).await, StatusCode::UNAUTHORIZED);
    let other = token_with_jti("gus", "globex", "cache:read", "unused-2");
    let gus = token_with_jti("gus", "globex", "cache:read", "gus-session");
    let r = revoke(&app, &gus, json!({"token": other})).await;
    assert_eq!(r.status, StatusCode::OK, "its own subject may: {}", r.text);
    let hers = token_with_jti("hana", "globex", "cache:read", "hana-1");
    let r = revoke(&app, &gus, json!({"token": hers})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert_eq!(status(&app, &hers).await, StatusCode::OK);

    // Bad input: both names (the schema says so too).
    let r = revoke(&app, &globex_admin, json!({"jti": "x", "token": gus})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(error_code(&r), "jti_and_token");
    // A text that does not verify names no token: the same 404 as another tenant's.
    let r = revoke(&app, &globex_admin, json!({"token": "not.a.token"})).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    assert_eq!(error_code(&r), "token_not_found");
}
