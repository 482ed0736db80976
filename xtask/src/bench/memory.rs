//! `bench memory`: resident memory of a server holding 100 000 entries (~1 KiB answers), with and
//! without their vectors, bytes per entry, and whether memory stays flat while the entries are read.

use crate::prelude::*;

/// Entries written.
const ENTRIES: u64 = 100_000;

/// Per wrk thread (two of them), 50 000 distinct questions with ~1 KiB answers, then cheap probes of
/// `/health` until xtask stops wrk. The questions vary in their words, not only in a number, so the
/// lexical vectors are spread like a real FAQ's rather than near-identical.
const WRITE_LUA: &str = r#"
local threads = 0
function setup(thread)
  thread:set("id", threads)
  threads = threads + 1
end
local words = {"password","invoice","refund","account","billing","shipping","order","login",
  "email","phone","address","plan","upgrade","cancel","export","import","report","team","admin","key"}
local answer = string.rep("Open Settings, choose the section, follow the steps shown there. ", 16)
local n = 0
request = function()
  n = n + 1
  if n > 50000 then
    return wrk.format("GET", "/health")
  end
  local i = id * 50000 + n
  local q = string.format("how do I %s my %s %s for case %d", words[i % 20 + 1], words[math.floor(i / 20) % 20 + 1], words[math.floor(i / 400) % 20 + 1], i)
  local body = string.format('{"query":"%s","response":{"text":"%s %d"},"ttl":86400}', q, answer, i)
  return wrk.format("POST", "/api/cache", {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. TOKEN}, body)
end
"#;

/// Exact hits on random entries of the 100 000.
const READ_LUA: &str = r#"
local words = {"password","invoice","refund","account","billing","shipping","order","login",
  "email","phone","address","plan","upgrade","cancel","export","import","report","team","admin","key"}
request = function()
  local i = math.random(1, 99999)
  local q = string.format("how do I %s my %s %s for case %d", words[i % 20 + 1], words[math.floor(i / 20) % 20 + 1], words[math.floor(i / 400) % 20 + 1], i)
  return wrk.format("POST", "/api/cache/query", {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. TOKEN}, string.format('{"query":"%s"}', q))
end
"#;

/// The question of entry `i`, as the Lua scripts write it.
fn question(i: usize) -> String {
    const WORDS: [&str; 20] = [
        "password", "invoice", "refund", "account", "billing", "shipping", "order", "login",
        "email", "phone", "address", "plan", "upgrade", "cancel", "export", "import", "report",
        "team", "admin", "key",
    ];
    format!(
        "how do I {} my {} {} for case {i}",
        WORDS[i % 20],
        WORDS[(i / 20) % 20],
        WORDS[(i / 400) % 20]
    )
}

/// `resk_cache_writes_total` summed over its labels, from `/api/metrics`.
fn writes(port: u16) -> Result<u64> {
    let (_, body) = http(port, "GET", "/api/metrics", "none", "")?;
    Ok(body
        .lines()
        .filter(|l| l.starts_with("resk_cache_writes_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64)
}

struct Footprint {
    written: u64,
    idle: f64,
    loaded: f64,
    reads: Vec<f64>,
    write_secs: f64,
}

fn footprint(resk: &Path, dir: &Path, env: &[(&str, &str)]) -> Result<Footprint> {
    let port = free_port()?;
    let mut all = vec![
        ("CACHE_MAX_ENTRIES", "1000000"),
        ("CACHE_MAX_BYTES", "4294967296"),
    ];
    all.extend_from_slice(env);
    let server = start_resk(resk, port, true, &all)?;
    let pid = server.0.id();
    let token = mint(resk)?;
    let idle = rss_mib(pid)?;
    let script = dir.join("memory-write.lua");
    std::fs::write(&script, WRITE_LUA.replace("TOKEN", &format!("{token:?}")))
        .map_err(|e| e.to_string())?;
    let start = std::time::Instant::now();
    let mut wrk = Command::new("wrk")
        .args(["-t2", "-c16", "-d900s", "-s"])
        .arg(&script)
        .arg(format!("http://127.0.0.1:{port}/"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start wrk: {e}"))?;
    // wrk calls `request()` once per thread before it starts, so a thread's first question is
    // never sent: stop when the count has stopped growing near the target.
    let mut last = 0;
    let written = loop {
        std::thread::sleep(Duration::from_secs(1));
        let n = writes(port)?;
        if (n + 10 >= ENTRIES && n == last) || start.elapsed() > Duration::from_secs(880) {
            break n;
        }
        last = n;
    };
    let write_secs = start.elapsed().as_secs_f64();
    let _ = wrk.kill();
    let _ = wrk.wait();
    if written + 10 < ENTRIES {
        return Err(format!("only {written} of {ENTRIES} entries were written"));
    }
    std::thread::sleep(Duration::from_secs(2));
    let loaded = rss_mib(pid)?;
    let read = dir.join("memory-read.lua");
    std::fs::write(&read, READ_LUA.replace("TOKEN", &format!("{token:?}")))
        .map_err(|e| e.to_string())?;
    let mut reads = Vec::new();
    for _ in 0..3 {
        let out = Command::new("wrk")
            .args(["-t1", "-c16", "-d20s", "--latency", "-s"])
            .arg(&read)
            .arg(format!("http://127.0.0.1:{port}/"))
            .output()
            .map_err(|e| e.to_string())?;
        let r = parse_wrk(&String::from_utf8_lossy(&out.stdout))?;
        if r.errors > 0 {
            return Err(format!("{} failed reads", r.errors));
        }
        reads.push(rss_mib(pid)?);
    }
    let (_, probe) = http(
        port,
        "POST",
        "/api/cache/query",
        &token,
        &format!(r#"{{"query":"{}"}}"#, question(21)),
    )?;
    if !probe.contains("\"hit\":true") {
        return Err(format!("a written entry does not hit: {probe}"));
    }
    Ok(Footprint {
        written,
        idle,
        loaded,
        reads,
        write_secs,
    })
}

/// `cargo xtask bench memory`.
pub(crate) fn bench_memory() -> Result {
    let resk = release_resk()?;
    let dir = fixture_dir("bench-memory")?;
    let runs = [
        (
            "entries only (SEMANTIC_ENABLED=false)",
            vec![("SEMANTIC_ENABLED", "false")],
        ),
        (
            "entries + vectors (lexical embedder, embedded index; the default)",
            vec![],
        ),
    ];
    println!();
    println!(
        "## Memory: {ENTRIES} entries of ~1 KiB answers, AES-GCM, memory backend, release build"
    );
    println!();
    println!(
        "| server | idle RSS MiB | RSS with {ENTRIES} entries MiB | bytes per entry | write time s | RSS after 3 × 20 s of reads MiB | growth under reads |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | --- | ---: |");
    for (name, env) in &runs {
        eprintln!("xtask: memory: {name}");
        let f = footprint(&resk, &dir, env)?;
        let per_entry = (f.loaded - f.idle) * 1024.0 * 1024.0 / f.written as f64;
        let last = f.reads.last().copied().unwrap_or(f.loaded);
        let growth = last / f.loaded - 1.0;
        let reads: Vec<String> = f.reads.iter().map(|m| format!("{m:.1}")).collect();
        println!(
            "| {name} | {:.1} | {:.1} | {per_entry:.0} | {:.1} | {} | {:+.1} % |",
            f.idle,
            f.loaded,
            f.write_secs,
            reads.join(" / "),
            growth * 100.0
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
