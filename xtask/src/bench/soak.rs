//! `bench soak`: memory and latency under a long mixed load.

use crate::prelude::*;

/// The soak's load: per wrk thread, a loop over 20 000 questions of its own, one write (re-writing
/// a question, 60 s TTL, semantic indexing on) for every three queries (exact, of a question written
/// before, or a paraphrase).
pub(crate) const SOAK_LUA: &str = r#"
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

/// `cargo xtask bench soak`: the release server (memory cache with a 64 MiB bound, encryption, the
/// lexical embedder and the embedded vector index) under a steady mixed load for `secs` seconds,
/// its resident memory sampled every 30 s. Flat = the last sample within 10 % of the sample taken at
/// a third of the run (by then the bounded structures are full).
pub(crate) fn bench_soak(secs: u64) -> Result {
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
