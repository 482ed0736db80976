//! Logs, metrics and correlation ids.

use std::{future::Future, sync::OnceLock, time::Instant};

use axum::{
    extract::{MatchedPath, Request},
    http::{HeaderName, HeaderValue, Method, StatusCode},
    response::Response,
};
use clap::{Args, ValueEnum};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Instrument;
use tracing_subscriber::EnvFilter;

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (default; for log shippers).
    Json,
    /// Human-readable lines.
    Pretty,
}

/// OpenTelemetry trace export (OTLP over HTTP with protobuf bodies).
#[derive(Clone, Debug, Args)]
pub struct OtelArgs {
    /// OTLP/HTTP collector base URL, e.g. `http://127.0.0.1:4318`; spans go to `<url>/v1/traces`.
    /// Unset: no traces are exported (incoming `traceparent` headers are then ignored).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otel_endpoint: Option<String>,
    /// `service.name` of the exported spans.
    #[arg(long, env = "OTEL_SERVICE_NAME", default_value = "resk-server")]
    pub otel_service_name: String,
}

/// The correlation header, echoed when valid and generated otherwise.
pub static CORRELATION_HEADER: HeaderName = HeaderName::from_static("x-correlation-id");

/// Latency buckets (seconds) of every histogram: 50 µs to 10 s.
const BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// Buckets of the semantic-similarity histogram (cosine similarity of hits, near the threshold).
const SIMILARITY_BUCKETS: &[f64] = &[
    0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.88, 0.9, 0.92, 0.94, 0.96, 0.98, 0.99, 1.0,
];

/// Buckets of the micro-batch size histogram (texts per provider call).
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// Install the process-wide Prometheus recorder once and return its handle.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("resk_semantic_similarity".into()),
                        SIMILARITY_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("resk_embed_batch_texts".into()),
                        BATCH_BUCKETS,
                    )
                })
                .map(PrometheusBuilder::build_recorder)
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            // Fails only if another recorder was installed first (a test harness); then this handle
            // simply renders nothing from the facade, which is harmless.
            let _ = metrics::set_global_recorder(crate::histograms::PerCoreHistograms::new(
                recorder,
                crate::histograms::pending(),
            ));
            describe_metrics();
            spawn_upkeep(handle.clone());
            handle
        })
        .clone()
}

/// How often the recorder's histogram samples are folded into their buckets. Until then every sample
/// stays buffered (six per exact hit): at 80 000 hits/s a 5 s period held ~30 MiB of them
/// (`cargo xtask bench memory`, 2026-12-03), a 1 s period a fifth of that, for the same folding work.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Fold histogram samples into buckets every [`UPKEEP_EVERY`], on a thread of its own (the recorder
/// may exist before any runtime). `build_recorder` leaves this to the caller: without it every
/// observation stays buffered until `/api/metrics` is scraped, and a server nobody scrapes grows by
/// every request it serves (found by `cargo xtask bench soak`: ~150 MiB a minute at full load).
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                crate::histograms::pending().flush();
                handle.run_upkeep();
            }
        });
    if let Err(err) = spawned {
        tracing::warn!(error = %err, "cannot start the metrics upkeep thread; histogram samples are folded only on scrapes");
    }
}

fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
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
        "resk_embed_batch_texts",
        Unit::Count,
        "Texts per micro-batched embedding provider call."
    );
    describe_histogram!(
        "resk_layer_duration_seconds",
        Unit::Seconds,
        "Time spent per request layer (auth, rate_limit, key, cache, crypto, embed, vector)."
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
    describe_counter!(
        "resk_tokens_saved_total",
        "Estimated LLM tokens (query + answer, 4 bytes a token) hits saved, by source."
    );
    describe_gauge!(
        "resk_token_price_per_1k",
        "COST_PER_1K_TOKENS: multiply increase(resk_tokens_saved_total) / 1000 by it for money saved."
    );
    describe_histogram!(
        "resk_semantic_similarity",
        "Cosine similarity of semantic hits."
    );
    describe_counter!(
        "resk_degraded_responses_total",
        "Queries answered without a layer that failed, by layer (cache, embed, vector)."
    );
    describe_counter!(
        "resk_provider_requests_total",
        "Embedding and vector-database calls by kind, provider, operation and outcome."
    );
    describe_histogram!(
        "resk_provider_request_duration_seconds",
        Unit::Seconds,
        "Embedding and vector-database call latency by kind, provider and operation."
    );
}

/// What start-up knows of the label values of resk's event counters.
pub(crate) struct KnownLabels {
    /// The cache backend's name.
    pub(crate) backend: &'static str,
    /// The embedding and vector providers, when semantic caching is on.
    pub(crate) semantic: Option<(&'static str, &'static str)>,
}

