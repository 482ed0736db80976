//! `test` (the README's test command), `coverage` and `chaos`.

use crate::prelude::*;

pub(crate) fn test() -> Result {
    // Every suite runs for real on loopback: memory and SQLite in process (SQLite is bundled by
    // sqlx), Redis on a private redis-server started here, the real resk-server binary, the example.
    let services = Services::start()?;
    let mut tests = cargo();
    tests.args(["test", "--workspace", "--all-targets", "--no-fail-fast"]);
    services.configure(&mut tests);
    run(&mut tests)?;
    let Services {
        redis,
        cluster,
        sentinel,
        chroma,
        pgvector,
        milvus,
        ..
    } = services;
    drop((cluster, sentinel, chroma, pgvector, milvus));
    run(cargo().args(["test", "--workspace", "--doc"]))?;
    run(cargo().args([
        "run",
        "--quiet",
        "-p",
        "resk-example-embedded",
        "--",
        "--self-test",
    ]))?;
    drop(redis);
    fuzz_api()?;
    fuzz_code()?;
    eprintln!("xtask: all tests passed");
    Ok(())
}

/// `cargo xtask coverage`: line coverage of every library crate, measured by cargo-tarpaulin over
/// the whole test suite with its services (as `test` starts them). Tarpaulin's LLVM engine reads the
/// compiler's own coverage instrumentation itself, so it needs no `llvm-tools` component (which
/// rustup cannot add here); cargo-tarpaulin is installed from the crate registry when missing.
/// Prints a table per crate (lowest first) and writes an HTML report and `lcov.info` under
/// `<target>/coverage`. Not part of `cargo xtask test`: the instrumented build is a second full
/// build of the workspace.
pub(crate) fn coverage() -> Result {
    if !have("cargo-tarpaulin", "--version") {
        eprintln!("xtask: installing cargo-tarpaulin (not found)");
        run(cargo().args(["install", "cargo-tarpaulin", "--locked"]))?;
    }
    let services = Services::start()?;
    let out = target_dir().join("coverage");
    let mut cmd = cargo();
    cmd.args([
        "tarpaulin",
        "--workspace",
        "--engine",
        "llvm",
        "--skip-clean",
        "--no-fail-fast",
        "--timeout",
        "900",
        "--out",
        "Html",
        "--out",
        "Lcov",
        "--exclude-files",
        "*/tests/*",
        "--exclude-files",
        "xtask/*",
        "--exclude-files",
        "*/examples/*",
        "--exclude-files",
        "fuzz/*",
        "--exclude-files",
        "crates/resk-testkit/*",
    ])
    .arg("--output-dir")
    .arg(&out)
    .arg("--target-dir")
    .arg(target_dir().join("tarpaulin"));
    for name in ["xtask", "resk-vector-bench", "resk-scan-bench", "resk-bare"] {
        cmd.args(["--exclude", name]);
    }
    services.configure(&mut cmd);
    // A failing test still leaves its coverage; the table is printed either way.
    let tests = run(&mut cmd);
    let lcov = std::fs::read_to_string(out.join("lcov.info"))
        .map_err(|e| format!("no coverage report ({e}); tests: {tests:?}"))?;
    print_coverage(&lcov);
    println!(
        "HTML report: {}",
        out.join("tarpaulin-report.html").display()
    );
    tests
}

/// Lines found and hit per crate from an lcov report, lowest coverage first.
pub(crate) fn print_coverage(lcov: &str) {
    let mut by_crate: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    let mut current = String::new();
    for line in lcov.lines() {
        if let Some(path) = line.strip_prefix("SF:") {
            current = path
                .split('/')
                .skip_while(|part| *part != "crates")
                .nth(1)
                .unwrap_or("other")
                .to_owned();
        } else if let Some(n) = line.strip_prefix("LF:") {
            by_crate.entry(current.clone()).or_default().0 += n.parse().unwrap_or(0);
        } else if let Some(n) = line.strip_prefix("LH:") {
            by_crate.entry(current.clone()).or_default().1 += n.parse().unwrap_or(0);
        }
    }
    let percent = |(found, hit): (u64, u64)| {
        if found == 0 {
            100.0
        } else {
            hit as f64 * 100.0 / found as f64
        }
    };
    let mut rows: Vec<(String, (u64, u64))> = by_crate.into_iter().collect();
    rows.sort_by(|a, b| percent(a.1).total_cmp(&percent(b.1)));
    println!("| crate | lines | covered | coverage |");
    println!("| --- | ---: | ---: | ---: |");
    let (mut all_found, mut all_hit) = (0, 0);
    for (name, (found, hit)) in &rows {
        all_found += found;
        all_hit += hit;
        println!(
            "| {name} | {found} | {hit} | {:.1} % |",
            percent((*found, *hit))
        );
    }
    println!(
        "| **all** | {all_found} | {all_hit} | {:.1} % |",
        percent((all_found, all_hit))
    );
}

/// The chaos test (`resk-server/tests/chaos.rs`) with its report printed: a mixed load for
/// `--duration` seconds (default 60) while a private Redis and a private Chroma are killed and
/// restarted.
pub(crate) fn chaos(args: &[String]) -> Result {
    let secs = match args {
        [] => "60".to_owned(),
        [flag, secs] if flag == "--duration" && secs.parse::<u32>().is_ok() => secs.clone(),
        _ => return Err("usage: cargo xtask chaos [--duration SECS]".into()),
    };
    let venv = venv()?.ok_or("the chaos run needs python3 and PyPI for Chroma")?;
    run(cargo()
        .args([
            "test",
            "-p",
            "resk-server",
            "--test",
            "chaos",
            "--",
            "--nocapture",
        ])
        .env("RESK_TEST_VENV", &venv)
        .env("RESK_CHAOS_SECS", &secs))
}
