//! The OpenAI-compatible routes: HTTP in and out of [`resk::gateway::Gateway`], which holds all the
//! logic. Each handler: authorise (`llm:invoke`) → read the body and the cache directives → call the
//! gateway → answer JSON or server-sent events with the `x-resk-cache*` headers. Every error on
//! these paths — the gate's 401/403/429 and the router's 404 included — is answered in OpenAI's
//! format, so OpenAI clients raise their usual exceptions.
//!
//! These routes are not in resk's OpenAPI document: their contract is OpenAI's API reference.

use std::{convert::Infallible, sync::Arc};

use axum::{
    Json,
    body::{Body, Bytes},
    extract::{State, rejection::BytesRejection},
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use futures_util::StreamExt as _;
use resk::gateway::{CacheStatus, Caller, Directives, GatewayError, Reply, ReplyBody};

use crate::{
    auth::{Principal, Scope},
    error::{Answered, ApiError},
    state::AppState,
};

/// Whether `path` is one of the gateway's (its errors are answered in OpenAI's format).
pub(crate) fn is_gateway_path(path: &str) -> bool {
    path.starts_with("/v1/") || path == "/v1"
}

/// OpenAI's error `type` for a status.
fn openai_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        s if s >= 500 => "api_error",
        _ => "invalid_request_error",
    }
}

/// Re-render an error answered by resk's own layers (gate, router, extractors) in OpenAI's
/// format, keeping its status and headers.
pub(crate) fn in_openai_format(response: &mut Response) {
    let Some(answered) = response.extensions_mut().remove::<Answered>() else {
        return;
    };
    let status = response.status();
    let body = serde_json::json!({"error": {
        "message": answered.message,
        "type": openai_type(status),
        "param": null,
        "code": answered.code,
    }});
    *response.body_mut() = Body::from(body.to_string());
    response.headers_mut().remove(header::CONTENT_LENGTH);
}

