//! Logs, metrics and correlation ids.

use std::{sync::OnceLock, time::Instant};

use axum::{
    extract::{MatchedPath, Request},
    http::{HeaderName, HeaderValue},
    middleware::Next,
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
        "Requests refused with 429, by key type."
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

fn valid_correlation_id(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Outermost middleware: assigns the correlation id, opens the request span, records HTTP metrics
/// with the route template (never the raw path) and logs one line per request.
pub async fn observe(mut req: Request, next: Next) -> Response {
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
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().clone();
    let span = tracing::info_span!(
        "request",
        correlation_id = %id.to_str().unwrap_or_default(),
        method = %method,
        route = %route,
    );
    let mut response = next.run(req).instrument(span.clone()).await;
    let elapsed = start.elapsed();
    let status = response.status();
    let method_label = method.as_str().to_owned();
    metrics::counter!(
        "resk_http_requests_total",
        "method" => method_label.clone(),
        "route" => route.clone(),
        "status" => status.as_u16().to_string(),
    )
    .increment(1);
    metrics::histogram!(
        "resk_http_request_duration_seconds",
        "method" => method_label,
        "route" => route,
    )
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
