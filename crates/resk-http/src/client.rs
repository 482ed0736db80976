//! The HTTP client and one mapping from HTTP outcomes to resk error kinds.

use std::time::Duration;

use reqwest::{
    Response, StatusCode,
    header::{HeaderValue, RETRY_AFTER},
};
use resk_core::{Error, ErrorKind, Result};

/// An HTTP client for a provider: TLS by rustls with the ring provider and the platform's root
/// certificates, HTTPS and HTTP/1.1, the given per-request timeout, connection pooling.
pub fn client(provider: &'static str, timeout: Duration) -> Result<reqwest::Client> {
    build(
        provider,
        builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10))),
    )
}

/// A builder with what every provider client shares: rustls with the ring provider, pooling.
fn builder() -> reqwest::ClientBuilder {
    // One process-wide rustls provider; a second install (another crate did it first) is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().pool_idle_timeout(Duration::from_secs(90))
}

/// `builder`, built; a failure is a `Config` error of `provider`.
fn build(provider: &'static str, builder: reqwest::ClientBuilder) -> Result<reqwest::Client> {
    builder.build().map_err(|e| {
        Error::new(
            ErrorKind::Config,
            provider,
            "client",
            format!("cannot build the HTTP client: {e}"),
        )
    })
}

/// A client for answers that may take minutes to arrive in full (streams): like [`client`] but
/// without an overall time limit (each wait is the caller's to bound), connecting within
/// `connect_timeout`.
pub fn streaming_client(
    provider: &'static str,
    connect_timeout: Duration,
) -> Result<reqwest::Client> {
    build(provider, builder().connect_timeout(connect_timeout))
}

/// The W3C trace-context headers (`traceparent`, `tracestate`) of the current `tracing` span, for a
/// provider request, so the provider's own traces join the caller's.
///
/// With the `otel` feature, the context comes from tracing-opentelemetry's span extension and is
/// written by the global OpenTelemetry propagator (installed by the application; the default one
/// writes nothing). Without it, or outside any traced span, the map is empty.
pub fn trace_context() -> reqwest::header::HeaderMap {
    #[cfg_attr(not(feature = "otel"), allow(unused_mut))]
    let mut headers = reqwest::header::HeaderMap::new();
    #[cfg(feature = "otel")]
    {
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        let cx = tracing::Span::current().context();
        opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&cx, &mut opentelemetry_http::HeaderInjector(&mut headers));
        });
    }
    headers
}

/// A header value holding a secret (API key, bearer token): marked sensitive so `Debug` output and
/// HTTP/2 header compression never expose it.
pub fn secret_header(value: &str) -> Result<HeaderValue> {
    let mut v = HeaderValue::from_str(value).map_err(|_| {
        Error::new(
            ErrorKind::Config,
            "http",
            "config",
            "the API key holds characters that cannot be sent in an HTTP header",
        )
    })?;
    v.set_sensitive(true);
    Ok(v)
}

/// Map a transport failure: timeouts and refused connections are transient, the rest is a backend
/// error. The request URL is kept out of the message (it may carry a deployment name); the source
/// chain has the detail.
pub fn transport_error(provider: &'static str, op: &'static str, err: reqwest::Error) -> Error {
    let kind = if err.is_timeout() || err.is_connect() || err.is_request() {
        ErrorKind::Unavailable
    } else {
        ErrorKind::Backend
    };
    let what = if err.is_timeout() {
        "the request timed out"
    } else if err.is_connect() {
        "could not connect"
    } else {
        "the request failed"
    };
    Error::new(kind, provider, op, what).with_source(err.without_url())
}

/// Turn a non-success response into an error of the right kind, with the provider's own message:
/// 429 → `RateLimited` (with `Retry-After`), 408 and 5xx → `Unavailable`, 401/403 → `Unauthorized`,
/// 404 → `NotFound`, other 4xx → `InvalidInput`.
pub async fn check_response(
    provider: &'static str,
    op: &'static str,
    response: Response,
) -> Result<Response> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let body = response.text().await.unwrap_or_default();
    let kind = match status {
        StatusCode::TOO_MANY_REQUESTS => ErrorKind::RateLimited,
        StatusCode::REQUEST_TIMEOUT => ErrorKind::Unavailable,
        s if s.is_server_error() => ErrorKind::Unavailable,
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ErrorKind::Unauthorized,
        StatusCode::NOT_FOUND => ErrorKind::NotFound,
        _ => ErrorKind::InvalidInput,
    };
    let mut err = Error::new(
        kind,
        provider,
        op,
        format!("HTTP {}: {}", status.as_u16(), provider_message(&body)),
    );
    if let Some(wait) = retry_after {
        err = err.with_retry_after(wait);
    }
    Err(err)
}

/// The human part of a provider's error body: `error.message` (OpenAI), `error` (Hugging Face, TEI), `status.error` (Qdrant), `error[0].message` (Weaviate), `message` (Chroma,
/// Pinecone, Milvus), or the first 200 characters of the raw body.
fn provider_message(body: &str) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let found = parsed.as_ref().and_then(|v| {
        v.pointer("/error/message")
            .or_else(|| v.pointer("/error/0/message"))
            .or_else(|| v.pointer("/status/error"))
            .or_else(|| v.get("message"))
            .or_else(|| v.get("error"))
            .and_then(|m| m.as_str())
            .map(str::to_owned)
    });
    found.unwrap_or_else(|| body.chars().take(200).collect())
}

/// The body of a successful response as `T`; a body of another shape is a `Backend` error saying what
/// was expected.
pub async fn read_json<T: serde::de::DeserializeOwned>(
    provider: &'static str,
    op: &'static str,
    response: Response,
    expected: &'static str,
) -> Result<T> {
    response.json().await.map_err(|e| {
        Error::new(
            ErrorKind::Backend,
            provider,
            op,
            format!("the answer is not {expected}"),
        )
        .with_source(e.without_url())
    })
}

/// `Retry-After` as delay-seconds (the HTTP-date form is rare from APIs and ignored: the backoff
/// applies instead).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(3600.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_parses_seconds_only() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after(" 0.5 "), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn provider_messages_are_extracted() {
        assert_eq!(
            provider_message(r#"{"error":{"message":"Incorrect API key","type":"x"}}"#),
            "Incorrect API key"
        );
        assert_eq!(
            provider_message(r#"{"error":"Model is loading"}"#),
            "Model is loading"
        );
        assert_eq!(
            provider_message(r#"{"error":[{"message":"class not found"}]}"#),
            "class not found"
        );
        assert_eq!(
            provider_message(r#"{"status":{"error":"Not found: Collection"},"time":0.1}"#),
            "Not found: Collection"
        );
        assert_eq!(
            provider_message(r#"{"code":3,"message":"bad id"}"#),
            "bad id"
        );
        assert_eq!(provider_message("plain"), "plain");
    }

    #[test]
    fn secret_headers_are_sensitive() {
        let v = secret_header("Bearer sk-123").unwrap_or_else(|_| HeaderValue::from_static(""));
        assert!(v.is_sensitive());
        assert!(!format!("{v:?}").contains("sk-123"));
        assert!(secret_header("bad\nkey").is_err());
    }
}
