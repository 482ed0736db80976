#![doc = include_str!("../README.md")]

use std::{
    collections::{HashMap, HashSet},
    fmt,
    fmt::Write as _,
    time::Duration,
};

use resk_core::{
    BackendInfo, Capabilities, CollectionSpec, Error, ErrorKind, Filter, Metric, RecordId, Result,
    Scored, TenantId, VectorPurge, VectorQuery, VectorRecord, VectorStore,
};
use resk_http::{
    JsonApi, Method, RetryPolicy,
    header::{HeaderMap, HeaderValue},
};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::RwLock;

/// The backend's name in errors and metrics.
pub const SCHEME: &str = "weaviate";

/// Property holding the record's resk id (Weaviate object ids are UUIDs).
const ID_PROP: &str = "resk_id";
/// Property holding the record's metadata as JSON text, so it comes back exactly as written.
const META_PROP: &str = "resk_metadata";

/// Objects per batch request (Weaviate documents no hard limit; its clients send 100-1 000).
const UPSERT_BATCH: usize = 200;
/// Ids per batch delete: below `QUERY_MAXIMUM_RESULTS` (default 10 000), the most one request deletes.
const DELETE_BATCH: usize = 1_000;
/// Tenants per delete-tenants request.
const TENANT_BATCH: usize = 100;

/// How to reach a Weaviate server.
#[derive(Clone)]
#[non_exhaustive]
pub struct WeaviateConfig {
    /// Base URL, e.g. `http://127.0.0.1:8080` or a Weaviate Cloud cluster URL (no `/v1`).
    pub url: String,
    /// API key, sent as `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Retries of transient failures.
    pub retry: RetryPolicy,
}

impl WeaviateConfig {
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

impl fmt::Debug for WeaviateConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeaviateConfig")
            .field("url", &self.url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A property's data type, as far as filters care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PropType {
    Text,
    Number,
    Boolean,
    Other,
}

impl PropType {
    fn of_value(value: &Value) -> Option<Self> {
        match value {
            Value::String(_) => Some(Self::Text),
            Value::Number(_) => Some(Self::Number),
            Value::Bool(_) => Some(Self::Boolean),
            _ => None,
        }
    }

    fn of_data_type(data_type: &[String]) -> Self {
        match data_type.first().map(String::as_str) {
            Some("text") => Self::Text,
            Some("number") => Self::Number,
            Some("boolean") => Self::Boolean,
            _ => Self::Other,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Number => "number",
            Self::Boolean => "boolean",
            Self::Other => "another type",
        }
    }

