#![doc = include_str!("../README.md")]

use std::{
    borrow::Cow,
    future::Future,
    path::PathBuf,
    pin::Pin,
    str::FromStr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use resk_core::{
    BackendInfo, CacheKey, CacheStore, CachedValue, Capabilities, Error, ErrorKind, PurgeScope,
    Result, ScanCursor, ScanPage, SetOptions, TenantId,
};
use sqlx::{
    Row,
    error::BoxDynError,
    migrate::{Migration, MigrationSource, MigrationType, Migrator},
    sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
    },
};

/// The scheme name of this backend.
pub const SCHEME: &str = "sqlite";

/// How hard SQLite works to make a commit durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// fsync on every commit: acknowledged writes survive power loss (default).
    #[default]
    Full,
    /// fsync at WAL checkpoints: acknowledged writes survive a process crash, maybe not power loss.
    Normal,
}

/// Configuration of a [`SqliteStore`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SqliteConfig {
    /// Database file (created if missing), or `:memory:`.
    pub path: PathBuf,
    /// Durability of commits.
    pub durability: Durability,
    /// How often expired rows are deleted.
    pub sweep_interval: Duration,
    /// Most pooled connections (ignored for `:memory:`, which uses one).
    pub max_connections: u32,
    /// How long a statement waits for a lock held by another connection or process.
    pub busy_timeout: Duration,
}

impl SqliteConfig {
    /// Defaults for a database at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            durability: Durability::Full,
            sweep_interval: Duration::from_secs(60),
            max_connections: 4,
            busy_timeout: Duration::from_secs(5),
        }
    }

    /// An in-memory database (one connection; lost when the store is dropped).
    pub fn in_memory() -> Self {
        Self::new(":memory:")
    }

    /// Set the durability.
    #[must_use]
    pub fn with_durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Set the sweep interval.
    #[must_use]
    pub fn with_sweep_interval(mut self, interval: Duration) -> Self {
        self.sweep_interval = interval;
        self
    }

    fn is_memory(&self) -> bool {
        self.path.as_os_str() == ":memory:"
    }
}

/// The schema, one entry per version; applied in order by sqlx's migrator.
const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "entries",
    "CREATE TABLE entries (
        tenant TEXT NOT NULL,
        name TEXT NOT NULL,
        value BLOB NOT NULL,
        expires_at INTEGER,
        PRIMARY KEY (tenant, name)
    ) WITHOUT ROWID;
    CREATE INDEX entries_expiry ON entries (expires_at) WHERE expires_at IS NOT NULL;",
)];

