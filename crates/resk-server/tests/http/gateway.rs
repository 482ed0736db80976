//! The OpenAI-compatible gateway over HTTP, called by real OpenAI clients — the `async-openai`
//! crate here, the official Python SDK in `openai_python_sdk_*` — against a local fake of OpenAI's
//! wire format that counts the calls it gets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use async_openai::{
    Client,
    config::OpenAIConfig,
    error::OpenAIError,
    types::chat::{CreateChatCompletionRequest, CreateChatCompletionResponse},
};
use futures_util::StreamExt as _;
use resk_testkit::openai::FakeOpenAi;
use serde_json::{Value, json};

use crate::common::{TestApp, app, now, semantic_app, sign, token_for};

const KEY: &str = "sk-upstream-provider-key-4242424242";

async fn gateway_app(fake: &FakeOpenAi, extra: &[&str]) -> TestApp {
    let url = fake.base_url();
    let mut args = vec![
        "--upstream-base-url",
        url.as_str(),
        "--upstream-api-key",
        KEY,
        "--cache-encryption-key",
        "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
        "--gateway-prices",
        "gpt-fake=1:2",
    ];
    args.extend_from_slice(extra);
    // Strings borrowed from `url` end here: the config is resolved inside.
    semantic_app(&args).await
}

fn invoker() -> String {
    token_for("frontend-1", "acme", "llm:invoke")
}

fn client(addr: std::net::SocketAddr, token: &str) -> Client<OpenAIConfig> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::with_config(
        OpenAIConfig::new()
            .with_api_base(format!("http://{addr}/v1"))
            .with_api_key(token),
    )
}

fn request(body: Value) -> CreateChatCompletionRequest {
    serde_json::from_value(body).unwrap()
}

