//! A local fake of OpenAI's chat-completions, embeddings and models endpoints, following the
//! documented wire format (JSON bodies, server-sent events with `data: …` frames and
//! `data: [DONE]`, usage chunks with `choices: []`, OpenAI's error objects). It checks what a real
//! provider checks (the bearer key, a JSON body with `model` and `messages`) and counts calls, so a
//! test can prove a cached answer made none.
//!
//! What it answers is decided by the last message's text:
//! - `[error-500]`, `[error-400]`, `[error-429]`: that HTTP error, in OpenAI's format;
//! - `[echo-key]`: a 400 whose message quotes the `Authorization` header it got (as OpenAI's
//!   "Incorrect API key provided: sk-…" does), to prove the gateway never passes a key on;
//! - `[length]`: `finish_reason: length`; `[cut]`: a stream that ends without `[DONE]`;
//!   `[stream-error]`: an `error` event after the first chunk; `[slow]`: 60 ms between chunks;
//! - with `tools` in the request and no tool result yet: a `get_weather` tool call;
//! - a model whose name starts with `reason`: `reasoning_content` deltas before the content;
//! - otherwise the content `Answer to: <last message>`, streamed a word at a time.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{
    Json, Router,
    body::{Body, Bytes},
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde_json::{Value, json};

struct Inner {
    key: String,
    chat_calls: AtomicU64,
    embedding_calls: AtomicU64,
    requests: Mutex<Vec<Value>>,
    /// Extra wait before the first byte of every chat answer (ms).
    first_byte_ms: AtomicU64,
}

/// A running fake; stops with the test's runtime.
#[derive(Clone)]
pub struct FakeOpenAi {
    inner: Arc<Inner>,
    addr: SocketAddr,
}

fn error(status: StatusCode, message: &str, kind: &str, code: Option<&str>) -> Response {
    (
        status,
        Json(json!({"error": {"message": message, "type": kind, "param": null, "code": code}})),
    )
        .into_response()
}

fn authorised(inner: &Inner, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if given == format!("Bearer {}", inner.key) {
        return Ok(());
    }
    Err(Box::new(error(
        StatusCode::UNAUTHORIZED,
        &format!("Incorrect API key provided: {given}."),
        "invalid_request_error",
        Some("invalid_api_key"),
    )))
}

fn text_of(message: &Value) -> String {
    match message.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// The answer the fake gives a request: (reasoning, content, tool call, finish reason).
fn answer(body: &Value) -> (Option<String>, Option<String>, Option<Value>, &'static str) {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let last = messages.last().map(text_of).unwrap_or_default();
    let model = body["model"].as_str().unwrap_or_default();
    let reasoning = model
        .starts_with("reason")
        .then(|| format!("The user asks: {last}. I should answer."));
    let has_tool_result = messages.iter().any(|m| m["role"] == "tool");
    if body.get("tools").is_some_and(|t| !t.is_null()) && !has_tool_result {
        let call = json!({"id": "call_fake_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}});
        return (reasoning, None, Some(call), "tool_calls");
    }
    let finish = if last.contains("[length]") {
        "length"
    } else {
        "stop"
    };
    (reasoning, Some(format!("Answer to: {last}")), None, finish)
}

async fn chat(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(denied) = authorised(&inner, &headers) {
        return *denied;
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "We could not parse the JSON body of your request.",
            "invalid_request_error",
            None,
        );
    };
    let valid =
        body["model"].is_string() && body["messages"].as_array().is_some_and(|m| !m.is_empty());
    if !valid {
        return error(
            StatusCode::BAD_REQUEST,
            "Missing required parameter: 'messages'.",
            "invalid_request_error",
            Some("missing_required_parameter"),
        );
    }
    inner.chat_calls.fetch_add(1, Ordering::SeqCst);
    inner.requests.lock().unwrap().push(body.clone());
    let first_byte = inner.first_byte_ms.load(Ordering::Relaxed);
    if first_byte > 0 {
        tokio::time::sleep(Duration::from_millis(first_byte)).await;
    }
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let last = messages.last().map(text_of).unwrap_or_default();
    if last.contains("[error-500]") {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The server had an error while processing your request.",
            "server_error",
            None,
        );
    }
    if last.contains("[error-400]") {
        return error(
            StatusCode::BAD_REQUEST,
            "Invalid 'messages[0].content': string too long.",
            "invalid_request_error",
            Some("string_above_max_length"),
        );
    }
    if last.contains("[error-429]") {
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            "Rate limit reached for requests.",
            "requests",
            Some("rate_limit_exceeded"),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, "0".parse().unwrap());
        return r;
    }
    if last.contains("[echo-key]") {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        return error(
            StatusCode::BAD_REQUEST,
            &format!("Request rejected for key {given}"),
            "invalid_request_error",
            None,
        );
    }
    let (reasoning, content, call, finish) = answer(&body);
    let prompt_tokens: u64 = messages.iter().map(|m| words(&text_of(m))).sum();
    let completion_tokens = content.as_deref().map_or(3, words);
    let usage = json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens});
    let model = body["model"].clone();
    let id = format!("chatcmpl-fake{}", crate::unique_id());
    if body["stream"] != true {
        let mut message = json!({"role": "assistant", "content": content, "refusal": null});
        if let Some(r) = reasoning {
            message["reasoning_content"] = json!(r);
        }
        if let Some(call) = call {
            message["tool_calls"] = json!([call]);
        }
        return Json(json!({"id": id, "object": "chat.completion", "created": 1_700_000_000,
            "model": model, "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
            "usage": usage}))
        .into_response();
    }
    let include_usage = body["stream_options"]["include_usage"] == true;
    let chunk = |delta: Value, finish: Value| {
        let mut c = json!({"id": id, "object": "chat.completion.chunk", "created": 1_700_000_000,
            "model": model, "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
        if include_usage {
            c["usage"] = Value::Null;
        }
        format!("data: {c}\n\n")
    };
    let mut frames = vec![chunk(
        json!({"role": "assistant", "content": "", "refusal": null}),
        Value::Null,
    )];
    if let Some(r) = reasoning {
        for w in r.split_inclusive(' ') {
            frames.push(chunk(json!({"reasoning_content": w}), Value::Null));
        }
    }
    if let Some(call) = call {
        let mut head = call.clone();
        head["function"]["arguments"] = json!("");
        head["index"] = json!(0);
        frames.push(chunk(json!({"tool_calls": [head]}), Value::Null));
        for piece in ["{\"city\":", "\"Paris\"}"] {
            frames.push(chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
                Value::Null,
            ));
        }
    }
    if let Some(content) = &content {
        for w in content.split_inclusive(' ') {
            frames.push(chunk(json!({"content": w}), Value::Null));
        }
    }
    if last.contains("[stream-error]") {
        frames.truncate(2);
        frames.push(format!("data: {}\n\n", json!({"error": {"message": "The model had an error.", "type": "server_error", "param": null, "code": null}})));
    } else if last.contains("[cut]") {
        frames.truncate(3);
    } else {
        frames.push(chunk(json!({}), json!(finish)));
        if include_usage {
            frames.push(format!(
                "data: {}\n\n",
                json!({"id": id, "object": "chat.completion.chunk",
                "created": 1_700_000_000, "model": model, "system_fingerprint": "fp_fake",
                "choices": [], "usage": usage})
            ));
        }
        frames.push("data: [DONE]\n\n".to_owned());
    }
    let pause = Duration::from_millis(if last.contains("[slow]") { 60 } else { 0 });
    let stream = futures_util::stream::unfold(frames.into_iter(), move |mut it| async move {
        let frame = it.next()?;
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        Some((Ok::<_, std::convert::Infallible>(Bytes::from(frame)), it))
    });
    let mut response = Response::new(Body::from_stream(stream));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, "text/event-stream".parse().unwrap());
    response
}