    /// The property definition resk creates: exact-match text (`field` tokenization), numbers,
    /// booleans, all filterable.
    fn definition(self, name: &str) -> Value {
        match self {
            Self::Text => json!({
                "name": name, "dataType": ["text"], "tokenization": "field",
                "indexFilterable": true, "indexSearchable": false,
            }),
            Self::Number => json!({"name": name, "dataType": ["number"], "indexFilterable": true}),
            Self::Boolean | Self::Other => {
                json!({"name": name, "dataType": ["boolean"], "indexFilterable": true})
            }
        }
    }
}

/// What resk knows of a class.
#[derive(Clone, Debug)]
struct ClassInfo {
    class: String,
    spec: CollectionSpec,
    props: HashMap<String, PropType>,
}

/// A [`VectorStore`] on Weaviate.
#[derive(Debug)]
pub struct WeaviateVectorStore {
    api: JsonApi,
    known: RwLock<HashMap<String, ClassInfo>>,
    info: BackendInfo,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClassDef {
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    vector_index_config: Option<Value>,
    #[serde(default)]
    vector_config: Option<Map<String, Value>>,
    #[serde(default)]
    multi_tenancy_config: Option<MultiTenancy>,
    #[serde(default)]
    properties: Vec<PropDef>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MultiTenancy {
    #[serde(default)]
    enabled: bool,
    #[serde(default)]
    auto_tenant_creation: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PropDef {
    name: String,
    #[serde(default)]
    data_type: Vec<String>,
}

#[derive(Deserialize)]
struct BatchItem {
    #[serde(default)]
    result: Option<BatchResult>,
}

#[derive(Deserialize)]
struct BatchResult {
    #[serde(default)]
    errors: Option<ErrorList>,
}

#[derive(Deserialize)]
struct ErrorList {
    #[serde(default)]
    error: Vec<Message>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct GraphQlAnswer {
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    errors: Option<Vec<Message>>,
}

#[derive(Deserialize)]
struct BatchDeleteAnswer {
    results: BatchDeleteResults,
}

#[derive(Deserialize)]
struct BatchDeleteResults {
    successful: u64,
    #[serde(default)]
    failed: u64,
}

#[derive(Deserialize)]
struct Tenant {
    name: String,
}

fn distance_name(metric: Metric) -> &'static str {
    match metric {
        Metric::Cosine => "cosine",
        Metric::L2 => "l2-squared",
        Metric::Dot => "dot",
    }
}

/// Weaviate's `_additional.distance` to resk's similarity: cosine distance is `1 - cos`, `dot`
/// distance is the negated dot product, `l2-squared` the squared Euclidean distance.
fn similarity(metric: Metric, distance: f32) -> f32 {
    match metric {
        Metric::Cosine => 1.0 - distance,
        Metric::Dot => -distance,
        Metric::L2 => 1.0 / (1.0 + distance.max(0.0).sqrt()),
    }
}

fn config_error(op: &'static str, what: String) -> Error {
    Error::new(ErrorKind::Config, SCHEME, op, what)
}

/// Escape `s` into `[A-Za-z0-9_-]`: `_` → `__`, `.` → `_d`, and (when `hyphen` is false) `-` → `_h`.
/// Injective, so two resk names never share a Weaviate name.
fn escape(s: &str, hyphen: bool) -> Option<String> {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            c if c.is_ascii_alphanumeric() => out.push(c),
            '-' if hyphen => out.push('-'),
            '-' => out.push_str("_h"),
            '_' => out.push_str("__"),
            '.' => out.push_str("_d"),
            _ => return None,
        }
    }
    Some(out)
}

/// The Weaviate class for a resk collection: `Resk_` + the name with `_` → `__`, `-` → `_h`,
/// `.` → `_d` (class names are GraphQL names: `[A-Z][_0-9A-Za-z]*`). Other characters are a
/// configuration error.
pub fn class_name(collection: &str) -> Result<String> {
    match escape(collection, false) {
        Some(e) if !e.is_empty() && e.len() <= 200 => Ok(format!("Resk_{e}")),
        _ => Err(config_error(
            "ensure_collection",
            format!(
                "collection `{collection}` does not make a Weaviate class name (use 1-100 of [A-Za-z0-9._-])"
            ),
        )),
    }
}

/// The Weaviate tenant for a resk tenant. Weaviate tenant names are `[A-Za-z0-9_-]{1,64}`, resk's
/// also allow `.`: `_` → `__` and `.` → `_d`; a name that grows past 64 characters becomes `_h` + 62
/// hex digits of its SHA-256 (no escaped name starts with `_h`, so the two never meet).
pub fn tenant_name(tenant: &TenantId) -> String {
    match escape(tenant.as_str(), true) {
        Some(e) if e.len() <= 64 => e,
        _ => {
            let digest = Sha256::digest(tenant.as_str().as_bytes());
            let mut s = String::from("_h");
            for b in digest.iter().take(31) {
                let _ = write!(s, "{b:02x}");
            }
            s
        }
    }
}

/// Whether `name` can be a Weaviate property resk filters on: a GraphQL name that is neither one of
/// resk's nor one Weaviate reserves.
fn filterable_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    first_ok
        && name.len() <= 230
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with('_')
        && !matches!(name, "id" | ID_PROP | META_PROP)
}

/// A GraphQL string literal (JSON string escapes are GraphQL's).
fn gql_string(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

/// A `where` argument, or the knowledge that the filter matches everything or nothing.
#[derive(Debug, PartialEq)]
enum Where {
    All,
    Nothing,
    Clause(String),
}

fn unsupported(what: String) -> Error {
    Error::new(ErrorKind::Unsupported, SCHEME, "query", what)
}

/// A resk filter as a GraphQL `where` input object, given the class's property types. A field the
/// class has no property for, or whose property has another type than the value, matches nothing
/// (resk's semantics: no record holds that value there).
fn where_clause(filter: &Filter, props: &HashMap<String, PropType>) -> Result<Where> {
    let leaf = |field: &str, value: &Value| -> Result<Where> {
        let Some(asked) = PropType::of_value(value) else {
            return Err(unsupported(format!(
                "filters compare strings, numbers and booleans; `{field}` is compared with {value}"
            )));
        };
        if matches!(field, ID_PROP | META_PROP) {
            return Ok(Where::Nothing);
        }
        if !filterable_name(field) {
            return Err(unsupported(format!(
                "`{field}` is not a Weaviate property name ([A-Za-z][A-Za-z0-9_]*), so it cannot be filtered on"
            )));
        }
        if props.get(field) != Some(&asked) {
            return Ok(Where::Nothing);
        }
        let literal = match value {
            Value::String(s) => format!("valueText:{}", gql_string(s)),
            Value::Number(n) => format!("valueNumber:{n}"),
            Value::Bool(b) => format!("valueBoolean:{b}"),
            _ => return Ok(Where::Nothing),
        };
        Ok(Where::Clause(format!(
            "{{path:[{}],operator:Equal,{literal}}}",
            gql_string(field)
        )))
    };
    let combine = |op: &str, parts: Vec<Where>, and: bool| -> Where {
        let mut clauses = Vec::new();
        for p in parts {
            match p {
                Where::All if and => {}
                Where::All => return Where::All,
                Where::Nothing if and => return Where::Nothing,
                Where::Nothing => {}
                Where::Clause(c) => clauses.push(c),
            }
        }
        match clauses.len() {
            0 if and => Where::All,
            0 => Where::Nothing,
            1 => Where::Clause(clauses.remove(0)),
            _ => Where::Clause(format!(
                "{{operator:{op},operands:[{}]}}",
                clauses.join(",")
            )),
        }
    };
    Ok(match filter {
        Filter::Eq(field, value) => leaf(field, value)?,
        Filter::In(field, values) => combine(
            "Or",
            values
                .iter()
                .map(|v| leaf(field, v))
                .collect::<Result<_>>()?,
            false,
        ),
        Filter::And(all) => combine(
            "And",
            all.iter()
                .map(|f| where_clause(f, props))
                .collect::<Result<_>>()?,
            true,
        ),
        Filter::Or(any) => combine(
            "Or",
            any.iter()
                .map(|f| where_clause(f, props))
                .collect::<Result<_>>()?,
            false,
        ),
        other => return Err(unsupported(format!("filter {other:?}"))),
    })
}

/// The fields a filter names.
fn filter_fields<'a>(filter: &'a Filter, out: &mut Vec<&'a str>) {
    match filter {
        Filter::Eq(f, _) | Filter::In(f, _) => out.push(f),
        Filter::And(fs) | Filter::Or(fs) => fs.iter().for_each(|f| filter_fields(f, out)),
        _ => {}
    }
}

/// Whether a Weaviate error says the tenant does not exist (no object was ever written for it).
fn tenant_missing(message: &str) -> bool {
    message.contains("tenant not found")
}

fn class_info(def: ClassDef, class: &str, collection: &str) -> Result<ClassInfo> {
    let op = "ensure_collection";
    let mt = def.multi_tenancy_config.unwrap_or(MultiTenancy {
        enabled: false,
        auto_tenant_creation: false,
    });
    if !mt.enabled {
        return Err(config_error(
            op,
            format!(
                "class {class} exists without multi-tenancy; resk isolates tenants as Weaviate tenants \
                 (use another VECTOR_COLLECTION)"
            ),
        ));
    }
    if !mt.auto_tenant_creation {
        return Err(config_error(
            op,
            format!(
                "class {class} has multiTenancyConfig.autoTenantCreation off; turn it on \
                 (PUT /v1/schema/{class}) or use another VECTOR_COLLECTION"
            ),
        ));
    }
    if def.vector_config.is_some_and(|v| !v.is_empty()) {
        return Err(config_error(
            op,
            format!("class {class} has named vectors; resk needs the class's single vector"),
        ));
    }
    let distance = def
        .vector_index_config
        .as_ref()
        .and_then(|c| c.get("distance"))
        .and_then(Value::as_str)
        .unwrap_or("cosine");
    let metric = match distance {
        "cosine" => Metric::Cosine,
        "l2-squared" => Metric::L2,
        "dot" => Metric::Dot,
        other => {
            return Err(config_error(
                op,
                format!("class {class} uses distance {other}, which resk does not support"),
            ));
        }
    };
    // Weaviate classes have no dimension: resk records it in the description it writes.
    let dims = def
        .description
        .as_deref()
        .and_then(|d| d.rsplit_once("(dims="))
        .and_then(|(_, rest)| rest.split_once(')'))
        .and_then(|(n, _)| n.parse::<usize>().ok())
        .ok_or_else(|| {
            config_error(
                op,
                format!(
                    "class {class} (collection `{collection}`) was not created by resk: its description \
                     does not record the dimensions"
                ),
            )
        })?;
    let props = def
        .properties
        .into_iter()
        .map(|p| (p.name, PropType::of_data_type(&p.data_type)))
        .collect();
    Ok(ClassInfo {
        class: class.to_owned(),
        spec: CollectionSpec { dims, metric },
        props,
    })
}

impl WeaviateVectorStore {
    /// A store on the server of `config` (no request is made until the first call).
    pub fn new(config: WeaviateConfig) -> Result<Self> {
        let mut headers = HeaderMap::new();
        if let Some(key) = &config.api_key {
            let mut value = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
                config_error(
                    "config",
                    "WEAVIATE_API_KEY is not a valid header value".into(),
                )
            })?;
            value.set_sensitive(true);
            headers.insert("Authorization", value);
        }
        let base = format!("{}/v1", config.url.trim_end_matches('/'));
        Ok(Self {
            api: JsonApi::new(SCHEME, &base, config.timeout, config.retry, headers)?,
            known: RwLock::new(HashMap::new()),
            info: BackendInfo {
                name: SCHEME,
                capabilities: Capabilities::new(true, true, false),
            },
        })
    }

    /// Read the class from the server (`None`: absent) and remember it.
    async fn fetch(&self, collection: &str) -> Result<Option<ClassInfo>> {
        let Ok(class) = class_name(collection) else {
            return Ok(None);
        };
        let def: ClassDef = match self
            .api
            .call(
                "schema",
                Method::GET,
                &format!("/schema/{class}"),
                None::<&()>,
            )
            .await
        {
            Ok(d) => d,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let info = class_info(def, &class, collection)?;
        self.known
            .write()
            .await
            .insert(collection.to_owned(), info.clone());
        Ok(Some(info))
    }

    async fn lookup(&self, collection: &str) -> Result<Option<ClassInfo>> {
        if let Some(info) = self.known.read().await.get(collection) {
            return Ok(Some(info.clone()));
        }
        self.fetch(collection).await
    }

    async fn require(&self, collection: &str, op: &'static str) -> Result<ClassInfo> {
        self.lookup(collection)
            .await?
            .ok_or_else(|| resk_core::collection_missing(SCHEME, op, collection))
    }

    /// Add the properties `wanted` needs that the class lacks; a property of another type is an
    /// error naming the field.
    async fn ensure_properties(
        &self,
        collection: &str,
        mut info: ClassInfo,
        wanted: &HashMap<String, PropType>,
    ) -> Result<()> {
        let class = info.class.clone();
        let conflict = |field: &str, has: PropType, asked: PropType| {
            Error::new(
                ErrorKind::Unsupported,
                SCHEME,
                "upsert",
                format!(
                    "metadata field `{field}` is a {} property of class {}; this record holds a {}",
                    has.name(),
                    class,
                    asked.name()
                ),
            )
        };
        let mut refreshed = false;
        for (field, &asked) in wanted {
            match info.props.get(field) {
                Some(&has) if has == asked => continue,
                Some(&has) => return Err(conflict(field, has, asked)),
                None if !refreshed => {
                    // Another instance may have added it: look once before adding.
                    refreshed = true;
                    if let Some(fresh) = self.fetch(collection).await? {
                        info = fresh;
                    }
                    match info.props.get(field) {
                        Some(&has) if has == asked => continue,
                        Some(&has) => return Err(conflict(field, has, asked)),
                        None => {}
                    }
                }
                None => {}
            }
            let added = self
                .api
                .call::<Value>(
                    "add_property",
                    Method::POST,
                    &format!("/schema/{}/properties", info.class),
                    Some(&asked.definition(field)),
                )
                .await;
            match added {
                Ok(_) => {}
                // 422: added meanwhile by another writer; its type is checked below.
                Err(e) if e.kind() == ErrorKind::InvalidInput => {
                    if let Some(fresh) = self.fetch(collection).await? {
                        info = fresh;
                    }
                    match info.props.get(field) {
                        Some(&has) if has == asked => continue,
                        Some(&has) => return Err(conflict(field, has, asked)),
                        None => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            }
            info.props.insert(field.clone(), asked);
        }
        self.known.write().await.insert(collection.to_owned(), info);
        Ok(())
    }

    async fn graphql(&self, op: &'static str, query: String) -> Result<GraphQlAnswer> {
        self.api
            .call(op, Method::POST, "/graphql", Some(&json!({"query": query})))
            .await
    }

    /// Objects of one tenant (`None`: the tenant does not exist).
    async fn count(&self, class: &str, tenant: &str) -> Result<Option<u64>> {
        let answer = self
            .graphql(
                "purge",
                format!(
                    "{{Aggregate{{{class}(tenant:{}){{meta{{count}}}}}}}}",
                    gql_string(tenant)
                ),
            )
            .await?;
        if let Some(errors) = answer.errors.filter(|e| !e.is_empty()) {
            if errors.iter().any(|e| tenant_missing(&e.message)) {
                return Ok(None);
            }
            return Err(graphql_error("purge", &errors));
        }
        answer
            .data
            .as_ref()
            .and_then(|d| d.pointer(&format!("/Aggregate/{class}/0/meta/count")))
            .and_then(Value::as_u64)
            .map(Some)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Backend,
                    SCHEME,
                    "purge",
                    "the Aggregate answer has no meta.count",
                )
            })
    }

    async fn delete_tenants(&self, class: &str, names: &[String]) -> Result<()> {
        for chunk in names.chunks(TENANT_BATCH) {
            self.api
                .call::<Value>(
                    "purge",
                    Method::DELETE,
                    &format!("/schema/{class}/tenants"),
                    Some(chunk),
                )
                .await?;
        }
        Ok(())
    }
}

