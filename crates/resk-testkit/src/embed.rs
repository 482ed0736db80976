//! Embedder scenarios, one per bullet of `Embedder`'s contract. Run them on the raw embedder (not
//! behind a pipeline, which batches and retries on its behalf).

use resk_core::{Embedder, ErrorKind};

fn texts(items: &[&str]) -> Vec<String> {
    items.iter().map(|t| (*t).to_owned()).collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na == 0.0 || nb == 0.0 {
        return if na == nb { 1.0 } else { 0.0 };
    }
    dot / (na * nb)
}

/// One vector per text, each of `info().dims` finite values.
pub async fn dims_match_info<E: Embedder>(e: &E) {
    let input = texts(&["How do I reset my password?", "Where is my order?", "x"]);
    let out = e.embed(&input).await.unwrap();
    assert_eq!(out.len(), input.len());
    for v in &out {
        assert_eq!(v.len(), e.info().dims);
        assert!(v.iter().all(|x| x.is_finite()), "a value is not finite");
    }
}

/// Output order is input order: a text's vector in a batch is its vector alone, in any position.
pub async fn batch_order_preserved<E: Embedder>(e: &E) {
    let input = texts(&[
        "first question",
        "a second, longer question about shipping",
        "third",
    ]);
    let batch = e.embed(&input).await.unwrap();
    let reversed: Vec<String> = input.iter().rev().cloned().collect();
    let backwards = e.embed(&reversed).await.unwrap();
    for (i, text) in input.iter().enumerate() {
        let alone = e.embed(std::slice::from_ref(text)).await.unwrap();
        assert!(
            cosine(&batch[i], &alone[0]) > 0.999,
            "text {i} embeds differently in a batch than alone"
        );
        assert!(
            cosine(&batch[i], &backwards[input.len() - 1 - i]) > 0.999,
            "text {i} embeds differently in another position"
        );
    }
    assert!(
        cosine(&batch[0], &batch[1]) < 0.999,
        "different texts got the same vector"
    );
}

/// The same text gives the same vector each time.
pub async fn deterministic<E: Embedder>(e: &E) {
    let input = texts(&["Is there a student discount?"]);
    let a = e.embed(&input).await.unwrap();
    let b = e.embed(&input).await.unwrap();
    assert!(cosine(&a[0], &b[0]) > 0.9999);
}

/// An empty batch is an empty answer; a blank text and a batch over `max_batch` are `InvalidInput`.
pub async fn bad_input_refused<E: Embedder>(e: &E) {
    assert!(e.embed(&[]).await.unwrap().is_empty());
    for blank in ["", "   "] {
        let err = e.embed(&texts(&["fine", blank])).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    }
    let max = e.info().max_batch;
    if max < 100_000 {
        let too_many: Vec<String> = (0..=max).map(|i| format!("text {i}")).collect();
        let err = e.embed(&too_many).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    }
}

/// Any Unicode text embeds: scripts, combining marks, emoji, right-to-left.
pub async fn unicode<E: Embedder>(e: &E) {
    let input = texts(&[
        "Straße naïve café",
        "東京の天気は？",
        "Привет 👋🏽",
        "مرحبا بالعالم",
    ]);
    let out = e.embed(&input).await.unwrap();
    assert_eq!(out.len(), input.len());
    assert!(out.iter().all(|v| v.len() == e.info().dims));
}
