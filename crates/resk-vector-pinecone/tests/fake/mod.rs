//! A local fake of Pinecone's REST API, version `2025-04` (<https://docs.pinecone.io/reference/api/2025-04>):
//! control plane `POST /indexes`, `GET /indexes/{name}`; data plane `POST /vectors/upsert`,
//! `POST /query`, `GET /vectors/fetch`, `POST /vectors/delete`, `POST /describe_index_stats`.
//!
//! Every request must carry `Api-Key` and `X-Pinecone-Api-Version: 2025-04`; bodies are parsed into the
//! documented shapes with unknown fields refused; errors use the documented body
//! `{"error": {"code", "message"}, "status"}`. Scores follow the documented metrics: cosine similarity,
//! dot product, squared Euclidean distance. One process serves the control plane and every index's data
//! plane: the `host` it reports is `127.0.0.1:<port>/index/<name>` (a real host has no path; the
//! adapter takes the host as a base URL either way).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use axum::{
    Json, Router,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// A namespace: id → (values, metadata).
type Namespace = BTreeMap<String, (Vec<f32>, Map<String, Value>)>;

struct Index {
    dimension: usize,
    metric: String,
    namespaces: BTreeMap<String, Namespace>,
    /// Describes answered `ready: false` before the index turns ready.
    not_ready_for: u32,
}

struct Inner {
    key: String,
    port: u16,
    indexes: HashMap<String, Index>,
    requests: Vec<(String, String, Value)>,
    not_ready_for: u32,
}

type Shared = Arc<Mutex<Inner>>;

/// A running fake.
#[derive(Clone)]
pub(crate) struct FakePinecone {
    state: Shared,
    pub(crate) url: String,
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message}, "status": status.as_u16()})),
    )
        .into_response()
}

fn check_headers(inner: &Inner, headers: &HeaderMap) -> Option<Response> {
    if headers
        .get("api-key")
        .is_none_or(|v| v != inner.key.as_str())
    {
        return Some(error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Invalid API Key",
        ));
    }
    if headers
        .get("x-pinecone-api-version")
        .is_none_or(|v| v != "2025-04")
    {
        return Some(error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "missing or unknown X-Pinecone-Api-Version",
        ));
    }
    None
}

