//! Chaos under load: the real binary on a private, durable redis-server (AOF, fsync always) and a
//! private Chroma serves a mixed load of writes, exact queries and paraphrases while Redis and then
//! Chroma are killed with SIGKILL and restarted. Afterwards a fresh server process (an empty layer 1)
//! reads back every acknowledged write.
//!
//! Checked: no query ever gets a 5xx or a failed connection, no acknowledged write is missing, and
//! writes and semantic indexing come back after each restart. Printed: requests served, status counts,
//! query p50/p99 overall and during each fault, and the time from each dependency's return to the
//! first success that needs it. Timings are reported, never asserted.
//!
//! `RESK_CHAOS_SECS` sets the load's length (default 20 s; `cargo xtask chaos` runs 60 s).
//! Needs redis-server and Chroma from the test venv (`RESK_TEST_VENV`, set by `cargo xtask test`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::print_stdout)]

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::procs::{
    RedisProc, SECRET, Server, client, free_port, have_redis, mint, wait_for_port,
};
use serde_json::{Value, json};

/// One request of the load.
#[derive(Clone, Debug)]
struct Sample {
    /// Seconds since the load started.
    at: f64,
    write: bool,
    /// HTTP status; 0 when the request failed without one.
    status: u16,
    ms: f64,
    degraded: bool,
    /// Writes: the vector was indexed. Queries: a semantic hit.
    semantic: bool,
}

/// A private Chroma server, killed on drop.
struct Chroma {
    child: Child,
}

