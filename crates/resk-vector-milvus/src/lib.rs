#![doc = include_str!("../README.md")]

use std::{collections::HashMap, fmt, time::Duration};

use milvus::v2::{
    self as sdk,
    prelude::{
        ClientV2, ConnectConfig, ConsistencyLevel, DataType, DeleteRequest,
        DescribeCollectionRequest, HasCollectionRequest, IndexParam, IndexType, InsertRequest,
        LoadCollectionRequest, MetricType, QueryRequest, SearchRequest, SearchVectors,
        UpsertRequest,
    },
};
use resk_core::{
    BackendInfo, Capabilities, CollectionSpec, Error, ErrorKind, Filter, Metric, RecordId, Result,
    Scored, TenantId, VectorPurge, VectorQuery, VectorRecord, VectorStore,
};
use serde_json::{Map, Value, json};
use tokio::sync::RwLock;

/// The backend's name in errors and metrics.
pub const SCHEME: &str = "milvus";

const PK: &str = "pk";
const TENANT: &str = "tenant";
const RID: &str = "rid";
const VECTOR: &str = "vector";
const METADATA: &str = "metadata";
/// Longest resk id (a cache key name is far shorter).
const MAX_ID: usize = 512;
/// Rows per upsert request.
const UPSERT_BATCH: usize = 1000;

/// How to reach Milvus.
#[derive(Clone)]
#[non_exhaustive]
pub struct MilvusConfig {
    /// gRPC endpoint, e.g. `http://127.0.0.1:19530` (`https://` for TLS, Zilliz Cloud).
    pub uri: String,
    /// `user:password` or a Zilliz Cloud API key, if the server requires one.
    pub token: Option<String>,
    /// Database (`default`).
    pub database: Option<String>,
    /// Per-call timeout.
    pub timeout: Duration,
}

impl MilvusConfig {
    /// Defaults for a server at `uri`: no token, the default database, 10 s timeout.
    pub fn new(uri: impl Into<String>) -> Self {
        Self {
            uri: uri.into(),
            token: None,
            database: None,
            timeout: Duration::from_secs(10),
        }
    }
}

impl fmt::Debug for MilvusConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MilvusConfig")
            .field("uri", &self.uri)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("database", &self.database)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A [`VectorStore`] on Milvus.
pub struct MilvusVectorStore {
    client: ClientV2,
    known: RwLock<HashMap<String, CollectionSpec>>,
    info: BackendInfo,
}

impl fmt::Debug for MilvusVectorStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MilvusVectorStore").finish_non_exhaustive()
    }
}

/// Map an SDK error: transport failures and timeouts are transient; a missing collection is
/// `NotFound`; refused credentials `Unauthorized`; the SDK's own validation `InvalidInput`.
fn sdk_error(op: &'static str, err: sdk::error::Error) -> Error {
    use sdk::error::Error as E;
    let kind = match &err {
        E::Grpc(_) | E::Timeout(_) | E::RetryExhausted { .. } | E::Cancelled(_) => {
            ErrorKind::Unavailable
        }
        E::Server(s) => {
            let reason = s.reason().to_ascii_lowercase();
            if reason.contains("not found") || reason.contains("not exist") {
                ErrorKind::NotFound
            } else if reason.contains("auth") || reason.contains("credential") {
                ErrorKind::Unauthorized
            } else if reason.contains("rate limit") {
                ErrorKind::RateLimited
            } else {
                ErrorKind::Backend
            }
        }
        E::Validation(_) => ErrorKind::InvalidInput,
        _ => ErrorKind::Backend,
    };
    let message = err.to_string();
    Error::new(kind, SCHEME, op, message)
}

fn metric_type(metric: Metric) -> MetricType {
    match metric {
        Metric::Cosine => MetricType::Cosine,
        Metric::L2 => MetricType::L2,
        Metric::Dot => MetricType::Ip,
    }
}

/// Milvus's score to resk's similarity: `COSINE` and `IP` scores are similarities; `L2` scores are
/// squared Euclidean distances.
fn similarity(metric: Metric, score: f32) -> f32 {
    match metric {
        Metric::Cosine | Metric::Dot => score,
        Metric::L2 => 1.0 / (1.0 + score.max(0.0).sqrt()),
    }
}

