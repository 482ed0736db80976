//! A cross-encoder as a verifier: the two questions read together by a BERT-family
//! sequence-classification model ([`resk_embed_local::CrossEncoder`]), which scores whether they
//! mean the same. Score at or above `accept`: accept; below `reject`: reject; in between: abstain
//! (the next verifier decides, or the band's default: a miss).
//!
//! What it catches: what a model trained on duplicate questions (Quora, STS-B, PAWS) learnt to
//! separate — replaced entities, changed scope, reworded paraphrases the cosine scores low. What it
//! misses: what its training data did not cover; it is as good as the checkpoint the operator
//! supplies (resk ships none). Cost: one forward pass over the pair, per band candidate.

use resk_core::{Judgement, Pair, Result, Verifier, VerifierInfo};
use resk_embed_local::CrossEncoder as Model;

/// A cross-encoder verifier.
#[derive(Debug, Clone)]
pub struct CrossEncoder {
    info: VerifierInfo,
    model: Model,
    accept: f32,
    reject: f32,
}

impl CrossEncoder {
    /// Decide with `model`: accept from 0.5, reject below 0.5.
    pub fn new(model: Model) -> Self {
        Self {
            info: VerifierInfo::new("cross-encoder"),
            model,
            accept: 0.5,
            reject: 0.5,
        }
    }

    /// Accept at or above `accept`, reject below `reject` (`reject <= accept`; in between: no
    /// opinion).
    pub fn bounds(mut self, accept: f32, reject: f32) -> Self {
        self.accept = accept;
        self.reject = reject.min(accept);
        self
    }
}

impl Verifier for CrossEncoder {
    fn info(&self) -> &VerifierInfo {
        &self.info
    }

    async fn verify(&self, pair: &Pair<'_>) -> Result<Judgement> {
        let scores = self
            .model
            .score(&[(pair.cached.to_owned(), pair.query.to_owned())])
            .await?;
        let score = scores.first().copied().unwrap_or(0.0);
        Ok(if score >= self.accept {
            Judgement::accept(format!("cross_encoder_same: {score:.3}"))
        } else if score < self.reject {
            Judgement::reject(format!("cross_encoder_different: {score:.3}"))
        } else {
            Judgement::abstain(format!("cross_encoder_unsure: {score:.3}"))
        })
    }
}
