//! resk-server as a process: the built binary started, signalled, killed and restarted, and its
//! subcommands (`calibrate`, `token`, `reencrypt`, …). One test binary, a module per area.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../common/mod.rs"]
mod common;

mod binary;
mod calibrate;
