//! Vector stores: nearest-neighbour search over the embeddings of cached queries.
//! Implementations live in the `resk-vector-*` crates.

use std::{fmt::Debug, future::Future, sync::Arc};

use serde::{Deserialize, Serialize};

use crate::{BackendInfo, BoxFuture, Embedding, Result, TenantId};

/// Identifier of a vector record; resk uses the cache key name so a hit leads straight to its entry.
pub type RecordId = String;

/// How similarity between two vectors is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Cosine similarity in `[-1, 1]`, higher is closer.
    Cosine,
    /// Euclidean distance `d`, reported as similarity `1 / (1 + d)` in `(0, 1]`.
    L2,
    /// Dot product, higher is closer (unbounded unless vectors are normalised).
    Dot,
}

impl Metric {
    /// The similarity of two vectors on this metric's scale (higher is closer); the reference every
    /// backend's converted scores are tested against.
    pub fn similarity(self, a: &[f32], b: &[f32]) -> f32 {
        match self {
            Metric::Dot => dot(a, b),
            Metric::Cosine => {
                let denom = (dot(a, a) * dot(b, b)).sqrt();
                if denom == 0.0 { 0.0 } else { dot(a, b) / denom }
            }
            Metric::L2 => {
                let d: f32 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
                1.0 / (1.0 + d.sqrt())
            }
        }
    }

    /// The lowercase name (`cosine`, `l2`, `dot`).
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Cosine => "cosine",
            Metric::L2 => "l2",
            Metric::Dot => "dot",
        }
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// One vector with the metadata a search returns.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VectorRecord {
    /// Unique within (collection, tenant).
    pub id: RecordId,
    /// The tenant the record belongs to; searches never cross tenants.
    pub tenant: TenantId,
    /// The vector; must have the collection's dimensions.
    pub vector: Embedding,
    /// Flat metadata used by filters and returned with hits.
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

/// A metadata filter, translated by each backend into its native query language.
///
/// A backend that cannot express a filter returns [`crate::ErrorKind::Unsupported`] rather than
/// ignoring it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Filter {
    /// `metadata[field] == value`.
    Eq(String, serde_json::Value),
    /// `metadata[field]` is one of the values.
    In(String, Vec<serde_json::Value>),
    /// Every filter matches.
    And(Vec<Filter>),
    /// At least one filter matches.
    Or(Vec<Filter>),
}

impl Filter {
    /// Whether `metadata` satisfies the filter; the reference semantics backends translate. A missing
    /// field matches nothing (not even `Eq(field, null)`); `And([])` matches everything, `Or([])`
    /// nothing.
    pub fn matches(&self, metadata: &serde_json::Map<String, serde_json::Value>) -> bool {
        match self {
            Filter::Eq(field, value) => metadata.get(field) == Some(value),
            Filter::In(field, values) => metadata.get(field).is_some_and(|v| values.contains(v)),
            Filter::And(all) => all.iter().all(|f| f.matches(metadata)),
            Filter::Or(any) => any.iter().any(|f| f.matches(metadata)),
        }
    }
}

/// A [`Filter`] in the operator language Chroma and Pinecone share (MongoDB style: `$eq`, `$in`,
/// `$and`, `$or`), from [`Filter::to_operator_json`].
#[derive(Clone, Debug, PartialEq)]
pub enum OperatorFilter {
    /// The filter matches every record (`And([])`): send no filter.
    All,
    /// The filter matches no record (`Or([])`, `In(_, [])`): do not ask the backend at all.
    Nothing,
    /// The filter to send.
    Where(serde_json::Value),
}

