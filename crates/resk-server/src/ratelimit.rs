//! Rate limiting behind a trait, so a Redis-shared limiter can replace the in-process one.
//!
//! The in-process limiter is [`governor`]'s keyed GCRA: a quota of `max` requests per `window`
//! becomes a burst of `max` that refills at `window / max`. Unlike a fixed window it has no boundary at
//! which a client can send `2 × max` requests, and it keeps one 8-byte timestamp per key; a janitor
//! drops keys idle for a full window so memory stays bounded by the keys active in one window.

use std::{fmt, num::NonZeroU32, sync::Arc, time::Duration};

use governor::{
    Quota, RateLimiter as Gcra,
    clock::{Clock, DefaultClock},
    middleware::StateInformationMiddleware,
    state::keyed::DefaultKeyedStateStore,
};
use resk_core::BoxFuture;

use crate::config::RateLimitConfig;

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
    /// Count one request for `key` and decide.
    fn check<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Decision>;
}

type KeyedGcra =
    Gcra<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// The in-process GCRA limiter.
pub struct LocalRateLimiter {
    limiter: KeyedGcra,
    clock: DefaultClock,
    limit: u32,
    replenish: Duration,
}

impl fmt::Debug for LocalRateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalRateLimiter")
            .field("limit", &self.limit)
            .field("keys", &self.limiter.len())
            .finish()
    }
}

impl LocalRateLimiter {
    /// A limiter allowing `config.max` requests per `config.window` and key.
    pub fn new(config: RateLimitConfig) -> Self {
        let max = NonZeroU32::new(config.max).unwrap_or(NonZeroU32::MIN);
        let replenish = (config.window / max.get()).max(Duration::from_nanos(1));
        let quota = Quota::with_period(replenish)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(max);
        Self {
            limiter: Gcra::keyed(quota).with_middleware::<StateInformationMiddleware>(),
            clock: DefaultClock::default(),
            limit: max.get(),
            replenish,
        }
    }

    /// Forget keys whose quota has fully refilled, and release their memory.
    pub fn sweep(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Keys currently tracked.
    pub fn tracked_keys(&self) -> usize {
        self.limiter.len()
    }

    /// Sweep every `period` until the limiter is dropped.
    pub fn spawn_janitor(self: &Arc<Self>, period: Duration) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(limiter) = weak.upgrade() else { break };
                limiter.sweep();
            }
        });
    }

    fn decide(&self, key: &str) -> Decision {
        match self.limiter.check_key(&key.to_owned()) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                Decision::Allowed {
                    limit: self.limit,
                    remaining,
                    reset: self.replenish * (self.limit - remaining.min(self.limit)),
                }
            }
            Err(not_until) => Decision::Limited {
                limit: self.limit,
                retry_after: not_until.wait_time_from(self.clock.now()),
            },
        }
    }
}

impl RateLimiter for LocalRateLimiter {
    fn check<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Decision> {
        let decision = self.decide(key);
        Box::pin(std::future::ready(decision))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(max: u32, window_ms: u64) -> LocalRateLimiter {
        LocalRateLimiter::new(RateLimitConfig {
            window: Duration::from_millis(window_ms),
            max,
        })
    }

    #[tokio::test]
    async fn allows_max_then_limits() {
        let l = limiter(3, 60_000);
        for expected_remaining in [2, 1, 0] {
            match l.check("k").await {
                Decision::Allowed {
                    remaining, limit, ..
                } => {
                    assert_eq!((remaining, limit), (expected_remaining, 3));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        match l.check("k").await {
            Decision::Limited { retry_after, .. } => {
                assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(20));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            matches!(l.check("other").await, Decision::Allowed { .. }),
            "keys are independent"
        );
    }

    #[tokio::test]
    async fn idle_keys_are_swept() {
        let l = limiter(2, 20);
        for i in 0..1000 {
            l.check(&format!("ip:{i}")).await;
        }
        assert_eq!(l.tracked_keys(), 1000);
        tokio::time::sleep(Duration::from_millis(60)).await;
        l.sweep();
        assert_eq!(l.tracked_keys(), 0);
    }
}
