//! Helpers shared by the server's integration tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(dead_code, unreachable_pub)]

pub mod procs;
pub mod ws;

use std::sync::Arc;

use axum::{
    Router,
    body::Body,
    http::{Request, StatusCode},
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use resk_cache_memory::MemoryStore;
use resk_core::{CacheStore, SharedCacheStore};
use resk_server::{App, Backends, Cli, Config};
use serde_json::{Value, json};
use tower::ServiceExt;

pub const SECRET: &str = "integration-test-secret-0123456789abcdef";

pub fn config(extra: &[&str]) -> Config {
    config_result(extra).unwrap()
}

/// The configuration `extra` resolves to, or the start-up error it names.
pub fn config_result(extra: &[&str]) -> Result<Config, String> {
    let mut args = vec!["resk-server", "--jwt-secret", SECRET];
    args.extend_from_slice(extra);
    <Cli as clap::Parser>::try_parse_from(args)
        .map_err(|e| e.to_string())?
        .serve
        .resolve()
        .map_err(|e| e.to_string())
}

/// An app over a memory store the test can inspect, optionally wrapped as the config says.
pub struct TestApp {
    pub router: Router,
    pub store: MemoryStore,
    pub config: Config,
}

pub fn app(extra: &[&str]) -> TestApp {
    let config = config(extra);
    let store = MemoryStore::default();
    let shared: SharedCacheStore = match &config.store.cipher {
        Some(c) => Arc::new(resk_crypto::EncryptedStore::new(store.clone(), c.clone())),
        None => Arc::new(store.clone()),
    };
    let router = App::with_backends(&config, Backends::local(shared))
        .unwrap()
        .router;
    TestApp {
        router,
        store,
        config,
    }
}

pub fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

pub fn sign(claims: &Value) -> String {
    sign_with(claims, SECRET, Algorithm::HS256)
}

pub fn sign_with(claims: &Value, secret: &str, alg: Algorithm) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

pub fn token_for(sub: &str, tenant: &str, scope: &str) -> String {
    sign(&json!({"sub": sub, "tenant": tenant, "scope": scope, "exp": now() + 600, "iat": now()}))
}

/// A token with a `jti` (so it can be revoked), valid for ten minutes.
pub fn token_with_jti(sub: &str, tenant: &str, scope: &str, jti: &str) -> String {
    sign(&json!({
        "sub": sub, "tenant": tenant, "scope": scope, "jti": jti,
        "exp": now() + 600, "iat": now(),
    }))
}

/// A token with every scope for `sub` in tenant `acme`.
pub fn admin() -> String {
    token_for("alice", "acme", "cache:read cache:write cache:admin")
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl TestApp {
    pub async fn send(&self, req: Request<Body>) -> Reply {
        let response = self.router.clone().oneshot(req).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
            text,
        }
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        };
        self.send(req.unwrap()).await
    }

    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        token: &str,
        content_type: Option<&str>,
        body: impl Into<Body>,
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {token}"));
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        self.send(req.body(body.into()).unwrap()).await
    }

    pub async fn write(&self, token: &str, body: Value) -> Reply {
        self.call("POST", "/api/cache", Some(token), Some(&body))
            .await
    }

    pub async fn query(&self, token: &str, body: Value) -> Reply {
        self.call("POST", "/api/cache/query", Some(token), Some(&body))
            .await
    }

    /// Entries in the underlying store (after moka's pending maintenance).
    pub async fn entries(&self) -> u64 {
        self.store.run_pending_tasks().await;
        self.store.entry_count()
    }

    pub async fn ping(&self) {
        self.store.ping().await.unwrap();
    }
}

/// Assert the one error shape and return its code.
pub fn error_code(reply: &Reply) -> String {
    let err = reply
        .body
        .get("error")
        .unwrap_or_else(|| panic!("not an error body: {}", reply.text));
    assert!(
        err.get("message")
            .and_then(Value::as_str)
            .is_some_and(|m| !m.is_empty()),
        "{}",
        reply.text
    );
    err.get("code").and_then(Value::as_str).unwrap().to_owned()
}

impl TestApp {
    /// Serve the app on a loopback port (for WebSocket clients); the server lives as long as the
    /// test's runtime.
    pub async fn listen(&self) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = self
            .router
            .clone()
            .into_make_service_with_connect_info::<std::net::SocketAddr>();
        tokio::spawn(async move { axum::serve(listener, service).await.unwrap() });
        addr
    }
}

/// An app with semantic caching on the configured embedder (lexical unless `extra` says otherwise)
/// and an in-memory embedded vector index, over a memory store the test can inspect.
pub async fn semantic_app(extra: &[&str]) -> TestApp {
    let config = config(extra);
    let semantic = resk_server::semantic::build(&config.semantic, Default::default())
        .await
        .unwrap();
    semantic_app_with(config, semantic)
}

/// Like [`semantic_app`] around a given semantic layer.
pub fn semantic_app_with(config: Config, semantic: resk_server::semantic::Semantic) -> TestApp {
    let store = MemoryStore::default();
    let shared: SharedCacheStore = Arc::new(store.clone());
    let router = App::with_backends(&config, Backends::local(shared).with_semantic(semantic))
        .unwrap()
        .router;
    TestApp {
        router,
        store,
        config,
    }
}

/// `POST /api/cache` as the admin; asserts 201 and returns the body.
pub async fn write_ok(app: &TestApp, body: Value) -> Value {
    let r = app.write(&admin(), body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.body
}

/// `POST /api/cache/query` as the admin; asserts 200 and returns the body.
pub async fn query_ok(app: &TestApp, body: Value) -> Value {
    let r = app.query(&admin(), body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body
}

/// A local fake of the OpenAI embeddings API (`POST /v1/embeddings`, the documented request and
/// response shapes). Vectors are 8-dimensional one-hots chosen by the first word's length: "same
/// topic" = same first word.
pub async fn openai_fake() -> resk_testkit::http::Fake {
    resk_testkit::http::Fake::start(|req| {
        let data: Vec<Value> = req.body["input"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let first = t.as_str().unwrap().split_whitespace().next().unwrap_or("");
                let mut v = vec![0.0f32; 8];
                v[first.len() % 8] = 1.0;
                json!({"object": "embedding", "index": i, "embedding": v})
            })
            .collect();
        (
            StatusCode::OK,
            json!({"object": "list", "data": data, "model": "m"}),
        )
    })
    .await
}

/// Server flags for `EMBEDDING_PROVIDER=openai` against the fake at `url` (`…/v1`), 8 dimensions,
/// threshold 0.99, then `extra`.
pub fn openai_args<'a>(url: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--embedding-provider",
        "openai",
        "--openai-base-url",
        url,
        "--openai-api-key",
        "sk-fake",
        "--embedding-dimensions",
        "8",
        "--semantic-threshold",
        "0.99",
    ];
    args.extend_from_slice(extra);
    args
}
