//! The operator's API (`/api/admin/*`) and the console's files: figures move with traffic, the
//! decisions carry feedback, entries page and delete, every view is the caller's tenant only, and
//! bad parameters are JSON 400s.

use serde_json::{Value, json};

use crate::common::*;

fn ops(tenant: &str) -> String {
    token_for("ops", tenant, "cache:read cache:write cache:admin")
}

async fn get(app: &TestApp, path: &str, token: &str) -> Reply {
    app.call("GET", path, Some(token), None).await
}

#[tokio::test]
async fn overview_counts_hits_by_source_misses_and_latency() {
    let app = semantic_app(&[]).await;
    let t = ops("acme");
    let before = get(&app, "/api/admin/overview", &t).await;
    assert_eq!(before.status, 200, "{}", before.text);
    assert_eq!(before.body["tenant"], "acme");
    assert_eq!(before.body["minutes"].as_array().unwrap().len(), 60);
    assert_eq!(before.body["total"]["lookups"], 0);
    assert_eq!(before.body["gateway"], Value::Null);

    write_ok(
        &app,
        json!({"query": "How do I reset my password?", "response": "Use the link."}),
    )
    .await;
    for _ in 0..3 {
        assert_eq!(
            query_ok(&app, json!({"query": "How do I reset my password?"})).await["hit"],
            true
        );
    }
    assert_eq!(
        query_ok(&app, json!({"query": "how can I reset my password"})).await["source"],
        "semantic"
    );
    assert_eq!(
        query_ok(&app, json!({"query": "What is the capital of Peru?"})).await["hit"],
        false
    );
    // Another tenant's traffic is not this one's.
    app.query(&ops("other"), json!({"query": "anything"})).await;

    let after = get(&app, "/api/admin/overview", &t).await.body;
    let total = &after["total"];
    assert_eq!(total["lookups"], 5, "{total}");
    assert_eq!(total["hits"]["memory"], 3);
    assert_eq!(total["hits"]["semantic"], 1);
    assert_eq!(total["misses"], 1);
    assert_eq!(total["errors"], 0);
    assert!(total["tokens_saved"].as_u64().unwrap() > 0);
    let p50 = total["latency_ms"]["p50"].as_f64().unwrap();
    let p99 = total["latency_ms"]["p99"].as_f64().unwrap();
    assert!(p50 > 0.0 && p50 <= p99, "{p50} {p99}");
    let current = after["minutes"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(current["lookups"], 5, "the current minute is the last");
    let other = get(&app, "/api/admin/overview", &ops("other")).await.body;
    assert_eq!(other["total"]["lookups"], 1);
}

#[tokio::test]
async fn decisions_record_the_verdict_and_the_feedback_made_on_it() {
    let app = semantic_app(&[]).await;
    let t = ops("acme");
    let w = write_ok(
        &app,
        json!({"query": "How do I reset my password?", "response": "Use the link."}),
    )
    .await;
    let hit = query_ok(&app, json!({"query": "how can I reset my password"})).await;
    assert_eq!(hit["source"], "semantic");
    // An exact hit is not a semantic decision.
    query_ok(&app, json!({"query": "How do I reset my password?"})).await;

    let d = get(&app, "/api/admin/decisions", &t).await;
    assert_eq!(d.status, 200, "{}", d.text);
    assert_eq!(d.body["query_text"], false);
    let list = d.body["decisions"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    let one = &list[0];
    assert_eq!(one["verdict"], "accept");
    assert_eq!(one["entry"], w["key"]);
    assert_eq!(one["hit_id"], hit["hit_id"]);
    assert_eq!(one["query"], Value::Null, "no text without LOG_QUERY_TEXT");
    assert_eq!(one["matched_query"], Value::Null);
    assert_eq!(one["query_hash"].as_str().unwrap().len(), 32);
    assert!(
        (one["similarity"].as_f64().unwrap() - hit["similarity"].as_f64().unwrap()).abs() < 1e-6
    );
    assert_eq!(one["reported"], Value::Null);

    let r = app
        .call(
            "POST",
            "/api/cache/feedback",
            Some(&t),
            Some(&json!({"hit_id": hit["hit_id"], "correct": false})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let d = get(&app, "/api/admin/decisions?limit=5", &t).await.body;
    let reported = &d["decisions"][0]["reported"];
    assert_eq!(reported["correct"], false, "{d}");
    assert_eq!(reported["wrong"], 1);
    // Its effect: the question reported wrong is no longer answered by that entry, and that
    // refusal is a decision of its own.
    let again = query_ok(&app, json!({"query": "how can I reset my password"})).await;
    assert_eq!(again["hit"], false, "{again}");
    let d = get(&app, "/api/admin/decisions", &t).await.body;
    assert_eq!(d["decisions"][0]["verdict"], "reject", "{d}");

    // Another tenant sees none of it.
    let other = get(&app, "/api/admin/decisions", &ops("other")).await.body;
    assert_eq!(other["decisions"], json!([]));
}

#[tokio::test]
async fn decisions_show_text_only_with_log_query_text() {
    let app = semantic_app(&["--log-query-text", "true"]).await;
    write_ok(
        &app,
        json!({"query": "How do I reset my password?", "response": 1}),
    )
    .await;
    query_ok(&app, json!({"query": "how can I reset my password"})).await;
    let d = get(&app, "/api/admin/decisions", &ops("acme")).await.body;
    assert_eq!(d["query_text"], true);
    assert_eq!(d["decisions"][0]["query"], "how can I reset my password");
    assert_eq!(
        d["decisions"][0]["matched_query"],
        "How do I reset my password?"
    );
    let e = get(&app, "/api/admin/entries?q=reset", &ops("acme"))
        .await
        .body;
    assert_eq!(
        e["entries"][0]["query"], "How do I reset my password?",
        "{e}"
    );
}

#[tokio::test]
async fn entries_page_search_and_admins_delete_any_entry_of_their_tenant() {
    let app = app(&[]);
    let t = ops("acme");
    let mut keys = Vec::new();
    for i in 0..7 {
        keys.push(
            write_ok(
                &app,
                json!({"query": format!("question {i}"), "response": i}),
            )
            .await["key"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    // Bob's private entry.
    let bob = token_for("bob", "acme", "cache:read cache:write");
    let private = app
        .write(
            &bob,
            json!({"query": "bob's", "response": 1, "visibility": "user"}),
        )
        .await
        .body["key"]
        .as_str()
        .unwrap()
        .to_owned();
    app.write(&ops("other"), json!({"query": "elsewhere", "response": 1}))
        .await;

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/admin/entries?limit=3&cursor={c}"),
            None => "/api/admin/entries?limit=3".to_owned(),
        };
        let page = get(&app, &path, &t).await;
        assert_eq!(page.status, 200, "{}", page.text);
        for e in page.body["entries"].as_array().unwrap() {
            assert_eq!(e["query"], Value::Null, "no text without LOG_QUERY_TEXT");
            assert!(e["size"].as_u64().unwrap() > 0);
            seen.push(e.clone());
        }
        match page.body["next"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 8, "7 + bob's, not the other tenant's: {seen:?}");
    let bobs = seen.iter().find(|e| e["key"] == private.as_str()).unwrap();
    assert_eq!(bobs["visibility"], "user");
    assert_eq!(bobs["owner"], "bob");
    assert_eq!(bobs["written_by"], "bob");
    assert_eq!(bobs["origin"], "api");

    // Search by subject, and by key prefix.
    let found = get(&app, "/api/admin/entries?q=bob", &t).await.body;
    assert_eq!(found["entries"].as_array().unwrap().len(), 1, "{found}");
    let prefix = &keys[3][..10];
    let found = get(&app, &format!("/api/admin/entries?q={prefix}"), &t)
        .await
        .body;
    assert_eq!(found["entries"][0]["key"], keys[3].as_str());

    // The admin deletes bob's private entry; bob himself could, a third subject could not.
    let carol = token_for("carol", "acme", "cache:read cache:write");
    let r = app
        .call(
            "DELETE",
            &format!("/api/cache/{private}"),
            Some(&carol),
            None,
        )
        .await;
    assert_eq!(r.body["deleted"], false);
    let r = app
        .call("DELETE", &format!("/api/cache/{private}"), Some(&t), None)
        .await;
    assert_eq!(r.body["deleted"], true, "{}", r.text);
    let found = get(&app, "/api/admin/entries?q=bob", &t).await.body;
    assert_eq!(found["entries"], json!([]));
    // Another tenant's admin does not reach acme's entries.
    let r = app
        .call(
            "DELETE",
            &format!("/api/cache/{}", keys[0]),
            Some(&ops("other")),
            None,
        )
        .await;
    assert_eq!(r.body["deleted"], false);
    let theirs = get(&app, "/api/admin/entries", &ops("other")).await.body;
    assert_eq!(theirs["entries"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn health_names_checks_breakers_build_and_no_secret() {
    let key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    let app = app(&["--cache-encryption-key", key]);
    let h = get(&app, "/api/admin/health", &ops("acme")).await;
    assert_eq!(h.status, 200, "{}", h.text);
    assert_eq!(h.body["status"], "ready");
    assert_eq!(h.body["checks"][0]["ok"], true);
    assert_eq!(h.body["build"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(h.body["config"]["encryption_at_rest"], true);
    assert!(h.body["breakers"].is_array());
    for secret in [SECRET, key] {
        assert!(!h.text.contains(secret), "the health answer leaks a secret");
    }
    // With semantic search, the vector store is probed too.
    let app = semantic_app(&[]).await;
    let h = get(&app, "/api/admin/health", &ops("acme")).await.body;
    let checks = h["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 2, "{h}");
    assert_eq!(checks[1]["name"], "vector store (embedded)");
    assert_eq!(checks[1]["ok"], true);
    assert!(h["config"]["semantic"]["embedder"].is_string());
}

#[tokio::test]
async fn the_operators_api_needs_cache_admin_and_refuses_bad_parameters() {
    let app = app(&[]);
    for path in [
        "/api/admin/overview",
        "/api/admin/decisions",
        "/api/admin/entries",
        "/api/admin/health",
    ] {
        let r = app.call("GET", path, None, None).await;
        assert_eq!(r.status, 401, "{path}");
        assert_eq!(error_code(&r), "unauthorized", "{path}: {}", r.text);
        let r = get(
            &app,
            path,
            &token_for("a", "acme", "cache:read cache:write"),
        )
        .await;
        assert_eq!(r.status, 403, "{path}");
        assert_eq!(error_code(&r), "insufficient_scope", "{path}");
    }
    let t = ops("acme");
    for (path, code) in [
        ("/api/admin/decisions?limit=0", "invalid_limit"),
        ("/api/admin/decisions?limit=201", "invalid_limit"),
        ("/api/admin/decisions?limit=ten", "invalid_query_params"),
        ("/api/admin/decisions?other=1", "invalid_query_params"),
        ("/api/admin/entries?limit=101", "invalid_limit"),
        ("/api/admin/entries?cursor=", "invalid_cursor"),
        ("/api/admin/entries?bogus=", "invalid_query_params"),
    ] {
        let r = get(&app, path, &t).await;
        assert_eq!(r.status, 400, "{path}: {}", r.text);
        assert_eq!(error_code(&r), code, "{path}: {}", r.text);
    }
    let long = "x".repeat(201);
    let r = get(&app, &format!("/api/admin/entries?q={long}"), &t).await;
    assert_eq!(error_code(&r), "invalid_q");
}

#[tokio::test]
async fn the_console_is_served_with_a_strict_policy_and_can_be_turned_off() {
    let app = app(&[]);
    for (path, kind) in [
        ("/console", "text/html"),
        ("/console/", "text/html"),
        ("/console/app.js", "text/javascript"),
        ("/console/app.css", "text/css"),
        ("/console/vendor/uPlot.iife.min.js", "text/javascript"),
    ] {
        let r = app.call("GET", path, None, None).await;
        assert_eq!(r.status, 200, "{path}");
        let ct = r.headers["content-type"].to_str().unwrap();
        assert!(ct.starts_with(kind), "{path}: {ct}");
        let csp = r.headers["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe"),
            "{csp}"
        );
        assert_eq!(r.headers["x-frame-options"], "DENY");
        assert_eq!(r.headers["x-content-type-options"], "nosniff");
    }
    // Revalidation: the same bytes answer 304 to their entity tag, and the policy still applies.
    let first = app.call("GET", "/console/app.js", None, None).await;
    let etag = first.headers["etag"].to_str().unwrap().to_owned();
    let req = axum::http::Request::builder()
        .uri("/console/app.js")
        .header("if-none-match", &etag)
        .body(axum::body::Body::empty())
        .unwrap();
    let again = app.send(req).await;
    assert_eq!(again.status, 304);
    assert!(again.text.is_empty());
    assert_eq!(again.headers["etag"], etag.as_str());
    assert!(again.headers.contains_key("content-security-policy"));
    let req = axum::http::Request::builder()
        .uri("/console/app.js")
        .header("if-none-match", "\"something-else\"")
        .body(axum::body::Body::empty())
        .unwrap();
    assert_eq!(app.send(req).await.status, 200);
    // The page carries no inline script or style.
    let page = app.call("GET", "/console", None, None).await.text;
    assert!(
        !page.contains("<script>") && !page.contains("style="),
        "inline code in the page"
    );
    let r = app.call("GET", "/console/../Cargo.toml", None, None).await;
    assert_eq!(r.status, 404);
    let r = app.call("GET", "/console/nothing.js", None, None).await;
    assert_eq!(r.status, 404);
    assert_eq!(error_code(&r), "not_found");

    let off = crate::common::app(&["--console-enabled", "false"]);
    assert_eq!(off.call("GET", "/console", None, None).await.status, 404);
    assert!(resk_server::console::weight() > 50_000);
}