#[derive(Debug)]
struct Embedded;

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(
        self,
    ) -> Pin<Box<dyn Future<Output = std::result::Result<Vec<Migration>, BoxDynError>> + Send + 's>>
    {
        Box::pin(async {
            Ok(MIGRATIONS
                .iter()
                .map(|(version, description, sql)| {
                    Migration::new(
                        *version,
                        Cow::Borrowed(*description),
                        MigrationType::Simple,
                        Cow::Borrowed(*sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// Errors of this crate before they become `resk_core::Error`s (sqlx types stay private).
#[derive(Debug, thiserror::Error)]
enum SqliteError {
    #[error("cannot open the SQLite database at {path}: {source}")]
    Open { path: String, source: sqlx::Error },
    #[error("cannot migrate the SQLite database at {path}: {source}")]
    Migrate {
        path: String,
        source: sqlx::migrate::MigrateError,
    },
    #[error("{op} failed: {source}")]
    Query {
        op: &'static str,
        source: sqlx::Error,
    },
}

impl From<SqliteError> for Error {
    fn from(err: SqliteError) -> Self {
        let (kind, op) = match &err {
            SqliteError::Open { .. } => (ErrorKind::Config, "open"),
            SqliteError::Migrate { .. } => (ErrorKind::Config, "migrate"),
            SqliteError::Query { op, source } => {
                let kind = match source {
                    sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                        ErrorKind::Unavailable
                    }
                    sqlx::Error::Database(db) if db.message().contains("locked") => {
                        ErrorKind::Unavailable
                    }
                    _ => ErrorKind::Backend,
                };
                (kind, *op)
            }
        };
        Error::new(kind, SCHEME, op, err.to_string()).with_source(err)
    }
}

fn query_err(op: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    move |source| SqliteError::Query { op, source }.into()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn to_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A durable cache store in one SQLite file.
#[derive(Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    info: BackendInfo,
    sweeper: tokio::task::JoinHandle<()>,
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.sweeper.abort();
    }
}

impl SqliteStore {
    /// Open (creating if needed) and migrate the database, then start the expiry sweeper.
    ///
    /// An unwritable location or a file that is not a SQLite database is a `Config` error naming the
    /// path.
    pub async fn connect(config: SqliteConfig) -> Result<Self> {
        let path = config.path.display().to_string();
        let memory = config.is_memory();
        let options = if memory {
            SqliteConnectOptions::from_str("sqlite::memory:").map_err(|source| {
                SqliteError::Open {
                    path: path.clone(),
                    source,
                }
            })?
        } else {
            SqliteConnectOptions::new()
                .filename(&config.path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
        }
        .synchronous(match config.durability {
            Durability::Full => SqliteSynchronous::Full,
            Durability::Normal => SqliteSynchronous::Normal,
        })
        .busy_timeout(config.busy_timeout)
        .foreign_keys(true);
        let mut pool = SqlitePoolOptions::new();
        pool = if memory {
            // Every connection to ":memory:" is a new database: keep exactly one, forever.
            pool.max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            pool.max_connections(config.max_connections.max(1))
        };
        let pool = pool
            .connect_with(options)
            .await
            .map_err(|source| SqliteError::Open {
                path: path.clone(),
                source,
            })?;
        let migrator = Migrator::new(Embedded)
            .await
            .map_err(|source| SqliteError::Migrate {
                path: path.clone(),
                source,
            })?;
        migrator
            .run(&pool)
            .await
            .map_err(|source| SqliteError::Migrate {
                path: path.clone(),
                source,
            })?;
        let sweeper = tokio::spawn(sweep(pool.clone(), config.sweep_interval));
        Ok(Self {
            pool,
            info: BackendInfo {
                name: SCHEME,
                capabilities: Capabilities::new(!memory, false, false),
            },
            sweeper,
        })
    }

    /// Delete expired rows now; returns how many were deleted.
    pub async fn sweep_expired(&self) -> Result<u64> {
        delete_expired(&self.pool).await
    }

    /// Close the pool, waiting for connections to finish (a clean shutdown checkpoints the WAL).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

async fn delete_expired(pool: &SqlitePool) -> Result<u64> {
    let done = sqlx::query("DELETE FROM entries WHERE expires_at IS NOT NULL AND expires_at <= ?")
        .bind(now_ms())
        .execute(pool)
        .await
        .map_err(query_err("sweep"))?;
    Ok(done.rows_affected())
}

async fn sweep(pool: SqlitePool, every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
    tick.tick().await;
    loop {
        tick.tick().await;
        if pool.is_closed() {
            break;
        }
        match delete_expired(&pool).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(deleted = n, "swept expired cache rows"),
            Err(err) => tracing::warn!(error = %err, "sweeping expired cache rows failed"),
        }
    }
}

const LIVE: &str = "(expires_at IS NULL OR expires_at > ?)";

impl CacheStore for SqliteStore {
    fn info(&self) -> &BackendInfo {
        &self.info
    }

    async fn get(&self, key: &CacheKey) -> Result<Option<CachedValue>> {
        let row = sqlx::query(&format!(
            "SELECT value, expires_at FROM entries WHERE tenant = ? AND name = ? AND {LIVE}"
        ))
        .bind(key.tenant().as_str())
        .bind(key.name())
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await
        .map_err(query_err("get"))?;
        let Some(row) = row else { return Ok(None) };
        let value: Vec<u8> = row.try_get(0).map_err(query_err("get"))?;
        let expires: Option<i64> = row.try_get(1).map_err(query_err("get"))?;
        Ok(Some(CachedValue {
            bytes: Bytes::from(value),
            expires_at: expires.map(|ms| UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)),
            source: SCHEME,
        }))
    }

    async fn set(&self, key: &CacheKey, value: Bytes, options: SetOptions) -> Result<bool> {
        let now = SystemTime::now();
        let expires_at = options.ttl.map(|t| to_ms(now + t));
        // One statement either way, so `if_absent` is atomic: the upsert only replaces a row that
        // has expired (an expired row counts as absent).
        let sql = if options.if_absent {
            "INSERT INTO entries (tenant, name, value, expires_at) VALUES (?, ?, ?, ?)
             ON CONFLICT (tenant, name) DO UPDATE
             SET value = excluded.value, expires_at = excluded.expires_at
             WHERE entries.expires_at IS NOT NULL AND entries.expires_at <= ?"
        } else {
            "INSERT INTO entries (tenant, name, value, expires_at) VALUES (?, ?, ?, ?)
             ON CONFLICT (tenant, name) DO UPDATE
             SET value = excluded.value, expires_at = excluded.expires_at"
        };
        let mut query = sqlx::query(sql)
            .bind(key.tenant().as_str())
            .bind(key.name())
            .bind(value.as_ref())
            .bind(expires_at);
        if options.if_absent {
            query = query.bind(to_ms(now));
        }
        let done = query.execute(&self.pool).await.map_err(query_err("set"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete(&self, key: &CacheKey) -> Result<bool> {
        let row =
            sqlx::query("DELETE FROM entries WHERE tenant = ? AND name = ? RETURNING expires_at")
                .bind(key.tenant().as_str())
                .bind(key.name())
                .fetch_optional(&self.pool)
                .await
                .map_err(query_err("delete"))?;
        let Some(row) = row else { return Ok(false) };
        let expires: Option<i64> = row.try_get(0).map_err(query_err("delete"))?;
        Ok(expires.is_none_or(|ms| ms > now_ms()))
    }

    async fn purge(&self, scope: &PurgeScope) -> Result<u64> {
        let mut tx = self.pool.begin().await.map_err(query_err("purge"))?;
        let now = now_ms();
        let live = match scope {
            PurgeScope::Tenant(tenant) => {
                let live: i64 = sqlx::query_scalar(&format!(
                    "SELECT count(*) FROM entries WHERE tenant = ? AND {LIVE}"
                ))
                .bind(tenant.as_str())
                .bind(now)
                .fetch_one(&mut *tx)
                .await
                .map_err(query_err("purge"))?;
                sqlx::query("DELETE FROM entries WHERE tenant = ?")
                    .bind(tenant.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(query_err("purge"))?;
                live
            }
            _ => {
                let live: i64 =
                    sqlx::query_scalar(&format!("SELECT count(*) FROM entries WHERE {LIVE}"))
                        .bind(now)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(query_err("purge"))?;
                sqlx::query("DELETE FROM entries")
                    .execute(&mut *tx)
                    .await
                    .map_err(query_err("purge"))?;
                live
            }
        };
        tx.commit().await.map_err(query_err("purge"))?;
        Ok(live.max(0) as u64)
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(query_err("ping"))?;
        Ok(())
    }

    async fn scan(
        &self,
        scope: &PurgeScope,
        cursor: Option<&ScanCursor>,
        limit: usize,
    ) -> Result<ScanPage> {
        // Keyset pagination on the primary key: SQLite's BINARY collation orders text by bytes,
        // like `CacheKey`'s `Ord`.
        let limit = limit.max(1);
        let after = cursor.map(ScanCursor::resume_key).transpose()?;
        let after = after.as_ref();
        let tenant = match scope {
            PurgeScope::Tenant(t) => Some(t.as_str()),
            _ => None,
        };
        let rows = sqlx::query(
            "SELECT tenant, name, value, expires_at FROM entries
             WHERE (expires_at IS NULL OR expires_at > ?1)
               AND (?2 IS NULL OR tenant = ?2)
               AND (?3 IS NULL OR (tenant, name) > (?3, ?4))
             ORDER BY tenant, name LIMIT ?5",
        )
        .bind(now_ms())
        .bind(tenant)
        .bind(after.map(|k| k.tenant().as_str()))
        .bind(after.map(CacheKey::name))
        // One row more than the page: whether the walk goes on.
        .bind(i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("scan"))?;
        let more = rows.len() > limit;
        let mut page = Vec::with_capacity(rows.len().min(limit));
        for row in rows.into_iter().take(limit) {
            let tenant: String = row.try_get(0).map_err(query_err("scan"))?;
            let name: String = row.try_get(1).map_err(query_err("scan"))?;
            let value: Vec<u8> = row.try_get(2).map_err(query_err("scan"))?;
            let expires: Option<i64> = row.try_get(3).map_err(query_err("scan"))?;
            let key = CacheKey::new(TenantId::new(&tenant)?, name)?;
            page.push((
                key,
                CachedValue {
                    bytes: Bytes::from(value),
                    expires_at: expires
                        .map(|ms| UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)),
                    source: SCHEME,
                },
            ));
        }
        let next = more
            .then(|| page.last().map(|(key, _)| ScanCursor::after(key)))
            .flatten();
        Ok(ScanPage {
            entries: page,
            next,
        })
    }
}
