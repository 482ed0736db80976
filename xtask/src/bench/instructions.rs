//! `bench instructions`: instructions executed per exact hit by the bare handler and by resk,
//! counted by valgrind's callgrind. The count is deterministic (the same binary, request and
//! settings give the same figure whatever else the machine is doing), where wrk's throughput on a
//! shared 2-CPU VM moves by ±15 % from run to run: a change to the hot path is judged by this
//! figure first, then by `bench hit`.
//!
//! What it does not see: the kernel (loopback TCP, syscalls: the same per request for both, one
//! `recvfrom` and one `writev`), and the CPU's own speed per instruction. And valgrind's virtual CPU
//! has no SHA-NI, so sha2 runs its software SHA-256 under it: resk's HMAC-SHA-256 key counts some
//! 10 000 instructions per hit here that natively are a few hundred (the key row shows it apart).

use crate::prelude::*;

/// Functions whose inclusive count per hit is shown: (row label, callgrind function name).
const PARTS: &[(&str, &str)] = &[
    (
        "handler: the whole `POST /api/cache/query` (lookup, answer JSON)",
        "resk_server::routes::query_entry::{{closure}}",
    ),
    (
        "lookup: key (HMAC-SHA-256; software SHA-256 under valgrind)",
        "resk_core::key::KeyBuilder::key",
    ),
    (
        "lookup: store read and AES-GCM open",
        "<resk_crypto::layer::EncryptedStore<S> as resk_core::cache::CacheStore>::get::{{closure}}",
    ),
    ("lookup: entry parse", "resk::cache::Cache::parse"),
    ("request body parse (JSON)", "resk_server::json::parse"),
    ("rate limit", "resk_server::gate::Gate::check::{{closure}}"),
    ("security headers", "resk_server::gate::secure"),
];

