//! Token handling (RFC 8725): every malformed, forged, expired or confused token is a 401 with a
//! `WWW-Authenticate` challenge; valid tokens without the scope are a 403.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::*;
use axum::http::StatusCode;
use base64::Engine;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

fn claims() -> Value {
    json!({"sub": "alice", "tenant": "acme", "scope": "cache:read cache:write", "exp": now() + 300, "iat": now()})
}

fn with(mut base: Value, key: &str, value: Value) -> Value {
    base[key] = value;
    base
}

fn without(mut base: Value, key: &str) -> Value {
    base.as_object_mut().unwrap().remove(key);
    base
}

async fn rejected(app: &TestApp, token: &str, why: &str) {
    let r = app.query(token, json!({"query": "q"})).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{why}: {}", r.text);
    assert_eq!(error_code(&r), "unauthorized", "{why}");
    let challenge = r.headers["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.starts_with("Bearer realm=\"resk\""),
        "{why}: {challenge}"
    );
    let w = app.write(token, json!({"query": "q", "response": 1})).await;
    assert_eq!(w.status, StatusCode::UNAUTHORIZED, "{why} (write)");
    assert_eq!(app.entries().await, 0);
}

#[tokio::test]
async fn valid_token_is_accepted() {
    let app = app(&[]);
    let r = app.query(&sign(&claims()), json!({"query": "q"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

#[tokio::test]
async fn missing_and_garbled_tokens() {
    let app = app(&[]);
    let r = app
        .call(
            "POST",
            "/api/cache/query",
            None,
            Some(&json!({"query": "q"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers["www-authenticate"], "Bearer realm=\"resk\"");
    let good = sign(&claims());
    for (token, why) in [
        ("abc", "not a JWT"),
        ("a.b.c", "garbage segments"),
        (&good[..good.len() - 6], "truncated signature"),
        (&good[..good.len() / 2], "truncated in the middle"),
        (&format!("{good}x"), "extra character"),
        (&good.replacen('.', "", 1), "missing a dot"),
        ("....", "only dots"),
    ] {
        rejected(&app, token, why).await;
    }
    // Not a bearer scheme at all.
    let basic = app
        .send(
            axum::http::Request::post("/api/cache/query")
                .header("authorization", format!("Basic {good}"))
                .header("content-type", "application/json")
                .body(axum::body::Body::from(r#"{"query":"q"}"#))
                .unwrap(),
        )
        .await;
    assert_eq!(basic.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn forged_and_algorithm_confused_tokens() {
    let app = app(&[]);
    rejected(
        &app,
        &sign_with(
            &claims(),
            "another-secret-that-is-long-enough-000",
            Algorithm::HS256,
        ),
        "wrong secret",
    )
    .await;
    rejected(
        &app,
        &sign_with(&claims(), SECRET, Algorithm::HS512),
        "HS512 not allowed",
    )
    .await;
    rejected(
        &app,
        &sign_with(&claims(), SECRET, Algorithm::HS384),
        "HS384 not allowed",
    )
    .await;
    // alg: none, with and without a signature segment.
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&claims())
    );
    rejected(&app, &none, "alg none").await;
    rejected(&app, none.trim_end_matches('.'), "alg none, two segments").await;
    let none_upper = format!("{}.{}.", b64(&json!({"alg": "None"})), b64(&claims()));
    rejected(&app, &none_upper, "alg None").await;
    // Payload swapped under a valid signature.
    let good = sign(&claims());
    let parts: Vec<&str> = good.split('.').collect();
    let escalated = with(
        claims(),
        "scope",
        json!("cache:read cache:write cache:admin"),
    );
    rejected(
        &app,
        &format!("{}.{}.{}", parts[0], b64(&escalated), parts[2]),
        "payload swapped",
    )
    .await;
    // A token whose header names a key id or a key URL is still verified with our secret only.
    let header =
        b64(&json!({"alg": "HS256", "kid": "../../dev/null", "jku": "http://127.0.0.1:1/keys"}));
    rejected(
        &app,
        &format!("{header}.{}.{}", parts[1], parts[2]),
        "kid/jku header",
    )
    .await;
}

#[tokio::test]
async fn time_claims() {
    let app = app(&["--jwt-leeway-secs", "5"]);
    rejected(
        &app,
        &sign(&with(claims(), "exp", json!(now() - 60))),
        "expired",
    )
    .await;
    rejected(&app, &sign(&without(claims(), "exp")), "no exp").await;
    rejected(
        &app,
        &sign(&with(claims(), "exp", json!("tomorrow"))),
        "exp not a number",
    )
    .await;
    rejected(
        &app,
        &sign(&with(claims(), "nbf", json!(now() + 600))),
        "not yet valid",
    )
    .await;
    rejected(
        &app,
        &sign(&with(claims(), "iat", json!(now() + 600))),
        "issued in the future",
    )
    .await;
    rejected(
        &app,
        &sign(&with(claims(), "iat", json!("yesterday"))),
        "iat not a number",
    )
    .await;
    // Within the leeway is fine.
    let skewed = with(
        with(claims(), "nbf", json!(now() + 2)),
        "iat",
        json!(now() + 2),
    );
    assert_eq!(
        app.query(&sign(&skewed), json!({"query": "q"}))
            .await
            .status,
        StatusCode::OK
    );
    let just_expired = with(claims(), "exp", json!(now() - 2));
    assert_eq!(
        app.query(&sign(&just_expired), json!({"query": "q"}))
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn subject_tenant_and_scope_claims() {
    let app = app(&[]);
    rejected(&app, &sign(&without(claims(), "sub")), "no sub").await;
    rejected(&app, &sign(&with(claims(), "sub", json!(""))), "empty sub").await;
    rejected(
        &app,
        &sign(&with(claims(), "sub", json!(42))),
        "numeric sub",
    )
    .await;
    rejected(
        &app,
        &sign(&with(claims(), "tenant", json!("a:b"))),
        "tenant with separator",
    )
    .await;
    rejected(
        &app,
        &sign(&with(claims(), "tenant", json!("*"))),
        "glob tenant",
    )
    .await;
    rejected(
        &app,
        &sign(&with(claims(), "tenant", json!(7))),
        "numeric tenant",
    )
    .await;
    rejected(
        &app,
        &sign(&with(claims(), "scope", json!(["cache:read"]))),
        "scope as array",
    )
    .await;
    let no_scope = app
        .query(&sign(&without(claims(), "scope")), json!({"query": "q"}))
        .await;
    assert_eq!(no_scope.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn remembered_tokens_still_expire() {
    let app = app(&["--jwt-leeway-secs", "0"]);
    let token = sign(&with(claims(), "exp", json!(now() + 1)));
    assert_eq!(
        app.query(&token, json!({"query": "q"})).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.query(&token, json!({"query": "q"})).await.status,
        StatusCode::OK,
        "second use (cached)"
    );
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    rejected(&app, &token, "expired after being cached").await;
}

#[tokio::test]
async fn custom_tenant_claim() {
    let app = app(&["--jwt-tenant-claim", "org_id"]);
    let t = sign(&with(
        with(claims(), "org_id", json!("org-9")),
        "scope",
        json!("cache:read cache:write"),
    ));
    assert_eq!(
        app.write(&t, json!({"query": "q", "response": 1}))
            .await
            .status,
        StatusCode::CREATED
    );
    // The `tenant` claim is ignored when another claim is configured.
    let other = sign(&with(claims(), "org_id", json!("org-10")));
    assert_eq!(
        app.query(&other, json!({"query": "q"})).await.body["hit"],
        false
    );
    assert_eq!(app.query(&t, json!({"query": "q"})).await.body["hit"], true);
}

#[tokio::test]
async fn audience_and_issuer_are_enforced_when_configured() {
    let app = app(&[
        "--jwt-audience",
        "resk-api",
        "--jwt-issuer",
        "https://idp.example",
    ]);
    let good = with(
        with(claims(), "aud", json!("resk-api")),
        "iss",
        json!("https://idp.example"),
    );
    assert_eq!(
        app.query(&sign(&good), json!({"query": "q"})).await.status,
        StatusCode::OK
    );
    let list_aud = with(good.clone(), "aud", json!(["other", "resk-api"]));
    assert_eq!(
        app.query(&sign(&list_aud), json!({"query": "q"}))
            .await
            .status,
        StatusCode::OK
    );
    rejected(
        &app,
        &sign(&with(good.clone(), "aud", json!("other-api"))),
        "wrong audience",
    )
    .await;
    rejected(
        &app,
        &sign(&without(good.clone(), "aud")),
        "missing audience",
    )
    .await;
    rejected(
        &app,
        &sign(&with(good.clone(), "iss", json!("https://evil.example"))),
        "wrong issuer",
    )
    .await;
    rejected(&app, &sign(&without(good, "iss")), "missing issuer").await;
}

#[tokio::test]
async fn minted_tokens_verify() {
    let config = config(&["--jwt-audience", "resk-api"]);
    let token =
        resk_server::auth::mint(&config.jwt, "svc", "cache:read", Some("acme"), 60).unwrap();
    let verifier = resk_server::auth::JwtVerifier::new(&config.jwt);
    let principal = verifier.verify(&token).await.unwrap();
    assert_eq!(&*principal.subject, "svc");
    assert_eq!(principal.tenant.as_str(), "acme");
    assert!(principal.require(resk_server::auth::Scope::Read).is_ok());
    assert!(principal.require(resk_server::auth::Scope::Write).is_err());
    assert!(
        resk_server::auth::mint(&config.jwt, "svc", "cache:read", Some("bad tenant"), 60).is_err()
    );
}
