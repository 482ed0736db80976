//! Against a local fake of the OpenAI embeddings API (OpenAI API reference, "Embeddings → Create
//! embeddings", `POST /v1/embeddings`, v1 as of 2024-2026; Azure OpenAI REST `2024-02-01`): the fake
//! asserts the exact documented request and replays documented responses, including error bodies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use resk_core::{Embedder, ErrorKind};
use resk_embed::{Pipeline, PipelineConfig, RetryPolicy};
use resk_embed_openai::{Auth, OpenAiConfig, OpenAiEmbedder};
use resk_testkit::http::{Fake, Recorded};
use serde_json::{Value, json};

const KEY: &str = "sk-test-0123456789";

/// Answers like the documented response: one `embedding` object per input, with `index`, returned in
/// reverse order to prove the client orders by `index`.
fn documented(req: &Recorded, dims: usize) -> (axum::http::StatusCode, Value) {
    let inputs = req.body["input"].as_array().cloned().unwrap_or_default();
    let mut data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let mut v = vec![0.0f32; dims];
            v[0] = text.as_str().unwrap().len() as f32;
            v[1] = i as f32;
            json!({"object": "embedding", "index": i, "embedding": v})
        })
        .collect();
    data.reverse();
    (
        axum::http::StatusCode::OK,
        json!({"object": "list", "data": data, "model": req.body["model"],
               "usage": {"prompt_tokens": 8, "total_tokens": 8}}),
    )
}

fn config(url: String, dims: Option<usize>) -> OpenAiConfig {
    OpenAiConfig {
        base_url: format!("{url}/v1"),
        auth: Auth::Bearer(KEY.into()),
        model: "text-embedding-3-small".into(),
        dimensions: dims,
        timeout: Duration::from_secs(5),
    }
}

fn fast_retries() -> PipelineConfig {
    PipelineConfig {
        batch_size: 3,
        concurrency: 2,
        timeout: Duration::from_secs(5),
        retry: RetryPolicy {
            max_retries: 2,
            base: Duration::from_millis(5),
            max: Duration::from_millis(1500),
        },
    }
}

#[tokio::test]
async fn sends_the_documented_request_and_orders_by_index() {
    let fake = Fake::start(|r| documented(r, 256)).await;
    let e = OpenAiEmbedder::new(config(fake.url(), Some(256))).unwrap();
    assert_eq!(e.info().dims, 256);
    let texts: Vec<String> = ["a", "bb", "ccc"].map(String::from).to_vec();
    let out = e.embed(&texts).await.unwrap();
    assert_eq!(
        out.iter().map(|v| (v[0], v[1])).collect::<Vec<_>>(),
        [(1.0, 0.0), (2.0, 1.0), (3.0, 2.0)]
    );
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.uri, "/v1/embeddings");
    assert_eq!(r.headers["authorization"], format!("Bearer {KEY}"));
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(
        r.body,
        json!({"model": "text-embedding-3-small", "input": ["a", "bb", "ccc"],
               "encoding_format": "float", "dimensions": 256})
    );
    // Without EMBEDDING_DIMENSIONS the model's own size is used and `dimensions` is not sent.
    let e = OpenAiEmbedder::new(config(fake.url(), None)).unwrap();
    assert_eq!(e.info().dims, 1536);
    e.embed(&texts).await.unwrap();
    assert!(fake.requests()[1].body.get("dimensions").is_none());
}

#[tokio::test]
async fn azure_style_uses_the_deployment_url_and_api_key_header() {
    let fake = Fake::start(|r| documented(r, 8)).await;
    let e = OpenAiEmbedder::new(OpenAiConfig {
        base_url: fake.url(),
        auth: Auth::Azure {
            api_key: KEY.into(),
            api_version: "2024-02-01".into(),
        },
        model: "my-deployment".into(),
        dimensions: Some(8),
        timeout: Duration::from_secs(5),
    })
    .unwrap();
    e.embed(&["x".to_owned()]).await.unwrap();
    let r = &fake.requests()[0];
    assert_eq!(
        r.uri,
        "/openai/deployments/my-deployment/embeddings?api-version=2024-02-01"
    );
    assert_eq!(r.headers["api-key"], KEY);
    assert!(r.headers.get("authorization").is_none());
}

