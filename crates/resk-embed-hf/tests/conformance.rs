//! The embedder contract, on the Hugging Face embedder against a local fake of the Inference API
//! (`POST /models/{model}/pipeline/feature-extraction`) answering vectors that depend on each
//! input text only.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use resk_embed_hf::{HfConfig, HfEmbedder, HfStyle};
use resk_testkit::http::{Fake, text_vector};
use serde_json::json;

async fn embedder() -> Option<HfEmbedder> {
    let fake = Fake::start(|req| {
        let out: Vec<Vec<f32>> = req.body["inputs"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|t| text_vector(t.as_str().unwrap_or_default(), 32))
            .collect();
        (axum::http::StatusCode::OK, json!(out))
    })
    .await;
    Some(
        HfEmbedder::new(HfConfig {
            base_url: fake.url(),
            token: Some("hf_test".into()),
            model: "sentence-transformers/all-MiniLM-L6-v2".into(),
            dims: 32,
            style: HfStyle::Inference,
            timeout: Duration::from_secs(5),
        })
        .unwrap(),
    )
}

resk_testkit::embedder_suite_if!(embedder());
