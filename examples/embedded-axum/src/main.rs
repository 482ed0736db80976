//! resk embedded in another axum service, through the `resk` facade. See README.md.

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
use resk::{
    Cache, ErrorKind, Lookup, PutOptions, Semantic, SemanticConfig, Source, TenantId,
    crypto::MasterKey, embed::lexical::LexicalEmbedder, store::memory::MemoryStore,
    vector::embedded::EmbeddedVectorStore,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct AppState {
    cache: Cache,
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
    /// `computed` (the LLM was called), `memory` (an exact hit) or `semantic` (a paraphrase).
    source: String,
    /// The cached question that matched, for a semantic hit.
    matched: Option<String>,
    similarity: Option<f32>,
    llm_calls: u64,
}

const MODEL: &str = "example-model-v1";

/// Stand-in for a slow, paid LLM call.
async fn expensive_llm_call(state: &AppState, question: &str) -> resk::Result<String> {
    state.llm_calls.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(50)).await;
    Ok(format!("An answer to: {}", question.trim()))
}

async fn ask(
    State(state): State<Arc<AppState>>,
    Json(req): Json<Ask>,
) -> Result<Json<Answer>, (StatusCode, String)> {
    let lookup = Lookup::new(state.tenant.clone(), req.question.as_str()).model(MODEL);
    // One call: an exact hit, else a cached paraphrase, else the LLM (once for any number of
    // concurrent identical questions), its answer stored for the next asker.
    let hit = state
        .cache
        .get_or_insert_with(
            &lookup,
            &PutOptions::new().ttl(Duration::from_secs(600)),
            || expensive_llm_call(&state, &req.question),
        )
        .await
        .map_err(|e| match e.kind() {
            ErrorKind::InvalidInput => (StatusCode::BAD_REQUEST, e.message().to_owned()),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, e.message().to_owned()),
        })?;
    let answer = hit
        .answer_as::<String>()
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.message().to_owned()))?;
    Ok(Json(Answer {
        answer,
        source: hit.source.as_str().to_owned(),
        matched: hit.matched_query.clone(),
        similarity: hit.similarity,
        llm_calls: state.llm_calls.load(Ordering::Relaxed),
    }))
}

async fn app() -> resk::Result<Router> {
    // Semantic search with the built-in lexical embedder (no download) and an in-memory vector
    // index; swap in `resk::embed::local` (MiniLM, feature `local`) for real paraphrase matching.
    let mut settings = SemanticConfig::default();
    settings.threshold = 0.75;
    let semantic = Semantic::new(
        Arc::new(LexicalEmbedder::new()),
        Arc::new(EmbeddedVectorStore::in_memory()),
        settings,
    )
    .await?;
    // In a real service both secrets come from the environment or a secret manager.
    let cache = Cache::builder()
        .store(MemoryStore::default())
        .key_secret(b"example-service-secret-at-least-32-bytes")
        .encryption_key(&MasterKey::generate_base64())
        .semantic(semantic)
        .build()?;
    let state = AppState {
        cache,
        tenant: TenantId::new("example")?,
        llm_calls: AtomicU64::new(0),
    };
    Ok(Router::new()
        .route("/ask", post(ask))
        .with_state(Arc::new(state)))
}

/// POST `question` to `/ask` over a plain HTTP/1.1 connection and parse the JSON answer.
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

/// Serve on a free port and check, over HTTP: a question computes once; the same question in
/// another case is an exact hit; a reworded question is a semantic hit; an unrelated one calls
/// the LLM; 50 concurrent copies of a new question call it once.
async fn self_test() -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let router = app().await.map_err(|e| e.to_string())?;
    tokio::spawn(async move { axum::serve(listener, router).await });

    let first = post_ask(addr, "How do I reset my password?").await?;
    let exact = post_ask(addr, "  how do I RESET my   password?").await?;
    let reworded = post_ask(addr, "how can I reset my password").await?;
    let other = post_ask(addr, "What are your opening hours?").await?;
    let burst =
        futures_util::future::join_all((0..50).map(|_| post_ask(addr, "Do you ship to Canada?")))
            .await;
    let burst_ok = burst.iter().all(Result::is_ok);
    let calls = post_ask(addr, "Do you ship to Canada?").await?.llm_calls;
    eprintln!(
        "self-test: first={} exact={} reworded={} (similarity {:?}, matched {:?}) other={} \
         llm_calls after 50 concurrent identical questions: {calls}",
        first.source,
        exact.source,
        reworded.source,
        reworded.similarity,
        reworded.matched,
        other.source
    );
    let ok = first.source == Source::Computed.as_str()
        && exact.source == "memory"
        && exact.answer == first.answer
        && reworded.source == Source::Semantic.as_str()
        && reworded.answer == first.answer
        && reworded.matched.as_deref() == Some("How do I reset my password?")
        && other.source == Source::Computed.as_str()
        && other.llm_calls == 2
        && burst_ok
        && calls == 3;
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
    let router = match app().await {
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
