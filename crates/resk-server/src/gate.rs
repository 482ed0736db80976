//! The gate every request passes: authentication and rate limiting, inside the request time limit.
//!
//! It runs in the one outer middleware ([`pipeline`]) rather than as a separate layer, because each
//! axum `from_fn` layer costs a boxed future and a service clone on every request. It fails closed:
//! every route needs a token unless the route table ([`crate::table`]) marks it public, and handlers take their
//! [`crate::auth::Principal`] from what the gate stored, so a handler reached without the gate answers
//! 401.

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    extract::{ConnectInfo, MatchedPath, Request, State},
    http::{HeaderValue, StatusCode, header::HeaderName},
    middleware::Next,
    response::{IntoResponse, Response},
};
use tracing::Instrument as _;

use crate::{
    auth::{AuthFailure, JwtVerifier},
    error::ApiError,
    ratelimit::{Decision, RateLimiter},
    telemetry,
};

/// What the gate needs.
#[derive(Debug)]
pub(crate) struct Gate {
    pub(crate) verifier: JwtVerifier,
    /// Whether the server speaks HTTPS (then answers carry HSTS).
    pub(crate) tls: bool,
    /// Peers whose `X-Forwarded-For` is believed.
    pub(crate) trusted_proxies: Vec<ipnet::IpNet>,
    pub(crate) revocations: std::sync::Arc<crate::revoke::Revocations>,
    pub(crate) limiter: Arc<dyn RateLimiter>,
    pub(crate) rates: crate::ratelimit::RateLimitConfig,
    pub(crate) timeout: Duration,
    /// The largest request body a handler reads (`MAX_BODY_BYTES`).
    pub(crate) max_body_bytes: usize,
    /// The time limit of gateway requests (`/v1/...`), which wait for a model.
    pub(crate) gateway_timeout: Duration,
    /// `resk_layer_duration_seconds{layer="auth"}`, registered once (the recorder must exist first).
    pub(crate) auth_seconds: metrics::Histogram,
    /// `resk_layer_duration_seconds{layer="rate_limit"}`, registered once.
    pub(crate) rate_limit_seconds: metrics::Histogram,
}

/// Whether a request needs a token: every matched route that is not public, and any unmatched path
/// under `/api` (so probing unknown API paths reveals nothing without a token).
fn needs_token(matched: Option<&str>, path: &str) -> bool {
    match matched {
        Some(route) => crate::table::find(route).is_none_or(|r| !r.public),
        None => path == "/api" || path.starts_with("/api/"),
    }
}

/// A request body that records when it has been read to its end, so a request that runs out of time
/// can be told apart: still waiting for the client's body (408, the client's doing) or for resk and
/// its backends (503).
struct WatchedBody {
    inner: axum::body::Body,
    done: Arc<AtomicBool>,
}

impl http_body::Body for WatchedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.done.store(true, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The outer middleware: telemetry around (time limit around (gate, then the handler)).
pub(crate) async fn pipeline(State(gate): State<Arc<Gate>>, req: Request, next: Next) -> Response {
    telemetry::observe(req, |req| async move {
        use http_body::Body as _;
        let openai = crate::gateway::is_gateway_path(req.uri().path());
        let timeout = if openai {
            gate.gateway_timeout
        } else {
            gate.timeout
        };
        let body_done = Arc::new(AtomicBool::new(req.body().is_end_stream()));
        let req = if body_done.load(Ordering::Relaxed) {
            req
        } else {
            let done = body_done.clone();
            req.map(|inner| axum::body::Body::new(WatchedBody { inner, done }))
        };
        let mut response = match tokio::time::timeout(timeout, gate.admit(req, next)).await {
            Ok(response) => response,
            Err(_) if !body_done.load(Ordering::Relaxed) => ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the request body did not arrive in time",
            )
            .into_response(),
            Err(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                "request timed out",
            )
            .into_response(),
        };
        if openai {
            crate::gateway::in_openai_format(&mut response);
        }
        secure(&mut response, gate.tls);
        response
    })
    .await
}

