#![doc = include_str!("../README.md")]

use std::{collections::HashMap, fmt, time::Duration};

use resk_core::{
    BackendInfo, Capabilities, CollectionSpec, Error, ErrorKind, Filter, Metric, RecordId, Result,
    Scored, TenantId, VectorPurge, VectorQuery, VectorRecord, VectorStore,
};
use resk_http::{JsonApi, Method, RetryPolicy, header::HeaderMap, secret_header};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::RwLock;

/// The backend's name in errors and metrics.
pub const SCHEME: &str = "qdrant";

/// Payload field holding a record's tenant (indexed with `is_tenant`).
const TENANT_FIELD: &str = "resk_tenant";
/// Payload field holding the record's resk id (Qdrant ids are UUIDs or integers).
const ID_FIELD: &str = "resk_id";

/// Points per upsert request (Qdrant's default request limit is 32 MiB; 256 × 4 096 floats fits).
const UPSERT_BATCH: usize = 256;

/// How to reach a Qdrant server.
#[derive(Clone)]
#[non_exhaustive]
pub struct QdrantConfig {
    /// REST base URL, e.g. `http://127.0.0.1:6333` or a Qdrant Cloud cluster URL.
    pub url: String,
    /// API key, sent as `api-key`.
    pub api_key: Option<String>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Retries of transient failures.
    pub retry: RetryPolicy,
}

impl QdrantConfig {
    /// Defaults for a server at `url`: no key, 10 s timeout.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            api_key: None,
            timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
        }
    }
}

impl fmt::Debug for QdrantConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QdrantConfig")
            .field("url", &self.url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A [`VectorStore`] on Qdrant's REST API.
#[derive(Debug)]
pub struct QdrantVectorStore {
    api: JsonApi,
    known: RwLock<HashMap<String, CollectionSpec>>,
    info: BackendInfo,
}

/// Qdrant's answer envelope: `{"result": …, "status": "ok", "time": …}`.
#[derive(Deserialize)]
struct Answer<T> {
    result: T,
}

#[derive(Deserialize)]
struct CollectionInfo {
    config: CollectionConfig,
}

#[derive(Deserialize)]
struct CollectionConfig {
    params: CollectionParams,
}

#[derive(Deserialize)]
struct CollectionParams {
    vectors: Value,
}

#[derive(Deserialize)]
struct QueryResult {
    points: Vec<ScoredPoint>,
}

#[derive(Deserialize)]
struct ScoredPoint {
    score: f32,
    #[serde(default)]
    payload: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
struct CountResult {
    count: u64,
}

#[derive(Deserialize)]
struct Retrieved {
    id: Value,
}

fn distance(metric: Metric) -> &'static str {
    match metric {
        Metric::Cosine => "Cosine",
        Metric::L2 => "Euclid",
        Metric::Dot => "Dot",
    }
}

/// Qdrant's score to resk's similarity: cosine and dot scores are similarities already; `Euclid`
/// scores are distances.
fn similarity(metric: Metric, score: f32) -> f32 {
    match metric {
        Metric::Cosine | Metric::Dot => score,
        Metric::L2 => 1.0 / (1.0 + score.max(0.0)),
    }
}

fn unsupported(what: String) -> Error {
    Error::new(ErrorKind::Unsupported, SCHEME, "query", what)
}

/// A value Qdrant's `match` compares: keywords, integers, booleans.
fn matchable(field: &str, value: &Value) -> Result<Value> {
    match value {
        Value::String(_) | Value::Bool(_) => Ok(value.clone()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Ok(value.clone()),
        _ => Err(unsupported(format!(
            "Qdrant matches strings, integers and booleans; `{field}` is compared with {value}"
        ))),
    }
}

/// A resk filter as one Qdrant condition (a field condition or a nested filter).
fn condition(filter: &Filter) -> Result<Value> {
    Ok(match filter {
        Filter::Eq(field, value) => {
            json!({"key": field, "match": {"value": matchable(field, value)?}})
        }
        Filter::In(field, values) => {
            let any = values
                .iter()
                .map(|v| matchable(field, v))
                .collect::<Result<Vec<_>>>()?;
            json!({"key": field, "match": {"any": any}})
        }
        Filter::And(all) => json!({
            "must": all.iter().map(condition).collect::<Result<Vec<_>>>()?
        }),
        Filter::Or(any) => {
            if any.is_empty() {
                // Qdrant treats an empty `should` as no condition; resk's `Or([])` matches nothing.
                json!({"must": [{"key": ID_FIELD, "match": {"any": []}}]})
            } else {
                json!({"should": any.iter().map(condition).collect::<Result<Vec<_>>>()?})
            }
        }
        other => return Err(unsupported(format!("filter {other:?}"))),
    })
}

fn tenant_condition(tenant: &TenantId) -> Value {
    json!({"key": TENANT_FIELD, "match": {"value": tenant.as_str()}})
}

fn spec_of(vectors: &Value, collection: &str) -> Result<CollectionSpec> {
    let dims = vectors.get("size").and_then(Value::as_u64);
    let metric = match vectors.get("distance").and_then(Value::as_str) {
        Some("Cosine") => Some(Metric::Cosine),
        Some("Euclid") => Some(Metric::L2),
        Some("Dot") => Some(Metric::Dot),
        _ => None,
    };
    match (dims, metric) {
        (Some(dims), Some(metric)) => Ok(CollectionSpec {
            dims: dims as usize,
            metric,
        }),
        _ => Err(Error::new(
            ErrorKind::Config,
            SCHEME,
            "ensure_collection",
            format!(
                "collection `{collection}` has named vectors or an unknown distance; resk needs one \
                 unnamed vector (use another VECTOR_COLLECTION)"
            ),
        )),
    }
}

fn payload_for(record: &VectorRecord) -> Result<Map<String, Value>> {
    let mut payload = record.metadata.clone();
    for reserved in [TENANT_FIELD, ID_FIELD] {
        if payload.contains_key(reserved) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                SCHEME,
                "upsert",
                format!("metadata field `{reserved}` is reserved"),
            ));
        }
    }
    payload.insert(TENANT_FIELD.into(), record.tenant.as_str().into());
    payload.insert(ID_FIELD.into(), record.id.clone().into());
    Ok(payload)
}

