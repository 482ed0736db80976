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

use resk_core::{
    Embedder, Error, ErrorKind, Metric, Result, SharedEmbedder, SharedVerifier, Verdict, Verifier,
};

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

/// Bounds of the decision stage: the reject threshold and the accept bound.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Zones {
    /// `SEMANTIC_THRESHOLD`.
    pub threshold: f32,
    /// `SEMANTIC_ACCEPT` (`None`: the threshold, no band).
    pub accept: Option<f32>,
}

/// Precision and recall of a decision.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Score {
    /// Share of served pairs labelled duplicates.
    pub precision: f64,
    /// Share of duplicates served.
    pub recall: f64,
    /// Non-duplicates served (wrong answers).
    pub wrong: usize,
}

/// The result of calibrating with the verifiers on.
#[derive(Clone, Debug, PartialEq)]
pub struct Verified {
    /// The settings given, and how they score.
    pub current: (Zones, Score),
    /// The zones with the highest recall whose precision reaches the target, if any.
    pub best: Option<(Zones, Score)>,
}

/// One pair as the decision stage sees it.
struct Judged {
    similarity: f32,
    duplicate: bool,
    /// Verdict at or above accept (verifiers that run everywhere).
    sure: Verdict,
    /// Verdict in the band (all verifiers).
    band: Verdict,
}

fn served(p: &Judged, zones: Zones) -> bool {
    if p.similarity < zones.threshold {
        return false;
    }
    if p.similarity >= zones.accept.unwrap_or(zones.threshold) {
        p.sure != Verdict::Reject
    } else {
        p.band == Verdict::Accept
    }
}

fn score(judged: &[Judged], zones: Zones) -> Score {
    let (mut tp, mut fp, mut positives) = (0usize, 0usize, 0usize);
    for p in judged {
        positives += usize::from(p.duplicate);
        if served(p, zones) {
            if p.duplicate {
                tp += 1;
            } else {
                fp += 1;
            }
        }
    }
    Score {
        precision: if tp + fp == 0 {
            1.0
        } else {
            tp as f64 / (tp + fp) as f64
        },
        recall: if positives == 0 {
            0.0
        } else {
            tp as f64 / positives as f64
        },
        wrong: fp,
    }
}

/// Precision and recall of `pairs` through `verifiers` (each pair: `a` cached, `b` asked) at the
/// `current` zones, and the zones (threshold and accept, chosen among the pairs' similarities)
/// with the highest recall whose precision reaches `target_precision`.
pub async fn calibrate_verified(
    embedder: &SharedEmbedder,
    verifiers: &[SharedVerifier],
    pairs: &[Pair],
    target_precision: f64,
    current: Zones,
) -> Result<Verified> {
    if !(0.0..=1.0).contains(&target_precision) {
        return Err(bad("target precision must be between 0 and 1".into()));
    }
    let texts: Vec<String> = pairs
        .iter()
        .flat_map(|p| [p.a.clone(), p.b.clone()])
        .collect();
    let vectors = embedder.embed(&texts).await?;
    let pipeline =
        crate::verify::Pipeline::new(verifiers.to_vec(), None, std::time::Duration::from_secs(30));
    let mut judged = Vec::with_capacity(pairs.len());
    for (p, v) in pairs.iter().zip(vectors.chunks_exact(2)) {
        let similarity = Metric::Cosine.similarity(&v[0], &v[1]);
        let pair = resk_core::Pair::new(&p.b, &p.a, similarity);
        let (sure, band) = pipeline.judge(&pair).await;
        judged.push(Judged {
            similarity,
            duplicate: p.duplicate,
            sure,
            band,
        });
    }
    let mut cuts: Vec<f32> = judged.iter().map(|j| j.similarity).collect();
    cuts.sort_by(f32::total_cmp);
    cuts.dedup();
    let mut best: Option<(Zones, Score)> = None;
    for (i, &threshold) in cuts.iter().enumerate() {
        // Accept at a pair's similarity, or above them all (everything in the band).
        for accept in cuts[i..].iter().copied().chain([f32::INFINITY]) {
            let zones = Zones {
                threshold,
                accept: Some(accept.min(1.0 + f32::EPSILON)),
            };
            let s = score(&judged, zones);
            if s.precision < target_precision {
                continue;
            }
            let better =
                best.is_none_or(|(_, b)| (s.recall, s.precision) > (b.recall, b.precision));
            if better {
                best = Some((zones, s));
            }
        }
    }
    Ok(Verified {
        current: (current, score(&judged, current)),
        best,
    })
}

