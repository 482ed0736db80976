//! resk's library crates embedded in another axum service. See README.md.

use std::{
    net::SocketAddr,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{Json, Router, extract::State, http::StatusCode, routing::post};
use bytes::Bytes;
use resk_cache_memory::{MemoryConfig, MemoryStore};
use resk_core::{CacheEntry, CacheStore, KeyBuilder, KeyInput, Origin, TenantId};
use resk_crypto::{AesGcmCipher, EncryptedStore, MasterKey};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The cache: encrypted values over a bounded in-memory store.
type Cache = EncryptedStore<MemoryStore>;

struct AppState {
    cache: Cache,
    keys: KeyBuilder,
    tenant: TenantId,
    llm_calls: AtomicU64,
}

#[derive(Deserialize)]
struct Ask {
    question: String,
}

#[derive(Serialize, Deserialize)]
struct Answer {
    answer: String,
    cached: bool,
    llm_calls: u64,
}

const MODEL: &str = "example-model-v1";

/// Stand-in for a slow, paid LLM call.
async fn expensive_llm_call(state: &AppState, question: &str) -> String {
    state.llm_calls.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(50)).await;
    format!("An answer to: {}", question.trim())
}

async fn ask(
    State(state): State<Arc<AppState>>,
    Json(req): Json<Ask>,
) -> Result<Json<Answer>, (StatusCode, String)> {
    if req.question.trim().is_empty() {
        return Err((StatusCode::BAD_REQUEST, "question must not be empty".into()));
    }
    let key = state.keys.key(
        &state.tenant,
        &KeyInput {
            query: &req.question,
            model: Some(MODEL),
            ..Default::default()
        },
    );
    let internal = |e: resk_core::Error| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    if let Some(value) = state.cache.get(&key).await.map_err(internal)?
        && let Ok(entry) = CacheEntry::from_bytes(&value.bytes)
        && let Ok(answer) = serde_json::from_str::<String>(entry.response.get())
    {
        return Ok(Json(Answer {
            answer,
            cached: true,
            llm_calls: state.llm_calls.load(Ordering::Relaxed),
        }));
    }
    let answer = expensive_llm_call(&state, &req.question).await;
    let ttl = Duration::from_secs(600);
    let entry = CacheEntry::new(
        state.tenant.clone(),
        req.question,
        CacheEntry::raw(&serde_json::Value::from(answer.as_str())).map_err(internal)?,
        ttl,
        Origin {
            source: "library".into(),
            subject: None,
        },
    )
    .map_err(internal)?;
    let bytes = entry.to_bytes().map_err(internal)?;
    state
        .cache
        .set(&key, Bytes::from(bytes), Some(ttl))
        .await
        .map_err(internal)?;
    Ok(Json(Answer {
        answer,
        cached: false,
        llm_calls: state.llm_calls.load(Ordering::Relaxed),
    }))
}

fn app() -> Result<Router, resk_core::Error> {
    // In a real service both secrets come from the environment or a secret manager.
    let cipher = AesGcmCipher::new(MasterKey::generate());
    let state = AppState {
        cache: EncryptedStore::new(
            MemoryStore::new(MemoryConfig::default().with_max_bytes(64 << 20)),
            Arc::new(cipher),
        ),
        keys: KeyBuilder::new(b"example-service-secret-at-least-32-bytes")?,
        tenant: TenantId::new("example")?,
        llm_calls: AtomicU64::new(0),
    };
    Ok(Router::new()
        .route("/ask", post(ask))
        .with_state(Arc::new(state)))
}

/// POST `body` to `/ask` over a plain HTTP/1.1 connection and parse the JSON answer.
async fn post_ask(addr: SocketAddr, question: &str) -> Result<Answer, String> {
    let body = serde_json::json!({ "question": question }).to_string();
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let request = format!(
        "POST /ask HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .map_err(|e| e.to_string())?;
    let (head, json) = response.split_once("\r\n\r\n").ok_or("no HTTP body")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("unexpected response: {head}"));
    }
    serde_json::from_str(json).map_err(|e| e.to_string())
}

/// Serve on a free port, ask a question and a paraphrase of it, check the second is a cache hit.
async fn self_test() -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let router = app().map_err(|e| e.to_string())?;
    tokio::spawn(async move { axum::serve(listener, router).await });

    let first = post_ask(addr, "How do I reset my password?").await?;
    let second = post_ask(addr, "  how do I RESET my   password?").await?;
    let other = post_ask(addr, "How do I reset my username?").await?;
    let ok = !first.cached
        && second.cached
        && second.answer == first.answer
        && second.llm_calls == 1
        && !other.cached
        && other.llm_calls == 2;
    eprintln!(
        "self-test: first cached={} second cached={} other cached={} llm_calls={}",
        first.cached, second.cached, other.cached, other.llm_calls
    );
    if ok {
        Ok(())
    } else {
        Err("the cache did not behave as expected".into())
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    if std::env::args().any(|a| a == "--self-test") {
        return match self_test().await {
            Ok(()) => {
                eprintln!("self-test passed");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("self-test failed: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let router = match app() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:8080").await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot bind 127.0.0.1:8080: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("listening on http://127.0.0.1:8080 (POST /ask)");
    match axum::serve(listener, router).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
