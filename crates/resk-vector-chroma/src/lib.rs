#![doc = include_str!("../README.md")]

use std::{collections::HashMap, fmt, time::Duration};

use resk_core::{
    BackendInfo, Capabilities, CollectionSpec, Error, ErrorKind, Metric, OperatorFilter, RecordId,
    Result, Scored, TenantId, VectorPurge, VectorQuery, VectorRecord, VectorStore,
    collection_missing,
};
use resk_http::{JsonApi, Method, RetryPolicy, header::HeaderMap, secret_header};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::{OnceCell, RwLock};

/// The backend's name in errors and metrics.
pub const SCHEME: &str = "chroma";

/// The metadata field that holds a record's tenant.
const TENANT_FIELD: &str = "resk_tenant";

/// How to reach a Chroma server.
#[derive(Clone)]
#[non_exhaustive]
pub struct ChromaConfig {
    /// Base URL of the server, e.g. `http://127.0.0.1:8000`.
    pub url: String,
    /// Chroma tenant (`default_tenant`); it must exist.
    pub tenant: String,
    /// Chroma database (`default_database`); it must exist.
    pub database: String,
    /// Token sent as `x-chroma-token`, if the server requires one.
    pub api_key: Option<String>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Retries of transient failures.
    pub retry: RetryPolicy,
}

impl ChromaConfig {
    /// Defaults for a server at `url`: default tenant and database, no token, 10 s timeout.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            tenant: "default_tenant".into(),
            database: "default_database".into(),
            api_key: None,
            timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
        }
    }
}

impl fmt::Debug for ChromaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChromaConfig")
            .field("url", &self.url)
            .field("tenant", &self.tenant)
            .field("database", &self.database)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A collection's Chroma id and spec, learned once.
#[derive(Clone, Debug)]
struct Known {
    id: String,
    spec: CollectionSpec,
}

/// A [`VectorStore`] on a Chroma server.
#[derive(Debug)]
pub struct ChromaVectorStore {
    api: JsonApi,
    /// `/api/v2/tenants/{t}/databases/{d}/collections`.
    collections_path: String,
    known: RwLock<HashMap<String, Known>>,
    max_batch: OnceCell<usize>,
    info: BackendInfo,
}

#[derive(Deserialize)]
struct CollectionModel {
    id: String,
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
    #[serde(default)]
    configuration_json: Value,
    #[serde(default)]
    dimension: Option<usize>,
}

#[derive(Deserialize)]
struct PreFlight {
    max_batch_size: Option<usize>,
}

/// One query's metadata per hit (Chroma answers a list per query embedding).
type Metadatas = Vec<Vec<Option<Map<String, Value>>>>;

#[derive(Deserialize)]
struct QueryAnswer {
    ids: Vec<Vec<String>>,
    #[serde(default)]
    distances: Option<Vec<Vec<Option<f32>>>>,
    #[serde(default)]
    metadatas: Option<Metadatas>,
}

#[derive(Deserialize)]
struct GetAnswer {
    ids: Vec<String>,
}

#[derive(Deserialize)]
struct DeleteAnswer {
    #[serde(default)]
    deleted: Option<u64>,
}

fn space(metric: Metric) -> &'static str {
    match metric {
        Metric::Cosine => "cosine",
        Metric::L2 => "l2",
        Metric::Dot => "ip",
    }
}

/// Chroma's distance in `space` to resk's similarity (see the crate docs' table).
fn similarity(metric: Metric, distance: f32) -> f32 {
    match metric {
        Metric::Cosine | Metric::Dot => 1.0 - distance,
        Metric::L2 => 1.0 / (1.0 + distance.max(0.0).sqrt()),
    }
}

/// The tenant condition, and the user's filter with it.
fn scoped(tenant: &TenantId, filter: Option<Value>) -> Value {
    let own = json!({ TENANT_FIELD: { "$eq": tenant.as_str() } });
    match filter {
        Some(f) if f.as_object().is_some_and(|o| !o.is_empty()) => json!({ "$and": [own, f] }),
        _ => own,
    }
}

fn chroma_id(tenant: &TenantId, id: &str) -> String {
    format!("{}:{id}", tenant.as_str())
}

