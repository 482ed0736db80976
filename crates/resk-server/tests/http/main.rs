//! resk-server's HTTP contract, in process: one test binary (each binary relinks the server and
//! every backend, so the suites share one), a module per area.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../common/mod.rs"]
mod common;

mod admin;
mod api;
mod bad_input;
mod console;
mod gateway;
mod idempotency;
mod isolation;
mod jwt;
mod jwt_keys;
mod privacy;
mod revoke;
mod semantic;
mod vector_dbs;
mod visibility;
mod warmup;
mod ws;
