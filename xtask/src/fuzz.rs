//! `fuzz`: schemathesis against the running server, and cargo-fuzz targets.

use crate::prelude::*;

/// The cargo-fuzz targets under `fuzz/`, each run for `RESK_FUZZ_SECS` seconds (default 20).
pub(crate) const FUZZ_TARGETS: &[&str] = &["key_normalize", "ciphertext", "token"];

/// Run every cargo-fuzz target (libFuzzer) for a bounded time from its committed seeds
/// (`fuzz/seeds/<target>`), with a throwaway corpus and a fixed seed. cargo-fuzz is installed when
/// missing (under `CI=true`; otherwise the step is skipped visibly). libFuzzer's instrumentation
/// needs unstable rustc flags: `RUSTC_BOOTSTRAP=1` lets the stable toolchain (the only one this
/// project's machines have) accept them. No sanitizer: the fuzzed crates forbid `unsafe`, so the
/// targets hunt panics and broken invariants, which every build detects.
pub(crate) fn fuzz_code() -> Result {
    if !have("cargo-fuzz", "--version") {
        if in_ci() {
            eprintln!("xtask: installing cargo-fuzz (CI=true, not found)");
            run(cargo().args(["install", "cargo-fuzz", "--locked"]))?;
        } else {
            println!(
                "SKIP cargo-fuzz targets: not installed (`cargo install cargo-fuzz --locked`)"
            );
            return Ok(());
        }
    }
    let secs = env::var("RESK_FUZZ_SECS").unwrap_or_else(|_| "20".into());
    let work = fixture_dir("cargo-fuzz")?;
    let _work = Fixture {
        procs: Vec::new(),
        dir: work.clone(),
        url: String::new(),
    };
    for target in FUZZ_TARGETS {
        let corpus = work.join(target);
        std::fs::create_dir_all(&corpus).map_err(|e| format!("{}: {e}", corpus.display()))?;
        run(cargo()
            .args([
                "fuzz",
                "run",
                "--sanitizer",
                "none",
                "--fuzz-dir",
                "fuzz",
                target,
            ])
            .arg(&corpus)
            .arg(root().join("fuzz/seeds").join(target))
            .args([
                "--",
                &format!("-max_total_time={secs}"),
                "-seed=20261124",
                "-print_final_stats=1",
            ])
            .env("RUSTC_BOOTSTRAP", "1"))?;
    }
    Ok(())
}

/// Fuzz the real server from its own OpenAPI document with schemathesis, for a bounded number of
/// cases per operation (`RESK_FUZZ_EXAMPLES`, default 100; `RESK_FUZZ_SEED` for another seed): every
/// check on (no 5xx, status codes, content types and bodies as documented, schema-valid requests
/// accepted, schema-invalid ones refused). `/api/ws` is left out (a WebSocket upgrade, tested by
/// `tests/ws.rs`), and `/api/auth/revoke` gets a pass of its own with its own token (the fuzzer would
/// otherwise revoke the token of the other operations on its first valid call).
pub(crate) fn fuzz_api() -> Result {
    const SECRET: &str = "xtask-fuzz-secret-0123456789abcdefghijklmnop";
    let Some(venv) = venv_at("venv-fuzz", FUZZ_PACKAGES, "the API fuzzing run")? else {
        if in_ci() {
            return Err(
                "schemathesis could not be installed (CI=true: a failure, not a skip)".into(),
            );
        }
        println!("SKIP api fuzzing: schemathesis could not be installed (python3 + PyPI needed)");
        return Ok(());
    };
    run(cargo().args(["build", "--quiet", "-p", "resk-server"]))?;
    let bin = target_dir().join("debug/resk-server");
    let port = free_port()?;
    let child = Command::new(&bin)
        .env("JWT_SECRET", SECRET)
        .env("RATE_LIMIT_MAX", "10000000")
        .env("LOG_LEVEL", "error")
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let _server = Proc(child);
    wait_for_port(port)?;
    let token = |sub: &str, scope: &str| -> Result<String> {
        let out = Command::new(&bin)
            .env("JWT_SECRET", SECRET)
            .args([
                "token", "--sub", sub, "--tenant", "fuzz", "--scope", scope, "--ttl", "3600",
            ])
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("token: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let examples = env::var("RESK_FUZZ_EXAMPLES").unwrap_or_else(|_| "100".into());
    let seed = env::var("RESK_FUZZ_SEED").unwrap_or_else(|_| "20261124".into());
    let spec = format!("http://127.0.0.1:{port}/api/openapi.json");
    // schemathesis keeps a crash cache (`.schemathesis/`) in its working directory: a throwaway one.
    let work = fixture_dir("fuzz")?;
    let _work = Fixture {
        procs: Vec::new(),
        dir: work.clone(),
        url: String::new(),
    };
    let pass = |token: String, paths: &[&str]| -> Result {
        let mut st = Command::new(venv.join("bin/st"));
        st.current_dir(&work);
        st.args([
            "run",
            &spec,
            "--checks",
            "all",
            "--max-examples",
            &examples,
            "--seed",
            &seed,
        ])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(paths)
        .env("NO_COLOR", "1");
        // The bearer token stays out of the log: print the paths, not the command line.
        eprintln!(
            "xtask: running schemathesis {} against {spec}",
            paths.join(" ")
        );
        let status = st
            .status()
            .map_err(|e| format!("cannot run schemathesis: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!(
                "schemathesis {} failed with {status}",
                paths.join(" ")
            ))
        }
    };
    pass(
        token("fuzz", "cache:read cache:write cache:admin")?,
        &[
            "--exclude-path",
            "/api/auth/revoke",
            "--exclude-path",
            "/api/ws",
        ],
    )?;
    pass(
        token("fuzz-revoke", "cache:read cache:admin")?,
        &["--include-path", "/api/auth/revoke"],
    )
}
