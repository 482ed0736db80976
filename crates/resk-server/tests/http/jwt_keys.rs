//! Public-key tokens (RS256, PS256, ES256, EdDSA from PEM files; keys from a JWKS URL with rotation and
//! rate-limited refresh), the per-key algorithm allow-list, headers that point at keys, and the
//! maximum token lifetime. Key pairs are test-only fixtures (`tests/fixtures/jwt/README.md`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use crate::common::*;
use axum::{Json, Router, extract::State, http::StatusCode, routing::get};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/jwt/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn claims() -> Value {
    json!({"sub": "alice", "tenant": "acme", "scope": "cache:read", "exp": now() + 300, "iat": now()})
}

/// A token signed with the private key of fixture `pair` (`rsa1`, `rsa2`, `ec1`, `ed1`).
fn sign_pem(claims: &Value, alg: Algorithm, pair: &str, kid: Option<&str>) -> String {
    let pem = std::fs::read(fixture(&format!("{pair}.key.pem"))).unwrap();
    let key = match alg {
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
        _ => EncodingKey::from_rsa_pem(&pem),
    }
    .unwrap();
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

async fn accepted(app: &TestApp, token: &str, why: &str) {
    let r = app.query(token, json!({"query": "q"})).await;
    assert_eq!(r.status, StatusCode::OK, "{why}: {}", r.text);
}

async fn rejected(app: &TestApp, token: &str, why: &str) {
    let r = app.query(token, json!({"query": "q"})).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{why}: {}", r.text);
    assert!(
        r.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer realm=\"resk\""),
        "{why}"
    );
}

fn pem_app(pair: &str, alg: &str) -> TestApp {
    let path = fixture(&format!("{pair}.pub.pem"));
    app(&[
        "--jwt-public-key-file",
        &path,
        "--jwt-public-key-algorithm",
        alg,
    ])
}

#[tokio::test]
async fn a_public_key_verifies_its_one_algorithm() {
    let app = pem_app("rsa1", "rs256");
    accepted(
        &app,
        &sign_pem(&claims(), Algorithm::RS256, "rsa1", None),
        "RS256",
    )
    .await;
    accepted(&app, &sign(&claims()), "the HMAC secret still works").await;
    rejected(
        &app,
        &sign_pem(&claims(), Algorithm::RS256, "rsa2", None),
        "another RSA key",
    )
    .await;
    rejected(
        &app,
        &sign_pem(&claims(), Algorithm::PS256, "rsa1", None),
        "PS256 with the RS256 key",
    )
    .await;
    rejected(
        &app,
        &sign_pem(&claims(), Algorithm::RS384, "rsa1", None),
        "RS384 with the RS256 key",
    )
    .await;
    // The classic confusion: an HMAC keyed with the public key's PEM text.
    let public_pem = std::fs::read_to_string(fixture("rsa1.pub.pem")).unwrap();
    rejected(
        &app,
        &sign_with(&claims(), &public_pem, Algorithm::HS256),
        "HS256 keyed with the public key",
    )
    .await;
    rejected(
        &app,
        &sign_pem(&claims(), Algorithm::RS256, "rsa1", Some("other-kid")),
        "a kid the key does not have",
    )
    .await;

    let app = pem_app("ec1", "es256");
    accepted(
        &app,
        &sign_pem(&claims(), Algorithm::ES256, "ec1", None),
        "ES256",
    )
    .await;
    let app = pem_app("ed1", "eddsa");
    accepted(
        &app,
        &sign_pem(&claims(), Algorithm::EdDSA, "ed1", None),
        "EdDSA",
    )
    .await;
    rejected(
        &app,
        &sign_pem(&claims(), Algorithm::ES256, "ec1", None),
        "ES256 on an EdDSA-only server",
    )
    .await;
}

#[test]
fn key_files_are_checked_at_start_up() {
    let parse = |args: &[&str]| {
        let mut all = vec!["resk-server", "--jwt-secret", SECRET];
        all.extend_from_slice(args);
        <resk_server::Cli as clap::Parser>::try_parse_from(all)
            .unwrap()
            .serve
            .resolve()
    };
    let ec = fixture("ec1.pub.pem");
    let err = parse(&[
        "--jwt-public-key-file",
        &ec,
        "--jwt-public-key-algorithm",
        "rs256",
    ])
    .unwrap_err();
    assert!(err.message().contains("JWT_PUBLIC_KEY_FILE"), "{err}");
    let err = parse(&["--jwt-public-key-file", &ec]).unwrap_err();
    assert!(err.message().contains("JWT_PUBLIC_KEY_ALGORITHM"), "{err}");
    let err = parse(&[
        "--jwt-public-key-file",
        "/nonexistent.pem",
        "--jwt-public-key-algorithm",
        "es256",
    ])
    .unwrap_err();
    assert!(err.message().contains("/nonexistent.pem"), "{err}");
    // Public keys only: the cache-key secret can no longer be derived from JWT_SECRET.
    let only_public = <resk_server::Cli as clap::Parser>::try_parse_from([
        "resk-server",
        "--jwt-public-key-file",
        ec.as_str(),
        "--jwt-public-key-algorithm",
        "es256",
    ])
    .unwrap()
    .serve
    .resolve()
    .unwrap_err();
    assert!(
        only_public.message().contains("CACHE_KEY_SECRET"),
        "{only_public}"
    );
}

