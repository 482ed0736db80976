//! `Idempotency-Key` on `POST /api/cache`: a retried write returns the original result instead of
//! writing again; the same key with a different body is a 409; keys expire.
//!
//! A key is scoped to the caller (tenant and subject), so two users cannot collide or see each
//! other's results. The record (a digest of the body, the status and the answer) is kept in the
//! cache backend itself under the reserved tenant, encrypted like any entry, so every instance on a
//! shared Redis sees it and a SQLite deployment keeps it across restarts. The record name is a keyed
//! digest of tenant, subject and key.
//!
//! The first request with a key claims it before it runs, with an atomic write-if-absent of a
//! "pending" record (`CacheStore::set` with `if_absent`: `SET NX` on Redis, `INSERT … ON CONFLICT`
//! on SQLite, moka's entry API in memory), so of two requests with one key arriving together
//! exactly one runs; the other gets 409 `idempotency_key_in_progress` (retry it: it then gets the
//! first one's answer). A claim whose request fails is released, so a retry runs; one whose
//! server died lapses after [`PENDING_TTL`].

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
use resk_core::{CacheKey, CacheStore, Result, SetOptions, SharedCacheStore, TenantId};
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

/// How long a claim of a request still running is kept: longer than any request may take, short
/// enough that a key whose server died during the request is usable again soon after.
pub const PENDING_TTL: Duration = Duration::from_secs(120);

/// What is remembered of a request.
#[derive(Serialize, Deserialize)]
struct Record {
    /// SHA-256 of the request body, hex.
    fingerprint: String,
    /// The status answered; 0 while the request runs.
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

/// The outcome of claiming a slot.
pub(crate) enum Seen {
    /// Never seen (or expired): the slot is this request's now; run it.
    New,
    /// Seen with the same body and answered: answer this again.
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

    /// Claim the slot for this request, or say how it was answered before: 409
    /// `idempotency_key_reused` if the key came with another body, 409
    /// `idempotency_key_in_progress` while the first request with it still runs.
    pub(crate) async fn claim(
        &self,
        cache: &SharedCacheStore,
    ) -> std::result::Result<Seen, ApiError> {
        // A claim that lapses between our failed write and our read: try again (twice at most).
        for _ in 0..3 {
            let pending = self.encode(0, &serde_json::Value::Null)?;
            let options = SetOptions::ttl(PENDING_TTL).if_absent();
            if cache.set(&self.key, pending, options).await? {
                return Ok(Seen::New);
            }
            let Some(stored) = cache.get(&self.key).await? else {
                continue;
            };
            let Ok(record) = serde_json::from_slice::<Record>(&stored.bytes) else {
                // Unreadable (another version's format): take the slot over.
                cache
                    .set(
                        &self.key,
                        self.encode(0, &serde_json::Value::Null)?,
                        SetOptions::ttl(PENDING_TTL),
                    )
                    .await?;
                return Ok(Seen::New);
            };
            if record.fingerprint != self.fingerprint {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "idempotency_key_reused",
                    "this Idempotency-Key was used with a different request body",
                ));
            }
            if record.status == 0 {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "idempotency_key_in_progress",
                    "a request with this Idempotency-Key is still running; retry shortly to get \
                     its answer",
                ));
            }
            let status = StatusCode::from_u16(record.status).unwrap_or(StatusCode::OK);
            return Ok(Seen::Replay(
                status,
                Bytes::from(record.body.get().to_owned()),
            ));
        }
        Err(ApiError::new(
            StatusCode::CONFLICT,
            "idempotency_key_in_progress",
            "a request with this Idempotency-Key is still running; retry shortly to get its answer",
        ))
    }

    /// Give the slot up (the request failed): a retry with the key runs again.
    pub(crate) async fn release(&self, cache: &SharedCacheStore) -> Result<()> {
        cache.delete(&self.key).await.map(|_| ())
    }

    fn encode<T: Serialize>(&self, status: u16, body: &T) -> Result<Bytes> {
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
            status,
            body,
        };
        Ok(Bytes::from(serde_json::to_vec(&record).map_err(encoding)?))
    }

    /// Remember that this request was answered `status` with `body`, for `ttl`.
    pub(crate) async fn record<T: Serialize>(
        &self,
        cache: &SharedCacheStore,
        status: StatusCode,
        body: &T,
        ttl: Duration,
    ) -> Result<()> {
        let bytes = self.encode(status.as_u16(), body)?;
        cache
            .set(&self.key, bytes, SetOptions::ttl(ttl))
            .await
            .map(|_| ())
    }
}
