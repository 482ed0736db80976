#![doc = include_str!("../README.md")]

use std::{collections::HashMap, fmt, fmt::Write as _, time::Duration};

use resk_core::{
    BackendInfo, Capabilities, CollectionSpec, Error, ErrorKind, Filter, Metric, RecordId, Result,
    Scored, TenantId, VectorPurge, VectorQuery, VectorRecord, VectorStore,
};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use sqlx::{
    PgPool, Postgres, QueryBuilder, Row,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use tokio::sync::RwLock;

/// The backend's name in errors and metrics.
pub const SCHEME: &str = "pgvector";

/// Largest dimension pgvector's HNSW index takes for `vector` columns.
const MAX_INDEXED_DIMS: usize = 2000;

/// Rows per `INSERT` statement (4 parameters each, far below PostgreSQL's 65 535).
const ROWS_PER_STATEMENT: usize = 1000;

/// How to reach PostgreSQL.
#[derive(Clone)]
#[non_exhaustive]
pub struct PgVectorConfig {
    /// `postgres://user:password@host:port/database` (libpq URL syntax).
    pub url: String,
    /// Most pooled connections.
    pub max_connections: u32,
    /// Waiting for a pooled connection, and connecting, give up after this long.
    pub timeout: Duration,
}

impl PgVectorConfig {
    /// Defaults for `url`: 10 connections, 10 s timeout.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 10,
            timeout: Duration::from_secs(10),
        }
    }
}

impl fmt::Debug for PgVectorConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may hold a password.
        f.debug_struct("PgVectorConfig")
            .field("url", &"<redacted>")
            .field("max_connections", &self.max_connections)
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[derive(Clone, Debug)]
struct Known {
    table: String,
    spec: CollectionSpec,
}

/// A [`VectorStore`] on PostgreSQL + pgvector.
#[derive(Debug)]
pub struct PgVectorStore {
    pool: PgPool,
    known: RwLock<HashMap<String, Known>>,
    info: BackendInfo,
}

fn db_error(op: &'static str, err: sqlx::Error) -> Error {
    let kind = match &err {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_) => ErrorKind::Unavailable,
        sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("08")) => {
            ErrorKind::Unavailable
        }
        sqlx::Error::Database(db) if db.code().as_deref() == Some("28P01") => {
            ErrorKind::Unauthorized
        }
        _ => ErrorKind::Backend,
    };
    Error::new(kind, SCHEME, op, "PostgreSQL call failed").with_source(err)
}

fn table_name(collection: &str) -> String {
    let digest = Sha256::digest(collection.as_bytes());
    let mut name = String::from("resk_v_");
    for b in &digest[..8] {
        let _ = write!(name, "{b:02x}");
    }
    name
}

fn opclass(metric: Metric) -> &'static str {
    match metric {
        Metric::Cosine => "vector_cosine_ops",
        Metric::L2 => "vector_l2_ops",
        Metric::Dot => "vector_ip_ops",
    }
}

fn operator(metric: Metric) -> &'static str {
    match metric {
        Metric::Cosine => "<=>",
        Metric::L2 => "<->",
        Metric::Dot => "<#>",
    }
}

/// pgvector's distance to resk's similarity (see the crate docs' table).
fn similarity(metric: Metric, distance: f64) -> f32 {
    let s = match metric {
        Metric::Cosine => 1.0 - distance,
        Metric::L2 => 1.0 / (1.0 + distance.max(0.0)),
        Metric::Dot => -distance,
    };
    s as f32
}

/// pgvector's text form of a vector: `[1,0.5,-2]` (Rust's shortest round-trip float formatting).
fn vector_text(v: &[f32]) -> String {
    let mut s = String::with_capacity(v.len() * 10 + 2);
    s.push('[');
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{x}");
    }
    s.push(']');
    s
}

