//! The baseline handler itself, shared by the `resk-bare` binary (the wrk baseline of
//! `cargo xtask bench`) and resk-server's in-process baseline (`benches/hit_path.rs`,
//! `tests/allocations.rs`), so both compare resk with the same code.

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

/// `POST /api/cache/query` answered by the bare handler.
pub(crate) fn router() -> Router {
    Router::new().route("/api/cache/query", post(query))
}
