//! Token alignment: every content word of each question must find a counterpart in the other.
//!
//! Both questions go through the local model in one forward pass (the model the embedder already
//! loaded: no extra download); each word gets its contextual vector (the average of its word
//! pieces' last-layer vectors). A content word (not a function word, a negation or a number —
//! the guards judge those) that the other question does not also say (same stem) is *aligned*
//! when some word of the other question is at least `bound` similar to it: a synonym in context
//! (*shipping*/*delivery*, *cancel*/*stop*). All aligned: accept (`aligned`); one not: reject
//! (`unaligned`, naming the word and its best counterpart).
//!
//! What it catches: a content word replaced by another that the sentence vector averages away —
//! *password* vs *username*, *CEO* vs *founder*, *search history* vs *browsing history*. What it
//! misses: replacements the model itself places close together in context (two similar drugs,
//! two neighbouring countries can align above the bound), and paraphrases that say a thing in
//! words with no one-word counterpart (*eggless* / *without eggs* aligns, a full rephrasing may
//! not): a cross-encoder or an LLM judge is the next step for those.
//! Cost: one forward pass over the two questions, about one embedding's time.

use std::collections::HashSet;

use resk_core::{Judgement, Pair, Result, Verifier, VerifierInfo};
use resk_embed_local::{LocalEmbedder, WordVectors};

use super::text;

/// The default bound: see `docs/eval` for how it was chosen on all-MiniLM-L6-v2.
pub const DEFAULT_BOUND: f32 = 0.57;

/// Token alignment with a local sentence-transformers model.
#[derive(Debug, Clone)]
pub struct Alignment {
    info: VerifierInfo,
    embedder: LocalEmbedder,
    bound: f32,
}

impl Alignment {
    /// Alignment with `embedder`'s model at [`DEFAULT_BOUND`].
    pub fn new(embedder: LocalEmbedder) -> Self {
        Self {
            info: VerifierInfo::new("alignment"),
            embedder,
            bound: DEFAULT_BOUND,
        }
    }

    /// The lowest similarity at which two words count as counterparts.
    pub fn bound(mut self, bound: f32) -> Self {
        self.bound = bound;
        self
    }

    /// The worst-aligned content word of `a` that `b` does not share (by stem): `(word, best
    /// counterpart in b, similarity)`.
    fn worst<'w>(a: &'w WordVectors, b: &'w WordVectors) -> Option<(&'w str, &'w str, f32)> {
        let stems_b: HashSet<String> = b.words.iter().map(|w| text::stem(w)).collect();
        let mut worst: Option<(&str, &str, f32)> = None;
        for (word, vector) in a.words.iter().zip(&a.vectors) {
            let parsed = text::words(word);
            let unshared = match parsed.as_slice() {
                [w] => w.content() && !stems_b.contains(&w.stem),
                _ => false,
            };
            if !unshared {
                continue;
            }
            let (counterpart, similarity) = b
                .words
                .iter()
                .zip(&b.vectors)
                .filter(|(w, _)| w.chars().any(char::is_alphanumeric))
                .map(|(w, v)| (w.as_str(), dot(vector, v)))
                .fold(
                    ("", f32::MIN),
                    |best, (w, s)| if s > best.1 { (w, s) } else { best },
                );
            if worst.is_none_or(|(_, _, s)| similarity < s) {
                worst = Some((word, counterpart, similarity));
            }
        }
        worst
    }

    /// The verdict on two questions.
    pub async fn check(&self, a: &str, b: &str) -> Result<Judgement> {
        let vectors = self
            .embedder
            .word_vectors(&[a.to_owned(), b.to_owned()])
            .await?;
        let [va, vb] = vectors.as_slice() else {
            return Ok(Judgement::abstain("no_vectors"));
        };
        let worst = [Self::worst(va, vb), Self::worst(vb, va)]
            .into_iter()
            .flatten()
            .min_by(|x, y| x.2.total_cmp(&y.2));
        Ok(match worst {
            // Every content word is in both questions (the guards judged order and negation).
            None => Judgement::accept("aligned: same content words"),
            Some((word, other, s)) if s < self.bound => Judgement::reject(format!(
                "unaligned: `{word}` has no counterpart (best `{other}` {s:.2})"
            )),
            Some((word, _, s)) => Judgement::accept(format!("aligned: weakest `{word}` {s:.2}")),
        })
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

impl Verifier for Alignment {
    fn info(&self) -> &VerifierInfo {
        &self.info
    }

    async fn verify(&self, pair: &Pair<'_>) -> Result<Judgement> {
        self.check(pair.query, pair.cached).await
    }
}
