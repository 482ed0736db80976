//! JWT authentication (HS256) and scope checks.
//!
//! Verification follows RFC 8725: one allowed algorithm (HS256, so `alg: none` and RS/HS confusion are
//! rejected before any signature work), `exp` required, `nbf` and `iat` checked with a small leeway,
//! `aud`/`iss` enforced when configured. Scopes come from the space-separated `scope` claim of RFC 9068,
//! so access tokens from a standard identity provider work unchanged.

use std::{fmt, sync::Arc, time::Duration};

use aide::{OperationInput, generate::GenContext, openapi::Operation};
use axum::{extract::FromRequestParts, http::request::Parts};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use resk_core::TenantId;
use serde_json::{Map, Value};

use crate::{config::JwtConfig, error::ApiError};

/// A permission carried in the token's `scope` claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// `cache:read`: query the cache.
    Read,
    /// `cache:write`: store answers.
    Write,
    /// `cache:admin`: purge.
    Admin,
}

impl Scope {
    const ALL: [Scope; 3] = [Scope::Read, Scope::Write, Scope::Admin];

    fn bit(self) -> u8 {
        match self {
            Scope::Read => 1,
            Scope::Write => 2,
            Scope::Admin => 4,
        }
    }

    /// The claim value.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "cache:read",
            Scope::Write => "cache:write",
            Scope::Admin => "cache:admin",
        }
    }
}

/// The authenticated caller of a request. Cheap to clone.
#[derive(Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's `sub`.
    pub subject: Arc<str>,
    /// The tenant every read, write and purge of this request is confined to.
    pub tenant: TenantId,
    /// The resk scopes the token carries, as bits (other scopes are ignored).
    scopes: u8,
    /// The token's `exp` (Unix seconds) plus the configured leeway: when a long-lived connection
    /// opened with this token must end.
    valid_until: u64,
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principal")
            .field("subject", &self.subject)
            .field("tenant", &self.tenant)
            .field(
                "scopes",
                &Scope::ALL
                    .iter()
                    .filter(|s| self.has(**s))
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Principal {
    /// Unix time (seconds) after which the token no longer authenticates anything, leeway included.
    pub fn valid_until(&self) -> u64 {
        self.valid_until
    }

    /// Whether the token carries `scope`.
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes & scope.bit() != 0
    }

    /// `Ok` when the token carries `scope`, else a 403.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.has(scope) {
            Ok(())
        } else {
            metrics::counter!("resk_auth_failures_total", "reason" => "insufficient_scope")
                .increment(1);
            tracing::warn!(
                audit = "authorization_denied",
                subject = %self.subject,
                tenant = %self.tenant,
                scope = scope.as_str(),
                "token lacks the required scope"
            );
            Err(ApiError::insufficient_scope(scope.as_str()))
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| ApiError::unauthorized("missing bearer token", false))
    }
}

// Security requirements are declared per operation (with their scopes) where routes are built.
impl OperationInput for Principal {
    fn operation_input(_: &mut GenContext, _: &mut Operation) {}
}

/// Why a token was refused; the text is safe to return to the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthFailure {
    /// Short description for the `WWW-Authenticate` header and error body.
    pub description: &'static str,
    /// Metrics label.
    pub reason: &'static str,
}

/// Verifies bearer tokens.
///
/// Successfully verified tokens are remembered (keyed by the exact token text, at most
/// [`JwtVerifier::CACHE_CAPACITY`] of them, each for at most [`JwtVerifier::CACHE_TTL`] and never
/// past its own `exp`), so a client reusing its token does not pay for base64, JSON and HMAC work
/// on every request. Tokens that fail verification are never remembered.
#[derive(Clone)]
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
    tenant_claim: String,
    leeway_secs: u64,
    verified: moka::sync::Cache<Box<str>, (Principal, u64)>,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("tenant_claim", &self.tenant_claim)
            .finish_non_exhaustive()
    }
}

const fn failure(description: &'static str, reason: &'static str) -> AuthFailure {
    AuthFailure {
        description,
        reason,
    }
}

/// Longest accepted `sub`, in bytes.
const MAX_SUBJECT_LEN: usize = 256;

impl JwtVerifier {
    /// Most verified tokens remembered.
    pub const CACHE_CAPACITY: u64 = 10_000;
    /// Longest a verified token is remembered.
    pub const CACHE_TTL: Duration = Duration::from_secs(60);

