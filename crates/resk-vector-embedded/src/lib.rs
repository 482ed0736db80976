#![doc = include_str!("../README.md")]

mod log;

use std::{
    collections::HashMap,
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, PoisonError, RwLock},
};

use resk_core::{
    BackendInfo, Capabilities, CollectionSpec, Error, ErrorKind, Filter, Metric, RecordId, Result,
    Scored, TenantId, VectorPurge, VectorQuery, VectorRecord, VectorStore,
};
use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

use crate::log::{Log, Op};

const NAME: &str = "embedded";
/// Records per insert thread below which a batch is inserted from one thread.
const PARALLEL_MIN: usize = 256;

type Metadata = serde_json::Map<String, serde_json::Value>;
const LOG_FILE: &str = "log.bin";

/// How the embedded store indexes and persists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmbeddedConfig {
    /// Where collections are persisted; `None` keeps everything in memory.
    pub dir: Option<PathBuf>,
    /// fsync every write (survives power loss, costs a disk flush per write).
    pub sync: bool,
    /// HNSW neighbours per node (`M`); 0 lets USearch choose (16).
    pub connectivity: usize,
    /// Candidate list size while inserting (`efConstruction`).
    pub expansion_add: usize,
    /// Candidate list size while searching (`ef`); raised to `k` when smaller.
    pub expansion_search: usize,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        Self {
            dir: None,
            sync: false,
            connectivity: 16,
            expansion_add: 128,
            expansion_search: 128,
        }
    }
}

/// The in-process vector store; cheap to clone (clones share the index).
#[derive(Clone)]
pub struct EmbeddedVectorStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// Held for the store's lifetime: one process per index directory.
    _lock: Option<std::fs::File>,
    config: EmbeddedConfig,
    /// The search candidate list size in force (starts at `config.expansion_search`).
    expansion_search: std::sync::atomic::AtomicUsize,
    info: BackendInfo,
    collections: RwLock<HashMap<String, Arc<RwLock<Collection>>>>,
}

impl fmt::Debug for EmbeddedVectorStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedVectorStore")
            .field("dir", &self.inner.config.dir)
            .field("collections", &self.collection_names())
            .finish()
    }
}

struct Entry {
    id: RecordId,
    metadata: serde_json::Map<String, serde_json::Value>,
}

/// One tenant's graph and the mapping between resk ids and USearch keys.
struct TenantIndex {
    index: Index,
    by_id: HashMap<RecordId, u64>,
    records: HashMap<u64, Entry>,
    /// Keys by their `scope` metadata value: a query confined to a small scope is answered exactly
    /// from its members, instead of by a filtered graph search that visits the whole graph when few
    /// records pass the filter (a new scope — a new conversation through the gateway — would cost a
    /// full scan of the tenant).
    by_scope: HashMap<String, std::collections::HashSet<u64>>,
    next_key: u64,
}

/// Scopes up to this size are searched exactly over their members.
const EXACT_SCOPE_MAX: usize = 2048;

/// The `scope` a filter confines a query to, when it does (`Eq("scope", …)`, alone or in an `And`).
fn scope_of(filter: &Filter) -> Option<&str> {
    match filter {
        Filter::Eq(field, serde_json::Value::String(scope)) if field == "scope" => Some(scope),
        Filter::And(all) => all.iter().find_map(scope_of),
        _ => None,
    }
}

/// The `scope` metadata value of a record.
fn scope_value(metadata: &serde_json::Map<String, serde_json::Value>) -> Option<&str> {
    metadata.get("scope").and_then(serde_json::Value::as_str)
}

/// USearch's distance between `a` and `b` under `metric` (what [`similarity`] turns into a score).
fn distance(metric: Metric, a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    match metric {
        Metric::Cosine => {
            let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
            let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
            if na == 0.0 || nb == 0.0 {
                1.0
            } else {
                1.0 - dot / (na * nb)
            }
        }
        Metric::Dot => 1.0 - dot,
        Metric::L2 => a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum(),
    }
}