fn graphql_error(op: &'static str, errors: &[Message]) -> Error {
    let messages: Vec<&str> = errors.iter().map(|e| e.message.as_str()).collect();
    Error::new(
        ErrorKind::Backend,
        SCHEME,
        op,
        format!("GraphQL: {}", messages.join("; ")),
    )
}

/// The properties of one record: its id, its metadata as JSON, and each filterable scalar field.
fn properties(
    record: &VectorRecord,
    wanted: &mut HashMap<String, PropType>,
) -> Result<Map<String, Value>> {
    let mut props = Map::new();
    for reserved in [ID_PROP, META_PROP] {
        if record.metadata.contains_key(reserved) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                SCHEME,
                "upsert",
                format!("metadata field `{reserved}` is reserved"),
            ));
        }
    }
    for (field, value) in &record.metadata {
        let Some(kind) = PropType::of_value(value) else {
            continue;
        };
        if !filterable_name(field) {
            continue;
        }
        match wanted.get(field) {
            Some(&other) if other != kind => {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    SCHEME,
                    "upsert",
                    format!(
                        "metadata field `{field}` holds a {} and a {} in one batch; a Weaviate property has one type",
                        other.name(),
                        kind.name()
                    ),
                ));
            }
            _ => {
                wanted.insert(field.clone(), kind);
            }
        }
        props.insert(field.clone(), value.clone());
    }
    props.insert(ID_PROP.into(), record.id.clone().into());
    props.insert(
        META_PROP.into(),
        Value::Object(record.metadata.clone()).to_string().into(),
    );
    Ok(props)
}

