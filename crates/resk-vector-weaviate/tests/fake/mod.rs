//! A local fake of Weaviate's REST and GraphQL API, as documented for v1.38 (REST reference
//! <https://weaviate.io/developers/weaviate/api/rest>, GraphQL `Get` / `Aggregate`
//! <https://docs.weaviate.io/weaviate/api/graphql>): schema (`GET`/`POST /v1/schema…`, properties),
//! tenants (`GET`/`DELETE /v1/schema/{class}/tenants`), batch objects (`POST`/`DELETE
//! /v1/batch/objects`) and `POST /v1/graphql`.
//!
//! Bodies are parsed into the documented shapes with unknown fields refused; GraphQL documents are
//! parsed by a real GraphQL parser (`graphql-parser`), so a malformed query fails here as on the
//! server. Behaviour follows the documentation: auto-schema off (an unknown property is refused),
//! tenants created on write only when `autoTenantCreation` is on, reads of a missing tenant answer
//! `tenant not found`, `field` tokenization compares whole values, distances are `1 - cos`
//! (`cosine`), `-dot` (`dot`) and the squared Euclidean distance (`l2-squared`), errors come as
//! `{"error": [{"message"}]}` (REST) or `{"errors": [{"message"}]}` with HTTP 200 (GraphQL).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use graphql_parser::query::{Definition, OperationDefinition, Selection, Value as Gql};
use serde::Deserialize;
use serde_json::{Map, Value, json};

#[derive(Clone)]
struct Object {
    vector: Vec<f32>,
    properties: Map<String, Value>,
}

struct Class {
    definition: Value,
    distance: String,
    auto_tenants: bool,
    props: BTreeMap<String, String>,
    tenants: BTreeMap<String, BTreeMap<String, Object>>,
}

#[derive(Default)]
struct State0 {
    classes: HashMap<String, Class>,
    api_key: Option<String>,
    requests: Vec<(String, String, Value)>,
}

type Shared = Arc<Mutex<State0>>;

/// A running fake.
#[derive(Clone)]
pub(crate) struct FakeWeaviate {
    state: Shared,
    pub(crate) url: String,
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"error": [{"message": message}]}))).into_response()
}

