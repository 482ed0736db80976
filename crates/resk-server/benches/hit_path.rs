//! An exact hit through the whole secured stack in process — router, gate (JWT from the verified-token
//! cache, rate limit, time limit, security headers, metrics, correlation id), JSON, key, memory
//! store, AES-256-GCM — next to a bare axum handler that parses the same body and answers the same
//! shape (the baseline of `cargo xtask bench`), both called with `tower::ServiceExt::oneshot` (no
//! socket, no HTTP parsing). `cargo bench -p resk-server --bench hit_path`; `cargo test` runs each
//! once. `tests/allocations.rs` counts the same hit's allocations against a budget.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/hit.rs"]
mod hit;

use divan::{Bencher, black_box};

fn main() {
    divan::main();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// resk: a seeded entry read back through the full router.
#[divan::bench]
fn resk_exact_hit(bencher: Bencher<'_, '_>) {
    let rt = runtime();
    let (router, token) = rt.block_on(hit::resk());
    bencher.bench_local(|| black_box(rt.block_on(hit::call(&router, hit::request(Some(&token))))));
}

/// The baseline: a bare axum handler doing only the JSON work.
#[divan::bench]
fn bare_handler(bencher: Bencher<'_, '_>) {
    let rt = runtime();
    let router = hit::bare();
    bencher.bench_local(|| black_box(rt.block_on(hit::call(&router, hit::request(None)))));
}
