#![doc = include_str!("../README.md")]

use resk_core::{Embedder, EmbedderInfo, Embedding, Result, normalize_query};

/// Values per vector.
pub const DIMS: usize = 512;
/// Texts per call (the work is microseconds per text; the bound only keeps calls short).
pub const MAX_BATCH: usize = 4096;
/// The model name, part of every semantic scope; bumped whenever the features change.
pub const MODEL: &str = "resk-lexical-v1";

/// Words that carry little meaning in a question; they still count, at a fifth of the weight.
const FUNCTION_WORDS: &[&str] = &[
    "a", "an", "the", "i", "me", "my", "we", "our", "you", "your", "it", "its", "is", "are", "was",
    "be", "do", "does", "did", "can", "could", "should", "would", "will", "how", "what", "which",
    "to", "of", "in", "on", "for", "with", "at", "by", "from", "and", "or", "please", "there",
    "this", "that", "get", "some", "any",
];
const FUNCTION_WEIGHT: f32 = 0.2;
const WORD_WEIGHT: f32 = 0.7;
/// Norm of one word's trigram features (each trigram weighs this over the square root of their
/// number), so long words do not dominate and a one-letter typo keeps most of a word's weight.
const TRIGRAM_WEIGHT: f32 = 1.0;

/// The built-in embedder: hashed word and character-trigram features, L2-normalised.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use resk_core::{Embedder, Metric};
/// let e = resk_embed_lexical::LexicalEmbedder::new();
/// let texts = ["How do I reset my password?", "how can i reset my pasword", "How do I reset my username?"]
///     .map(String::from);
/// let v = e.embed(&texts).await.unwrap();
/// let close = Metric::Cosine.similarity(&v[0], &v[1]);
/// let other = Metric::Cosine.similarity(&v[0], &v[2]);
/// assert!(close > 0.75 && other < 0.6, "{close} {other}");
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct LexicalEmbedder {
    info: EmbedderInfo,
}

impl Default for LexicalEmbedder {
    fn default() -> Self {
        Self::new()
    }
}

impl LexicalEmbedder {
    /// The embedder.
    pub fn new() -> Self {
        Self {
            info: EmbedderInfo::new("lexical", MODEL, DIMS, MAX_BATCH),
        }
    }

    /// Embed one text synchronously.
    pub fn embed_one(text: &str) -> Embedding {
        let mut v = vec![0.0f32; DIMS];
        let normalized = normalize_query(text);
        let words = normalized
            .split(|c: char| !c.is_alphanumeric() && c != '\'')
            .map(|w| w.trim_matches('\''))
            .filter(|w| !w.is_empty());
        for word in words {
            if FUNCTION_WORDS.contains(&word) {
                add(&mut v, b"w", word.as_bytes(), FUNCTION_WEIGHT);
                continue;
            }
            add(&mut v, b"w", word.as_bytes(), WORD_WEIGHT);
            let chars: Vec<char> = std::iter::once('#')
                .chain(word.chars())
                .chain(std::iter::once('#'))
                .collect();
            let grams = chars.len().saturating_sub(2).max(1);
            let weight = TRIGRAM_WEIGHT / (grams as f32).sqrt();
            let mut buf = String::new();
            for window in chars.windows(3) {
                buf.clear();
                buf.extend(window);
                add(&mut v, b"t", buf.as_bytes(), weight);
            }
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| *x /= norm);
        }
        v
    }
}

/// Signed feature hashing: the bucket and the sign come from one FNV-1a hash of (kind, feature).
fn add(v: &mut [f32], kind: &[u8], feature: &[u8], weight: f32) {
    let h = fnv1a(kind, feature);
    let bucket = (h % DIMS as u64) as usize;
    let sign = if (h >> 63) == 0 { 1.0 } else { -1.0 };
    v[bucket] += sign * weight;
}

fn fnv1a(kind: &[u8], feature: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in kind.iter().chain([0u8].iter()).chain(feature) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl Embedder for LexicalEmbedder {
    fn info(&self) -> &EmbedderInfo {
        &self.info
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Embedding>> {
        self.info.check_texts(texts)?;
        Ok(texts.iter().map(|t| Self::embed_one(t)).collect())
    }
}

#[cfg(test)]
mod tests {
    use resk_core::{ErrorKind, Metric};

    use super::*;

    fn sim(a: &str, b: &str) -> f32 {
        Metric::Cosine.similarity(
            &LexicalEmbedder::embed_one(a),
            &LexicalEmbedder::embed_one(b),
        )
    }

    #[test]
    fn catches_what_it_claims() {
        let base = "How do I reset my password?";
        for close in [
            "how do i reset my password",
            "HOW DO I RESET MY PASSWORD!!",
            "how can I reset my password",
            "how do i reset my pasword",
            "password reset: how do I",
        ] {
            let s = sim(base, close);
            assert!(s >= 0.75, "{close:?}: {s}");
        }
    }

    #[test]
    fn different_content_words_fall_below_paraphrases() {
        let base = "How do I reset my password?";
        let paraphrase = sim(base, "how can I reset my password");
        for far in [
            "How do I reset my username?",
            "What is the capital of France?",
            "delete my account",
        ] {
            let s = sim(base, far);
            assert!(
                s < 0.6 && s < paraphrase - 0.3,
                "{far:?}: {s} vs {paraphrase}"
            );
        }
        assert!(sim(base, "What is the capital of France?") < 0.2);
    }

    #[test]
    fn vectors_are_unit_length_deterministic_and_stable() {
        let v = LexicalEmbedder::embed_one("reset password");
        assert_eq!(v.len(), DIMS);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
        assert_eq!(v, LexicalEmbedder::embed_one("reset password"));
        // Pin the hash: persisted vectors must mean the same after an upgrade (bump MODEL otherwise).
        assert_eq!(fnv1a(b"w", b"password"), 0xffa1_1426_5a64_b26f);
        assert!(LexicalEmbedder::embed_one("   ").iter().all(|x| *x == 0.0));
    }

    #[tokio::test]
    async fn batch_limit_is_enforced() {
        let e = LexicalEmbedder::new();
        let too_many = vec![String::from("x"); MAX_BATCH + 1];
        let err = e.embed(&too_many).await.err().map(|e| e.kind());
        assert_eq!(err, Some(ErrorKind::InvalidInput));
    }
}