fn ask(question: &str) -> Value {
    json!({"model": "gpt-fake", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": question}]})
}

async fn stream_text(c: &Client<OpenAIConfig>, body: Value) -> (Vec<Value>, String) {
    let mut stream = c.chat().create_stream(request(body)).await.unwrap();
    let mut deltas = Vec::new();
    let mut text = String::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        for choice in &chunk.choices {
            deltas.push(serde_json::to_value(&choice.delta).unwrap());
            text.push_str(choice.delta.content.as_deref().unwrap_or_default());
        }
    }
    (deltas, text)
}

#[tokio::test]
async fn async_openai_plain_and_streamed_requests_are_cached() {
    let fake = FakeOpenAi::start(KEY).await;
    let app = gateway_app(&fake, &[]).await;
    let addr = app.listen().await;
    let c = client(addr, &invoker());
    let first: CreateChatCompletionResponse = c
        .chat()
        .create(request(ask("What is resk?")))
        .await
        .unwrap();
    let second = c
        .chat()
        .create(request(ask("What is resk?")))
        .await
        .unwrap();
    assert_eq!(fake.chat_calls(), 1);
    assert_eq!(
        first.choices[0].message.content,
        second.choices[0].message.content
    );
    assert_eq!(
        second.choices[0].message.content.as_deref(),
        Some("Answer to: What is resk?")
    );
    assert_ne!(first.id, second.id);

    let mut streamed = ask("Tell me about caching");
    streamed["stream"] = json!(true);
    let (d1, t1) = stream_text(&c, streamed.clone()).await;
    let (d2, t2) = stream_text(&c, streamed.clone()).await;
    assert_eq!(fake.chat_calls(), 2);
    assert_eq!(d1, d2);
    assert_eq!(t1, "Answer to: Tell me about caching");
    assert_eq!(t1, t2);
    // The JSON shape of the streamed answer, from the cache.
    let json = c
        .chat()
        .create(request(ask("Tell me about caching")))
        .await
        .unwrap();
    assert_eq!(
        json.choices[0].message.content.as_deref(),
        Some(t1.as_str())
    );
    assert_eq!(fake.chat_calls(), 2);

    // A paraphrase of the last question is a semantic hit; the same question after other turns
    // is not.
    let para = c.chat().create(request(ask("what is resk"))).await.unwrap();
    assert_eq!(
        para.choices[0].message.content.as_deref(),
        Some("Answer to: What is resk?")
    );
    assert_eq!(fake.chat_calls(), 2);
    let other = json!({"model": "gpt-fake", "messages": [
        {"role": "user", "content": "Hi, I am Bob."},
        {"role": "assistant", "content": "Hello Bob."},
        {"role": "user", "content": "What is resk?"}]});
    c.chat().create(request(other)).await.unwrap();
    assert_eq!(fake.chat_calls(), 3);

    // Tool-calling answers pass through (not cached by default) with their tool calls intact.
    let tools = json!({"model": "gpt-fake", "stream": true,
        "tools": [{"type": "function", "function": {"name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
        "messages": [{"role": "user", "content": "Weather in Paris?"}]});
    for _ in 0..2 {
        let (deltas, _) = stream_text(&c, tools.clone()).await;
        let args: String = deltas
            .iter()
            .filter_map(|d| d["tool_calls"][0]["function"]["arguments"].as_str())
            .collect();
        assert_eq!(args, "{\"city\":\"Paris\"}");
    }
    assert_eq!(fake.chat_calls(), 5);

    // A failing upstream: the client gets OpenAI's error, nothing is cached.
    let err = c
        .chat()
        .create(request(ask("Boom [error-400]")))
        .await
        .unwrap_err();
    match err {
        OpenAIError::ApiError(e) => {
            assert_eq!(e.status_code.as_u16(), 400);
            assert_eq!(e.api_error.code.as_deref(), Some("string_above_max_length"));
        }
        other => panic!("{other:?}"),
    }
    // Embeddings through the same client.
    let emb: async_openai::types::embeddings::CreateEmbeddingRequest =
        serde_json::from_value(json!({"model": "text-embedding-3-small", "input": ["a b", "c"]}))
            .unwrap();
    let e1 = c.embeddings().create(emb.clone()).await.unwrap();
    let e2 = c.embeddings().create(emb).await.unwrap();
    assert_eq!(e1.data.len(), 2);
    assert_eq!(e1.data[0].embedding, e2.data[0].embedding);
    assert_eq!(fake.embedding_calls(), 1);
}

#[tokio::test]
async fn twenty_concurrent_streams_make_one_upstream_call() {
    let fake = FakeOpenAi::start(KEY).await;
    let app = gateway_app(&fake, &[]).await;
    let addr = app.listen().await;
    let mut body = ask("A slow story [slow]");
    body["stream"] = json!(true);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let c = client(addr, &invoker());
            let body = body.clone();
            tokio::spawn(async move { stream_text(&c, body).await })
        })
        .collect();
    let mut outputs = Vec::new();
    for t in tasks {
        outputs.push(t.await.unwrap());
    }
    assert_eq!(fake.chat_calls(), 1);
    assert!(outputs.iter().all(|o| o == &outputs[0]));
    assert_eq!(outputs[0].1, "Answer to: A slow story [slow]");
}

#[tokio::test]
async fn headers_tell_where_an_answer_came_from_and_what_it_saved() {
    let fake = FakeOpenAi::start(KEY).await;
    let app = gateway_app(&fake, &[]).await;
    let t = invoker();
    let body = ask("Where is the Louvre?");
    let miss = app
        .call("POST", "/v1/chat/completions", Some(&t), Some(&body))
        .await;
    assert_eq!(miss.status, 200, "{}", miss.text);
    assert_eq!(miss.headers["x-resk-cache"], "miss");
    let hit = app
        .call("POST", "/v1/chat/completions", Some(&t), Some(&body))
        .await;
    assert_eq!(hit.headers["x-resk-cache"], "hit");
    assert_eq!(hit.headers["x-resk-cache-source"], "memory");
    assert!(hit.headers.contains_key("age"));
    let para = app
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&t),
            Some(&ask("where is the louvre")),
        )
        .await;
    assert_eq!(para.headers["x-resk-cache"], "hit");
    assert_eq!(para.headers["x-resk-cache-source"], "semantic");
    assert!(para.headers.contains_key("x-resk-similarity"));
    assert!(para.headers.contains_key("x-resk-hit-id"));
    let mut hot = ask("Where is the Louvre?");
    hot["temperature"] = json!(1.7);
    let bypass = app
        .call("POST", "/v1/chat/completions", Some(&t), Some(&hot))
        .await;
    assert_eq!(bypass.headers["x-resk-cache"], "bypass");
    assert_eq!(bypass.headers["x-resk-cache-reason"], "temperature");
    // Cache-Control from the client.
    let mut req = axum::http::Request::builder()
        .method("POST")
        .uri("/v1/chat/completions")
        .header("authorization", format!("Bearer {t}"))
        .header("content-type", "application/json")
        .header("cache-control", "only-if-cached")
        .body(axum::body::Body::from(
            ask("Never asked before").to_string(),
        ))
        .unwrap();
    let r = app.send(req).await;
    assert_eq!(r.status, 504);
    assert_eq!(r.body["error"]["code"], "cache_miss");
    req = axum::http::Request::builder()
        .method("POST")
        .uri("/v1/chat/completions")
        .header("authorization", format!("Bearer {t}"))
        .header("x-resk-threshold", "2")
        .body(axum::body::Body::from(body.to_string()))
        .unwrap();
    let r = app.send(req).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["param"], "x-resk-threshold");
    assert_eq!(fake.chat_calls(), 2);
    // The savings, for the tenant's administrator.
    let admin = token_for("ops", "acme", "cache:admin");
    let s = app
        .call("GET", "/api/gateway/savings", Some(&admin), None)
        .await;
    assert_eq!(s.status, 200, "{}", s.text);
    assert_eq!(s.body["tenant"], "acme");
    let m = &s.body["models"][0];
    assert_eq!(
        (m["model"].as_str(), m["hits"].as_u64()),
        (Some("gpt-fake"), Some(2))
    );
    let saved = s.body["saved_usd"].as_f64().unwrap();
    assert!(saved > 0.0);
    // The operator's overview counts the same dollars in the current minute, and the gateway's
    // lookups among the tenant's (the bypassed request made none).
    let o = app
        .call("GET", "/api/admin/overview", Some(&admin), None)
        .await;
    assert_eq!(o.status, 200, "{}", o.text);
    assert!((o.body["total"]["cost_saved_usd"].as_f64().unwrap() - saved).abs() < 1e-6);
    assert_eq!(o.body["gateway"]["hits"], 2);
    assert!((o.body["gateway"]["saved_usd"].as_f64().unwrap() - saved).abs() < 1e-9);
    assert_eq!(
        o.body["total"]["hits"]["semantic"], 1,
        "{}",
        o.body["total"]
    );
    let other = token_for("ops", "globex", "cache:admin");
    let s = app
        .call("GET", "/api/gateway/savings", Some(&other), None)
        .await;
    assert_eq!(s.body["models"], json!([]));
    let s = app
        .call("GET", "/api/gateway/savings", Some(&t), None)
        .await;
    assert_eq!(s.status, 403);
    // The metrics carry the savings per tenant and model, and never the key.
    let metrics = app.call("GET", "/api/metrics", None, None).await;
    assert!(
        metrics.text.contains("resk_gateway_saved_tokens_total"),
        "{}",
        metrics.text
    );
    assert!(!metrics.text.contains(KEY));
}