/// A string literal of Milvus's filter language: double-quoted, with `\"`, `\\`, `\n`, `\r`, `\t`
/// escapes; other control characters cannot be written and are refused.
fn literal(s: &str) -> Result<String> {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    SCHEME,
                    "filter",
                    "a control character cannot be written in a Milvus filter",
                ));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    Ok(out)
}

fn unsupported(what: String) -> Error {
    Error::new(ErrorKind::Unsupported, SCHEME, "query", what)
}

fn value_literal(field: &str, value: &Value) -> Result<String> {
    match value {
        Value::String(s) => literal(s),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(unsupported(format!(
            "Milvus filters compare strings, numbers and booleans; `{field}` is compared with {value}"
        ))),
    }
}

/// A resk filter as a Milvus boolean expression over the JSON `metadata` field.
fn expression(filter: &Filter) -> Result<String> {
    Ok(match filter {
        Filter::Eq(field, value) => format!(
            "{METADATA}[{}] == {}",
            literal(field)?,
            value_literal(field, value)?
        ),
        Filter::In(field, values) => {
            if values.is_empty() {
                return Ok("false".into());
            }
            // One comparison per value: `in [...]` wants values of one type.
            let key = literal(field)?;
            let parts = values
                .iter()
                .map(|v| Ok(format!("{METADATA}[{key}] == {}", value_literal(field, v)?)))
                .collect::<Result<Vec<_>>>()?;
            format!("({})", parts.join(" or "))
        }
        Filter::And(all) => {
            if all.is_empty() {
                return Ok("true".into());
            }
            let parts = all.iter().map(expression).collect::<Result<Vec<_>>>()?;
            format!("({})", parts.join(" and "))
        }
        Filter::Or(any) => {
            if any.is_empty() {
                return Ok("false".into());
            }
            let parts = any.iter().map(expression).collect::<Result<Vec<_>>>()?;
            format!("({})", parts.join(" or "))
        }
        other => return Err(unsupported(format!("filter {other:?}"))),
    })
}

fn tenant_expression(tenant: &TenantId) -> Result<String> {
    Ok(format!("{TENANT} == {}", literal(tenant.as_str())?))
}

fn pk(tenant: &TenantId, id: &str) -> String {
    format!("{}:{id}", tenant.as_str())
}

fn description(spec: CollectionSpec) -> String {
    format!("resk vectors; metric={}", spec.metric.as_str())
}

impl MilvusVectorStore {
    /// Connect to the server of `config`.
    pub async fn connect(config: MilvusConfig) -> Result<Self> {
        if !(config.uri.starts_with("http://") || config.uri.starts_with("https://")) {
            return Err(Error::new(
                ErrorKind::Config,
                SCHEME,
                "connect",
                "the URI must start with http:// or https://",
            ));
        }
        let mut cc = ConnectConfig::new()
            .uri(config.uri.clone())
            .connect_timeout(config.timeout)
            .rpc_timeout(config.timeout);
        if let Some(token) = &config.token {
            cc = cc.token(token.clone());
        }
        if let Some(db) = &config.database {
            cc = cc.database(db.clone());
        }
        let client = ClientV2::new(&cc)
            .await
            .map_err(|e| sdk_error("connect", e))?;
        Ok(Self {
            client,
            known: RwLock::new(HashMap::new()),
            info: BackendInfo {
                name: SCHEME,
                capabilities: Capabilities::new(true, true, false),
            },
        })
    }

    async fn exists(&self, name: &str) -> Result<bool> {
        let request = HasCollectionRequest::builder()
            .collection_name(name)
            .build()
            .map_err(|e| sdk_error("collection", e))?;
        self.client
            .has_collection(request)
            .await
            .map(|r| r.exists())
            .map_err(|e| sdk_error("collection", e))
    }