impl VectorStore for WeaviateVectorStore {
    fn info(&self) -> &BackendInfo {
        &self.info
    }

    async fn ensure_collection(&self, collection: &str, spec: CollectionSpec) -> Result<()> {
        let class = class_name(collection)?;
        if spec.dims == 0 || spec.dims > 65_535 {
            return Err(config_error(
                "ensure_collection",
                "dimensions must be 1-65535".into(),
            ));
        }
        if let Some(existing) = self.fetch(collection).await? {
            return existing.spec.check_same(SCHEME, collection, spec);
        }
        let body = json!({
            "class": class,
            "description": format!("resk vector collection {collection} (dims={})", spec.dims),
            "vectorizer": "none",
            "vectorIndexType": "hnsw",
            "vectorIndexConfig": {"distance": distance_name(spec.metric)},
            "multiTenancyConfig": {
                "enabled": true,
                "autoTenantCreation": true,
                "autoTenantActivation": true,
            },
            "properties": [
                {
                    "name": ID_PROP, "dataType": ["text"], "tokenization": "field",
                    "indexFilterable": true, "indexSearchable": false,
                },
                {
                    "name": META_PROP, "dataType": ["text"],
                    "indexFilterable": false, "indexSearchable": false,
                },
            ],
        });
        match self
            .api
            .call::<Value>("ensure_collection", Method::POST, "/schema", Some(&body))
            .await
        {
            Ok(_) => {}
            // 422: another instance created it first; its definition is checked below.
            Err(e) if e.kind() == ErrorKind::InvalidInput => {}
            Err(e) => return Err(e),
        }
        self.fetch(collection)
            .await?
            .ok_or_else(|| resk_core::collection_missing(SCHEME, "ensure_collection", collection))?
            .spec
            .check_same(SCHEME, collection, spec)
    }

