//! What an operator sees of one tenant on this instance: per-minute figures over the last hour
//! (lookups, hits by source, misses, latency percentiles, tokens and dollars saved, errors,
//! degraded answers) and the last semantic decisions, with what feedback said of them. The
//! operator console of `resk-server` draws these; a library user reads them with
//! [`Cache::activity`](crate::Cache::activity) and [`Cache::decisions`](crate::Cache::decisions).
//!
//! Why not the Prometheus registry: its counters are process-wide and unlabelled by tenant (a
//! tenant label would make the series unbounded), and it keeps no history; a console must answer
//! "this tenant, the last hour" from the process alone. So each tenant gets a ring of 60 one-minute
//! buckets (counters and a log-scale latency histogram, ~20 KiB) and a ring of its last
//! [`DECISIONS`] semantic decisions; at most [`MAX_TENANTS`] tenants are kept, the one seen least
//! recently making room for a new one. Recording is a read-locked map lookup and an uncontended
//! per-tenant mutex: a few tens of nanoseconds on the hot path.
//!
//! Figures are this instance's (behind a load balancer each instance has its own); the fleet's are
//! in Prometheus.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, PoisonError, RwLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use resk_core::TenantId;
use serde::Serialize;
use time::OffsetDateTime;

use crate::{Outcome, Source};

/// Minutes of history kept per tenant.
pub const MINUTES: usize = 60;
/// Semantic decisions kept per tenant.
pub const DECISIONS: usize = 200;
/// Tenants followed at once.
pub const MAX_TENANTS: usize = 256;

/// Latency histogram: bucket `i` holds latencies below `FIRST_BOUND_US × RATIO^(i+1)` µs, so a
/// percentile read from it is within ±9 % (the bucket's geometric middle is answered).
const BUCKETS: usize = 96;
const FIRST_BOUND_US: f64 = 10.0;
/// 2^(1/4): four buckets per doubling; 96 buckets reach 10 µs × 2^24 ≈ 168 s.
const RATIO: f64 = 1.189_207_115_002_721;

/// The sources counted apart, in [`HitsBySource`] order.
const SOURCES: [&str; 4] = ["memory", "sqlite", "redis", "semantic"];

/// Hits of one span of time, by where the answer came from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[non_exhaustive]
pub struct HitsBySource {
    /// Exact hits from the in-process store.
    pub memory: u64,
    /// Exact hits from SQLite.
    pub sqlite: u64,
    /// Exact hits from Redis.
    pub redis: u64,
    /// Paraphrases served by the semantic layer.
    pub semantic: u64,
    /// Exact hits from any other store.
    pub other: u64,
}

/// Lookup latency percentiles, milliseconds (`None` without lookups).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[non_exhaustive]
pub struct Percentiles {
    /// Median.
    pub p50: Option<f64>,
    /// 95th percentile.
    pub p95: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
}

/// One tenant's figures over one span of time (a minute, or the whole hour).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[non_exhaustive]
pub struct Figures {
    /// Start of the span, Unix seconds.
    pub start: i64,
    /// Lookups answered (hits and misses).
    pub lookups: u64,
    /// Hits by source.
    pub hits: HitsBySource,
    /// Misses.
    pub misses: u64,
    /// Hits served past their TTL, in their grace period.
    pub stale: u64,
    /// Lookups answered with a layer skipped because it failed.
    pub degraded: u64,
    /// Operations that failed for a reason other than the caller's input.
    pub errors: u64,
    /// LLM tokens the hits saved, estimated at 4 bytes a token of query and answer.
    pub tokens_saved: u64,
    /// Dollars the gateway's hits saved, by its price table.
    pub cost_saved_usd: f64,
    /// Lookup latency (the engine's time, not the HTTP round trip).
    pub latency_ms: Percentiles,
}

/// A tenant's last hour on this instance.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[non_exhaustive]
pub struct Report {
    /// One entry per minute, oldest first, the current (partial) minute last; [`MINUTES`] of them.
    pub minutes: Vec<Figures>,
    /// The whole hour.
    pub total: Figures,
}

/// What became of a semantic decision after it was made.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[non_exhaustive]
pub struct Reported {
    /// Whether the answer was reported right.
    pub correct: bool,
    /// The matched entry's own similarity floor after the report (`None`: the layer's).
    pub floor: Option<f32>,
    /// The matched entry's own accept bound after the report (`None`: the layer's).
    pub accept: Option<f32>,
    /// Right reports the entry has had.
    pub right: u32,
    /// Wrong reports the entry has had.
    pub wrong: u32,
}