macro_rules! parse {
    ($body:expr, $t:ty) => {
        match serde_json::from_value::<$t>($body) {
            Ok(v) => v,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_ARGUMENT",
                    &format!("invalid request body: {e}"),
                );
            }
        }
    };
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateIndex {
    name: String,
    dimension: usize,
    metric: String,
    spec: Value,
    #[serde(default)]
    deletion_protection: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Upsert {
    vectors: Vec<VectorIn>,
    #[serde(default)]
    namespace: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VectorIn {
    id: String,
    values: Vec<f32>,
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct QueryIn {
    #[serde(default)]
    namespace: String,
    vector: Vec<f32>,
    top_k: usize,
    #[serde(default)]
    filter: Option<Value>,
    #[serde(default)]
    include_metadata: bool,
    #[serde(default)]
    include_values: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DeleteIn {
    #[serde(default)]
    ids: Option<Vec<String>>,
    #[serde(default)]
    delete_all: Option<bool>,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    filter: Option<Value>,
}

fn model(name: &str, i: &Index, port: u16, ready: bool) -> Value {
    json!({
        "name": name,
        "dimension": i.dimension,
        "metric": i.metric,
        "host": format!("127.0.0.1:{port}/index/{name}"),
        "spec": {"serverless": {"cloud": "aws", "region": "us-east-1"}},
        "status": {"ready": ready, "state": if ready { "Ready" } else { "Initializing" }},
        "vector_type": "dense",
        "deletion_protection": "disabled",
        "tags": null
    })
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 45
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

async fn create_index(
    State(s): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut st = s.lock().unwrap();
    st.requests
        .push(("POST".into(), "/indexes".into(), body.clone()));
    if let Some(r) = check_headers(&st, &headers) {
        return r;
    }
    let req = parse!(body, CreateIndex);
    let _ = req.deletion_protection;
    if !valid_name(&req.name) {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "Name must consist of lower case alphanumeric characters or '-'",
        );
    }
    if !matches!(req.metric.as_str(), "cosine" | "euclidean" | "dotproduct") {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "unknown metric",
        );
    }
    if req.spec.pointer("/serverless/cloud").is_none()
        || req.spec.pointer("/serverless/region").is_none()
    {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "spec.serverless needs cloud and region",
        );
    }
    if st.indexes.contains_key(&req.name) {
        return error(
            StatusCode::CONFLICT,
            "ALREADY_EXISTS",
            "Resource already exists",
        );
    }
    let index = Index {
        dimension: req.dimension,
        metric: req.metric,
        namespaces: BTreeMap::new(),
        not_ready_for: st.not_ready_for,
    };
    let body = model(&req.name, &index, st.port, index.not_ready_for == 0);
    st.indexes.insert(req.name, index);
    (StatusCode::CREATED, Json(body)).into_response()
}

async fn describe_index(
    State(s): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut st = s.lock().unwrap();
    st.requests
        .push(("GET".into(), format!("/indexes/{name}"), Value::Null));
    if let Some(r) = check_headers(&st, &headers) {
        return r;
    }
    let port = st.port;
    let Some(i) = st.indexes.get_mut(&name) else {
        return error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!("Resource {name} not found"),
        );
    };
    let ready = i.not_ready_for == 0;
    i.not_ready_for = i.not_ready_for.saturating_sub(1);
    Json(model(&name, i, port, ready)).into_response()
}

fn matches(filter: &Value, meta: &Map<String, Value>) -> Result<bool, String> {
    let obj = filter.as_object().ok_or("filter must be an object")?;
    for (k, v) in obj {
        let ok = match k.as_str() {
            "$and" => {
                let mut all = true;
                for f in v.as_array().ok_or("$and takes a list")? {
                    all &= matches(f, meta)?;
                }
                all
            }
            "$or" => {
                let mut any = false;
                for f in v.as_array().ok_or("$or takes a list")? {
                    any |= matches(f, meta)?;
                }
                any
            }
            field => {
                let op = v.as_object().ok_or("field conditions take an operator")?;
                let have = meta.get(field);
                let mut ok = true;
                for (o, want) in op {
                    ok &= match o.as_str() {
                        "$eq" => have == Some(want),
                        "$in" => {
                            have.is_some_and(|h| want.as_array().is_some_and(|a| a.contains(h)))
                        }
                        other => return Err(format!("unsupported operator {other}")),
                    };
                }
                ok
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

fn score(metric: &str, a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    match metric {
        "cosine" => {
            let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
            let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
            if na == 0.0 || nb == 0.0 {
                0.0
            } else {
                dot / (na * nb)
            }
        }
        "euclidean" => a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum(),
        _ => dot,
    }
}

macro_rules! index {
    ($st:expr, $headers:expr, $name:expr) => {{
        if let Some(r) = check_headers(&$st, &$headers) {
            return r;
        }
        match $st.indexes.get_mut(&$name) {
            Some(i) => i,
            None => return error(StatusCode::NOT_FOUND, "NOT_FOUND", "index not found"),
        }
    }};
}

async fn upsert(
    State(s): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut st = s.lock().unwrap();
    st.requests.push((
        "POST".into(),
        format!("/index/{name}/vectors/upsert"),
        body.clone(),
    ));
    let i = index!(st, headers, name);
    let req = parse!(body, Upsert);
    if req.vectors.len() > 1000 {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "at most 1000 vectors per upsert",
        );
    }
    for v in &req.vectors {
        if v.values.len() != i.dimension {
            return error(
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                &format!(
                    "Vector dimension {} does not match the dimension of the index {}",
                    v.values.len(),
                    i.dimension
                ),
            );
        }
    }
    let n = req.vectors.len();
    let ns = i.namespaces.entry(req.namespace).or_default();
    for v in req.vectors {
        ns.insert(v.id, (v.values, v.metadata.unwrap_or_default()));
    }
    Json(json!({"upsertedCount": n})).into_response()
}

async fn query(
    State(s): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut st = s.lock().unwrap();
    st.requests
        .push(("POST".into(), format!("/index/{name}/query"), body.clone()));
    let i = index!(st, headers, name);
    let req = parse!(body, QueryIn);
    if req.vector.len() != i.dimension {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "Query vector dimension does not match the index",
        );
    }
    if req.top_k == 0 || req.top_k > 10_000 {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "topK must be 1-10000",
        );
    }
    let mut hits = Vec::new();
    if let Some(ns) = i.namespaces.get(&req.namespace) {
        for (id, (values, meta)) in ns {
            if let Some(f) = &req.filter {
                match matches(f, meta) {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(e) => return error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", &e),
                }
            }
            hits.push((
                id.clone(),
                score(&i.metric, &req.vector, values),
                values.clone(),
                meta.clone(),
            ));
        }
    }
    if i.metric == "euclidean" {
        hits.sort_by(|a, b| a.1.total_cmp(&b.1));
    } else {
        hits.sort_by(|a, b| b.1.total_cmp(&a.1));
    }
    hits.truncate(req.top_k);
    let matches: Vec<Value> = hits
        .into_iter()
        .map(|(id, score, values, meta)| {
            let mut m = json!({"id": id, "score": score, "values": if req.include_values { json!(values) } else { json!([]) }});
            if req.include_metadata {
                m["metadata"] = Value::Object(meta);
            }
            m
        })
        .collect();
    Json(json!({"matches": matches, "namespace": req.namespace, "usage": {"readUnits": 1}}))
        .into_response()
}

async fn fetch(
    State(s): State<Shared>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let mut st = s.lock().unwrap();
    let q = q.unwrap_or_default();
    st.requests.push((
        "GET".into(),
        format!("/index/{name}/vectors/fetch?{q}"),
        Value::Null,
    ));
    let i = index!(st, headers, name);
    let mut ids = Vec::new();
    let mut namespace = String::new();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = decode(v);
        match k {
            "ids" => ids.push(v),
            "namespace" => namespace = v,
            other => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_ARGUMENT",
                    &format!("unknown parameter {other}"),
                );
            }
        }
    }
    let mut vectors = Map::new();
    if let Some(ns) = i.namespaces.get(&namespace) {
        for id in ids {
            if let Some((values, meta)) = ns.get(&id) {
                vectors.insert(
                    id.clone(),
                    json!({"id": id, "values": values, "metadata": meta}),
                );
            }
        }
    }
    Json(json!({"vectors": vectors, "namespace": namespace, "usage": {"readUnits": 1}}))
        .into_response()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