fn resk_id(tenant: &TenantId, chroma_id: &str) -> String {
    chroma_id
        .strip_prefix(tenant.as_str())
        .and_then(|rest| rest.strip_prefix(':'))
        .unwrap_or(chroma_id)
        .to_owned()
}

impl ChromaVectorStore {
    /// A store on the server of `config` (no request is made until the first call).
    pub fn new(config: ChromaConfig) -> Result<Self> {
        let mut headers = HeaderMap::new();
        if let Some(key) = &config.api_key {
            headers.insert("x-chroma-token", secret_header(key)?);
        }
        let api = JsonApi::new(SCHEME, &config.url, config.timeout, config.retry, headers)?;
        let collections_path = format!(
            "/api/v2/tenants/{}/databases/{}/collections",
            config.tenant, config.database
        );
        Ok(Self {
            api,
            collections_path,
            known: RwLock::new(HashMap::new()),
            max_batch: OnceCell::new(),
            info: BackendInfo {
                name: SCHEME,
                capabilities: Capabilities::new(true, true, false),
            },
        })
    }

    /// Check that the server answers (`GET /api/v2/heartbeat`).
    pub async fn ping(&self) -> Result<()> {
        self.api
            .call::<Value>("ping", Method::GET, "/api/v2/heartbeat", None::<&()>)
            .await
            .map(drop)
    }

    async fn max_batch(&self) -> Result<usize> {
        self.max_batch
            .get_or_try_init(|| async {
                let pf: PreFlight = self
                    .api
                    .call(
                        "pre_flight",
                        Method::GET,
                        "/api/v2/pre-flight-checks",
                        None::<&()>,
                    )
                    .await?;
                Ok(pf.max_batch_size.unwrap_or(1000).max(1))
            })
            .await
            .copied()
    }

    /// The collection's id and spec, from the server the first time; `None` if it does not exist.
    async fn lookup(&self, collection: &str) -> Result<Option<Known>> {
        if let Some(k) = self.known.read().await.get(collection) {
            return Ok(Some(k.clone()));
        }
        let path = format!("{}/{collection}", self.collections_path);
        let model: CollectionModel = match self
            .api
            .call("collection", Method::GET, &path, None::<&()>)
            .await
        {
            Ok(m) => m,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            // Chroma answers an invalid name with 400; no such collection can exist.
            Err(e) if e.kind() == ErrorKind::InvalidInput => return Ok(None),
            Err(e) => return Err(e),
        };
        let spec = spec_of(&model, collection)?;
        let known = Known { id: model.id, spec };
        self.known
            .write()
            .await
            .insert(collection.to_owned(), known.clone());
        Ok(Some(known))
    }

    async fn require(&self, collection: &str, op: &'static str) -> Result<Known> {
        self.lookup(collection)
            .await?
            .ok_or_else(|| collection_missing(SCHEME, op, collection))
    }

    fn records_path(&self, known: &Known, action: &str) -> String {
        format!("{}/{}/{action}", self.collections_path, known.id)
    }

    /// Run a data call; a collection deleted behind our back is forgotten so the next call looks again.
    async fn data<T: serde::de::DeserializeOwned>(
        &self,
        collection: &str,
        known: &Known,
        op: &'static str,
        action: &str,
        body: &Value,
    ) -> Result<T> {
        let path = self.records_path(known, action);
        let out = self.api.call(op, Method::POST, &path, Some(body)).await;
        if out.as_ref().is_err_and(|e| e.kind() == ErrorKind::NotFound) {
            self.known.write().await.remove(collection);
        }
        out
    }

    async fn delete_where(&self, collection: &str, known: &Known, filter: Value) -> Result<u64> {
        let answer: DeleteAnswer = self
            .data(
                collection,
                known,
                "purge",
                "delete",
                &json!({ "where": filter }),
            )
            .await?;
        Ok(answer.deleted.unwrap_or(0))
    }
}