/// One semantic decision: a cached question judged as an answer to the one asked.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[non_exhaustive]
pub struct Decision {
    /// When, RFC 3339.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub at: OffsetDateTime,
    /// A keyed hash of the question asked (the `query_hash` of the debug logs): stable per
    /// question, meaningless without the key secret.
    pub query_hash: String,
    /// The question asked, only when the cache was built with `log_query_text`.
    pub query: Option<String>,
    /// The key of the best candidate entry.
    pub entry: String,
    /// The candidate's cached question, only with `log_query_text`.
    pub matched_query: Option<String>,
    /// Its similarity to the question.
    pub similarity: f32,
    /// `accept` (served) or `reject`.
    pub verdict: &'static str,
    /// Who decided (`similarity`, `guards`, a verifier's name).
    pub by: &'static str,
    /// Why.
    pub reason: String,
    /// The id to report a served answer right or wrong with (accepted decisions only).
    pub hit_id: Option<String>,
    /// The report made on it, once one was.
    pub reported: Option<Reported>,
}

/// The per-tenant records of one [`Cache`](crate::Cache).
#[derive(Debug, Default)]
pub(crate) struct Activity {
    /// foldhash: read on every lookup, keyed by tenant ids (fixed by the caller's tokens).
    tenants: RwLock<HashMap<TenantId, Arc<Mutex<Tenant>>, foldhash::fast::RandomState>>,
}

#[derive(Debug)]
struct Tenant {
    minutes: Box<[Minute; MINUTES]>,
    decisions: VecDeque<Decision>,
    /// The minute of the last record (for eviction).
    last_seen: i64,
}

#[derive(Clone, Copy, Debug)]
struct Minute {
    /// Unix minute this bucket holds; a bucket of another minute is stale and reads as empty.
    at: i64,
    lookups: u64,
    hits: [u64; SOURCES.len() + 1],
    misses: u64,
    stale: u64,
    degraded: u64,
    errors: u64,
    tokens_saved: u64,
    micro_usd_saved: u64,
    latency: [u32; BUCKETS],
}

impl Minute {
    const EMPTY: Self = Self {
        at: i64::MIN,
        lookups: 0,
        hits: [0; SOURCES.len() + 1],
        misses: 0,
        stale: 0,
        degraded: 0,
        errors: 0,
        tokens_saved: 0,
        micro_usd_saved: 0,
        latency: [0; BUCKETS],
    };

    fn add(&mut self, other: &Minute) {
        self.lookups += other.lookups;
        for (a, b) in self.hits.iter_mut().zip(other.hits) {
            *a += b;
        }
        self.misses += other.misses;
        self.stale += other.stale;
        self.degraded += other.degraded;
        self.errors += other.errors;
        self.tokens_saved += other.tokens_saved;
        self.micro_usd_saved += other.micro_usd_saved;
        for (a, b) in self.latency.iter_mut().zip(other.latency) {
            *a = a.saturating_add(b);
        }
    }

    fn figures(&self, start: i64) -> Figures {
        let [memory, sqlite, redis, semantic, other] = self.hits;
        Figures {
            start,
            lookups: self.lookups,
            hits: HitsBySource {
                memory,
                sqlite,
                redis,
                semantic,
                other,
            },
            misses: self.misses,
            stale: self.stale,
            degraded: self.degraded,
            errors: self.errors,
            tokens_saved: self.tokens_saved,
            cost_saved_usd: self.micro_usd_saved as f64 / 1e6,
            latency_ms: Percentiles {
                p50: percentile(&self.latency, 0.50),
                p95: percentile(&self.latency, 0.95),
                p99: percentile(&self.latency, 0.99),
            },
        }
    }
}

fn bucket(latency: Duration) -> usize {
    let us = latency.as_secs_f64() * 1e6;
    if us < FIRST_BOUND_US {
        return 0;
    }
    // Bucket i covers [10 × R^i, 10 × R^(i+1)); below 10 µs counts as bucket 0.
    let i = ((us / FIRST_BOUND_US).ln() / RATIO.ln()).floor();
    (i as usize).min(BUCKETS - 1)
}

