#![doc = include_str!("../README.md")]

use std::{collections::HashMap, fmt, sync::Arc, time::Duration};

use resk_core::{
    BackendInfo, Capabilities, CollectionSpec, Error, ErrorKind, Metric, OperatorFilter, RecordId,
    Result, Scored, TenantId, VectorPurge, VectorQuery, VectorRecord, VectorStore,
};
use resk_http::{
    JsonApi, Method, RetryPolicy,
    header::{HeaderMap, HeaderValue},
    secret_header,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::RwLock;

/// The backend's name in errors and metrics.
pub const SCHEME: &str = "pinecone";

/// The API version every request names (`X-Pinecone-Api-Version`).
pub const API_VERSION: &str = "2025-04";

/// Most ids per fetch request (they travel in the query string).
const FETCH_BATCH: usize = 100;

/// How to reach Pinecone.
#[derive(Clone)]
#[non_exhaustive]
pub struct PineconeConfig {
    /// API key, sent as `Api-Key`.
    pub api_key: String,
    /// Control plane (`https://api.pinecone.io`).
    pub controller_url: String,
    /// Cloud of indexes resk creates (`aws`, `gcp`, `azure`).
    pub cloud: String,
    /// Region of indexes resk creates (`us-east-1`).
    pub region: String,
    /// Reach index hosts over plain HTTP (Pinecone Local, the emulator); HTTPS otherwise.
    pub plain_http: bool,
    /// Per-request timeout.
    pub timeout: Duration,
    /// How long `ensure_collection` waits for a new index to become ready.
    pub ready_timeout: Duration,
    /// Retries of transient failures.
    pub retry: RetryPolicy,
}

impl PineconeConfig {
    /// Defaults: the public control plane, serverless `aws` / `us-east-1`, HTTPS, 10 s timeout.
    pub fn new(api_key: impl Into<String>) -> Self {
        Self {
            api_key: api_key.into(),
            controller_url: "https://api.pinecone.io".into(),
            cloud: "aws".into(),
            region: "us-east-1".into(),
            plain_http: false,
            timeout: Duration::from_secs(10),
            ready_timeout: Duration::from_secs(120),
            retry: RetryPolicy::default(),
        }
    }
}

impl fmt::Debug for PineconeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PineconeConfig")
            .field("api_key", &"<redacted>")
            .field("controller_url", &self.controller_url)
            .field("cloud", &self.cloud)
            .field("region", &self.region)
            .field("plain_http", &self.plain_http)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// An index's data plane and spec, learned once.
#[derive(Clone, Debug)]
struct Index {
    data: Arc<JsonApi>,
    spec: CollectionSpec,
}

/// A [`VectorStore`] on Pinecone.
#[derive(Debug)]
pub struct PineconeVectorStore {
    control: JsonApi,
    config: PineconeConfig,
    headers: HeaderMap,
    known: RwLock<HashMap<String, Index>>,
    info: BackendInfo,
}

#[derive(Deserialize)]
struct IndexModel {
    dimension: Option<usize>,
    metric: String,
    host: String,
    #[serde(default)]
    status: Option<IndexStatus>,
}

#[derive(Deserialize)]
struct IndexStatus {
    ready: bool,
}

#[derive(Deserialize)]
struct QueryAnswer {
    #[serde(default)]
    matches: Vec<Match>,
}

#[derive(Deserialize)]
struct Match {
    id: String,
    score: f32,
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
struct FetchAnswer {
    #[serde(default)]
    vectors: HashMap<String, Value>,
}

#[derive(Deserialize)]
struct Stats {
    #[serde(default)]
    namespaces: HashMap<String, NamespaceStats>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NamespaceStats {
    vector_count: u64,
}

fn metric_name(metric: Metric) -> &'static str {
    match metric {
        Metric::Cosine => "cosine",
        Metric::L2 => "euclidean",
        Metric::Dot => "dotproduct",
    }
}

/// Pinecone's score to resk's similarity: cosine and dot product scores are similarities; a
/// `euclidean` score is the squared distance.
fn similarity(metric: Metric, score: f32) -> f32 {
    match metric {
        Metric::Cosine | Metric::Dot => score,
        Metric::L2 => 1.0 / (1.0 + score.max(0.0).sqrt()),
    }
}

/// The index name for a collection: lowercase letters, digits and `-` (`_` and other characters
/// become `-`), at most 45 characters, starting and ending with a letter or digit.
pub fn index_name(collection: &str) -> Result<String> {
    let mapped: String = collection
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = mapped.trim_matches('-');
    if trimmed.is_empty() || trimmed.len() > 45 {
        return Err(Error::new(
            ErrorKind::Config,
            SCHEME,
            "ensure_collection",
            format!(
                "collection `{collection}` does not make a Pinecone index name (1-45 of [a-z0-9-])"
            ),
        ));
    }
    Ok(trimmed.to_owned())
}

fn check_metadata(record: &VectorRecord) -> Result<()> {
    for (k, v) in &record.metadata {
        let ok = match v {
            Value::String(_) | Value::Number(_) | Value::Bool(_) => true,
            Value::Array(items) => items.iter().all(Value::is_string),
            _ => false,
        };
        if !ok {
            return Err(Error::new(
                ErrorKind::Unsupported,
                SCHEME,
                "upsert",
                format!(
                    "Pinecone metadata holds strings, numbers, booleans and lists of strings; `{k}` is {v}"
                ),
            ));
        }
    }
    Ok(())
}

/// Vectors per upsert request: Pinecone takes up to 1 000 vectors and 2 MB per request.
fn upsert_batch(dims: usize) -> usize {
    (1_500_000 / (dims * 12 + 300)).clamp(1, 1000)
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl PineconeVectorStore {
    /// A store for the account of `config.api_key` (no request is made until the first call).
    pub fn new(config: PineconeConfig) -> Result<Self> {
        if config.api_key.is_empty() {
            return Err(Error::new(
                ErrorKind::Config,
                SCHEME,
                "config",
                "PINECONE_API_KEY is empty",
            ));
        }
        let mut headers = HeaderMap::new();
        headers.insert("Api-Key", secret_header(&config.api_key)?);
        headers.insert(
            "X-Pinecone-Api-Version",
            HeaderValue::from_static(API_VERSION),
        );
        let control = JsonApi::new(
            SCHEME,
            &config.controller_url,
            config.timeout,
            config.retry,
            headers.clone(),
        )?;
        Ok(Self {
            control,
            config,
            headers,
            known: RwLock::new(HashMap::new()),
            info: BackendInfo {
                name: SCHEME,
                capabilities: Capabilities::new(true, true, false),
            },
        })
    }

    async fn describe(&self, name: &str) -> Result<Option<IndexModel>> {
        match self
            .control
            .call(
                "describe_index",
                Method::GET,
                &format!("/indexes/{name}"),
                None::<&()>,
            )
            .await
        {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn index_of(&self, model: &IndexModel, collection: &str) -> Result<Index> {
        let metric = match model.metric.as_str() {
            "cosine" => Metric::Cosine,
            "euclidean" => Metric::L2,
            "dotproduct" => Metric::Dot,
            other => {
                return Err(Error::new(
                    ErrorKind::Config,
                    SCHEME,
                    "ensure_collection",
                    format!("index for `{collection}` has unknown metric {other}"),
                ));
            }
        };
        let dims = model.dimension.ok_or_else(|| {
            Error::new(
                ErrorKind::Config,
                SCHEME,
                "ensure_collection",
                format!("index for `{collection}` is not a dense index"),
            )
        })?;
        let base = if model.host.contains("://") {
            model.host.clone()
        } else if self.config.plain_http {
            format!("http://{}", model.host)
        } else {
            format!("https://{}", model.host)
        };
        let data = JsonApi::new(
            SCHEME,
            &base,
            self.config.timeout,
            self.config.retry,
            self.headers.clone(),
        )?;
        Ok(Index {
            data: Arc::new(data),
            spec: CollectionSpec { dims, metric },
        })
    }

    async fn lookup(&self, collection: &str) -> Result<Option<Index>> {
        if let Some(i) = self.known.read().await.get(collection) {
            return Ok(Some(i.clone()));
        }
        let Ok(name) = index_name(collection) else {
            return Ok(None);
        };
        let Some(model) = self.describe(&name).await? else {
            return Ok(None);
        };
        if !model.status.as_ref().is_none_or(|s| s.ready) {
            return Ok(None);
        }
        let index = self.index_of(&model, collection)?;
        self.known
            .write()
            .await
            .insert(collection.to_owned(), index.clone());
        Ok(Some(index))
    }

    async fn require(&self, collection: &str, op: &'static str) -> Result<Index> {
        self.lookup(collection).await?.ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                SCHEME,
                op,
                format!(
                    "no ready index for collection `{collection}` (ensure_collection creates it)"
                ),
            )
        })
    }

    async fn stats(&self, index: &Index) -> Result<Stats> {
        index
            .data
            .call(
                "describe_index_stats",
                Method::POST,
                "/describe_index_stats",
                Some(&json!({})),
            )
            .await
    }

    async fn delete_namespace(&self, index: &Index, namespace: &str) -> Result<()> {
        index
            .data
            .call::<Value>(
                "purge",
                Method::POST,
                "/vectors/delete",
                Some(&json!({"deleteAll": true, "namespace": namespace})),
            )
            .await
            .map(drop)
    }
}

impl VectorStore for PineconeVectorStore {
    fn info(&self) -> &BackendInfo {
        &self.info
    }

    async fn ensure_collection(&self, collection: &str, spec: CollectionSpec) -> Result<()> {
        let name = index_name(collection)?;
        if spec.dims == 0 || spec.dims > 20_000 {
            return Err(Error::new(
                ErrorKind::Config,
                SCHEME,
                "ensure_collection",
                "dimensions must be 1-20000 (Pinecone's limit)",
            ));
        }
        let model = match self.describe(&name).await? {
            Some(m) => m,
            None => {
                let created = self
                    .control
                    .call::<IndexModel>(
                        "create_index",
                        Method::POST,
                        "/indexes",
                        Some(&json!({
                            "name": name,
                            "dimension": spec.dims,
                            "metric": metric_name(spec.metric),
                            "spec": {"serverless": {"cloud": self.config.cloud, "region": self.config.region}},
                            "deletion_protection": "disabled",
                        })),
                    )
                    .await;
                match created {
                    Ok(m) => m,
                    // 409: another instance created it first.
                    Err(e) if e.kind() == ErrorKind::InvalidInput => {
                        self.describe(&name).await?.ok_or(e)?
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        // A new serverless index takes a few seconds to be ready.
        let deadline = tokio::time::Instant::now() + self.config.ready_timeout;
        let mut model = model;
        while !model.status.as_ref().is_none_or(|s| s.ready) {
            if tokio::time::Instant::now() > deadline {
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    SCHEME,
                    "ensure_collection",
                    format!("index `{name}` was not ready in time"),
                ));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            model = self.describe(&name).await?.ok_or_else(|| {
                Error::new(
                    ErrorKind::NotFound,
                    SCHEME,
                    "ensure_collection",
                    format!("index `{name}` disappeared while starting"),
                )
            })?;
        }
        let index = self.index_of(&model, collection)?;
        index.spec.check_same(SCHEME, collection, spec)?;
        self.known
            .write()
            .await
            .insert(collection.to_owned(), index);
        Ok(())
    }

    async fn upsert(&self, collection: &str, records: Vec<VectorRecord>) -> Result<()> {
        let index = self.require(collection, "upsert").await?;
        index.spec.check_records(SCHEME, &records)?;
        records.iter().try_for_each(check_metadata)?;
        let mut by_tenant: HashMap<&str, Vec<&VectorRecord>> = HashMap::new();
        for r in &records {
            by_tenant.entry(r.tenant.as_str()).or_default().push(r);
        }
        let batch = upsert_batch(index.spec.dims);
        for (namespace, records) in by_tenant {
            for chunk in records.chunks(batch) {
                let vectors: Vec<Value> = chunk
                    .iter()
                    .map(|r| json!({"id": r.id, "values": r.vector, "metadata": r.metadata}))
                    .collect();
                index
                    .data
                    .call::<Value>(
                        "upsert",
                        Method::POST,
                        "/vectors/upsert",
                        Some(&json!({"vectors": vectors, "namespace": namespace})),
                    )
                    .await?;
            }
        }
        Ok(())
    }

    async fn query(&self, collection: &str, query: &VectorQuery) -> Result<Vec<Scored>> {
        let Some(index) = self.lookup(collection).await? else {
            return Ok(Vec::new());
        };
        index.spec.check_dims(SCHEME, "query", query.vector.len())?;
        let filter = match query.operator_filter(SCHEME)? {
            OperatorFilter::All => None,
            OperatorFilter::Nothing => return Ok(Vec::new()),
            OperatorFilter::Where(w) => Some(w),
        };
        if query.k == 0 {
            return Ok(Vec::new());
        }
        let mut body = json!({
            "namespace": query.tenant.as_str(),
            "vector": query.vector,
            "topK": query.k,
            "includeMetadata": true,
            "includeValues": false,
        });
        if let Some(f) = filter {
            body["filter"] = f;
        }
        let answer: QueryAnswer = index
            .data
            .call("query", Method::POST, "/query", Some(&body))
            .await?;
        let out: Vec<Scored> = answer
            .matches
            .into_iter()
            .map(|m| Scored {
                id: m.id,
                similarity: similarity(index.spec.metric, m.score),
                metadata: m.metadata.unwrap_or_default(),
            })
            .collect();
        Ok(query.finish(out))
    }

    async fn delete(&self, collection: &str, tenant: &TenantId, ids: &[RecordId]) -> Result<u64> {
        let index = self.require(collection, "delete").await?;
        let mut found = Vec::new();
        for chunk in ids.chunks(FETCH_BATCH) {
            let mut path = String::from("/vectors/fetch?");
            for id in chunk {
                path.push_str("ids=");
                path.push_str(&percent_encode(id));
                path.push('&');
            }
            path.push_str("namespace=");
            path.push_str(&percent_encode(tenant.as_str()));
            let answer: FetchAnswer = index
                .data
                .call("delete", Method::GET, &path, None::<&()>)
                .await?;
            found.extend(answer.vectors.into_keys());
        }
        if found.is_empty() {
            return Ok(0);
        }
        let n = found.len() as u64;
        for chunk in found.chunks(1000) {
            index
                .data
                .call::<Value>(
                    "delete",
                    Method::POST,
                    "/vectors/delete",
                    Some(&json!({"ids": chunk, "namespace": tenant.as_str()})),
                )
                .await?;
        }
        Ok(n)
    }

    async fn purge(&self, collection: &str, scope: &VectorPurge) -> Result<u64> {
        let index = self.require(collection, "purge").await?;
        let stats = self.stats(&index).await?;
        let mut removed = 0;
        for (namespace, s) in &stats.namespaces {
            let wanted = match scope {
                VectorPurge::All => true,
                VectorPurge::Tenant(t) => t.as_str() == namespace,
            };
            if wanted && s.vector_count > 0 {
                self.delete_namespace(&index, namespace).await?;
                removed += s.vector_count;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn index_names_follow_pinecone_rules() {
        assert_eq!(index_name("resk_t_ab12").unwrap(), "resk-t-ab12");
        assert_eq!(
            index_name("resk-all-MiniLM-L6-v2").unwrap(),
            "resk-all-minilm-l6-v2"
        );
        assert!(index_name("___").is_err());
        assert!(index_name(&"a".repeat(46)).is_err());
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
    fn batches_respect_the_request_limits() {
        assert_eq!(upsert_batch(4), 1000);
        assert!(upsert_batch(1536) * (1536 * 12 + 300) <= 2_000_000);
        assert!(upsert_batch(20_000) >= 1);
    }
}
