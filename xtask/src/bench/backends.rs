//! `bench` (default): an exact hit through resk vs a bare axum handler and the backends.

use crate::prelude::*;

/// `redis-benchmark -t get` requests/s against the Redis on `port`.
pub(crate) fn redis_benchmark_get(port: u16, conns: u32) -> Result<f64> {
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
pub(crate) fn bench_backends(
    resk: &Path,
    rounds: usize,
    secs: u64,
    conns: u32,
    dir: &Path,
) -> Result {
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
