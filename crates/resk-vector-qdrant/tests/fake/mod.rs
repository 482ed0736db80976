//! A local fake of Qdrant's REST API, as documented in the API reference for v1.17.x
//! (<https://api.qdrant.tech/v-1-17-x/api-reference>): collections (`PUT`/`GET /collections/{name}`),
//! payload index (`PUT /collections/{name}/index`), points upsert (`PUT …/points`), retrieve
//! (`POST …/points`), query (`POST …/points/query`), count (`POST …/points/count`) and delete
//! (`POST …/points/delete`).
//!
//! Requests are parsed into the documented shapes with unknown fields refused, so a request the real
//! server would reject fails here too; answers use the documented envelope `{"result", "status",
//! "time"}` and the documented error body `{"status": {"error": "…"}, "time"}`. The search is exact
//! (brute force) with Qdrant's scoring: cosine on normalised vectors, dot, Euclidean distance.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

#[derive(Clone)]
struct Point {
    vector: Vec<f32>,
    payload: Map<String, Value>,
}

struct Collection {
    size: usize,
    distance: String,
    points: HashMap<String, Point>,
    indexes: Vec<Value>,
}

#[derive(Default)]
struct State0 {
    collections: HashMap<String, Collection>,
    api_key: Option<String>,
    requests: Vec<(String, String, Value)>,
}

type Shared = Arc<Mutex<State0>>;

/// A running fake.
#[derive(Clone)]
pub(crate) struct FakeQdrant {
    state: Shared,
    pub(crate) url: String,
}

fn ok(result: Value) -> Response {
    Json(json!({"result": result, "status": "ok", "time": 0.0001})).into_response()
}