/// The bearer token: from `Authorization`, or, on the WebSocket route only, from a
/// `bearer.<token>` subprotocol (browsers cannot set headers on a WebSocket; see [`crate::ws`]).
fn bearer<'r>(req: &'r Request, matched: Option<&str>) -> Option<&'r str> {
    if let Some(value) = req.headers().get(axum::http::header::AUTHORIZATION) {
        let (scheme, token) = value.to_str().ok()?.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim())
            .filter(|t| !t.is_empty());
    }
    if matched != Some(crate::table::WS) {
        return None;
    }
    req.headers()
        .get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().strip_prefix(crate::ws::TOKEN_PROTOCOL_PREFIX))
        .filter(|t| !t.is_empty())
}

static RATE_LIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static RATE_LIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RATE_LIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The 429 answer, with `Retry-After` and `RateLimit-*` headers.
fn limited(key_type: &'static str, limit: u32, retry_after: Duration) -> Response {
    metrics::counter!("resk_rate_limited_total", "key_type" => key_type).increment(1);
    let secs = ceil_secs(retry_after).max(1);
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        if key_type == "tenant" {
            format!("the tenant's request quota is exhausted; retry in {secs} s")
        } else {
            format!("rate limit exceeded; retry in {secs} s")
        },
    )
    .with_header(axum::http::header::RETRY_AFTER, HeaderValue::from(secs))
    .with_header(RATE_LIMIT_LIMIT.clone(), HeaderValue::from(limit))
    .with_header(RATE_LIMIT_REMAINING.clone(), HeaderValue::from(0u32))
    .with_header(RATE_LIMIT_RESET.clone(), HeaderValue::from(secs))
    .into_response()
}

/// Headers every answer carries: the API serves JSON to programs, never pages to browsers, and its
/// answers are private (`no-store` keeps shared caches and proxies from keeping them).
fn secure(response: &mut Response, tls: bool) {
    use axum::http::header;
    let headers = response.headers_mut();
    if tls && !headers.contains_key(header::STRICT_TRANSPORT_SECURITY) {
        // Two years, the preload-list minimum; only ever sent over HTTPS (RFC 6797 §7.2).
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=63072000; includeSubDomains"),
        );
    }
    for (name, value) in &SECURITY_HEADERS {
        // One hash per header (`entry`) instead of two (`contains_key`, then `insert`), and a
        // value checked once, not on every answer (cloning a static value copies no bytes).
        headers.entry(*name).or_insert_with(|| value.clone());
    }
}

static CROSS_ORIGIN_OPENER_POLICY: HeaderName =
    HeaderName::from_static("cross-origin-opener-policy");
static CROSS_ORIGIN_RESOURCE_POLICY: HeaderName =
    HeaderName::from_static("cross-origin-resource-policy");

/// The headers [`secure`] adds to every answer that does not set its own.
static SECURITY_HEADERS: [(&HeaderName, HeaderValue); 7] = [
    (
        &axum::http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    ),
    (
        &axum::http::header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    ),
    (
        &axum::http::header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
    ),
    (
        &axum::http::header::X_FRAME_OPTIONS,
        HeaderValue::from_static("DENY"),
    ),
    (
        &CROSS_ORIGIN_OPENER_POLICY,
        HeaderValue::from_static("same-origin"),
    ),
    (
        &CROSS_ORIGIN_RESOURCE_POLICY,
        HeaderValue::from_static("same-origin"),
    ),
    (
        &axum::http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    ),
];

/// The client behind `peer`: `peer` itself, unless it is a trusted proxy, in which case the
/// right-most `X-Forwarded-For` address that is not a trusted proxy (the left part of the header is
/// whatever the client wrote, so it is never believed).
pub(crate) fn client_ip(
    peer: Option<std::net::IpAddr>,
    forwarded: &[&str],
    trusted: &[ipnet::IpNet],
) -> Option<std::net::IpAddr> {
    let is_trusted = |ip: &std::net::IpAddr| trusted.iter().any(|n| n.contains(ip));
    let peer = peer?;
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let mut client = peer;
    for hop in forwarded.iter().rev().flat_map(|h| h.rsplit(',')) {
        let Ok(ip) = hop.trim().parse::<std::net::IpAddr>() else {
            // Garbage in the chain: stop at the last address we could trust.
            break;
        };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    Some(client)
}

/// The rate-limit key of a client address. An IPv6 client is keyed by its /64: one host or site
/// gets a whole /64, so keying single addresses would give it 2^64 fresh quotas.
fn ip_key(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let net = ipnet::Ipv6Net::new(v6, 64).map_or(v6, |n| n.network());
                format!("{net}/64")
            }
        },
    }
}

