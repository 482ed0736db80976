//! The benchmark baseline: a bare axum handler on the same stack (tokio, hyper, serde_json) that parses
//! the same request body and returns a JSON body of the same shape as a resk cache hit, doing no auth,
//! rate limiting, keying, cache lookup, decryption or metrics. `cargo xtask bench` runs it beside
//! resk-server so the ratio isolates resk's own cost.
//!
//! Usage: `bare <port>`

use std::process::ExitCode;

use axum::{Json, Router, routing::post};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
struct Query {
    query: String,
}

async fn query(Json(q): Json<Query>) -> Json<Value> {
    Json(json!({
        "hit": true,
        "source": "memory",
        "response": {"text": "Open Settings, then Security, then Reset password."},
        "key": "d5ec3d9671f33f66dd59b4fdd328417a8d9b3f62d4bdb4156287d07da45d67e4",
        "created_at": "2026-11-24T06:23:36.579215366Z",
        "expires_at": "2026-11-24T07:23:36.579215366Z",
        "latency_ms": {"total": 0.01, "key": 0.0, "cache": 0.0, "query_chars": q.query.len()}
    }))
}

#[tokio::main]
async fn main() -> ExitCode {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(3900);
    let app = Router::new().route("/api/cache/query", post(query));
    let Ok(listener) = tokio::net::TcpListener::bind(("127.0.0.1", port)).await else {
        eprintln!("bare: cannot bind port {port}");
        return ExitCode::FAILURE;
    };
    eprintln!("bare listening on 127.0.0.1:{port}");
    match axum::serve(listener, app).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bare: {e}");
            ExitCode::FAILURE
        }
    }
}
