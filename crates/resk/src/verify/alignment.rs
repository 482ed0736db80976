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
use resk_embed_local::{LocalEmbedder, WordCache, WordVectors, word_cache};

use super::text;

/// The default bound: see `docs/eval` for how it was chosen on all-MiniLM-L6-v2.
pub const DEFAULT_BOUND: f32 = 0.57;

/// Bytes of word vectors remembered when the embedder brings no memory of its own (64 MiB: some
/// 4 000 questions with a 384-dimension model).
const CACHE_BYTES: u64 = 64 << 20;

/// Token alignment with a local sentence-transformers model.
///
/// Word vectors are remembered per text (a question's contextual vectors depend on it alone). Give
/// it an embedder built [`with_word_cache`](LocalEmbedder::with_word_cache) — the same one the
/// semantic layer embeds with — and it reads the vectors that embedding the query and indexing the
/// cached question already computed: no forward pass of its own. Otherwise it keeps its own memory
/// and runs one forward pass over what it has not seen.
#[derive(Clone)]
pub struct Alignment {
    info: VerifierInfo,
    embedder: LocalEmbedder,
    bound: f32,
    vectors: WordCache,
}

impl std::fmt::Debug for Alignment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alignment")
            .field("embedder", &self.embedder)
            .field("bound", &self.bound)
            .finish_non_exhaustive()
    }
}

impl Alignment {
    /// Alignment with `embedder`'s model at [`DEFAULT_BOUND`].
    pub fn new(embedder: LocalEmbedder) -> Self {
        Self {
            info: VerifierInfo::new("alignment"),
            bound: DEFAULT_BOUND,
            vectors: embedder
                .word_cache()
                .cloned()
                .unwrap_or_else(|| word_cache(CACHE_BYTES)),
            embedder,
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

    /// The word vectors of `a` and `b`, from memory or one forward pass over what is missing.
    async fn word_vectors(
        &self,
        a: &str,
        b: &str,
    ) -> Result<(std::sync::Arc<WordVectors>, std::sync::Arc<WordVectors>)> {
        let (ka, kb) = (a.to_owned(), b.to_owned());
        let (ca, cb) = (self.vectors.get(&ka), self.vectors.get(&kb));
        let missing: Vec<String> = [(&ka, &ca), (&kb, &cb)]
            .into_iter()
            .filter(|(_, cached)| cached.is_none())
            .map(|(k, _)| k.clone())
            .collect();
        let mut fresh = if missing.is_empty() {
            Vec::new()
        } else {
            self.embedder.word_vectors(&missing).await?
        }
        .into_iter()
        .map(std::sync::Arc::new);
        let mut take = |cached: Option<std::sync::Arc<WordVectors>>, key: &String| {
            cached.or_else(|| {
                let v = fresh.next()?;
                self.vectors.insert(key.clone(), std::sync::Arc::clone(&v));
                Some(v)
            })
        };
        match (take(ca, &ka), take(cb, &kb)) {
            (Some(va), Some(vb)) => Ok((va, vb)),
            _ => Err(resk_core::Error::new(
                resk_core::ErrorKind::Backend,
                "alignment",
                "verify",
                "the model returned fewer word vectors than texts",
            )),
        }
    }

    /// The verdict on two questions.
    pub async fn check(&self, a: &str, b: &str) -> Result<Judgement> {
        let (va, vb) = self.word_vectors(a, b).await?;
        let (va, vb) = (&*va, &*vb);
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
