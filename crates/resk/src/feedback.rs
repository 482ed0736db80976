//! Feedback on semantic hits, and the per-entry bounds it teaches (in the spirit of vCache's
//! per-entry thresholds: one global number is too strict for some entries and too loose for
//! others).
//!
//! Every semantic hit carries a `hit_id`: the matched entry, the query's key and the similarity,
//! signed with the service's key secret and bound to the tenant (another tenant's id, or a forged
//! one, is simply not found). [`Cache::feedback`](crate::Cache::feedback) records a report *with the
//! entry* (so a durable store keeps it across restarts, and it expires with the entry):
//!
//! - *wrong*: that query is never answered by that entry again, and the entry's **floor** rises
//!   above the reported similarity: candidates of this entry at or below it are not served;
//! - *right*: once an entry has at least [`MIN_RIGHT`] right reports and its observed error rate
//!   over the reports at or above some similarity is within the operator's target
//!   (`SEMANTIC_TARGET_ERROR`), that similarity becomes the entry's **accept** bound: its
//!   candidates from there on are served without the band verifiers (the guards still run), and
//!   the floor falls back to the lowest similarity the reports support.
//!
//! The bounds are recomputed from the most recent [`MAX_REPORTS`] reports on every read, so they
//! move as reports arrive.

use resk_core::{CacheKey, Feedback, KeyBuilder, TenantId};

/// Reports kept per entry (the oldest go first).
pub const MAX_REPORTS: usize = 64;
/// Queries kept blocked per entry.
pub const MAX_BLOCKED: usize = 256;
/// Right reports an entry needs before its accept bound may move below the global one.
pub const MIN_RIGHT: usize = 3;
/// How far above a wrongly served similarity the floor goes.
const MARGIN: f32 = 0.001;

/// What [`Cache::feedback`](crate::Cache::feedback) recorded.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Recorded {
    /// The entry the report was about.
    pub key: CacheKey,
    /// The similarity of the reported hit.
    pub similarity: f32,
    /// Right reports the entry has received.
    pub right: u32,
    /// Wrong reports the entry has received.
    pub wrong: u32,
    /// Its bounds now.
    pub bounds: Bounds,
}

/// An entry's own bounds, from its feedback.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Bounds {
    /// Candidates of the entry below this are not served.
    pub floor: Option<f32>,
    /// Candidates of the entry at or above this are served without the band verifiers.
    pub accept: Option<f32>,
}

/// The bounds `feedback` supports at `target_error` (0-1).
pub fn bounds(feedback: &Feedback, target_error: f64) -> Bounds {
    let mut reports = feedback.reports.clone();
    if reports.is_empty() {
        return Bounds::default();
    }
    reports.sort_by(|a, b| b.0.total_cmp(&a.0));
    // Walk down from the most similar report: the lowest similarity at which the reports at or
    // above it are within the target error rate.
    let (mut right, mut wrong) = (0usize, 0usize);
    let mut lowest_ok: Option<f32> = None;
    let mut right_at_ok = 0;
    for &(similarity, correct) in &reports {
        if correct {
            right += 1;
        } else {
            wrong += 1;
        }
        if (wrong as f64) <= target_error * ((right + wrong) as f64) {
            lowest_ok = Some(similarity);
            right_at_ok = right;
        }
    }
    let highest_wrong = reports
        .iter()
        .filter(|(_, correct)| !correct)
        .map(|(s, _)| *s)
        .reduce(f32::max);
    let floor = match (lowest_ok, highest_wrong) {
        // The reports support serving down to `ok`; a wrong report below it is within the target
        // (its own query stays blocked).
        (Some(ok), Some(_)) => Some(ok),
        (None, Some(w)) => Some((w + MARGIN).min(1.0)),
        (_, None) => None,
    };
    let accept = lowest_ok.filter(|_| right_at_ok >= MIN_RIGHT);
    Bounds { floor, accept }
}

/// Record a report on `feedback`: `correct` or not, for the hit of `query` at `similarity`.
pub(crate) fn record(feedback: &mut Feedback, query: &str, similarity: f32, correct: bool) {
    feedback.reports.push((similarity, correct));
    if feedback.reports.len() > MAX_REPORTS {
        let excess = feedback.reports.len() - MAX_REPORTS;
        feedback.reports.drain(..excess);
    }
    if correct {
        feedback.right = feedback.right.saturating_add(1);
    } else {
        feedback.wrong = feedback.wrong.saturating_add(1);
        if !feedback.blocked.iter().any(|q| q == query) {
            feedback.blocked.push(query.to_owned());
            if feedback.blocked.len() > MAX_BLOCKED {
                feedback.blocked.remove(0);
            }
        }
    }
}

/// What a hit id names.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct HitRef {
    /// The matched entry.
    pub(crate) entry: CacheKey,
    /// The key name of the query it answered.
    pub(crate) query: String,
    /// Their similarity.
    pub(crate) similarity: f32,
}

