#![doc = include_str!("../README.md")]

mod bus;
mod ratelimit;

pub use bus::RedisBus;
pub use ratelimit::RateOutcome;

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use fred::{
    prelude::{
        Builder, ClientLike, Config, Error as FredError, ErrorKind as FredErrorKind, Expiration,
        KeysInterface, Pool, ReconnectPolicy,
    },
    types::Key,
};
use futures_util::StreamExt;
use resk_core::{
    BackendInfo, CacheKey, CacheStore, CachedValue, Capabilities, Error, ErrorKind, PurgeScope,
    Result, TenantId,
};

/// The scheme name of this backend.
pub const SCHEME: &str = "redis";

/// Configuration of a [`RedisStore`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port/db` (or a cluster or sentinel URL, see fred's `Config`).
    pub url: String,
    /// Prefix of every key this store writes; purges never touch keys outside it.
    pub prefix: String,
    /// Connections in the pool.
    pub pool_size: usize,
    /// Time limit for establishing a connection, and for waiting on it at start-up.
    pub connect_timeout: Duration,
    /// Time limit for one command; past it the call fails with `Unavailable` instead of hanging while
    /// Redis is away.
    pub command_timeout: Duration,
}

impl RedisConfig {
    /// Defaults for `url`: prefix `resk`, 4 connections, 5 s connect timeout.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: "resk".into(),
            pool_size: 4,
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(2),
        }
    }

    /// Set the key prefix.
    #[must_use]
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }
}

pub(crate) fn convert(op: &'static str, err: FredError) -> Error {
    let kind = match err.kind() {
        FredErrorKind::IO
        | FredErrorKind::Timeout
        | FredErrorKind::Canceled
        | FredErrorKind::Backpressure
        | FredErrorKind::Cluster => ErrorKind::Unavailable,
        FredErrorKind::Auth => ErrorKind::Config,
        FredErrorKind::Config | FredErrorKind::Url => ErrorKind::Config,
        _ => ErrorKind::Backend,
    };
    Error::new(kind, SCHEME, op, err.details().to_owned()).with_source(err)
}

/// Escape Redis glob characters so `text` matches only itself in a `SCAN MATCH` pattern.
fn escape_glob(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A fred builder for `config`: parsed URL, timeouts, and reconnection with backoff.
pub(crate) fn builder(config: &RedisConfig) -> Result<Builder> {
    let mut fred_config = Config::from_url(&config.url).map_err(|e| convert("connect", e))?;
    fred_config.fail_fast = false;
    let mut builder = Builder::from_config(fred_config);
    builder
        .with_connection_config(|c| {
            c.connection_timeout = config.connect_timeout;
        })
        .with_performance_config(|p| {
            p.default_command_timeout = config.command_timeout;
        })
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2));
    Ok(builder)
}

/// A cache store shared by every process that points at the same Redis and prefix. Clones share the
/// connection pool.
#[derive(Clone, Debug)]
pub struct RedisStore {
    pool: Pool,
    prefix: String,
    info: BackendInfo,
}

impl RedisStore {
    /// Build the pool and start connecting. A malformed URL is a `Config` error. An unreachable server
    /// is not an error: the store is returned at once, keeps reconnecting in the background (backoff
    /// from 100 ms doubling to 2 s), and its calls fail with `Unavailable` until Redis answers, which
    /// [`CacheStore::ping`] reports.
    pub async fn connect(config: RedisConfig) -> Result<Self> {
        let pool = builder(&config)?
            .build_pool(config.pool_size.max(1))
            .map_err(|e| convert("connect", e))?;
        // `init` spawns the connection tasks and waits for them; with `fail_fast` off they keep
        // retrying after this wait gives up, so the store comes up while Redis is away.
        match tokio::time::timeout(config.connect_timeout, pool.init()).await {
            Ok(Ok(_handle)) => {}
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "Redis not reachable yet; retrying in the background");
            }
            Err(_) => tracing::warn!("Redis not reachable yet; retrying in the background"),
        }
        Ok(Self {
            pool,
            prefix: config.prefix,
            info: BackendInfo {
                name: SCHEME,
                capabilities: Capabilities::new(true, true, true),
            },
        })
    }

    /// The prefix of every key this store writes.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn redis_key(&self, key: &CacheKey) -> String {
        format!("{}:{}:{}", self.prefix, key.tenant(), key.name())
    }

    fn pattern(&self, scope: &PurgeScope) -> String {
        match scope {
            PurgeScope::Tenant(tenant) => format!("{}:{}:*", escape_glob(&self.prefix), tenant),
            _ => format!("{}:*", escape_glob(&self.prefix)),
        }
    }

    /// `UNLINK` `keys`; on a cluster one command per hash slot, since a multi-key command must not
    /// cross slots.
    async fn unlink(&self, keys: Vec<Key>) -> Result<u64> {
        let groups = if self.pool.next().is_clustered() {
            fred::util::group_by_hash_slot(keys)
                .map_err(|e| convert("purge", e))?
                .into_values()
                .map(Vec::from)
                .collect()
        } else {
            vec![keys]
        };
        let mut removed = 0u64;
        for group in groups {
            let n: i64 = self
                .pool
                .unlink(group)
                .await
                .map_err(|e| convert("purge", e))?;
            removed += n.max(0) as u64;
        }
        Ok(removed)
    }

    /// Increment the shared counter `name` of `tenant` and return its new value (1 on first use); the
    /// counter is forgotten `idle` after its last increment. One round trip (`INCR` + `PEXPIRE` in a
    /// pipeline). Used for round-robin turns that every instance shares.
    pub async fn next_turn(&self, tenant: &TenantId, name: &str, idle: Duration) -> Result<u64> {
        // `#` after the prefix keeps counters outside every `prefix:tenant:*` purge pattern.
        let key = format!("{}#turn:{tenant}:{name}", self.prefix);
        let pipeline = self.pool.next().pipeline();
        let _: () = pipeline.incr(&key).await.map_err(|e| convert("turn", e))?;
        let _: () = pipeline
            .pexpire(
                &key,
                i64::try_from(idle.as_millis()).unwrap_or(i64::MAX),
                None,
            )
            .await
            .map_err(|e| convert("turn", e))?;
        let (n, _): (i64, i64) = pipeline.all().await.map_err(|e| convert("turn", e))?;
        Ok(n.max(0) as u64)
    }

    /// Close every connection.
    pub async fn quit(&self) {
        let _ = self.pool.quit().await;
    }
}

