//! A JSON-over-HTTP API client: base URL, fixed headers, retries, one error mapping.

use std::time::Duration;

use reqwest::{
    Method,
    header::{CONTENT_TYPE, HeaderMap, HeaderValue},
};
use resk_core::{Error, ErrorKind, Result};
use serde::{Serialize, de::DeserializeOwned};

use crate::{RetryPolicy, check_response, client, trace_context, transport_error};

/// A vendor's JSON API at one base URL: every call carries the same headers (API key, version), is
/// bounded by the client's timeout, retried by the policy when the failure is transient, and mapped to
/// resk error kinds by [`check_response`].
///
/// Every call is retried on transient failures, so only idempotent operations belong here (vector
/// upserts, deletes and queries are).
#[derive(Clone, Debug)]
pub struct JsonApi {
    provider: &'static str,
    client: reqwest::Client,
    base: String,
    headers: HeaderMap,
    retry: RetryPolicy,
}

impl JsonApi {
    /// A client for `base` (scheme, host, optional path prefix; a trailing `/` is ignored).
    pub fn new(
        provider: &'static str,
        base: &str,
        timeout: Duration,
        retry: RetryPolicy,
        headers: HeaderMap,
    ) -> Result<Self> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::new(
                ErrorKind::Config,
                provider,
                "config",
                format!("the URL must start with http:// or https:// (got {base:?})"),
            ));
        }
        Ok(Self {
            provider,
            client: client(provider, timeout)?,
            base,
            headers,
            retry,
        })
    }

    /// The base URL (no trailing `/`).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Send `body` (JSON, if any) to `path` (joined to the base URL) and read a JSON answer as `T`
    /// (`serde::de::IgnoredAny` when the answer does not matter; an empty body reads as `null`).
    pub async fn call<T: DeserializeOwned>(
        &self,
        op: &'static str,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T> {
        let url = format!("{}{path}", self.base);
        let body = body
            .map(|b| {
                serde_json::to_vec(b).map_err(|e| {
                    Error::new(ErrorKind::InvalidInput, self.provider, op, e.to_string())
                })
            })
            .transpose()?;
        let trace = trace_context();
        self.retry
            .run(self.provider, || async {
                let mut request = self
                    .client
                    .request(method.clone(), &url)
                    .headers(self.headers.clone())
                    .headers(trace.clone());
                if let Some(body) = &body {
                    request = request
                        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                        .body(body.clone());
                }
                let response = request
                    .send()
                    .await
                    .map_err(|e| transport_error(self.provider, op, e))?;
                let response = check_response(self.provider, op, response).await?;
                let bytes = response
                    .bytes()
                    .await
                    .map_err(|e| transport_error(self.provider, op, e))?;
                // An empty answer (204 No Content) reads as JSON `null`.
                let bytes: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
                serde_json::from_slice(bytes).map_err(|e| {
                    Error::new(
                        ErrorKind::Backend,
                        self.provider,
                        op,
                        "the answer is not the documented JSON",
                    )
                    .with_source(e)
                })
            })
            .await
    }
}
