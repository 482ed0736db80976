#![doc = include_str!("../README.md")]

mod bus;
mod ratelimit;

pub use bus::RedisBus;
pub use ratelimit::RateOutcome;

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use fred::{
    prelude::{
        Builder, ClientLike, ClusterInterface, Config, Error as FredError,
        ErrorKind as FredErrorKind, Expiration, KeysInterface, Pool, ReconnectPolicy,
    },
    types::Key,
};
use futures_util::StreamExt;
use resk_core::{
    BackendInfo, CacheKey, CacheStore, CachedValue, Capabilities, Error, ErrorKind, PurgeScope,
    Result, ScanCursor, ScanPage, SetOptions, TenantId,
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

/// `SCAN` steps one [`CacheStore::scan`] call takes at most before it returns what it found (with
/// a cursor to go on), so a page over a sparse scope still answers quickly.
const SCAN_STEPS: usize = 8;

/// The live value in `stored`, read from `key`; `None` when expired or malformed (logged).
fn live(key: &CacheKey, stored: Bytes) -> Option<CachedValue> {
    // Values carry their expiry in a header (`CachedValue::frame`): Redis enforces the expiry
    // itself (`SET … PX`), and the header lets one `GET` return it, instead of `GET` + `PTTL`.
    match CachedValue::unframe(stored, SCHEME) {
        Some(value) => (!value.is_expired()).then_some(value),
        None => {
            tracing::warn!(key = %key, "Redis value shorter than its header; treated as a miss");
            None
        }
    }
}

/// Where a Redis walk stands: which primary (0 without a cluster), its `SCAN` cursor, and, when
/// the step at that cursor did not fit in the last page, what was taken from it (the step is read
/// again and only what was not taken is taken).
///
/// Text form `node:cursor` or `node:cursor:fingerprint:last-key`.
#[derive(Debug, PartialEq, Eq)]
struct Position {
    node: usize,
    cursor: String,
    taken: Option<Taken>,
}

/// The part of a `SCAN` step already returned: every key of the step up to `through` (the step's
/// keys are taken in order), and a fingerprint of those keys.
///
/// Reading the same cursor again returns the same keys only while Redis's table keeps its size:
/// when it shrinks between two pages, the step at the cursor also holds keys of a bucket the walk
/// has not reached yet, some of which may sort before `through`. Taking only keys after `through`
/// would lose them for good (found by the conformance test, under other tests' deletions). So a
/// step whose keys up to `through` no longer have the fingerprint is taken again from its start:
/// a key may come twice (as `SCAN` allows), none is lost.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Taken {
    through: String,
    fingerprint: u64,
}

impl Taken {
    /// `through` and the fingerprint of `step`'s keys up to it (`step` sorted).
    fn of(step: &[(String, CacheKey)], through: String) -> Self {
        let fingerprint = Self::fingerprint(step, &through);
        Self {
            through,
            fingerprint,
        }
    }

    /// A hash of the keys of `step` (sorted) up to `through`. std's `DefaultHasher` with its fixed
    /// keys: the same for every instance built with the same Rust; a cursor read by a build whose
    /// hash differs only restarts its step (duplicates, never a loss).
    fn fingerprint(step: &[(String, CacheKey)], through: &str) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::hash::DefaultHasher::new();
        for (text, _) in step.iter().take_while(|(text, _)| text.as_str() <= through) {
            text.hash(&mut hasher);
        }
        hasher.finish()
    }
}

impl Position {
    fn start() -> Self {
        Self {
            node: 0,
            cursor: "0".into(),
            taken: None,
        }
    }