fn unprocessable(message: &str) -> Response {
    error(StatusCode::UNPROCESSABLE_ENTITY, message)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ClassCreate {
    class: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    vectorizer: Option<String>,
    #[serde(default)]
    vector_index_type: Option<String>,
    #[serde(default)]
    vector_index_config: Option<VectorIndexConfig>,
    #[serde(default)]
    multi_tenancy_config: Option<MultiTenancyConfig>,
    #[serde(default)]
    properties: Vec<PropertyCreate>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VectorIndexConfig {
    distance: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct MultiTenancyConfig {
    enabled: bool,
    #[serde(default)]
    auto_tenant_creation: bool,
    #[serde(default)]
    auto_tenant_activation: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PropertyCreate {
    name: String,
    data_type: Vec<String>,
    #[serde(default)]
    tokenization: Option<String>,
    #[serde(default)]
    index_filterable: Option<bool>,
    #[serde(default)]
    index_searchable: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchCreate {
    objects: Vec<BatchObject>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchObject {
    class: String,
    id: String,
    #[serde(default)]
    vector: Option<Vec<f32>>,
    #[serde(default)]
    properties: Map<String, Value>,
    #[serde(default)]
    tenant: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct BatchDelete {
    #[serde(rename = "match")]
    matching: BatchMatch,
    #[serde(default)]
    output: Option<String>,
    #[serde(default)]
    dry_run: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchMatch {
    class: String,
    #[serde(rename = "where")]
    filter: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct GraphQlRequest {
    query: String,
    #[serde(default)]
    operation_name: Option<String>,
    #[serde(default)]
    variables: Option<Value>,
}

fn class_name_ok(name: &str) -> bool {
    let mut c = name.chars();
    c.next().is_some_and(|f| f.is_ascii_uppercase())
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

fn property_name_ok(name: &str) -> bool {
    let mut c = name.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
        && !matches!(name, "id" | "_id" | "_additional")
}

fn tenant_name_ok(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
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

fn check_property(p: &PropertyCreate) -> Result<Value, String> {
    if !property_name_ok(&p.name) {
        return Err(format!("'{}' is not a valid property name", p.name));
    }
    let [data_type] = p.data_type.as_slice() else {
        return Err("dataType must hold one type".into());
    };
    if !matches!(data_type.as_str(), "text" | "number" | "int" | "boolean") {
        return Err(format!("data type '{data_type}' is not faked"));
    }
    if p.tokenization.is_some() && data_type != "text" {
        return Err("tokenization is only allowed for text properties".into());
    }
    if p.tokenization.as_deref().is_some_and(|t| t != "field") {
        return Err("only `field` tokenization is faked".into());
    }
    if p.index_searchable == Some(true) && data_type != "text" {
        return Err("indexSearchable is only allowed for text properties".into());
    }
    Ok(json!({
        "name": p.name,
        "dataType": [data_type],
        "tokenization": p.tokenization.clone().or_else(|| (data_type == "text").then(|| "word".into())),
        "indexFilterable": p.index_filterable.unwrap_or(true),
        "indexSearchable": p.index_searchable.unwrap_or(data_type == "text"),
    }))
}

fn authorised(st: &State0, headers: &HeaderMap) -> bool {
    match &st.api_key {
        None => true,
        Some(k) => headers
            .get("authorization")
            .is_some_and(|v| v.as_bytes() == format!("Bearer {k}").as_bytes()),
    }
}

macro_rules! guard {
    ($st:expr, $headers:expr) => {
        if !authorised(&$st, &$headers) {
            return (
                StatusCode::UNAUTHORIZED,
                Json(json!({"code": 401, "message": "anonymous access not enabled, please provide an auth scheme such as OIDC"})),
            )
                .into_response();
        }
    };
}

macro_rules! parse {
    ($body:expr, $t:ty) => {
        match serde_json::from_value::<$t>($body) {
            Ok(v) => v,
            Err(e) => return unprocessable(&format!("parsing body body from \"\" failed: {e}")),
        }
    };
}

fn record(st: &mut State0, method: &str, path: String, body: &Value) {
    st.requests.push((method.into(), path, body.clone()));
}

async fn get_class(
    State(s): State<Shared>,
    Path(class): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut st = s.lock().unwrap();
    record(&mut st, "GET", format!("/v1/schema/{class}"), &Value::Null);
    guard!(st, headers);
    match st.classes.get(&class) {
        Some(c) => Json(c.definition.clone()).into_response(),
        // Documented: 404 "This class does not exist", no body.
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn create_class(
    State(s): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut st = s.lock().unwrap();
    record(&mut st, "POST", "/v1/schema".into(), &body);
    guard!(st, headers);
    let req = parse!(body, ClassCreate);
    if !class_name_ok(&req.class) {
        return unprocessable(&format!("'{}' is not a valid class name", req.class));
    }
    if st.classes.contains_key(&req.class) {
        return unprocessable(&format!("class name \"{}\" already exists", req.class));
    }
    if req.vectorizer.as_deref().is_some_and(|v| v != "none") {
        return unprocessable("only vectorizer \"none\" is faked");
    }
    if req
        .vector_index_type
        .as_deref()
        .is_some_and(|v| v != "hnsw")
    {
        return unprocessable("only the hnsw index is faked");
    }
    let distance = req
        .vector_index_config
        .map(|c| c.distance)
        .unwrap_or_else(|| "cosine".into());
    if !matches!(distance.as_str(), "cosine" | "dot" | "l2-squared") {
        return unprocessable(&format!("invalid distance {distance}"));
    }
    let mut props = BTreeMap::new();
    let mut definitions = Vec::new();
    for p in &req.properties {
        match check_property(p) {
            Ok(d) => {
                props.insert(p.name.clone(), p.data_type[0].clone());
                definitions.push(d);
            }
            Err(e) => return unprocessable(&e),
        }
    }
    let mt = req.multi_tenancy_config.unwrap_or(MultiTenancyConfig {
        enabled: false,
        auto_tenant_creation: false,
        auto_tenant_activation: false,
    });
    let definition = json!({
        "class": req.class,
        "description": req.description,
        "vectorizer": "none",
        "vectorIndexType": "hnsw",
        "vectorIndexConfig": {"distance": distance, "ef": -1, "efConstruction": 128, "maxConnections": 32},
        "multiTenancyConfig": {
            "enabled": mt.enabled,
            "autoTenantCreation": mt.auto_tenant_creation,
            "autoTenantActivation": mt.auto_tenant_activation,
        },
        "invertedIndexConfig": {"bm25": {"b": 0.75, "k1": 1.2}, "cleanupIntervalSeconds": 60},
        "replicationConfig": {"factor": 1},
        "shardingConfig": {"virtualPerPhysical": 0, "desiredCount": 0, "actualCount": 0},
        "properties": definitions,
    });
    st.classes.insert(
        req.class.clone(),
        Class {
            definition: definition.clone(),
            distance,
            auto_tenants: mt.auto_tenant_creation,
            props,
            tenants: BTreeMap::new(),
        },
    );
    Json(definition).into_response()
}

async fn add_property(
    State(s): State<Shared>,
    Path(class): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut st = s.lock().unwrap();
    record(
        &mut st,
        "POST",
        format!("/v1/schema/{class}/properties"),
        &body,
    );
    guard!(st, headers);
    let req = parse!(body, PropertyCreate);
    let Some(c) = st.classes.get_mut(&class) else {
        return unprocessable(&format!("class \"{class}\" not found"));
    };
    if c.props.contains_key(&req.name) {
        return unprocessable(&format!("property \"{}\" already exists", req.name));
    }
    match check_property(&req) {
        Ok(d) => {
            c.props.insert(req.name.clone(), req.data_type[0].clone());
            c.definition["properties"]
                .as_array_mut()
                .unwrap()
                .push(d.clone());
            Json(d).into_response()
        }
        Err(e) => unprocessable(&e),
    }
}

async fn list_tenants(
    State(s): State<Shared>,
    Path(class): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut st = s.lock().unwrap();
    record(
        &mut st,
        "GET",
        format!("/v1/schema/{class}/tenants"),
        &Value::Null,
    );
    guard!(st, headers);
    let Some(c) = st.classes.get(&class) else {
        return unprocessable(&format!("class \"{class}\" not found"));
    };
    let list: Vec<Value> = c
        .tenants
        .keys()
        .map(|t| json!({"name": t, "activityStatus": "ACTIVE"}))
        .collect();
    Json(list).into_response()
}

async fn delete_tenants(
    State(s): State<Shared>,
    Path(class): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut st = s.lock().unwrap();
    record(
        &mut st,
        "DELETE",
        format!("/v1/schema/{class}/tenants"),
        &body,
    );
    guard!(st, headers);
    let names = parse!(body, Vec<String>);
    let Some(c) = st.classes.get_mut(&class) else {
        return unprocessable(&format!("class \"{class}\" not found"));
    };
    for n in names {
        c.tenants.remove(&n);
    }
    StatusCode::OK.into_response()
}

/// Whether `value` fits a property of `data_type`.
fn fits(data_type: &str, value: &Value) -> bool {
    match data_type {
        "text" => value.is_string(),
        "number" => value.is_number(),
        "int" => value.is_i64(),
        "boolean" => value.is_boolean(),
        _ => false,
    }
}

fn batch_one(st: &mut State0, o: BatchObject) -> Result<(), String> {
    let Some(c) = st.classes.get_mut(&o.class) else {
        return Err(format!("class '{}' not present in schema", o.class));
    };
    if !is_uuid(&o.id) {
        return Err(format!("invalid UUID '{}'", o.id));
    }
    for (name, value) in &o.properties {
        match c.props.get(name) {
            None => {
                return Err(format!(
                    "invalid object: no such prop with name '{name}' found in class '{}' in the schema. Check your schema files for which properties in this class are available",
                    o.class
                ));
            }
            Some(dt) if !fits(dt, value) => {
                return Err(format!(
                    "invalid object: invalid {dt} property '{name}' on class '{}': not a {dt}",
                    o.class
                ));
            }
            Some(_) => {}
        }
    }
    let Some(tenant) = o.tenant else {
        return Err(format!(
            "class {} has multi-tenancy enabled, but request was without tenant",
            o.class
        ));
    };
    if !tenant_name_ok(&tenant) {
        return Err(format!("invalid tenant name '{tenant}'"));
    }
    if !c.tenants.contains_key(&tenant) && !c.auto_tenants {
        return Err(format!("tenant not found: \"{tenant}\""));
    }
    let vector = o.vector.unwrap_or_default();
    let shard = c.tenants.entry(tenant).or_default();
    if let Some(existing) = shard.values().next()
        && existing.vector.len() != vector.len()
    {
        return Err(format!(
            "new node has a vector with length {}. Existing nodes have vectors with length {}",
            vector.len(),
            existing.vector.len()
        ));
    }
    shard.insert(
        o.id.to_ascii_lowercase(),
        Object {
            vector,
            properties: o.properties,
        },
    );
    Ok(())
}

async fn batch_objects(
    State(s): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut st = s.lock().unwrap();
    record(&mut st, "POST", "/v1/batch/objects".into(), &body);
    guard!(st, headers);
    let req = parse!(body, BatchCreate);
    let mut answer = Vec::new();
    for o in req.objects {
        let echo = json!({"class": o.class, "id": o.id, "tenant": o.tenant});
        let result = match batch_one(&mut st, o) {
            Ok(()) => json!({"status": "SUCCESS"}),
            Err(e) => json!({"status": "FAILED", "errors": {"error": [{"message": e}]}}),
        };
        let mut item = echo;
        item["result"] = result;
        answer.push(item);
    }
    Json(answer).into_response()
}

/// The documented `where` filter, over the REST JSON form (batch delete).
fn where_json(filter: &Value, id: &str) -> Result<bool, String> {
    let op = filter["operator"]
        .as_str()
        .ok_or("where needs an operator")?;
    match op {
        "And" | "Or" => {
            let operands = filter["operands"].as_array().ok_or("operands missing")?;
            let mut results = Vec::new();
            for o in operands {
                results.push(where_json(o, id)?);
            }
            Ok(if op == "And" {
                results.iter().all(|r| *r)
            } else {
                results.iter().any(|r| *r)
            })
        }
        "ContainsAny" if filter["path"] == json!(["id"]) => {
            let values = filter["valueTextArray"]
                .as_array()
                .ok_or("ContainsAny on id takes valueTextArray")?;
            Ok(values.iter().any(|v| v.as_str() == Some(id)))
        }
        other => Err(format!("operator {other} is not faked in batch delete")),
    }
}

async fn batch_delete(
    State(s): State<Shared>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut st = s.lock().unwrap();
    let mut path = "/v1/batch/objects".to_owned();
    if let Some(t) = params.get("tenant") {
        path.push_str(&format!("?tenant={t}"));
    }
    record(&mut st, "DELETE", path, &body);
    guard!(st, headers);
    let req = parse!(body, BatchDelete);
    if req
        .output
        .as_deref()
        .is_some_and(|o| o != "minimal" && o != "verbose")
    {
        return unprocessable("output must be minimal or verbose");
    }
    let Some(c) = st.classes.get_mut(&req.matching.class) else {
        return unprocessable(&format!(
            "validate: class: {} doesn't exist",
            req.matching.class
        ));
    };
    let Some(tenant) = params.get("tenant") else {
        return unprocessable(&format!(
            "class {} has multi-tenancy enabled, but request was without tenant",
            req.matching.class
        ));
    };
    let mut matched = Vec::new();
    {
        let Some(shard) = c.tenants.get(tenant) else {
            return unprocessable(&format!("tenant not found: \"{tenant}\""));
        };
        for id in shard.keys() {
            match where_json(&req.matching.filter, id) {
                Ok(true) => matched.push(id.clone()),
                Ok(false) => {}
                Err(e) => return unprocessable(&e),
            }
        }
    }
    matched.truncate(10_000);
    if req.dry_run != Some(true) {
        let shard = c.tenants.get_mut(tenant).unwrap();
        for id in &matched {
            shard.remove(id);
        }
    }
    Json(json!({
        "match": {"class": req.matching.class, "where": req.matching.filter},
        "output": req.output.unwrap_or_else(|| "minimal".into()),
        "dryRun": req.dry_run.unwrap_or(false),
        "results": {
            "matches": matched.len(),
            "limit": 10_000,
            "successful": matched.len(),
            "failed": 0,
            "objects": null,
        }
    }))
    .into_response()
}

type Args<'a> = Vec<(&'a str, Gql<'a, &'a str>)>;

fn arg<'a, 'b>(args: &'b Args<'a>, name: &str) -> Option<&'b Gql<'a, &'a str>> {
    args.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
}

fn number<'a>(v: &Gql<'a, &'a str>) -> Option<f64> {
    match v {
        Gql::Int(n) => n.as_i64().map(|i| i as f64),
        Gql::Float(f) => Some(*f),
        _ => None,
    }
}

/// The GraphQL `where` input object (`GetObjects…WhereInpObj`): `operator` an enum, `path` a list of
/// strings, one typed `value…` field, `operands` for `And` / `Or`.
fn where_gql<'a>(
    filter: &Gql<'a, &'a str>,
    object: &Object,
    class: &Class,
    name: &str,
) -> Result<bool, String> {
    let Gql::Object(fields) = filter else {
        return Err("where must be an object".into());
    };
    for key in fields.keys() {
        if !matches!(
            *key,
            "operator"
                | "operands"
                | "path"
                | "valueText"
                | "valueNumber"
                | "valueBoolean"
                | "valueInt"
        ) {
            return Err(format!("Unknown field \"{key}\" in where filter"));
        }
    }
    let Some(Gql::Enum(op)) = fields.get("operator") else {
        return Err("where: operator must be an enum value".into());
    };
    match *op {
        "And" | "Or" => {
            let Some(Gql::List(operands)) = fields.get("operands") else {
                return Err("operands must be a list".into());
            };
            let mut results = Vec::new();
            for o in operands {
                results.push(where_gql(o, object, class, name)?);
            }
            Ok(if *op == "And" {
                results.iter().all(|r| *r)
            } else {
                results.iter().any(|r| *r)
            })
        }
        "Equal" => {
            let Some(Gql::List(path)) = fields.get("path") else {
                return Err("path must be a list".into());
            };
            let [Gql::String(prop)] = path.as_slice() else {
                return Err("path must name one property".into());
            };
            let Some(data_type) = class.props.get(prop) else {
                return Err(format!(
                    "no such prop with name '{prop}' found in class '{name}' in the schema. Check your schema files for which properties in this class are available"
                ));
            };
            let stored = object.properties.get(prop);
            let (field, matches) = if let Some(Gql::String(s)) = fields.get("valueText") {
                (
                    "valueText",
                    stored.and_then(Value::as_str) == Some(s.as_str()),
                )
            } else if let Some(n) = fields.get("valueNumber").and_then(number) {
                ("valueNumber", stored.and_then(Value::as_f64) == Some(n))
            } else if let Some(Gql::Boolean(b)) = fields.get("valueBoolean") {
                ("valueBoolean", stored.and_then(Value::as_bool) == Some(*b))
            } else {
                return Err("Equal needs one value field".into());
            };
            let expected = match data_type.as_str() {
                "text" => "valueText",
                "number" => "valueNumber",
                "boolean" => "valueBoolean",
                _ => "valueInt",
            };
            if field != expected {
                return Err(format!(
                    "data type filter cannot use \"{field}\" on type \"{data_type}\", use \"{expected}\" instead"
                ));
            }
            Ok(matches)
        }
        other => Err(format!("operator {other} is not faked")),
    }
}

fn distance(kind: &str, a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    match kind {
        "dot" => -dot,
        "l2-squared" => a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum(),
        _ => {
            let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
            let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
            if na == 0.0 || nb == 0.0 {
                1.0
            } else {
                1.0 - dot / (na * nb)
            }
        }
    }
}

fn gql_errors(message: &str, data: Value) -> Response {
    Json(json!({
        "data": data,
        "errors": [{"locations": [{"column": 2, "line": 1}], "message": message, "path": []}]
    }))
    .into_response()
}

/// The selection of `Get { Class(…) { … } }`: property names and `_additional { distance }`.
fn get_rows<'a>(
    st: &State0,
    field: &graphql_parser::query::Field<'a, &'a str>,
) -> Result<Vec<Value>, String> {
    let name = field.name;
    let Some(class) = st.classes.get(name) else {
        return Err(format!(
            "Cannot query field \"{name}\" on type \"GetObjectsObj\"."
        ));
    };
    for (arg_name, _) in &field.arguments {
        if !matches!(*arg_name, "nearVector" | "limit" | "tenant" | "where") {
            return Err(format!(
                "Unknown argument \"{arg_name}\" on field \"{name}\""
            ));
        }
    }
    let Some(Gql::Object(near)) = arg(&field.arguments, "nearVector") else {
        return Err("nearVector is required here".into());
    };
    let Some(Gql::List(vector)) = near.get("vector") else {
        return Err("nearVector needs vector".into());
    };
    let vector: Vec<f32> = vector
        .iter()
        .map(|v| {
            number(v)
                .map(|f| f as f32)
                .ok_or("vector values must be numbers")
        })
        .collect::<Result<_, _>>()?;
    let limit = match arg(&field.arguments, "limit") {
        Some(Gql::Int(n)) => n.as_i64().ok_or("limit")? as usize,
        None => 10,
        Some(_) => return Err("limit must be an Int".into()),
    };
    let Some(Gql::String(tenant)) = arg(&field.arguments, "tenant") else {
        return Err(format!(
            "explorer: get class: vector search: object vector search at index {}: class {name} has multi-tenancy enabled, but request was without tenant",
            name.to_lowercase()
        ));
    };
    let Some(shard) = class.tenants.get(tenant) else {
        return Err(format!(
            "explorer: get class: vector search: object vector search at index {}: tenant not found: \"{tenant}\"",
            name.to_lowercase()
        ));
    };
    let mut wanted_props = Vec::new();
    let mut want_distance = false;
    for s in &field.selection_set.items {
        let Selection::Field(f) = s else {
            return Err("fragments are not faked".into());
        };
        if f.name == "_additional" {
            for a in &f.selection_set.items {
                match a {
                    Selection::Field(af) if af.name == "distance" => want_distance = true,
                    Selection::Field(af) => {
                        return Err(format!("_additional {} is not faked", af.name));
                    }
                    _ => return Err("fragments are not faked".into()),
                }
            }
        } else if class.props.contains_key(f.name) {
            wanted_props.push(f.name);
        } else {
            return Err(format!(
                "Cannot query field \"{}\" on type \"{name}\".",
                f.name
            ));
        }
    }
    let mut hits = Vec::new();
    for o in shard.values() {
        if o.vector.len() != vector.len() {
            return Err(format!(
                "vector search: knn search: distance between entrypoint and query node: vector lengths don't match: {} vs {}",
                o.vector.len(),
                vector.len()
            ));
        }
        if let Some(w) = arg(&field.arguments, "where")
            && !where_gql(w, o, class, name)?
        {
            continue;
        }
        hits.push((distance(&class.distance, &vector, &o.vector), o));
    }
    hits.sort_by(|a, b| a.0.total_cmp(&b.0));
    hits.truncate(limit);
    Ok(hits
        .into_iter()
        .map(|(d, o)| {
            let mut row = Map::new();
            for p in &wanted_props {
                row.insert(
                    (*p).into(),
                    o.properties.get(*p).cloned().unwrap_or(Value::Null),
                );
            }
            if want_distance {
                row.insert("_additional".into(), json!({"distance": d}));
            }
            Value::Object(row)
        })
        .collect())
}

fn aggregate_count<'a>(
    st: &State0,
    field: &graphql_parser::query::Field<'a, &'a str>,
) -> Result<Value, String> {
    let name = field.name;
    let Some(class) = st.classes.get(name) else {
        return Err(format!(
            "Cannot query field \"{name}\" on type \"AggregateObjectsObj\"."
        ));
    };
    let Some(Gql::String(tenant)) = arg(&field.arguments, "tenant") else {
        return Err(format!(
            "class {name} has multi-tenancy enabled, but request was without tenant"
        ));
    };
    let Some(shard) = class.tenants.get(tenant) else {
        return Err(format!("tenant not found: \"{tenant}\""));
    };
    let asks_count = field.selection_set.items.iter().any(|s| {
        matches!(s, Selection::Field(f) if f.name == "meta"
            && f.selection_set.items.iter().any(|m| matches!(m, Selection::Field(c) if c.name == "count")))
    });
    if !asks_count {
        return Err("only meta { count } is faked".into());
    }
    Ok(json!([{"meta": {"count": shard.len()}}]))
}

async fn graphql(State(s): State<Shared>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let mut st = s.lock().unwrap();
    record(&mut st, "POST", "/v1/graphql".into(), &body);
    guard!(st, headers);
    let req = parse!(body, GraphQlRequest);
    let _ = (&req.operation_name, &req.variables);
    let doc = match graphql_parser::query::parse_query::<&str>(&req.query) {
        Ok(d) => d,
        Err(e) => return gql_errors(&format!("Syntax Error GraphQL request: {e}"), Value::Null),
    };
    let [Definition::Operation(op)] = doc.definitions.as_slice() else {
        return gql_errors("one operation expected", Value::Null);
    };
    let set = match op {
        OperationDefinition::SelectionSet(s) => s,
        OperationDefinition::Query(q) => &q.selection_set,
        _ => return gql_errors("only queries are faked", Value::Null),
    };
    let [Selection::Field(top)] = set.items.as_slice() else {
        return gql_errors("one top-level field expected", Value::Null);
    };
    let [Selection::Field(field)] = top.selection_set.items.as_slice() else {
        return gql_errors("one class per query is faked", Value::Null);
    };
    match top.name {
        "Get" => match get_rows(&st, field) {
            Ok(rows) => Json(json!({"data": {"Get": {field.name: rows}}})).into_response(),
            Err(e) => gql_errors(&e, json!({"Get": {field.name: null}})),
        },
        "Aggregate" => match aggregate_count(&st, field) {
            Ok(rows) => Json(json!({"data": {"Aggregate": {field.name: rows}}})).into_response(),
            Err(e) => gql_errors(&e, json!({"Aggregate": {field.name: null}})),
        },
        other => gql_errors(
            &format!("Cannot query field \"{other}\" on type \"WeaviateObj\"."),
            Value::Null,
        ),
    }
}

impl FakeWeaviate {
    /// Serve on a free loopback port; `api_key` makes `Authorization: Bearer <key>` mandatory.
    pub(crate) async fn start(api_key: Option<&str>) -> Self {
        let state: Shared = Arc::new(Mutex::new(State0 {
            api_key: api_key.map(str::to_owned),
            ..State0::default()
        }));
        let app = Router::new()
            .route("/v1/schema", post(create_class))
            .route("/v1/schema/{class}", get(get_class))
            .route("/v1/schema/{class}/properties", post(add_property))
            .route(
                "/v1/schema/{class}/tenants",
                get(list_tenants).delete(delete_tenants),
            )
            .route(
                "/v1/batch/objects",
                post(batch_objects).delete(batch_delete),
            )
            .route("/v1/graphql", post(graphql))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { state, url }
    }

    /// Every request so far: (method, path with query, JSON body or `null`).
    pub(crate) fn requests(&self) -> Vec<(String, String, Value)> {
        self.state.lock().unwrap().requests.clone()
    }

    /// The tenants of a class.
    pub(crate) fn tenants(&self, class: &str) -> Vec<String> {
        let st = self.state.lock().unwrap();
        st.classes
            .get(class)
            .map(|c| c.tenants.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Create a class directly (as another tool would), bypassing the adapter.
    pub(crate) fn put_class(&self, definition: Value) {
        let mut st = self.state.lock().unwrap();
        let name = definition["class"].as_str().unwrap().to_owned();
        let props = definition["properties"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .map(|p| {
                        (
                            p["name"].as_str().unwrap().to_owned(),
                            p["dataType"][0].as_str().unwrap().to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        st.classes.insert(
            name,
            Class {
                distance: definition["vectorIndexConfig"]["distance"]
                    .as_str()
                    .unwrap_or("cosine")
                    .to_owned(),
                auto_tenants: definition["multiTenancyConfig"]["autoTenantCreation"]
                    .as_bool()
                    .unwrap_or(false),
                definition,
                props,
                tenants: BTreeMap::new(),
            },
        );
    }
}