async fn delete(
    State(s): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut st = s.lock().unwrap();
    st.requests.push((
        "POST".into(),
        format!("/index/{name}/vectors/delete"),
        body.clone(),
    ));
    let i = index!(st, headers, name);
    let req = parse!(body, DeleteIn);
    match (req.ids, req.delete_all, req.filter) {
        (Some(ids), None | Some(false), None) => {
            if let Some(ns) = i.namespaces.get_mut(&req.namespace) {
                for id in ids {
                    ns.remove(&id);
                }
            }
        }
        (None, Some(true), None) => {
            if i.namespaces.remove(&req.namespace).is_none() {
                return error(StatusCode::NOT_FOUND, "NOT_FOUND", "Namespace not found");
            }
        }
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                "give ids or deleteAll",
            );
        }
    }
    Json(json!({})).into_response()
}

async fn stats(
    State(s): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut st = s.lock().unwrap();
    st.requests.push((
        "POST".into(),
        format!("/index/{name}/describe_index_stats"),
        body.clone(),
    ));
    let i = index!(st, headers, name);
    let mut namespaces = Map::new();
    let mut total = 0;
    for (ns, v) in &i.namespaces {
        namespaces.insert(ns.clone(), json!({"vectorCount": v.len()}));
        total += v.len();
    }
    Json(json!({
        "namespaces": namespaces,
        "dimension": i.dimension,
        "indexFullness": 0.0,
        "totalVectorCount": total,
        "metric": i.metric,
        "vectorType": "dense"
    }))
    .into_response()
}

impl FakePinecone {
    /// Start on a free loopback port for API key `key`; new indexes answer `ready: false` to their
    /// first `not_ready_for` describes.
    pub(crate) async fn start(key: &str, not_ready_for: u32) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state: Shared = Arc::new(Mutex::new(Inner {
            key: key.to_owned(),
            port,
            indexes: HashMap::new(),
            requests: Vec::new(),
            not_ready_for,
        }));
        let app = Router::new()
            .route("/indexes", post(create_index))
            .route("/indexes/{name}", get(describe_index))
            .route("/index/{name}/vectors/upsert", post(upsert))
            .route("/index/{name}/query", post(query))
            .route("/index/{name}/vectors/fetch", get(fetch))
            .route("/index/{name}/vectors/delete", post(delete))
            .route("/index/{name}/describe_index_stats", post(stats))
            .with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            state,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Every request so far: method, path (with query), JSON body.
    pub(crate) fn requests(&self) -> Vec<(String, String, Value)> {
        self.state.lock().unwrap().requests.clone()
    }
}