/// Append a resk filter as SQL on `metadata`, every field and value bound; `false` when it matches
/// nothing.
fn push_filter(q: &mut QueryBuilder<'_, Postgres>, filter: &Filter) -> Result<()> {
    match filter {
        Filter::Eq(field, value) => {
            q.push("(metadata -> ")
                .push_bind(field.clone())
                .push(" = ")
                .push_bind(sqlx::types::Json(value.clone()))
                .push("::jsonb)");
        }
        Filter::In(field, values) => {
            if values.is_empty() {
                q.push("FALSE");
                return Ok(());
            }
            q.push("(metadata -> ")
                .push_bind(field.clone())
                .push(" IN (");
            let mut sep = q.separated(", ");
            for v in values {
                sep.push_bind(sqlx::types::Json(v.clone()));
                sep.push_unseparated("::jsonb");
            }
            q.push("))");
        }
        Filter::And(all) | Filter::Or(all) => {
            let (joiner, empty) = if matches!(filter, Filter::And(_)) {
                (" AND ", "TRUE")
            } else {
                (" OR ", "FALSE")
            };
            if all.is_empty() {
                q.push(empty);
                return Ok(());
            }
            q.push("(");
            for (i, f) in all.iter().enumerate() {
                if i > 0 {
                    q.push(joiner);
                }
                push_filter(q, f)?;
            }
            q.push(")");
        }
        other => {
            return Err(Error::new(
                ErrorKind::Unsupported,
                SCHEME,
                "query",
                format!("filter {other:?}"),
            ));
        }
    }
    Ok(())
}

impl PgVectorStore {
    /// Connect, install the extension if it is missing, and create the collection registry.
    pub async fn connect(config: PgVectorConfig) -> Result<Self> {
        if !(config.url.starts_with("postgres://") || config.url.starts_with("postgresql://")) {
            return Err(Error::new(
                ErrorKind::Config,
                SCHEME,
                "connect",
                "the URL must start with postgres:// or postgresql://",
            ));
        }
        let options: PgConnectOptions = config.url.parse().map_err(|e| {
            Error::new(
                ErrorKind::Config,
                SCHEME,
                "connect",
                "invalid PostgreSQL URL",
            )
            .with_source(e)
        })?;
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections.max(1))
            .acquire_timeout(config.timeout)
            .connect_with(options)
            .await
            .map_err(|e| db_error("connect", e))?;
        let mut tx = pool.begin().await.map_err(|e| db_error("connect", e))?;
        // Instances starting together would race on `CREATE … IF NOT EXISTS` (a unique violation in
        // the catalog): one at a time.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('resk_vector_collections'))")
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error("connect", e))?;
        sqlx::query("CREATE EXTENSION IF NOT EXISTS vector")
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                Error::new(
                    ErrorKind::Config,
                    SCHEME,
                    "connect",
                    "cannot enable the pgvector extension (is pgvector installed, and may this user \
                     CREATE EXTENSION?)",
                )
                .with_source(e)
            })?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS resk_vector_collections (
                name text PRIMARY KEY,
                table_name text NOT NULL UNIQUE,
                dims integer NOT NULL,
                metric text NOT NULL
            )",
        )
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error("connect", e))?;
        tx.commit().await.map_err(|e| db_error("connect", e))?;
        Ok(Self {
            pool,
            known: RwLock::new(HashMap::new()),
            info: BackendInfo {
                name: SCHEME,
                capabilities: Capabilities::new(true, true, false),
            },
        })
    }

    /// Check that PostgreSQL answers.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(|e| db_error("ping", e))
    }

    async fn lookup(&self, collection: &str) -> Result<Option<Known>> {
        if let Some(k) = self.known.read().await.get(collection) {
            return Ok(Some(k.clone()));
        }
        let row = sqlx::query(
            "SELECT table_name, dims, metric FROM resk_vector_collections WHERE name = $1",
        )
        .bind(collection)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| db_error("lookup", e))?;
        let Some(row) = row else { return Ok(None) };
        let known = known_of(&row)?;
        self.known
            .write()
            .await
            .insert(collection.to_owned(), known.clone());
        Ok(Some(known))
    }

    async fn require(&self, collection: &str, op: &'static str) -> Result<Known> {
        self.lookup(collection)
            .await?
            .ok_or_else(|| resk_core::collection_missing(SCHEME, op, collection))
    }
}

fn known_of(row: &sqlx::postgres::PgRow) -> Result<Known> {
    let table: String = row
        .try_get("table_name")
        .map_err(|e| db_error("lookup", e))?;
    let dims: i32 = row.try_get("dims").map_err(|e| db_error("lookup", e))?;
    let metric: String = row.try_get("metric").map_err(|e| db_error("lookup", e))?;
    let metric = serde_json::from_value::<Metric>(Value::String(metric)).map_err(|e| {
        Error::new(
            ErrorKind::Backend,
            SCHEME,
            "lookup",
            "unknown metric in resk_vector_collections",
        )
        .with_source(e)
    })?;
    Ok(Known {
        table,
        spec: CollectionSpec {
            dims: usize::try_from(dims).unwrap_or(0),
            metric,
        },
    })
}

