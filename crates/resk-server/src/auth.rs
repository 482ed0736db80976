//! JWT authentication and scope checks.
//!
//! Verification follows RFC 8725. Every key has exactly one algorithm: the HMAC secret its `JWT_ALGORITHM`
//! (HS256/384/512), a PEM public key its `JWT_PUBLIC_KEY_ALGORITHM` (RS*, PS256, ES256/384, EdDSA), a JWKS
//! key its `alg` (or the one its type implies). A token is checked only with keys of its header's
//! algorithm, and of its `kid` when it names one, so `alg: none`, HS/RS confusion (an HMAC over the public
//! key) and algorithm downgrades fail before any signature work. Headers that point at keys (`jku`,
//! `jwk`, `x5u`, `x5c`) are refused: keys come from configuration only. `exp` is required and bounded by
//! `JWT_MAX_LIFETIME_SECS`, `nbf` and `iat` are checked with a small leeway, `aud`/`iss` enforced when
//! configured. Scopes come from the space-separated `scope` claim of RFC 9068, so access tokens from a
//! standard identity provider work unchanged.
//!
//! JWKS: jsonwebtoken's `JwkSet` parses the document; the set is fetched on first use, used for at most
//! `JWT_JWKS_MAX_AGE_SECS`, and fetched again for an unknown `kid` at most once per
//! `JWT_JWKS_MIN_REFRESH_SECS`, so a flood of made-up `kid`s cannot turn into a flood of fetches.

use std::{
    fmt,
    sync::Arc,
    time::{Duration, Instant},
};
use zeroize::Zeroizing;

use aide::{OperationInput, generate::GenContext, openapi::Operation};
use axum::{extract::FromRequestParts, http::request::Parts};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use resk_core::TenantId;
use serde_json::{Map, Value};

use crate::error::ApiError;

/// A public key tokens may be signed with, and its one algorithm.
#[derive(Clone, Debug)]
pub struct PublicKeyConfig {
    /// `kid` the key answers to (`None`: tokens without a `kid`, or any `kid` when it is the only key).
    pub kid: Option<String>,
    /// The key's one algorithm.
    pub algorithm: jsonwebtoken::Algorithm,
    /// The PEM text (checked at start-up).
    pub pem: Vec<u8>,
}

/// Where to fetch an identity provider's keys.
#[derive(Clone, Debug)]
pub struct JwksConfig {
    /// The JWKS URL.
    pub url: String,
    /// Shortest time between two fetches.
    pub min_refresh: Duration,
    /// Longest a fetched set is used.
    pub max_age: Duration,
}

/// Resolved JWT verification settings.
#[derive(Clone)]
pub struct JwtConfig {
    /// HMAC secret (`None` when only public keys verify tokens).
    pub secret: Option<Arc<Zeroizing<Vec<u8>>>>,
    /// The algorithm of `secret`.
    pub hmac_algorithm: jsonwebtoken::Algorithm,
    /// Public keys from PEM files.
    pub public_keys: Vec<PublicKeyConfig>,
    /// An identity provider's JWKS.
    pub jwks: Option<JwksConfig>,
    /// Longest accepted token lifetime.
    pub max_lifetime: Option<Duration>,
    /// Required audience.
    pub audience: Option<String>,
    /// Required issuer.
    pub issuer: Option<String>,
    /// Tenant claim name.
    pub tenant_claim: String,
    /// Leeway for time claims.
    pub leeway: Duration,
    /// Whether the well-known development secret is in use.
    pub dev_secret: bool,
}

impl std::fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtConfig")
            .field("hmac_algorithm", &self.hmac_algorithm)
            .field("public_keys", &self.public_keys.len())
            .field("jwks", &self.jwks)
            .field("max_lifetime", &self.max_lifetime)
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .field("tenant_claim", &self.tenant_claim)
            .field("leeway", &self.leeway)
            .field("dev_secret", &self.dev_secret)
            .finish_non_exhaustive()
    }
}

/// A permission carried in the token's `scope` claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// `cache:read`: query the cache.
    Read,
    /// `cache:write`: store answers.
    Write,
    /// `cache:admin`: purge.
    Admin,
    /// `llm:invoke`: call models through the gateway (`/v1/...`).
    Invoke,
}

impl Scope {
    const ALL: [Scope; 4] = [Scope::Read, Scope::Write, Scope::Admin, Scope::Invoke];

    fn bit(self) -> u8 {
        match self {
            Scope::Read => 1,
            Scope::Write => 2,
            Scope::Admin => 4,
            Scope::Invoke => 8,
        }
    }

