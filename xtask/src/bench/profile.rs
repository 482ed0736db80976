//! `bench profile`: where an exact hit's server CPU goes, layer by layer, from a sampling profile
//! of the release server under load (`perf record`), scaled by the CPU time per request measured
//! without the profiler.

use std::collections::BTreeMap;

use crate::prelude::*;

/// The layers of the table, innermost first: a sample is charged to the first layer one of whose
/// patterns appears in a frame, walking from the sampled frame outwards (allocator and `memcpy`
/// frames are skipped, so an allocation is charged to the code that asked for it).
const LAYERS: &[(&str, &[&str])] = &[
    (
        "crypto (AES-GCM open, per-tenant key)",
        &["aes_gcm", "aes::", "ghash", "polyval", "resk_crypto"],
    ),
    (
        "metrics (counters, histograms)",
        &["metrics::", "metrics_util", "metrics_exporter_prometheus"],
    ),
    (
        "tracing (spans, log filter)",
        &[
            "tracing::",
            "tracing_core",
            "tracing_subscriber",
            "tracing_opentelemetry",
            "opentelemetry",
        ],
    ),
    (
        "JSON (request parse, answer render)",
        &[
            "serde_json",
            "serde::",
            "serde_core::",
            "resk_server::json",
            "zmij",
            "ryu",
            "itoa",
        ],
    ),
    (
        "key (normalise, HMAC-SHA-256)",
        &[
            "resk::key",
            "hmac",
            "sha2",
            "unicode_normalization",
            "resk::normal",
        ],
    ),
    (
        "cache read (moka, entry view, timestamps)",
        &[
            "moka",
            "resk_cache_memory",
            "resk_cache_tiered",
            "resk::cache",
            "resk_core::entry",
            " time::",
            "<time::",
        ],
    ),
    (
        "auth (verified-token cache, revocation check)",
        &["resk_server::auth", "jsonwebtoken", "resk_server::revoke"],
    ),
    ("rate limit", &["resk_server::ratelimit"]),
    (
        "telemetry (correlation id, request span, HTTP metrics)",
        &["resk_server::telemetry", "uuid::"],
    ),
    (
        "gate (time limit, security and rate-limit headers)",
        &["resk_server::gate", "tokio::time", "http::header"],
    ),
    (
        "handler and engine (request fields, lookup, answer)",
        &[
            "resk_server::routes",
            "resk::engine",
            "resk::lookup",
            "resk::",
        ],
    ),
    (
        "HTTP parse and write (hyper)",
        &["hyper::", "httparse", "hyper_util"],
    ),
    (
        "routing and extractors (axum, tower)",
        &["axum::", "axum_core::", "matchit", "tower::"],
    ),
    (
        "kernel (TCP on loopback, syscalls, scheduling)",
        &["[kernel.kallsyms]"],
    ),
];

const SKIPPED: &[&str] = &[
    "mi_",
    "_mi_",
    "mimalloc",
    "memcpy",
    "memmove",
    "memset",
    "__rust_alloc",
    "__rust_dealloc",
    "__rust_realloc",
    "alloc::alloc",
    "<alloc::",
    "alloc::raw_vec",
    "core::ptr::drop_in_place",
];

/// The layer of one sample's frames (innermost first).
fn layer_of(frames: &[&str]) -> &'static str {
    for frame in frames {
        if SKIPPED.iter().any(|s| frame.contains(s)) && !frame.contains("[kernel.kallsyms]") {
            continue;
        }
        if let Some((name, _)) = LAYERS
            .iter()
            .find(|(_, patterns)| patterns.iter().any(|p| frame.contains(p)))
        {
            return name;
        }
    }
    "runtime and the rest (tokio, handler glue, allocator)"
}

/// Samples per layer of `perf script` output.
fn attribute(script: &str) -> BTreeMap<&'static str, u64> {
    let mut counts = BTreeMap::new();
    let mut frames: Vec<&str> = Vec::new();
    let mut flush = |frames: &mut Vec<&str>| {
        if !frames.is_empty() {
            *counts.entry(layer_of(frames)).or_insert(0) += 1;
            frames.clear();
        }
    };
    for line in script.lines() {
        if line.trim().is_empty() {
            flush(&mut frames);
        } else if line.starts_with(char::is_whitespace) {
            frames.push(line.trim());
        } else {
            flush(&mut frames);
        }
    }
    flush(&mut frames);
    counts
}

