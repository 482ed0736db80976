//! Heap allocations per exact hit through the whole secured stack in process (router, gate with
//! JWT from the verified-token cache, rate limit, time limit, security headers, metrics handles,
//! correlation id, JSON, key, memory store, AES-256-GCM): counted with dhat's allocator, and held
//! to a budget so a change that adds allocations to the hot path fails here rather than in a
//! benchmark nobody reruns. The bare axum handler of `cargo xtask bench` is counted beside it.
//! Counting is exact and deterministic (no timing), so this runs in CI like any test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axum::{
    Json, Router,
    body::Body,
    http::{Request, StatusCode},
    routing::post,
};
use resk_server::{App, Backends, Cli};
use serde_json::{Value, json};
use tower::ServiceExt as _;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const SECRET: &str = "alloc-secret-0123456789abcdefghijklmnopqrstuv";
const AES_KEY: &str = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";
const BODY: &str = r#"{"query":"How do I reset my password?"}"#;
/// Allocations one exact hit may make: 75 measured when this test was written (the bare handler:
/// 51), plus headroom for dependency updates. Lower it when a change removes some.
const BUDGET: u64 = 90;
const HITS: u64 = 2_000;

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

/// Blocks allocated, and blocks live, over `HITS` calls made by `hit` (after a warm-up).
async fn count<F: Future<Output = ()>>(mut hit: impl FnMut() -> F) -> (u64, i64) {
    // Warm: the verified-token cache, the metrics handle table, moka's read buffers (which hold
    // a few hundred records until their maintenance drains them).
    for _ in 0..1_000 {
        hit().await;
    }
    let before = dhat::HeapStats::get();
    for _ in 0..HITS {
        hit().await;
    }
    let after = dhat::HeapStats::get();
    (
        after.total_blocks - before.total_blocks,
        after.curr_blocks as i64 - before.curr_blocks as i64,
    )
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

// One test in this binary: dhat's counters are the process's.
#[tokio::test(flavor = "current_thread")]
async fn an_exact_hit_stays_within_its_allocation_budget() {
    let _profiler = dhat::Profiler::builder().testing().build();
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
    let token = resk_server::auth::mint(&config.jwt, "alloc", "cache:read cache:write", None, 3600)
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

    let (resk, resk_live) = count(|| {
        let router = &router;
        let token = &token;
        async move {
            call(router, request(Some(token))).await;
        }
    })
    .await;
    let bare_router = Router::new().route("/api/cache/query", post(bare_query));
    let (bare, _) = count(|| {
        let router = &bare_router;
        async move {
            call(router, request(None)).await;
        }
    })
    .await;
    let (resk, bare) = (resk / HITS, bare / HITS);
    eprintln!(
        "allocations per exact hit: resk {resk} (budget {BUDGET}), bare axum handler {bare} \
         (the request itself included); {resk_live} more blocks live after {HITS} hits"
    );
    assert!(
        resk <= BUDGET,
        "an exact hit allocates {resk} blocks, over its budget of {BUDGET}"
    );
    // Nothing accumulates per hit once warm (moka's buffers move by a few hundred blocks).
    assert!(
        resk_live < HITS as i64 / 4,
        "{resk_live} more blocks live after {HITS} hits"
    );
}