struct Collection {
    spec: CollectionSpec,
    tenants: HashMap<String, TenantIndex>,
    log: Option<Log>,
}

fn backend(op: &'static str, err: impl fmt::Display) -> Error {
    Error::new(ErrorKind::Backend, NAME, op, err.to_string())
}

fn not_found(op: &'static str, collection: &str) -> Error {
    Error::new(
        ErrorKind::NotFound,
        NAME,
        op,
        format!("collection `{collection}` does not exist (call ensure_collection first)"),
    )
}

fn valid_name(collection: &str) -> Result<()> {
    let ok = !collection.is_empty()
        && collection.len() <= 64
        && collection
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::InvalidInput,
            NAME,
            "collection",
            "collection names are 1-64 characters of A-Z, a-z, 0-9, `_` and `-`",
        ))
    }
}

impl TenantIndex {
    fn new(spec: CollectionSpec, config: &EmbeddedConfig) -> Result<Self> {
        let metric = match spec.metric {
            Metric::Cosine => MetricKind::Cos,
            Metric::L2 => MetricKind::L2sq,
            Metric::Dot => MetricKind::IP,
        };
        let index = Index::new(&IndexOptions {
            dimensions: spec.dims,
            metric,
            quantization: ScalarKind::F32,
            connectivity: config.connectivity,
            expansion_add: config.expansion_add,
            expansion_search: config.expansion_search,
            multi: false,
        })
        .map_err(|e| backend("index", e))?;
        index.reserve(64).map_err(|e| backend("index", e))?;
        Ok(Self {
            index,
            by_id: HashMap::new(),
            records: HashMap::new(),
            by_scope: HashMap::new(),
            next_key: 0,
        })
    }

    fn remove(&mut self, id: &str) -> Result<bool> {
        let Some(key) = self.by_id.remove(id) else {
            return Ok(false);
        };
        if let Some(entry) = self.records.remove(&key)
            && let Some(scope) = scope_value(&entry.metadata)
            && let Some(members) = self.by_scope.get_mut(scope)
        {
            members.remove(&key);
            if members.is_empty() {
                self.by_scope.remove(scope);
            }
        }
        self.index.remove(key).map_err(|e| backend("delete", e))?;
        Ok(true)
    }

    /// Insert or replace records. Large batches are added to the graph from several threads at once
    /// (USearch's `add` is thread-safe once capacity is reserved); the id maps are updated after.
    fn insert_many(&mut self, records: Vec<(RecordId, Vec<f32>, Metadata)>) -> Result<()> {
        for (id, _, _) in &records {
            self.remove(id)?;
        }
        let needed = self.index.size() + records.len();
        if needed > self.index.capacity() {
            let grown = needed.max(self.index.capacity() * 2).max(64);
            self.index
                .reserve(grown)
                .map_err(|e| backend("upsert", e))?;
        }
        let first = self.next_key;
        self.next_key += records.len() as u64;
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(records.len().div_ceil(PARALLEL_MIN))
            .max(1);
        let chunk = records.len().div_ceil(threads).max(1);
        let index = &self.index;
        let added: Vec<Result<()>> = if threads == 1 {
            vec![add_all(index, first, &records)]
        } else {
            std::thread::scope(|scope| {
                let workers: Vec<_> = records
                    .chunks(chunk)
                    .enumerate()
                    .map(|(c, part)| {
                        scope.spawn(move || add_all(index, first + (c * chunk) as u64, part))
                    })
                    .collect();
                workers
                    .into_iter()
                    .map(|w| {
                        w.join()
                            .unwrap_or_else(|_| Err(backend("upsert", "an insert thread panicked")))
                    })
                    .collect()
            })
        };
        for (i, (id, _, metadata)) in records.into_iter().enumerate() {
            let key = first + i as u64;
            if self.index.contains(key) {
                self.by_id.insert(id.clone(), key);
                if let Some(scope) = scope_value(&metadata) {
                    self.by_scope
                        .entry(scope.to_owned())
                        .or_default()
                        .insert(key);
                }
                self.records.insert(key, Entry { id, metadata });
            }
        }
        added.into_iter().collect()
    }
}