    /// The claim value.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "cache:read",
            Scope::Write => "cache:write",
            Scope::Admin => "cache:admin",
            Scope::Invoke => "llm:invoke",
        }
    }
}

/// The authenticated caller of a request: its [`Identity`], behind one reference count.
///
/// Cloned on every request (out of the verified-token cache, into the handler): one shared count
/// instead of one per field, so the cores serving one token's requests bounce one cache line
/// between them, not five.
#[derive(Clone, PartialEq)]
pub struct Principal(Arc<Identity>);

impl std::ops::Deref for Principal {
    type Target = Identity;

    fn deref(&self) -> &Identity {
        &self.0
    }
}

/// Who a verified token speaks for (read through a [`Principal`]).
#[derive(PartialEq)]
pub struct Identity {
    /// The token's `sub`.
    pub subject: Arc<str>,
    /// The tenant every read, write and purge of this request is confined to.
    pub tenant: TenantId,
    /// The token's `jti`, when it has one (what revocation names).
    pub jti: Option<Arc<str>>,
    /// The token's name in revocations (`tenant/jti`, [`crate::revoke::ident`]), made once when
    /// the token is verified, so the check on every request allocates nothing.
    pub(crate) revocation_id: Option<Arc<str>>,
    /// The subject's rate-limit key (`sub:tenant:subject`), made once when the token is verified.
    pub(crate) rate_key: Arc<str>,
    /// The resk scopes the token carries, as bits (other scopes are ignored).
    scopes: u8,
    /// The token's `exp` (Unix seconds) plus the configured leeway: when a long-lived connection
    /// opened with this token must end.
    valid_until: u64,
    /// Limits on how loosely the gateway may answer this caller from the cache: the token's
    /// `resk_cache` claim (`{"min_threshold", "max_age", "semantic"}`), set by whoever issues
    /// tokens for the tenant.
    pub cache_bounds: Option<resk::gateway::Bounds>,
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
    /// A writer inside the server itself (the start-up warm-up): `subject` of `tenant` with the
    /// write scope only, never from a token.
    pub(crate) fn internal_writer(subject: &str, tenant: TenantId) -> Self {
        Self(Arc::new(Identity {
            rate_key: rate_key(&tenant, subject),
            subject: Arc::from(subject),
            tenant,
            jti: None,
            revocation_id: None,
            scopes: Scope::Write.bit(),
            valid_until: u64::MAX,
            cache_bounds: None,
        }))
    }

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
    keys: Arc<Vec<VerifyKey>>,
    jwks: Option<Arc<Jwks>>,
    validation: Validation,
    tenant_claim: String,
    leeway_secs: u64,
    max_lifetime_secs: Option<u64>,
    verified: moka::sync::Cache<Box<str>, (Principal, u64), foldhash::fast::RandomState>,
}

/// A key and the one algorithm it verifies.
#[derive(Clone)]
struct VerifyKey {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

/// The decoding key of a configured PEM public key.
pub(crate) fn decoding_key(config: &PublicKeyConfig) -> jsonwebtoken::errors::Result<DecodingKey> {
    use Algorithm as A;
    match config.algorithm {
        A::RS256 | A::RS384 | A::RS512 | A::PS256 | A::PS384 | A::PS512 => {
            DecodingKey::from_rsa_pem(&config.pem)
        }
        A::ES256 | A::ES384 => DecodingKey::from_ec_pem(&config.pem),
        A::EdDSA => DecodingKey::from_ed_pem(&config.pem),
        _ => Err(ErrorKind::InvalidKeyFormat.into()),
    }
}

/// An identity provider's key set, fetched lazily and refreshed with a floor between fetches.
///
/// Verifications read the current keys without waiting: a token whose key is known verifies at
/// once, even while a refresh is under way (a stale set is refreshed in the background). Only a
/// verification that finds no key for its token (the first one, or an unknown `kid`) waits, for
/// the one fetch in flight: fetches are serialised, and one that was waited for is not repeated.
struct Jwks {
    config: JwksConfig,
    client: resk_http::Client,
    /// The keys in use, swapped whole by a refresh.
    keys: std::sync::RwLock<Arc<Vec<VerifyKey>>>,
    /// When the set was last fetched, and last tried.
    times: std::sync::Mutex<FetchTimes>,
    /// Held by the one fetch in flight.
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct FetchTimes {
    fetched: Option<Instant>,
    attempted: Option<Instant>,
}

/// The one algorithm a JWK verifies: its `alg`, or the one its key type implies; `None` for
/// symmetric keys and encryption keys, which never verify resk tokens.
fn jwk_algorithm(jwk: &jsonwebtoken::jwk::Jwk) -> Option<Algorithm> {
    use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, KeyAlgorithm, PublicKeyUse};
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    if let AlgorithmParameters::OctetKey(_) = jwk.algorithm {
        return None;
    }
    if let Some(alg) = jwk.common.key_algorithm {
        let alg = match alg {
            KeyAlgorithm::RS256 => Algorithm::RS256,
            KeyAlgorithm::RS384 => Algorithm::RS384,
            KeyAlgorithm::RS512 => Algorithm::RS512,
            KeyAlgorithm::PS256 => Algorithm::PS256,
            KeyAlgorithm::PS384 => Algorithm::PS384,
            KeyAlgorithm::PS512 => Algorithm::PS512,
            KeyAlgorithm::ES256 => Algorithm::ES256,
            KeyAlgorithm::ES384 => Algorithm::ES384,
            KeyAlgorithm::EdDSA => Algorithm::EdDSA,
            _ => return None,
        };
        return Some(alg);
    }
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => Some(Algorithm::ES256),
            EllipticCurve::P384 => Some(Algorithm::ES384),
            _ => None,
        },
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Some(Algorithm::EdDSA)
        }
        _ => None,
    }
}

