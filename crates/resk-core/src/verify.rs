//! Verifiers: a second opinion on a semantic candidate before its answer is served.
//!
//! A vector search ranks cached questions by the cosine of two embeddings, and that one number
//! cannot tell *how do I enable 2FA?* from *how do I disable 2FA?* (0.88 with all-MiniLM-L6-v2).
//! A [`Verifier`] looks at the two questions themselves and says [`Verdict::Accept`],
//! [`Verdict::Reject`] or [`Verdict::Abstain`], with a reason. The engine (`resk`) runs its
//! verifiers in order, cheapest first, on every candidate in the similarity band between its
//! `reject` and `accept` bounds (and, for verifiers whose [`VerifierInfo::band_only`] is false, on
//! every candidate); implementations live in `resk` (guards, token alignment, cross-encoder, LLM
//! judge) and anywhere else a user writes one.

use std::{any::Any, borrow::Cow, fmt::Debug, future::Future, sync::Arc};

use crate::{BoxFuture, Result};

/// What a verifier concluded about a candidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Verdict {
    /// The cached answer answers the new question: serve it (later verifiers are not asked).
    Accept,
    /// The questions ask different things: do not serve (later verifiers are not asked).
    Reject,
    /// No opinion: ask the next verifier.
    Abstain,
}

impl Verdict {
    /// `accept`, `reject` or `abstain` (metric labels, JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accept => "accept",
            Self::Reject => "reject",
            Self::Abstain => "abstain",
        }
    }
}

/// A verdict and why.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Judgement {
    /// The verdict.
    pub verdict: Verdict,
    /// A short machine-readable reason, `snake_case` first word (`negation`, `antonym`,
    /// `number`, `aligned`, …), optionally followed by `: ` and detail for people. The part before
    /// the colon is a metric label, so it must come from a small fixed set.
    pub reason: Cow<'static, str>,
}

impl Judgement {
    /// Accept, because `reason`.
    pub fn accept(reason: impl Into<Cow<'static, str>>) -> Self {
        Self {
            verdict: Verdict::Accept,
            reason: reason.into(),
        }
    }

    /// Reject, because `reason`.
    pub fn reject(reason: impl Into<Cow<'static, str>>) -> Self {
        Self {
            verdict: Verdict::Reject,
            reason: reason.into(),
        }
    }

    /// No opinion (`reason` says what was checked).
    pub fn abstain(reason: impl Into<Cow<'static, str>>) -> Self {
        Self {
            verdict: Verdict::Abstain,
            reason: reason.into(),
        }
    }

    /// The reason's label: the part before the first `:`.
    pub fn label(&self) -> &str {
        self.reason
            .split_once(':')
            .map_or(&*self.reason, |(label, _)| label)
    }
}

/// A verifier's name and where it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifierInfo {
    /// Short name (`guards`, `alignment`, `cross-encoder`, `judge`): metric label and the `by` of
    /// a verification.
    pub name: &'static str,
    /// `true`: asked only about candidates between the `reject` and `accept` bounds (a model or an
    /// LLM: too slow or too costly to ask about every candidate). `false`: asked about every
    /// candidate above `reject`, the sure ones too (a rule check that costs microseconds: a
    /// reversed conversion scores 0.995 and is still the wrong answer).
    pub band_only: bool,
}

impl VerifierInfo {
    /// A verifier called `name`, asked only in the band.
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            band_only: true,
        }
    }

    /// Also ask it about candidates at or above `accept`.
    pub fn everywhere(mut self) -> Self {
        self.band_only = false;
        self
    }
}

/// One turn of a conversation before the question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Turn<'a> {
    /// `system`, `user`, `assistant`, …
    pub role: &'a str,
    /// What was said.
    pub content: &'a str,
}

/// What a verifier worked out from the query alone ([`Verifier::prepare`]), handed back to it
/// with every candidate of that query ([`Pair::prepared`]).
///
/// Opaque to the engine: each verifier stores its own type and reads it back with
/// [`Prepared::get`]. Cloning shares it.
#[derive(Clone)]
pub struct Prepared(Arc<dyn Any + Send + Sync>);

