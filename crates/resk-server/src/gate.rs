//! The gate every request passes: authentication and rate limiting, inside the request time limit.
//!
//! It runs in the one outer middleware ([`pipeline`]) rather than as a separate layer, because each
//! axum `from_fn` layer costs a boxed future and a service clone on every request. It fails closed:
//! every route needs a token unless it is listed in [`PUBLIC_ROUTES`], and handlers take their
//! [`crate::auth::Principal`] from what the gate stored, so a handler reached without the gate answers
//! 401.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    extract::{ConnectInfo, MatchedPath, Request, State},
    http::{HeaderValue, StatusCode, header::HeaderName},
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::{
    auth::{AuthFailure, JwtVerifier},
    error::ApiError,
    ratelimit::{Decision, RateLimiter},
    telemetry,
};

/// Routes served without a token.
pub(crate) const PUBLIC_ROUTES: &[&str] =
    &["/health", "/ready", "/api/openapi.json", "/api/metrics"];

/// What the gate needs.
#[derive(Debug)]
pub(crate) struct Gate {
    pub(crate) verifier: JwtVerifier,
    pub(crate) limiter: Arc<dyn RateLimiter>,
    pub(crate) timeout: Duration,
}

/// Whether a request needs a token: every matched route that is not public, and any unmatched path
/// under `/api` (so probing unknown API paths reveals nothing without a token).
fn needs_token(matched: Option<&str>, path: &str) -> bool {
    match matched {
        Some(route) => !PUBLIC_ROUTES.contains(&route),
        None => path == "/api" || path.starts_with("/api/"),
    }
}

/// The outer middleware: telemetry around (time limit around (gate, then the handler)).
pub(crate) async fn pipeline(State(gate): State<Arc<Gate>>, req: Request, next: Next) -> Response {
    telemetry::observe(req, |req| async move {
        match tokio::time::timeout(gate.timeout, gate.admit(req, next)).await {
            Ok(response) => response,
            Err(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                "request timed out",
            )
            .into_response(),
        }
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
    if matched != Some(crate::ws::ROUTE) {
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

impl Gate {
    /// Verify the bearer token, apply the rate limit (per subject; per IP for requests without a
    /// valid token), hand the principal to the handler and add the `RateLimit-*` headers.
    async fn admit(&self, mut req: Request, next: Next) -> Response {
        let matched = req
            .extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str);
        if !needs_token(matched, req.uri().path()) {
            return next.run(req).await;
        }
        let token = bearer(&req, matched);
        let token_present = token.is_some();
        let verified = match token {
            Some(token) => self.verifier.verify(token),
            None => Err(AuthFailure {
                description: "missing bearer token",
                reason: "missing",
            }),
        };
        let (limit_key, key_type) = match &verified {
            Ok(p) => (format!("sub:{}:{}", p.tenant, p.subject), "subject"),
            Err(_) => {
                let ip = req
                    .extensions()
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|ConnectInfo(addr)| addr.ip().to_string())
                    .unwrap_or_else(|| "unknown".into());
                (format!("ip:{ip}"), "ip")
            }
        };
        let (limit, remaining, reset) = match self.limiter.check(&limit_key).await {
            Decision::Allowed {
                limit,
                remaining,
                reset,
            } => (limit, remaining, reset),
            Decision::Limited { limit, retry_after } => {
                metrics::counter!("resk_rate_limited_total", "key_type" => key_type).increment(1);
                let secs = ceil_secs(retry_after).max(1);
                return ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!("rate limit exceeded; retry in {secs} s"),
                )
                .with_header(axum::http::header::RETRY_AFTER, HeaderValue::from(secs))
                .with_header(RATE_LIMIT_LIMIT.clone(), HeaderValue::from(limit))
                .with_header(RATE_LIMIT_REMAINING.clone(), HeaderValue::from(0u32))
                .with_header(RATE_LIMIT_RESET.clone(), HeaderValue::from(secs))
                .into_response();
            }
        };
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
        let mut response = next.run(req).await;
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
    use super::*;

    #[test]
    fn every_route_needs_a_token_unless_public() {
        for route in crate::telemetry::ROUTES {
            assert_eq!(
                needs_token(Some(route), route),
                !PUBLIC_ROUTES.contains(route),
                "{route}"
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