impl QdrantVectorStore {
    /// A store on the server of `config` (no request is made until the first call).
    pub fn new(config: QdrantConfig) -> Result<Self> {
        let mut headers = HeaderMap::new();
        if let Some(key) = &config.api_key {
            headers.insert("api-key", secret_header(key)?);
        }
        Ok(Self {
            api: JsonApi::new(SCHEME, &config.url, config.timeout, config.retry, headers)?,
            known: RwLock::new(HashMap::new()),
            info: BackendInfo {
                name: SCHEME,
                capabilities: Capabilities::new(true, true, false),
            },
        })
    }

    fn path(collection: &str, rest: &str) -> String {
        // Collection names are path segments: refuse what would change the path.
        format!("/collections/{collection}{rest}")
    }

    async fn lookup(&self, collection: &str) -> Result<Option<CollectionSpec>> {
        if let Some(spec) = self.known.read().await.get(collection) {
            return Ok(Some(*spec));
        }
        let info: Answer<CollectionInfo> = match self
            .api
            .call(
                "collection",
                Method::GET,
                &Self::path(collection, ""),
                None::<&()>,
            )
            .await
        {
            Ok(a) => a,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let spec = spec_of(&info.result.config.params.vectors, collection)?;
        self.known.write().await.insert(collection.to_owned(), spec);
        Ok(Some(spec))
    }

    async fn require(&self, collection: &str, op: &'static str) -> Result<CollectionSpec> {
        self.lookup(collection)
            .await?
            .ok_or_else(|| resk_core::collection_missing(SCHEME, op, collection))
    }

    async fn count(&self, collection: &str, filter: Value) -> Result<u64> {
        let a: Answer<CountResult> = self
            .api
            .call(
                "count",
                Method::POST,
                &Self::path(collection, "/points/count"),
                Some(&json!({"filter": filter, "exact": true})),
            )
            .await?;
        Ok(a.result.count)
    }

    async fn delete_points(&self, collection: &str, selector: Value) -> Result<()> {
        self.api
            .call::<Value>(
                "delete",
                Method::POST,
                &Self::path(collection, "/points/delete?wait=true"),
                Some(&selector),
            )
            .await
            .map(drop)
    }
}

fn valid_name(collection: &str) -> Result<()> {
    let ok = !collection.is_empty()
        && collection.len() <= 255
        && collection
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && collection != "."
        && collection != "..";
    if ok {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::Config,
            SCHEME,
            "ensure_collection",
            format!("collection name `{collection}`: use 1-255 of [A-Za-z0-9._-]"),
        ))
    }
}

