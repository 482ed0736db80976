//! The shipped dashboard and alert rules name only metrics resk exports, and every route is counted
//! under its own label: a server (Redis with layer 1, encryption, semantic lookups) is driven
//! through every path an operator watches — hit, miss, semantic hit, write, delete, purge,
//! WebSocket, privacy export and erasure, revocation, 429, 401 — and its `/api/metrics` scraped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

// Its own test binary: it reads the process-wide metrics recorder, which tests of other areas
// would also count into.
mod common;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

/// `resk_…` metric names in `text` (histogram suffixes removed; recording rules, which hold a `:`,
/// skipped).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("resk") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let before_ok = at == 0 || !rest.as_bytes()[at - 1].is_ascii_alphanumeric();
        if before_ok && name.starts_with("resk_") && !name.contains(':') {
            names.insert(base_name(name).to_owned());
        }
        rest = &tail[end.max(1)..];
    }
    names
}

fn base_name(name: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name)
}

#[test]
fn metric_names_are_found() {
    let names = metric_names(
        r#"rate(resk_http_request_duration_seconds_bucket{x="y"}[5m]) resk:cache_hit_ratio:rate5m sum(resk_ws_connections)"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["resk_http_request_duration_seconds", "resk_ws_connections"]
    );
}

/// The names the dashboard and the alert rules use.
fn monitored_names() -> BTreeSet<String> {
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/monitoring");
    let mut all = BTreeSet::new();
    for file in ["grafana-dashboard.json", "alerts.yml"] {
        let names = metric_names(&std::fs::read_to_string(docs.join(file)).unwrap());
        assert!(names.len() >= 5, "{file}: only {names:?}");
        all.extend(names);
    }
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(docs.join("grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    assert!(dashboard["panels"].as_array().unwrap().len() >= 10);
    all
}

fn token(sub: &str, tenant: &str, scope: &str) -> String {
    common::token_with_jti(sub, tenant, scope, &format!("{sub}-{tenant}"))
}

#[tokio::test]
async fn every_monitored_metric_and_route_label_is_exported() {
    let Some(redis) = resk_testkit::service_url("REDIS") else {
        resk_testkit::skip("every_monitored_metric_and_route_label_is_exported");
        return;
    };
    let prefix = format!("resk-mon-{}", resk_testkit::unique_id());
    let config = common::config(&[
        "--cache-backend",
        "redis",
        "--redis-url",
        &redis,
        "--redis-key-prefix",
        &prefix,
        "--cache-encryption-key",
        "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=",
        "--rate-limit-max",
        "40",
        "--cache-stale-ttl-secs",
        "60",
    ]);
    let app = resk_server::App::build(&config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = app
        .router
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, service).await.unwrap() });
    let http = common::procs::client();
    let url = |path: &str| format!("http://{addr}{path}");
    let admin = token("ops", "acme", "cache:read cache:write cache:admin");
    let post = |path: &str, token: &str, body: Value| {
        http.post(url(path)).bearer_auth(token).json(&body).send()
    };

    // Write, exact hit, semantic hit, miss (twice: the negative cache), stale hit.
    let written = post(
        "/api/cache",
        &admin,
        json!({"query": "How do I reset my password?", "response": "Settings, then Reset"}),
    )
    .await
    .unwrap();
    assert_eq!(written.status(), 201);
    let key = written.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut hit_id = None;
    for (query, hit) in [
        ("How do I reset my password?", true),
        ("how do i reset my password", true),
        ("How can I reset my password please?", true),
        ("Completely unrelated question about volcanoes", false),
        ("Completely unrelated question about volcanoes", false),
    ] {
        let r = post("/api/cache/query", &admin, json!({"query": query}))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["hit"], hit, "{query}: {body}");
        if let Some(id) = body["hit_id"].as_str() {
            hit_id = Some(id.to_owned());
        }
    }
    // Feedback on the semantic hit (right: nothing is blocked for what follows).
    let r = post(
        "/api/cache/feedback",
        &admin,
        json!({"hit_id": hit_id.expect("a semantic hit"), "correct": true}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let short = post(
        "/api/cache",
        &admin,
        json!({"query": "Soon stale", "response": 1, "ttl": 1, "stale_ttl": 60}),
    )
    .await
    .unwrap();
    assert_eq!(short.status(), 201);
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let stale: Value = post("/api/cache/query", &admin, json!({"query": "Soon stale"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stale["stale"], true, "{stale}");

    // WebSocket, privacy, delete, purge, revocation.
    let mut ws = common::ws::connect(addr, &admin).await;
    common::ws::subscribe(&mut ws, "cache").await;
    for path in ["/api/privacy/export", "/api/privacy/erase"] {
        let r = post(path, &admin, json!({"subject": "nobody"}))
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    let deleted = http
        .delete(url(&format!("/api/cache/{key}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let purged = http
        .delete(url("/api/cache"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(purged.status(), 200);
    let leaving = token("leaver", "acme", "cache:read");
    let r = post("/api/auth/revoke", &leaving, json!({})).await.unwrap();
    assert_eq!(r.status(), 200);

    // 401 and 429.
    let r = http
        .post(url("/api/cache/query"))
        .json(&json!({"query": "q"}))
        .send();
    assert_eq!(r.await.unwrap().status(), 401);
    let busy = token("busy", "acme", "cache:read");
    let mut limited = false;
    for _ in 0..41 {
        let r = post("/api/cache/query", &busy, json!({"query": "q"}))
            .await
            .unwrap();
        limited |= r.status() == 429;
    }
    assert!(limited, "the 41st request within the window is refused");

    // Every documented route has been called above; the plain GET routes once more.
    let doc: Value = http
        .get(url("/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let routes: Vec<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    assert!(routes.len() >= 9, "{routes:?}");
    for route in routes
        .iter()
        .filter(|r| doc["paths"][r.as_str()]["get"].is_object())
    {
        let _ = http
            .get(url(route))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
    }

    let text = http
        .get(url("/api/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let exported: BTreeSet<&str> = scrape
        .samples
        .iter()
        .map(|s| base_name(&s.metric))
        .collect();
    let missing: Vec<String> = monitored_names()
        .into_iter()
        .filter(|name| !exported.contains(name.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard or alerts name metrics not exported: {missing:?}"
    );

    // Read from the text: prometheus-parse mangles label values holding braces (`{key}`).
    let mut by_route: BTreeMap<String, f64> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("resk_http_requests_total{"))
    {
        let route = line
            .split_once("route=\"")
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(route, _)| route.to_owned())
            .unwrap();
        let n: f64 = line.rsplit_once(' ').unwrap().1.parse().unwrap();
        *by_route.entry(route).or_default() += n;
    }
    for route in &routes {
        assert!(
            by_route.get(route).is_some_and(|n| *n >= 1.0),
            "{route} has no label of its own: {by_route:?}"
        );
    }
    assert!(
        !by_route.contains_key("unmatched"),
        "a served route was counted as unmatched: {by_route:?}"
    );
    drop(ws);
}
