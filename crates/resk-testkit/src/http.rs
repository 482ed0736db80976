//! A local HTTP fake for providers that cannot run here (OpenAI, Hugging Face, …): it records every
//! request exactly (method, path and query, headers, JSON body) for the test to check against the
//! vendor's documented request, and replays scripted responses — the documented success or error
//! bodies — falling back to a responder computed from the request.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use serde_json::Value;

/// One request the fake received.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// HTTP method.
    pub method: Method,
    /// Path and query, e.g. `/v1/embeddings`.
    pub uri: String,
    /// Headers as sent.
    pub headers: HeaderMap,
    /// The body parsed as JSON (`Null` when it is not JSON).
    pub body: Value,
}

/// A scripted answer: status, extra headers, JSON body.
type Scripted = (StatusCode, Vec<(String, String)>, Value);

type Responder = dyn Fn(&Recorded) -> (StatusCode, Value) + Send + Sync;

struct Inner {
    requests: Mutex<Vec<Recorded>>,
    script: Mutex<VecDeque<Scripted>>,
    responder: Box<Responder>,
}

/// A running fake; stops when dropped with the test's runtime.
#[derive(Clone)]
pub struct Fake {
    inner: Arc<Inner>,
    addr: SocketAddr,
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let recorded = Recorded {
        method,
        uri: uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    };
    inner.requests.lock().unwrap().push(recorded.clone());
    let scripted = inner.script.lock().unwrap().pop_front();
    match scripted {
        Some((status, headers, body)) => {
            let mut response = (status, axum::Json(body)).into_response();
            for (k, v) in headers {
                response.headers_mut().insert(
                    axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            response
        }
        None => {
            let (status, body) = (inner.responder)(&recorded);
            (status, axum::Json(body)).into_response()
        }
    }
}

impl Fake {
    /// Start on a free loopback port; unscripted requests are answered by `responder`.
    pub async fn start(
        responder: impl Fn(&Recorded) -> (StatusCode, Value) + Send + Sync + 'static,
    ) -> Self {
        let inner = Arc::new(Inner {
            requests: Mutex::new(Vec::new()),
            script: Mutex::new(VecDeque::new()),
            responder: Box::new(responder),
        });
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { inner, addr }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answer the next request with this status, headers and body (queued in order).
    pub fn then(&self, status: u16, headers: &[(&str, &str)], body: Value) -> &Self {
        self.inner.script.lock().unwrap().push_back((
            StatusCode::from_u16(status).unwrap(),
            headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            body,
        ));
        self
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.requests.lock().unwrap().clone()
    }
}

/// A vector of `dims` values that depends on `text` only (a hash of it per dimension): what a fake
/// embedding API answers, so the embedder suite's order and determinism scenarios hold through it.
pub fn text_vector(text: &str, dims: usize) -> Vec<f32> {
    (0..dims)
        .map(|d| {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ (d as u64);
            for b in text.as_bytes() {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
            ((h >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32
        })
        .collect()
}