    async fn upsert(&self, collection: &str, records: Vec<VectorRecord>) -> Result<()> {
        let info = self.require(collection, "upsert").await?;
        info.spec.check_records(SCHEME, &records)?;
        let mut wanted = HashMap::new();
        let objects = records
            .iter()
            .map(|r| {
                Ok(json!({
                    "class": info.class,
                    "id": resk_core::record_uuid(&r.tenant, &r.id),
                    "vector": r.vector,
                    "properties": properties(r, &mut wanted)?,
                    "tenant": tenant_name(&r.tenant),
                }))
            })
            .collect::<Result<Vec<_>>>()?;
        self.ensure_properties(collection, info, &wanted).await?;
        for chunk in objects.chunks(UPSERT_BATCH) {
            let answer: Vec<BatchItem> = self
                .api
                .call(
                    "upsert",
                    Method::POST,
                    "/batch/objects",
                    Some(&json!({"objects": chunk})),
                )
                .await?;
            let failed: Vec<String> = answer
                .into_iter()
                .filter_map(|item| item.result?.errors)
                .flat_map(|e| e.error.into_iter().map(|m| m.message))
                .collect();
            if let Some(first) = failed.first() {
                return Err(Error::new(
                    ErrorKind::Backend,
                    SCHEME,
                    "upsert",
                    format!("{} object(s) refused; first: {first}", failed.len()),
                ));
            }
        }
        Ok(())
    }

