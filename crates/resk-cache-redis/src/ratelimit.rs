//! GCRA rate limiting shared by every process on one Redis.
//!
//! One Lua script per check keeps the read-decide-write atomic (no two instances can both spend the
//! last unit of a quota), reads the clock from Redis (`TIME`), so instances with skewed clocks agree,
//! and stores one number per key with an expiry equal to the time its quota takes to refill, so an
//! idle key costs nothing. The algorithm is the same GCRA as the in-process limiter: `max` requests
//! per `window` is a burst of `max` refilling one request every `window / max`.

use std::{sync::LazyLock, time::Duration};

use fred::types::scripts::Script;

use crate::{RedisStore, convert};
use resk_core::Result;

/// Microsecond arithmetic in Lua doubles: exact below 2^53 µs (year 2255).
const GCRA_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now) or now
if tat < now then tat = now end
local allow_at = tat + interval - interval * burst
if now < allow_at then
  return {0, 0, allow_at - now}
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return {1, math.floor((now - (new_tat - interval * burst)) / interval), new_tat - now}
";

static GCRA: LazyLock<Script> = LazyLock::new(|| Script::from_lua(GCRA_LUA));

/// The answer of [`RedisStore::rate_limit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateOutcome {
    /// Whether the request may go ahead (and was counted).
    pub allowed: bool,
    /// Requests left before limiting starts (0 when refused).
    pub remaining: u32,
    /// Refused: time until the next request is allowed. Allowed: time until the whole burst is back.
    pub wait: Duration,
}

impl RedisStore {
    fn rate_key(&self, key: &str) -> String {
        // `#` after the prefix keeps counters outside every `prefix:tenant:*` purge pattern.
        format!("{}#rl:{key}", self.prefix)
    }

    /// Whether at least one pooled connection is up. While none is, commands wait for their timeout
    /// before failing: a caller with a local fallback (the rate limiter) asks first.
    pub fn is_connected(&self) -> bool {
        use fred::prelude::ClientLike;
        self.pool.clients().iter().any(ClientLike::is_connected)
    }

    /// Count one request for `key` against a quota of `max` requests per `window`, atomically for
    /// every process sharing this Redis and prefix. `key` is stored as given: pass a digest, not a
    /// user name, if keys are personal data.
    pub async fn rate_limit(&self, key: &str, max: u32, window: Duration) -> Result<RateOutcome> {
        let max = max.max(1);
        let interval_us = (window.as_micros() / u128::from(max)).clamp(1, 1 << 50);
        let args = vec![interval_us.to_string(), max.to_string()];
        let (allowed, remaining, wait_us): (i64, i64, i64) = GCRA
            .evalsha_with_reload(self.pool.next_connected(), self.rate_key(key), args)
            .await
            .map_err(|e| convert("rate_limit", e))?;
        Ok(RateOutcome {
            allowed: allowed == 1,
            remaining: u32::try_from(remaining.clamp(0, i64::from(max))).unwrap_or(max),
            wait: Duration::from_micros(u64::try_from(wait_us).unwrap_or(0)),
        })
    }
}
