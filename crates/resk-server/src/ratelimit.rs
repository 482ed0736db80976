//! Rate limiting behind a trait: in-process by default, shared through Redis when Redis is the
//! cache backend.
//!
//! Both limiters run the GCRA: a quota of `max` requests per `window` is a burst of `max` refilling
//! one request every `window / max`. Unlike a fixed window it has no boundary at which a client can
//! send `2 × max` requests, and its state is one timestamp per key.
//!
//! The in-process limiter is [`governor`]'s GCRA over a **bounded** table ([`moka`]), not governor's
//! own unbounded map: a flood of distinct keys (spoofed addresses, IPv6 ranges) cannot grow memory
//! past [`RateLimitConfig::max_keys`]. moka's TinyLFU admission favours keys used often over one-shot
//! keys. The price, documented in `docs/security.md`: a key evicted from a full table starts again
//! with a fresh quota, and a key new to a full table may be admitted only after a few requests.

use std::{
    collections::HashMap,
    fmt,
    num::NonZeroU32,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use governor::{
    Quota, RateLimiter as Gcra,
    clock::{Clock, DefaultClock},
    middleware::{NoOpMiddleware, StateInformationMiddleware},
    nanos::Nanos,
    state::StateStore,
};
use resk_core::{BoxFuture, TenantId};

/// Rate-limit settings.
#[derive(Clone, Debug)]
pub struct RateLimitConfig {
    /// Window length.
    pub window: Duration,
    /// Requests per window and subject (or client address, for requests without a valid token).
    pub max: u32,
    /// Requests per window and tenant, all its subjects together; `None`: no tenant quota.
    pub tenant_max: Option<u32>,
    /// Tenant quotas overriding `tenant_max` for the tenants named.
    pub tenant_quotas: std::collections::HashMap<TenantId, u32>,
    /// Most keys the in-process limiter tracks at once.
    pub max_keys: u64,
}

impl RateLimitConfig {
    /// `max` requests per `window` per subject, no tenant quota, 100 000 keys at most.
    pub fn new(window: Duration, max: u32) -> Self {
        Self {
            window,
            max,
            tenant_max: None,
            tenant_quotas: std::collections::HashMap::new(),
            max_keys: 100_000,
        }
    }

    /// The quota of one subject (or address).
    pub fn subject_rate(&self) -> crate::ratelimit::Rate {
        crate::ratelimit::Rate {
            max: self.max,
            window: self.window,
        }
    }

    /// The quota of `tenant` as a whole, if it has one.
    pub fn tenant_rate(&self, tenant: &TenantId) -> Option<crate::ratelimit::Rate> {
        let max = self
            .tenant_quotas
            .get(tenant)
            .copied()
            .or(self.tenant_max)?;
        Some(crate::ratelimit::Rate {
            max,
            window: self.window,
        })
    }

    /// How long a key must be idle before its quota has surely refilled.
    pub fn longest_window(&self) -> Duration {
        self.window
    }
}

/// A quota: `max` requests per `window`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rate {
    /// Requests per window (at least 1).
    pub max: u32,
    /// Window length.
    pub window: Duration,
}

/// The outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Allowed {
        /// Requests per window.
        limit: u32,
        /// Requests left before limiting starts.
        remaining: u32,
        /// Time until the full quota is available again.
        reset: Duration,
    },
    /// Refuse with 429.
    Limited {
        /// Requests per window.
        limit: u32,
        /// Time until the next request is allowed.
        retry_after: Duration,
    },
}

/// Counts requests per key.
pub trait RateLimiter: Send + Sync + fmt::Debug + 'static {
    /// Count one request for `key` against `rate` and decide. A key must always be checked against
    /// the same rate.
    fn check<'a>(&'a self, key: &'a str, rate: Rate) -> BoxFuture<'a, Decision>;
}

/// governor's state store over a bounded moka table: one GCRA timestamp (the "theoretical arrival
/// time", 0 = none) per key.
#[derive(Clone)]
struct BoundedStore(moka::sync::Cache<String, Arc<AtomicU64>>);

impl StateStore for BoundedStore {
    type Key = String;

    fn measure_and_replace<T, F, E>(&self, key: &String, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let state = self.0.get_with_by_ref(key, || Arc::new(AtomicU64::new(0)));
        // The same compare-and-swap loop as governor's own in-memory state.
        let mut prev = state.load(Ordering::Acquire);
        loop {
            let (result, next) = f((prev != 0).then(|| Nanos::from(prev)))?;
            match state.compare_exchange_weak(
                prev,
                next.as_u64().max(1),
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(result),
                Err(actual) => prev = actual,
            }
        }
    }
}