fn spec_of(model: &CollectionModel, collection: &str) -> Result<CollectionSpec> {
    let meta = model.metadata.clone().unwrap_or_default();
    let dims = meta
        .get("resk_dims")
        .and_then(Value::as_u64)
        .map(|d| d as usize)
        .or(model.dimension);
    let metric = match meta.get("resk_metric").and_then(Value::as_str) {
        Some(m) => serde_json::from_value::<Metric>(Value::String(m.to_owned())).ok(),
        None => match model
            .configuration_json
            .pointer("/hnsw/space")
            .and_then(Value::as_str)
            .unwrap_or("l2")
        {
            "cosine" => Some(Metric::Cosine),
            "ip" => Some(Metric::Dot),
            "l2" => Some(Metric::L2),
            _ => None,
        },
    };
    match (dims, metric) {
        (Some(dims), Some(metric)) => Ok(CollectionSpec { dims, metric }),
        _ => Err(Error::new(
            ErrorKind::Config,
            SCHEME,
            "ensure_collection",
            format!(
                "collection `{collection}` was not made by resk and its dimensions or space are \
                 unknown; use another VECTOR_COLLECTION"
            ),
        )),
    }
}

fn metadata_for(record: &VectorRecord) -> Result<Map<String, Value>> {
    let mut meta = Map::new();
    for (k, v) in &record.metadata {
        if k == TENANT_FIELD {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                SCHEME,
                "upsert",
                format!("metadata field `{TENANT_FIELD}` is reserved"),
            ));
        }
        match v {
            Value::String(_) | Value::Number(_) | Value::Bool(_) => {
                meta.insert(k.clone(), v.clone());
            }
            _ => {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    SCHEME,
                    "upsert",
                    format!("Chroma metadata holds strings, numbers and booleans; `{k}` is {v}"),
                ));
            }
        }
    }
    meta.insert(TENANT_FIELD.into(), record.tenant.as_str().into());
    Ok(meta)
}

impl VectorStore for ChromaVectorStore {
    fn info(&self) -> &BackendInfo {
        &self.info
    }

    async fn ensure_collection(&self, collection: &str, spec: CollectionSpec) -> Result<()> {
        if spec.dims == 0 {
            return Err(Error::new(
                ErrorKind::Config,
                SCHEME,
                "ensure_collection",
                "dimensions must be at least 1",
            ));
        }
        if let Some(existing) = self.lookup(collection).await? {
            return existing.spec.check_same(SCHEME, collection, spec);
        }
        let body = json!({
            "name": collection,
            "configuration": { "hnsw": { "space": space(spec.metric) } },
            "metadata": { "resk_dims": spec.dims, "resk_metric": spec.metric.as_str() },
            // Two instances starting together both succeed; the spec is checked below.
            "get_or_create": true,
        });
        let model: CollectionModel = self
            .api
            .call(
                "ensure_collection",
                Method::POST,
                &self.collections_path,
                Some(&body),
            )
            .await
            .map_err(|e| {
                if e.kind() == ErrorKind::InvalidInput {
                    Error::new(
                        ErrorKind::Config,
                        SCHEME,
                        "ensure_collection",
                        e.to_string(),
                    )
                } else {
                    e
                }
            })?;
        let have = spec_of(&model, collection)?;
        have.check_same(SCHEME, collection, spec)?;
        self.known.write().await.insert(
            collection.to_owned(),
            Known {
                id: model.id,
                spec: have,
            },
        );
        Ok(())
    }

    async fn upsert(&self, collection: &str, records: Vec<VectorRecord>) -> Result<()> {
        let known = self.require(collection, "upsert").await?;
        known.spec.check_records(SCHEME, &records)?;
        let metadatas = records
            .iter()
            .map(metadata_for)
            .collect::<Result<Vec<_>>>()?;
        let batch = self.max_batch().await?;
        for (records, metadatas) in records.chunks(batch).zip(metadatas.chunks(batch)) {
            let body = json!({
                "ids": records.iter().map(|r| chroma_id(&r.tenant, &r.id)).collect::<Vec<_>>(),
                "embeddings": records.iter().map(|r| &r.vector).collect::<Vec<_>>(),
                "metadatas": metadatas,
            });
            self.data::<Value>(collection, &known, "upsert", "upsert", &body)
                .await?;
        }
        Ok(())
    }

