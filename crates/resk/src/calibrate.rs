//! `resk-server calibrate`: choose the similarity threshold from labelled pairs, not folklore.
//!
//! Input: a TSV file, one pair per line: `label<TAB>query a<TAB>query b`, where label `1` means "the
//! same cached answer is right for both" and `0` means "it is not". Blank lines and lines starting
//! with `#` are skipped. Every query is embedded with the configured embedder; the pair's similarity
//! is the cosine of the two vectors. The threshold reported is the lowest one whose precision
//! (share of pairs at or above it that are labelled 1) reaches the target — so recall is as high as
//! that precision allows. It is placed halfway between the last accepted pair's similarity and the
//! next lower one, so the labelled set is classified the same way with a margin.

use std::path::Path;

use resk_core::{Embedder, Error, ErrorKind, Metric, Result, SharedEmbedder};

/// One labelled pair.
#[derive(Clone, Debug, PartialEq)]
pub struct Pair {
    /// Line number in the file (1-based).
    pub line: usize,
    /// `true`: the same answer fits both queries.
    pub duplicate: bool,
    /// First query.
    pub a: String,
    /// Second query.
    pub b: String,
}

/// The result of a calibration.
#[derive(Clone, Debug, PartialEq)]
pub struct Calibration {
    /// The recommended `SEMANTIC_THRESHOLD`, when the target precision is reachable.
    pub threshold: Option<f32>,
    /// Precision on the labelled pairs at that threshold.
    pub precision: f64,
    /// Recall on the labelled pairs at that threshold.
    pub recall: f64,
    /// Pairs labelled 1.
    pub positives: usize,
    /// Pairs labelled 0.
    pub negatives: usize,
    /// Every pair's similarity, best first: `(similarity, duplicate, line)`.
    pub scored: Vec<(f32, bool, usize)>,
}

fn bad(message: String) -> Error {
    Error::new(ErrorKind::InvalidInput, "calibrate", "pairs", message)
}

/// Parse the TSV text; the first bad line is an error naming it.
pub fn parse_pairs(text: &str) -> Result<Vec<Pair>> {
    let mut pairs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let [label, a, b] = fields.as_slice() else {
            return Err(bad(format!(
                "line {n}: expected 3 tab-separated fields (label, query a, query b), found {}",
                fields.len()
            )));
        };
        let duplicate = match label.trim() {
            "1" => true,
            "0" => false,
            other => {
                return Err(bad(format!(
                    "line {n}: label must be 0 or 1, not {other:?}"
                )));
            }
        };
        if a.trim().is_empty() || b.trim().is_empty() {
            return Err(bad(format!("line {n}: empty query")));
        }
        pairs.push(Pair {
            line: n,
            duplicate,
            a: (*a).to_owned(),
            b: (*b).to_owned(),
        });
    }
    Ok(pairs)
}

/// Embed every pair and find the threshold reaching `target_precision`.
pub async fn calibrate(
    embedder: &SharedEmbedder,
    pairs: &[Pair],
    target_precision: f64,
) -> Result<Calibration> {
    if !(0.0..=1.0).contains(&target_precision) {
        return Err(bad("target precision must be between 0 and 1".into()));
    }
    let positives = pairs.iter().filter(|p| p.duplicate).count();
    let negatives = pairs.len() - positives;
    if positives == 0 || negatives == 0 {
        return Err(bad(format!(
            "need pairs of both labels; found {positives} labelled 1 and {negatives} labelled 0"
        )));
    }
    let texts: Vec<String> = pairs
        .iter()
        .flat_map(|p| [p.a.clone(), p.b.clone()])
        .collect();
    let vectors = embedder.embed(&texts).await?;
    let mut scored: Vec<(f32, bool, usize)> = pairs
        .iter()
        .zip(vectors.chunks_exact(2))
        .map(|(p, v)| (Metric::Cosine.similarity(&v[0], &v[1]), p.duplicate, p.line))
        .collect();
    scored.sort_by(|x, y| y.0.total_cmp(&x.0));
    Ok(choose(scored, positives, negatives, target_precision))
}