    fn parse(cursor: &ScanCursor) -> Result<Self> {
        let bad = || {
            Error::new(
                ErrorKind::InvalidInput,
                SCHEME,
                "scan",
                "not a cursor returned by this store's walk",
            )
        };
        let mut parts = cursor.as_str().splitn(4, ':');
        let node = parts
            .next()
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(bad)?;
        let at = parts
            .next()
            .filter(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(bad)?;
        let taken = match (parts.next(), parts.next()) {
            (None, None) => None,
            (Some(fingerprint), Some(through)) => Some(Taken {
                through: through.to_owned(),
                fingerprint: u64::from_str_radix(fingerprint, 16).map_err(|_| bad())?,
            }),
            _ => return Err(bad()),
        };
        Ok(Self {
            node,
            cursor: at.to_owned(),
            taken,
        })
    }

    fn to_cursor(&self) -> Result<ScanCursor> {
        let text = match &self.taken {
            Some(Taken {
                through,
                fingerprint,
            }) => format!("{}:{}:{fingerprint:016x}:{through}", self.node, self.cursor),
            None => format!("{}:{}", self.node, self.cursor),
        };
        ScanCursor::new(text)
    }
}

/// What to take of a `SCAN` step (its keys in scope, sorted and deduplicated) into a page with
/// `room` places, given what earlier pages took of it: the keys taken, and, when some do not fit,
/// what the step's next reading must skip.
fn take_step(
    mut step: Vec<(String, CacheKey)>,
    taken: Option<&Taken>,
    room: usize,
) -> (Vec<(String, CacheKey)>, Option<Taken>) {
    let skip = match taken {
        Some(taken) if Taken::fingerprint(&step, &taken.through) == taken.fingerprint => {
            step.partition_point(|(text, _)| text.as_str() <= taken.through.as_str())
        }
        // Not the reading the earlier pages took from (or a first reading): from its start.
        _ => 0,
    };
    if step.len() - skip <= room {
        step.drain(..skip);
        return (step, None);
    }
    if room == 0 {
        return (Vec::new(), taken.cloned());
    }
    let end = skip + room;
    // Everything up to the last key taken now, the earlier pages' keys included.
    let taken = Taken::of(&step, step[end - 1].0.clone());
    step.truncate(end);
    step.drain(..skip);
    (step, Some(taken))
}

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
        Ok(stored.and_then(|stored| live(key, stored)))
    }

    async fn set(&self, key: &CacheKey, value: Bytes, options: SetOptions) -> Result<bool> {
        let ttl = options.ttl;
        let expiry = ttl.map(|t| Expiration::PX(t.as_millis().clamp(1, i64::MAX as u128) as i64));
        let expires_at = ttl.map(|t| SystemTime::now() + t);
        // `SET … NX`: Redis writes only a key that does not exist (an expired key no longer does),
        // atomically, and answers nil when it did not.
        let condition = options.if_absent.then_some(fred::types::SetOptions::NX);
        let reply: Option<String> = self
            .pool
            .set(
                self.redis_key(key),
                CachedValue::frame(&value, expires_at),
                expiry,
                condition,
                false,
            )
            .await
            .map_err(|e| convert("set", e))?;
        Ok(!options.if_absent || reply.is_some())
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

    /// One page from `SCAN MATCH` steps (each primary of a cluster in turn), at most
    /// [`SCAN_STEPS`] of them with `COUNT` about `limit`, then one pipelined `GET` of the keys found.
    /// The cursor is Redis's own, so a walk costs one pass over the keyspace, whatever its length.
    /// A step that finds more keys than fit is sorted and cut; the next page reads it again and
    /// takes the keys after the last one returned. Redis's `SCAN` guarantee carries over: every key
    /// present throughout the walk is returned, possibly twice.
    async fn scan(
        &self,
        scope: &PurgeScope,
        cursor: Option<&ScanCursor>,
        limit: usize,
    ) -> Result<ScanPage> {
        let limit = limit.max(1);
        let client = self.pool.next();
        let nodes = if client.is_clustered() {
            client
                .cached_cluster_state()
                .map(|state| state.unique_primary_nodes())
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let mut at = match cursor {
            Some(c) => Position::parse(c)?,
            None => Position::start(),
        };
        if at.node >= nodes.len().max(1) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                SCHEME,
                "scan",
                "the cursor names a cluster node this walk does not have",
            ));
        }
        let pattern = self.pattern(scope);
        let head = format!("{}:", self.prefix);
        let count = u32::try_from(limit.clamp(10, 1000)).unwrap_or(1000);
        let mut keys: Vec<(String, CacheKey)> = Vec::new();
        let mut more = true;
        for _ in 0..SCAN_STEPS {
            let step = match nodes.get(at.node) {
                Some(node) => {
                    client
                        .with_cluster_node(node)
                        .scan_page(at.cursor.clone(), pattern.clone(), Some(count), None)
                        .await
                }
                None => {
                    client
                        .scan_page(at.cursor.clone(), pattern.clone(), Some(count), None)
                        .await
                }
            };
            let (step_next, found): (String, Vec<Key>) = step.map_err(|e| convert("scan", e))?;
            let mut step: Vec<(String, CacheKey)> = found
                .iter()
                .filter_map(|key| {
                    let text = key.as_str()?;
                    let (tenant, name) = text.strip_prefix(&head)?.split_once(':')?;
                    let parsed =
                        CacheKey::new(TenantId::new(tenant).ok()?, name.to_owned()).ok()?;
                    scope.contains(&parsed).then(|| (text.to_owned(), parsed))
                })
                .collect();
            step.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            step.dedup_by(|a, b| a.0 == b.0);
            let (step, rest) = take_step(step, at.taken.as_ref(), limit - keys.len());
            keys.extend(step);
            at.taken = rest;
            if at.taken.is_some() {
                // The step did not fit: the next page reads it again.
                break;
            }
            if step_next == "0" {
                at.node += 1;
                at.cursor = "0".into();
                if at.node >= nodes.len().max(1) {
                    more = false;
                    break;
                }
            } else {
                at.cursor = step_next;
            }
            if keys.len() == limit {
                break;
            }
        }
        let mut entries = Vec::with_capacity(keys.len());
        if !keys.is_empty() {
            let pipeline = client.pipeline();
            for (text, _) in &keys {
                let _: () = pipeline
                    .get(text.as_str())
                    .await
                    .map_err(|e| convert("scan", e))?;
            }
            let values: Vec<Option<Bytes>> =
                pipeline.all().await.map_err(|e| convert("scan", e))?;
            for ((_, key), stored) in keys.into_iter().zip(values) {
                // Gone or expired since the listing: left out.
                if let Some(value) = stored.and_then(|stored| live(&key, stored)) {
                    entries.push((key, value));
                }
            }
        }
        Ok(ScanPage {
            entries,
            next: if more { Some(at.to_cursor()?) } else { None },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_read_back_what_they_wrote() {
        let position = Position {
            node: 2,
            cursor: "1234".into(),
            taken: Some(Taken {
                through: "resk:acme:a:b".into(),
                fingerprint: 0x00ab_cdef_0123_4567,
            }),
        };
        let cursor = position.to_cursor().unwrap();
        assert_eq!(cursor.as_str(), "2:1234:00abcdef01234567:resk:acme:a:b");
        assert_eq!(Position::parse(&cursor).unwrap(), position);
        let plain = Position {
            node: 0,
            cursor: "17".into(),
            taken: None,
        };
        assert_eq!(Position::parse(&plain.to_cursor().unwrap()).unwrap(), plain);
        for bad in [
            "x",
            "1",
            "1:",
            "1:x",
            "-1:0",
            "a:0",
            "1:0:resk",
            "1:0:xyz:resk:a:b",
        ] {
            let err = Position::parse(&ScanCursor::new(bad).unwrap()).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad}");
        }
    }

    fn step(names: &[&str]) -> Vec<(String, CacheKey)> {
        let tenant = TenantId::new("acme").unwrap();
        names
            .iter()
            .map(|n| {
                (
                    format!("resk:acme:{n}"),
                    CacheKey::new(tenant.clone(), (*n).to_owned()).unwrap(),
                )
            })
            .collect()
    }

    fn names(keys: &[(String, CacheKey)]) -> Vec<&str> {
        keys.iter().map(|(_, k)| k.name()).collect()
    }

    #[test]
    fn a_step_read_again_skips_what_was_taken() {
        let (page, taken) = take_step(step(&["k0", "k2", "k5"]), None, 2);
        assert_eq!(names(&page), ["k0", "k2"]);
        let (page, taken) = take_step(step(&["k0", "k2", "k5"]), taken.as_ref(), 2);
        assert_eq!(names(&page), ["k5"]);
        assert_eq!(taken, None);
    }

    #[test]
    fn a_step_that_changed_is_taken_again_from_its_start() {
        // Redis's table shrank between two pages: the same cursor now also reads a bucket the
        // walk had not reached, whose `k1` sorts before the last key taken. It must come.
        let (page, taken) = take_step(step(&["k2", "k5"]), None, 1);
        assert_eq!(names(&page), ["k2"]);
        let (page, taken) = take_step(step(&["k1", "k2", "k5"]), taken.as_ref(), 1);
        assert_eq!(names(&page), ["k1"]);
        let (page, taken) = take_step(step(&["k1", "k2", "k5"]), taken.as_ref(), 1);
        assert_eq!(names(&page), ["k2"], "taken again: SCAN allows a key twice");
        let (page, taken) = take_step(step(&["k1", "k2", "k5"]), taken.as_ref(), 1);
        assert_eq!(names(&page), ["k5"]);
        assert_eq!(taken, None);
    }

    #[test]
    fn a_step_with_no_room_waits_for_the_next_page() {
        let (_, taken) = take_step(step(&["k0", "k2", "k5"]), None, 1);
        let (page, still) = take_step(step(&["k0", "k2", "k5"]), taken.as_ref(), 0);
        assert!(page.is_empty());
        assert_eq!(still, taken);
    }

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(escape_glob("a*b?c[d]e\\f"), "a\\*b\\?c\\[d\\]e\\\\f");
        assert_eq!(escape_glob("resk"), "resk");
    }
}
