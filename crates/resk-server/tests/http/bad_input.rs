//! Every client mistake gets a structured 4xx, never a panic or 5xx, and writes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::*;
use axum::http::StatusCode;
use serde_json::json;

async fn expect(app: &TestApp, reply: Reply, status: StatusCode, code: &str) {
    assert_eq!(reply.status, status, "{}", reply.text);
    assert_eq!(error_code(&reply), code, "{}", reply.text);
    assert_eq!(app.entries().await, 0, "a rejected request wrote an entry");
}

/// serde would read a struct from a JSON array; the API takes objects only.
#[tokio::test]
async fn bodies_must_be_objects() {
    let app = app(&[]);
    let t = admin();
    for (path, body) in [
        ("/api/cache", r#"["q", 1]"#),
        ("/api/cache/query", r#"["q"]"#),
        ("/api/auth/revoke", "[null, null]"),
        ("/api/cache", "42"),
        ("/api/cache", r#""text""#),
    ] {
        let r = app
            .raw("POST", path, &t, Some("application/json"), body.to_owned())
            .await;
        expect(&app, r, StatusCode::BAD_REQUEST, "invalid_body").await;
    }
}

/// JSON Schema counts `30.0` as an integer: whole-number floats are accepted where integers are
/// expected; fractions and negatives are not.
#[tokio::test]
async fn whole_number_floats_count_as_integers() {
    let app = app(&[]);
    let t = admin();
    let r = app
        .write(&t, json!({"query": "q", "response": 1, "ttl": 60.0}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["ttl"], 60);
    // Past u64: saturates (a freshness bound that long is no bound).
    let r = app
        .query(
            &t,
            json!({"query": "q", "ttl": 121_435_686_343_004_454_912_f64}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["hit"], true);
    for ttl in [json!(60.5), json!(-1), json!(-0.5)] {
        let r = app.query(&t, json!({"query": "q", "ttl": ttl})).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{ttl}: {}", r.text);
        assert_eq!(error_code(&r), "invalid_body");
    }
}

#[tokio::test]
async fn malformed_json() {
    let app = app(&[]);
    let t = admin();
    for body in [
        r#"{"query": "q", "response": "#,
        r#"{"query": "q" "response": 1}"#,
        "",
        "   ",
        r#"{'query': 'q'}"#,
    ] {
        let r = app
            .raw(
                "POST",
                "/api/cache",
                &t,
                Some("application/json"),
                body.to_owned(),
            )
            .await;
        expect(&app, r, StatusCode::BAD_REQUEST, "invalid_json").await;
    }
    let trailing = app
        .raw(
            "POST",
            "/api/cache",
            &t,
            Some("application/json"),
            r#"{"query":"q","response":1} xyz"#.to_owned(),
        )
        .await;
    expect(&app, trailing, StatusCode::BAD_REQUEST, "invalid_json").await;
    let not_utf8 = app
        .raw(
            "POST",
            "/api/cache",
            &t,
            Some("application/json"),
            vec![0xff, 0xfe, b'{'],
        )
        .await;
    assert_eq!(not_utf8.status, StatusCode::BAD_REQUEST);
    let deep = format!(
        "{{\"query\":\"q\",\"response\":{}{}}}",
        "[".repeat(500),
        "]".repeat(500)
    );
    let r = app
        .raw("POST", "/api/cache", &t, Some("application/json"), deep)
        .await;
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "deeply nested JSON: {}",
        r.text
    );
    assert_eq!(app.entries().await, 0);
}

#[tokio::test]
async fn wrong_types_missing_and_unknown_fields() {
    let app = app(&[]);
    let t = admin();
    for (body, path) in [
        (json!({"query": 5, "response": 1}), "query"),
        (json!({"query": "q", "response": 1, "ttl": "60"}), "ttl"),
        (json!({"query": "q", "response": 1, "ttl": 1.5}), "ttl"),
        (json!({"query": "q", "response": 1, "ttl": -1}), "ttl"),
        (
            json!({"query": "q", "response": 1, "params": [1, 2]}),
            "params",
        ),
        (json!({"query": ["q"], "response": 1}), "query"),
    ] {
        let r = app.write(&t, body.clone()).await;
        assert_eq!(
            r.body["error"]["details"]["path"], path,
            "{body}: {}",
            r.text
        );
        expect(&app, r, StatusCode::BAD_REQUEST, "invalid_body").await;
    }
    for body in [
        json!({"response": 1}),
        json!({"query": "q"}),
        json!({"query": "q", "response": 1, "unexpected": true}),
        json!([1, 2, 3]),
        json!("just a string"),
    ] {
        let r = app.write(&t, body.clone()).await;
        expect(&app, r, StatusCode::BAD_REQUEST, "invalid_body").await;
    }
    let q = app.query(&t, json!({"query": "q", "extra": 1})).await;
    expect(&app, q, StatusCode::BAD_REQUEST, "invalid_body").await;
    let q = app
        .query(&t, json!({"query": "q", "force_refresh": "yes"}))
        .await;
    expect(&app, q, StatusCode::BAD_REQUEST, "invalid_body").await;
}

#[tokio::test]
async fn empty_and_over_long_queries() {
    let app = app(&[]);
    let t = admin();
    for query in ["", "   ", "\n\t"] {
        let r = app.write(&t, json!({"query": query, "response": 1})).await;
        expect(&app, r, StatusCode::BAD_REQUEST, "invalid_query").await;
        let r = app.query(&t, json!({"query": query})).await;
        expect(&app, r, StatusCode::BAD_REQUEST, "invalid_query").await;
    }
    // Characters, not bytes: 10 001 two-byte characters is over, 10 000 is fine.
    let over = "é".repeat(10_001);
    let r = app.write(&t, json!({"query": over, "response": 1})).await;
    expect(&app, r, StatusCode::BAD_REQUEST, "invalid_query").await;
    let r = app.query(&t, json!({"query": "x".repeat(10_001)})).await;
    expect(&app, r, StatusCode::BAD_REQUEST, "invalid_query").await;
    let at_limit = app
        .write(&t, json!({"query": "é".repeat(10_000), "response": 1}))
        .await;
    assert_eq!(at_limit.status, StatusCode::CREATED, "{}", at_limit.text);

    let small = crate::common::app(&["--max-query-chars", "10"]);
    let r = small
        .write(&t, json!({"query": "eleven char", "response": 1}))
        .await;
    expect(&small, r, StatusCode::BAD_REQUEST, "invalid_query").await;
}

/// The longest TTL and grace period the server accepts (100 years each) are stored and served,
/// never a panic from date arithmetic; one second more is a 400.
#[tokio::test]
async fn the_longest_ttl_is_served_and_one_more_is_refused() {
    let longest = resk_core::TtlPolicy::LONGEST.as_secs();
    let app = app(&["--cache-max-ttl-secs", &longest.to_string()]);
    let t = admin();
    let r = app
        .write(
            &t,
            json!({"query": "forever", "response": 1, "ttl": longest, "stale_ttl": longest}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = app.query(&t, json!({"query": "forever"})).await;
    assert_eq!(r.body["hit"], true, "{}", r.text);
    for body in [
        json!({"query": "q", "response": 1, "ttl": longest + 1}),
        json!({"query": "q", "response": 1, "stale_ttl": longest + 1}),
    ] {
        let r = app.write(&t, body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    }
}

#[test]
fn a_maximum_ttl_past_100_years_stops_the_start() {
    for max in [u64::MAX, resk_core::TtlPolicy::LONGEST.as_secs() + 1] {
        let err =
            crate::common::config_result(&["--cache-max-ttl-secs", &max.to_string()]).unwrap_err();
        assert!(
            err.contains("CACHE_MAX_TTL_SECS must be at most 3153600000"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn ttl_out_of_range() {
    let app = app(&[
        "--cache-max-ttl-secs",
        "600",
        "--cache-default-ttl-secs",
        "60",
    ]);
    let t = admin();
    for ttl in [0u64, 601, u64::MAX] {
        let r = app
            .write(&t, json!({"query": "q", "response": 1, "ttl": ttl}))
            .await;
        expect(&app, r, StatusCode::BAD_REQUEST, "invalid_ttl").await;
    }
    let r = app.query(&t, json!({"query": "q", "ttl": 0})).await;
    expect(&app, r, StatusCode::BAD_REQUEST, "invalid_ttl").await;
    assert_eq!(
        app.write(&t, json!({"query": "q", "response": 1, "ttl": 600}))
            .await
            .status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn bad_scope_fields_and_null_response() {
    let app = app(&[]);
    let t = admin();
    let r = app.write(&t, json!({"query": "q", "response": null})).await;
    expect(&app, r, StatusCode::BAD_REQUEST, "invalid_response").await;
    for language in ["", "en US", "x".repeat(36).as_str(), "en_US;drop"] {
        let r = app
            .write(
                &t,
                json!({"query": "q", "response": 1, "language": language}),
            )
            .await;
        expect(&app, r, StatusCode::BAD_REQUEST, "invalid_language").await;
    }
    for model in ["", "   ", &"m".repeat(257)] {
        let r = app
            .write(&t, json!({"query": "q", "response": 1, "model": model}))
            .await;
        expect(&app, r, StatusCode::BAD_REQUEST, "invalid_model").await;
    }
}

#[tokio::test]
async fn body_over_the_limit_is_413() {
    let app = app(&[]);
    let t = admin();
    let big = json!({"query": "q", "response": "x".repeat(1024 * 1024)}).to_string();
    let r = app
        .raw(
            "POST",
            "/api/cache",
            &t,
            Some("application/json"),
            big.clone(),
        )
        .await;
    expect(&app, r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;

    // Without a Content-Length (streamed body) the limit holds too.
    let chunks: Vec<Result<String, std::io::Error>> = big
        .as_bytes()
        .chunks(64 * 1024)
        .map(|c| Ok(String::from_utf8_lossy(c).into_owned()))
        .collect();
    let body = axum::body::Body::from_stream(futures_util::stream::iter(chunks));
    let r = app
        .raw("POST", "/api/cache", &t, Some("application/json"), body)
        .await;
    expect(&app, r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;

    let small = crate::common::app(&["--max-body-bytes", "2048"]);
    let r = small
        .write(&t, json!({"query": "q", "response": "y".repeat(3000)}))
        .await;
    expect(
        &small,
        r,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;
}

#[tokio::test]
async fn wrong_or_missing_content_type_is_415() {
    let app = app(&[]);
    let t = admin();
    let body = json!({"query": "q", "response": 1}).to_string();
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let r = app.raw("POST", "/api/cache", &t, ct, body.clone()).await;
        expect(
            &app,
            r,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        )
        .await;
    }
    let ok = app
        .raw(
            "POST",
            "/api/cache",
            &t,
            Some("application/json; charset=utf-8"),
            body,
        )
        .await;
    assert_eq!(ok.status, StatusCode::CREATED);
}

#[tokio::test]
async fn purge_ignores_bodies_and_methods_are_checked() {
    let app = app(&[]);
    let t = admin();
    let r = app.call("GET", "/api/cache/query", Some(&t), None).await;
    expect(
        &app,
        r,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
    let r = app.call("PATCH", "/api/cache", Some(&t), None).await;
    expect(
        &app,
        r,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
}