impl Chroma {
    fn start(venv: &Path, port: u16, dir: &Path) -> Chroma {
        let child = Command::new(venv.join("bin/chroma"))
            .args([
                "run",
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--path",
            ])
            .arg(dir)
            .env("ANONYMIZED_TELEMETRY", "False")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for_port(port, Duration::from_secs(120), "chroma");
        Chroma { child }
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Chroma {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A durable private redis-server: append-only file, fsync before every acknowledgement.
fn durable_redis(port: u16, dir: &Path) -> RedisProc {
    RedisProc::spawn(
        port,
        &[
            "--port",
            &port.to_string(),
            "--dir",
            dir.to_str().unwrap(),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ],
    )
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

/// The query a worker writes as its `n`th entry, and a paraphrase of it.
fn texts(worker: usize, n: usize) -> (String, String) {
    let topic = format!("w{worker}n{n}");
    (
        format!("How do I reset the password of account {topic}?"),
        format!("how can I reset my password for account {topic}"),
    )
}

async fn one(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    body: Value,
    write: bool,
    start: Instant,
) -> Sample {
    let sent = Instant::now();
    let response = http.post(url).bearer_auth(token).json(&body).send().await;
    let (status, body) = match response {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    };
    Sample {
        at: sent.duration_since(start).as_secs_f64(),
        write,
        status,
        ms: sent.elapsed().as_secs_f64() * 1e3,
        degraded: body["degraded"] == true,
        semantic: if write {
            body["semantic_indexed"] == true
        } else {
            body["source"] == "semantic"
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_load_survives_redis_and_vector_db_restarts() {
    let venv = std::env::var("RESK_TEST_VENV")
        .ok()
        .map(PathBuf::from)
        .filter(|v| v.join("bin/chroma").exists());
    let Some(venv) = venv.filter(|_| have_redis()) else {
        assert!(
            !resk_testkit::in_ci(),
            "redis-server and RESK_TEST_VENV (with chroma) are required when CI=true"
        );
        resk_testkit::skip_because(
            "mixed_load_survives_redis_and_vector_db_restarts",
            "needs redis-server and RESK_TEST_VENV with chroma (cargo xtask test sets it)",
        );
        return;
    };
    let secs: f64 = std::env::var("RESK_CHAOS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20.0);
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("resk-chaos-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("redis")).unwrap();
    let (redis_port, chroma_port) = (free_port(), free_port());
    let mut redis = durable_redis(redis_port, &dir.join("redis"));
    let mut chroma = Chroma::start(&venv, chroma_port, &dir.join("chroma"));
    let redis_url = format!("redis://127.0.0.1:{redis_port}/0");
    let chroma_url = format!("http://127.0.0.1:{chroma_port}");
    let env = [
        ("JWT_SECRET", SECRET),
        ("CACHE_BACKEND", "redis"),
        ("REDIS_URL", redis_url.as_str()),
        ("VECTORDB_TYPE", "chroma"),
        ("CHROMA_URL", chroma_url.as_str()),
        ("VECTOR_MAX_RETRIES", "0"),
        ("VECTOR_TIMEOUT_SECS", "2"),
        ("RATE_LIMIT_MAX", "100000000"),
    ];
    let mut server = Server::start(&env);
    let token = mint(&env, &["--scope", "cache:read cache:write"]);
    let http = client();
    let (write_url, query_url) = (server.url("/api/cache"), server.url("/api/cache/query"));

    let start = Instant::now();
    // The load runs `secs`, and at least 5 s past Chroma's restart (a loaded machine restarts it
    // slowly), so a recovery has load to show in.
    let stop = Arc::new(Mutex::new(start + Duration::from_secs_f64(secs)));
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let (http, token, samples, acked, stop) = (
                http.clone(),
                token.clone(),
                samples.clone(),
                acked.clone(),
                stop.clone(),
            );
            let (write_url, query_url) = (write_url.clone(), query_url.clone());
            tokio::spawn(async move {
                let mut written = 0;
                let mut i = 0usize;
                while Instant::now() < *stop.lock().unwrap() {
                    i += 1;
                    let sample = if i % 3 == 1 || written == 0 {
                        let (q, _) = texts(w, written);
                        let body = json!({"query": q, "response": format!("answer {w}-{written}")});
                        let s = one(&http, &write_url, &token, body, true, start).await;
                        if s.status == 201 {
                            acked.lock().unwrap().push(q);
                        }
                        written += 1;
                        s
                    } else {
                        let n = fastrand::usize(..written);
                        let (exact, para) = texts(w, n);
                        let q = if i % 3 == 2 { exact } else { para };
                        one(&http, &query_url, &token, json!({"query": q}), false, start).await
                    };
                    samples.lock().unwrap().push(sample);
                }
            })
        })
        .collect();

    let at = |share: f64| start + Duration::from_secs_f64(secs * share);
    let since = |t: Instant| t.duration_since(start).as_secs_f64();
    tokio::time::sleep_until(at(0.2).into()).await;
    let _ = redis.0.0.kill();
    let _ = redis.0.0.wait();
    let redis_down = since(Instant::now());
    // The server sees it: readiness fails (queries may only wait, if Redis returns quickly).
    let ready_url = server.url("/ready");
    let mut seen = false;
    for _ in 0..50 {
        if let Ok(r) = http.get(&ready_url).send().await
            && r.status() == 503
        {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        seen,
        "the server never reported Redis down: the fault did not happen"
    );
    tokio::time::sleep_until(at(0.4).into()).await;
    redis = tokio::task::spawn_blocking({
        let dir = dir.join("redis");
        move || durable_redis(redis_port, &dir)
    })
    .await
    .unwrap();
    let redis_up = since(Instant::now());
    tokio::time::sleep_until(at(0.6).into()).await;
    chroma.kill9();
    let chroma_down = since(Instant::now());
    tokio::time::sleep_until(at(0.75).into()).await;
    chroma = tokio::task::spawn_blocking({
        let (venv, dir) = (venv.clone(), dir.join("chroma"));
        move || Chroma::start(&venv, chroma_port, &dir)
    })
    .await
    .unwrap();
    let chroma_up = since(Instant::now());
    {
        let mut stop = stop.lock().unwrap();
        *stop = (*stop).max(Instant::now() + Duration::from_secs(5));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    let elapsed = since(Instant::now());

    // Every acknowledged write, read back through a new process (nothing in its layer 1).
    server.kill9();
    let server = Server::start(&env);
    let query_url = server.url("/api/cache/query");
    let acked = acked.lock().unwrap().clone();
    let mut missing = Vec::new();
    for q in &acked {
        let r = http
            .post(&query_url)
            .bearer_auth(&token)
            .json(&json!({"query": q, "semantic": false}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        if body["hit"] != true {
            missing.push(q.clone());
        }
    }

    let samples = samples.lock().unwrap().clone();
    let queries: Vec<&Sample> = samples.iter().filter(|s| !s.write).collect();
    let writes: Vec<&Sample> = samples.iter().filter(|s| s.write).collect();
    let count = |v: &[&Sample], f: &dyn Fn(&Sample) -> bool| v.iter().filter(|s| f(s)).count();
    let query_failures = count(&queries, &|s| s.status == 0 || s.status >= 500);
    let p = |v: &[&Sample], lo: f64, hi: f64, q: f64| {
        percentile(
            v.iter()
                .filter(|s| s.at >= lo && s.at < hi)
                .map(|s| s.ms)
                .collect(),
            q,
        )
    };
    let first_after = |v: &[&Sample], t: f64, f: &dyn Fn(&Sample) -> bool| {
        v.iter()
            .filter(|s| s.at >= t && f(s))
            .map(|s| s.at + s.ms / 1e3 - t)
            .fold(f64::INFINITY, f64::min)
    };
    let redis_recovery = first_after(&writes, redis_up, &|s| s.status == 201);
    let vector_recovery = first_after(&writes, chroma_up, &|s| s.semantic);
    let mut statuses = std::collections::BTreeMap::<(bool, u16), usize>::new();
    for s in &samples {
        *statuses.entry((s.write, s.status)).or_default() += 1;
    }
    println!(
        "chaos report ({elapsed:.1} s of load, 8 workers, 1/3 writes, 1/3 exact queries, 1/3 paraphrases)"
    );
    println!(
        "  requests served: {} ({:.0}/s); writes {}, queries {}",
        samples.len(),
        samples.len() as f64 / elapsed,
        writes.len(),
        queries.len()
    );
    println!(
        "  statuses: {}",
        statuses
            .iter()
            .map(|((w, s), n)| format!("{} {s}: {n}", if *w { "write" } else { "query" }))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  queries: 5xx or no answer {query_failures}; degraded {}; semantic hits {}",
        count(&queries, &|s| s.degraded),
        count(&queries, &|s| s.semantic)
    );
    println!(
        "  query latency p50 / p99: all {:.1} / {:.1} ms; Redis down ({redis_down:.1}-{redis_up:.1} s) {:.1} / {:.1} ms; Chroma down ({chroma_down:.1}-{chroma_up:.1} s) {:.1} / {:.1} ms",
        p(&queries, 0.0, f64::MAX, 0.5),
        p(&queries, 0.0, f64::MAX, 0.99),
        p(&queries, redis_down, redis_up, 0.5),
        p(&queries, redis_down, redis_up, 0.99),
        p(&queries, chroma_down, chroma_up, 0.5),
        p(&queries, chroma_down, chroma_up, 0.99),
    );
    println!(
        "  write latency p50 / p99: all {:.1} / {:.1} ms; Redis down {:.1} / {:.1} ms",
        p(&writes, 0.0, f64::MAX, 0.5),
        p(&writes, 0.0, f64::MAX, 0.99),
        p(&writes, redis_down, redis_up, 0.5),
        p(&writes, redis_down, redis_up, 0.99),
    );
    println!(
        "  recovery after the dependency accepted connections again: Redis (first 201 write) {redis_recovery:.2} s; Chroma (first indexed write) {vector_recovery:.2} s"
    );
    println!(
        "  acknowledged writes: {}, missing after the run: {}",
        acked.len(),
        missing.len()
    );

    assert_eq!(query_failures, 0, "queries must never fail");
    assert!(missing.is_empty(), "acknowledged writes lost: {missing:?}");
    assert!(
        acked.len() > 10,
        "the load wrote too little to mean anything"
    );
    assert!(
        redis_recovery.is_finite(),
        "writes never recovered after Redis came back"
    );
    assert!(
        vector_recovery.is_finite(),
        "semantic indexing never recovered after Chroma came back"
    );
    assert!(
        count(&writes, &|s| s.status == 201
            && !s.semantic
            && s.at >= chroma_down
            && s.at < chroma_up)
            > 0,
        "no write saw the Chroma outage: the fault did not happen"
    );
    drop((redis, chroma));
    let _ = std::fs::remove_dir_all(&dir);
}