/// The `q` quantile of a histogram, in milliseconds: the geometric middle of its bucket.
fn percentile(histogram: &[u32; BUCKETS], q: f64) -> Option<f64> {
    let count: u64 = histogram.iter().map(|&n| u64::from(n)).sum();
    if count == 0 {
        return None;
    }
    let rank = ((count as f64 * q).ceil() as u64).max(1);
    let mut seen = 0u64;
    let i = histogram
        .iter()
        .position(|&n| {
            seen += u64::from(n);
            seen >= rank
        })
        .unwrap_or(BUCKETS - 1);
    let low = FIRST_BOUND_US * RATIO.powi(i as i32);
    Some(low * RATIO.sqrt() / 1e3)
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl Tenant {
    fn new() -> Self {
        Self {
            minutes: Box::new([Minute::EMPTY; MINUTES]),
            decisions: VecDeque::new(),
            last_seen: 0,
        }
    }

    /// The bucket of `minute`, emptied first if it held an older one.
    fn minute(&mut self, minute: i64) -> &mut Minute {
        self.last_seen = minute;
        let slot = &mut self.minutes[minute.rem_euclid(MINUTES as i64) as usize];
        if slot.at != minute {
            *slot = Minute::EMPTY;
            slot.at = minute;
        }
        slot
    }

    fn report(&self, now: i64) -> Report {
        let current = now.div_euclid(60);
        let mut total = Minute::EMPTY;
        let minutes = (current - MINUTES as i64 + 1..=current)
            .map(|m| {
                let slot = &self.minutes[m.rem_euclid(MINUTES as i64) as usize];
                if slot.at == m {
                    total.add(slot);
                    slot.figures(m * 60)
                } else {
                    Minute::EMPTY.figures(m * 60)
                }
            })
            .collect();
        Report {
            minutes,
            total: total.figures((current - MINUTES as i64 + 1) * 60),
        }
    }
}

/// What the lookup that produced an [`Outcome`] asked, for its decision record.
pub(crate) struct Asked<'a> {
    pub(crate) query_hash: &'a dyn Fn() -> String,
    pub(crate) query: Option<&'a str>,
    /// The tokens a hit counted as saved in `resk_tokens_saved_total`.
    pub(crate) tokens_saved: u64,
}

impl Activity {
    /// `tenant`'s record, when it has one.
    fn find(&self, tenant: &TenantId) -> Option<Arc<Mutex<Tenant>>> {
        self.tenants
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tenant)
            .cloned()
    }

    /// Run `f` on `tenant`'s record, making one (and room for it) if needed.
    fn with<R>(&self, tenant: &TenantId, f: impl FnOnce(&mut Tenant) -> R) -> R {
        let record = match self.find(tenant) {
            Some(record) => record,
            None => {
                let mut map = self.tenants.write().unwrap_or_else(PoisonError::into_inner);
                if !map.contains_key(tenant) && map.len() >= MAX_TENANTS {
                    let idlest = map
                        .iter()
                        .min_by_key(|(_, t)| {
                            t.lock().unwrap_or_else(PoisonError::into_inner).last_seen
                        })
                        .map(|(k, _)| k.clone());
                    if let Some(idlest) = idlest {
                        map.remove(&idlest);
                    }
                }
                map.entry(tenant.clone())
                    .or_insert_with(|| Arc::new(Mutex::new(Tenant::new())))
                    .clone()
            }
        };
        let mut guard = record.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut guard)
    }

    /// Count a lookup's outcome (and keep its semantic decision, when it made one).
    pub(crate) fn lookup(&self, tenant: &TenantId, outcome: &Outcome, asked: &Asked<'_>) {
        let now = now_secs();
        let minute = now.div_euclid(60);
        let decision = decision(outcome, asked);
        self.with(tenant, |t| {
            let m = t.minute(minute);
            m.lookups += 1;
            let (latency, degraded) = match outcome {
                Outcome::Hit(hit) => {
                    let i = match hit.source {
                        Source::Semantic => Some(3),
                        Source::Store(name) => {
                            Some(SOURCES.iter().position(|s| *s == name).unwrap_or(4))
                        }
                        _ => None,
                    };
                    if let Some(i) = i {
                        m.hits[i] += 1;
                        m.tokens_saved += asked.tokens_saved;
                    }
                    m.stale += u64::from(hit.stale);
                    (hit.latency.total, hit.degraded)
                }
                Outcome::Miss(miss) => {
                    m.misses += 1;
                    (miss.latency.total, miss.degraded)
                }
            };
            m.degraded += u64::from(degraded);
            let b = bucket(latency);
            m.latency[b] = m.latency[b].saturating_add(1);
            if let Some(decision) = decision {
                if t.decisions.len() == DECISIONS {
                    t.decisions.pop_front();
                }
                t.decisions.push_back(decision);
            }
        });
    }

    /// Count an operation of `tenant` that failed for a reason other than its input.
    pub(crate) fn error(&self, tenant: &TenantId) {
        let minute = now_secs().div_euclid(60);
        self.with(tenant, |t| t.minute(minute).errors += 1);
    }

    /// Count dollars a hit of `tenant` saved (the gateway's priced savings).
    #[cfg_attr(not(feature = "gateway"), allow(dead_code))]
    pub(crate) fn saved(&self, tenant: &TenantId, usd: f64) {
        if !(usd.is_finite() && usd > 0.0) {
            return;
        }
        let minute = now_secs().div_euclid(60);
        self.with(tenant, |t| {
            t.minute(minute).micro_usd_saved += (usd * 1e6).round() as u64;
        });
    }

    /// Note a feedback report on the decision whose hit id is `hit_id`.
    pub(crate) fn reported(&self, tenant: &TenantId, hit_id: &str, reported: Reported) {
        let Some(record) = self.find(tenant) else {
            return;
        };
        let mut t = record.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(d) = t
            .decisions
            .iter_mut()
            .rev()
            .find(|d| d.hit_id.as_deref() == Some(hit_id))
        {
            d.reported = Some(reported);
        }
    }

    /// `tenant`'s last hour.
    pub(crate) fn report(&self, tenant: &TenantId) -> Report {
        let now = now_secs();
        match self.find(tenant) {
            Some(record) => record
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .report(now),
            None => Tenant::new().report(now),
        }
    }

    /// `tenant`'s last `limit` semantic decisions, newest first.
    pub(crate) fn decisions(&self, tenant: &TenantId, limit: usize) -> Vec<Decision> {
        self.find(tenant).map_or_else(Vec::new, |record| {
            let t = record.lock().unwrap_or_else(PoisonError::into_inner);
            t.decisions.iter().rev().take(limit).cloned().collect()
        })
    }
}

