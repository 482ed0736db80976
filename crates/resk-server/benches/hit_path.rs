//! An exact hit through the whole secured stack in process — router, gate (JWT from the verified-token
//! cache, rate limit, time limit, security headers, metrics, correlation id), JSON, key, memory
//! store, AES-256-GCM — next to a bare axum handler that parses the same body and answers the same
//! shape (the baseline of `cargo xtask bench`), both called with `tower::ServiceExt::oneshot` (no
//! socket, no HTTP parsing). `cargo bench -p resk-server --bench hit_path`; `cargo test` runs each
//! once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::{
    Json, Router,
    body::Body,
    http::{Request, StatusCode},
    routing::post,
};
use divan::{Bencher, black_box};
use resk_server::{App, Backends, Cli};
use serde_json::{Value, json};
use tower::ServiceExt as _;

const SECRET: &str = "bench-secret-0123456789abcdefghijklmnopqrstuv";
const AES_KEY: &str = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";
const BODY: &str = r#"{"query":"How do I reset my password?"}"#;

fn main() {
    divan::main();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn request(token: Option<&str>) -> Request<Body> {
    let mut r = Request::builder()
        .method("POST")
        .uri("/api/cache/query")
        .header("content-type", "application/json");
    if let Some(t) = token {
        r = r.header("authorization", format!("Bearer {t}"));
    }
    r.body(Body::from(BODY)).unwrap()
}

async fn call(router: &Router, req: Request<Body>) -> axum::body::Bytes {
    let response = router.clone().oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap()
}

/// resk: a seeded entry read back through the full router.
#[divan::bench]
fn resk_exact_hit(bencher: Bencher<'_, '_>) {
    let rt = runtime();
    let (router, config) = rt.block_on(async {
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
        (router, config)
    });
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
    rt.block_on(async {
        let r = router.clone().oneshot(write).await.unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    });
    let first = rt.block_on(call(&router, request(Some(&token))));
    assert!(first.starts_with(br#"{"hit":true"#), "{first:?}");
    bencher.bench_local(|| black_box(rt.block_on(call(&router, request(Some(&token))))));
}

async fn bare_query(Json(q): Json<Value>) -> Json<Value> {
    Json(json!({
        "hit": true,
        "source": "memory",
        "response": {"text": "Open Settings, then Security, then Reset password."},
        "key": "d5ec3d9671f33f66dd59b4fdd328417a8d9b3f62d4bdb4156287d07da45d67e4",
        "created_at": "2026-11-24T06:23:36.579215366Z",
        "expires_at": "2026-11-24T07:23:36.579215366Z",
        "latency_ms": {"total": 0.01, "key": 0.0, "cache": 0.0,
            "query_chars": q["query"].as_str().map_or(0, str::len)}
    }))
}

/// The baseline: a bare axum handler doing only the JSON work.
#[divan::bench]
fn bare_handler(bencher: Bencher<'_, '_>) {
    let rt = runtime();
    let router = Router::new().route("/api/cache/query", post(bare_query));
    bencher.bench_local(|| black_box(rt.block_on(call(&router, request(None)))));
}