#[tokio::test]
async fn refused_requests_get_openai_errors_and_make_no_upstream_call() {
    let fake = FakeOpenAi::start(KEY).await;
    let app = gateway_app(
        &fake,
        &["--upstream-models", "gpt-fake", "--max-body-bytes", "4096"],
    )
    .await;
    let t = invoker();
    let check = |r: &crate::common::Reply, status: u16, kind: &str| {
        assert_eq!(r.status.as_u16(), status, "{}", r.text);
        assert_eq!(r.body["error"]["type"], kind, "{}", r.text);
        assert!(
            r.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        assert!(r.body["error"].get("param").is_some(), "{}", r.text);
    };
    let body = ask("hello");
    check(
        &app.call("POST", "/v1/chat/completions", None, Some(&body))
            .await,
        401,
        "authentication_error",
    );
    let reader = token_for("u", "acme", "cache:read cache:write");
    check(
        &app.call("POST", "/v1/chat/completions", Some(&reader), Some(&body))
            .await,
        403,
        "permission_error",
    );
    check(
        &app.call(
            "POST",
            "/v1/chat/completions",
            Some("not.a.token"),
            Some(&body),
        )
        .await,
        401,
        "authentication_error",
    );
    let mut unknown = body.clone();
    unknown["model"] = json!("gpt-9");
    let r = app
        .call("POST", "/v1/chat/completions", Some(&t), Some(&unknown))
        .await;
    check(&r, 404, "invalid_request_error");
    assert_eq!(r.body["error"]["code"], "model_not_found");
    let r = app
        .raw(
            "POST",
            "/v1/chat/completions",
            &t,
            Some("application/json"),
            "{oops",
        )
        .await;
    check(&r, 400, "invalid_request_error");
    let r = app
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&t),
            Some(&json!({"model": "gpt-fake"})),
        )
        .await;
    check(&r, 400, "invalid_request_error");
    assert_eq!(r.body["error"]["param"], "messages");
    let big = ask(&"x".repeat(8000));
    let r = app
        .call("POST", "/v1/chat/completions", Some(&t), Some(&big))
        .await;
    check(&r, 413, "invalid_request_error");
    let r = app.call("GET", "/v1/nope", Some(&t), None).await;
    check(&r, 404, "invalid_request_error");
    assert_eq!(fake.chat_calls(), 0);
    // A token whose claim bounds it to exact hits with a high floor.
    let bounded = sign(
        &json!({"sub": "kiosk", "tenant": "acme", "scope": "llm:invoke",
        "resk_cache": {"semantic": false}, "exp": now() + 600, "iat": now()}),
    );
    app.call(
        "POST",
        "/v1/chat/completions",
        Some(&t),
        Some(&ask("How do I reset my password?")),
    )
    .await;
    let r = app
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&bounded),
            Some(&ask("how can I reset my password")),
        )
        .await;
    assert_eq!(r.headers["x-resk-cache"], "miss");
    let bad_claim = sign(&json!({"sub": "k", "tenant": "acme", "scope": "llm:invoke",
        "resk_cache": {"max_age": -1}, "exp": now() + 600, "iat": now()}));
    check(
        &app.call(
            "POST",
            "/v1/chat/completions",
            Some(&bad_claim),
            Some(&body),
        )
        .await,
        401,
        "authentication_error",
    );
    // The model list: what the operator allows.
    let r = app.call("GET", "/v1/models", Some(&t), None).await;
    assert_eq!(r.body["data"][0]["id"], "gpt-fake", "{}", r.text);
}