/// Register resk's event counters at zero for the label values known at start-up, so dashboards
/// show 0 rather than "no data" and `rate()`/`increase()` count the first event (a series born
/// at 1 has no earlier sample to rise from). Counters whose labels depend on the request (the
/// HTTP route and status, an error's kind) appear with their first event.
pub(crate) fn initialize_series(known: &KnownLabels) {
    use metrics::counter;
    for name in [
        "resk_cache_purged_entries_total",
        "resk_rate_limit_fallbacks_total",
        "resk_retention_deleted_entries_total",
        "resk_stale_answers_total",
        "resk_tokens_revoked_total",
        "resk_revocation_check_failures_total",
    ] {
        counter!(name).increment(0);
    }
    let backend = known.backend;
    for op in ["get", "set", "delete", "purge", "scan", "revoke"] {
        counter!("resk_backend_errors_total", "backend" => backend, "op" => op).increment(0);
    }
    for reason in [
        "missing",
        "malformed",
        "expired",
        "bad_signature",
        "revoked",
        "insufficient_scope",
    ] {
        counter!("resk_auth_failures_total", "reason" => reason).increment(0);
    }
    for key_type in ["subject", "ip", "tenant"] {
        counter!("resk_rate_limited_total", "key_type" => key_type).increment(0);
    }
    for kind in ["export", "erase"] {
        counter!("resk_privacy_requests_total", "kind" => kind).increment(0);
    }
    let mut dependencies = vec!["cache"];
    let mut layers = vec!["cache"];
    if let Some((embed, vectors)) = known.semantic {
        dependencies.extend(["embed", "vector"]);
        layers.extend(["embed", "vector"]);
        for outcome in ["no_match", "failure"] {
            counter!("resk_negative_cache_hits_total", "outcome" => outcome).increment(0);
        }
        counter!("resk_embed_cache_hits_total", "provider" => embed).increment(0);
        counter!("resk_embed_cache_misses_total", "provider" => embed).increment(0);
        counter!("resk_semantic_errors_total", "op" => "erase").increment(0);
        for provider in [embed, vectors] {
            counter!("resk_provider_retries_total", "provider" => provider).increment(0);
        }
    }
    for dependency in dependencies {
        for reason in ["circuit_open", "bulkhead_full"] {
            counter!("resk_dependency_rejections_total", "dependency" => dependency, "reason" => reason)
                .increment(0);
        }
    }
    for layer in layers {
        counter!("resk_degraded_responses_total", "layer" => layer).increment(0);
    }
}

/// What [`init_tracing`] set up. Dropping it exports the spans still buffered and stops the trace
/// exporter (it waits for the collector, up to the export timeout).
#[must_use = "dropping the guard stops the trace exporter"]
pub struct TracingGuard {
    provider: Option<SdkTracerProvider>,
}

impl TracingGuard {
    /// Whether spans are exported (an OTLP endpoint was configured).
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Export every finished span now. Blocks until the collector answered or the export timed out,
    /// so call it from a blocking context (`spawn_blocking`), not from an async task.
    pub fn flush(&self) {
        if let Some(provider) = &self.provider
            && let Err(err) = provider.force_flush()
        {
            tracing::warn!(error = %err, "trace export failed");
        }
    }
}

impl Drop for TracingGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(err) = provider.shutdown()
        {
            eprintln!("resk-server: trace export at shutdown failed: {err}");
        }
    }
}

/// The batch exporter's per-export time limit.
const OTLP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The OTLP/HTTP tracer provider for `otel`, or `None` when no endpoint is configured.
fn tracer_provider(otel: &OtelArgs) -> Result<Option<SdkTracerProvider>, String> {
    use opentelemetry_otlp::{Protocol, WithExportConfig as _};
    let Some(base) = otel
        .otel_endpoint
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty())
    else {
        return Ok(None);
    };
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(format!(
            "OTEL_EXPORTER_OTLP_ENDPOINT must start with http:// or https:// (got {base:?})"
        ));
    }
    // An https collector: the blocking client's rustls needs the process-wide provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("{}/v1/traces", base.trim_end_matches('/')))
        .with_timeout(OTLP_TIMEOUT)
        .build()
        .map_err(|e| format!("cannot build the OTLP exporter: {e}"))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(otel.otel_service_name.clone())
        .build();
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build(),
    ))
}

/// `filter` with every directive for `resk_server` repeated for `resk`: the engine's lines (cache
/// requests, backend and semantic errors) are the server's own, so `resk_server=debug` shows them.
fn with_engine(filter: &str) -> String {
    let mut out = filter.to_owned();
    for directive in filter.split(',').map(str::trim) {
        if let Some(rest) = directive.strip_prefix("resk_server")
            && (rest.is_empty() || rest.starts_with('='))
        {
            out.push_str(",resk");
            out.push_str(rest);
        }
    }
    out
}