impl Jwks {
    /// The keys in use, without waiting.
    fn current(&self) -> Arc<Vec<VerifyKey>> {
        match self.keys.read() {
            Ok(keys) => keys.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn times(&self) -> std::sync::MutexGuard<'_, FetchTimes> {
        self.times
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether a fetch is due: none yet, the set older than `max_age`, or `unknown_kid` — never
    /// sooner than `min_refresh` after the last attempt.
    fn due(&self, unknown_kid: bool) -> bool {
        let times = self.times();
        let now = Instant::now();
        let stale = times
            .fetched
            .is_none_or(|t| now.duration_since(t) >= self.config.max_age);
        let allowed = times
            .attempted
            .is_none_or(|t| now.duration_since(t) >= self.config.min_refresh);
        (stale || unknown_kid) && allowed
    }

    /// Fetch the set if one is due, after the fetch in flight (if any) ends; the keys then in use.
    async fn refresh(&self, unknown_kid: bool) -> Arc<Vec<VerifyKey>> {
        let asked = Instant::now();
        let _one_at_a_time = self.fetching.lock().await;
        // A fetch that started after this call asked, and ended while it waited, is its answer.
        let fetched_meanwhile = self.times().attempted.is_some_and(|t| t >= asked);
        if !fetched_meanwhile && self.due(unknown_kid) {
            self.times().attempted = Some(Instant::now());
            match self.fetch().await {
                Ok(keys) => {
                    *self
                        .keys
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(keys);
                    self.times().fetched = Some(Instant::now());
                }
                Err(e) => {
                    metrics::counter!("resk_jwks_fetch_failures_total").increment(1);
                    tracing::warn!(url = %self.config.url, error = %e, "could not fetch the JWKS; keeping the previous keys");
                }
            }
        }
        self.current()
    }

    /// Refresh a stale set in the background, unless a fetch is already in flight.
    fn refresh_in_background(self: &Arc<Self>) {
        if !self.due(false) || self.fetching.try_lock().is_err() {
            return;
        }
        let jwks = self.clone();
        tokio::spawn(async move {
            jwks.refresh(false).await;
        });
    }

    async fn fetch(&self) -> Result<Vec<VerifyKey>, String> {
        let response = self
            .client
            .get(&self.config.url)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        let set: jsonwebtoken::jwk::JwkSet = response.json().await.map_err(|e| e.to_string())?;
        metrics::counter!("resk_jwks_fetches_total").increment(1);
        Ok(set
            .keys
            .iter()
            .filter_map(|jwk| {
                let algorithm = jwk_algorithm(jwk)?;
                let key = DecodingKey::from_jwk(jwk).ok()?;
                Some(VerifyKey {
                    kid: jwk.common.key_id.clone(),
                    algorithm,
                    key,
                })
            })
            .collect())
    }
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("keys", &self.keys.len())
            .field("jwks", &self.jwks.as_ref().map(|j| j.config.url.as_str()))
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
        // The algorithm is set per key at verification; the rest is shared.
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
        let mut keys = Vec::new();
        if let Some(secret) = &config.secret {
            keys.push(VerifyKey {
                kid: None,
                algorithm: config.hmac_algorithm,
                key: DecodingKey::from_secret(secret),
            });
        }
        for k in &config.public_keys {
            // Checked when the configuration was resolved.
            if let Ok(key) = decoding_key(k) {
                keys.push(VerifyKey {
                    kid: k.kid.clone(),
                    algorithm: k.algorithm,
                    key,
                });
            }
        }
        let jwks = config.jwks.as_ref().and_then(|j| {
            let client = resk_http::client("jwks", Duration::from_secs(5)).ok()?;
            Some(Arc::new(Jwks {
                config: j.clone(),
                client,
                keys: std::sync::RwLock::default(),
                times: std::sync::Mutex::default(),
                fetching: tokio::sync::Mutex::new(()),
            }))
        });
        Self {
            keys: Arc::new(keys),
            jwks,
            validation,
            tenant_claim: config.tenant_claim.clone(),
            leeway_secs: config.leeway.as_secs(),
            max_lifetime_secs: config.max_lifetime.map(|d| d.as_secs()),
            verified: moka::sync::Cache::builder()
                .max_capacity(Self::CACHE_CAPACITY)
                .time_to_live(Self::CACHE_TTL)
                // Only tokens whose signature verified are inserted, so no client can fill it with
                // colliding keys: the seeded foldhash hashes a ~200-byte token several times
                // faster than std's SipHash, on every request.
                .build_with_hasher(foldhash::fast::RandomState::default()),
        }
    }

    /// Who `token` speaks for, when it was verified recently and is still valid (no signature
    /// work); `None` when it must be verified.
    pub fn recall(&self, token: &str) -> Option<Principal> {
        let now = jsonwebtoken::get_current_timestamp();
        self.verified
            .get(token)
            .filter(|(_, exp)| now <= exp.saturating_add(self.leeway_secs))
            .map(|(principal, _)| principal)
    }

    /// Verify `token` and return who it speaks for.
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthFailure> {
        let now = jsonwebtoken::get_current_timestamp();
        if let Some((principal, exp)) = self.verified.get(token) {
            if now <= exp.saturating_add(self.leeway_secs) {
                return Ok(principal);
            }
            self.verified.invalidate(token);
        }
        let (principal, exp) = self.verify_uncached(token, now).await?;
        self.verified.insert(token.into(), (principal.clone(), exp));
        Ok(principal)
    }

    /// The keys a token with this header may be checked with: its algorithm, and its `kid` when it
    /// names one (a key without a `kid` answers only tokens without one).
    fn candidates(keys: &[VerifyKey], alg: Algorithm, kid: Option<&str>) -> Vec<VerifyKey> {
        keys.iter()
            .filter(|k| k.algorithm == alg && k.kid.as_deref() == kid)
            .cloned()
            .collect()
    }

    async fn verify_uncached(
        &self,
        token: &str,
        now: u64,
    ) -> Result<(Principal, u64), AuthFailure> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
                failure("algorithm not allowed", "bad_algorithm")
            }
            _ => failure("malformed token", "malformed"),
        })?;
        if header.jku.is_some()
            || header.jwk.is_some()
            || header.x5u.is_some()
            || header.x5c.is_some()
        {
            return Err(failure(
                "token headers must not point at keys (jku, jwk, x5u, x5c)",
                "key_header",
            ));
        }
        let kid = header.kid.as_deref();
        let mut candidates = Self::candidates(&self.keys, header.alg, kid);
        if candidates.is_empty()
            && let Some(jwks) = &self.jwks
        {
            candidates = Self::candidates(&jwks.current(), header.alg, kid);
            if candidates.is_empty() {
                // No key for this token yet: wait for a fetch (the first, or a stale set's).
                candidates = Self::candidates(&jwks.refresh(false).await, header.alg, kid);
            } else {
                jwks.refresh_in_background();
            }
            if candidates.is_empty() && kid.is_some() {
                // A rotated-in key: fetch again (rate-limited inside).
                let keys = jwks.refresh(true).await;
                candidates = Self::candidates(&keys, header.alg, kid);
            }
        }
        if candidates.is_empty() {
            return Err(if kid.is_some() {
                failure("unknown key id", "unknown_kid")
            } else {
                failure("algorithm not allowed", "bad_algorithm")
            });
        }
        let mut last = failure("invalid signature", "bad_signature");
        let mut data = None;
        for key in &candidates {
            let mut validation = self.validation.clone();
            validation.algorithms = vec![key.algorithm];
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation) {
                Ok(d) => {
                    data = Some(d);
                    break;
                }
                Err(e) => {
                    last = match e.kind() {
                        ErrorKind::ExpiredSignature => failure("token expired", "expired"),
                        ErrorKind::ImmatureSignature => {
                            failure("token not yet valid", "not_yet_valid")
                        }
                        ErrorKind::InvalidSignature => {
                            failure("invalid signature", "bad_signature")
                        }
                        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
                            failure("algorithm not allowed", "bad_algorithm")
                        }
                        ErrorKind::InvalidAudience => failure("invalid audience", "bad_audience"),
                        ErrorKind::InvalidIssuer => failure("invalid issuer", "bad_issuer"),
                        ErrorKind::MissingRequiredClaim(_) => {
                            failure("token lacks a required claim", "missing_claim")
                        }
                        _ => failure("malformed token", "malformed"),
                    };
                }
            }
        }
        let data = data.ok_or(last)?;
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
        if let Some(max) = self.max_lifetime_secs {
            let start = claims
                .get("iat")
                .and_then(Value::as_f64)
                .map_or(now, |iat| iat.max(0.0) as u64);
            if exp.saturating_sub(start) > max.saturating_add(self.leeway_secs) {
                return Err(failure(
                    "token lifetime exceeds the allowed maximum",
                    "lifetime",
                ));
            }
        }
        let subject = match claims.get("sub") {
            Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_SUBJECT_LEN => {
                Arc::from(s.as_str())
            }
            _ => return Err(failure("token needs a sub claim", "bad_subject")),
        };
        let tenant = match claims.get(&self.tenant_claim) {
            None | Some(Value::Null) => TenantId::default_tenant(),
            Some(Value::String(s)) if s == crate::revoke::RESERVED_TENANT => {
                return Err(failure("reserved tenant", "bad_tenant"));
            }
            Some(Value::String(s)) => {
                TenantId::new(s).map_err(|_| failure("invalid tenant claim", "bad_tenant"))?
            }
            Some(_) => return Err(failure("invalid tenant claim", "bad_tenant")),
        };
        let jti = match claims.get("jti") {
            None | Some(Value::Null) => None,
            Some(Value::String(s))
                if !s.is_empty() && s.chars().count() <= crate::revoke::MAX_JTI_LEN =>
            {
                Some(Arc::from(s.as_str()))
            }
            Some(_) => return Err(failure("invalid jti claim", "bad_jti")),
        };
        let scopes = match claims.get("scope") {
            None => 0,
            Some(Value::String(s)) => s
                .split_ascii_whitespace()
                .filter_map(|claimed| Scope::ALL.into_iter().find(|s| s.as_str() == claimed))
                .fold(0, |bits, s| bits | s.bit()),
            Some(_) => return Err(failure("scope claim must be a string", "bad_scope")),
        };
        let revocation_id = jti
            .as_deref()
            .map(|jti| Arc::from(crate::revoke::ident(&tenant, jti)));
        let cache_bounds = match claims.get("resk_cache") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                resk::gateway::Bounds::from_json(v)
                    .map_err(|_| failure("invalid resk_cache claim", "bad_cache_bounds"))?,
            ),
        };
        Ok((
            Principal(Arc::new(Identity {
                rate_key: rate_key(&tenant, &subject),
                subject,
                tenant,
                jti,
                revocation_id,
                scopes,
                valid_until: exp.saturating_add(self.leeway_secs),
                cache_bounds,
            })),
            exp,
        ))
    }
}

/// The rate-limit key of a subject of a tenant.
fn rate_key(tenant: &TenantId, subject: &str) -> Arc<str> {
    Arc::from(format!("sub:{tenant}:{subject}"))
}

/// Mint a token signed with `JWT_SECRET` (its `JWT_ALGORITHM`) for `sub` with `scope`, valid for
/// `ttl_secs`.
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
    // A random id, so the token can be revoked.
    claims.insert(
        "jti".into(),
        Value::from(format!(
            "{:016x}{:016x}",
            fastrand::u64(..),
            fastrand::u64(..)
        )),
    );
    if let Some(t) = tenant {
        claims.insert(config.tenant_claim.clone(), Value::from(t));
    }
    if let Some(aud) = &config.audience {
        claims.insert("aud".into(), Value::from(aud.as_str()));
    }
    if let Some(iss) = &config.issuer {
        claims.insert("iss".into(), Value::from(iss.as_str()));
    }
    let Some(secret) = &config.secret else {
        return Err(err(
            "JWT_SECRET is not set: tokens of public-key issuers are minted by their issuer".into(),
        ));
    };
    jsonwebtoken::encode(
        &Header::new(config.hmac_algorithm),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| err(format!("could not sign token: {e}")))
}