/// A local JWKS endpoint that counts its fetches, answers after `delay_ms`, and records the most
/// fetches it served at once.
struct Jwks {
    url: String,
    doc: Arc<Mutex<Value>>,
    fetches: Arc<AtomicUsize>,
    delay_ms: Arc<AtomicU64>,
    most_at_once: Arc<AtomicUsize>,
}

async fn jwks_server(doc: Value) -> Jwks {
    #[derive(Clone)]
    struct St {
        doc: Arc<Mutex<Value>>,
        fetches: Arc<AtomicUsize>,
        delay_ms: Arc<AtomicU64>,
        at_once: Arc<AtomicUsize>,
        most_at_once: Arc<AtomicUsize>,
    }
    let st = St {
        doc: Arc::new(Mutex::new(doc)),
        fetches: Arc::new(AtomicUsize::new(0)),
        delay_ms: Arc::new(AtomicU64::new(0)),
        at_once: Arc::new(AtomicUsize::new(0)),
        most_at_once: Arc::new(AtomicUsize::new(0)),
    };
    let jwks = Jwks {
        url: String::new(),
        doc: st.doc.clone(),
        fetches: st.fetches.clone(),
        delay_ms: st.delay_ms.clone(),
        most_at_once: st.most_at_once.clone(),
    };
    let app = Router::new()
        .route(
            "/jwks.json",
            get(|State(st): State<St>| async move {
                st.fetches.fetch_add(1, Ordering::SeqCst);
                let now = st.at_once.fetch_add(1, Ordering::SeqCst) + 1;
                st.most_at_once.fetch_max(now, Ordering::SeqCst);
                let delay = st.delay_ms.load(Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
                st.at_once.fetch_sub(1, Ordering::SeqCst);
                Json(st.doc.lock().unwrap().clone())
            }),
        )
        .with_state(st);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Jwks { url, ..jwks }
}

fn jwks_doc(names: &[&str]) -> Value {
    let mut keys = Vec::new();
    for n in names {
        let doc: Value =
            serde_json::from_str(&std::fs::read_to_string(fixture(n)).unwrap()).unwrap();
        keys.extend(doc["keys"].as_array().unwrap().iter().cloned());
    }
    json!({"keys": keys})
}

#[tokio::test]
async fn jwks_keys_verify_and_rotate() {
    let jwks = jwks_server(jwks_doc(&["jwks1.json"])).await;
    let app = app(&[
        "--jwt-jwks-url",
        &jwks.url,
        "--jwt-jwks-min-refresh-secs",
        "0",
    ]);
    let c = claims();
    for (alg, pair, kid, why) in [
        (Algorithm::RS256, "rsa1", "rsa-1", "RSA JWK"),
        (Algorithm::ES256, "ec1", "ec-1", "EC JWK"),
        (Algorithm::EdDSA, "ed1", "ed-1", "OKP JWK"),
    ] {
        accepted(&app, &sign_pem(&c, alg, pair, Some(kid)), why).await;
    }
    for (alg, pair, why) in [
        (
            Algorithm::RS256,
            "rsa2",
            "rsa-1 with another key's signature",
        ),
        (Algorithm::PS256, "rsa1", "rsa-1 is RS256 only"),
    ] {
        rejected(&app, &sign_pem(&c, alg, pair, Some("rsa-1")), why).await;
    }
    let rotated = sign_pem(&c, Algorithm::RS256, "rsa2", Some("rsa-2"));
    rejected(&app, &rotated, "not published yet").await;
    *jwks.doc.lock().unwrap() = jwks_doc(&["jwks1.json", "jwks-rsa2.json"]);
    accepted(
        &app,
        &rotated,
        "published: an unknown kid fetches the set again",
    )
    .await;
}

#[tokio::test]
async fn made_up_kids_do_not_flood_the_identity_provider() {
    let jwks = jwks_server(jwks_doc(&["jwks1.json"])).await;
    let app = app(&[
        "--jwt-jwks-url",
        &jwks.url,
        "--jwt-jwks-min-refresh-secs",
        "3600",
    ]);
    let c = claims();
    accepted(
        &app,
        &sign_pem(&c, Algorithm::RS256, "rsa1", Some("rsa-1")),
        "RSA JWK",
    )
    .await;
    assert_eq!(jwks.fetches.load(Ordering::SeqCst), 1);
    for i in 0..20 {
        let kid = format!("made-up-{i}");
        rejected(
            &app,
            &sign_pem(&c, Algorithm::RS256, "rsa1", Some(&kid)),
            "unknown kid",
        )
        .await;
    }
    assert_eq!(
        jwks.fetches.load(Ordering::SeqCst),
        1,
        "one fetch per JWT_JWKS_MIN_REFRESH_SECS, whatever the kids"
    );
}

/// A slow JWKS refresh holds no one up whose key is known: with the set stale and a fetch taking
/// 3 s, tokens signed with a known key verify at once; tokens with unknown kids wait for that one
/// fetch instead of starting more (never two fetches at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_refresh_keeps_known_keys_verifying() {
    let jwks = jwks_server(jwks_doc(&["jwks1.json"])).await;
    let app = app(&[
        "--jwt-jwks-url",
        &jwks.url,
        "--jwt-jwks-min-refresh-secs",
        "0",
        "--jwt-jwks-max-age-secs",
        "1",
    ]);
    let token = |sub: &str, kid: &str| {
        let claims = json!({"sub": sub, "tenant": "acme", "scope": "cache:read",
            "exp": now() + 300, "iat": now()});
        sign_pem(&claims, Algorithm::RS256, "rsa1", Some(kid))
    };
    accepted(&app, &token("first", "rsa-1"), "first fetch").await;
    assert_eq!(jwks.fetches.load(Ordering::SeqCst), 1);

    jwks.delay_ms.store(3_000, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1_100)).await; // the set is now stale
    let started = Instant::now();
    let known = (0..10).map(|i| {
        let app = &app;
        let t = token(&format!("user-{i}"), "rsa-1");
        async move { app.query(&t, json!({"query": "q"})).await.status }
    });
    let statuses = futures_util::future::join_all(known).await;
    let took = started.elapsed();
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    assert!(
        took < Duration::from_millis(1_500),
        "known keys waited {took:?} for a 3 s refresh"
    );
    // Unknown kids wait for the fetch in flight; none starts another while it runs.
    let unknown = (0..5).map(|i| {
        let app = &app;
        let t = token("mallory", &format!("made-up-{i}"));
        async move { app.query(&t, json!({"query": "q"})).await.status }
    });
    let statuses = futures_util::future::join_all(unknown).await;
    assert!(statuses.iter().all(|s| *s == StatusCode::UNAUTHORIZED));
    assert_eq!(
        jwks.most_at_once.load(Ordering::SeqCst),
        1,
        "one fetch in flight at a time"
    );
    assert!(
        jwks.fetches.load(Ordering::SeqCst) >= 2,
        "the stale set was refreshed"
    );
}