impl Filter {
    /// This filter in the `$eq`/`$in`/`$and`/`$or` JSON language; `$and`/`$or` get two or more
    /// operands (one stands alone), as Chroma requires. Values must be strings, numbers or booleans:
    /// anything else is [`crate::ErrorKind::Unsupported`], named after `backend`.
    pub fn to_operator_json(&self, backend: &'static str) -> Result<OperatorFilter> {
        use serde_json::{Value, json};
        let scalar = |field: &str, value: &Value| match value {
            Value::String(_) | Value::Number(_) | Value::Bool(_) => Ok(value.clone()),
            _ => Err(crate::Error::new(
                crate::ErrorKind::Unsupported,
                backend,
                "query",
                format!(
                    "filters compare strings, numbers and booleans; `{field}` is compared with {value}"
                ),
            )),
        };
        Ok(match self {
            Filter::Eq(field, value) => {
                OperatorFilter::Where(json!({ field: { "$eq": scalar(field, value)? } }))
            }
            Filter::In(_, values) if values.is_empty() => OperatorFilter::Nothing,
            Filter::In(field, values) => {
                let values = values
                    .iter()
                    .map(|v| scalar(field, v))
                    .collect::<Result<Vec<_>>>()?;
                OperatorFilter::Where(json!({ field: { "$in": values } }))
            }
            Filter::And(all) => {
                let mut parts = Vec::new();
                for f in all {
                    match f.to_operator_json(backend)? {
                        OperatorFilter::All => {}
                        OperatorFilter::Nothing => return Ok(OperatorFilter::Nothing),
                        OperatorFilter::Where(w) => parts.push(w),
                    }
                }
                match parts.len() {
                    0 => OperatorFilter::All,
                    1 => OperatorFilter::Where(parts.remove(0)),
                    _ => OperatorFilter::Where(json!({ "$and": parts })),
                }
            }
            Filter::Or(any) => {
                let mut parts = Vec::new();
                for f in any {
                    match f.to_operator_json(backend)? {
                        OperatorFilter::All => return Ok(OperatorFilter::All),
                        OperatorFilter::Nothing => {}
                        OperatorFilter::Where(w) => parts.push(w),
                    }
                }
                match parts.len() {
                    0 => OperatorFilter::Nothing,
                    1 => OperatorFilter::Where(parts.remove(0)),
                    _ => OperatorFilter::Where(json!({ "$or": parts })),
                }
            }
        })
    }
}

/// A UUID-formatted id for (tenant, record id), from SHA-256: for backends whose ids must be UUIDs
/// (Qdrant, Weaviate). Equal record ids of two tenants never collide, and any resk id maps to one.
pub fn record_uuid(tenant: &crate::TenantId, id: &str) -> String {
    use sha2::{Digest, Sha256};
    use std::fmt::Write as _;
    let mut h = Sha256::new();
    h.update(tenant.as_str().as_bytes());
    h.update([0]);
    h.update(id.as_bytes());
    let d = h.finalize();
    let mut s = String::with_capacity(36);
    for (i, b) in d[..16].iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The error every backend gives for an operation on a collection that was never ensured.
pub fn collection_missing(
    backend: &'static str,
    op: &'static str,
    collection: &str,
) -> crate::Error {
    crate::Error::new(
        crate::ErrorKind::NotFound,
        backend,
        op,
        format!("collection `{collection}` does not exist (ensure_collection creates it)"),
    )
}

/// The fixed shape of a collection: how many values per vector and how they are compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionSpec {
    /// Values per vector.
    pub dims: usize,
    /// Similarity measure.
    pub metric: Metric,
}

impl CollectionSpec {
    /// A [`ErrorKind::DimensionMismatch`](crate::ErrorKind::DimensionMismatch) error if a vector of
    /// `got` values does not fit this collection; every backend checks before it writes anything.
    pub fn check_dims(&self, backend: &'static str, op: &'static str, got: usize) -> Result<()> {
        if got == self.dims {
            return Ok(());
        }
        Err(crate::Error::new(
            crate::ErrorKind::DimensionMismatch,
            backend,
            op,
            format!(
                "vector has {got} values; the collection holds {}-value vectors",
                self.dims
            ),
        ))
    }

    /// Check a batch before anything of it is written: every vector fits
    /// ([`CollectionSpec::check_dims`]) and holds finite values only (NaN or infinity →
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput)).
    pub fn check_records(&self, backend: &'static str, records: &[VectorRecord]) -> Result<()> {
        for r in records {
            self.check_dims(backend, "upsert", r.vector.len())?;
            if r.vector.iter().any(|x| !x.is_finite()) {
                return Err(crate::Error::new(
                    crate::ErrorKind::InvalidInput,
                    backend,
                    "upsert",
                    format!("record `{}` has a NaN or infinite value", r.id),
                ));
            }
        }
        Ok(())
    }

    /// A [`ErrorKind::Config`](crate::ErrorKind::Config) error unless an existing collection's spec
    /// (`self`) is the one asked for: the answer `ensure_collection` gives on a mismatch.
    pub fn check_same(&self, backend: &'static str, collection: &str, asked: Self) -> Result<()> {
        if *self == asked {
            return Ok(());
        }
        Err(crate::Error::new(
            crate::ErrorKind::Config,
            backend,
            "ensure_collection",
            format!(
                "collection `{collection}` holds {}-value {} vectors; {}-value {} was asked for \
                 (a different embedding model needs its own collection)",
                self.dims,
                self.metric.as_str(),
                asked.dims,
                asked.metric.as_str()
            ),
        ))
    }
}

/// Which records a [`VectorStore::purge`] removes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VectorPurge {
    /// Every record of the collection.
    All,
    /// Every record of one tenant.
    Tenant(TenantId),
}