    async fn query(&self, collection: &str, query: &VectorQuery) -> Result<Vec<Scored>> {
        let Some(known) = self.lookup(collection).await? else {
            return Ok(Vec::new());
        };
        known.spec.check_dims(SCHEME, "query", query.vector.len())?;
        let filter = match query.operator_filter(SCHEME)? {
            OperatorFilter::All => None,
            OperatorFilter::Nothing => return Ok(Vec::new()),
            OperatorFilter::Where(w) => Some(w),
        };
        if query.k == 0 {
            return Ok(Vec::new());
        }
        let body = json!({
            "query_embeddings": [query.vector],
            "n_results": query.k,
            "where": scoped(&query.tenant, filter),
            "include": ["metadatas", "distances"],
        });
        let answer: QueryAnswer = self
            .data(collection, &known, "query", "query", &body)
            .await?;
        let ids = answer.ids.into_iter().next().unwrap_or_default();
        let distances = answer
            .distances
            .and_then(|d| d.into_iter().next())
            .unwrap_or_default();
        let mut metadatas = answer
            .metadatas
            .and_then(|m| m.into_iter().next())
            .unwrap_or_default()
            .into_iter();
        let mut out = Vec::with_capacity(ids.len());
        for (id, distance) in ids.into_iter().zip(distances) {
            let mut metadata = metadatas.next().flatten().unwrap_or_default();
            metadata.remove(TENANT_FIELD);
            let Some(distance) = distance else { continue };
            let similarity = similarity(known.spec.metric, distance);
            out.push(Scored {
                id: resk_id(&query.tenant, &id),
                similarity,
                metadata,
            });
        }
        Ok(query.finish(out))
    }

    async fn delete(&self, collection: &str, tenant: &TenantId, ids: &[RecordId]) -> Result<u64> {
        let known = self.require(collection, "delete").await?;
        if ids.is_empty() {
            return Ok(0);
        }
        let wanted: Vec<String> = ids.iter().map(|id| chroma_id(tenant, id)).collect();
        let found: GetAnswer = self
            .data(
                collection,
                &known,
                "delete",
                "get",
                &json!({ "ids": wanted, "where": scoped(tenant, None), "include": [] }),
            )
            .await?;
        if found.ids.is_empty() {
            return Ok(0);
        }
        let n = found.ids.len() as u64;
        self.data::<Value>(
            collection,
            &known,
            "delete",
            "delete",
            &json!({ "ids": found.ids, "where": scoped(tenant, None) }),
        )
        .await?;
        Ok(n)
    }

    async fn purge(&self, collection: &str, scope: &VectorPurge) -> Result<u64> {
        let known = self.require(collection, "purge").await?;
        let filter = match scope {
            VectorPurge::Tenant(t) => scoped(t, None),
            // Every record resk wrote carries a tenant.
            VectorPurge::All => json!({ TENANT_FIELD: { "$ne": "" } }),
        };
        self.delete_where(collection, &known, filter).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn distances_convert_to_the_metric_scale() {
        let (a, b) = ([1.0f32, 0.0], [0.6f32, 0.8]);
        // What Chroma reports for a and b in each space.
        let cos_d = 1.0 - 0.6;
        let l2_d = (1.0f32 - 0.6).powi(2) + 0.8f32.powi(2);
        let ip_d = 1.0 - 0.6;
        for (metric, d) in [
            (Metric::Cosine, cos_d),
            (Metric::L2, l2_d),
            (Metric::Dot, ip_d),
        ] {
            let want = metric.similarity(&a, &b);
            assert!((similarity(metric, d) - want).abs() < 1e-6, "{metric:?}");
        }
    }

    #[test]
    fn ids_round_trip_per_tenant() {
        let t = TenantId::new("acme").unwrap();
        assert_eq!(chroma_id(&t, "k:1"), "acme:k:1");
        assert_eq!(resk_id(&t, "acme:k:1"), "k:1");
    }

    #[test]
    fn config_debug_hides_the_key() {
        let mut c = ChromaConfig::new("http://x");
        c.api_key = Some("secret-token".into());
        assert!(!format!("{c:?}").contains("secret-token"));
    }
}
