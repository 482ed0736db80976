//! The exact-hit fixture shared by `benches/hit_path.rs` and `tests/allocations.rs`: resk's full
//! router with one seeded entry (AES-GCM, JWT, rate limit), and the bare axum handler of
//! `cargo xtask bench` that parses the same body and answers the same shape.
#![allow(dead_code, unreachable_pub)]

use axum::{
    Router,
    body::Body,
    http::{Request, StatusCode},
};
use resk_server::{App, Backends, Cli};
use tower::ServiceExt as _;

#[path = "../../../../examples/bare/src/handler.rs"]
mod bare_handler;

pub const SECRET: &str = "bench-secret-0123456789abcdefghijklmnopqrstuv";
pub const AES_KEY: &str = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";
pub const BODY: &str = r#"{"query":"How do I reset my password?"}"#;

/// The query of every hit, with `token` when given.
pub fn request(token: Option<&str>) -> Request<Body> {
    let mut r = Request::builder()
        .method("POST")
        .uri("/api/cache/query")
        .header("content-type", "application/json");
    if let Some(t) = token {
        r = r.header("authorization", format!("Bearer {t}"));
    }
    r.body(Body::from(BODY)).unwrap()
}

/// One call through `router`, asserting a 200; the body.
pub async fn call(router: &Router, req: Request<Body>) -> axum::body::Bytes {
    let response = router.clone().oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap()
}

/// resk's router with the entry every hit reads, and a token that may read it.
pub async fn resk() -> (Router, String) {
    let args = [
        "resk-server",
        "--jwt-secret",
        SECRET,
        "--cache-encryption-key",
        AES_KEY,
        "--rate-limit-max",
        "1000000000",
    ];
    let config = <Cli as clap::Parser>::try_parse_from(args)
        .unwrap()
        .serve
        .resolve()
        .unwrap();
    let backends: Backends = resk_server::build_backends(&config).await.unwrap();
    let router = App::with_backends(&config, backends).unwrap().router;
    let token = resk_server::auth::mint(&config.jwt, "bench", "cache:read cache:write", None, 3600)
        .unwrap();
    let write = Request::builder()
        .method("POST")
        .uri("/api/cache")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::from(
            r#"{"query":"How do I reset my password?","response":{"text":"Open Settings, then Security, then Reset password."},"ttl":3600}"#,
        ))
        .unwrap();
    let r = router.clone().oneshot(write).await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let first = call(&router, request(Some(&token))).await;
    assert!(first.starts_with(br#"{"hit":true"#), "{first:?}");
    (router, token)
}

/// The baseline: the bare axum handler of `cargo xtask bench`, doing only the JSON work.
pub fn bare() -> Router {
    bare_handler::router()
}