    async fn lookup(&self, collection: &str) -> Result<Option<CollectionSpec>> {
        if let Some(spec) = self.known.read().await.get(collection) {
            return Ok(Some(*spec));
        }
        let Some(name) = collection_name(collection) else {
            return Ok(None);
        };
        if !self.exists(&name).await? {
            return Ok(None);
        }
        let request = DescribeCollectionRequest::builder()
            .collection_name(&name)
            .build()
            .map_err(|e| sdk_error("collection", e))?;
        let described = self
            .client
            .describe_collection(request)
            .await
            .map_err(|e| sdk_error("collection", e))?;
        let desc = described.description();
        let dims = desc
            .get_schema()
            .get_fields()
            .iter()
            .find(|f| f.get_name() == VECTOR)
            .map(|f| f.get_dimension() as usize);
        let metric = desc
            .get_description()
            .strip_prefix("resk vectors; metric=")
            .and_then(|m| serde_json::from_value::<Metric>(Value::String(m.to_owned())).ok());
        let (Some(dims), Some(metric)) = (dims, metric) else {
            return Err(Error::new(
                ErrorKind::Config,
                SCHEME,
                "ensure_collection",
                format!(
                    "collection `{collection}` was not made by resk (no `{VECTOR}` field or metric); \
                     use another VECTOR_COLLECTION"
                ),
            ));
        };
        let spec = CollectionSpec { dims, metric };
        self.known.write().await.insert(collection.to_owned(), spec);
        Ok(Some(spec))
    }

    async fn require(&self, collection: &str, op: &'static str) -> Result<CollectionSpec> {
        self.lookup(collection)
            .await?
            .ok_or_else(|| resk_core::collection_missing(SCHEME, op, collection))
    }

    /// The primary keys matching `filter` (at most `limit`).
    async fn keys(&self, collection: &str, filter: String, limit: i64) -> Result<Vec<String>> {
        let request = QueryRequest::builder()
            .collection_name(name_of(collection)?)
            .filter(filter)
            .output_fields([PK])
            .limit(limit)
            .consistency_level(ConsistencyLevel::Strong)
            .build()
            .map_err(|e| sdk_error("query", e))?;
        let answer = self
            .client
            .query(request)
            .await
            .map_err(|e| sdk_error("query", e))?;
        let rows = answer.results().rows().map_err(|e| sdk_error("query", e))?;
        let mut keys = Vec::new();
        for row in rows {
            let row = row.to_entity_row().map_err(|e| sdk_error("query", e))?;
            if let Some(Value::String(k)) = row.get(PK) {
                keys.push(k.clone());
            }
        }
        Ok(keys)
    }

    async fn delete_where(&self, collection: &str, filter: String) -> Result<()> {
        let request = DeleteRequest::builder()
            .collection_name(name_of(collection)?)
            .filter(filter)
            .build()
            .map_err(|e| sdk_error("delete", e))?;
        self.client
            .delete(request)
            .await
            .map(drop)
            .map_err(|e| sdk_error("delete", e))
    }
}

/// The Milvus collection for a resk collection: characters other than letters, digits and `_`
/// become `_`, and a leading digit gets a `_` in front (Milvus names start with a letter or `_`);
/// `None` when empty or longer than 255.
pub fn collection_name(collection: &str) -> Option<String> {
    let mut name: String = collection
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert(0, '_');
    }
    (!name.is_empty() && name.len() <= 255).then_some(name)
}

fn name_of(collection: &str) -> Result<String> {
    collection_name(collection).ok_or_else(|| {
        Error::new(
            ErrorKind::Config,
            SCHEME,
            "ensure_collection",
            format!("collection name `{collection}` is empty or longer than 255 characters"),
        )
    })
}

fn check_record(record: &VectorRecord) -> Result<()> {
    if record.id.len() > MAX_ID {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            SCHEME,
            "upsert",
            format!("record ids are at most {MAX_ID} bytes"),
        ));
    }
    Ok(())
}

/// Every search asks for this many more candidates than `k` at most (Milvus caps `limit` at 16 384).
const MAX_LIMIT: usize = 16_384;

impl VectorStore for MilvusVectorStore {
    fn info(&self) -> &BackendInfo {
        &self.info
    }