type Keyed = Gcra<String, BoundedStore, DefaultClock, StateInformationMiddleware>;

/// The in-process GCRA limiter, bounded to [`RateLimitConfig::max_keys`] keys.
pub struct LocalRateLimiter {
    table: BoundedStore,
    limiters: RwLock<HashMap<Rate, Arc<Keyed>>>,
    clock: DefaultClock,
}

impl fmt::Debug for LocalRateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalRateLimiter")
            .field("keys", &self.table.0.entry_count())
            .finish()
    }
}

impl LocalRateLimiter {
    /// A limiter tracking at most `config.max_keys` keys, each forgotten once idle for the longest
    /// window configured (by then its quota has refilled).
    pub fn new(config: &RateLimitConfig) -> Self {
        let idle = config.longest_window().max(Duration::from_millis(1));
        Self {
            table: BoundedStore(
                moka::sync::Cache::builder()
                    .max_capacity(config.max_keys.max(1))
                    .time_to_idle(idle)
                    .build(),
            ),
            limiters: RwLock::default(),
            clock: DefaultClock::default(),
        }
    }

    /// Keys currently tracked (after pending evictions are applied).
    pub fn tracked_keys(&self) -> u64 {
        self.table.0.run_pending_tasks();
        self.table.0.entry_count()
    }

    fn limiter(&self, rate: Rate) -> Arc<Keyed> {
        if let Ok(map) = self.limiters.read()
            && let Some(l) = map.get(&rate)
        {
            return l.clone();
        }
        let max = NonZeroU32::new(rate.max).unwrap_or(NonZeroU32::MIN);
        let replenish = (rate.window / max.get()).max(Duration::from_nanos(1));
        let quota = Quota::with_period(replenish)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(max);
        let limiter = Arc::new(
            Gcra::<_, _, _, NoOpMiddleware<<DefaultClock as Clock>::Instant>>::new(
                quota,
                self.table.clone(),
                self.clock.clone(),
            )
            .with_middleware::<StateInformationMiddleware>(),
        );
        if let Ok(mut map) = self.limiters.write() {
            // Rates come from configuration, so this map holds a handful of entries.
            map.entry(rate).or_insert_with(|| limiter.clone());
        }
        limiter
    }

    /// Decide for `key` without waiting.
    pub fn decide(&self, key: &str, rate: Rate) -> Decision {
        let limit = rate.max.max(1);
        let replenish = rate.window / limit;
        match self.limiter(rate).check_key(&key.to_owned()) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity().min(limit);
                Decision::Allowed {
                    limit,
                    remaining,
                    reset: replenish * (limit - remaining),
                }
            }
            Err(not_until) => Decision::Limited {
                limit,
                retry_after: not_until.wait_time_from(self.clock.now()),
            },
        }
    }
}

impl RateLimiter for LocalRateLimiter {
    fn check<'a>(&'a self, key: &'a str, rate: Rate) -> BoxFuture<'a, Decision> {
        let decision = self.decide(key, rate);
        Box::pin(std::future::ready(decision))
    }
}

/// The shared limiter: one atomic Lua script per check on the Redis that holds the cache, so every
/// instance spends the same quota. Keys are stored as a keyed digest (they name subjects and
/// tenants). While Redis does not answer, each instance falls back to its own in-process limiter
/// (counted in `resk_rate_limit_fallbacks_total`): limits stay enforced, per instance, and requests
/// never fail or wait because the limiter's store is away (no connection: local at once; a failed
/// check: local for the next second).
#[cfg(feature = "cache-redis")]
pub struct RedisRateLimiter {
    store: resk_cache_redis::RedisStore,
    keys: resk_core::KeyBuilder,
    fallback: LocalRateLimiter,
    /// Unix ms before which Redis is not asked again after a failure.
    retry_at_ms: AtomicU64,
}

/// How long the shared limiter leaves Redis alone after a failed check.
#[cfg(feature = "cache-redis")]
const SHARED_RETRY_PAUSE_MS: u64 = 1_000;

#[cfg(feature = "cache-redis")]
impl fmt::Debug for RedisRateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRateLimiter")
            .field("prefix", &self.store.prefix())
            .field("fallback", &self.fallback)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "cache-redis")]
