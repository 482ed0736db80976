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

/// The binary's allocator (with the default `mimalloc` feature), so the figures are the server's:
/// under glibc's malloc a tenth of a hit's samples (`perf record`) were in malloc, free and
/// `malloc_consolidate`, which the server never runs.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

std::thread_local! {
    /// Each bench thread's own runtime: the two-thread runs below drive one router from two cores.
    static LOCAL: tokio::runtime::Runtime = runtime();
}

/// resk's hit from one thread and from two at once (one router): on two cores, what a hit costs
/// more with two is state both cores write (counters, histograms, the rate limiter's bucket, the
/// caches' bookkeeping) moving between them.
#[divan::bench(threads = [1, 2])]
fn resk_exact_hit_threads(bencher: Bencher<'_, '_>) {
    let (router, token) = LOCAL.with(|rt| rt.block_on(hit::resk()));
    bencher.bench(|| {
        LOCAL.with(|rt| black_box(rt.block_on(hit::call(&router, hit::request(Some(&token))))))
    });
}

/// The bare handler from one thread and from two: what the same machine gives without shared state.
#[divan::bench(threads = [1, 2])]
fn bare_handler_threads(bencher: Bencher<'_, '_>) {
    let router = hit::bare();
    bencher
        .bench(|| LOCAL.with(|rt| black_box(rt.block_on(hit::call(&router, hit::request(None))))));
}
