//! Evaluation on a labelled set of question pairs: does a [`Cache`] serve the cached answer when
//! it should (a paraphrase) and only then (not a near-miss)?
//!
//! The set is a directory of TSV files, one per category (the file's stem names it; see
//! `docs/eval` for resk's own ≥ 400 pairs): `cached<TAB>query` per line, labelled *same ask* in the
//! file `paraphrase.tsv` and *different ask* elsewhere; or five columns
//! `cached context<TAB>cached<TAB>query context<TAB>query<TAB>0|1` for multi-turn pairs. Every pair
//! runs through the cache for real, in a tenant of its own: the cached question is written, the
//! new one looked up.

use std::{collections::BTreeMap, path::Path};

use crate::{Cache, Error, ErrorKind, Lookup, Message, Outcome, PutOptions, Result, TenantId};

/// One labelled pair.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Labelled {
    /// The category (the file's stem).
    pub category: String,
    /// `true`: the cached answer is right for the query.
    pub same: bool,
    /// The cached question.
    pub cached: String,
    /// The question asked.
    pub query: String,
    /// The conversation before the cached question (multi-turn pairs).
    pub cached_context: Option<String>,
    /// The conversation before the question asked (multi-turn pairs).
    pub query_context: Option<String>,
}

fn bad(message: String) -> Error {
    Error::new(ErrorKind::InvalidInput, "eval", "pairs", message)
}

/// Read every `*.tsv` file of `dir` (in name order); a malformed line is an error naming it.
pub fn load(dir: &Path) -> Result<Vec<Labelled>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| bad(format!("{}: {e}", dir.display())))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "tsv"))
        .collect();
    files.sort();
    let mut pairs = Vec::new();
    for file in files {
        let category = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text =
            std::fs::read_to_string(&file).map_err(|e| bad(format!("{}: {e}", file.display())))?;
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let cols: Vec<&str> = line.split('\t').collect();
            let pair = match cols.as_slice() {
                [cached, query] => Labelled {
                    category: category.clone(),
                    same: category == "paraphrase",
                    cached: (*cached).into(),
                    query: (*query).into(),
                    cached_context: None,
                    query_context: None,
                },
                [cc, cached, qc, query, same @ ("0" | "1")] => Labelled {
                    category: category.clone(),
                    same: *same == "1",
                    cached: (*cached).into(),
                    query: (*query).into(),
                    cached_context: Some((*cc).into()),
                    query_context: Some((*qc).into()),
                },
                _ => {
                    return Err(bad(format!(
                        "{}:{}: expected `cached<TAB>query` or `context<TAB>cached<TAB>context<TAB>query<TAB>0|1`",
                        file.display(),
                        n + 1
                    )));
                }
            };
            pairs.push(pair);
        }
    }
    Ok(pairs)
}

/// What the cache did with one pair.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Served {
    /// The cached answer was served.
    pub served: bool,
    /// The similarity of the hit, or of the best turned-down candidate.
    pub similarity: Option<f32>,
    /// How it was decided (`accept by alignment: …`, `exact`, `no candidate`).
    pub decision: String,
    /// How long the lookup took (the engine's own measure: key to answer).
    pub lookup: std::time::Duration,
}

/// Run `pair` through `cache` in tenant `eval-<index>`; `with_context` sends the pair's contexts.
pub async fn run(
    cache: &Cache,
    index: usize,
    pair: &Labelled,
    with_context: bool,
) -> Result<Served> {
    let tenant = TenantId::new(&format!("eval-{index}"))?;
    let context = |c: &Option<String>| {
        c.as_ref()
            .filter(|_| with_context)
            .map(|c| vec![Message::new("user", c.as_str())])
    };
    let mut write = Lookup::new(tenant.clone(), pair.cached.as_str());
    let mut read = Lookup::new(tenant, pair.query.as_str());
    if let Some(c) = context(&pair.cached_context) {
        write = write.context(c);
    }
    if let Some(c) = context(&pair.query_context) {
        read = read.context(c);
    }
    cache
        .put(&write, "the cached answer", &PutOptions::new())
        .await?;
    let describe = |v: &crate::verify::Verification| {
        format!("{} by {}: {}", v.verdict.as_str(), v.by, v.reason)
    };
    Ok(match cache.lookup(&read).await? {
        Outcome::Hit(hit) => Served {
            lookup: hit.latency.total,
            served: true,
            similarity: hit.similarity,
            decision: hit
                .verification
                .as_ref()
                .map_or_else(|| "exact".to_owned(), describe),
        },
        Outcome::Miss(miss) => Served {
            lookup: miss.latency.total,
            served: false,
            similarity: miss.rejected.first().map(|r| r.similarity),
            decision: miss
                .rejected
                .first()
                .map_or_else(|| "no candidate".to_owned(), |r| describe(&r.verification)),
        },
    })
}

/// Counts of one category (or all).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Pairs.
    pub pairs: usize,
    /// Pairs labelled the same ask.
    pub same: usize,
    /// Of those, served (true hits).
    pub served_same: usize,
    /// Pairs labelled a different ask that were served (wrong answers).
    pub served_different: usize,
}

impl Tally {
    /// Count `pair` as `served` or not.
    pub fn add(&mut self, pair: &Labelled, served: bool) {
        self.pairs += 1;
        if pair.same {
            self.same += 1;
            self.served_same += usize::from(served);
        } else {
            self.served_different += usize::from(served);
        }
    }

    /// Pairs labelled a different ask.
    pub fn different(&self) -> usize {
        self.pairs - self.same
    }

    /// Share of served pairs that were right (1 when nothing was served).
    pub fn precision(&self) -> f64 {
        let served = self.served_same + self.served_different;
        if served == 0 {
            1.0
        } else {
            self.served_same as f64 / served as f64
        }
    }

    /// Share of same-ask pairs served.
    pub fn recall(&self) -> f64 {
        if self.same == 0 {
            0.0
        } else {
            self.served_same as f64 / self.same as f64
        }
    }

    /// `h/n hit, w/m wrong`, for a table cell.
    pub fn cell(&self) -> String {
        let mut parts = Vec::new();
        if self.same > 0 {
            parts.push(format!("{}/{} hit", self.served_same, self.same));
        }
        if self.different() > 0 {
            parts.push(format!(
                "{}/{} wrong",
                self.served_different,
                self.different()
            ));
        }
        parts.join(", ")
    }
}

/// Tallies by category, and over all pairs.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// By category name.
    pub categories: BTreeMap<String, Tally>,
    /// Over every pair.
    pub all: Tally,
}

impl Report {
    /// Count `pair` as `served` or not.
    pub fn add(&mut self, pair: &Labelled, served: bool) {
        self.categories
            .entry(pair.category.clone())
            .or_default()
            .add(pair, served);
        self.all.add(pair, served);
    }
}