    async fn query(&self, collection: &str, query: &VectorQuery) -> Result<Vec<Scored>> {
        let Some(mut info) = self.lookup(collection).await? else {
            return Ok(Vec::new());
        };
        info.spec.check_dims(SCHEME, "query", query.vector.len())?;
        if query.vector.iter().any(|x| !x.is_finite()) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                SCHEME,
                "query",
                "the query vector holds NaN or infinity",
            ));
        }
        let clause = match &query.filter {
            None => Where::All,
            Some(filter) => {
                let mut fields = Vec::new();
                filter_fields(filter, &mut fields);
                if fields
                    .iter()
                    .any(|f| filterable_name(f) && !info.props.contains_key(*f))
                {
                    // Another instance may have added the property since we last looked.
                    if let Some(fresh) = self.fetch(collection).await? {
                        info = fresh;
                    }
                }
                where_clause(filter, &info.props)?
            }
        };
        let where_arg = match clause {
            Where::Nothing => return Ok(Vec::new()),
            Where::All => String::new(),
            Where::Clause(c) => format!(",where:{c}"),
        };
        if query.k == 0 {
            return Ok(Vec::new());
        }
        let mut vector = String::from("[");
        for (i, x) in query.vector.iter().enumerate() {
            if i > 0 {
                vector.push(',');
            }
            let _ = write!(vector, "{x}");
        }
        vector.push(']');
        let class = &info.class;
        let gql = format!(
            "{{Get{{{class}(nearVector:{{vector:{vector}}},limit:{},tenant:{}{where_arg}){{{ID_PROP} {META_PROP} _additional{{distance}}}}}}}}",
            query.k,
            gql_string(&tenant_name(&query.tenant)),
        );
        let answer = self.graphql("query", gql).await?;
        if let Some(errors) = answer.errors.filter(|e| !e.is_empty()) {
            if errors.iter().any(|e| tenant_missing(&e.message)) {
                return Ok(Vec::new());
            }
            return Err(graphql_error("query", &errors));
        }
        let rows = answer
            .data
            .as_ref()
            .and_then(|d| d.pointer(&format!("/Get/{class}")))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let id = row.get(ID_PROP).and_then(Value::as_str);
            let distance = row.pointer("/_additional/distance").and_then(Value::as_f64);
            let (Some(id), Some(distance)) = (id, distance) else {
                return Err(Error::new(
                    ErrorKind::Backend,
                    SCHEME,
                    "query",
                    "a result lacks resk_id or _additional.distance",
                ));
            };
            let metadata = row
                .get(META_PROP)
                .and_then(Value::as_str)
                .and_then(|s| serde_json::from_str::<Map<String, Value>>(s).ok())
                .unwrap_or_default();
            out.push(Scored {
                id: id.to_owned(),
                similarity: similarity(info.spec.metric, distance as f32),
                metadata,
            });
        }
        Ok(query.finish(out))
    }

    async fn delete(&self, collection: &str, tenant: &TenantId, ids: &[RecordId]) -> Result<u64> {
        let info = self.require(collection, "delete").await?;
        let unique: HashSet<String> = ids
            .iter()
            .map(|id| resk_core::record_uuid(tenant, id))
            .collect();
        let unique: Vec<String> = unique.into_iter().collect();
        let path = format!("/batch/objects?tenant={}", tenant_name(tenant));
        let mut removed = 0;
        for chunk in unique.chunks(DELETE_BATCH) {
            let body = json!({
                "match": {
                    "class": info.class,
                    "where": {"path": ["id"], "operator": "ContainsAny", "valueTextArray": chunk},
                },
                "output": "minimal",
                "dryRun": false,
            });
            match self
                .api
                .call::<BatchDeleteAnswer>("delete", Method::DELETE, &path, Some(&body))
                .await
            {
                Ok(a) if a.results.failed > 0 => {
                    return Err(Error::new(
                        ErrorKind::Backend,
                        SCHEME,
                        "delete",
                        format!("{} object(s) could not be deleted", a.results.failed),
                    ));
                }
                Ok(a) => removed += a.results.successful,
                Err(e) if tenant_missing(e.message()) => return Ok(0),
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }

    async fn purge(&self, collection: &str, scope: &VectorPurge) -> Result<u64> {
        let info = self.require(collection, "purge").await?;
        let class = &info.class;
        let names = match scope {
            VectorPurge::Tenant(t) => vec![tenant_name(t)],
            VectorPurge::All => self
                .api
                .call::<Vec<Tenant>>(
                    "purge",
                    Method::GET,
                    &format!("/schema/{class}/tenants"),
                    None::<&()>,
                )
                .await?
                .into_iter()
                .map(|t| t.name)
                .collect(),
        };
        let mut removed = 0;
        let mut present = Vec::new();
        for name in names {
            if let Some(n) = self.count(class, &name).await? {
                removed += n;
                present.push(name);
            }
        }
        // Deleting a tenant drops its shard: every object of it, in one step.
        self.delete_tenants(class, &present).await?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn class_names_are_injective_graphql_names() {
        assert_eq!(
            class_name("resk-all-MiniLM-L6-v2").unwrap(),
            "Resk_resk_hall_hMiniLM_hL6_hv2"
        );
        assert_eq!(class_name("resk_t_ab").unwrap(), "Resk_resk__t__ab");
        assert_ne!(class_name("a-b").unwrap(), class_name("a_hb").unwrap());
        assert_ne!(class_name("a.b").unwrap(), class_name("a_b").unwrap());
        assert!(class_name("").is_err());
        assert!(class_name("a b").is_err());
        assert!(class_name("a/b").is_err());
    }

    #[test]
    fn tenant_names_fit_weaviate_rules() {
        let ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        for t in [
            "acme",
            "a.b",
            "a_b",
            "a-b",
            &"x".repeat(64),
            &"._".repeat(32),
        ] {
            let name = tenant_name(&TenantId::new(t).unwrap());
            assert!(ok(&name), "{t} -> {name}");
        }
        let name = |s: &str| tenant_name(&TenantId::new(s).unwrap());
        assert_eq!(name("acme"), "acme");
        assert_eq!(name("a.b"), "a_db");
        assert_ne!(name("a.b"), name("a_db"));
        assert_ne!(name("a_b"), name("a__b"));
        assert!(name(&"._".repeat(32)).starts_with("_h"));
        assert_ne!(name(&"._".repeat(32)), name(&"_.".repeat(32)));
    }

    #[test]
    fn distances_convert_to_the_metric_scale() {
        let (a, b) = ([1.0f32, 0.0], [0.6f32, 0.8]);
        for (metric, distance) in [
            (Metric::Cosine, 0.4),
            (Metric::Dot, -0.6),
            (Metric::L2, 0.4f32.powi(2) + 0.64),
        ] {
            assert!((similarity(metric, distance) - metric.similarity(&a, &b)).abs() < 1e-6);
        }
    }

    #[test]
    fn filters_translate_to_where_clauses() {
        let props: HashMap<String, PropType> = [
            ("lang".to_owned(), PropType::Text),
            ("n".to_owned(), PropType::Number),
        ]
        .into();
        let f = Filter::And(vec![
            Filter::Eq("lang".into(), json!("en \"x\"")),
            Filter::In("n".into(), vec![json!(3), json!(5)]),
        ]);
        assert_eq!(
            where_clause(&f, &props).unwrap(),
            Where::Clause(
                "{operator:And,operands:[{path:[\"lang\"],operator:Equal,valueText:\"en \\\"x\\\"\"},\
                 {operator:Or,operands:[{path:[\"n\"],operator:Equal,valueNumber:3},\
                 {path:[\"n\"],operator:Equal,valueNumber:5}]}]}"
                    .into()
            )
        );
        // Unknown property or another type: no record matches.
        assert_eq!(
            where_clause(&Filter::Eq("other".into(), json!(1)), &props).unwrap(),
            Where::Nothing
        );
        assert_eq!(
            where_clause(&Filter::Eq("n".into(), json!("3")), &props).unwrap(),
            Where::Nothing
        );
        assert_eq!(
            where_clause(&Filter::And(vec![]), &props).unwrap(),
            Where::All
        );
        assert_eq!(
            where_clause(&Filter::Or(vec![]), &props).unwrap(),
            Where::Nothing
        );
        let err = where_clause(&Filter::Eq("my-key".into(), json!("x")), &props).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported);
        let err = where_clause(&Filter::Eq("lang".into(), json!(null)), &props).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported);
    }
}