/// Add `records` under consecutive keys from `first`.
fn add_all(index: &Index, first: u64, records: &[(RecordId, Vec<f32>, Metadata)]) -> Result<()> {
    for (i, (_, vector, _)) in records.iter().enumerate() {
        index
            .add(first + i as u64, vector)
            .map_err(|e| backend("upsert", e))?;
    }
    Ok(())
}

impl Collection {
    fn live(&self) -> usize {
        self.tenants.values().map(|t| t.by_id.len()).sum()
    }

    fn apply(&mut self, op: Op, config: &EmbeddedConfig) -> Result<u64> {
        match op {
            Op::Upsert {
                tenant,
                id,
                vector,
                metadata,
            } => {
                let spec = self.spec;
                let index = match self.tenants.entry(tenant) {
                    std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(TenantIndex::new(spec, config)?)
                    }
                };
                index.insert_many(vec![(id, vector, metadata)])?;
                Ok(1)
            }
            Op::Delete { tenant, ids } => {
                let Some(index) = self.tenants.get_mut(&tenant) else {
                    return Ok(0);
                };
                let mut removed = 0;
                for id in &ids {
                    removed += u64::from(index.remove(id)?);
                }
                if index.by_id.is_empty() {
                    self.tenants.remove(&tenant);
                }
                Ok(removed)
            }
            Op::PurgeTenant { tenant } => Ok(self
                .tenants
                .remove(&tenant)
                .map_or(0, |t| t.by_id.len() as u64)),
            Op::PurgeAll => {
                let n = self.live() as u64;
                self.tenants.clear();
                Ok(n)
            }
        }
    }

    /// Log `ops` (all or nothing), then apply them.
    fn commit(&mut self, ops: Vec<Op>, config: &EmbeddedConfig) -> Result<u64> {
        if let Some(log) = &mut self.log {
            let mut buf = Vec::new();
            for op in &ops {
                op.encode(&mut buf);
            }
            log.append(&buf, ops.len())?;
        }
        let total = self.apply_all(ops, config)?;
        self.maybe_compact()?;
        Ok(total)
    }

    /// Apply operations in order, runs of upserts for one tenant as one parallel batch.
    fn apply_all(&mut self, ops: Vec<Op>, config: &EmbeddedConfig) -> Result<u64> {
        let mut total = 0;
        let mut ops = ops.into_iter().peekable();
        while let Some(op) = ops.next() {
            let Op::Upsert {
                tenant,
                id,
                vector,
                metadata,
            } = op
            else {
                total += self.apply(op, config)?;
                continue;
            };
            // A run of upserts for one tenant goes to its graph in one parallel batch; an id repeated
            // in the run keeps its last record, as sequential upserts would.
            let mut run: Vec<(RecordId, Vec<f32>, Metadata)> = vec![(id, vector, metadata)];
            while let Some(Op::Upsert { tenant: t, .. }) = ops.peek() {
                if *t != tenant {
                    break;
                }
                if let Some(Op::Upsert {
                    id,
                    vector,
                    metadata,
                    ..
                }) = ops.next()
                {
                    run.push((id, vector, metadata));
                }
            }
            let mut seen = std::collections::HashSet::new();
            run.reverse();
            run.retain(|(id, _, _)| seen.insert(id.clone()));
            run.reverse();
            total += run.len() as u64;
            let spec = self.spec;
            let index = match self.tenants.entry(tenant) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(TenantIndex::new(spec, config)?)
                }
            };
            index.insert_many(run)?;
        }
        Ok(total)
    }

    /// Rewrite the log as one frame per live record once it holds more than twice as many frames.
    fn maybe_compact(&mut self) -> Result<()> {
        let live = self.live();
        let Some(log) = &self.log else {
            return Ok(());
        };
        if log.frames <= 1024.max(2 * live) {
            return Ok(());
        }
        let mut ops = Vec::with_capacity(live);
        for (tenant, index) in &self.tenants {
            for (key, entry) in &index.records {
                let mut vector = Vec::new();
                index
                    .index
                    .export(*key, &mut vector)
                    .map_err(|e| backend("compact", e))?;
                ops.push(Op::Upsert {
                    tenant: tenant.clone(),
                    id: entry.id.clone(),
                    vector,
                    metadata: entry.metadata.clone(),
                });
            }
        }
        let spec = self.spec;
        if let Some(log) = &mut self.log {
            log.rewrite(spec, &ops)?;
        }
        Ok(())
    }
}

