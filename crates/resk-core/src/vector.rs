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
/// * `upsert` of an existing id replaces the record (idempotent upsert).
/// * `query` returns at most `k` results, best first, none below `min_similarity`, all matching
///   `filter`.
/// * `delete` removes the given ids of one tenant and returns how many existed.
pub trait VectorStore: Send + Sync + Debug + 'static {
    /// The backend's name and capabilities.
    fn info(&self) -> &BackendInfo;

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
}

/// The object-safe twin of [`VectorStore`]; blanket-implemented, never implemented by hand.
#[allow(missing_docs)] // each method mirrors the VectorStore method of the same name
pub trait VectorStoreDyn: Send + Sync + Debug + 'static {
    fn info_dyn(&self) -> &BackendInfo;
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
}

impl<T: VectorStore + ?Sized> VectorStoreDyn for T {
    fn info_dyn(&self) -> &BackendInfo {
        self.info()
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
}

impl<T: VectorStoreDyn + ?Sized> VectorStore for Arc<T> {
    fn info(&self) -> &BackendInfo {
        (**self).info_dyn()
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
}

/// A vector store chosen at run time.
pub type SharedVectorStore = Arc<dyn VectorStoreDyn>;
