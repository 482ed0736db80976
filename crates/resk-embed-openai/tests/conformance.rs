//! The embedder contract, on the OpenAI embedder against a local fake of `POST /v1/embeddings`
//! answering the documented response with vectors that depend on each input text only.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use resk_embed_openai::{Auth, OpenAiConfig, OpenAiEmbedder};
use resk_testkit::http::{Fake, text_vector};
use serde_json::json;

async fn embedder() -> Option<OpenAiEmbedder> {
    let fake = Fake::start(|req| {
        let data: Vec<_> = req.body["input"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(i, t)| {
                json!({"object": "embedding", "index": i,
                       "embedding": text_vector(t.as_str().unwrap_or_default(), 64)})
            })
            .collect();
        (
            axum::http::StatusCode::OK,
            json!({"object": "list", "data": data, "model": req.body["model"],
                   "usage": {"prompt_tokens": 1, "total_tokens": 1}}),
        )
    })
    .await;
    Some(
        OpenAiEmbedder::new(OpenAiConfig {
            base_url: format!("{}/v1", fake.url()),
            auth: Auth::Bearer("sk-test".into()),
            model: "text-embedding-3-small".into(),
            dimensions: Some(64),
            timeout: Duration::from_secs(5),
        })
        .unwrap(),
    )
}

resk_testkit::embedder_suite_if!(embedder());
