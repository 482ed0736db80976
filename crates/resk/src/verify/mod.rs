//! The decision stage after the vector search: which candidate's answer may be served.
//!
//! Candidates come from the vector search best first. Each is placed by its similarity:
//! below `threshold` (the *reject* bound) it is never a candidate; at or above `accept` it is
//! served unless a verifier that runs everywhere (the [`Guards`]) rejects it; in between (the
//! *band*) it goes through every verifier in order, cheapest first, and is served only when one
//! accepts it: a band candidate nobody vouches for is a miss. A verifier that errors or times out
//! rejects (fail closed) and marks the lookup degraded.
//!
//! Built in: [`Guards`] (rules, microseconds, on by default). Token alignment with the local model,
//! a cross-encoder and an LLM judge plug in as further [`Verifier`]s.

#[cfg(feature = "local")]
mod alignment;
#[cfg(feature = "local")]
mod cross_encoder;
mod guards;
#[cfg(feature = "judge")]
mod judge;
mod text;

use std::{borrow::Cow, time::Duration};

use resk_core::{Judgement, Pair, Prepared, SharedVerifier, Verdict, Verifier};

#[cfg(feature = "local")]
pub use alignment::{Alignment, DEFAULT_BOUND};
#[cfg(feature = "local")]
pub use cross_encoder::CrossEncoder;
pub use guards::Guards;
#[cfg(feature = "judge")]
pub use judge::{Judge, JudgeConfig};

/// How a candidate was decided: served with [`Hit::verification`](crate::Hit::verification),
/// logged (debug) and counted for rejected ones.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Verification {
    /// Served (`Accept`) or not (`Reject`).
    pub verdict: Verdict,
    /// The verifier that decided (`guards`, …), or `similarity` when the similarity alone did
    /// (at or above `accept`, no verifier objecting; in the band, none accepting).
    pub by: &'static str,
    /// Why (the verifier's reason; `above_accept`, `unverified`, `timeout`, `error: …`).
    pub reason: Cow<'static, str>,
}

impl Verification {
    pub(crate) fn new(
        verdict: Verdict,
        by: &'static str,
        reason: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            verdict,
            by,
            reason: reason.into(),
        }
    }

    /// The reason's label: its part before the first `:` (a metric label).
    pub fn label(&self) -> &str {
        self.reason
            .split_once(':')
            .map_or(&*self.reason, |(label, _)| label)
    }
}

/// The verifiers and the zones.
#[derive(Clone, Debug)]
pub(crate) struct Pipeline {
    verifiers: Vec<SharedVerifier>,
    /// At or above: served unless an everywhere-verifier rejects; `None`: the lookup's threshold.
    pub(crate) accept: Option<f32>,
    /// Longest a verifier may take before it counts as a reject.
    timeout: Duration,
}

/// What each verifier prepared from one query ([`Verifier::prepare`]), in the pipeline's order:
/// made before the embedding, handed to each verifier with every candidate.
#[derive(Debug, Default)]
pub(crate) struct PreparedQuery(Vec<Option<Prepared>>);

/// A candidate's fate, and whether a verifier failed on the way.
#[derive(Debug)]
pub(crate) struct Decision {
    pub(crate) verification: Verification,
    pub(crate) degraded: bool,
}

impl Pipeline {
    pub(crate) fn new(
        verifiers: Vec<SharedVerifier>,
        accept: Option<f32>,
        timeout: Duration,
    ) -> Self {
        Self {
            verifiers,
            accept,
            timeout,
        }
    }

