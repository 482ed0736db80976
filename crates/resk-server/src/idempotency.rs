//! `Idempotency-Key` on `POST /api/cache`: a retried write returns the original result instead of
//! writing again; the same key with a different body is a 409; keys expire.
//!
//! A key is scoped to the caller (tenant and subject), so two users cannot collide or see each
//! other's results. The record (a digest of the body, the status and the answer) is kept in the
//! cache backend itself under the reserved tenant, encrypted like any entry, so every instance on a
//! shared Redis sees it and a SQLite deployment keeps it across restarts. The record name is a keyed
//! digest of tenant, subject and key. Two requests with one key arriving at the same moment may
//! both run (a write is idempotent in effect: same key, same value); they are not serialised.

use std::time::Duration;

use aide::{
    OperationInput,
    generate::GenContext,
    openapi::Operation,
    operation::{ParamLocation, add_parameters, parameters_from_schema},
};
use axum::{
    extract::FromRequestParts,
    http::{StatusCode, request::Parts},
};
use bytes::Bytes;
use resk_core::{CacheKey, CacheStore, Result, SharedCacheStore, TenantId};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{auth::Principal, error::ApiError};

/// The header's name.
pub const HEADER: &str = "idempotency-key";
/// Longest accepted key, in bytes.
pub const MAX_LEN: usize = 255;

/// What the OpenAPI document says of the header.
#[derive(JsonSchema)]
#[allow(dead_code)] // only its schema is used
struct IdempotencyHeader {
    /// Makes the write safe to retry: a request repeating an earlier one's key (same caller, within
    /// `IDEMPOTENCY_TTL_SECS`) gets the earlier answer without writing again, or 409 if its body
    /// differs. 1-255 visible ASCII characters, e.g. a UUID.
    #[serde(rename = "Idempotency-Key")]
    #[schemars(length(min = 1, max = 255), regex(pattern = r"^[!-~]+$"))]
    idempotency_key: Option<String>,
}

/// The optional `Idempotency-Key` of a request, validated.
#[derive(Debug, Clone, Default)]
pub struct IdempotencyKey(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> std::result::Result<Self, ApiError> {
        let Some(value) = parts.headers.get(HEADER) else {
            return Ok(Self(None));
        };
        let bad = || {
            ApiError::bad_request(
                "invalid_idempotency_key",
                format!("Idempotency-Key must be 1-{MAX_LEN} visible ASCII characters"),
            )
        };
        let text = value.to_str().map_err(|_| bad())?;
        if text.is_empty() || text.len() > MAX_LEN || !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad());
        }
        Ok(Self(Some(text.to_owned())))
    }
}

impl OperationInput for IdempotencyKey {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        let schema = ctx.schema.subschema_for::<IdempotencyHeader>();
        let params = parameters_from_schema(ctx, schema, ParamLocation::Header);
        add_parameters(ctx, operation, params);
    }
}

/// What is remembered of a request.
#[derive(Serialize, Deserialize)]
struct Record {
    /// SHA-256 of the request body, hex.
    fingerprint: String,
    /// The status answered.
    status: u16,
    /// The answer, raw JSON.
    body: Box<serde_json::value::RawValue>,
}

/// One request's place in the idempotency records.
#[derive(Debug)]
pub(crate) struct Slot {
    key: CacheKey,
    fingerprint: String,
}

/// The outcome of looking a slot up.
pub(crate) enum Seen {
    /// Never seen (or expired): run the request.
    New,
    /// Seen with the same body: answer this again.
    Replay(StatusCode, Bytes),
}

impl Slot {
    /// The slot of `key` for `principal`'s request whose body hashes to `digest`.
    pub(crate) fn new(
        keys: &resk_core::KeyBuilder,
        principal: &Principal,
        key: &str,
        digest: &[u8; 32],
    ) -> Result<Self> {
        let scoped = format!("{}\u{0}{}\u{0}{key}", principal.tenant, principal.subject);
        let tenant = TenantId::new(crate::revoke::RESERVED_TENANT)?;
        let name = format!("idem:{}", keys.pseudonym("idempotency", &scoped));
        Ok(Self {
            key: CacheKey::new(tenant, name)?,
            fingerprint: digest.iter().map(|b| format!("{b:02x}")).collect(),
        })
    }

    /// Whether this request was seen; 409 if the key was used with another body.
    pub(crate) async fn check(
        &self,
        cache: &SharedCacheStore,
    ) -> std::result::Result<Seen, ApiError> {
        let Some(stored) = cache.get(&self.key).await? else {
            return Ok(Seen::New);
        };
        let Ok(record) = serde_json::from_slice::<Record>(&stored.bytes) else {
            // Unreadable (another version's format): treat as unseen.
            return Ok(Seen::New);
        };
        if record.fingerprint != self.fingerprint {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different request body",
            ));
        }
        let status = StatusCode::from_u16(record.status).unwrap_or(StatusCode::OK);
        Ok(Seen::Replay(
            status,
            Bytes::from(record.body.get().to_owned()),
        ))
    }

    /// Remember that this request was answered `status` with `body`, for `ttl`.
    pub(crate) async fn record<T: Serialize>(
        &self,
        cache: &SharedCacheStore,
        status: StatusCode,
        body: &T,
        ttl: Duration,
    ) -> Result<()> {
        let encoding = |e: serde_json::Error| {
            resk_core::Error::new(
                resk_core::ErrorKind::Backend,
                "idempotency",
                "record",
                e.to_string(),
            )
        };
        let body = serde_json::value::to_raw_value(body).map_err(encoding)?;
        let record = Record {
            fingerprint: self.fingerprint.clone(),
            status: status.as_u16(),
            body,
        };
        let bytes = serde_json::to_vec(&record).map_err(encoding)?;
        cache.set(&self.key, Bytes::from(bytes), Some(ttl)).await
    }
}