#[tokio::test]
async fn without_an_upstream_the_gateway_is_off() {
    let app = app(&[]);
    let r = app
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&invoker()),
            Some(&ask("hi")),
        )
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body["error"]["code"], "gateway_disabled");
}

/// The official `openai` Python SDK (from PyPI, in the test venv) against resk: plain, streamed,
/// tool-calling and failing requests, a paraphrase, another conversation.
#[tokio::test]
async fn openai_python_sdk_through_resk() {
    let python = match std::env::var("RESK_TEST_SDK_PYTHON") {
        Ok(p) if !p.is_empty() => p,
        _ if resk_testkit::in_ci() => {
            panic!(
                "RESK_TEST_SDK_PYTHON is not set and CI=true (`cargo xtask test` installs the SDK)"
            )
        }
        _ => {
            println!(
                "SKIP openai_python_sdk_through_resk: RESK_TEST_SDK_PYTHON not set (cargo xtask test installs the SDK)"
            );
            return;
        }
    };
    let fake = FakeOpenAi::start(KEY).await;
    let app = gateway_app(&fake, &[]).await;
    let addr = app.listen().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/openai_sdk.py");
    let token = invoker();
    let out = tokio::process::Command::new(&python)
        .arg(script)
        .env("RESK_BASE_URL", format!("http://{addr}/v1"))
        .env("RESK_TOKEN", &token)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(report["ok"], true, "{report}");
    // Upstream calls: the first plain and streamed question, the other conversation, the two
    // tool calls and the failing request; every other request was answered by the cache.
    assert_eq!(fake.chat_calls(), 6, "{report}");
    assert!(!stdout.contains(KEY) && !stderr.contains(KEY));
}
