//! Logs, metrics and correlation ids.

use std::{future::Future, sync::OnceLock, time::Instant};

use axum::{
    extract::{MatchedPath, Request},
    http::{HeaderName, HeaderValue, Method, StatusCode},
    response::Response,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing::Instrument;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// The correlation header, echoed when valid and generated otherwise.
pub static CORRELATION_HEADER: HeaderName = HeaderName::from_static("x-correlation-id");

/// The correlation id of the current request (in request extensions).
#[derive(Clone, Debug)]
pub struct CorrelationId(pub HeaderValue);

/// Latency buckets (seconds) of every histogram: 50 µs to 10 s.
const BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// Install the process-wide Prometheus recorder once and return its handle.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(BUCKETS)
                .map(PrometheusBuilder::build_recorder)
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            // Fails only if another recorder was installed first (a test harness); then this handle
            // simply renders nothing from the facade, which is harmless.
            let _ = metrics::set_global_recorder(recorder);
            describe_metrics();
            handle
        })
        .clone()
}

fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_histogram};
    describe_counter!(
        "resk_http_requests_total",
        "HTTP requests by method, route and status."
    );
    describe_histogram!(
        "resk_http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request latency by method and route."
    );
    describe_counter!(
        "resk_cache_lookups_total",
        "Cache lookups by result (hit/miss) and source."
    );
    describe_counter!("resk_cache_writes_total", "Entries written, by backend.");
    describe_counter!(
        "resk_cache_purged_entries_total",
        "Entries removed by purges."
    );
    describe_histogram!(
        "resk_layer_duration_seconds",
        Unit::Seconds,
        "Time spent per request layer (key, cache)."
    );
    describe_counter!(
        "resk_backend_errors_total",
        "Cache backend errors by backend and operation."
    );
    describe_counter!(
        "resk_auth_failures_total",
        "Rejected tokens and scope checks, by reason."
    );
    describe_counter!(
        "resk_rate_limited_total",
        "Requests refused with 429, by key type (subject, ip, tenant)."
    );
    describe_counter!(
        "resk_rate_limit_fallbacks_total",
        "Checks limited in-process because the shared (Redis) limiter did not answer."
    );
    describe_counter!(
        "resk_crypto_open_failures_total",
        "Stored values that failed to decrypt (served as misses)."
    );
}

/// Initialise the global tracing subscriber (JSON or pretty) from `filter`.
pub fn init_tracing(filter: &str, format: LogFormat) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .flatten_event(true)
            .try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

/// Every route template the router serves; metrics label requests with one of these or `unmatched`,
/// so label values stay bounded whatever paths clients send.
pub(crate) const ROUTES: &[&str] = &[
    "/health",
    "/ready",
    "/api/cache",
    "/api/cache/query",
    "/api/cache/{key}",
    "/api/auth/revoke",
    "/api/ws",
    "/api/openapi.json",
    "/api/metrics",
];

fn route_label(path: Option<&MatchedPath>) -> &'static str {
    path.and_then(|p| ROUTES.iter().find(|r| **r == p.as_str()).copied())
        .unwrap_or("unmatched")
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

fn status_label(status: StatusCode) -> &'static str {
    const EXACT: &[(u16, &str)] = &[
        (200, "200"),
        (201, "201"),
        (400, "400"),
        (401, "401"),
        (403, "403"),
        (404, "404"),
        (405, "405"),
        (408, "408"),
        (409, "409"),
        (413, "413"),
        (415, "415"),
        (429, "429"),
        (500, "500"),
        (501, "501"),
        (503, "503"),
    ];
    let code = status.as_u16();
    if let Some((_, label)) = EXACT.iter().find(|(c, _)| *c == code) {
        return label;
    }
    match code / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}

fn valid_correlation_id(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// The outermost step of every request: assigns the correlation id, opens the request span, runs
/// `inner` inside it, records HTTP metrics with the route template (never the raw path) and logs one
/// line per request.
pub(crate) async fn observe<F, Fut>(mut req: Request, inner: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    let start = Instant::now();
    let id = req
        .headers()
        .get(&CORRELATION_HEADER)
        .filter(|v| valid_correlation_id(v))
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
                .unwrap_or(HeaderValue::from_static("invalid"))
        });
    req.extensions_mut().insert(CorrelationId(id.clone()));
    let route = route_label(req.extensions().get::<MatchedPath>());
    let method = method_label(req.method());
    let span = tracing::info_span!(
        "request",
        correlation_id = %id.to_str().unwrap_or_default(),
        method,
        route,
    );
    let mut response = inner(req).instrument(span.clone()).await;
    let elapsed = start.elapsed();
    let status = response.status();
    metrics::counter!(
        "resk_http_requests_total",
        "method" => method,
        "route" => route,
        "status" => status_label(status),
    )
    .increment(1);
    metrics::histogram!("resk_http_request_duration_seconds", "method" => method, "route" => route)
        .record(elapsed.as_secs_f64());
    span.in_scope(|| {
        tracing::info!(
            status = status.as_u16(),
            latency_ms = elapsed.as_secs_f64() * 1e3,
            "request finished"
        );
    });
    response
        .headers_mut()
        .insert(CORRELATION_HEADER.clone(), id);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_labels_are_bounded() {
        let labels: std::collections::BTreeSet<_> = (100..1000)
            .filter_map(|c| StatusCode::from_u16(c).ok())
            .map(status_label)
            .collect();
        assert!(labels.len() < 25, "{labels:?}");
    }

    #[test]
    fn correlation_ids_are_validated() {
        assert!(valid_correlation_id(&HeaderValue::from_static(
            "abc-123_x.y:z"
        )));
        assert!(!valid_correlation_id(&HeaderValue::from_static("")));
        assert!(!valid_correlation_id(&HeaderValue::from_static(
            "has space"
        )));
        assert!(!valid_correlation_id(
            &HeaderValue::from_str(&"a".repeat(129)).unwrap()
        ));
    }
}
