//! The real `resk-server` binary, driven over HTTP on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    io::{Read, Write},
    net::TcpStream,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::common::{
    procs::{ENC_KEY, RedisProc, SECRET, Server, client, command, free_port, have_redis, mint},
    ws,
};
use serde_json::{Value, json};

async fn json_of(request: reqwest::RequestBuilder) -> Value {
    request.send().await.unwrap().json().await.unwrap()
}

async fn get_json(http: &reqwest::Client, server: &Server, path: &str) -> Value {
    json_of(http.get(server.url(path))).await
}

/// `GET path` with `token`, as JSON.
async fn get_json_as(http: &reqwest::Client, server: &Server, path: &str, token: &str) -> Value {
    json_of(http.get(server.url(path)).bearer_auth(token)).await
}

async fn query(http: &reqwest::Client, server: &Server, token: &str, q: &str) -> Value {
    let response = http
        .post(server.url("/api/cache/query"))
        .bearer_auth(token)
        .json(&json!({ "query": q }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn every_endpoint_over_http() {
    let env = [("JWT_SECRET", SECRET), ("CACHE_ENCRYPTION_KEY", ENC_KEY)];
    let server = Server::start(&env);
    let admin = mint(
        &env,
        &[
            "--sub",
            "alice",
            "--tenant",
            "acme",
            "--scope",
            "cache:read cache:write cache:admin",
        ],
    );
    let http = client();

    let health = http.get(server.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(
        health.json::<Value>().await.unwrap(),
        json!({"status": "ok"})
    );
    let ready = http.get(server.url("/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);

    let unauth = http
        .post(server.url("/api/cache/query"))
        .json(&json!({"query": "q"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unauth.status(), 401);
    assert!(unauth.headers().contains_key("www-authenticate"));

    let write = http
        .post(server.url("/api/cache"))
        .bearer_auth(&admin)
        .header("x-correlation-id", "binary-test-write-1")
        .json(&json!({"query": "How do I reset my password?", "response": {"answer": "Use the reset link."}, "ttl": 300}))
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), 201);
    assert_eq!(write.headers()["x-correlation-id"], "binary-test-write-1");
    let written: Value = write.json().await.unwrap();
    assert_eq!(written["success"], true);
    assert_eq!(written["ttl"], 300);

    let hit = query(&http, &server, &admin, "how do i reset my password?").await;
    assert_eq!(hit["hit"], true, "{hit}");
    assert_eq!(hit["source"], "memory");
    assert_eq!(hit["response"], json!({"answer": "Use the reset link."}));
    assert_eq!(hit["key"], written["key"]);

    let purge = http
        .delete(server.url("/api/cache"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(purge.status(), 200);
    assert_eq!(
        purge.json::<Value>().await.unwrap(),
        json!({"success": true, "purged": 1})
    );
    let miss = query(&http, &server, &admin, "how do i reset my password?").await;
    assert_eq!(miss["hit"], false);

    let spec: Value = get_json(&http, &server, "/api/openapi.json").await;
    assert_eq!(spec["openapi"], "3.1.0");
    let metrics = http
        .get(server.url("/api/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("resk_http_requests_total"));
    assert!(!metrics.contains("reset my password"));

    // Structured JSON logs carry the correlation id and never the query text.
    let logs = server.logs();
    let line = logs
        .iter()
        .find(|l| l.contains("binary-test-write-1"))
        .expect("correlation id not logged");
    let parsed: Value = serde_json::from_str(line).expect("log lines are JSON");
    assert!(
        parsed["timestamp"].is_string() && parsed["level"].is_string(),
        "{parsed}"
    );
    assert!(
        logs.iter().all(|l| !l.contains("reset my password")),
        "query text in logs"
    );
}

#[test]
fn refuses_to_start_without_a_valid_configuration() {
    let out = command(&[]).args(["--port", "0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("JWT_SECRET is not set") && err.contains("--dev"),
        "{err}"
    );

    let out = command(&[("JWT_SECRET", "too-short")]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 32"));

    for (key, expect) in [
        ("not-base64!!", "not valid base64"),
        ("c2hvcnQ=", "must decode to 32 bytes"),
    ] {
        let out = command(&[("JWT_SECRET", SECRET), ("CACHE_ENCRYPTION_KEY", key)])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("CACHE_ENCRYPTION_KEY") && err.contains(expect),
            "{err}"
        );
        assert!(!err.contains(key), "the key value was echoed");
    }

    let out = command(&[("JWT_SECRET", SECRET), ("CACHE_BACKEND", "cassandra")])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "unknown backend is a usage error"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("memory"));

    let help = command(&[]).arg("--help").output().unwrap();
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for var in [
        "JWT_SECRET",
        "CACHE_BACKEND",
        "CACHE_ENCRYPTION_KEY",
        "RATE_LIMIT_WINDOW_MS",
        "RATE_LIMIT_MAX",
        "LOG_LEVEL",
        "PORT",
    ] {
        assert!(text.contains(var), "--help does not mention {var}");
    }
}

/// An operator sees a clean start: every line once, no warning about the server's own OpenAPI
/// document, no breaker "closed" before any breaker ever opened; only the warnings configuration
/// asks for (here: no encryption key).
#[tokio::test]
async fn the_start_up_log_is_clean() {
    let server = Server::start(&[("JWT_SECRET", SECRET)]);
    let http = client();
    let doc = get_json(&http, &server, "/api/openapi.json").await;
    assert!(
        doc["paths"]["/api/ws"]["get"]["responses"]["101"].is_object(),
        "the WebSocket upgrade is still documented"
    );
    let logs = server.logs();
    let messages: Vec<(String, String, String)> = logs
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .take_while(|v| v["message"] != "resk-server listening")
        .map(|v| {
            let mut fields = v.as_object().unwrap().clone();
            fields.remove("timestamp");
            (
                v["level"].as_str().unwrap_or_default().to_owned(),
                v["message"].as_str().unwrap_or_default().to_owned(),
                Value::Object(fields).to_string(),
            )
        })
        .collect();
    let mut seen = std::collections::HashSet::new();
    for (_, _, line) in &messages {
        assert!(
            seen.insert(line.clone()),
            "printed twice at start-up: {line}"
        );
    }
    let warnings: Vec<&str> = messages
        .iter()
        .filter(|(level, _, _)| level == "WARN" || level == "ERROR")
        .map(|(_, message, _)| message.as_str())
        .collect();
    assert_eq!(
        warnings,
        ["CACHE_ENCRYPTION_KEY is not set: cached values are stored unencrypted"],
        "{logs:#?}"
    );
    assert!(
        messages
            .iter()
            .all(|(_, m, _)| m != "circuit breaker closed"),
        "{logs:#?}"
    );
}

#[tokio::test]
async fn dev_mode_and_keygen() {
    let env = [("RESK_DEV", "true")];
    let server = Server::start(&env);
    assert!(
        server.logs().iter().any(|l| l.contains("DEV MODE")),
        "dev mode must warn"
    );
    let token = mint(&env, &["--scope", "cache:read"]);
    let r = client()
        .post(server.url("/api/cache/query"))
        .bearer_auth(token)
        .json(&json!({"query": "q"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let out = command(&[]).arg("keygen").output().unwrap();
    assert!(out.status.success());
    let key = String::from_utf8(out.stdout).unwrap();
    assert!(resk_crypto::MasterKey::from_base64(key.trim()).is_ok());
}

#[test]
fn sigterm_drains_in_flight_requests() {
    let env = [("JWT_SECRET", SECRET)];
    let mut server = Server::start(&env);
    let token = mint(&env, &["--scope", "cache:write"]);
    let body = json!({"query": "in flight", "response": "done"}).to_string();
    let mut stream = TcpStream::connect(server.addr).unwrap();
    write!(
        stream,
        "POST /api/cache HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    let (head, tail) = body.split_at(10);
    stream.write_all(head.as_bytes()).unwrap();
    stream.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));

    server.terminate();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "exited with a request in flight"
    );
    stream.write_all(tail.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");

    let status = server.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    assert!(
        server
            .logs()
            .iter()
            .any(|l| l.contains("shutdown complete"))
    );
}

fn sqlite_path() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("resk-server-sqlite");
    std::fs::create_dir_all(&dir).unwrap();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    dir.join(format!("{}-{nanos}.sqlite", std::process::id()))
}

#[tokio::test]
async fn sqlite_keeps_every_acknowledged_write_across_kill_9_and_restarts() {
    let path = sqlite_path();
    let path_text = path.display().to_string();
    let env = [
        ("JWT_SECRET", SECRET),
        ("CACHE_BACKEND", "sqlite"),
        ("SQLITE_PATH", path_text.as_str()),
        ("CACHE_ENCRYPTION_KEY", ENC_KEY),
        ("RATE_LIMIT_MAX", "100000000"),
    ];
    let mut server = Server::start(&env);
    let token = mint(&env, &["--scope", "cache:read cache:write"]);
    let http = client();
    let ready: Value = get_json(&http, &server, "/ready").await;
    assert_eq!(ready["checks"]["sqlite"], "ok");

    // A burst of writes, acknowledged one by one, cut short by SIGKILL.
    let url = server.url("/api/cache");
    let writer = {
        let (http, token) = (http.clone(), token.clone());
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for i in 0..1_000_000u32 {
                let body = json!({"query": format!("durable question {i}"), "response": {"n": i}});
                match http.post(&url).bearer_auth(&token).json(&body).send().await {
                    Ok(r) if r.status() == 201 => acknowledged.push(i),
                    _ => break,
                }
            }
            acknowledged
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill9();
    let acknowledged = writer.await.unwrap();
    assert!(
        acknowledged.len() >= 5,
        "too few writes before the kill: {}",
        acknowledged.len()
    );

    let mut server = Server::start(&env);
    for i in &acknowledged {
        let hit = query(&http, &server, &token, &format!("durable question {i}")).await;
        assert_eq!(
            hit["hit"], true,
            "acknowledged write {i} lost after kill -9"
        );
        assert_eq!(hit["source"], "sqlite");
        assert_eq!(hit["response"], json!({"n": i}));
    }
    // Their vectors survived too (the embedded index's log next to the database): a rewording of
    // every acknowledged question is a semantic hit on it.
    for i in acknowledged.iter().rev().take(20) {
        let hit = query(
            &http,
            &server,
            &token,
            &format!("please, durable question {i}"),
        )
        .await;
        assert_eq!(hit["source"], "semantic", "vector of write {i} lost: {hit}");
        assert_eq!(hit["matched_query"], format!("durable question {i}"));
    }

    // The database files hold ciphertext only.
    for suffix in ["", "-wal"] {
        let file = format!("{path_text}{suffix}");
        if let Ok(bytes) = std::fs::read(&file) {
            assert!(
                !bytes.windows(17).any(|w| w == b"durable question "),
                "plaintext in {file}"
            );
        }
    }

    // A clean restart keeps them too.
    server.terminate();
    assert!(server.wait_exit(Duration::from_secs(10)).success());
    let server = Server::start(&env);
    let last = acknowledged.last().unwrap();
    let hit = query(&http, &server, &token, &format!("durable question {last}")).await;
    assert_eq!(hit["hit"], true);
    eprintln!(
        "kill -9 durability: {} acknowledged writes, all present",
        acknowledged.len()
    );
}

#[test]
fn unusable_sqlite_files_stop_start_up_clearly() {
    let corrupt = sqlite_path();
    std::fs::write(&corrupt, b"definitely not a database ".repeat(200)).unwrap();
    let corrupt_text = corrupt.display().to_string();
    for path in ["/proc/resk-no-such-dir/cache.sqlite", corrupt_text.as_str()] {
        let out = command(&[
            ("JWT_SECRET", SECRET),
            ("CACHE_BACKEND", "sqlite"),
            ("SQLITE_PATH", path),
        ])
        .args(["--port", "0", "--log-format", "json"])
        .output()
        .unwrap();
        assert_eq!(out.status.code(), Some(2), "{path}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(path) && err.contains("SQLite"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// A WebSocket client on `server` (the browser way, token as a subprotocol), subscribed to
/// `channels`.
async fn ws_subscribe(server: &Server, token: &str, channels: &[&str]) -> ws::Ws {
    let mut client = ws::connect_browser(server.addr, token).await;
    for channel in channels {
        ws::subscribe(&mut client, channel).await;
    }
    client
}

/// Query through `server` until the answer satisfies `done` (an invalidation crossing Redis is
/// asynchronous); fails after 5 s. Returns the answer and how many queries it took.
async fn query_until(
    http: &reqwest::Client,
    server: &Server,
    token: &str,
    q: &str,
    done: impl Fn(&Value) -> bool,
) -> (Value, u32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut tries = 0;
    loop {
        tries += 1;
        let answer = query(http, server, token, q).await;
        if done(&answer) {
            return (answer, tries);
        }
        assert!(Instant::now() < deadline, "still {answer} after 5 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn two_instances_share_one_redis() {
    let Some(url) = resk_testkit::service_url("REDIS") else {
        resk_testkit::skip("two_instances_share_one_redis");
        return;
    };
    let prefix = format!("resk-mi-{}", resk_testkit::unique_id());
    let env = [
        ("JWT_SECRET", SECRET),
        ("CACHE_BACKEND", "redis"),
        ("REDIS_URL", url.as_str()),
        ("REDIS_KEY_PREFIX", prefix.as_str()),
        ("CACHE_ENCRYPTION_KEY", ENC_KEY),
    ];
    let (a, b) = (Server::start(&env), Server::start(&env));
    let token = mint(
        &env,
        &[
            "--tenant",
            "acme",
            "--scope",
            "cache:read cache:write cache:admin",
        ],
    );
    let http = client();
    assert_eq!(get_json(&http, &b, "/ready").await["checks"]["redis"], "ok");
    let mut watcher = ws_subscribe(&b, &token, &["cache", "news"]).await;

    let write = |server: &Server, response: &str| {
        http.post(server.url("/api/cache"))
            .bearer_auth(&token)
            .json(&json!({"query": "Shared across instances?", "response": response}))
            .send()
    };
    let written = write(&a, "v1").await.unwrap();
    assert_eq!(written.status(), 201);
    let key = written.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    // The WebSocket client on B hears of the write made on A.
    let event = ws::next(&mut watcher).await;
    assert_eq!(event["channel"], "cache");
    assert_eq!(event["data"]["event"], "set");
    assert_eq!(event["data"]["key"], key.as_str());

    // Written through A: a hit through B from Redis, then from B's layer 1.
    let hit = query(&http, &b, &token, "shared across INSTANCES?").await;
    assert_eq!(
        (&hit["hit"], &hit["source"], &hit["response"]),
        (&json!(true), &json!("redis"), &json!("v1")),
        "{hit}"
    );
    let hit = query(&http, &b, &token, "shared across instances?").await;
    assert_eq!(hit["source"], "memory", "{hit}");

    // What Redis holds is ciphertext: no stored value shows the query, or an entry's JSON.
    let values = redis_values(&url, &prefix).await;
    assert!(!values.is_empty(), "the entry is in Redis under {prefix}");
    for v in &values {
        let text = String::from_utf8_lossy(v);
        for plain in ["Shared across", "\"response\"", "\"tenant\"", "acme"] {
            assert!(
                !text.contains(plain),
                "plaintext {plain:?} in a Redis value: {text}"
            );
        }
    }

    // Overwritten through A: B's layer 1 is evicted, B answers the new value.
    assert_eq!(write(&a, "v2").await.unwrap().status(), 201);
    let (hit, tries_set) = query_until(&http, &b, &token, "shared across instances?", |h| {
        h["response"] == "v2"
    })
    .await;
    assert_eq!(hit["source"], "redis");
    query(&http, &b, &token, "shared across instances?").await; // back in B's layer 1

    // Purged through A: a miss through B, layer 1 included.
    let purge = http
        .delete(a.url("/api/cache"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        purge.json::<Value>().await.unwrap(),
        json!({"success": true, "purged": 1})
    );
    let (_, tries_purge) = query_until(&http, &b, &token, "shared across instances?", |h| {
        h["hit"] == false
    })
    .await;

    // Deleted by key through A: a miss through B.
    assert_eq!(write(&a, "v3").await.unwrap().status(), 201);
    assert_eq!(
        query(&http, &b, &token, "shared across instances?").await["response"],
        "v3"
    );
    let deleted = http
        .delete(a.url(&format!("/api/cache/{key}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.json::<Value>().await.unwrap()["deleted"], true);
    let (_, tries_delete) = query_until(&http, &b, &token, "shared across instances?", |h| {
        h["hit"] == false
    })
    .await;
    eprintln!(
        "queries through B until A's change showed: set {tries_set}, purge {tries_purge}, delete {tries_delete}"
    );

    // A message published by a WebSocket client on A reaches the subscriber on B.
    let mut publisher = ws_subscribe(&a, &token, &[]).await;
    let ack = ws::ask(
        &mut publisher,
        json!({"type": "publish", "channel": "news", "data": {"from": "A"}}),
    )
    .await;
    assert_eq!(ack["type"], "published");
    loop {
        let msg = ws::next(&mut watcher).await;
        if msg["channel"] == "news" {
            assert_eq!(msg["data"], json!({"from": "A"}));
            break;
        }
        assert_eq!(msg["channel"], "cache", "{msg}");
    }

    // Round-robin variants take turns across instances: the counter lives in Redis.
    let written = http
        .post(a.url("/api/cache"))
        .bearer_auth(&token)
        .json(&json!({"query": "Which greeting?", "response":
            {"variants": ["hi", "hello", "hey"], "variantStrategy": "round-robin"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(written.status(), 201);
    let mut turns = Vec::new();
    for server in [&a, &b, &a, &b, &b] {
        let r = query(&http, server, &token, "which greeting?").await;
        turns.push(r["variant"].as_u64().unwrap());
    }
    assert_eq!(turns, [0, 1, 2, 0, 1], "one turn order shared by A and B");

    // Revoked on A: the token's socket on B is closed (4001) within the 5 s revocation bound,
    // while a socket of another token stays open.
    let other = mint(&env, &["--tenant", "acme", "--scope", "cache:read"]);
    let mut bystander = ws_subscribe(&b, &other, &[]).await;
    let revoked_at = Instant::now();
    let revoked = http
        .post(a.url("/api/auth/revoke"))
        .bearer_auth(&token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    let (code, reason) = ws::close_frame(&mut watcher, Duration::from_secs(5)).await;
    assert_eq!((code, reason.as_str()), (4001, "token revoked"));
    eprintln!(
        "socket on B closed {:?} after the revocation on A",
        revoked_at.elapsed()
    );
    assert_eq!(
        ws::ask(&mut bystander, json!({"type": "ping"})).await,
        json!({"type": "pong"})
    );
}

async fn write_status(http: &reqwest::Client, server: &Server, token: &str, q: &str) -> u16 {
    let body = json!({"query": q, "response": "ok"});
    let r = http
        .post(server.url("/api/cache"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    r.status().as_u16()
}

/// Poll until a write is accepted again (Redis back and reconnected), or fail after `limit`.
async fn until_writes_recover(
    http: &reqwest::Client,
    server: &Server,
    token: &str,
    limit: Duration,
) {
    let deadline = Instant::now() + limit;
    while write_status(http, server, token, "recovery probe").await != 201 {
        assert!(
            Instant::now() < deadline,
            "writes did not recover after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn redis_outage_degrades_reads_refuses_writes_and_recovers() {
    if !have_redis() {
        assert!(
            !resk_testkit::in_ci(),
            "redis-server is required when CI=true"
        );
        resk_testkit::skip("redis_outage_degrades_reads_refuses_writes_and_recovers");
        return;
    }
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}/0");
    let env = [
        ("JWT_SECRET", SECRET),
        ("CACHE_BACKEND", "redis"),
        ("REDIS_URL", url.as_str()),
        ("RATE_LIMIT_MAX", "100000000"),
    ];
    // Redis is not running: the server still starts, and says it is not ready and why.
    let server = Server::start(&env);
    let token = mint(&env, &["--scope", "cache:read cache:write"]);
    let http = client();
    let ready = http.get(server.url("/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_ready");
    assert!(
        body["error"]["details"]["checks"]["redis"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );

    // Without Redis, reads are degraded misses (never 5xx) and writes a clear 503.
    let check_degraded = |what: &'static str| {
        let (http, server, token) = (&http, &server, &token);
        async move {
            let q = http
                .post(server.url("/api/cache/query"))
                .bearer_auth(token)
                .json(&json!({"query": "anything"}))
                .send()
                .await
                .unwrap();
            assert_eq!(q.status(), 200, "{what}: a read must not fail");
            let q: Value = q.json().await.unwrap();
            assert_eq!(
                (q["hit"].clone(), q["degraded"].clone()),
                (json!(false), json!(true)),
                "{what}: {q}"
            );
            let w = http
                .post(server.url("/api/cache"))
                .bearer_auth(token)
                .json(&json!({"query": "anything", "response": 1}))
                .send()
                .await
                .unwrap();
            assert_eq!(w.status(), 503, "{what}");
            assert_eq!(
                w.json::<Value>().await.unwrap()["error"]["code"],
                "unavailable",
                "{what}"
            );
        }
    };
    check_degraded("before Redis started").await;
    // The operator sees it: health degraded with the store's error, and the overview counts the
    // degraded reads and the failed write.
    let admin = mint(&env, &["--scope", "cache:read cache:write cache:admin"]);
    let health: Value = get_json_as(&http, &server, "/api/admin/health", &admin).await;
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["checks"][0]["name"], "redis");
    assert_eq!(health["checks"][0]["ok"], false);
    assert!(
        health["checks"][0]["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty())
    );
    let overview: Value = get_json_as(&http, &server, "/api/admin/overview", &admin).await;
    assert_eq!(overview["total"]["degraded"], 1, "{}", overview["total"]);
    assert_eq!(overview["total"]["errors"], 1, "{}", overview["total"]);
    // The shared rate limiter fell back to the in-process one instead of failing the requests.
    let metrics = http
        .get(server.url("/api/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("resk_rate_limit_fallbacks_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );

    // Redis appears: the server connects by itself.
    let redis = RedisProc::start(port);
    until_writes_recover(&http, &server, &token, Duration::from_secs(20)).await;
    assert_eq!(
        http.get(server.url("/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let health: Value = get_json_as(&http, &server, "/api/admin/health", &admin).await;
    assert_eq!(health["checks"][0]["ok"], true, "{health}");
    assert_eq!(
        write_status(&http, &server, &token, "kept while up").await,
        201
    );
    assert_eq!(
        query(&http, &server, &token, "kept while up").await["hit"],
        true
    );

    // Redis lost mid-traffic, then back: layer 1 keeps answering what it holds, other reads are
    // degraded misses, writes 503; automatic recovery after.
    drop(redis);
    check_degraded("after Redis died").await;
    let held = query(&http, &server, &token, "kept while up").await;
    assert_eq!(
        (&held["hit"], &held["source"]),
        (&json!(true), &json!("memory")),
        "{held}"
    );
    let _redis = RedisProc::start(port);
    until_writes_recover(&http, &server, &token, Duration::from_secs(20)).await;
    assert_eq!(
        write_status(&http, &server, &token, "after recovery").await,
        201
    );
    assert_eq!(
        query(&http, &server, &token, "after recovery").await["hit"],
        true
    );
}

/// Make a throwaway CA and a server certificate for `localhost` / 127.0.0.1 with openssl, in `dir`.
fn make_test_pki(dir: &std::path::Path) -> bool {
    let sh = |args: &[&str]| {
        Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    sh(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=resk-test-ca",
        ],
    ]
    .concat())
        && sh(&[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        ]
        .concat())
        && sh(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ])
}

#[tokio::test]
async fn rediss_urls_connect_over_tls_and_verify_the_certificate() {
    let tools = have_redis()
        && Command::new("openssl")
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success());
    if !tools {
        assert!(
            !resk_testkit::in_ci(),
            "redis-server and openssl are required when CI=true"
        );
        resk_testkit::skip("rediss_urls_connect_over_tls_and_verify_the_certificate");
        return;
    }
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("tls-{}", resk_testkit::unique_id()));
    std::fs::create_dir_all(&dir).unwrap();
    assert!(
        make_test_pki(&dir),
        "openssl could not make the test certificates"
    );
    let port = free_port();
    let path = |f: &str| dir.join(f).to_string_lossy().into_owned();
    let _redis = RedisProc::spawn(
        port,
        &[
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            &path("server.pem"),
            "--tls-key-file",
            &path("server.key"),
            "--tls-ca-cert-file",
            &path("ca.pem"),
            "--tls-auth-clients",
            "no",
        ],
    );
    let url = format!("rediss://localhost:{port}/0");
    let ca = path("ca.pem");
    let trusted = [
        ("JWT_SECRET", SECRET),
        ("CACHE_BACKEND", "redis"),
        ("REDIS_URL", url.as_str()),
        ("SSL_CERT_FILE", ca.as_str()),
    ];
    let server = Server::start(&trusted);
    let http = client();
    let token = mint(&trusted, &["--scope", "cache:read cache:write"]);
    let ready = http.get(server.url("/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200, "{}", ready.text().await.unwrap());
    assert_eq!(write_status(&http, &server, &token, "over tls").await, 201);
    let hit = query(&http, &server, &token, "over tls").await;
    assert_eq!(hit["hit"], true);

    // Without the CA the certificate does not verify: not ready, never a silent plaintext fallback.
    let untrusted = [
        ("JWT_SECRET", SECRET),
        ("CACHE_BACKEND", "redis"),
        ("REDIS_URL", url.as_str()),
    ];
    let server = Server::start(&untrusted);
    let ready = http.get(server.url("/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let _ = std::fs::remove_dir_all(&dir);
}

fn tls_fixture(name: &str) -> String {
    format!("{}/tests/fixtures/tls/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// With TLS_CERT / TLS_KEY the server speaks HTTPS only (TLS 1.2/1.3, rustls), every answer carries
/// HSTS, and a plain-HTTP request on the same port gets no HTTP answer.
#[tokio::test]
async fn tls_serves_https_with_hsts_and_refuses_plain_http() {
    let (cert, key) = (tls_fixture("cert.pem"), tls_fixture("key.pem"));
    let server = Server::start(&[
        ("JWT_SECRET", SECRET),
        ("TLS_CERT", &cert),
        ("TLS_KEY", &key),
    ]);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let root =
        reqwest::Certificate::from_pem(&std::fs::read(tls_fixture("ca.pem")).unwrap()).unwrap();
    let https = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([root])
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/health", server.addr.port());
    let r = https.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["strict-transport-security"],
        "max-age=63072000; includeSubDomains"
    );
    let token = mint(&[("JWT_SECRET", SECRET)], &["--scope", "cache:read"]);
    let q = https
        .post(format!(
            "https://localhost:{}/api/cache/query",
            server.addr.port()
        ))
        .bearer_auth(&token)
        .json(&json!({"query": "q"}))
        .send()
        .await
        .unwrap();
    assert_eq!(q.status(), 200);
    let plain = client()
        .get(format!("http://127.0.0.1:{}/health", server.addr.port()))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP must not be answered: {plain:?}");
}

/// A client that never finishes its headers is disconnected after HEADER_READ_TIMEOUT_SECS
/// (slowloris), while other clients are served.
#[tokio::test]
async fn slow_headers_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = Server::start(&[("JWT_SECRET", SECRET), ("HEADER_READ_TIMEOUT_SECS", "1")]);
    let mut slow = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let health = get_json(&client(), &server, "/health").await;
    assert_eq!(health["status"], "ok", "others are served meanwhile");
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), slow.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    assert!(
        matches!(read, Ok(Ok(_))),
        "the connection must be closed by the server: {read:?}"
    );
    assert!(
        !text.contains("200 OK"),
        "the slow request was not served: {text}"
    );
}

/// A body that trickles in slower than REQUEST_TIMEOUT_SECS gets a 408 (the client's doing, not a
/// 5xx), and nothing is written.
#[tokio::test]
async fn slow_bodies_get_408_and_write_nothing() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = [("JWT_SECRET", SECRET), ("REQUEST_TIMEOUT_SECS", "1")];
    let server = Server::start(&env);
    let token = mint(&env, &["--scope", "cache:read cache:write"]);
    let body = json!({"query": "slowly", "response": "never"}).to_string();
    let mut slow = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(
        format!(
            "POST /api/cache HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
            body.len(),
            &body[..5]
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(20), slow.read(&mut buf))
        .await
        .expect("no answer within 20 s")
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    let http = client();
    assert_eq!(query(&http, &server, &token, "slowly").await["hit"], false);
}

/// `X-Forwarded-For` picks the rate-limit bucket only behind a trusted proxy: without
/// TRUSTED_PROXIES a client cannot escape its limit by inventing addresses.
#[tokio::test]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    async fn garbage(http: &reqwest::Client, server: &Server, forwarded: &str) -> u16 {
        http.post(format!("http://{}/api/cache/query", server.addr))
            .bearer_auth("garbage")
            .header("x-forwarded-for", forwarded)
            .json(&json!({"query": "q"}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
    let http = client();
    let limits = [("JWT_SECRET", SECRET), ("RATE_LIMIT_MAX", "2")];
    let direct = Server::start(&limits);
    let mut statuses = Vec::new();
    for i in 0..3 {
        statuses.push(garbage(&http, &direct, &format!("198.51.100.{i}")).await);
    }
    assert_eq!(statuses, [401, 401, 429], "made-up addresses are ignored");

    let mut env = limits.to_vec();
    env.push(("TRUSTED_PROXIES", "127.0.0.1/32"));
    let proxied = Server::start(&env);
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(garbage(&http, &proxied, "6.6.6.6, 198.51.100.1").await);
    }
    statuses.push(garbage(&http, &proxied, "198.51.100.2").await);
    assert_eq!(
        statuses,
        [401, 401, 429, 401],
        "one bucket per forwarded client"
    );
}

/// A client of the Redis at `url`, in process (the scans below need no `redis-cli`).
async fn redis_client(url: &str) -> fred::prelude::Client {
    use fred::prelude::{Builder, ClientLike, Config};
    let client = Builder::from_config(Config::from_url(url).unwrap())
        .build()
        .unwrap();
    client.init().await.unwrap();
    client
}

/// Every key under `prefix` in the Redis at `url`.
async fn redis_keys(url: &str, prefix: &str) -> Vec<String> {
    use fred::prelude::ClientLike;
    let client = redis_client(url).await;
    let mut scan = client.scan_buffered(format!("{prefix}*"), Some(1000), None);
    let mut keys = Vec::new();
    while let Some(key) = futures_util::StreamExt::next(&mut scan).await {
        keys.push(key.unwrap().into_string().unwrap());
    }
    drop(scan);
    client.quit().await.unwrap();
    keys.sort();
    keys.dedup();
    keys
}

/// Every string value under `prefix` in the Redis at `url`, raw bytes.
async fn redis_values(url: &str, prefix: &str) -> Vec<Vec<u8>> {
    use fred::prelude::{ClientLike, KeysInterface};
    let client = redis_client(url).await;
    let mut values = Vec::new();
    for key in redis_keys(url, prefix).await {
        // Strings only: GET on another type is an error (WRONGTYPE), not a value.
        if let Ok(Some(value)) = client.get::<Option<Vec<u8>>, _>(key.as_str()).await {
            values.push(value);
        }
    }
    client.quit().await.unwrap();
    values
}

/// Two instances on one Redis spend one quota: a subject's limit and its tenant's quota are counted
/// across both (atomically, in Redis), and the counters there name no subject or tenant.
#[tokio::test]
async fn two_instances_share_rate_limits_and_tenant_quotas() {
    let Some(url) = resk_testkit::service_url("REDIS") else {
        resk_testkit::skip("two_instances_share_rate_limits_and_tenant_quotas");
        return;
    };
    let prefix = format!("resk-rl-{}", resk_testkit::unique_id());
    let env = [
        ("JWT_SECRET", SECRET),
        ("CACHE_BACKEND", "redis"),
        ("REDIS_URL", url.as_str()),
        ("REDIS_KEY_PREFIX", prefix.as_str()),
        ("RATE_LIMIT_MAX", "5"),
        ("RATE_LIMIT_WINDOW_MS", "600000"),
        ("RATE_LIMIT_TENANT_MAX", "8"),
    ];
    let (a, b) = (Server::start(&env), Server::start(&env));
    let token = |sub: &str| {
        mint(
            &env,
            &["--sub", sub, "--tenant", "acme", "--scope", "cache:read"],
        )
    };
    let (alice, bob) = (token("alice"), token("bob"));
    let http = client();
    let ask = |server: &Server, token: &str| {
        http.post(server.url("/api/cache/query"))
            .bearer_auth(token)
            .json(&json!({"query": "q"}))
            .send()
    };
    // alice: five requests over both instances, then refused on either.
    for (i, server) in [&a, &b, &a, &b, &a].into_iter().enumerate() {
        let r = ask(server, &alice).await.unwrap();
        assert_eq!(r.status(), 200, "alice's request {i}");
    }
    for server in [&a, &b] {
        let r = ask(server, &alice).await.unwrap();
        assert_eq!(r.status(), 429);
        assert!(r.headers().contains_key("retry-after"));
        let body: Value = r.json().await.unwrap();
        assert!(
            !body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("tenant")
        );
    }
    // bob has his own five, but the tenant only three left (8 - 5): the tenant quota decides, and
    // the headers say so.
    let first = ask(&b, &bob).await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["ratelimit-limit"], "8");
    assert_eq!(first.headers()["ratelimit-remaining"], "2");
    assert_eq!(ask(&a, &bob).await.unwrap().status(), 200);
    assert_eq!(ask(&b, &bob).await.unwrap().status(), 200);
    let refused = ask(&a, &bob).await.unwrap();
    assert_eq!(refused.status(), 429);
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tenant"),
        "{body}"
    );

    let counters = redis_keys(&url, &format!("{prefix}#rl:")).await;
    // alice, bob, the tenant and the client address.
    assert_eq!(counters.len(), 4, "{counters:?}");
    for key in &counters {
        for name in ["alice", "bob", "acme", "127.0.0.1"] {
            assert!(!key.contains(name), "{name} readable in {key}");
        }
    }
}

/// The key id of every value stored in the SQLite file at `path`, read raw (no decryption).
async fn stored_key_ids(path: &str) -> Vec<String> {
    use resk_core::{CacheStore, PurgeScope};
    let store = resk_cache_sqlite::SqliteStore::connect(resk_cache_sqlite::SqliteConfig::new(path))
        .await
        .unwrap();
    let values = store.scan(&PurgeScope::All, None, 10_000).await.unwrap();
    assert!(values.next.is_none(), "one page holds the test's entries");
    store.close().await;
    values
        .entries
        .iter()
        .map(|(_, v)| {
            resk_crypto::AesGcmCipher::key_id_of(&v.bytes)
                .unwrap()
                .to_string()
        })
        .collect()
}

/// Key rotation end to end: entries written under key A; `resk-server reencrypt` with A as a
/// previous key re-seals every stored value under B (checked on the raw file); a server that knows
/// only B then serves them, which it could not before.
#[tokio::test]
async fn reencrypt_moves_every_value_to_the_current_key() {
    let path = sqlite_path();
    let path_text = path.display().to_string();
    let old = resk_crypto::MasterKey::generate_base64();
    let new = resk_crypto::MasterKey::generate_base64();
    let id = |k: &str| {
        resk_crypto::MasterKey::from_base64(k)
            .unwrap()
            .id()
            .to_string()
    };
    fn with_key<'a>(path: &'a str, key: &'a str) -> Vec<(&'static str, &'a str)> {
        vec![
            ("JWT_SECRET", SECRET),
            ("CACHE_BACKEND", "sqlite"),
            ("SQLITE_PATH", path),
            ("CACHE_ENCRYPTION_KEY", key),
        ]
    }
    let env_old = with_key(&path_text, old.as_str());
    let server = Server::start(&env_old);
    let token = mint(&env_old, &["--scope", "cache:read cache:write"]);
    let http = client();
    for i in 0..5 {
        assert_eq!(
            write_status(&http, &server, &token, &format!("rotated {i}")).await,
            201
        );
    }
    drop(server);
    // Five entries, and the note that the writers' token was seen (revocable by jti): six values.
    assert_eq!(stored_key_ids(&path_text).await, vec![id(old.as_str()); 6]);

    // Only the new key, before re-encryption: the old entries do not open (misses, not errors).
    // That server notes the token again, now under the new key.
    let env_new = with_key(&path_text, new.as_str());
    let server = Server::start(&env_new);
    assert_eq!(
        query(&http, &server, &token, "rotated 0").await["hit"],
        false
    );
    drop(server);
    let keys_now = |ids: Vec<String>| {
        let old_ids = ids.iter().filter(|i| **i == id(old.as_str())).count();
        (old_ids, ids.len() - old_ids)
    };
    assert_eq!(keys_now(stored_key_ids(&path_text).await), (5, 1));

    // Without the old key among the previous ones the five entries cannot be read, so they are
    // left as they are, and the command says so: counted as unreadable, exit code 3.
    let out = command(&env_new).arg("reencrypt").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(
            "re-encrypted 1 values under the current key; 0 changed meanwhile and left as \
             written; 5 could not be opened by any configured key"
        ),
        "{stdout}"
    );
    assert_eq!(keys_now(stored_key_ids(&path_text).await), (5, 1));

    let mut env_rotate = env_new.clone();
    env_rotate.push(("CACHE_ENCRYPTION_PREVIOUS_KEYS", old.as_str()));
    let out = command(&env_rotate).arg("reencrypt").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("re-encrypted 6 values under the current key; 0 changed meanwhile and left as written; 0 could not"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(stored_key_ids(&path_text).await, vec![id(new.as_str()); 6]);

    let server = Server::start(&env_new);
    for i in 0..5 {
        let hit = query(&http, &server, &token, &format!("rotated {i}")).await;
        assert_eq!(hit["hit"], true, "{hit}");
    }
    // Refused clearly: nothing to re-encrypt under, or nothing outside the process.
    let out = command(&[("JWT_SECRET", SECRET), ("CACHE_BACKEND", "sqlite")])
        .arg("reencrypt")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("CACHE_ENCRYPTION_KEY"));
    let _ = std::fs::remove_file(&path);
}

/// Query logs (debug level) carry a keyed hash of the query by default, stable per query and never
/// the text; `LOG_QUERY_TEXT=true` adds the text, with a warning at start-up.
#[tokio::test]
async fn query_logs_carry_a_hash_unless_the_debug_switch_is_on() {
    let secret_question = "my bank password is hunter2, is that safe?";
    let run = |extra: Option<(&'static str, &'static str)>| async move {
        let mut env = vec![
            ("JWT_SECRET", SECRET),
            ("LOG_LEVEL", "resk_server=debug,info"),
        ];
        env.extend(extra);
        let server = Server::start(&env);
        let token = mint(&env, &["--scope", "cache:read cache:write"]);
        let http = client();
        assert_eq!(
            write_status(&http, &server, &token, secret_question).await,
            201
        );
        assert_eq!(
            query(&http, &server, &token, secret_question).await["hit"],
            true
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        server.logs()
    };
    let hashes = |logs: &[String]| -> Vec<String> {
        logs.iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["message"] == "cache request")
            .map(|v| v["query_hash"].as_str().unwrap().to_owned())
            .collect()
    };

    let logs = run(None).await;
    assert!(
        logs.iter().all(|l| !l.contains("hunter2")),
        "query text in default logs"
    );
    let default_hashes = hashes(&logs);
    assert_eq!(default_hashes.len(), 2, "{logs:?}");
    assert_eq!(default_hashes[0], default_hashes[1], "one query, one hash");
    assert_eq!(default_hashes[0].len(), 32);

    let logs = run(Some(("LOG_QUERY_TEXT", "true"))).await;
    assert!(logs.iter().any(|l| l.contains("LOG_QUERY_TEXT is on")));
    assert!(logs.iter().any(|l| l.contains("hunter2")), "{logs:?}");
    assert_eq!(hashes(&logs), default_hashes, "same secret, same hashes");
}