    async fn ensure_collection(&self, collection: &str, spec: CollectionSpec) -> Result<()> {
        let name = name_of(collection)?;
        if spec.dims == 0 || spec.dims > 32_768 {
            return Err(Error::new(
                ErrorKind::Config,
                SCHEME,
                "ensure_collection",
                "dimensions must be 1-32768 (Milvus's limit)",
            ));
        }
        if let Some(existing) = self.lookup(collection).await? {
            return existing.check_same(SCHEME, collection, spec);
        }
        let op = "ensure_collection";
        let schema = sdk::CollectionSchema::new()
            .add_field(
                sdk::FieldSchema::new()
                    .name(PK)
                    .data_type(DataType::VarChar)
                    .max_length(600)
                    .primary_key(true),
            )
            .add_field(
                // Milvus's documented multi-tenancy: the tenant is the partition key.
                sdk::FieldSchema::new()
                    .name(TENANT)
                    .data_type(DataType::VarChar)
                    .max_length(64)
                    .partition_key(true),
            )
            .add_field(
                sdk::FieldSchema::new()
                    .name(RID)
                    .data_type(DataType::VarChar)
                    .max_length(MAX_ID as u32),
            )
            .add_field(
                sdk::FieldSchema::new()
                    .name(VECTOR)
                    .data_type(DataType::FloatVector)
                    .dimension(spec.dims as u32),
            )
            .add_field(
                sdk::FieldSchema::new()
                    .name(METADATA)
                    .data_type(DataType::Json),
            );
        let request = sdk::request::collection::CreateCollectionRequest::builder()
            .collection_name(&name)
            .description(description(spec))
            .schema(schema)
            .build()
            .map_err(|e| sdk_error(op, e))?;
        if let Err(e) = self.client.create_collection(request).await {
            // Another instance may have created it meanwhile: check its spec, else report.
            let e = sdk_error(op, e);
            return match self.lookup(collection).await {
                Ok(Some(existing)) => existing.check_same(SCHEME, collection, spec),
                _ => Err(e),
            };
        }
        let request = sdk::request::index::CreateIndexRequest::builder()
            .collection_name(&name)
            .index_param(
                IndexParam::new()
                    .field_name(VECTOR)
                    .index_type(IndexType::Hnsw)
                    .metric_type(metric_type(spec.metric)),
            )
            // The load below waits for the index; the SDK's own wait needs `AllocTimestamp`, which
            // milvus-lite does not serve.
            .sync(false)
            .build()
            .map_err(|e| sdk_error(op, e))?;
        self.client
            .create_index(request)
            .await
            .map_err(|e| sdk_error(op, e))?;
        let request = LoadCollectionRequest::builder()
            .collection_name(&name)
            .build()
            .map_err(|e| sdk_error(op, e))?;
        self.client
            .load_collection(request)
            .await
            .map_err(|e| sdk_error(op, e))?;
        self.known.write().await.insert(collection.to_owned(), spec);
        Ok(())
    }

    async fn upsert(&self, collection: &str, records: Vec<VectorRecord>) -> Result<()> {
        let spec = self.require(collection, "upsert").await?;
        spec.check_records(SCHEME, &records)?;
        records.iter().try_for_each(check_record)?;
        for chunk in records.chunks(UPSERT_BATCH) {
            let rows: Vec<Value> = chunk
                .iter()
                .map(|r| {
                    json!({
                        PK: pk(&r.tenant, &r.id),
                        TENANT: r.tenant.as_str(),
                        RID: r.id,
                        VECTOR: r.vector,
                        METADATA: r.metadata,
                    })
                })
                .collect();
            let insert = InsertRequest::builder()
                .collection_name(name_of(collection)?)
                .rows(rows)
                .build()
                .map_err(|e| sdk_error("upsert", e))?;
            let request = UpsertRequest::builder()
                .insert(insert)
                .build()
                .map_err(|e| sdk_error("upsert", e))?;
            self.client
                .upsert(request)
                .await
                .map_err(|e| sdk_error("upsert", e))?;
        }
        Ok(())
    }

    async fn query(&self, collection: &str, query: &VectorQuery) -> Result<Vec<Scored>> {
        let Some(spec) = self.lookup(collection).await? else {
            return Ok(Vec::new());
        };
        spec.check_dims(SCHEME, "query", query.vector.len())?;
        if query.k == 0 {
            return Ok(Vec::new());
        }
        let mut filter = tenant_expression(&query.tenant)?;
        if let Some(f) = &query.filter {
            filter = format!("{filter} and {}", expression(f)?);
        }
        let request = SearchRequest::builder()
            .collection_name(name_of(collection)?)
            .vector_field(VECTOR)
            .vectors(SearchVectors::Float(vec![query.vector.clone()]))
            .filter(filter)
            .output_fields([RID, METADATA])
            .limit(query.k.min(MAX_LIMIT) as i64)
            .consistency_level(ConsistencyLevel::Strong)
            .build()
            .map_err(|e| sdk_error("query", e))?;
        let answer = self
            .client
            .search(request)
            .await
            .map_err(|e| sdk_error("query", e))?;
        let mut out = Vec::new();
        for result in answer.results() {
            for row in result.rows().map_err(|e| sdk_error("query", e))? {
                let row = row.to_entity_row().map_err(|e| sdk_error("query", e))?;
                let Some(Value::String(id)) = row.get(RID) else {
                    continue;
                };
                let score = row.get("score").and_then(Value::as_f64).unwrap_or(f64::NAN) as f32;
                let similarity = similarity(spec.metric, score);
                let metadata = match row.get(METADATA) {
                    Some(Value::Object(m)) => m.clone(),
                    Some(Value::String(s)) => {
                        serde_json::from_str::<Map<String, Value>>(s).unwrap_or_default()
                    }
                    _ => Map::new(),
                };
                out.push(Scored {
                    id: id.clone(),
                    similarity,
                    metadata,
                });
            }
        }
        Ok(query.finish(out))
    }