#[tokio::test]
async fn token_lifetime_is_bounded() {
    let app = app(&["--jwt-max-lifetime-secs", "600"]);
    let base = json!({"sub": "alice", "tenant": "acme", "scope": "cache:read"});
    let mut short = base.clone();
    short["iat"] = json!(now());
    short["exp"] = json!(now() + 500);
    accepted(&app, &sign(&short), "within the maximum").await;
    let mut long = short.clone();
    long["exp"] = json!(now() + 3600);
    rejected(&app, &sign(&long), "an hour-long token").await;
    let mut no_iat = base.clone();
    no_iat["exp"] = json!(now() + 3600);
    rejected(&app, &sign(&no_iat), "no iat: measured from now").await;
    let mut backdated = long.clone();
    backdated["iat"] = json!(now() - 3300);
    rejected(
        &app,
        &sign(&backdated),
        "exp - iat counts, not what is left",
    )
    .await;
}

#[tokio::test]
async fn headers_pointing_at_keys_are_refused() {
    let app = app(&[]);
    for (name, value) in [
        ("jku", json!("http://127.0.0.1:1/keys.json")),
        ("x5u", json!("http://127.0.0.1:1/cert.pem")),
    ] {
        let mut header = serde_json::to_value(Header::new(Algorithm::HS256)).unwrap();
        header[name] = value;
        let header: Header = serde_json::from_value(header).unwrap();
        let token = jsonwebtoken::encode(
            &header,
            &claims(),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        rejected(&app, &token, name).await;
    }
}
