//! The OpenAI-compatible providers behind the gateway: which one serves a model, the HTTP calls
//! (with retries before the first byte), server-sent events read with `eventsource-stream`, and
//! every upstream failure turned into the OpenAI error a client should see — without the provider
//! key, ever.
//!
//! `eventsource-stream` parses the SSE framing (multi-line `data:`, comments, `\r\n`, events split
//! across reads): the crate async-openai and reqwest-eventsource use, rather than a hand-written
//! parser.

use std::{pin::Pin, sync::Arc, time::Duration};

use eventsource_stream::Eventsource as _;
use futures_util::{Stream, StreamExt as _};
use reqwest::{StatusCode, header};
use resk_http::RetryPolicy;
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use super::GatewayError;

/// One OpenAI-compatible API (`…/v1`).
#[derive(Clone)]
#[non_exhaustive]
pub struct UpstreamConfig {
    /// Its name in logs and metrics (`default`, or the route's).
    pub name: String,
    /// The API base, e.g. `https://api.openai.com/v1` (requests go to `{base}/chat/completions`).
    pub base_url: String,
    /// Sent as `Authorization: Bearer …`; never logged, never in a response.
    pub api_key: Option<Zeroizing<String>>,
    /// The models it serves: exact names, or prefixes ending in `*`. Empty: every model no other
    /// upstream claims.
    pub models: Vec<String>,
}

impl UpstreamConfig {
    /// An upstream at `base_url` for every model.
    pub fn new(name: impl Into<String>, base_url: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            api_key: None,
            models: Vec::new(),
        }
    }

    /// With an API key.
    #[must_use]
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(Zeroizing::new(key.into()));
        self
    }

    /// Serving only `models` (exact names or `prefix*`).
    #[must_use]
    pub fn models(mut self, models: Vec<String>) -> Self {
        self.models = models;
        self
    }

    fn serves(&self, model: &str) -> bool {
        self.models.iter().any(|m| match m.strip_suffix('*') {
            Some(prefix) => model.starts_with(prefix),
            None => m == model,
        })
    }
}

impl std::fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamConfig")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("models", &self.models)
            .finish()
    }
}

/// How upstream calls are timed and retried.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct UpstreamTimeouts {
    /// Until the answer's headers (and, for a JSON answer, its whole body).
    pub response: Duration,
    /// Longest silence between two events of a stream.
    pub idle: Duration,
    /// Retries of the request before any byte of the answer arrived (connection refused, timeout,
    /// 5xx, 429).
    pub retry: RetryPolicy,
}

impl Default for UpstreamTimeouts {
    fn default() -> Self {
        Self {
            response: Duration::from_secs(120),
            idle: Duration::from_secs(60),
            retry: RetryPolicy {
                max_retries: 2,
                base: Duration::from_millis(200),
                max: Duration::from_secs(5),
            },
        }
    }
}

/// A parsed stream of chunks; an `Err` ends it.
pub(crate) type Chunks =
    Pin<Box<dyn Stream<Item = Result<Map<String, Value>, GatewayError>> + Send>>;

/// The configured upstreams and one HTTP client for all of them.
pub(crate) struct Upstreams {
    list: Vec<Arc<UpstreamConfig>>,
    client: reqwest::Client,
    timeouts: UpstreamTimeouts,
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstreams")
            .field("list", &self.list)
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

impl Upstreams {
    pub(crate) fn new(
        list: Vec<UpstreamConfig>,
        timeouts: UpstreamTimeouts,
    ) -> resk_core::Result<Self> {
        if list.is_empty() {
            return Err(resk_core::Error::new(
                resk_core::ErrorKind::Config,
                "gateway",
                "config",
                "the gateway needs at least one upstream (UPSTREAM_BASE_URL)",
            ));
        }
        for u in &list {
            if !(u.base_url.starts_with("http://") || u.base_url.starts_with("https://")) {
                return Err(resk_core::Error::new(
                    resk_core::ErrorKind::Config,
                    "gateway",
                    "config",
                    format!(
                        "upstream `{}`: the base URL must start with http:// or https://",
                        u.name
                    ),
                ));
            }
        }
        // No overall timeout: a stream may run for minutes; each wait is bounded on its own.
        let client =
            resk_http::streaming_client("gateway", timeouts.response.min(Duration::from_secs(10)))?;
        Ok(Self {
            list: list.into_iter().map(Arc::new).collect(),
            client,
            timeouts,
        })
    }

    /// The upstream serving `model`: the first that names it, else the first that names none.
    pub(crate) fn for_model(&self, model: &str) -> Option<&Arc<UpstreamConfig>> {
        self.list
            .iter()
            .find(|u| u.serves(model))
            .or_else(|| self.list.iter().find(|u| u.models.is_empty()))
    }

    /// The default upstream (the first).
    pub(crate) fn first(&self) -> Option<&Arc<UpstreamConfig>> {
        self.list.first()
    }