/// Take the directory's lock file: two processes appending to one log would corrupt it.
fn lock_dir(dir: &Path) -> Result<std::fs::File> {
    let path = dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| backend("open", format!("{}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::new(
            ErrorKind::Config,
            NAME,
            "open",
            format!(
                "another process has the vector index {} open (a running resk-server or ingest?); \
                 stop it first",
                dir.display()
            ),
        )),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(backend("open", format!("{}: {e}", path.display())))
        }
    }
}

fn similarity(metric: Metric, distance: f32) -> f32 {
    match metric {
        Metric::Cosine | Metric::Dot => 1.0 - distance,
        Metric::L2 => 1.0 / (1.0 + distance.max(0.0).sqrt()),
    }
}

impl EmbeddedVectorStore {
    /// A store with `config`; with a directory, every collection persisted there is loaded (its log
    /// replayed into fresh graphs). Blocking: call from `spawn_blocking` in async code.
    pub fn open(config: EmbeddedConfig) -> Result<Self> {
        let mut collections = HashMap::new();
        let mut lock = None;
        if let Some(dir) = &config.dir {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::new(
                    ErrorKind::Config,
                    NAME,
                    "open",
                    format!("cannot create {}: {e}", dir.display()),
                )
            })?;
            lock = Some(lock_dir(dir)?);
            let entries = std::fs::read_dir(dir).map_err(|e| backend("open", e))?;
            for entry in entries {
                let entry = entry.map_err(|e| backend("open", e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let path = entry.path().join(LOG_FILE);
                if valid_name(&name).is_err() || !path.is_file() {
                    continue;
                }
                let collection = Self::load(&path, &config)?;
                collections.insert(name, Arc::new(RwLock::new(collection)));
            }
        }
        Ok(Self {
            inner: Arc::new(Inner {
                expansion_search: config.expansion_search.into(),
                _lock: lock,
                info: BackendInfo {
                    name: NAME,
                    capabilities: Capabilities::new(config.dir.is_some(), false, false),
                },
                config,
                collections: RwLock::new(collections),
            }),
        })
    }

    /// An in-memory store (nothing persisted).
    pub fn in_memory() -> Self {
        Self {
            inner: Arc::new(Inner {
                expansion_search: EmbeddedConfig::default().expansion_search.into(),
                _lock: None,
                info: BackendInfo {
                    name: NAME,
                    capabilities: Capabilities::new(false, false, false),
                },
                config: EmbeddedConfig::default(),
                collections: RwLock::new(HashMap::new()),
            }),
        }
    }

    fn load(path: &Path, config: &EmbeddedConfig) -> Result<Collection> {
        let (log, spec, ops) = Log::open(path, config.sync)?;
        let mut collection = Collection {
            spec,
            tenants: HashMap::new(),
            log: None,
        };
        let replayed = ops.len();
        collection.apply_all(ops, config)?;
        collection.log = Some(log);
        collection.maybe_compact()?;
        tracing::info!(
            path = %path.display(),
            replayed,
            live = collection.live(),
            "vector collection loaded"
        );
        Ok(collection)
    }