/// Keys unlinked per command during a purge.
const PURGE_BATCH: usize = 500;

impl CacheStore for RedisStore {
    fn info(&self) -> &BackendInfo {
        &self.info
    }

    async fn get(&self, key: &CacheKey) -> Result<Option<CachedValue>> {
        let stored: Option<Bytes> = self
            .pool
            .get(self.redis_key(key))
            .await
            .map_err(|e| convert("get", e))?;
        let Some(stored) = stored else {
            return Ok(None);
        };
        // Values carry their expiry in a header (`CachedValue::frame`): Redis enforces the expiry
        // itself (`SET … PX`), and the header lets one `GET` return it, instead of `GET` + `PTTL`.
        match CachedValue::unframe(stored, SCHEME) {
            Some(value) => Ok((!value.is_expired()).then_some(value)),
            None => {
                tracing::warn!(key = %key, "Redis value shorter than its header; treated as a miss");
                Ok(None)
            }
        }
    }

    async fn set(&self, key: &CacheKey, value: Bytes, ttl: Option<Duration>) -> Result<()> {
        let expiry = ttl.map(|t| Expiration::PX(t.as_millis().clamp(1, i64::MAX as u128) as i64));
        let expires_at = ttl.map(|t| SystemTime::now() + t);
        let _: () = self
            .pool
            .set(
                self.redis_key(key),
                CachedValue::frame(&value, expires_at),
                expiry,
                None,
                false,
            )
            .await
            .map_err(|e| convert("set", e))?;
        Ok(())
    }

    async fn delete(&self, key: &CacheKey) -> Result<bool> {
        let removed: i64 = self
            .pool
            .unlink(self.redis_key(key))
            .await
            .map_err(|e| convert("delete", e))?;
        Ok(removed > 0)
    }

    async fn purge(&self, scope: &PurgeScope) -> Result<u64> {
        let client = self.pool.next();
        let pattern = self.pattern(scope);
        // A cluster spreads keys over its primaries: scan every one of them.
        let mut keys = if client.is_clustered() {
            client
                .scan_cluster_buffered(pattern, Some(1000), None)
                .boxed()
        } else {
            client.scan_buffered(pattern, Some(1000), None).boxed()
        };
        let mut batch: Vec<Key> = Vec::with_capacity(PURGE_BATCH);
        let mut removed = 0u64;
        while let Some(key) = keys.next().await {
            batch.push(key.map_err(|e| convert("purge", e))?);
            if batch.len() == PURGE_BATCH {
                removed += self.unlink(std::mem::take(&mut batch)).await?;
            }
        }
        if !batch.is_empty() {
            removed += self.unlink(batch).await?;
        }
        Ok(removed)
    }

    async fn ping(&self) -> Result<()> {
        let _: String = self.pool.ping(None).await.map_err(|e| convert("ping", e))?;
        Ok(())
    }

    /// Redis keeps no order: every page lists the scope's keys (`SCAN MATCH`, every primary of a
    /// cluster), sorts those after the cursor and reads them one `GET` at a time until the page is
    /// full. A page costs a walk of the scope's keys; a tenant-scoped walk only that tenant's.
    async fn scan(
        &self,
        scope: &PurgeScope,
        after: Option<&CacheKey>,
        limit: usize,
    ) -> Result<Vec<(CacheKey, CachedValue)>> {
        let client = self.pool.next();
        let pattern = self.pattern(scope);
        let mut found = if client.is_clustered() {
            client
                .scan_cluster_buffered(pattern, Some(1000), None)
                .boxed()
        } else {
            client.scan_buffered(pattern, Some(1000), None).boxed()
        };
        let head = format!("{}:", self.prefix);
        let mut keys = Vec::new();
        while let Some(key) = found.next().await {
            let key = key.map_err(|e| convert("scan", e))?;
            let parsed = key
                .as_str()
                .and_then(|k| k.strip_prefix(&head))
                .and_then(|rest| rest.split_once(':'))
                .and_then(|(tenant, name)| {
                    CacheKey::new(TenantId::new(tenant).ok()?, name.to_owned()).ok()
                });
            if let Some(key) = parsed
                && scope.contains(&key)
                && after.is_none_or(|a| key > *a)
            {
                keys.push(key);
            }
        }
        // SCAN may return a key twice.
        keys.sort_unstable();
        keys.dedup();
        let mut page = Vec::with_capacity(limit.min(keys.len()));
        for key in keys {
            if page.len() == limit {
                break;
            }
            // Gone or expired since the listing: skip it, the page still fills from later keys.
            if let Some(value) = self.get(&key).await? {
                page.push((key, value));
            }
        }
        Ok(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(escape_glob("a*b?c[d]e\\f"), "a\\*b\\?c\\[d\\]e\\\\f");
        assert_eq!(escape_glob("resk"), "resk");
    }
}