    /// How long a verifier may take.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The verifiers' names, in order.
    pub(crate) fn names(&self) -> Vec<&'static str> {
        self.verifiers.iter().map(|v| v.info().name).collect()
    }

    /// Each verifier's preparation of `query` (see [`Verifier::prepare`]): call it before the
    /// query's embedding.
    pub(crate) fn prepare(&self, query: &str) -> PreparedQuery {
        PreparedQuery(self.verifiers.iter().map(|v| v.prepare(query)).collect())
    }

    /// Decide `pair` (its similarity is at or above `threshold`, the lookup's reject bound);
    /// `prepared`: [`Pipeline::prepare`] of its query (or the default: each verifier analyses
    /// the query itself); `entry_accept`: the matched entry's own accept bound, learnt from
    /// feedback.
    pub(crate) async fn decide(
        &self,
        pair: &Pair<'_>,
        prepared: &PreparedQuery,
        threshold: f32,
        entry_accept: Option<f32>,
    ) -> Decision {
        let sure = pair.similarity >= self.accept.unwrap_or(threshold)
            || entry_accept.is_some_and(|a| pair.similarity >= a);
        let mut degraded = false;
        for (n, verifier) in self.verifiers.iter().enumerate() {
            let info = verifier.info();
            if sure && info.band_only {
                continue;
            }
            let pair = pair.with_prepared(prepared.0.get(n).and_then(Option::as_ref));
            let judged = tokio::time::timeout(self.timeout, verifier.verify(&pair)).await;
            let judgement = match judged {
                Ok(Ok(judgement)) => judgement,
                Ok(Err(err)) => {
                    degraded = true;
                    tracing::warn!(verifier = info.name, error = %err, "verifier failed; the candidate is rejected");
                    Judgement::reject(format!("error: {}", err.kind().as_str()))
                }
                Err(_) => {
                    degraded = true;
                    tracing::warn!(
                        verifier = info.name,
                        timeout_ms = self.timeout.as_millis() as u64,
                        "verifier timed out; the candidate is rejected"
                    );
                    Judgement::reject("timeout")
                }
            };
            if judgement.verdict != Verdict::Abstain {
                return Decision {
                    verification: Verification::new(judgement.verdict, info.name, judgement.reason),
                    degraded,
                };
            }
        }
        let verification = if sure {
            Verification::new(Verdict::Accept, "similarity", "above_accept")
        } else {
            Verification::new(Verdict::Reject, "similarity", "unverified")
        };
        Decision {
            verification,
            degraded,
        }
    }
}

impl Pipeline {
    /// Every verdict `pair` could get, whatever its similarity: the first non-abstaining verdict of
    /// the verifiers that run everywhere (decides at or above accept), and of all verifiers in
    /// order (decides in the band); `Abstain` when none decided. Errors count as `Reject`.
    pub(crate) async fn judge(&self, pair: &Pair<'_>) -> (Verdict, Verdict) {
        let (mut everywhere, mut band) = (Verdict::Abstain, Verdict::Abstain);
        for verifier in &self.verifiers {
            if everywhere != Verdict::Abstain && band != Verdict::Abstain {
                break;
            }
            let verdict = match tokio::time::timeout(self.timeout, verifier.verify(pair)).await {
                Ok(Ok(judgement)) => judgement.verdict,
                _ => Verdict::Reject,
            };
            if band == Verdict::Abstain {
                band = verdict;
            }
            if everywhere == Verdict::Abstain && !verifier.info().band_only {
                everywhere = verdict;
            }
        }
        (everywhere, band)
    }
}

/// The default verifiers: the [`Guards`].
pub fn defaults() -> Vec<SharedVerifier> {
    vec![std::sync::Arc::new(Guards::default())]
}