impl Gate {
    /// The client's address (`X-Forwarded-For` is read only when the peer is a trusted proxy).
    fn client_ip(&self, req: &Request) -> Option<std::net::IpAddr> {
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        if !peer.is_some_and(|ip| self.trusted_proxies.iter().any(|n| n.contains(&ip))) {
            return peer;
        }
        let forwarded: Vec<&str> = req
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        client_ip(peer, &forwarded, &self.trusted_proxies)
    }

    /// One limiter check, as its own span and timed as the `rate_limit` layer.
    async fn check(&self, key: &str, rate: crate::ratelimit::Rate) -> Decision {
        let start = std::time::Instant::now();
        let decision = self
            .limiter
            .check(key, rate)
            .instrument(tracing::debug_span!("rate_limit"))
            .await;
        self.rate_limit_seconds
            .record(start.elapsed().as_secs_f64());
        decision
    }

    async fn revoked(&self, principal: &crate::auth::Principal) -> bool {
        match &principal.revocation_id {
            Some(id) => self.revocations.is_revoked_ident(id).await,
            None => false,
        }
    }

    /// The rest of the stack (the handler), under the configured body limit. Set here rather than
    /// as a router layer (`DefaultBodyLimit`), where it would cost every request a boxed clone of
    /// the route's service and a boxed future.
    async fn run(&self, req: Request, next: Next) -> Response {
        use tower::{Layer as _, ServiceExt as _};
        match axum::extract::DefaultBodyLimit::max(self.max_body_bytes)
            .layer(next)
            .oneshot(req)
            .await
        {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }

    /// Verify the bearer token, apply the rate limit (per subject; per IP for requests without a
    /// valid token), hand the principal to the handler and add the `RateLimit-*` headers.
    async fn admit(&self, mut req: Request, next: Next) -> Response {
        let matched = req
            .extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str);
        if !needs_token(matched, req.uri().path()) {
            return self.run(req, next).await;
        }
        let token = bearer(&req, matched);
        let token_present = token.is_some();
        // The client address is read only when it is charged (a token that must be verified, or
        // none): a remembered token's request is charged to its subject alone.
        let client = self.client_ip(&req);
        let ip_key = || format!("ip:{}", client.map_or_else(|| "unknown".into(), ip_key));
        let recall_start = std::time::Instant::now();
        let recalled = token.and_then(|t| self.verifier.recall(t));
        let recall_time = recall_start.elapsed();
        // A token not verified recently costs signature work: charge the client address first, so
        // a flood of forged or made-up tokens is refused before any of that work.
        let mut ip_decision = None;
        let fresh = token.is_some() && recalled.is_none();
        if fresh {
            let decision = self.check(&ip_key(), self.rates.subject_rate()).await;
            if let Decision::Limited { limit, retry_after } = decision {
                return limited("ip", limit, retry_after);
            }
            ip_decision = Some(decision);
        }
        let auth_start = std::time::Instant::now();
        let verified = async {
            let verified = match (recalled, token) {
                (Some(principal), _) => Ok(principal),
                // Boxed: verification may fetch the JWKS (an HTTP client's future), which every
                // request's future would otherwise carry and copy; a remembered token skips it.
                (None, Some(token)) => Box::pin(self.verifier.verify(token)).await,
                (None, None) => Err(AuthFailure {
                    description: "missing bearer token",
                    reason: "missing",
                }),
            };
            match verified {
                Ok(p) if self.revoked(&p).await => Err(AuthFailure {
                    description: "token revoked",
                    reason: "revoked",
                }),
                Ok(p) => {
                    // First verified here: its tenant's administrators may now revoke it by jti.
                    if fresh && let Some(id) = &p.revocation_id {
                        self.revocations.note_seen(id, p.valid_until()).await;
                    }
                    Ok(p)
                }
                other => other,
            }
        }
        .instrument(tracing::debug_span!("auth"))
        .await;
        self.auth_seconds
            .record((recall_time + auth_start.elapsed()).as_secs_f64());
        let rate = self.rates.subject_rate();
        let (decision, key_type) = match (&verified, ip_decision) {
            (Ok(p), _) => (self.check(&p.rate_key, rate).await, "subject"),
            // Already charged to the address above.
            (Err(_), Some(d)) => (d, "ip"),
            (Err(_), None) => (self.check(&ip_key(), rate).await, "ip"),
        };
        let (mut limit, mut remaining, mut reset) = match decision {
            Decision::Allowed {
                limit,
                remaining,
                reset,
            } => (limit, remaining, reset),
            Decision::Limited { limit, retry_after } => {
                return limited(key_type, limit, retry_after);
            }
        };
        // The tenant's quota, spent only by requests its subject's own limit let through; the
        // headers describe whichever of the two runs out first.
        if let Ok(p) = &verified
            && let Some(tenant_rate) = self.rates.tenant_rate(&p.tenant)
        {
            match self
                .check(&format!("tenant:{}", p.tenant), tenant_rate)
                .await
            {
                Decision::Limited { limit, retry_after } => {
                    return limited("tenant", limit, retry_after);
                }
                Decision::Allowed {
                    limit: l,
                    remaining: r,
                    reset: t,
                } if r < remaining => (limit, remaining, reset) = (l, r, t),
                Decision::Allowed { .. } => {}
            }
        }
        let principal = match verified {
            Ok(principal) => principal,
            Err(failure) => {
                metrics::counter!("resk_auth_failures_total", "reason" => failure.reason)
                    .increment(1);
                tracing::warn!(
                    audit = "authentication_failed",
                    reason = failure.reason,
                    "token rejected"
                );
                return ApiError::unauthorized(failure.description, token_present).into_response();
            }
        };
        req.extensions_mut().insert(principal);
        let mut response = self.run(req, next).await;
        let headers = response.headers_mut();
        headers.insert(RATE_LIMIT_LIMIT.clone(), HeaderValue::from(limit));
        headers.insert(RATE_LIMIT_REMAINING.clone(), HeaderValue::from(remaining));
        headers.insert(
            RATE_LIMIT_RESET.clone(),
            HeaderValue::from(ceil_secs(reset)),
        );
        response
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        let key = |s: &str| ip_key(s.parse().unwrap());
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:ffff:1:2:3"));
        assert_eq!(key("2001:db8:1:2::9"), "2001:db8:1:2::/64");
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let trusted: Vec<ipnet::IpNet> = vec![
            "10.0.0.0/8".parse().unwrap(),
            "192.0.2.1/32".parse().unwrap(),
        ];
        // An untrusted peer: the header is ignored, whatever it says.
        assert_eq!(
            client_ip(Some(ip("203.0.113.9")), &["1.2.3.4"], &trusted),
            Some(ip("203.0.113.9"))
        );
        // A trusted proxy: the right-most untrusted hop is the client; spoofed left parts are not.
        assert_eq!(
            client_ip(
                Some(ip("10.1.1.1")),
                &["6.6.6.6, 198.51.100.7, 10.2.2.2"],
                &trusted
            ),
            Some(ip("198.51.100.7"))
        );
        assert_eq!(
            client_ip(
                Some(ip("192.0.2.1")),
                &["6.6.6.6", "198.51.100.7"],
                &trusted
            ),
            Some(ip("198.51.100.7")),
            "several headers read as one list"
        );
        // Garbage: the last trusted hop stands.
        assert_eq!(
            client_ip(Some(ip("10.1.1.1")), &["not-an-ip"], &trusted),
            Some(ip("10.1.1.1"))
        );
        assert_eq!(
            client_ip(Some(ip("10.1.1.1")), &[], &trusted),
            Some(ip("10.1.1.1"))
        );
        assert_eq!(client_ip(None, &["1.2.3.4"], &trusted), None);
    }

    #[test]
    fn every_route_needs_a_token_unless_public() {
        for route in crate::table::ROUTES {
            assert_eq!(
                needs_token(Some(route.path), route.path),
                !route.public,
                "{}",
                route.path
            );
        }
        assert!(needs_token(
            Some("/api/some-future-route"),
            "/api/some-future-route"
        ));
        assert!(needs_token(None, "/api/unknown"));
        assert!(needs_token(None, "/api"));
        assert!(!needs_token(None, "/favicon.ico"));
        assert!(!needs_token(None, "/apix"));
    }
}