    /// A verifier for `config`.
    pub fn new(config: &JwtConfig) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        // A configured audience or issuer must be present, not merely correct when present.
        let mut required = vec!["exp"];
        if config.audience.is_some() {
            required.push("aud");
        }
        if config.issuer.is_some() {
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = config.leeway.as_secs();
        match &config.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &config.issuer {
            validation.set_issuer(&[iss]);
        }
        Self {
            key: DecodingKey::from_secret(&config.secret),
            validation,
            tenant_claim: config.tenant_claim.clone(),
            leeway_secs: config.leeway.as_secs(),
            verified: moka::sync::Cache::builder()
                .max_capacity(Self::CACHE_CAPACITY)
                .time_to_live(Self::CACHE_TTL)
                .build(),
        }
    }

    /// Verify `token` and return who it speaks for.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthFailure> {
        let now = jsonwebtoken::get_current_timestamp();
        if let Some((principal, exp)) = self.verified.get(token) {
            if now <= exp.saturating_add(self.leeway_secs) {
                return Ok(principal);
            }
            self.verified.invalidate(token);
        }
        let (principal, exp) = self.verify_uncached(token, now)?;
        self.verified.insert(token.into(), (principal.clone(), exp));
        Ok(principal)
    }

    fn verify_uncached(&self, token: &str, now: u64) -> Result<(Principal, u64), AuthFailure> {
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &self.validation)
            .map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => failure("token expired", "expired"),
            ErrorKind::ImmatureSignature => failure("token not yet valid", "not_yet_valid"),
            ErrorKind::InvalidSignature => failure("invalid signature", "bad_signature"),
            ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
                failure("algorithm not allowed", "bad_algorithm")
            }
            ErrorKind::InvalidAudience => failure("invalid audience", "bad_audience"),
            ErrorKind::InvalidIssuer => failure("invalid issuer", "bad_issuer"),
            ErrorKind::MissingRequiredClaim(_) => {
                failure("token lacks a required claim", "missing_claim")
            }
            _ => failure("malformed token", "malformed"),
        })?;
        let claims = data.claims;
        // jsonwebtoken has checked `exp` is present and a number not in the past.
        let exp = claims
            .get("exp")
            .and_then(Value::as_f64)
            .unwrap_or(0.0)
            .max(0.0) as u64;
        match claims.get("iat") {
            None => {}
            Some(Value::Number(n)) => {
                let issued = n.as_f64().unwrap_or(f64::MAX);
                if issued > (now + self.leeway_secs) as f64 {
                    return Err(failure("token issued in the future", "bad_iat"));
                }
            }
            Some(_) => return Err(failure("malformed iat claim", "bad_iat")),
        }
        let subject = match claims.get("sub") {
            Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_SUBJECT_LEN => {
                Arc::from(s.as_str())
            }
            _ => return Err(failure("token needs a sub claim", "bad_subject")),
        };
        let tenant = match claims.get(&self.tenant_claim) {
            None | Some(Value::Null) => TenantId::default_tenant(),
            Some(Value::String(s)) => {
                TenantId::new(s).map_err(|_| failure("invalid tenant claim", "bad_tenant"))?
            }
            Some(_) => return Err(failure("invalid tenant claim", "bad_tenant")),
        };
        let scopes = match claims.get("scope") {
            None => 0,
            Some(Value::String(s)) => s
                .split_ascii_whitespace()
                .filter_map(|claimed| Scope::ALL.into_iter().find(|s| s.as_str() == claimed))
                .fold(0, |bits, s| bits | s.bit()),
            Some(_) => return Err(failure("scope claim must be a string", "bad_scope")),
        };
        Ok((
            Principal {
                subject,
                tenant,
                scopes,
                valid_until: exp.saturating_add(self.leeway_secs),
            },
            exp,
        ))
    }
}

/// Mint an HS256 token for `sub` with `scope`, valid for `ttl_secs`.
pub fn mint(
    config: &JwtConfig,
    sub: &str,
    scope: &str,
    tenant: Option<&str>,
    ttl_secs: u64,
) -> resk_core::Result<String> {
    let err =
        |msg: String| resk_core::Error::new(resk_core::ErrorKind::InvalidInput, "jwt", "mint", msg);
    if let Some(t) = tenant {
        TenantId::new(t).map_err(|e| err(e.message().to_owned()))?;
    }
    let now = jsonwebtoken::get_current_timestamp();
    let mut claims = Map::new();
    claims.insert("sub".into(), Value::from(sub));
    claims.insert("scope".into(), Value::from(scope));
    claims.insert("iat".into(), Value::from(now));
    claims.insert("exp".into(), Value::from(now + ttl_secs));
    if let Some(t) = tenant {
        claims.insert(config.tenant_claim.clone(), Value::from(t));
    }
    if let Some(aud) = &config.audience {
        claims.insert("aud".into(), Value::from(aud.as_str()));
    }
    if let Some(iss) = &config.issuer {
        claims.insert("iss".into(), Value::from(iss.as_str()));
    }
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(&config.secret),
    )
    .map_err(|e| err(format!("could not sign token: {e}")))
}