/// A nearest-neighbour query.
#[derive(Clone, Debug, PartialEq)]
pub struct VectorQuery {
    /// Only this tenant's records are searched.
    pub tenant: TenantId,
    /// The query vector.
    pub vector: Embedding,
    /// Most results returned.
    pub k: usize,
    /// Results below this similarity are dropped.
    pub min_similarity: Option<f32>,
    /// Optional metadata filter.
    pub filter: Option<Filter>,
}

impl VectorQuery {
    /// The query's filter in the operator language ([`Filter::to_operator_json`]); no filter is
    /// [`OperatorFilter::All`].
    pub fn operator_filter(&self, backend: &'static str) -> Result<OperatorFilter> {
        self.filter
            .as_ref()
            .map_or(Ok(OperatorFilter::All), |f| f.to_operator_json(backend))
    }

    /// A backend's converted hits as the contract wants them: none below `min_similarity` (nor NaN),
    /// best first, at most `k`.
    pub fn finish(&self, mut hits: Vec<Scored>) -> Vec<Scored> {
        hits.retain(|h| {
            h.similarity.is_finite() && self.min_similarity.is_none_or(|min| h.similarity >= min)
        });
        hits.sort_by(|a, b| b.similarity.total_cmp(&a.similarity));
        hits.truncate(self.k);
        hits
    }
}

/// One search result.
#[derive(Clone, Debug, PartialEq)]
pub struct Scored {
    /// The record's id.
    pub id: RecordId,
    /// Similarity on the scale of the collection's [`Metric`]; higher is closer.
    pub similarity: f32,
    /// The record's metadata.
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

/// Stores vectors and finds the nearest ones.
///
/// # Contract
/// * Collections have fixed dimensions; a record or query of other dimensions is rejected with
///   [`crate::ErrorKind::DimensionMismatch`] and nothing is written.
/// * Records and queries carry a tenant; a query only ever returns records of its own tenant.
///
/// # Behavior
/// * `ensure_collection` creates a missing collection with the spec, accepts an existing one of the
///   same spec, and rejects one of another spec with [`crate::ErrorKind::Config`]
///   (`ensure_collection_idempotent`, `ensure_collection_mismatch`).
/// * `upsert` of an existing id replaces the record (`upsert_idempotent`); a record of the wrong
///   dimensions is rejected and nothing of the batch is written (`dims_mismatch_rejected`).
/// * `query` returns at most `k` results, best first, none below `min_similarity`, all matching
///   `filter` (`top_k_order`, `threshold_drops`, `filter_eq_in`, `filter_and_or`); an empty or unknown
///   collection answers no results (`query_empty`).
/// * `delete` removes the given ids of one tenant and returns how many existed (`delete_removes`); it
///   never removes another tenant's record of the same id (`tenants_are_isolated`).
/// * `purge` removes a tenant's records or all records and returns how many (`purge_tenant`).
/// * Similarities are on the metric's scale ([`Metric::similarity`]), whatever the backend's own
///   distance or score (`similarity_scales`).
/// * Every operation on a collection that was never ensured fails with
///   [`crate::ErrorKind::NotFound`], except `query`, which answers no results.
pub trait VectorStore: Send + Sync + Debug + 'static {
    /// The backend's name and capabilities.
    fn info(&self) -> &BackendInfo;

    /// Create `collection` with `spec` if absent, or check that the existing one has `spec`.
    fn ensure_collection(
        &self,
        collection: &str,
        spec: CollectionSpec,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Insert or replace records in `collection`.
    fn upsert(
        &self,
        collection: &str,
        records: Vec<VectorRecord>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Find the nearest records.
    fn query(
        &self,
        collection: &str,
        query: &VectorQuery,
    ) -> impl Future<Output = Result<Vec<Scored>>> + Send;

    /// Remove records by id within one tenant.
    fn delete(
        &self,
        collection: &str,
        tenant: &TenantId,
        ids: &[RecordId],
    ) -> impl Future<Output = Result<u64>> + Send;

    /// Remove every record of a tenant, or of the collection.
    fn purge(
        &self,
        collection: &str,
        scope: &VectorPurge,
    ) -> impl Future<Output = Result<u64>> + Send;
}

/// The object-safe twin of [`VectorStore`]; blanket-implemented, never implemented by hand.
#[allow(missing_docs)] // each method mirrors the VectorStore method of the same name
pub trait VectorStoreDyn: Send + Sync + Debug + 'static {
    fn info_dyn(&self) -> &BackendInfo;
    fn ensure_collection_dyn<'a>(
        &'a self,
        collection: &'a str,
        spec: CollectionSpec,
    ) -> BoxFuture<'a, Result<()>>;
    fn upsert_dyn<'a>(
        &'a self,
        collection: &'a str,
        records: Vec<VectorRecord>,
    ) -> BoxFuture<'a, Result<()>>;
    fn query_dyn<'a>(
        &'a self,
        collection: &'a str,
        query: &'a VectorQuery,
    ) -> BoxFuture<'a, Result<Vec<Scored>>>;
    fn delete_dyn<'a>(
        &'a self,
        collection: &'a str,
        tenant: &'a TenantId,
        ids: &'a [RecordId],
    ) -> BoxFuture<'a, Result<u64>>;
    fn purge_dyn<'a>(
        &'a self,
        collection: &'a str,
        scope: &'a VectorPurge,
    ) -> BoxFuture<'a, Result<u64>>;
}