    /// Change the search candidate list size (`ef`) of every graph, present and future: higher finds
    /// more of the true nearest neighbours, slower. Waits for in-flight searches and writes.
    pub fn set_expansion_search(&self, ef: usize) {
        let ef = ef.max(1);
        self.inner
            .expansion_search
            .store(ef, std::sync::atomic::Ordering::Relaxed);
        let map = self
            .inner
            .collections
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        for coll in map.values() {
            let guard = coll.write().unwrap_or_else(PoisonError::into_inner);
            for t in guard.tenants.values() {
                t.index.change_expansion_search(ef);
            }
        }
    }

    /// Names of the collections held.
    pub fn collection_names(&self) -> Vec<String> {
        let map = self
            .inner
            .collections
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let mut names: Vec<String> = map.keys().cloned().collect();
        names.sort();
        names
    }

    /// Records held in `collection` across tenants (0 for an unknown collection).
    pub fn len(&self, collection: &str) -> usize {
        self.collection(collection).map_or(0, |c| {
            c.read().unwrap_or_else(PoisonError::into_inner).live()
        })
    }

    fn collection(&self, name: &str) -> Option<Arc<RwLock<Collection>>> {
        self.inner
            .collections
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// Run a write on tokio's blocking pool (index inserts and file appends are CPU and disk work).
    async fn write<T: Send + 'static>(
        &self,
        op: &'static str,
        collection: &str,
        f: impl FnOnce(&mut Collection, &EmbeddedConfig) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let coll = self
            .collection(collection)
            .ok_or_else(|| not_found(op, collection))?;
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let mut guard = coll.write().unwrap_or_else(PoisonError::into_inner);
            let config = EmbeddedConfig {
                expansion_search: inner
                    .expansion_search
                    .load(std::sync::atomic::Ordering::Relaxed),
                ..inner.config.clone()
            };
            f(&mut guard, &config)
        })
        .await
        .map_err(|e| backend(op, e))?
    }

    /// Search exactly (brute force over one tenant's records); the reference recall is measured against.
    pub fn exact_query(&self, collection: &str, query: &VectorQuery) -> Result<Vec<Scored>> {
        self.search(collection, query, true)
    }

    fn search(&self, collection: &str, query: &VectorQuery, exact: bool) -> Result<Vec<Scored>> {
        let Some(coll) = self.collection(collection) else {
            return Ok(Vec::new());
        };
        let coll = coll.read().unwrap_or_else(PoisonError::into_inner);
        coll.spec.check_dims(NAME, "query", query.vector.len())?;
        let Some(index) = coll.tenants.get(query.tenant.as_str()) else {
            return Ok(Vec::new());
        };
        if query.k == 0 {
            return Ok(Vec::new());
        }
        if let Some(filter) = &query.filter
            && let Some(scope) = scope_of(filter)
        {
            let members = index.by_scope.get(scope);
            if members.map_or(0, |m| m.len()) <= EXACT_SCOPE_MAX {
                return Ok(exact_in_scope(
                    index,
                    coll.spec.metric,
                    coll.spec.dims,
                    query,
                    filter,
                    members,
                ));
            }
        }
        // USearch widens its candidate list to `k` by itself when `k` exceeds `expansion_search`.
        let k = query.k.min(index.by_id.len());
        let matches = match (&query.filter, exact) {
            (Some(filter), _) => index.index.filtered_search(&query.vector, k, |key| {
                index
                    .records
                    .get(&key)
                    .is_some_and(|e| filter.matches(&e.metadata))
            }),
            (None, true) => index.index.exact_search(&query.vector, k),
            (None, false) => index.index.search(&query.vector, k),
        }
        .map_err(|e| backend("query", e))?;
        let mut out = Vec::with_capacity(matches.keys.len());
        for (key, distance) in matches.keys.iter().zip(&matches.distances) {
            let Some(entry) = index.records.get(key) else {
                continue;
            };
            let sim = similarity(coll.spec.metric, *distance);
            if query.min_similarity.is_some_and(|min| sim < min) {
                continue;
            }
            out.push(Scored {
                id: entry.id.clone(),
                similarity: sim,
                metadata: entry.metadata.clone(),
            });
        }
        out.sort_by(|a, b| b.similarity.total_cmp(&a.similarity));
        Ok(out)
    }
}

