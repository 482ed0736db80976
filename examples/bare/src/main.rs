//! The benchmark baseline: a bare axum handler on the same stack (tokio, hyper, serde_json) that parses
//! the same request body and returns a JSON body of the same shape as a resk cache hit, doing no auth,
//! rate limiting, keying, cache lookup, decryption or metrics. `cargo xtask bench` runs it beside
//! resk-server so the ratio isolates resk's own cost: same build profile, same allocator (mimalloc,
//! the server binary's default).
//!
//! A package of its own, not an example of resk-server: an example is built with its package's
//! dev-dependencies, and cargo unifies their features into every crate of the same build (tokio's
//! `test-util`, reqwest's and hyper-util's client features...), so the resk-server binary built
//! beside it was not the one `cargo build --release -p resk-server` gives a user, and building one
//! after the other recompiled the shared crates each time.
//!
//! Usage: `resk-bare <port>`

use std::process::ExitCode;

mod handler;

// The allocator resk-server runs with, so the ratio measures resk's code, not the allocator's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(3900);
    let app = handler::router();
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