impl<T: VectorStore + ?Sized> VectorStoreDyn for T {
    fn info_dyn(&self) -> &BackendInfo {
        self.info()
    }
    fn ensure_collection_dyn<'a>(
        &'a self,
        collection: &'a str,
        spec: CollectionSpec,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.ensure_collection(collection, spec))
    }
    fn upsert_dyn<'a>(
        &'a self,
        collection: &'a str,
        records: Vec<VectorRecord>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.upsert(collection, records))
    }
    fn query_dyn<'a>(
        &'a self,
        collection: &'a str,
        query: &'a VectorQuery,
    ) -> BoxFuture<'a, Result<Vec<Scored>>> {
        Box::pin(self.query(collection, query))
    }
    fn delete_dyn<'a>(
        &'a self,
        collection: &'a str,
        tenant: &'a TenantId,
        ids: &'a [RecordId],
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(self.delete(collection, tenant, ids))
    }
    fn purge_dyn<'a>(
        &'a self,
        collection: &'a str,
        scope: &'a VectorPurge,
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(self.purge(collection, scope))
    }
}

impl<T: VectorStoreDyn + ?Sized> VectorStore for Arc<T> {
    fn info(&self) -> &BackendInfo {
        (**self).info_dyn()
    }
    async fn ensure_collection(&self, collection: &str, spec: CollectionSpec) -> Result<()> {
        (**self).ensure_collection_dyn(collection, spec).await
    }
    async fn upsert(&self, collection: &str, records: Vec<VectorRecord>) -> Result<()> {
        (**self).upsert_dyn(collection, records).await
    }
    async fn query(&self, collection: &str, query: &VectorQuery) -> Result<Vec<Scored>> {
        (**self).query_dyn(collection, query).await
    }
    async fn delete(&self, collection: &str, tenant: &TenantId, ids: &[RecordId]) -> Result<u64> {
        (**self).delete_dyn(collection, tenant, ids).await
    }
    async fn purge(&self, collection: &str, scope: &VectorPurge) -> Result<u64> {
        (**self).purge_dyn(collection, scope).await
    }
}

/// A vector store chosen at run time.
pub type SharedVectorStore = Arc<dyn VectorStoreDyn>;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;

    #[test]
    fn record_uuids_are_uuids_per_tenant() {
        let (a, b) = (
            crate::TenantId::new("a").unwrap(),
            crate::TenantId::new("b").unwrap(),
        );
        let id = record_uuid(&a, "k");
        assert_eq!(id.len(), 36);
        assert_eq!(id.matches('-').count(), 4);
        assert_ne!(id, record_uuid(&b, "k"));
        assert_eq!(id, record_uuid(&a, "k"));
    }

    #[test]
    fn operator_filters_translate() {
        let f = Filter::And(vec![
            Filter::Eq("lang".into(), json!("en")),
            Filter::Or(vec![
                Filter::In("n".into(), vec![json!(1), json!(2)]),
                Filter::Eq("ok".into(), json!(true)),
            ]),
        ]);
        assert_eq!(
            f.to_operator_json("t").unwrap(),
            OperatorFilter::Where(json!({"$and": [
                {"lang": {"$eq": "en"}},
                {"$or": [{"n": {"$in": [1, 2]}}, {"ok": {"$eq": true}}]}
            ]}))
        );
        assert_eq!(
            Filter::Or(vec![]).to_operator_json("t").unwrap(),
            OperatorFilter::Nothing
        );
        assert_eq!(
            Filter::And(vec![]).to_operator_json("t").unwrap(),
            OperatorFilter::All
        );
        assert_eq!(
            Filter::And(vec![Filter::Eq("a".into(), json!(1)), Filter::And(vec![])])
                .to_operator_json("t")
                .unwrap(),
            OperatorFilter::Where(json!({"a": {"$eq": 1}}))
        );
        assert_eq!(
            Filter::And(vec![Filter::Eq("a".into(), json!(1)), Filter::Or(vec![])])
                .to_operator_json("t")
                .unwrap(),
            OperatorFilter::Nothing
        );
        for bad in [json!(null), json!([1]), json!({"a": 1})] {
            let err = Filter::Eq("a".into(), bad)
                .to_operator_json("t")
                .unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Unsupported);
        }
    }
}