/// A gateway error as its HTTP answer.
fn error_response(err: &GatewayError) -> Response {
    let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::BAD_GATEWAY);
    metrics::counter!("resk_gateway_errors_total", "status" => status.as_str().to_owned())
        .increment(1);
    let mut response = (status, Json(err.body())).into_response();
    if let Some(wait) = err.retry_after() {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

static X_RESK_CACHE: HeaderName = HeaderName::from_static("x-resk-cache");
static X_RESK_SOURCE: HeaderName = HeaderName::from_static("x-resk-cache-source");
static X_RESK_SIMILARITY: HeaderName = HeaderName::from_static("x-resk-similarity");
static X_RESK_REASON: HeaderName = HeaderName::from_static("x-resk-cache-reason");
static X_RESK_COALESCED: HeaderName = HeaderName::from_static("x-resk-coalesced");
static X_RESK_HIT_ID: HeaderName = HeaderName::from_static("x-resk-hit-id");

fn boxed_error(err: &GatewayError) -> Box<Response> {
    Box::new(error_response(err))
}

/// A reply as its HTTP answer, with where it came from in the headers.
fn reply_response(reply: Reply) -> Response {
    let Reply {
        body, provenance, ..
    } = reply;
    let mut response = match body {
        ReplyBody::Json(value) => Json(value).into_response(),
        ReplyBody::Stream(frames) => {
            let mut r = Response::new(Body::from_stream(frames.map(Ok::<_, Infallible>)));
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            // Proxies must pass each event on as it comes.
            h.insert(
                HeaderName::from_static("x-accel-buffering"),
                HeaderValue::from_static("no"),
            );
            r
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    let h = response.headers_mut();
    h.insert(
        X_RESK_CACHE.clone(),
        HeaderValue::from_static(provenance.status.as_str()),
    );
    if let Some(source) = provenance.source {
        h.insert(
            X_RESK_SOURCE.clone(),
            HeaderValue::from_static(source.as_str()),
        );
    }
    if let Some(similarity) = provenance.similarity
        && let Ok(v) = HeaderValue::from_str(&format!("{similarity:.4}"))
    {
        h.insert(X_RESK_SIMILARITY.clone(), v);
    }
    if provenance.status == CacheStatus::Hit
        && let Some(age) = provenance.age
    {
        h.insert(header::AGE, HeaderValue::from(age.as_secs()));
    }
    if let Some(reason) = provenance.reason {
        h.insert(X_RESK_REASON.clone(), HeaderValue::from_static(reason));
    }
    if provenance.coalesced {
        h.insert(X_RESK_COALESCED.clone(), HeaderValue::from_static("true"));
    }
    if let Some(id) = provenance.hit_id
        && let Ok(v) = HeaderValue::from_str(&id)
    {
        h.insert(X_RESK_HIT_ID.clone(), v);
    }
    response
}

/// What every gateway handler starts with: the gateway, the caller (with `llm:invoke`), the body
/// and the cache directives.
fn admit<'a>(
    app: &'a AppState,
    principal: &Principal,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(&'a resk::gateway::Gateway, Caller, Bytes, Directives), Box<Response>> {
    let gateway = app.gateway.as_ref().ok_or_else(|| {
        boxed_error(&GatewayError::new(
            404,
            "invalid_request_error",
            Some("gateway_disabled"),
            "the gateway is off: set UPSTREAM_BASE_URL to turn it on",
        ))
    })?;
    principal
        .require(Scope::Invoke)
        .map_err(|e| Box::new(e.into_response()))?;
    let body = body.map_err(|rejection| {
        let status = rejection.status();
        boxed_error(&GatewayError::new(
            status.as_u16(),
            "invalid_request_error",
            Some(if status == StatusCode::PAYLOAD_TOO_LARGE {
                "request_too_large"
            } else {
                "invalid_body"
            }),
            rejection.body_text(),
        ))
    })?;
    let text = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let directives = Directives::parse(
        text(&header::CACHE_CONTROL),
        text(&HeaderName::from_static("x-resk-threshold")),
    )
    .map_err(|e| boxed_error(&e))?;
    let caller = Caller::new(principal.tenant.clone(), &*principal.subject)
        .bounds(principal.cache_bounds.unwrap_or_default());
    Ok((gateway, caller, body, directives))
}

/// `POST /v1/chat/completions`.
pub(crate) async fn chat_completions(
    State(app): State<Arc<AppState>>,
    principal: Principal,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (gateway, caller, body, directives) = match admit(&app, &principal, &headers, body) {
        Ok(admitted) => admitted,
        Err(response) => return *response,
    };
    match gateway.chat(&caller, &body, directives).await {
        Ok(reply) => reply_response(reply),
        Err(err) => error_response(&err),
    }
}

/// `POST /v1/embeddings`.
pub(crate) async fn embeddings(
    State(app): State<Arc<AppState>>,
    principal: Principal,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (gateway, caller, body, directives) = match admit(&app, &principal, &headers, body) {
        Ok(admitted) => admitted,
        Err(response) => return *response,
    };
    match gateway.embeddings(&caller, &body, directives).await {
        Ok(reply) => reply_response(reply),
        Err(err) => error_response(&err),
    }
}

/// `GET /v1/models`.
pub(crate) async fn models(
    State(app): State<Arc<AppState>>,
    principal: Principal,
    headers: HeaderMap,
) -> Response {
    let (gateway, ..) = match admit(&app, &principal, &headers, Ok(Bytes::new())) {
        Ok(admitted) => admitted,
        Err(response) => return *response,
    };
    match gateway.models().await {
        Ok(list) => Json(list).into_response(),
        Err(err) => error_response(&err),
    }
}

/// `GET /api/gateway/savings`: the caller's tenant's hits, tokens and dollars saved per model
/// (`cache:admin`).
pub(crate) async fn savings(
    State(app): State<Arc<AppState>>,
    principal: Principal,
) -> Result<Response, ApiError> {
    principal.require(Scope::Admin)?;
    let Some(gateway) = app.gateway.as_ref() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "gateway_disabled",
            "the gateway is off: set UPSTREAM_BASE_URL to turn it on",
        ));
    };
    Ok(Json(serde_json::json!({
        "tenant": principal.tenant.as_str(),
        "saved_usd": gateway.total_savings(&principal.tenant).saved_usd,
        "models": gateway.savings(&principal.tenant),
    }))
    .into_response())
}