fn choose(
    scored: Vec<(f32, bool, usize)>,
    positives: usize,
    negatives: usize,
    target: f64,
) -> Calibration {
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut best: Option<(usize, f64, f64)> = None;
    for (i, &(sim, dup, _)) in scored.iter().enumerate() {
        if dup {
            tp += 1;
        } else {
            fp += 1;
        }
        // Only cut between distinct similarities: equal scores fall on the same side.
        if scored.get(i + 1).is_some_and(|next| next.0 == sim) {
            continue;
        }
        let precision = tp as f64 / (tp + fp) as f64;
        if precision >= target {
            best = Some((i, precision, tp as f64 / positives as f64));
        }
    }
    match best {
        Some((i, precision, recall)) => {
            let here = scored[i].0;
            let threshold = scored.get(i + 1).map_or(here, |next| (here + next.0) / 2.0);
            Calibration {
                threshold: Some(threshold),
                precision,
                recall,
                positives,
                negatives,
                scored,
            }
        }
        None => Calibration {
            threshold: None,
            precision: 0.0,
            recall: 0.0,
            positives,
            negatives,
            scored,
        },
    }
}

/// Read `path`, calibrate, and render the report printed by the command.
pub async fn run(
    embedder: &SharedEmbedder,
    path: &Path,
    target: f64,
) -> Result<(Calibration, String)> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::new(
            ErrorKind::InvalidInput,
            "calibrate",
            "pairs",
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    let pairs = parse_pairs(&text)?;
    let c = calibrate(embedder, &pairs, target).await?;
    let info = embedder.info();
    let mut out = format!(
        "embedder: {} / {} ({} dims)\npairs: {} duplicates, {} non-duplicates\n",
        info.provider, info.model, info.dims, c.positives, c.negatives
    );
    match c.threshold {
        Some(t) => out.push_str(&format!(
            "threshold: {t:.4}\nprecision: {:.3} (target {target:.3})\nrecall: {:.3}\n\
             set SEMANTIC_THRESHOLD={t:.4}\n",
            c.precision, c.recall
        )),
        None => out.push_str(&format!(
            "no threshold reaches precision {target:.3} on these pairs: the embedder cannot separate \
             them (use a stronger model or more specific queries)\n"
        )),
    }
    let worst_negative = c.scored.iter().find(|s| !s.1);
    if let Some((sim, _, line)) = worst_negative {
        out.push_str(&format!(
            "closest non-duplicate: similarity {sim:.4} (line {line})\n"
        ));
    }
    Ok((c, out))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parse_reports_bad_lines() {
        let ok = parse_pairs("# comment\n1\ta\tb\n\n0\tc\td\r\n").unwrap();
        assert_eq!(ok.len(), 2);
        assert_eq!((ok[1].line, ok[1].duplicate), (4, false));
        let err = parse_pairs("1\ta\tb\n2\ta\tb\n").unwrap_err();
        assert!(err.message().contains("line 2"), "{err}");
        let err = parse_pairs("1\ta b\n").unwrap_err();
        assert!(err.message().contains("line 1: expected 3"), "{err}");
    }

    #[test]
    fn chooses_the_lowest_threshold_reaching_the_precision() {
        // sims: .95 D, .9 D, .85 N, .8 D, .7 N, .6 D
        let scored = vec![
            (0.95, true, 1),
            (0.9, true, 2),
            (0.85, false, 3),
            (0.8, true, 4),
            (0.7, false, 5),
            (0.6, true, 6),
        ];
        let c = choose(scored.clone(), 4, 2, 1.0);
        assert_eq!(c.threshold, Some(0.875));
        assert_eq!(c.recall, 0.5);
        let c = choose(scored.clone(), 4, 2, 0.75);
        // At .8: 3 TP, 1 FP → precision .75, recall .75; at .6: 4/6 < .75.
        assert_eq!(c.threshold, Some(0.75));
        assert_eq!((c.precision, c.recall), (0.75, 0.75));
        let none = choose(vec![(0.9, false, 1), (0.8, true, 2)], 1, 1, 0.9);
        assert_eq!(none.threshold, None);
    }
}
