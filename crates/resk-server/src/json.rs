//! A JSON body extractor whose every rejection is an [`ApiError`] in the API's error shape.

use aide::{OperationInput, generate::GenContext, openapi::Operation};
use axum::{
    Json,
    body::Bytes,
    extract::{FromRequest, Request},
    http::{StatusCode, header},
};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Like `axum::Json`, but: 415 unless the content type is JSON, 413 past the body limit, 400 with the
/// JSON path of the problem for malformed JSON, wrong types, missing or unknown fields.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

fn is_json(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    // Compared case-insensitively in place (no lowercase copy per request).
    let essence = value.split(';').next().unwrap_or("").trim().as_bytes();
    let starts =
        |p: &str| essence.len() >= p.len() && essence[..p.len()].eq_ignore_ascii_case(p.as_bytes());
    let ends = |p: &str| {
        essence.len() >= p.len()
            && essence[essence.len() - p.len()..].eq_ignore_ascii_case(p.as_bytes())
    };
    essence.eq_ignore_ascii_case(b"application/json") || (starts("application/") && ends("+json"))
}

/// Like [`ApiJson`], plus the SHA-256 of the body's bytes (what an `Idempotency-Key` is checked
/// against).
#[derive(Debug, Clone)]
pub struct ApiJsonDigest<T>(pub T, pub [u8; 32]);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJsonDigest<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        use sha2::Digest;
        let (value, bytes) = read_json(req, state).await?;
        Ok(Self(value, sha2::Sha256::digest(&bytes).into()))
    }
}

impl<T: JsonSchema> OperationInput for ApiJsonDigest<T> {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        Json::<T>::operation_input(ctx, operation);
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        read_json(req, state).await.map(|(value, _)| ApiJson(value))
    }
}

/// The body of `req` parsed as `T`, and its bytes; every failure an [`ApiError`].
async fn read_json<S: Send + Sync, T: DeserializeOwned>(
    req: Request,
    state: &S,
) -> Result<(T, Bytes), ApiError> {
    if !is_json(req.headers()) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected `Content-Type: application/json`",
        ));
    }
    let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "request body is larger than the configured limit",
            )
        } else {
            ApiError::bad_request("invalid_body", "could not read the request body")
        }
    })?;
    // Every request body is an object: serde would also read a struct from an array
    // (`[null, null]`), which the schema does not allow.
    if bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b != b'{')
    {
        return Err(ApiError::bad_request(
            "invalid_body",
            "the body must be a JSON object",
        ));
    }
    parse(&bytes).map(|value| (value, bytes))
}

/// `bytes` parsed as `T`. The plain parse first: tracking the JSON path costs every request, and
/// only a rejected body needs it, so a failure is parsed again to name where it went wrong. Out of
/// line so that a profile (`cargo xtask bench instructions`) shows the body's parse on its own.
#[inline(never)]
fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|plain| rejection::<T>(bytes, plain))
}

/// The API error for a body that did not parse as `T`, with the JSON path of the problem (`plain`
/// is the error of the parse without a path, reported should the second parse disagree).
fn rejection<T: DeserializeOwned>(bytes: &[u8], plain: serde_json::Error) -> ApiError {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let (path, inner) = match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Err(err) => (err.path().to_string(), err.into_inner()),
        Ok(_) if de.end().is_err() => {
            return ApiError::bad_request("invalid_json", "malformed JSON: trailing characters");
        }
        Ok(_) => (".".to_owned(), plain),
    };
    match inner.classify() {
        serde_json::error::Category::Data => {
            ApiError::bad_request("invalid_body", inner.to_string())
                .with_details(serde_json::json!({ "path": path }))
        }
        _ => ApiError::bad_request("invalid_json", format!("malformed JSON: {inner}")),
    }
}

impl<T: JsonSchema> OperationInput for ApiJson<T> {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        Json::<T>::operation_input(ctx, operation);
    }
}

/// Like `axum::extract::Query`, but a malformed or unknown parameter is a 400 in the API's error
/// shape (`invalid_query_params`), not axum's plain-text rejection.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> axum::extract::FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        serde_urlencoded::from_str(query)
            .map(ApiQuery)
            .map_err(|err| ApiError::bad_request("invalid_query_params", err.to_string()))
    }
}

impl<T: JsonSchema> OperationInput for ApiQuery<T> {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        axum::extract::Query::<T>::operation_input(ctx, operation);
    }
}
