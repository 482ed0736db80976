//! `cargo xtask <command>`: the project's automation, in Rust so it runs wherever cargo does.
//!
//! * `test`  — the whole test suite (the README's test command): starts what the tests need where it
//!   can, runs every crate's tests and doc tests, then builds and runs the library-use example.
//! * `lint`  — `cargo fmt --check`, `cargo clippy -D warnings`, `cargo deny check`.
//! * `ci`    — `lint`, then `test`.
//! * `services` — start the private test services (Chroma, PostgreSQL with pgvector), print their
//!   `RESK_TEST_*_URL` settings and keep them running until Enter, for running one crate's tests.
//! * `fuzz`  — the schemathesis run of `test` alone: the real server fuzzed from its OpenAPI document.
//! * `sbom`  — CycloneDX 1.5 SBOMs (every crate linked, with licences and checksums) of each
//!   workspace crate, `resk-server` included, by cargo-cyclonedx, gathered in `<target>/sbom/`.
//! * `eval`  — precision and recall of semantic hits on `docs/eval`, plain cosine against the
//!   verification pipeline (release build, the all-MiniLM-L6-v2 test model).
//! * `bench` — release-build load benchmark of a cache hit against a bare axum handler (needs `wrk`);
//!   `bench compare <git-rev>` — the same hit at another revision and at this checkout, side by side.
#![allow(clippy::print_stdout)] // a command-line tool reports on stdout

mod bench;
mod eval;
mod fixtures;
mod fuzz;
mod layout;
mod lint;
mod process;
mod sbom;
mod services;
mod test;

/// Everything the command modules share, imported by each of them: the std items they use and
/// every module's helpers.
mod prelude {
    pub(crate) use std::{
        env,
        io::{Read, Write},
        net::TcpStream,
        path::{Path, PathBuf},
        process::{Command, ExitCode, Stdio},
        time::Duration,
    };

    pub(crate) use crate::{
        Result, bench::*, eval::*, fixtures::*, fuzz::*, layout::*, lint::*, process::*, sbom::*,
        services::*, test::*,
    };
}

use prelude::*;

pub(crate) type Result<T = ()> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(),
        Some("lint") => lint(),
        Some("ci") => lint().and_then(|()| test()),
        Some("bench") => bench(&args[1..]),
        Some("eval") => eval(&args[1..]),
        Some("services") => services(),
        Some("fuzz") => fuzz_api().and_then(|()| fuzz_code()),
        Some("sbom") => sbom(),
        Some("chaos") => chaos(&args[1..]),
        Some("coverage") => coverage(),
        _ => {
            eprintln!(
                "usage: cargo xtask <test|lint|ci|services|fuzz|sbom|coverage|eval [--dump]|chaos [--duration SECS]|bench [--duration SECS] [--connections N] [--rounds N]|bench compare <git-rev>|bench hit|bench profile|bench memory|bench batch|bench semantic|bench gateway|bench micro|bench vectors|bench export|bench soak [--duration SECS]>"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}