/// The `k` best of a small scope's members that pass `filter`, by exact distance.
fn exact_in_scope(
    index: &TenantIndex,
    metric: Metric,
    dims: usize,
    query: &VectorQuery,
    filter: &Filter,
    members: Option<&std::collections::HashSet<u64>>,
) -> Vec<Scored> {
    let mut vector = vec![0f32; dims];
    let mut out: Vec<Scored> = Vec::new();
    for key in members.into_iter().flatten() {
        let Some(entry) = index.records.get(key) else {
            continue;
        };
        if !filter.matches(&entry.metadata) || index.index.get(*key, &mut vector).ok() != Some(1) {
            continue;
        }
        let sim = similarity(metric, distance(metric, &query.vector, &vector));
        if query.min_similarity.is_some_and(|min| sim < min) {
            continue;
        }
        out.push(Scored {
            id: entry.id.clone(),
            similarity: sim,
            metadata: entry.metadata.clone(),
        });
    }
    out.sort_by(|a, b| b.similarity.total_cmp(&a.similarity));
    out.truncate(query.k);
    out
}

impl VectorStore for EmbeddedVectorStore {
    fn info(&self) -> &BackendInfo {
        &self.inner.info
    }

    async fn ensure_collection(&self, collection: &str, spec: CollectionSpec) -> Result<()> {
        valid_name(collection)?;
        if spec.dims == 0 || spec.dims > 65_536 {
            return Err(Error::new(
                ErrorKind::Config,
                NAME,
                "ensure_collection",
                "dimensions must be 1-65536",
            ));
        }
        if let Some(existing) = self.collection(collection) {
            let have = existing.read().unwrap_or_else(PoisonError::into_inner).spec;
            return have.check_same(NAME, collection, spec);
        }
        let log = match &self.inner.config.dir {
            None => None,
            Some(dir) => {
                let sub = dir.join(collection);
                std::fs::create_dir_all(&sub).map_err(|e| backend("ensure_collection", e))?;
                Some(Log::create(
                    &sub.join(LOG_FILE),
                    spec,
                    self.inner.config.sync,
                )?)
            }
        };
        let mut map = self
            .inner
            .collections
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        map.entry(collection.to_owned()).or_insert_with(|| {
            Arc::new(RwLock::new(Collection {
                spec,
                tenants: HashMap::new(),
                log,
            }))
        });
        Ok(())
    }

    async fn upsert(&self, collection: &str, records: Vec<VectorRecord>) -> Result<()> {
        let Some(coll) = self.collection(collection) else {
            return Err(not_found("upsert", collection));
        };
        let spec = coll.read().unwrap_or_else(PoisonError::into_inner).spec;
        spec.check_records(NAME, &records)?;
        let ops: Vec<Op> = records
            .into_iter()
            .map(|r| Op::Upsert {
                tenant: r.tenant.as_str().to_owned(),
                id: r.id,
                vector: r.vector,
                metadata: r.metadata,
            })
            .collect();
        self.write("upsert", collection, move |c, config| c.commit(ops, config))
            .await
            .map(drop)
    }

    async fn query(&self, collection: &str, query: &VectorQuery) -> Result<Vec<Scored>> {
        self.search(collection, query, false)
    }

    async fn delete(&self, collection: &str, tenant: &TenantId, ids: &[RecordId]) -> Result<u64> {
        let op = Op::Delete {
            tenant: tenant.as_str().to_owned(),
            ids: ids.to_vec(),
        };
        self.write("delete", collection, move |c, config| {
            c.commit(vec![op], config)
        })
        .await
    }

    async fn purge(&self, collection: &str, scope: &VectorPurge) -> Result<u64> {
        let op = match scope {
            VectorPurge::All => Op::PurgeAll,
            VectorPurge::Tenant(t) => Op::PurgeTenant {
                tenant: t.as_str().to_owned(),
            },
        };
        self.write("purge", collection, move |c, config| {
            c.commit(vec![op], config)
        })
        .await
    }
}