/// `cargo xtask bench profile [--duration SECS]`.
pub(crate) fn bench_profile(secs: u64) -> Result {
    if Command::new("perf").arg("--version").output().is_err() {
        eprintln!("xtask: perf not found; trying `apt-get install -y linux-perf`");
        apt_install(&["linux-perf"])?;
    }
    let resk = release_resk()?;
    let dir = fixture_dir("bench-profile")?;
    let seeded = seed_resk(&resk, true, &[])?;
    let pid = seeded.server.0.id();
    let load = Load {
        threads: 1,
        secs,
        conns: 64,
        dir: &dir,
    };
    // CPU per request without the profiler's overhead, then the profile of the same load.
    let plain = bench_seeded(&seeded, &load)?;
    let data = dir.join("perf.data");
    let mut perf = Command::new("perf")
        .args([
            "record",
            "-F",
            "2999",
            "-g",
            "--call-graph",
            "dwarf,16384",
            "-o",
        ])
        .arg(&data)
        .args(["-p", &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start perf: {e}"))?;
    std::thread::sleep(Duration::from_secs(1));
    let profiled = bench_seeded(&seeded, &load)?;
    // perf stops and writes its data on SIGINT.
    let _ = Command::new("kill")
        .args(["-INT", &perf.id().to_string()])
        .status();
    let _ = perf.wait();
    let script = Command::new("perf")
        .args(["script", "--no-inline", "-F", "ip,sym,dso", "-i"])
        .arg(&data)
        .output()
        .map_err(|e| format!("perf script: {e}"))?;
    if !script.status.success() {
        return Err(format!(
            "perf script failed: {}",
            String::from_utf8_lossy(&script.stderr)
        ));
    }
    let counts = attribute(&String::from_utf8_lossy(&script.stdout));
    let total: u64 = counts.values().sum();
    if total < 1000 {
        return Err(format!("only {total} samples; is perf allowed here?"));
    }
    let ns = plain.cpu_us * 1000.0;
    println!();
    println!(
        "## Where an exact hit's CPU goes: POST /api/cache/query, AES-GCM, JWT, rate limit, wrk -t1 -c64, {secs} s"
    );
    println!();
    println!(
        "{:.0} requests/s at {:.1} µs of server CPU per request without the profiler ({:.0} requests/s with it); {total} samples",
        plain.rps, plain.cpu_us, profiled.rps
    );
    println!();
    println!("| layer | share of samples | ns per hit |");
    println!("| --- | ---: | ---: |");
    let mut rows: Vec<_> = counts.into_iter().collect();
    rows.sort_by_key(|row| std::cmp::Reverse(row.1));
    for (layer, n) in rows {
        let share = n as f64 / total as f64;
        println!("| {layer} | {:.1} % | {:.0} |", share * 100.0, share * ns);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_go_to_their_innermost_layer() {
        let script = "\
resk-server 1 [000] 1.0: cpu-clock:
\t aaa _mi_malloc (/x/resk-server)
\t bbb sha2::sha256::compress256 (/x/resk-server)
\t ccc resk::key::Keyer::key (/x/resk-server)

resk-server 1 [000] 1.1: cpu-clock:
\t ddd tcp_sendmsg ([kernel.kallsyms])
\t eee hyper::proto::h1::dispatch (/x/resk-server)

resk-server 1 [000] 1.2: cpu-clock:
\t fff tokio::runtime::task::poll (/x/resk-server)
";
        let counts = attribute(script);
        assert_eq!(counts["key (normalise, HMAC-SHA-256)"], 1);
        assert_eq!(counts["kernel (TCP on loopback, syscalls, scheduling)"], 1);
        assert_eq!(
            counts["runtime and the rest (tokio, handler glue, allocator)"],
            1
        );
    }
}