/// Initialise the global tracing subscriber: log lines (JSON or pretty) filtered by `filter` and,
/// when `otel` names an OTLP endpoint, spans exported over OTLP/HTTP. Also installs the W3C trace
/// context propagator, so incoming `traceparent` headers are honoured and provider requests carry
/// one. Fails only on a malformed endpoint; a second call (a test harness) leaves the first
/// subscriber in place.
pub fn init_tracing(
    filter: &str,
    format: LogFormat,
    otel: &OtelArgs,
) -> Result<TracingGuard, String> {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::{Layer, Registry, filter::Targets, layer::SubscriberExt as _};

    let filter = EnvFilter::try_new(with_engine(filter)).unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    // Every line carries the fields of all its enclosing spans: the request span's correlation and
    // trace ids reach lines logged inside a layer span too.
    let fmt: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Json => fmt
            .json()
            .with_current_span(false)
            .with_span_list(true)
            .flatten_event(true)
            .with_filter(filter)
            .boxed(),
        LogFormat::Pretty => fmt.with_filter(filter).boxed(),
    };
    let provider = tracer_provider(otel)?;
    let mut layers = vec![fmt];
    if let Some(provider) = &provider {
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        EXPORTING.store(true, std::sync::atomic::Ordering::Relaxed);
        // resk's own spans, whatever the log filter says: the request span (INFO) and the layer
        // spans inside it (DEBUG, so that a server logging at INFO without an exporter does not
        // build five spans per request that no log line reads).
        layers.push(
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("resk-server"))
                .with_filter(Targets::new().with_target("resk", tracing::Level::DEBUG))
                .boxed(),
        );
    }
    let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layers));
    Ok(TracingGuard { provider })
}

/// Set once spans are exported: only then is there a trace context to read or record.
static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The W3C trace context of an incoming request, made the parent of its span. No-op unless spans
/// are exported (an OTLP endpoint is configured) and the header is valid; without export it costs
/// one load per request.
fn adopt_trace_context(span: &tracing::Span, headers: &axum::http::HeaderMap) {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    if !EXPORTING.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let parent = opentelemetry::global::get_text_map_propagator(|p| {
        p.extract(&opentelemetry_http::HeaderExtractor(headers))
    });
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    let context = span.context();
    let trace = context.span().span_context().trace_id();
    if trace != opentelemetry::trace::TraceId::INVALID {
        span.record("trace_id", tracing::field::display(trace));
    }
}

fn route_label(path: Option<&MatchedPath>) -> &'static str {
    path.and_then(|p| crate::table::find(p.as_str()))
        .map_or("unmatched", |r| r.path)
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

/// The request counter and duration histogram of a method, route and status, registered once per
/// combination. Every label is a `&'static str` from a fixed table (methods, routes, statuses), so
/// a combination is found by comparing pointers, where the `metrics` macros would hash the name and
/// labels into the registry on every request.
fn http_metrics(
    method: &'static str,
    route: &'static str,
    status: &'static str,
) -> (metrics::Counter, metrics::Histogram) {
    type Labels = (&'static str, &'static str, &'static str);
    type Handles = Vec<(Labels, (metrics::Counter, metrics::Histogram))>;
    /// Bounds the table; past it (never in practice: a few dozen combinations occur), the
    /// macros register as usual.
    const MOST: usize = 512;
    static HANDLES: std::sync::RwLock<Handles> = std::sync::RwLock::new(Vec::new());
    // Address and length: the same literal, not merely equal text.
    let same = |a: &Labels| {
        std::ptr::eq(a.0, method) && std::ptr::eq(a.1, route) && std::ptr::eq(a.2, status)
    };
    let found = HANDLES.read().ok().and_then(|handles| {
        handles
            .iter()
            .find(|(key, _)| same(key))
            .map(|(_, h)| h.clone())
    });
    if let Some(handles) = found {
        return handles;
    }
    let handles = (
        metrics::counter!(
            "resk_http_requests_total",
            "method" => method,
            "route" => route,
            "status" => status,
        ),
        metrics::histogram!("resk_http_request_duration_seconds", "method" => method, "route" => route),
    );
    if let Ok(mut table) = HANDLES.write()
        && table.len() < MOST
        && !table.iter().any(|(key, _)| same(key))
    {
        table.push(((method, route, status), handles.clone()));
    }
    handles
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
pub(crate) async fn observe<F, Fut>(req: Request, inner: F) -> Response
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
            let mut buf = uuid::Uuid::encode_buffer();
            let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
            HeaderValue::from_str(text).unwrap_or(HeaderValue::from_static("invalid"))
        });
    let route = route_label(req.extensions().get::<MatchedPath>());
    let method = method_label(req.method());
    // The span's OpenTelemetry name (`POST /api/cache/query`) is only read by the exporter.
    let name: std::borrow::Cow<'static, str> =
        if EXPORTING.load(std::sync::atomic::Ordering::Relaxed) {
            format!("{method} {route}").into()
        } else {
            route.into()
        };
    let span = tracing::info_span!(
        "request",
        otel.name = &*name,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        correlation_id = %id.to_str().unwrap_or_default(),
        trace_id = tracing::field::Empty,
        method,
        route,
        http.request.method = method,
        http.route = route,
        http.response.status_code = tracing::field::Empty,
    );
    adopt_trace_context(&span, req.headers());
    let mut response = inner(req).instrument(span.clone()).await;
    let elapsed = start.elapsed();
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    let (count, duration) = http_metrics(method, route, status_label(status));
    count.increment(1);
    duration.record(elapsed.as_secs_f64());
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