/// [`calibrate_verified`] on the pairs in `path`, and the report printed by the command.
pub async fn run_verified(
    embedder: &SharedEmbedder,
    verifiers: &[SharedVerifier],
    path: &Path,
    target: f64,
    current: Zones,
) -> Result<(Verified, String)> {
    let pairs = parse_pairs(&read(path)?)?;
    let v = calibrate_verified(embedder, verifiers, &pairs, target, current).await?;
    let names: Vec<&str> = verifiers.iter().map(|v| v.info().name).collect();
    let zones = |z: Zones| match z.accept {
        Some(a) if a > 1.0 => format!("SEMANTIC_THRESHOLD={:.4} SEMANTIC_ACCEPT=1", z.threshold),
        Some(a) => format!(
            "SEMANTIC_THRESHOLD={:.4} SEMANTIC_ACCEPT={a:.4}",
            z.threshold
        ),
        None => format!("SEMANTIC_THRESHOLD={:.4}", z.threshold),
    };
    let (cz, cs) = v.current;
    let mut out = format!(
        "with verifiers [{}]:
  now ({}): precision {:.3}, recall {:.3}, {} non-duplicates served
",
        names.join(", "),
        zones(cz),
        cs.precision,
        cs.recall,
        cs.wrong
    );
    match v.best {
        Some((z, s)) => out.push_str(&format!(
            "  best for precision {target:.3}: precision {:.3}, recall {:.3}
  set {}
",
            s.precision,
            s.recall,
            zones(z)
        )),
        None => out.push_str(&format!(
            "  no zones reach precision {target:.3} on these pairs
"
        )),
    }
    Ok((v, out))
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| {
        Error::new(
            ErrorKind::InvalidInput,
            "calibrate",
            "pairs",
            format!("cannot read {}: {e}", path.display()),
        )
    })
}

/// Read `path`, calibrate, and render the report printed by the command.
pub async fn run(
    embedder: &SharedEmbedder,
    path: &Path,
    target: f64,
) -> Result<(Calibration, String)> {
    let pairs = parse_pairs(&read(path)?)?;
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
    fn the_zones_decide_as_the_engine_does() {
        let j = |similarity, duplicate, sure, band| Judged {
            similarity,
            duplicate,
            sure,
            band,
        };
        use Verdict::{Abstain, Accept, Reject};
        let judged = [
            j(0.95, true, Abstain, Abstain),
            j(0.93, false, Reject, Reject), // a guard catches it everywhere
            j(0.8, true, Abstain, Accept),  // a band verifier vouches for it
            j(0.75, false, Abstain, Reject),
            j(0.7, true, Abstain, Abstain), // nobody vouches: a miss in the band
        ];
        let z = |threshold, accept| Zones { threshold, accept };
        // No band: everything at or above the threshold that no guard rejects.
        let s = score(&judged, z(0.7, None));
        assert_eq!((s.wrong, s.recall), (1, 1.0));
        // A band from 0.7 to 0.9: only what a verifier accepts.
        let s = score(&judged, z(0.7, Some(0.9)));
        assert_eq!((s.wrong, s.precision), (0, 1.0));
        assert!((s.recall - 2.0 / 3.0).abs() < 1e-9);
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