fn mac(keys: &KeyBuilder, tenant: &TenantId, entry: &str, query: &str, bits: u32) -> String {
    keys.pseudonym(
        "semantic-hit",
        &format!("{tenant}\u{0}{entry}\u{0}{query}\u{0}{bits:08x}"),
    )
}

/// The id of the semantic hit of `query` (its key) by `entry` at `similarity`.
pub(crate) fn hit_id(
    keys: &KeyBuilder,
    entry: &CacheKey,
    query: &CacheKey,
    similarity: f32,
) -> String {
    let bits = similarity.to_bits();
    let mac = mac(keys, entry.tenant(), entry.name(), query.name(), bits);
    format!("{}.{}.{bits:08x}.{mac}", entry.name(), query.name())
}

/// The hit `id` names, if `keys` signed it for `tenant`.
pub(crate) fn parse_hit_id(keys: &KeyBuilder, tenant: &TenantId, id: &str) -> Option<HitRef> {
    let mut parts = id.rsplitn(3, '.');
    let (mac_given, bits, names) = (parts.next()?, parts.next()?, parts.next()?);
    let (entry, query) = names.split_once('.')?;
    let bits = u32::from_str_radix(bits, 16).ok()?;
    let expected = mac(keys, tenant, entry, query, bits);
    // Both are hex digests of one length: compare without an early exit.
    let same = expected.len() == mac_given.len()
        && expected
            .bytes()
            .zip(mac_given.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !same {
        return None;
    }
    Some(HitRef {
        entry: CacheKey::new(tenant.clone(), entry).ok()?,
        query: query.to_owned(),
        similarity: f32::from_bits(bits),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fb(reports: &[(f32, bool)]) -> Feedback {
        Feedback {
            reports: reports.to_vec(),
            ..Feedback::default()
        }
    }

    #[test]
    fn a_wrong_report_raises_the_floor_and_right_reports_earn_an_accept_bound() {
        assert_eq!(bounds(&Feedback::default(), 0.05), Bounds::default());
        let b = bounds(&fb(&[(0.8, false)]), 0.05);
        assert!(b.floor.unwrap() > 0.8 && b.accept.is_none(), "{b:?}");
        // Two right reports are not enough to lower the accept bound.
        let b = bounds(&fb(&[(0.78, true), (0.82, true)]), 0.05);
        assert_eq!(b, Bounds::default());
        let b = bounds(&fb(&[(0.78, true), (0.82, true), (0.85, true)]), 0.05);
        assert_eq!(b.accept, Some(0.78));
        // A wrong report above the right ones: nothing at or below it is supported.
        let b = bounds(
            &fb(&[(0.78, true), (0.82, true), (0.85, true), (0.9, false)]),
            0.05,
        );
        assert!(b.floor.unwrap() > 0.9 && b.accept.is_none(), "{b:?}");
        // Enough right reports above a wrong one bring the rate within a looser target.
        let mut many: Vec<(f32, bool)> = (0..12).map(|i| (0.95 - i as f32 * 0.005, true)).collect();
        many.push((0.80, false));
        let b = bounds(&fb(&many), 0.10);
        assert_eq!(b.floor, Some(0.80));
        assert_eq!(b.accept, Some(0.80));
        let b = bounds(&fb(&many), 0.05);
        assert!(b.floor.unwrap() > 0.80 && b.accept.unwrap() > 0.80, "{b:?}");
    }

    #[test]
    fn hit_ids_are_signed_and_bound_to_the_tenant() {
        let keys = KeyBuilder::new(b"0123456789abcdef0123456789abcdef").unwrap();
        let acme = TenantId::new("acme").unwrap();
        let entry = CacheKey::new(acme.clone(), "e1").unwrap();
        let query = CacheKey::new(acme.clone(), "q1").unwrap();
        let id = hit_id(&keys, &entry, &query, 0.83);
        let hit = parse_hit_id(&keys, &acme, &id).unwrap();
        assert_eq!(
            (hit.entry, hit.query.as_str(), hit.similarity),
            (entry, "q1", 0.83)
        );
        let globex = TenantId::new("globex").unwrap();
        assert!(parse_hit_id(&keys, &globex, &id).is_none());
        let forged = id.replacen("e1", "e2", 1);
        assert!(parse_hit_id(&keys, &acme, &forged).is_none());
        for junk in ["", "x", "a.b", "a.b.zz.c", "..."] {
            assert!(parse_hit_id(&keys, &acme, junk).is_none(), "{junk}");
        }
    }

    #[test]
    fn reports_and_blocked_queries_are_capped() {
        let mut f = Feedback::default();
        for i in 0..(MAX_REPORTS + 10) {
            record(&mut f, &format!("q{i}"), 0.8, i % 2 == 0);
        }
        assert_eq!(f.reports.len(), MAX_REPORTS);
        assert_eq!(f.right + f.wrong, (MAX_REPORTS + 10) as u32);
        record(&mut f, "q1", 0.8, false);
        assert_eq!(f.blocked.iter().filter(|q| *q == "q1").count(), 1);
    }
}