impl VectorStore for QdrantVectorStore {
    fn info(&self) -> &BackendInfo {
        &self.info
    }

    async fn ensure_collection(&self, collection: &str, spec: CollectionSpec) -> Result<()> {
        valid_name(collection)?;
        if spec.dims == 0 {
            return Err(Error::new(
                ErrorKind::Config,
                SCHEME,
                "ensure_collection",
                "dimensions must be at least 1",
            ));
        }
        if let Some(existing) = self.lookup(collection).await? {
            return existing.check_same(SCHEME, collection, spec);
        }
        let created = self
            .api
            .call::<Value>(
                "ensure_collection",
                Method::PUT,
                &Self::path(collection, ""),
                Some(&json!({"vectors": {"size": spec.dims, "distance": distance(spec.metric)}})),
            )
            .await;
        match created {
            Ok(_) => {}
            // Another instance created it first (409): check its spec below.
            Err(e) if e.kind() == ErrorKind::InvalidInput => {}
            Err(e) => return Err(e),
        }
        // Multitenancy the way Qdrant documents it: a keyword index on the tenant field, `is_tenant`.
        self.api
            .call::<Value>(
                "ensure_collection",
                Method::PUT,
                &Self::path(collection, "/index?wait=true"),
                Some(&json!({
                    "field_name": TENANT_FIELD,
                    "field_schema": {"type": "keyword", "is_tenant": true}
                })),
            )
            .await?;
        self.known.write().await.remove(collection);
        self.require(collection, "ensure_collection")
            .await?
            .check_same(SCHEME, collection, spec)
    }

    async fn upsert(&self, collection: &str, records: Vec<VectorRecord>) -> Result<()> {
        valid_name(collection)
            .map_err(|_| Error::new(ErrorKind::NotFound, SCHEME, "upsert", "no such collection"))?;
        let spec = self.require(collection, "upsert").await?;
        spec.check_records(SCHEME, &records)?;
        let points = records
            .iter()
            .map(|r| {
                Ok(json!({
                    "id": resk_core::record_uuid(&r.tenant, &r.id),
                    "vector": r.vector,
                    "payload": payload_for(r)?,
                }))
            })
            .collect::<Result<Vec<_>>>()?;
        for chunk in points.chunks(UPSERT_BATCH) {
            self.api
                .call::<Value>(
                    "upsert",
                    Method::PUT,
                    &Self::path(collection, "/points?wait=true"),
                    Some(&json!({"points": chunk})),
                )
                .await?;
        }
        Ok(())
    }