/// The semantic decision an outcome records: the served paraphrase, or the best candidate turned
/// down. A lookup whose semantic search found no candidate made none.
fn decision(outcome: &Outcome, asked: &Asked<'_>) -> Option<Decision> {
    let (entry, matched_query, similarity, verification, hit_id) = match outcome {
        Outcome::Hit(hit) if hit.source == Source::Semantic => (
            &hit.key,
            hit.matched_query.as_deref(),
            hit.similarity?,
            hit.verification.as_ref()?,
            hit.hit_id.clone(),
        ),
        Outcome::Miss(miss) => {
            let best = miss.rejected.first()?;
            (&best.key, None, best.similarity, &best.verification, None)
        }
        Outcome::Hit(_) => return None,
    };
    let show_text = asked.query.is_some();
    Some(Decision {
        at: OffsetDateTime::now_utc(),
        query_hash: (asked.query_hash)(),
        query: asked.query.map(str::to_owned),
        entry: entry.name().to_owned(),
        matched_query: matched_query.filter(|_| show_text).map(str::to_owned),
        similarity,
        verdict: verification.verdict.as_str(),
        by: verification.by,
        reason: verification.reason.clone().into_owned(),
        hit_id,
        reported: None,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn latency_buckets_answer_within_ten_percent() {
        for us in [5.0, 12.0, 80.0, 950.0, 12_000.0, 3_000_000.0] {
            let mut h = [0u32; BUCKETS];
            h[bucket(Duration::from_secs_f64(us / 1e6))] = 1;
            let ms = percentile(&h, 0.5).unwrap();
            let want = (us / 1e3).max(FIRST_BOUND_US / 1e3);
            assert!(
                (ms / want - 1.0).abs() < 0.10 || us < FIRST_BOUND_US,
                "{us} µs read back as {ms} ms"
            );
        }
    }

    #[test]
    fn percentiles_follow_the_distribution() {
        let mut h = [0u32; BUCKETS];
        for _ in 0..90 {
            h[bucket(Duration::from_micros(100))] += 1;
        }
        for _ in 0..10 {
            h[bucket(Duration::from_millis(20))] += 1;
        }
        let p50 = percentile(&h, 0.5).unwrap();
        let p99 = percentile(&h, 0.99).unwrap();
        assert!((0.09..0.11).contains(&p50), "p50 {p50}");
        assert!((18.0..22.0).contains(&p99), "p99 {p99}");
        assert_eq!(percentile(&[0; BUCKETS], 0.5), None);
    }

    #[test]
    fn minutes_roll_over_and_old_buckets_read_empty() {
        let mut t = Tenant::new();
        t.minute(1_000).lookups += 3;
        t.minute(1_001).lookups += 1;
        // 60 minutes later the slot of minute 1 000 is reused and starts empty.
        t.minute(1_060).lookups += 2;
        let report = t.report(1_060 * 60 + 5);
        assert_eq!(report.minutes.len(), MINUTES);
        assert_eq!(report.minutes.last().unwrap().lookups, 2);
        assert_eq!(report.minutes.last().unwrap().start, 1_060 * 60);
        assert_eq!(report.total.lookups, 3, "minute 1 000 is out of the hour");
    }

    #[test]
    fn the_idlest_tenant_makes_room() {
        let activity = Activity::default();
        for i in 0..=MAX_TENANTS {
            let tenant = TenantId::new(&format!("t{i}")).unwrap();
            activity.error(&tenant);
        }
        assert_eq!(activity.tenants.read().unwrap().len(), MAX_TENANTS);
        let last = TenantId::new(&format!("t{MAX_TENANTS}")).unwrap();
        assert_eq!(activity.report(&last).total.errors, 1);
    }
}