fn err(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"status": {"error": message}, "time": 0.0001})),
    )
        .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateCollection {
    vectors: VectorParams,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VectorParams {
    size: usize,
    distance: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateIndex {
    field_name: String,
    field_schema: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Upsert {
    points: Vec<PointStruct>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PointStruct {
    id: Value,
    vector: Vec<f32>,
    #[serde(default)]
    payload: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryRequest {
    query: Vec<f32>,
    limit: usize,
    #[serde(default)]
    filter: Option<Value>,
    #[serde(default)]
    with_payload: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CountRequest {
    #[serde(default)]
    filter: Option<Value>,
    #[serde(default)]
    exact: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RetrieveRequest {
    ids: Vec<Value>,
    #[serde(default)]
    with_payload: Option<bool>,
    #[serde(default)]
    with_vector: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteRequest {
    #[serde(default)]
    points: Option<Vec<Value>>,
    #[serde(default)]
    filter: Option<Value>,
}

/// A point id as the API accepts it: an unsigned integer or a UUID string.
fn point_key(id: &Value) -> Option<String> {
    match id {
        Value::Number(n) if n.is_u64() => Some(n.to_string()),
        Value::String(s) if is_uuid(s) => Some(s.to_ascii_lowercase()),
        _ => None,
    }
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

fn id_value(key: &str) -> Value {
    key.parse::<u64>()
        .map(Value::from)
        .unwrap_or_else(|_| Value::String(key.to_owned()))
}

/// Qdrant's filter semantics for the clauses the API reference documents: `must`, `should` (at
/// least one, when present), `must_not`; field conditions with `match.value` / `match.any`;
/// `is_empty`; nested filters.
fn matches(filter: &Value, payload: &Map<String, Value>) -> Result<bool, String> {
    let obj = filter.as_object().ok_or("filter must be an object")?;
    for key in obj.keys() {
        if !matches!(key.as_str(), "must" | "should" | "must_not") {
            return Err(format!("unknown filter clause `{key}`"));
        }
    }
    let list = |k: &str| -> Result<Vec<Value>, String> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(vec![]),
            Some(Value::Array(a)) => Ok(a.clone()),
            Some(one @ Value::Object(_)) => Ok(vec![one.clone()]),
            Some(_) => Err(format!("`{k}` must be a list")),
        }
    };
    for c in list("must")? {
        if !cond(&c, payload)? {
            return Ok(false);
        }
    }
    let should = list("should")?;
    if !should.is_empty() {
        let mut any = false;
        for c in should {
            any |= cond(&c, payload)?;
        }
        if !any {
            return Ok(false);
        }
    }
    for c in list("must_not")? {
        if cond(&c, payload)? {
            return Ok(false);
        }
    }
    Ok(true)
}

fn cond(c: &Value, payload: &Map<String, Value>) -> Result<bool, String> {
    let obj = c.as_object().ok_or("condition must be an object")?;
    if obj.contains_key("must") || obj.contains_key("should") || obj.contains_key("must_not") {
        return matches(c, payload);
    }
    if let Some(e) = obj.get("is_empty") {
        let key = e["key"].as_str().ok_or("is_empty needs key")?;
        return Ok(match payload.get(key) {
            None | Some(Value::Null) => true,
            Some(Value::Array(a)) => a.is_empty(),
            Some(_) => false,
        });
    }
    let key = obj
        .get("key")
        .and_then(Value::as_str)
        .ok_or("field condition needs `key`")?;
    let m = obj
        .get("match")
        .and_then(Value::as_object)
        .ok_or("only `match` conditions are faked")?;
    let value = payload.get(key);
    if let Some(v) = m.get("value") {
        if v.is_f64() {
            return Err("match.value takes keyword, integer or bool".into());
        }
        return Ok(value == Some(v));
    }
    if let Some(any) = m.get("any").and_then(Value::as_array) {
        return Ok(value.is_some_and(|x| any.contains(x)));
    }
    Err("unknown match".into())
}

fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

fn score(distance: &str, a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    match distance {
        "Euclid" => a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y) * (x - y))
            .sum::<f32>()
            .sqrt(),
        _ => dot,
    }
}

fn authorised(state: &State0, headers: &HeaderMap) -> bool {
    match &state.api_key {
        None => true,
        Some(k) => headers.get("api-key").is_some_and(|v| v == k.as_str()),
    }
}

macro_rules! parse {
    ($body:expr, $t:ty) => {
        match serde_json::from_value::<$t>($body) {
            Ok(v) => v,
            Err(e) => {
                return err(
                    StatusCode::BAD_REQUEST,
                    &format!("Format error in JSON body: {e}"),
                );
            }
        }
    };
}

macro_rules! gate {
    ($st:expr, $headers:expr, $name:expr) => {{
        if !authorised(&$st, &$headers) {
            return (
                StatusCode::UNAUTHORIZED,
                "Must provide an API key or an Authorization bearer token",
            )
                .into_response();
        }
        match $st.collections.get_mut(&$name) {
            Some(c) => c,
            None => {
                return err(
                    StatusCode::NOT_FOUND,
                    &format!("Not found: Collection `{}` doesn't exist!", $name),
                );
            }
        }
    }};
}

async fn put_collection(
    State(s): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut st = s.lock().unwrap();
    st.requests
        .push(("PUT".into(), format!("/collections/{name}"), body.clone()));
    if !authorised(&st, &headers) {
        return (StatusCode::UNAUTHORIZED, "Must provide an API key").into_response();
    }
    let req = parse!(body, CreateCollection);
    if !matches!(
        req.vectors.distance.as_str(),
        "Cosine" | "Euclid" | "Dot" | "Manhattan"
    ) {
        return err(
            StatusCode::BAD_REQUEST,
            "Format error in JSON body: unknown distance",
        );
    }
    if st.collections.contains_key(&name) {
        return err(
            StatusCode::CONFLICT,
            &format!("Wrong input: Collection `{name}` already exists!"),
        );
    }
    st.collections.insert(
        name,
        Collection {
            size: req.vectors.size,
            distance: req.vectors.distance,
            points: HashMap::new(),
            indexes: Vec::new(),
        },
    );
    ok(json!(true))
}

async fn get_collection(
    State(s): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut st = s.lock().unwrap();
    st.requests
        .push(("GET".into(), format!("/collections/{name}"), Value::Null));
    let c = gate!(st, headers, name);
    ok(json!({
        "status": "green",
        "optimizer_status": "ok",
        "indexed_vectors_count": 0,
        "points_count": c.points.len(),
        "segments_count": 1,
        "config": {
            "params": {
                "vectors": {"size": c.size, "distance": c.distance},
                "shard_number": 1,
                "replication_factor": 1,
                "write_consistency_factor": 1,
                "on_disk_payload": true
            },
            "hnsw_config": {"m": 16, "ef_construct": 100, "full_scan_threshold": 10000},
            "optimizer_config": {},
            "wal_config": {}
        },
        "payload_schema": {}
    }))
}

async fn put_index(
    State(s): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut st = s.lock().unwrap();
    st.requests.push((
        "PUT".into(),
        format!("/collections/{name}/index"),
        body.clone(),
    ));
    let c = gate!(st, headers, name);
    let req = parse!(body, CreateIndex);
    c.indexes
        .push(json!({"field": req.field_name, "schema": req.field_schema}));
    ok(json!({"operation_id": 1, "status": "completed"}))
}

async fn put_points(
    State(s): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut st = s.lock().unwrap();
    st.requests.push((
        "PUT".into(),
        format!("/collections/{name}/points"),
        body.clone(),
    ));
    let c = gate!(st, headers, name);
    let req = parse!(body, Upsert);
    // Validate the whole batch first: Qdrant applies a request entirely or not at all.
    let mut staged = Vec::new();
    for p in req.points {
        let Some(key) = point_key(&p.id) else {
            return err(
                StatusCode::BAD_REQUEST,
                "Format error in JSON body: value is not a valid point ID",
            );
        };
        if p.vector.len() != c.size {
            return err(
                StatusCode::BAD_REQUEST,
                &format!(
                    "Wrong input: Vector dimension error: expected dim: {}, got {}",
                    c.size,
                    p.vector.len()
                ),
            );
        }
        let mut vector = p.vector;
        if c.distance == "Cosine" {
            normalise(&mut vector);
        }
        staged.push((
            key,
            Point {
                vector,
                payload: p.payload.unwrap_or_default(),
            },
        ));
    }
    c.points.extend(staged);
    ok(json!({"operation_id": 2, "status": "completed"}))
}

async fn retrieve(
    State(s): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut st = s.lock().unwrap();
    st.requests.push((
        "POST".into(),
        format!("/collections/{name}/points"),
        body.clone(),
    ));
    let c = gate!(st, headers, name);
    let req = parse!(body, RetrieveRequest);
    let _ = (req.with_payload, req.with_vector);
    let found: Vec<Value> = req
        .ids
        .iter()
        .filter_map(point_key)
        .filter(|k| c.points.contains_key(k))
        .map(|k| json!({"id": id_value(&k), "payload": null, "vector": null}))
        .collect();
    ok(Value::Array(found))
}

async fn query(
    State(s): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut st = s.lock().unwrap();
    st.requests.push((
        "POST".into(),
        format!("/collections/{name}/points/query"),
        body.clone(),
    ));
    let c = gate!(st, headers, name);
    let req = parse!(body, QueryRequest);
    if req.query.len() != c.size {
        return err(
            StatusCode::BAD_REQUEST,
            &format!(
                "Wrong input: Vector dimension error: expected dim: {}, got {}",
                c.size,
                req.query.len()
            ),
        );
    }
    let mut q = req.query;
    if c.distance == "Cosine" {
        normalise(&mut q);
    }
    let mut hits = Vec::new();
    for (key, p) in &c.points {
        if let Some(f) = &req.filter {
            match matches(f, &p.payload) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => return err(StatusCode::BAD_REQUEST, &format!("Format error: {e}")),
            }
        }
        hits.push((
            key.clone(),
            score(&c.distance, &q, &p.vector),
            p.payload.clone(),
        ));
    }
    if c.distance == "Euclid" {
        hits.sort_by(|a, b| a.1.total_cmp(&b.1));
    } else {
        hits.sort_by(|a, b| b.1.total_cmp(&a.1));
    }
    hits.truncate(req.limit);
    let with_payload = req.with_payload.unwrap_or(false);
    let points: Vec<Value> = hits
        .into_iter()
        .map(|(k, score, payload)| {
            json!({
                "id": id_value(&k),
                "version": 2,
                "score": score,
                "payload": if with_payload { Value::Object(payload) } else { Value::Null },
            })
        })
        .collect();
    ok(json!({"points": points}))
}

async fn count(
    State(s): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut st = s.lock().unwrap();
    st.requests.push((
        "POST".into(),
        format!("/collections/{name}/points/count"),
        body.clone(),
    ));
    let c = gate!(st, headers, name);
    let req = parse!(body, CountRequest);
    let _ = req.exact;
    let mut n = 0;
    for p in c.points.values() {
        let hit = match &req.filter {
            None => true,
            Some(f) => match matches(f, &p.payload) {
                Ok(h) => h,
                Err(e) => return err(StatusCode::BAD_REQUEST, &format!("Format error: {e}")),
            },
        };
        n += u64::from(hit);
    }
    ok(json!({"count": n}))
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
        format!("/collections/{name}/points/delete"),
        body.clone(),
    ));
    let c = gate!(st, headers, name);
    let req = parse!(body, DeleteRequest);
    match (req.points, req.filter) {
        (Some(ids), None) => {
            for id in ids {
                if let Some(k) = point_key(&id) {
                    c.points.remove(&k);
                }
            }
        }
        (None, Some(f)) => {
            let mut doomed = Vec::new();
            for (k, p) in &c.points {
                match matches(&f, &p.payload) {
                    Ok(true) => doomed.push(k.clone()),
                    Ok(false) => {}
                    Err(e) => return err(StatusCode::BAD_REQUEST, &format!("Format error: {e}")),
                }
            }
            for k in doomed {
                c.points.remove(&k);
            }
        }
        _ => {
            return err(
                StatusCode::BAD_REQUEST,
                "Format error in JSON body: expected either `points` or `filter`",
            );
        }
    }
    ok(json!({"operation_id": 3, "status": "completed"}))
}

impl FakeQdrant {
    /// Start on a free loopback port; `api_key` makes every request need the `api-key` header.
    pub(crate) async fn start(api_key: Option<&str>) -> Self {
        let state: Shared = Arc::new(Mutex::new(State0 {
            api_key: api_key.map(str::to_owned),
            ..State0::default()
        }));
        let app = Router::new()
            .route(
                "/collections/{name}",
                put(put_collection).get(get_collection),
            )
            .route("/collections/{name}/index", put(put_index))
            .route("/collections/{name}/points", put(put_points).post(retrieve))
            .route("/collections/{name}/points/query", post(query))
            .route("/collections/{name}/points/count", post(count))
            .route("/collections/{name}/points/delete", post(delete))
            .route(
                "/",
                get(|| async {
                    Json(json!({"title": "qdrant - vector search engine", "version": "1.17.0"}))
                }),
            )
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { state, url }
    }

    /// Every request so far: method, path, JSON body.
    pub(crate) fn requests(&self) -> Vec<(String, String, Value)> {
        self.state.lock().unwrap().requests.clone()
    }

    /// The payload indexes created on a collection.
    pub(crate) fn indexes(&self, collection: &str) -> Vec<Value> {
        self.state
            .lock()
            .unwrap()
            .collections
            .get(collection)
            .map(|c| c.indexes.clone())
            .unwrap_or_default()
    }
}