#[tokio::test]
async fn batches_and_retries_429_honouring_retry_after_then_5xx() {
    let fake = Fake::start(|r| documented(r, 4)).await;
    fake.then(
        429,
        &[("retry-after", "1")],
        json!({"error": {"message": "Rate limit reached for requests", "type": "requests",
                         "param": null, "code": "rate_limit_exceeded"}}),
    )
    .then(
        500,
        &[],
        json!({"error": {"message": "The server had an error while processing your request.",
                         "type": "server_error", "param": null, "code": null}}),
    );
    let p = Pipeline::new(
        OpenAiEmbedder::new(config(fake.url(), Some(4))).unwrap(),
        fast_retries(),
    );
    let texts: Vec<String> = (0..7).map(|i| "x".repeat(i + 1)).collect();
    let out = p.embed(&texts).await.unwrap();
    assert_eq!(
        out.iter().map(|v| v[0]).collect::<Vec<_>>(),
        [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0],
        "input order kept across batches"
    );
    let sizes: Vec<usize> = fake
        .requests()
        .iter()
        .map(|r| r.body["input"].as_array().unwrap().len())
        .collect();
    // 3 batches of ≤3, plus 2 retried attempts.
    assert_eq!(sizes.len(), 5, "{sizes:?}");
    assert!(sizes.iter().all(|&s| s <= 3));
}

#[tokio::test]
async fn errors_are_typed_and_never_carry_the_key() {
    let fake = Fake::start(|r| documented(r, 4)).await;
    fake.then(
        401,
        &[],
        json!({"error": {"message": "Incorrect API key provided: sk-test-****6789.",
                         "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}}),
    )
    .then(
        400,
        &[],
        json!({"error": {"message": "'$.input' is invalid.", "type": "invalid_request_error",
                         "param": null, "code": null}}),
    );
    let e = OpenAiEmbedder::new(config(fake.url(), Some(4))).unwrap();
    let err = e.embed(&["x".to_owned()]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized);
    assert!(
        err.to_string().contains("Incorrect API key provided"),
        "{err}"
    );
    let err = e.embed(&["x".to_owned()]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(
        !format!("{err:?} {e:?}").contains(KEY),
        "the key never leaks"
    );

    // A server answering the wrong size is caught by the pipeline's dimension check.
    let wrong = Fake::start(|r| documented(r, 5)).await;
    let p = Pipeline::new(
        OpenAiEmbedder::new(config(wrong.url(), Some(4))).unwrap(),
        fast_retries(),
    );
    let err = p.embed(&["x".to_owned()]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DimensionMismatch);

    // Nothing listening: transient, so retried, then Unavailable.
    let dead = OpenAiEmbedder::new(config("http://127.0.0.1:9".into(), Some(4))).unwrap();
    let err = dead.embed(&["x".to_owned()]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    // An unknown model without EMBEDDING_DIMENSIONS is a configuration error.
    let mut unknown = config(fake.url(), None);
    unknown.model = "my-local-model".into();
    assert_eq!(
        OpenAiEmbedder::new(unknown).unwrap_err().kind(),
        ErrorKind::Config
    );
}

/// No key in `Debug` output, either style; an empty batch costs no request; an answer missing an
/// input's embedding is a backend error, never a short or shifted result.
#[tokio::test]
async fn keys_stay_out_of_debug_and_short_answers_are_errors() {
    for auth in [
        Auth::Bearer(KEY.into()),
        Auth::Azure {
            api_key: KEY.into(),
            api_version: "2024-02-01".into(),
        },
    ] {
        let text = format!("{auth:?}");
        assert!(!text.contains(KEY), "{text}");
        assert!(text.contains("redacted"), "{text}");
    }
    let fake = Fake::start(|r| {
        let (status, mut body) = documented(r, 8);
        body["data"].as_array_mut().unwrap().pop();
        (status, body)
    })
    .await;
    let e = OpenAiEmbedder::new(config(fake.url(), Some(8))).unwrap();
    assert!(e.embed(&[]).await.unwrap().is_empty());
    assert!(fake.requests().is_empty(), "an empty batch sent a request");
    let err = e
        .embed(&["one".to_owned(), "two".to_owned()])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Backend, "{err}");
    assert!(err.to_string().contains("no embedding for input"), "{err}");
}