impl RedisRateLimiter {
    /// Count on `store`'s Redis, keys stored as [`resk_core::KeyBuilder::pseudonym`]s.
    pub fn new(
        store: resk_cache_redis::RedisStore,
        keys: resk_core::KeyBuilder,
        config: &RateLimitConfig,
    ) -> Self {
        Self {
            store,
            keys,
            fallback: LocalRateLimiter::new(config),
            retry_at_ms: AtomicU64::new(0),
        }
    }

    fn clock_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

#[cfg(feature = "cache-redis")]
impl RateLimiter for RedisRateLimiter {
    fn check<'a>(&'a self, key: &'a str, rate: Rate) -> BoxFuture<'a, Decision> {
        Box::pin(async move {
            let limit = rate.max.max(1);
            // While Redis is away (or just failed) a command would wait for its timeout: decide
            // locally at once instead, and try Redis again after a short pause.
            let now_ms = self.clock_ms();
            if now_ms < self.retry_at_ms.load(Ordering::Relaxed) || !self.store.is_connected() {
                metrics::counter!("resk_rate_limit_fallbacks_total").increment(1);
                return self.fallback.decide(key, rate);
            }
            match self
                .store
                .rate_limit(&self.keys.pseudonym("rate-limit", key), limit, rate.window)
                .await
            {
                Ok(out) if out.allowed => Decision::Allowed {
                    limit,
                    remaining: out.remaining,
                    reset: out.wait,
                },
                Ok(out) => Decision::Limited {
                    limit,
                    retry_after: out.wait,
                },
                Err(err) => {
                    self.retry_at_ms
                        .store(now_ms + SHARED_RETRY_PAUSE_MS, Ordering::Relaxed);
                    metrics::counter!("resk_rate_limit_fallbacks_total").increment(1);
                    tracing::warn!(error = %err, "shared rate limiter unavailable; limiting in-process");
                    self.fallback.decide(key, rate)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_keys: u64) -> RateLimitConfig {
        RateLimitConfig {
            max_keys,
            ..RateLimitConfig::new(Duration::from_secs(60), 3)
        }
    }

    const RATE: Rate = Rate {
        max: 3,
        window: Duration::from_secs(60),
    };

    #[tokio::test]
    async fn allows_max_then_limits() {
        let l = LocalRateLimiter::new(&config(1000));
        for expected_remaining in [2, 1, 0] {
            match l.check("k", RATE).await {
                Decision::Allowed {
                    remaining, limit, ..
                } => {
                    assert_eq!((remaining, limit), (expected_remaining, 3));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        match l.check("k", RATE).await {
            Decision::Limited { retry_after, .. } => {
                assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(20));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            matches!(l.check("other", RATE).await, Decision::Allowed { .. }),
            "keys are independent"
        );
        // Another rate on another key: its own quota.
        let wide = Rate { max: 5, ..RATE };
        for _ in 0..5 {
            assert!(matches!(
                l.check("wide", wide).await,
                Decision::Allowed { limit: 5, .. }
            ));
        }
        assert!(matches!(
            l.check("wide", wide).await,
            Decision::Limited { .. }
        ));
    }

    #[tokio::test]
    async fn idle_keys_are_forgotten() {
        let window = Duration::from_secs(2);
        let l = LocalRateLimiter::new(&RateLimitConfig::new(window, 2));
        let rate = Rate { max: 2, window };
        for i in 0..1000 {
            l.check(&format!("ip:{i}"), rate).await;
        }
        assert_eq!(l.tracked_keys(), 1000);
        tokio::time::sleep(window + Duration::from_millis(500)).await;
        assert_eq!(l.tracked_keys(), 0);
    }

    /// An attack with far more distinct keys than the table holds (300 000 into 3 000): the table
    /// never holds more than its bound, keys keep being limited while they are in it, and a client
    /// that keeps sending is limited again right after the flood.
    #[test]
    fn a_flood_of_distinct_keys_stays_bounded() {
        let l = LocalRateLimiter::new(&config(3_000));
        let mut most = 0;
        for i in 0..300_000u32 {
            let key = format!("ip:{i}");
            for _ in 0..3 {
                l.decide(&key, RATE);
            }
            assert!(
                matches!(l.decide(&key, RATE), Decision::Limited { .. }),
                "key {i} not limited"
            );
            if i % 10_000 == 0 {
                most = most.max(l.tracked_keys());
            }
        }
        most = most.max(l.tracked_keys());
        assert!(most <= 3_000, "{most} keys tracked");
        for _ in 0..3 {
            l.decide("steady", RATE);
        }
        assert!(matches!(l.decide("steady", RATE), Decision::Limited { .. }));
    }
}