impl VectorStore for PgVectorStore {
    fn info(&self) -> &BackendInfo {
        &self.info
    }

    async fn ensure_collection(&self, collection: &str, spec: CollectionSpec) -> Result<()> {
        if spec.dims == 0 || spec.dims > 16_000 {
            return Err(Error::new(
                ErrorKind::Config,
                SCHEME,
                "ensure_collection",
                "dimensions must be 1-16000 (pgvector's limit)",
            ));
        }
        if collection.is_empty() {
            return Err(Error::new(
                ErrorKind::Config,
                SCHEME,
                "ensure_collection",
                "the collection name is empty",
            ));
        }
        if let Some(existing) = self.lookup(collection).await? {
            return existing.spec.check_same(SCHEME, collection, spec);
        }
        let op = "ensure_collection";
        let table = table_name(collection);
        let mut tx = self.pool.begin().await.map_err(|e| db_error(op, e))?;
        // One creator at a time across instances.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('resk_vector_collections'))")
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error(op, e))?;
        let existing = sqlx::query(
            "SELECT table_name, dims, metric FROM resk_vector_collections WHERE name = $1",
        )
        .bind(collection)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| db_error(op, e))?;
        let known = match existing {
            Some(row) => {
                let known = known_of(&row)?;
                known.spec.check_same(SCHEME, collection, spec)?;
                known
            }
            None => {
                sqlx::query(
                    "INSERT INTO resk_vector_collections (name, table_name, dims, metric)
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(collection)
                .bind(&table)
                .bind(i32::try_from(spec.dims).unwrap_or(i32::MAX))
                .bind(spec.metric.as_str())
                .execute(&mut *tx)
                .await
                .map_err(|e| db_error(op, e))?;
                // Identifiers cannot be bound; `table` is `resk_v_` + hex and `dims` a number.
                sqlx::query(&format!(
                    "CREATE TABLE IF NOT EXISTS {table} (
                        tenant text NOT NULL,
                        id text NOT NULL,
                        embedding vector({dims}) NOT NULL,
                        metadata jsonb NOT NULL,
                        PRIMARY KEY (tenant, id)
                    )",
                    dims = spec.dims
                ))
                .execute(&mut *tx)
                .await
                .map_err(|e| db_error(op, e))?;
                if spec.dims <= MAX_INDEXED_DIMS {
                    sqlx::query(&format!(
                        "CREATE INDEX IF NOT EXISTS {table}_hnsw ON {table} USING hnsw (embedding {})",
                        opclass(spec.metric)
                    ))
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| db_error(op, e))?;
                }
                Known { table, spec }
            }
        };
        tx.commit().await.map_err(|e| db_error(op, e))?;
        self.known
            .write()
            .await
            .insert(collection.to_owned(), known);
        Ok(())
    }

    async fn upsert(&self, collection: &str, records: Vec<VectorRecord>) -> Result<()> {
        let known = self.require(collection, "upsert").await?;
        known.spec.check_records(SCHEME, &records)?;
        if records.is_empty() {
            return Ok(());
        }
        let op = "upsert";
        let mut tx = self.pool.begin().await.map_err(|e| db_error(op, e))?;
        for chunk in records.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<Postgres>::new(format!(
                "INSERT INTO {} (tenant, id, embedding, metadata) ",
                known.table
            ));
            q.push_values(chunk, |mut row, r| {
                row.push_bind(r.tenant.as_str().to_owned())
                    .push_bind(r.id.clone())
                    .push_bind(vector_text(&r.vector))
                    .push_unseparated("::vector")
                    .push_bind(sqlx::types::Json(Value::Object(r.metadata.clone())));
            });
            q.push(
                " ON CONFLICT (tenant, id) DO UPDATE SET embedding = EXCLUDED.embedding, \
                 metadata = EXCLUDED.metadata",
            );
            q.build()
                .execute(&mut *tx)
                .await
                .map_err(|e| db_error(op, e))?;
        }
        tx.commit().await.map_err(|e| db_error(op, e))
    }

    async fn query(&self, collection: &str, query: &VectorQuery) -> Result<Vec<Scored>> {
        let Some(known) = self.lookup(collection).await? else {
            return Ok(Vec::new());
        };
        known.spec.check_dims(SCHEME, "query", query.vector.len())?;
        if query.k == 0 {
            return Ok(Vec::new());
        }
        let op = operator(known.spec.metric);
        let vector = vector_text(&query.vector);
        let mut q = QueryBuilder::<Postgres>::new("SELECT id, metadata, (embedding ");
        q.push(op)
            .push(" ")
            .push_bind(vector.clone())
            .push("::vector)::float8 AS distance FROM ")
            .push(&known.table)
            .push(" WHERE tenant = ")
            .push_bind(query.tenant.as_str().to_owned());
        if let Some(filter) = &query.filter {
            q.push(" AND ");
            push_filter(&mut q, filter)?;
        }
        q.push(" ORDER BY embedding ")
            .push(op)
            .push(" ")
            .push_bind(vector)
            .push("::vector LIMIT ")
            .push_bind(i64::try_from(query.k).unwrap_or(i64::MAX));
        let rows = q
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(|e| db_error("query", e))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let id: String = row.try_get("id").map_err(|e| db_error("query", e))?;
            let metadata: sqlx::types::Json<Map<String, Value>> =
                row.try_get("metadata").map_err(|e| db_error("query", e))?;
            let distance: f64 = row.try_get("distance").map_err(|e| db_error("query", e))?;
            let similarity = similarity(known.spec.metric, distance);
            out.push(Scored {
                id,
                similarity,
                metadata: metadata.0,
            });
        }
        Ok(query.finish(out))
    }

    async fn delete(&self, collection: &str, tenant: &TenantId, ids: &[RecordId]) -> Result<u64> {
        let known = self.require(collection, "delete").await?;
        if ids.is_empty() {
            return Ok(0);
        }
        let done = sqlx::query(&format!(
            "DELETE FROM {} WHERE tenant = $1 AND id = ANY($2)",
            known.table
        ))
        .bind(tenant.as_str())
        .bind(ids)
        .execute(&self.pool)
        .await
        .map_err(|e| db_error("delete", e))?;
        Ok(done.rows_affected())
    }

    async fn purge(&self, collection: &str, scope: &VectorPurge) -> Result<u64> {
        let known = self.require(collection, "purge").await?;
        let done = match scope {
            VectorPurge::All => {
                sqlx::query(&format!("DELETE FROM {}", known.table))
                    .execute(&self.pool)
                    .await
            }
            VectorPurge::Tenant(t) => {
                sqlx::query(&format!("DELETE FROM {} WHERE tenant = $1", known.table))
                    .bind(t.as_str())
                    .execute(&self.pool)
                    .await
            }
        }
        .map_err(|e| db_error("purge", e))?;
        Ok(done.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;

    #[test]
    fn table_names_are_safe_identifiers() {
        let t = table_name("resk-all-MiniLM-L6-v2; DROP TABLE x");
        assert_eq!(t.len(), 7 + 16);
        assert!(t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        assert_ne!(table_name("a"), table_name("b"));
    }

    #[test]
    fn vectors_use_pgvector_text() {
        assert_eq!(vector_text(&[1.0, 0.5, -2.25]), "[1,0.5,-2.25]");
        assert_eq!(vector_text(&[0.1]), "[0.1]");
    }

    #[test]
    fn distances_convert_to_the_metric_scale() {
        let (a, b) = ([1.0f32, 0.0], [0.6f32, 0.8]);
        let cases = [
            (Metric::Cosine, 1.0 - 0.6),
            (Metric::L2, ((0.4f64).powi(2) + 0.64).sqrt()),
            (Metric::Dot, -0.6),
        ];
        for (metric, d) in cases {
            assert!(
                (similarity(metric, d) - metric.similarity(&a, &b)).abs() < 1e-6,
                "{metric:?}"
            );
        }
    }

    #[test]
    fn filters_bind_every_field_and_value() {
        let mut q = QueryBuilder::<Postgres>::new("");
        push_filter(
            &mut q,
            &Filter::Or(vec![
                Filter::Eq("lang".into(), json!("en")),
                Filter::And(vec![Filter::In("n".into(), vec![json!(1), json!(2)])]),
                Filter::Or(vec![]),
            ]),
        )
        .unwrap();
        assert_eq!(
            q.sql(),
            "((metadata -> $1 = $2::jsonb) OR ((metadata -> $3 IN ($4::jsonb, $5::jsonb))) OR FALSE)"
        );
    }
}