async fn embeddings(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(denied) = authorised(&inner, &headers) {
        return *denied;
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "We could not parse the JSON body of your request.",
            "invalid_request_error",
            None,
        );
    };
    let inputs: Vec<String> = match &body["input"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().unwrap_or_default().to_owned())
            .collect(),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "'input' is a required property",
                "invalid_request_error",
                None,
            );
        }
    };
    inner.embedding_calls.fetch_add(1, Ordering::SeqCst);
    inner.requests.lock().unwrap().push(body.clone());
    let tokens: u64 = inputs.iter().map(|i| words(i)).sum();
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| json!({"object": "embedding", "index": i, "embedding": crate::http::text_vector(text, 8)}))
        .collect();
    Json(
        json!({"object": "list", "data": data, "model": body["model"],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}),
    )
    .into_response()
}

async fn models(State(inner): State<Arc<Inner>>, headers: HeaderMap) -> Response {
    if let Err(denied) = authorised(&inner, &headers) {
        return *denied;
    }
    Json(json!({"object": "list", "data": [
        {"id": "gpt-fake", "object": "model", "created": 1_700_000_000, "owned_by": "fake"},
        {"id": "gpt-fake-mini", "object": "model", "created": 1_700_000_000, "owned_by": "fake"}]}))
    .into_response()
}

impl FakeOpenAi {
    /// Start on a free loopback port, accepting `key` as the bearer key.
    pub async fn start(key: &str) -> Self {
        Self::start_on(0, key).await
    }

    /// Start on loopback `port` (0: a free one), accepting `key` as the bearer key.
    pub async fn start_on(port: u16, key: &str) -> Self {
        let inner = Arc::new(Inner {
            key: key.to_owned(),
            chat_calls: AtomicU64::new(0),
            embedding_calls: AtomicU64::new(0),
            requests: Mutex::new(Vec::new()),
            first_byte_ms: AtomicU64::new(0),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/embeddings", post(embeddings))
            .route("/v1/models", get(models))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { inner, addr }
    }

    /// The API base: `http://127.0.0.1:<port>/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Chat-completion calls that passed the key check.
    pub fn chat_calls(&self) -> u64 {
        self.inner.chat_calls.load(Ordering::SeqCst)
    }

    /// Embedding calls that passed the key check.
    pub fn embedding_calls(&self) -> u64 {
        self.inner.embedding_calls.load(Ordering::SeqCst)
    }

    /// The bodies of those calls, in order.
    pub fn requests(&self) -> Vec<Value> {
        self.inner.requests.lock().unwrap().clone()
    }

    /// Wait this long before answering each chat call (a slow model).
    pub fn set_first_byte_delay(&self, delay: Duration) {
        self.inner
            .first_byte_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }
}
