//! Against local fakes of the Hugging Face Inference API (feature-extraction task, `POST
//! /models/{id}/pipeline/feature-extraction`, router.huggingface.co/hf-inference, 2025-2026) and
//! text-embeddings-inference's `POST /embed` (TEI OpenAPI 1.x): exact requests, documented answers and
//! error bodies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use resk_core::{Embedder, ErrorKind};
use resk_embed::{Pipeline, PipelineConfig, RetryPolicy};
use resk_embed_hf::{HfConfig, HfEmbedder, HfStyle};
use resk_testkit::http::{Fake, Recorded};
use serde_json::{Value, json};

const TOKEN: &str = "hf_test_abcdef";

fn vectors(req: &Recorded) -> (axum::http::StatusCode, Value) {
    let inputs = req.body["inputs"].as_array().cloned().unwrap_or_default();
    let out: Vec<Vec<f32>> = inputs
        .iter()
        .map(|t| vec![t.as_str().unwrap().len() as f32, 0.0, 0.0])
        .collect();
    (axum::http::StatusCode::OK, json!(out))
}

fn config(url: String, style: HfStyle, token: Option<&str>) -> HfConfig {
    HfConfig {
        base_url: url,
        token: token.map(str::to_owned),
        model: "sentence-transformers/all-MiniLM-L6-v2".into(),
        dims: 3,
        style,
        timeout: Duration::from_secs(5),
    }
}

#[tokio::test]
async fn inference_api_request_is_the_documented_one() {
    let fake = Fake::start(vectors).await;
    let e = HfEmbedder::new(config(fake.url(), HfStyle::Inference, Some(TOKEN))).unwrap();
    let out = e.embed(&["ab".to_owned(), "abc".to_owned()]).await.unwrap();
    assert_eq!(out, vec![vec![2.0, 0.0, 0.0], vec![3.0, 0.0, 0.0]]);
    let r = &fake.requests()[0];
    assert_eq!(r.method, "POST");
    assert_eq!(
        r.uri,
        "/models/sentence-transformers/all-MiniLM-L6-v2/pipeline/feature-extraction"
    );
    assert_eq!(r.headers["authorization"], format!("Bearer {TOKEN}"));
    assert_eq!(r.body, json!({"inputs": ["ab", "abc"]}));
    // The Inference API needs a token.
    let err = HfEmbedder::new(config(fake.url(), HfStyle::Inference, None)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
}

#[tokio::test]
async fn tei_request_and_error_bodies() {
    let fake = Fake::start(vectors).await;
    let e = HfEmbedder::new(config(fake.url(), HfStyle::Tei, None)).unwrap();
    e.embed(&["x".to_owned()]).await.unwrap();
    let r = &fake.requests()[0];
    assert_eq!(r.uri, "/embed");
    assert!(r.headers.get("authorization").is_none());
    assert_eq!(
        r.body,
        json!({"inputs": ["x"], "normalize": true, "truncate": true})
    );

    fake.then(
        413,
        &[],
        json!({"error": "Batch size error", "error_type": "validation"}),
    )
    .then(
        424,
        &[],
        json!({"error": "Inference failed", "error_type": "backend"}),
    );
    let err = e.embed(&["x".to_owned()]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("Batch size error"), "{err}");
    let err = e.embed(&["x".to_owned()]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let too_many: Vec<String> = vec!["x".into(); 33];
    assert_eq!(
        e.embed(&too_many).await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
}

#[tokio::test]
async fn model_loading_503_is_retried() {
    let fake = Fake::start(vectors).await;
    fake.then(
        503,
        &[],
        json!({"error": "Model sentence-transformers/all-MiniLM-L6-v2 is currently loading",
               "estimated_time": 20.0}),
    );
    let p = Pipeline::new(
        HfEmbedder::new(config(fake.url(), HfStyle::Inference, Some(TOKEN))).unwrap(),
        PipelineConfig {
            retry: RetryPolicy {
                max_retries: 2,
                base: Duration::from_millis(5),
                max: Duration::from_millis(50),
            },
            ..PipelineConfig::default()
        },
    );
    let texts: Vec<String> = (0..40).map(|i| "y".repeat(i + 1)).collect();
    let out = p.embed(&texts).await.unwrap();
    assert_eq!(out.len(), 40);
    assert_eq!(out[39][0], 40.0);
    let sizes: Vec<usize> = fake
        .requests()
        .iter()
        .map(|r| r.body["inputs"].as_array().unwrap().len())
        .collect();
    assert!(
        sizes.iter().all(|&s| s <= 32),
        "batches respect TEI's limit: {sizes:?}"
    );
    assert!(!format!("{p:?}").contains(TOKEN));
}

/// No token in `Debug` output; an empty batch costs no request; an answer with fewer vectors than
/// inputs is a backend error, never a short result.
#[tokio::test]
async fn tokens_stay_out_of_debug_and_short_answers_are_errors() {
    let fake = Fake::start(|req| {
        let (status, body) = vectors(req);
        let mut list = body.as_array().unwrap().clone();
        list.pop();
        (status, json!(list))
    })
    .await;
    let cfg = config(fake.url(), HfStyle::Inference, Some(TOKEN));
    let text = format!("{cfg:?}");
    assert!(!text.contains(TOKEN), "{text}");
    assert!(text.contains("redacted"), "{text}");
    let e = HfEmbedder::new(cfg).unwrap();
    assert!(e.embed(&[]).await.unwrap().is_empty());
    assert!(fake.requests().is_empty(), "an empty batch sent a request");
    let err = e
        .embed(&["a".to_owned(), "bb".to_owned()])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Backend, "{err}");
    assert!(err.to_string().contains("1 vectors for 2 inputs"), "{err}");
}