    /// `POST {base}{path}` with `body`, retried before any answer arrived; the response when it
    /// is a success.
    async fn send(
        &self,
        upstream: &UpstreamConfig,
        path: &str,
        body: Option<&Value>,
    ) -> Result<reqwest::Response, GatewayError> {
        let url = format!("{}{path}", upstream.base_url);
        let mut attempt = 0;
        loop {
            let mut request = match body {
                Some(body) => self.client.post(&url).json(body),
                None => self.client.get(&url),
            };
            request = request.headers(resk_http::trace_context());
            if let Some(key) = &upstream.api_key {
                let value = resk_http::secret_header(&format!("Bearer {}", key.as_str()))
                    .map_err(|_| GatewayError::upstream_config())?;
                request = request.header(header::AUTHORIZATION, value);
            }
            let sent = tokio::time::timeout(self.timeouts.response, request.send()).await;
            let failure = match sent {
                Ok(Ok(response)) if response.status().is_success() => return Ok(response),
                Ok(Ok(response)) => {
                    let status = response.status();
                    let retry_after = response
                        .headers()
                        .get(header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(resk_http::parse_retry_after);
                    let text = response.text().await.unwrap_or_default();
                    let err = GatewayError::from_upstream(status, &text, upstream, retry_after);
                    let retryable =
                        status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS;
                    (err, retryable, retry_after)
                }
                Ok(Err(e)) if e.is_timeout() => (GatewayError::upstream_timeout(), true, None),
                Ok(Err(e)) => {
                    tracing::warn!(upstream = %upstream.name, error = %e.without_url(), "upstream call failed");
                    (GatewayError::upstream_unreachable(), true, None)
                }
                Err(_) => (GatewayError::upstream_timeout(), true, None),
            };
            let (err, retryable, retry_after) = failure;
            if !retryable || attempt >= self.timeouts.retry.max_retries {
                metrics::counter!("resk_gateway_upstream_errors_total",
                    "upstream" => upstream.name.clone(), "status" => err.status().to_string())
                .increment(1);
                return Err(err);
            }
            let wait = self.timeouts.retry.backoff(attempt, retry_after);
            metrics::counter!("resk_provider_retries_total", "provider" => "gateway").increment(1);
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// A JSON call: the object it answered.
    pub(crate) async fn json(
        &self,
        upstream: &UpstreamConfig,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Map<String, Value>, GatewayError> {
        let response = self.send(upstream, path, body).await?;
        let bytes = tokio::time::timeout(self.timeouts.response, response.bytes())
            .await
            .map_err(|_| GatewayError::upstream_timeout())?
            .map_err(|_| GatewayError::upstream_unreachable())?;
        match serde_json::from_slice(&bytes) {
            Ok(Value::Object(o)) => Ok(o),
            _ => Err(GatewayError::upstream_malformed()),
        }
    }

    /// A streamed call: the chunks as they arrive, ending at `[DONE]`; a silence longer than the
    /// idle limit, a broken connection, an `error` event or an end without `[DONE]` is an error.
    pub(crate) async fn stream(
        &self,
        upstream: &Arc<UpstreamConfig>,
        path: &str,
        body: &Value,
    ) -> Result<Chunks, GatewayError> {
        let response = self.send(upstream, path, Some(body)).await?;
        let events = response.bytes_stream().eventsource();
        let idle = self.timeouts.idle;
        let state = (Box::pin(events), upstream.clone(), false);
        let chunks =
            futures_util::stream::unfold(state, move |(mut events, config, done)| async move {
                if done {
                    return None;
                }
                loop {
                    let next = match tokio::time::timeout(idle, events.next()).await {
                        Err(_) => Some(Err(GatewayError::upstream_timeout())),
                        Ok(None | Some(Err(_))) => Some(Err(GatewayError::upstream_cut())),
                        Ok(Some(Ok(event))) => {
                            let data = event.data.trim();
                            if data.is_empty() {
                                continue;
                            }
                            if data == "[DONE]" {
                                None
                            } else {
                                match serde_json::from_str::<Value>(data) {
                                    Ok(Value::Object(o))
                                        if o.get("error").is_some_and(|e| !e.is_null()) =>
                                    {
                                        Some(Err(GatewayError::upstream_stream_error(&o, &config)))
                                    }
                                    Ok(Value::Object(o)) => Some(Ok(o)),
                                    _ => Some(Err(GatewayError::upstream_malformed())),
                                }
                            }
                        }
                    };
                    return next.map(|item| {
                        let failed = item.is_err();
                        (item, (events, config, failed))
                    });
                }
            });
        Ok(Box::pin(chunks))
    }
}

/// `text` without the provider key anywhere in it.
pub(crate) fn scrub(text: &str, upstream: &UpstreamConfig) -> String {
    match &upstream.api_key {
        Some(key) if key.len() >= 4 => text.replace(key.as_str(), "[redacted]"),
        _ => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_route_to_their_upstream_and_the_key_never_prints() {
        let list = vec![
            UpstreamConfig::new("local", "http://127.0.0.1:1/v1")
                .models(vec!["llama*".into(), "qwen".into()]),
            UpstreamConfig::new("default", "http://127.0.0.1:2/v1/").api_key("sk-secret-1234"),
        ];
        let ups = Upstreams::new(list, UpstreamTimeouts::default()).unwrap();
        assert_eq!(
            ups.for_model("llama3").map(|u| u.name.as_str()),
            Some("local")
        );
        assert_eq!(
            ups.for_model("qwen").map(|u| u.name.as_str()),
            Some("local")
        );
        assert_eq!(
            ups.for_model("qwen2").map(|u| u.name.as_str()),
            Some("default")
        );
        assert_eq!(ups.first().unwrap().base_url, "http://127.0.0.1:1/v1");
        let debug = format!("{ups:?}");
        assert!(!debug.contains("sk-secret"), "{debug}");
        let d = &ups.list[1];
        assert_eq!(d.base_url, "http://127.0.0.1:2/v1");
        assert_eq!(scrub("bad key sk-secret-1234!", d), "bad key [redacted]!");
        assert!(Upstreams::new(vec![], UpstreamTimeouts::default()).is_err());
        assert!(
            Upstreams::new(
                vec![UpstreamConfig::new("x", "ftp://h")],
                UpstreamTimeouts::default()
            )
            .is_err()
        );
    }
}