/// `cargo xtask bench instructions`: both servers under callgrind, warmed, counters zeroed, then
/// `secs` seconds of `wrk -t1 -c8`; instructions per request from the dump.
pub(crate) fn bench_instructions(secs: u64) -> Result {
    if Command::new("valgrind").arg("--version").output().is_err() {
        eprintln!("xtask: valgrind not found; trying `apt-get install -y valgrind`");
        apt_install(&["valgrind"])?;
    }
    let (resk, bare) = release_resk_and_bare()?;
    let dir = fixture_dir("bench-instructions")?;
    let callgrind = |name: &str| {
        let mut cmd = Command::new("valgrind");
        cmd.args([
            "--tool=callgrind",
            "--compress-strings=no",
            "--compress-pos=no",
        ])
        .arg(format!(
            "--callgrind-out-file={}",
            dir.join(format!("callgrind.{name}.%p")).display()
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        cmd
    };
    // Under valgrind a server starts some 50 times slower.
    let slow_start = |port| resk_procs::wait_for_port(port, Duration::from_secs(180), "valgrind");

    let bare_port = free_port()?;
    let mut bare_cmd = callgrind("bare");
    bare_cmd.arg(&bare).arg(bare_port.to_string());
    let bare_proc = Proc(bare_cmd.spawn().map_err(|e| format!("valgrind: {e}"))?);
    slow_start(bare_port)?;
    let resk_port = free_port()?;
    let mut resk_cmd = callgrind("resk");
    resk_cmd.arg(&resk);
    let resk_proc = Proc(
        resk_command(resk_cmd, resk_port, true, &[])
            .spawn()
            .map_err(|e| format!("valgrind: {e}"))?,
    );
    slow_start(resk_port)?;
    let token = seed(&resk, resk_port)?;

    let mut rows = Vec::new();
    for (name, proc, port) in [
        ("bare axum handler (baseline)", &bare_proc, bare_port),
        (
            "resk-server: JWT + rate limit + AES-GCM",
            &resk_proc,
            resk_port,
        ),
    ] {
        let pid = proc.0.id();
        let lua = format!(
            "wrk.method = \"POST\"\nwrk.body = {QUERY_BODY:?}\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.headers[\"Authorization\"] = \"Bearer {token}\"\n"
        );
        let script = dir.join("post.lua");
        std::fs::write(&script, lua).map_err(|e| e.to_string())?;
        let url = format!("http://127.0.0.1:{port}/api/cache/query");
        let load = |secs: u64| -> Result<WrkResult> {
            let out = Command::new("wrk")
                .args(["-t1", "-c8", &format!("-d{secs}s"), "--latency", "-s"])
                .arg(&script)
                .arg(&url)
                .output()
                .map_err(|e| e.to_string())?;
            parse_wrk(&String::from_utf8_lossy(&out.stdout))
        };
        // Warm (connections, caches, the allocator's pages), then count from zero.
        load(3)?;
        callgrind_control("-z", pid)?;
        let measured = load(secs)?;
        if measured.errors > 0 || measured.requests == 0 {
            return Err(format!(
                "{name}: {} requests, {} errors under callgrind",
                measured.requests, measured.errors
            ));
        }
        callgrind_control("-d", pid)?;
        let dump = std::fs::read_dir(&dir)
            .map_err(|e| e.to_string())?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().ends_with(&format!(".{pid}.1")))
            })
            .ok_or(format!("no callgrind dump of {name} in {}", dir.display()))?;
        let text = std::fs::read_to_string(&dump).map_err(|e| e.to_string())?;
        let total: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("summary: "))
            .and_then(|v| v.trim().parse().ok())
            .ok_or(format!("no summary in {}", dump.display()))?;
        rows.push((name, total / measured.requests as f64, dump, measured));
    }

    println!();
    println!(
        "## Instructions per exact hit (callgrind, wrk -t1 -c8, {secs} s after a 3 s warm-up; deterministic)"
    );
    println!();
    println!("| server | requests counted | instructions per request |");
    println!("| --- | ---: | ---: |");
    for (name, per, _, measured) in &rows {
        println!("| {name} | {} | {per:.0} |", measured.requests);
    }
    if let [(_, bare_per, _, _), (_, resk_per, resk_dump, measured)] = rows.as_slice() {
        println!();
        println!("| figure | value |");
        println!("| --- | ---: |");
        println!(
            "| resk / bare, instructions per request | {:.2}x |",
            resk_per / bare_per
        );
        let inclusive = annotate(resk_dump)?;
        for (label, function) in PARTS {
            let per = inclusive.get(*function).map_or_else(
                || "—".to_owned(),
                |n| format!("{:.0}", n / measured.requests as f64),
            );
            println!("| resk, {label} | {per} |");
        }
        println!();
        println!(
            "Per-function detail: `callgrind_annotate --inclusive=yes {}`",
            resk_dump.display()
        );
    }
    drop((bare_proc, resk_proc));
    Ok(())
}

fn callgrind_control(flag: &str, pid: u32) -> Result {
    let out = Command::new("callgrind_control")
        .args([flag, &pid.to_string()])
        .output()
        .map_err(|e| format!("callgrind_control: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "callgrind_control {flag} {pid}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Inclusive instruction counts by function name (the largest where a name appears several times,
/// as when a function is inlined into callers in several files).
fn annotate(dump: &Path) -> Result<std::collections::HashMap<String, f64>> {
    let out = Command::new("callgrind_annotate")
        .args(["--inclusive=yes", "--threshold=100", "--auto=no"])
        .arg(dump)
        .output()
        .map_err(|e| format!("callgrind_annotate: {e}"))?;
    let mut counts = std::collections::HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // `  1,234,567 (12.3%)  file.rs:function [object]`
        let Some((count, rest)) = line.trim_start().split_once(' ') else {
            continue;
        };
        let Ok(n) = count.replace(',', "").parse::<f64>() else {
            continue;
        };
        let Some((_, function)) = rest.split_once(".rs:") else {
            continue;
        };
        let function = function
            .rsplit_once(" [")
            .map_or(function, |(f, _)| f)
            .trim()
            .to_owned();
        let slot = counts.entry(function).or_insert(0.0);
        if n > *slot {
            *slot = n;
        }
    }
    Ok(counts)
}
