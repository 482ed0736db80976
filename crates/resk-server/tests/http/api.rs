//! The HTTP contract, in process: happy paths, tenant isolation, scopes, limits, metrics, OpenAPI.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::*;
use axum::http::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn write_then_query_hits_with_normalised_query() {
    let app = app(&[]);
    let t = admin();
    let w = app
        .write(&t, json!({"query": "How do I reset my password?", "response": {"text": "Settings > Security"}, "ttl": 120}))
        .await;
    assert_eq!(w.status, StatusCode::CREATED, "{}", w.text);
    assert_eq!(w.body["success"], true);
    assert_eq!(w.body["ttl"], 120);
    let key = w.body["key"].as_str().unwrap().to_owned();
    assert_eq!(key.len(), 64);
    let expires = time::OffsetDateTime::parse(
        w.body["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let delta = expires - time::OffsetDateTime::now_utc();
    assert!(
        delta.whole_seconds() > 100 && delta.whole_seconds() <= 120,
        "{delta}"
    );

    let q = app
        .query(&t, json!({"query": "  how do I RESET my   password?"}))
        .await;
    assert_eq!(q.status, StatusCode::OK, "{}", q.text);
    assert_eq!(q.body["hit"], true);
    assert_eq!(q.body["source"], "memory");
    assert_eq!(q.body["key"], key.as_str());
    assert_eq!(q.body["response"], json!({"text": "Settings > Security"}));
    let latency = &q.body["latency_ms"];
    for field in ["total", "key", "cache"] {
        assert!(
            latency[field].as_f64().is_some_and(|v| v >= 0.0),
            "{field}: {latency}"
        );
    }

    let miss = app
        .query(&t, json!({"query": "How do I reset my username?"}))
        .await;
    assert_eq!(miss.status, StatusCode::OK);
    assert_eq!(miss.body["hit"], false);
    assert!(miss.body.get("response").is_none());
    assert!(miss.body["latency_ms"]["total"].is_number());
}

#[tokio::test]
async fn default_ttl_applies_and_writes_overwrite() {
    let app = app(&["--cache-default-ttl-secs", "90"]);
    let t = admin();
    let w = app
        .write(&t, json!({"query": "q", "response": "first"}))
        .await;
    assert_eq!(w.body["ttl"], 90);
    app.write(&t, json!({"query": "Q", "response": "second"}))
        .await;
    assert_eq!(
        app.query(&t, json!({"query": "q"})).await.body["response"],
        "second"
    );
    assert_eq!(app.entries().await, 1);
}

#[tokio::test]
async fn scope_fields_separate_entries() {
    let app = app(&[]);
    let t = admin();
    app.write(
        &t,
        json!({"query": "hello", "response": "en", "language": "en"}),
    )
    .await;
    app.write(
        &t,
        json!({"query": "hello", "response": "fr", "language": "fr"}),
    )
    .await;
    app.write(
        &t,
        json!({"query": "hello", "response": "m1", "model": "gpt-a", "params": {"t": 0.1, "p": 1}}),
    )
    .await;
    assert_eq!(
        app.query(&t, json!({"query": "hello", "language": "EN"}))
            .await
            .body["response"],
        "en"
    );
    assert_eq!(
        app.query(&t, json!({"query": "hello", "language": "fr"}))
            .await
            .body["response"],
        "fr"
    );
    let m = app
        .query(
            &t,
            json!({"query": "hello", "model": "gpt-a", "params": {"p": 1, "t": 0.1}}),
        )
        .await;
    assert_eq!(m.body["response"], "m1", "param key order must not matter");
    assert_eq!(
        app.query(&t, json!({"query": "hello", "model": "gpt-b"}))
            .await
            .body["hit"],
        false
    );
    assert_eq!(
        app.query(&t, json!({"query": "hello"})).await.body["hit"],
        false
    );
}

#[tokio::test]
async fn force_refresh_and_freshness_bound_miss() {
    let app = app(&[]);
    let t = admin();
    app.write(&t, json!({"query": "q", "response": 1})).await;
    assert_eq!(
        app.query(&t, json!({"query": "q", "force_refresh": true}))
            .await
            .body["hit"],
        false
    );
    assert_eq!(
        app.query(&t, json!({"query": "q", "ttl": 3600})).await.body["hit"],
        true
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(
        app.query(&t, json!({"query": "q", "ttl": 1})).await.body["hit"],
        false
    );
    assert_eq!(app.query(&t, json!({"query": "q"})).await.body["hit"], true);
}

#[tokio::test]
async fn expired_entries_are_never_served() {
    let app = app(&[]);
    let t = admin();
    app.write(&t, json!({"query": "short", "response": 1, "ttl": 1}))
        .await;
    assert_eq!(
        app.query(&t, json!({"query": "short"})).await.body["hit"],
        true
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(
        app.query(&t, json!({"query": "short"})).await.body["hit"],
        false
    );
}

#[tokio::test]
async fn tenants_never_cross() {
    let app = app(&[]);
    let a = token_for("alice", "tenant-a", "cache:read cache:write cache:admin");
    let b = token_for("bob", "tenant-b", "cache:read cache:write cache:admin");
    app.write(
        &a,
        json!({"query": "shared question", "response": "A's answer"}),
    )
    .await;
    assert_eq!(
        app.query(&b, json!({"query": "shared question"}))
            .await
            .body["hit"],
        false
    );
    app.write(
        &b,
        json!({"query": "shared question", "response": "B's answer"}),
    )
    .await;
    assert_eq!(
        app.query(&a, json!({"query": "shared question"}))
            .await
            .body["response"],
        "A's answer"
    );
    assert_eq!(
        app.query(&b, json!({"query": "shared question"}))
            .await
            .body["response"],
        "B's answer"
    );

    let purge = app.call("DELETE", "/api/cache", Some(&b), None).await;
    assert_eq!(purge.status, StatusCode::OK, "{}", purge.text);
    assert_eq!(purge.body, json!({"success": true, "purged": 1}));
    assert_eq!(
        app.query(&b, json!({"query": "shared question"}))
            .await
            .body["hit"],
        false
    );
    assert_eq!(
        app.query(&a, json!({"query": "shared question"}))
            .await
            .body["hit"],
        true,
        "purge crossed tenants"
    );

    // Tokens without a tenant claim land in the `default` tenant, which is a tenant like any other.
    let none = sign(&json!({"sub": "carol", "scope": "cache:read cache:write", "exp": now() + 60}));
    assert_eq!(
        app.query(&none, json!({"query": "shared question"}))
            .await
            .body["hit"],
        false
    );
}

#[tokio::test]
async fn scopes_are_enforced() {
    let app = app(&[]);
    let reader = token_for("r", "acme", "cache:read");
    let writer = token_for("w", "acme", "cache:write");
    let w = app
        .write(&reader, json!({"query": "q", "response": 1}))
        .await;
    assert_eq!(w.status, StatusCode::FORBIDDEN);
    assert_eq!(error_code(&w), "insufficient_scope");
    let challenge = w.headers["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.contains(r#"error="insufficient_scope""#) && challenge.contains("cache:write"),
        "{challenge}"
    );
    assert_eq!(app.entries().await, 0);

    assert_eq!(
        app.write(&writer, json!({"query": "q", "response": 1}))
            .await
            .status,
        StatusCode::CREATED
    );
    assert_eq!(
        app.query(&writer, json!({"query": "q"})).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.query(&reader, json!({"query": "q"})).await.body["hit"],
        true
    );

    for t in [&reader, &writer] {
        let p = app.call("DELETE", "/api/cache", Some(t), None).await;
        assert_eq!(p.status, StatusCode::FORBIDDEN, "purge needs cache:admin");
    }
    assert_eq!(app.entries().await, 1, "a refused purge removed entries");
}

#[tokio::test]
async fn rate_limit_per_subject_with_ip_fallback() {
    let app = app(&["--rate-limit-max", "3", "--rate-limit-window-ms", "60000"]);
    let alice = token_for("alice", "acme", "cache:read");
    let bob = token_for("bob", "acme", "cache:read");
    for i in 0..3 {
        let r = app.query(&alice, json!({"query": "q"})).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.headers["ratelimit-limit"], "3");
        assert_eq!(
            r.headers["ratelimit-remaining"],
            (2 - i).to_string().as_str()
        );
    }
    let limited = app.query(&alice, json!({"query": "q"})).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(error_code(&limited), "rate_limited");
    let retry: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&retry), "retry-after {retry}");
    assert_eq!(
        app.query(&bob, json!({"query": "q"})).await.status,
        StatusCode::OK,
        "limits are per subject"
    );

    // Requests without a valid token are limited by client address (a fresh app: the first use of
    // alice's and bob's tokens above was charged to the address too, before their signature check).
    let app = crate::common::app(&["--rate-limit-max", "3", "--rate-limit-window-ms", "60000"]);
    for _ in 0..3 {
        assert_eq!(
            app.query("garbage", json!({"query": "q"})).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        app.query("garbage", json!({"query": "q"})).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
}

/// A tenant's quota caps all its subjects together; `RATE_LIMIT_TENANT_QUOTAS` overrides it per
/// tenant; other tenants are untouched; the headers describe whichever limit is nearer.
#[tokio::test]
async fn tenant_quotas_cap_every_subject_of_a_tenant() {
    let app = app(&[
        "--rate-limit-max",
        "10",
        "--rate-limit-window-ms",
        "60000",
        "--rate-limit-tenant-max",
        "4",
        "--rate-limit-tenant-quotas",
        "small=1, big=50",
    ]);
    let ask = |sub: &str, tenant: &str| {
        let (app, token) = (&app, token_for(sub, tenant, "cache:read"));
        async move { app.query(&token, json!({"query": "q"})).await }
    };
    let first = ask("alice", "acme").await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(
        (
            &first.headers["ratelimit-limit"],
            &first.headers["ratelimit-remaining"]
        ),
        (&"4".parse().unwrap(), &"3".parse().unwrap())
    );
    for sub in ["alice", "bob", "carol"] {
        assert_eq!(ask(sub, "acme").await.status, StatusCode::OK);
    }
    let refused = ask("dave", "acme").await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        refused.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tenant")
    );
    assert!(refused.headers.contains_key("retry-after"));
    // Overrides, and other tenants keep their own quota.
    assert_eq!(ask("erin", "small").await.status, StatusCode::OK);
    assert_eq!(
        ask("frank", "small").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    let big = ask("gina", "big").await;
    assert_eq!(
        (
            &big.headers["ratelimit-limit"],
            &big.headers["ratelimit-remaining"]
        ),
        (&"10".parse().unwrap(), &"9".parse().unwrap()),
        "the subject's limit is nearer than the tenant's 50"
    );
    assert_eq!(ask("hana", "other").await.status, StatusCode::OK);
}

/// Bad quota settings are refused at start-up, naming the variable.
#[test]
fn bad_tenant_quotas_are_refused() {
    for spec in ["acme", "acme=0", "acme=x", "bad tenant=3", "acme=1,acme=2"] {
        let err = <resk_server::Cli as clap::Parser>::try_parse_from([
            "resk-server",
            "--jwt-secret",
            crate::common::SECRET,
            "--rate-limit-tenant-quotas",
            spec,
        ])
        .unwrap()
        .serve
        .resolve()
        .unwrap_err();
        assert!(
            err.to_string().contains("RATE_LIMIT_TENANT_QUOTAS"),
            "{spec}: {err}"
        );
    }
}

/// A flood of bad tokens is refused by client address before any signature work: once the address
/// is limited, even a valid token never seen before waits, while a token verified earlier (no
/// signature work) still passes on its subject's own budget.
#[tokio::test]
async fn invalid_token_floods_are_limited_before_signature_work() {
    let app = app(&["--rate-limit-max", "3", "--rate-limit-window-ms", "60000"]);
    let alice = token_for("alice", "acme", "cache:read");
    assert_eq!(
        app.query(&alice, json!({"query": "q"})).await.status,
        StatusCode::OK
    );
    for forged in ["garbage", "a.b.c"] {
        assert_eq!(
            app.query(forged, json!({"query": "q"})).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    let flooded = app.query("garbage", json!({"query": "q"})).await;
    assert_eq!(flooded.status, StatusCode::TOO_MANY_REQUESTS);
    let bob = token_for("bob", "acme", "cache:read");
    assert_eq!(
        app.query(&bob, json!({"query": "q"})).await.status,
        StatusCode::TOO_MANY_REQUESTS,
        "a new token from a flooding address is not verified"
    );
    assert_eq!(
        app.query(&alice, json!({"query": "q"})).await.status,
        StatusCode::OK,
        "a remembered token costs no signature work and keeps its own budget"
    );
}

/// Every answer — public, authenticated, refused, unknown — carries the security headers.
#[tokio::test]
async fn security_headers_on_every_answer() {
    let app = app(&[]);
    let token = admin();
    let replies = [
        app.call("GET", "/health", None, None).await,
        app.query(&token, json!({"query": "q"})).await,
        app.query("garbage", json!({"query": "q"})).await,
        app.call("GET", "/api/nope", Some(&token), None).await,
    ];
    for r in &replies {
        for (name, value) in [
            ("x-content-type-options", "nosniff"),
            ("referrer-policy", "no-referrer"),
            (
                "content-security-policy",
                "default-src 'none'; frame-ancestors 'none'",
            ),
            ("x-frame-options", "DENY"),
            ("cross-origin-opener-policy", "same-origin"),
            ("cross-origin-resource-policy", "same-origin"),
            ("cache-control", "no-store"),
        ] {
            assert_eq!(r.headers[name], value, "{name} on {}: {}", r.status, r.text);
        }
    }
}

/// CORS: only the configured origins get `Access-Control-Allow-Origin`, preflights are answered
/// without a token, credentials are never allowed; without configuration no origin is allowed.
#[tokio::test]
async fn cors_allows_only_configured_origins() {
    let preflight = |origin: &str| {
        axum::http::Request::builder()
            .method("OPTIONS")
            .uri("/api/cache/query")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .body(axum::body::Body::empty())
            .unwrap()
    };
    let app = app(&[
        "--cors-allowed-origins",
        "https://app.example,https://admin.example:8443",
    ]);
    let ok = app.send(preflight("https://app.example")).await;
    assert!(ok.status.is_success(), "{}", ok.status);
    assert_eq!(
        ok.headers["access-control-allow-origin"],
        "https://app.example"
    );
    let allowed = ok.headers["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        allowed.contains("authorization") && allowed.contains("content-type"),
        "{allowed}"
    );
    assert!(ok.headers.get("access-control-allow-credentials").is_none());
    let evil = app.send(preflight("https://evil.example")).await;
    assert!(evil.headers.get("access-control-allow-origin").is_none());
    let r = app
        .send(
            axum::http::Request::builder()
                .method("POST")
                .uri("/api/cache/query")
                .header("origin", "https://admin.example:8443")
                .header("authorization", format!("Bearer {}", admin()))
                .header("content-type", "application/json")
                .body(axum::body::Body::from(r#"{"query":"q"}"#))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.headers["access-control-allow-origin"],
        "https://admin.example:8443"
    );
    assert!(
        r.headers["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("ratelimit-remaining")
    );

    let closed = crate::common::app(&[]);
    let r = closed.send(preflight("https://app.example")).await;
    assert!(r.headers.get("access-control-allow-origin").is_none());

    for bad in ["*", "app.example", "https://app.example/path"] {
        let err = <resk_server::Cli as clap::Parser>::try_parse_from([
            "resk-server",
            "--jwt-secret",
            SECRET,
            "--cors-allowed-origins",
            bad,
        ])
        .unwrap()
        .serve
        .resolve()
        .unwrap_err();
        assert!(
            err.message().contains("CORS_ALLOWED_ORIGINS"),
            "{bad}: {err}"
        );
    }
}

#[tokio::test]
async fn correlation_ids_are_echoed_or_generated() {
    let app = app(&[]);
    let req = |id: Option<&str>| {
        let mut b = axum::http::Request::builder().uri("/health");
        if let Some(id) = id {
            b = b.header("x-correlation-id", id);
        }
        b.body(axum::body::Body::empty()).unwrap()
    };
    let echoed = app.send(req(Some("req-42.abc"))).await;
    assert_eq!(echoed.headers["x-correlation-id"], "req-42.abc");
    let replaced = app.send(req(Some("bad id with spaces"))).await;
    let generated = replaced.headers["x-correlation-id"].to_str().unwrap();
    assert_ne!(generated, "bad id with spaces");
    assert_eq!(
        uuid::Uuid::parse_str(generated).unwrap().get_version_num(),
        4
    );
    // Errors carry one too.
    let err = app
        .call(
            "POST",
            "/api/cache/query",
            None,
            Some(&json!({"query": "q"})),
        )
        .await;
    assert!(err.headers.contains_key("x-correlation-id"));
}

#[tokio::test]
async fn health_ready_and_unknown_routes() {
    let app = app(&[]);
    let h = app.call("GET", "/health", None, None).await;
    assert_eq!(
        (h.status, h.body.clone()),
        (StatusCode::OK, json!({"status": "ok"}))
    );
    let r = app.call("GET", "/ready", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.body,
        json!({"status": "ready", "checks": {"memory": "ok"}})
    );
    let nf = app.call("GET", "/nope", None, None).await;
    assert_eq!(nf.status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&nf), "not_found");
    // Unknown API paths need a token first: probing them reveals nothing without one.
    let probe = app.call("GET", "/api/admin/secret", None, None).await;
    assert_eq!(probe.status, StatusCode::UNAUTHORIZED);
    let known = app
        .call("GET", "/api/admin/secret", Some(&admin()), None)
        .await;
    assert_eq!(known.status, StatusCode::NOT_FOUND);
    let na = app.call("PUT", "/api/cache", Some(&admin()), None).await;
    assert_eq!(na.status, StatusCode::METHOD_NOT_ALLOWED, "{}", na.text);
    assert_eq!(error_code(&na), "method_not_allowed");
    app.ping().await;
}

#[tokio::test]
async fn encryption_at_rest_and_no_plaintext_downgrade() {
    let key = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";
    let app = app(&["--cache-encryption-key", key]);
    let t = admin();
    app.write(
        &t,
        json!({"query": "What is the launch code?", "response": "swordfish-7781"}),
    )
    .await;
    // The raw store holds ciphertext only.
    let k = app.config.store.keys.key(
        &resk_core::TenantId::new("acme").unwrap(),
        &resk_core::KeyInput {
            query: "What is the launch code?",
            ..Default::default()
        },
    );
    let raw = resk_core::CacheStore::get(&app.store, &k)
        .await
        .unwrap()
        .unwrap()
        .bytes;
    let raw_text = String::from_utf8_lossy(&raw);
    assert!(
        !raw_text.contains("swordfish") && !raw_text.contains("launch"),
        "plaintext at rest"
    );
    assert_eq!(
        app.query(&t, json!({"query": "what is the launch code?"}))
            .await
            .body["response"],
        "swordfish-7781"
    );

    // Plant a well-formed plaintext entry under the right key: it must not be served.
    let entry = resk_core::CacheEntry::new(
        resk_core::TenantId::new("acme").unwrap(),
        "What is the launch code?".into(),
        resk_core::CacheEntry::raw(&json!("planted")).unwrap(),
        std::time::Duration::from_secs(60),
        resk_core::Origin {
            source: "attacker".into(),
            subject: None,
        },
    )
    .unwrap();
    resk_core::CacheStore::set(
        &app.store,
        &k,
        entry.to_bytes().unwrap().into(),
        resk_core::SetOptions::default(),
    )
    .await
    .unwrap();
    let q = app
        .query(&t, json!({"query": "What is the launch code?"}))
        .await;
    assert_eq!(q.body["hit"], false, "plaintext downgrade: {}", q.text);
}

#[tokio::test]
async fn metrics_parse_and_labels_are_bounded() {
    let app = app(&[]);
    let t = admin();
    let secret_query = "my-very-private-question-7f3a";
    app.write(&t, json!({"query": secret_query, "response": 1}))
        .await;
    app.query(&t, json!({"query": secret_query})).await;
    app.query(&t, json!({"query": "unrelated"})).await;
    app.call("GET", "/some/random/path/9a8b7c", None, None)
        .await;
    let m = app.call("GET", "/api/metrics", None, None).await;
    assert_eq!(m.status, StatusCode::OK);
    assert!(
        m.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert!(!m.text.contains(secret_query), "query text in metrics");
    assert!(!m.text.contains("9a8b7c"), "raw path in metrics");
    let lines = m.text.lines().map(|l| Ok(l.to_owned()));
    let scrape =
        prometheus_parse::Scrape::parse(lines).expect("Prometheus parser rejects the exposition");
    let routes: std::collections::BTreeSet<String> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "resk_http_requests_total")
        .filter_map(|s| s.labels.get("route").map(str::to_owned))
        .collect();
    for route in &routes {
        assert!(
            [
                "/api/cache",
                "/api/cache/query",
                "/api/metrics",
                "/health",
                "/ready",
                "/api/openapi.json",
                // Other tests of this binary (the metrics registry is the process's).
                "/api/admin/overview",
                "/api/admin/decisions",
                "/api/admin/entries",
                "/api/admin/health",
                "/api/cache/feedback",
                "/api/cache/{key}",
                "/console",
                "/console/",
                "/console/{*file}",
                "unmatched"
            ]
            .contains(&route.as_str()),
            "unbounded route label {route}"
        );
    }
    assert!(routes.contains("unmatched"));
    assert!(
        scrape.samples.iter().any(
            |s| s.metric == "resk_cache_lookups_total" && s.labels.get("result") == Some("hit")
        )
    );
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric.starts_with("resk_layer_duration_seconds"))
    );
}

#[tokio::test]
async fn openapi_is_3_1_and_matches_the_types() {
    let app = app(&[]);
    let r = app.call("GET", "/api/openapi.json", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let doc = r.body;
    assert_eq!(doc["openapi"], "3.1.0");
    for (path, method) in [
        ("/api/cache", "post"),
        ("/api/cache", "delete"),
        ("/api/cache/query", "post"),
        ("/health", "get"),
        ("/ready", "get"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing"
        );
    }
    let write = &doc["paths"]["/api/cache"]["post"];
    assert!(write["responses"]["201"].is_object());
    assert!(write["responses"]["415"].is_object());
    assert_eq!(write["security"], json!([{"bearer": ["cache:write"]}]));
    let schemas = &doc["components"]["schemas"];
    let req = &schemas["WriteRequest"];
    assert_eq!(
        req["additionalProperties"], false,
        "unknown fields are rejected, so the spec says so"
    );
    let required: Vec<&str> = req["required"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        required.contains(&"query") && required.contains(&"response"),
        "{required:?}"
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    // A field left out of an answer when empty is not required by the schema.
    let query_required: Vec<&str> = schemas["QueryResponse"]["required"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(query_required, ["hit", "latency_ms"], "{query_required:?}");
    assert!(doc["paths"]["/api/cache/feedback"]["post"].is_object());
}

/// With CACHE_TTL_JITTER_PERCENT, TTLs written together spread below the one asked for, never above.
#[tokio::test]
async fn ttl_jitter_spreads_expiries_below_the_requested_ttl() {
    let app = app(&["--cache-ttl-jitter-percent", "20"]);
    let mut ttls = std::collections::HashSet::new();
    for i in 0..40 {
        let w = app
            .write(
                &admin(),
                json!({"query": format!("jitter {i}"), "response": i, "ttl": 1000}),
            )
            .await;
        assert_eq!(w.status, StatusCode::CREATED);
        let ttl = w.body["ttl"].as_u64().unwrap();
        assert!((800..=1000).contains(&ttl), "ttl {ttl}");
        ttls.insert(ttl);
    }
    assert!(ttls.len() > 5, "not spread: {ttls:?}");
    let exact = crate::common::app(&[]);
    let w = exact
        .write(
            &admin(),
            json!({"query": "exact", "response": 1, "ttl": 1000}),
        )
        .await;
    assert_eq!(w.body["ttl"], 1000, "no jitter by default");
    let refused = <resk_server::Cli as clap::Parser>::try_parse_from([
        "resk-server",
        "--jwt-secret",
        crate::common::SECRET,
        "--cache-ttl-jitter-percent",
        "60",
    ]);
    assert!(refused.is_err(), "more than 50 % is refused");
}

/// Stale-while-revalidate: past its TTL, an entry written with `stale_ttl` is still served during
/// the grace period, flagged `stale: true` (unless the caller says `allow_stale: false`); without a
/// grace period it is a miss. Bad grace periods are refused and write nothing.
#[tokio::test]
async fn stale_while_revalidate_serves_flagged_answers_in_the_grace_period() {
    let app = app(&[]);
    let t = admin();
    let w = app
        .write(
            &t,
            json!({"query": "swr question", "response": "old answer", "ttl": 1, "stale_ttl": 60}),
        )
        .await;
    assert_eq!(w.status, StatusCode::CREATED, "{}", w.text);
    assert!(w.body["stale_until"].is_string(), "{}", w.text);
    let w = app
        .write(&t, json!({"query": "no grace", "response": "x", "ttl": 1}))
        .await;
    assert_eq!(w.status, StatusCode::CREATED, "{}", w.text);
    assert!(w.body.get("stale_until").is_none(), "{}", w.text);

    let fresh = app.query(&t, json!({"query": "swr question"})).await;
    assert_eq!(fresh.body["hit"], true, "{}", fresh.text);
    assert!(fresh.body.get("stale").is_none(), "{}", fresh.text);

    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let stale = app.query(&t, json!({"query": "swr question"})).await;
    assert_eq!(
        (
            stale.body["hit"].clone(),
            stale.body["stale"].clone(),
            stale.body["response"].clone()
        ),
        (json!(true), json!(true), json!("old answer")),
        "{}",
        stale.text
    );
    let strict = app
        .query(&t, json!({"query": "swr question", "allow_stale": false}))
        .await;
    assert_eq!(strict.body["hit"], false, "{}", strict.text);
    let gone = app.query(&t, json!({"query": "no grace"})).await;
    assert_eq!(gone.body["hit"], false, "{}", gone.text);

    let before = app.entries().await;
    for (body, code) in [
        (
            json!({"query": "q2", "response": 1, "stale_ttl": 604_801}),
            "invalid_stale_ttl",
        ),
        (
            json!({"query": "q2", "response": 1, "stale_ttl": -1}),
            "invalid_body",
        ),
        (
            json!({"query": "q2", "response": 1, "stale_ttl": 1.5}),
            "invalid_body",
        ),
    ] {
        let r = app.write(&t, body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text);
        assert_eq!(error_code(&r), code, "{body}: {}", r.text);
    }
    let r = app
        .query(&t, json!({"query": "swr question", "allow_stale": "yes"}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(
        app.entries().await,
        before,
        "a refused write stores nothing"
    );
}