/// The default verifiers with a local model: the [`Guards`], then [`Alignment`] with the
/// embedder's model (use with [`SemanticConfig::for_local_model`](crate::SemanticConfig::for_local_model)).
/// Give the semantic layer and this the same embedder built
/// `.with_word_cache(resk::embed::local::word_cache(64 << 20))`, so alignment reads the word
/// vectors the embedding pass computed instead of running the model again.
#[cfg(feature = "local")]
pub fn local_defaults(embedder: resk_embed_local::LocalEmbedder) -> Vec<SharedVerifier> {
    vec![
        std::sync::Arc::new(Guards::default()),
        std::sync::Arc::new(Alignment::new(embedder)),
    ]
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use resk_core::{Error, ErrorKind, Result, VerifierInfo};

    use super::*;

    #[derive(Debug)]
    struct Fixed(VerifierInfo, Option<Verdict>, Duration);

    impl Verifier for Fixed {
        fn info(&self) -> &VerifierInfo {
            &self.0
        }
        async fn verify(&self, _: &Pair<'_>) -> Result<Judgement> {
            tokio::time::sleep(self.2).await;
            match self.1 {
                Some(Verdict::Accept) => Ok(Judgement::accept("fixed")),
                Some(Verdict::Reject) => Ok(Judgement::reject("fixed")),
                Some(_) => Ok(Judgement::abstain("fixed")),
                None => Err(Error::new(
                    ErrorKind::Unavailable,
                    "fixed",
                    "verify",
                    "down",
                )),
            }
        }
    }

    /// Accepts a pair when it carries its own preparation of the query (the query's length),
    /// rejects one without it or with another's.
    #[derive(Debug)]
    struct Prepares(VerifierInfo);

    impl Verifier for Prepares {
        fn info(&self) -> &VerifierInfo {
            &self.0
        }
        fn prepare(&self, query: &str) -> Option<Prepared> {
            Some(Prepared::new(query.len()))
        }
        async fn verify(&self, pair: &Pair<'_>) -> Result<Judgement> {
            Ok(match pair.prepared.and_then(Prepared::get::<usize>) {
                Some(&len) if len == pair.query.len() => Judgement::accept("prepared"),
                _ => Judgement::reject("unprepared"),
            })
        }
    }

    #[tokio::test]
    async fn each_verifier_gets_its_own_preparation_of_the_query() {
        let timeout = Duration::from_millis(50);
        // A verifier that prepares nothing before one that does: the list stays aligned.
        let p = Pipeline::new(
            vec![
                fixed("x", Some(Verdict::Abstain), 0),
                Arc::new(Prepares(VerifierInfo::new("p"))),
            ],
            Some(0.9),
            timeout,
        );
        let pair = Pair::new("what is resk", "what's resk", 0.8);
        let prepared = p.prepare(pair.query);
        assert!(prepared.0[0].is_none() && prepared.0[1].is_some());
        let d = p.decide(&pair, &prepared, 0.5, None).await;
        assert_eq!(
            (
                d.verification.verdict,
                d.verification.by,
                &*d.verification.reason
            ),
            (Verdict::Accept, "p", "prepared")
        );
        let d = p.decide(&pair, &PreparedQuery::default(), 0.5, None).await;
        assert_eq!(d.verification.reason, "unprepared");
    }

    fn fixed(name: &'static str, v: Option<Verdict>, wait_ms: u64) -> SharedVerifier {
        Arc::new(Fixed(
            VerifierInfo::new(name),
            v,
            Duration::from_millis(wait_ms),
        ))
    }

    #[tokio::test]
    async fn zones_order_and_fail_closed() {
        let timeout = Duration::from_millis(50);
        let pair = |s| Pair::new("a", "b", s);
        let none = PreparedQuery::default();
        // In the band, nobody accepting is a reject; the first non-abstaining verifier decides.
        let p = Pipeline::new(
            vec![fixed("x", Some(Verdict::Abstain), 0)],
            Some(0.9),
            timeout,
        );
        let d = p.decide(&pair(0.8), &none, 0.5, None).await;
        assert_eq!(
            (d.verification.verdict, d.verification.by),
            (Verdict::Reject, "similarity")
        );
        let d = p.decide(&pair(0.95), &none, 0.5, None).await;
        assert_eq!(d.verification.reason, "above_accept");
        // Without a band, the lookup's threshold is the accept bound.
        let p = Pipeline::new(vec![fixed("x", Some(Verdict::Abstain), 0)], None, timeout);
        assert_eq!(
            p.decide(&pair(0.8), &none, 0.75, None)
                .await
                .verification
                .verdict,
            Verdict::Accept
        );
        assert_eq!(
            p.decide(&pair(0.8), &none, 0.85, None)
                .await
                .verification
                .verdict,
            Verdict::Reject
        );
        let p = Pipeline::new(
            vec![
                fixed("a", Some(Verdict::Accept), 0),
                fixed("r", Some(Verdict::Reject), 0),
            ],
            Some(0.9),
            timeout,
        );
        let d = p.decide(&pair(0.8), &none, 0.5, None).await;
        assert_eq!(
            (d.verification.verdict, d.verification.by),
            (Verdict::Accept, "a")
        );
        // A band-only verifier is not asked above accept.
        let p = Pipeline::new(
            vec![fixed("r", Some(Verdict::Reject), 0)],
            Some(0.9),
            timeout,
        );
        assert_eq!(
            p.decide(&pair(0.95), &none, 0.5, None)
                .await
                .verification
                .verdict,
            Verdict::Accept
        );
        // Errors and time-outs reject and degrade.
        for v in [
            fixed("down", None, 0),
            fixed("slow", Some(Verdict::Accept), 500),
        ] {
            let d = Pipeline::new(vec![v], Some(0.9), timeout)
                .decide(&pair(0.8), &none, 0.5, None)
                .await;
            assert_eq!(d.verification.verdict, Verdict::Reject);
            assert!(d.degraded, "{d:?}");
        }
    }
}