    async fn delete(&self, collection: &str, tenant: &TenantId, ids: &[RecordId]) -> Result<u64> {
        self.require(collection, "delete").await?;
        if ids.is_empty() {
            return Ok(0);
        }
        let keys = ids
            .iter()
            .map(|id| literal(&pk(tenant, id)))
            .collect::<Result<Vec<_>>>()?;
        let filter = format!(
            "{} and {PK} in [{}]",
            tenant_expression(tenant)?,
            keys.join(", ")
        );
        let found = self
            .keys(collection, filter.clone(), ids.len() as i64)
            .await?;
        if found.is_empty() {
            return Ok(0);
        }
        self.delete_where(collection, filter).await?;
        Ok(found.len() as u64)
    }

    async fn purge(&self, collection: &str, scope: &VectorPurge) -> Result<u64> {
        self.require(collection, "purge").await?;
        let filter = match scope {
            VectorPurge::Tenant(t) => tenant_expression(t)?,
            VectorPurge::All => format!("{TENANT} != \"\""),
        };
        let mut removed = 0u64;
        // Query limits cap a page; purge page by page until nothing matches.
        loop {
            let found = self
                .keys(collection, filter.clone(), MAX_LIMIT as i64)
                .await?;
            if found.is_empty() {
                return Ok(removed);
            }
            let keys = found
                .iter()
                .map(|k| literal(k))
                .collect::<Result<Vec<_>>>()?;
            self.delete_where(collection, format!("{PK} in [{}]", keys.join(", ")))
                .await?;
            removed += found.len() as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn literals_escape_quotes_and_refuse_controls() {
        assert_eq!(literal(r#"a"b\c"#).unwrap(), r#""a\"b\\c""#);
        assert_eq!(literal("x\ny").unwrap(), r#""x\ny""#);
        assert_eq!(literal("\u{7}").unwrap_err().kind(), ErrorKind::Unsupported);
    }

    #[test]
    fn filters_become_expressions() {
        let f = Filter::And(vec![
            Filter::Eq("lang".into(), json!("en")),
            Filter::In("n".into(), vec![json!(1), json!(2)]),
        ]);
        assert_eq!(
            expression(&f).unwrap(),
            r#"(metadata["lang"] == "en" and (metadata["n"] == 1 or metadata["n"] == 2))"#
        );
        assert_eq!(expression(&Filter::Or(vec![])).unwrap(), "false");
        assert_eq!(
            expression(&Filter::Eq("a".into(), json!(null)))
                .unwrap_err()
                .kind(),
            ErrorKind::Unsupported
        );
    }

    #[test]
    fn scores_convert_to_the_metric_scale() {
        let (a, b) = ([1.0f32, 0.0], [0.6f32, 0.8]);
        let squared = 0.4f32.powi(2) + 0.64;
        for (metric, score) in [
            (Metric::Cosine, 0.6),
            (Metric::Dot, 0.6),
            (Metric::L2, squared),
        ] {
            assert!((similarity(metric, score) - metric.similarity(&a, &b)).abs() < 1e-6);
        }
    }

    #[test]
    fn names_follow_milvus_rules() {
        assert_eq!(collection_name("resk_t_ab12").unwrap(), "resk_t_ab12");
        assert_eq!(
            collection_name("resk-all-MiniLM-L6-v2").unwrap(),
            "resk_all_MiniLM_L6_v2"
        );
        assert_eq!(collection_name("1abc").unwrap(), "_1abc");
        assert!(collection_name("").is_none());
    }
}
