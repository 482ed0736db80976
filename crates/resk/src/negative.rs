//! Negative caching of semantic lookups: a query whose semantic lookup found nothing, or whose
//! embedding / vector call failed, is remembered for a short time (`NEGATIVE_CACHE_TTL_SECS`), so a
//! hot miss is not embedded and searched again on every request, and an outage of the provider is
//! not hammered by the same query (each call of which would also wait for its retries).
//!
//! A remembered "no match" would hide a paraphrase written after it: every semantic write to a
//! tenant bumps the tenant's generation, and an answer remembered under an older generation is
//! ignored. The generation is read when the lookup *starts*, so a write racing a lookup also
//! invalidates its answer. Writes on other instances are not seen: there the TTL bounds the delay.
//!
//! moka (already the memory cache) holds both tables, bounded in entries and expiring by TTL.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use moka::sync::Cache;

/// Most remembered lookups; the least useful are evicted beyond it.
const MAX_ENTRIES: u64 = 100_000;
/// Most tenants whose write generation is tracked. A tenant evicted from it reads generation 0,
/// which matches only answers remembered before any write was tracked for it.
const MAX_TENANTS: u64 = 1_000_000;

/// What a recent lookup of the same query concluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Remembered {
    /// The semantic lookup found no usable paraphrase.
    NoMatch,
    /// The named layer (`embed`, `vector`) failed.
    Failed(&'static str),
}

/// The remembered outcomes, by lookup.
pub(crate) struct NegativeCache {
    entries: Cache<String, (u64, Remembered)>,
    generations: Cache<String, u64>,
    next_generation: AtomicU64,
}

/// A lookup the cache had no answer for: remember its outcome with [`NegativeCache::remember`].
#[derive(Debug)]
pub(crate) struct Pending {
    key: String,
    generation: u64,
}

impl NegativeCache {
    /// `None` when `ttl` is zero (negative caching off).
    pub(crate) fn new(ttl: Duration) -> Option<Self> {
        if ttl.is_zero() {
            return None;
        }
        Some(Self {
            entries: Cache::builder()
                .max_capacity(MAX_ENTRIES)
                .time_to_live(ttl)
                .build(),
            // An answer never outlives `ttl`, so neither need the generations it is checked with.
            generations: Cache::builder()
                .max_capacity(MAX_TENANTS)
                .time_to_live(ttl)
                .build(),
            next_generation: AtomicU64::new(1),
        })
    }

    /// The remembered outcome of the lookup `key` of `tenant`, or the [`Pending`] handle to
    /// remember this lookup's outcome with.
    pub(crate) fn check(&self, tenant: &str, key: String) -> Result<Remembered, Pending> {
        let generation = self.generations.get(tenant).unwrap_or(0);
        match self.entries.get(&key) {
            Some((g, remembered)) if g == generation => {
                metrics::counter!("resk_negative_cache_hits_total", "outcome" => label(remembered))
                    .increment(1);
                Ok(remembered)
            }
            _ => Err(Pending { key, generation }),
        }
    }

    /// Remember the outcome of a lookup [`NegativeCache::check`] had no answer for.
    pub(crate) fn remember(&self, pending: Pending, outcome: Remembered) {
        self.entries
            .insert(pending.key, (pending.generation, outcome));
    }

    /// A semantic entry was written in `tenant`: its remembered "no match" answers are void.
    pub(crate) fn tenant_changed(&self, tenant: &str) {
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        self.generations.insert(tenant.to_owned(), generation);
    }
}

impl std::fmt::Debug for NegativeCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NegativeCache")
            .field("entries", &self.entries.entry_count())
            .finish_non_exhaustive()
    }
}

fn label(remembered: Remembered) -> &'static str {
    match remembered {
        Remembered::NoMatch => "no_match",
        Remembered::Failed(_) => "failure",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_remembered_until_the_tenant_changes() {
        let cache = NegativeCache::new(Duration::from_secs(60)).unwrap();
        let pending = cache.check("t1", "q".into()).unwrap_err();
        cache.remember(pending, Remembered::NoMatch);
        assert_eq!(
            cache.check("t1", "q".into()).ok(),
            Some(Remembered::NoMatch)
        );
        // Another tenant's write changes nothing here.
        cache.tenant_changed("t2");
        assert_eq!(
            cache.check("t1", "q".into()).ok(),
            Some(Remembered::NoMatch)
        );
        cache.tenant_changed("t1");
        assert!(cache.check("t1", "q".into()).is_err());
    }

    #[test]
    fn a_write_racing_a_lookup_voids_its_answer() {
        let cache = NegativeCache::new(Duration::from_secs(60)).unwrap();
        let pending = cache.check("t", "q".into()).unwrap_err();
        cache.tenant_changed("t");
        cache.remember(pending, Remembered::NoMatch);
        assert!(cache.check("t", "q".into()).is_err());
    }

    #[test]
    fn zero_ttl_turns_it_off() {
        assert!(NegativeCache::new(Duration::ZERO).is_none());
    }
}