impl Prepared {
    /// Wrap a verifier's own analysis of a query.
    pub fn new<T: Any + Send + Sync>(analysis: T) -> Self {
        Self(Arc::new(analysis))
    }

    /// The analysis, if it is a `T` (`None` for another verifier's type).
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.0.downcast_ref()
    }
}

impl Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Prepared(..)")
    }
}

/// The two questions a verifier compares.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct Pair<'a> {
    /// The question being asked now.
    pub query: &'a str,
    /// The cached question whose answer would be served.
    pub cached: &'a str,
    /// Their similarity from the vector search.
    pub similarity: f32,
    /// The conversation before the question, when the lookup carried one (both questions share it:
    /// a different context is a different partition and never a candidate).
    pub context: &'a [Turn<'a>],
    /// What this verifier's [`Verifier::prepare`] returned for `query`, when the caller prepared
    /// it. A verifier must give the same verdict with and without it.
    pub prepared: Option<&'a Prepared>,
}

impl<'a> Pair<'a> {
    /// The pair `query` / `cached` at `similarity`, without context.
    pub fn new(query: &'a str, cached: &'a str, similarity: f32) -> Self {
        Self {
            query,
            cached,
            similarity,
            context: &[],
            prepared: None,
        }
    }

    /// With the conversation before the question.
    pub fn with_context(mut self, context: &'a [Turn<'a>]) -> Self {
        self.context = context;
        self
    }

    /// With what the verifier about to judge it prepared from `query` (see
    /// [`Verifier::prepare`]); `None` leaves the verifier to analyse the query itself.
    pub fn with_prepared(mut self, prepared: Option<&'a Prepared>) -> Self {
        self.prepared = prepared;
        self
    }
}

/// Decides whether a cached question's answer answers a new question.
///
/// An error (or a time-out the engine imposes) counts as [`Verdict::Reject`]: a verifier that
/// cannot answer must not let a wrong answer through.
pub trait Verifier: Send + Sync + Debug + 'static {
    /// Name and placement.
    fn info(&self) -> &VerifierInfo;

    /// Analyse the query on its own, before any candidate is known; the engine calls it once per
    /// semantic lookup, before the query's embedding, and hands the result back with each
    /// candidate ([`Pair::prepared`]). Default: nothing to prepare.
    ///
    /// Why: a local model's forward pass streams its weights through the CPU caches, so work done
    /// after the embedding runs from memory; the query's half of a rule check (its words, stems,
    /// numbers) costs several times more there than before the pass. Keep it CPU-only and
    /// microseconds long: it runs on the lookup's task.
    fn prepare(&self, query: &str) -> Option<Prepared> {
        let _ = query;
        None
    }

    /// The verdict on `pair`.
    fn verify(&self, pair: &Pair<'_>) -> impl Future<Output = Result<Judgement>> + Send;
}

#[allow(missing_docs)] // each method mirrors the Verifier method of the same name
pub trait VerifierDyn: Send + Sync + Debug + 'static {
    fn info_dyn(&self) -> &VerifierInfo;
    fn prepare_dyn(&self, query: &str) -> Option<Prepared>;
    fn verify_dyn<'a>(&'a self, pair: &'a Pair<'a>) -> BoxFuture<'a, Result<Judgement>>;
}

impl<T: Verifier + ?Sized> VerifierDyn for T {
    fn info_dyn(&self) -> &VerifierInfo {
        self.info()
    }
    fn prepare_dyn(&self, query: &str) -> Option<Prepared> {
        self.prepare(query)
    }
    fn verify_dyn<'a>(&'a self, pair: &'a Pair<'a>) -> BoxFuture<'a, Result<Judgement>> {
        Box::pin(self.verify(pair))
    }
}

impl<T: VerifierDyn + ?Sized> Verifier for Arc<T> {
    fn info(&self) -> &VerifierInfo {
        (**self).info_dyn()
    }
    fn prepare(&self, query: &str) -> Option<Prepared> {
        (**self).prepare_dyn(query)
    }
    async fn verify(&self, pair: &Pair<'_>) -> Result<Judgement> {
        (**self).verify_dyn(pair).await
    }
}

/// A verifier behind a pointer, as the engine holds them.
pub type SharedVerifier = Arc<dyn VerifierDyn>;