    async fn query(&self, collection: &str, query: &VectorQuery) -> Result<Vec<Scored>> {
        if valid_name(collection).is_err() {
            return Ok(Vec::new());
        }
        let Some(spec) = self.lookup(collection).await? else {
            return Ok(Vec::new());
        };
        spec.check_dims(SCHEME, "query", query.vector.len())?;
        if query.k == 0 {
            return Ok(Vec::new());
        }
        let mut must = vec![tenant_condition(&query.tenant)];
        if let Some(f) = &query.filter {
            must.push(condition(f)?);
        }
        let answer: Answer<QueryResult> = self
            .api
            .call(
                "query",
                Method::POST,
                &Self::path(collection, "/points/query"),
                Some(&json!({
                    "query": query.vector,
                    "limit": query.k,
                    "filter": {"must": must},
                    "with_payload": true,
                })),
            )
            .await?;
        let mut out = Vec::with_capacity(answer.result.points.len());
        for point in answer.result.points {
            let mut metadata = point.payload.unwrap_or_default();
            metadata.remove(TENANT_FIELD);
            let Some(Value::String(id)) = metadata.remove(ID_FIELD) else {
                continue; // not written by resk
            };
            let similarity = similarity(spec.metric, point.score);
            out.push(Scored {
                id,
                similarity,
                metadata,
            });
        }
        Ok(query.finish(out))
    }

    async fn delete(&self, collection: &str, tenant: &TenantId, ids: &[RecordId]) -> Result<u64> {
        valid_name(collection)
            .map_err(|_| Error::new(ErrorKind::NotFound, SCHEME, "delete", "no such collection"))?;
        self.require(collection, "delete").await?;
        if ids.is_empty() {
            return Ok(0);
        }
        let wanted: Vec<String> = ids
            .iter()
            .map(|id| resk_core::record_uuid(tenant, id))
            .collect();
        let found: Answer<Vec<Retrieved>> = self
            .api
            .call(
                "delete",
                Method::POST,
                &Self::path(collection, "/points"),
                Some(&json!({"ids": wanted, "with_payload": false, "with_vector": false})),
            )
            .await?;
        if found.result.is_empty() {
            return Ok(0);
        }
        let n = found.result.len() as u64;
        let points: Vec<Value> = found.result.into_iter().map(|p| p.id).collect();
        self.delete_points(collection, json!({"points": points}))
            .await?;
        Ok(n)
    }

    async fn purge(&self, collection: &str, scope: &VectorPurge) -> Result<u64> {
        valid_name(collection)
            .map_err(|_| Error::new(ErrorKind::NotFound, SCHEME, "purge", "no such collection"))?;
        self.require(collection, "purge").await?;
        let filter = match scope {
            VectorPurge::Tenant(t) => json!({"must": [tenant_condition(t)]}),
            VectorPurge::All => json!({"must_not": [{"is_empty": {"key": TENANT_FIELD}}]}),
        };
        let n = self.count(collection, filter.clone()).await?;
        if n > 0 {
            self.delete_points(collection, json!({"filter": filter}))
                .await?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn filters_translate() {
        let f = Filter::And(vec![
            Filter::Eq("lang".into(), json!("en")),
            Filter::Or(vec![
                Filter::In("n".into(), vec![json!(1), json!(2)]),
                Filter::Eq("ok".into(), json!(true)),
            ]),
        ]);
        assert_eq!(
            condition(&f).unwrap(),
            json!({"must": [
                {"key": "lang", "match": {"value": "en"}},
                {"should": [
                    {"key": "n", "match": {"any": [1, 2]}},
                    {"key": "ok", "match": {"value": true}}
                ]}
            ]})
        );
        for bad in [json!(1.5), json!(null), json!({"a": 1})] {
            let err = condition(&Filter::Eq("x".into(), bad)).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Unsupported);
        }
    }

    #[test]
    fn scores_convert_to_the_metric_scale() {
        let (a, b) = ([1.0f32, 0.0], [0.6f32, 0.8]);
        let euclid = ((0.4f32).powi(2) + 0.64).sqrt();
        for (metric, score) in [
            (Metric::Cosine, 0.6),
            (Metric::Dot, 0.6),
            (Metric::L2, euclid),
        ] {
            assert!((similarity(metric, score) - metric.similarity(&a, &b)).abs() < 1e-6);
        }
    }
}
