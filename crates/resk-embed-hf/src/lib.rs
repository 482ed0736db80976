//! Hugging Face embeddings for resk: the hosted Inference API and self-hosted
//! [text-embeddings-inference](https://github.com/huggingface/text-embeddings-inference) (TEI).
//!
//! * [`HfStyle::Inference`]: `POST {base}/models/{model}/pipeline/feature-extraction` with
//!   `{"inputs": [...]}` and `Authorization: Bearer {HF_API_TOKEN}`; base
//!   `https://router.huggingface.co/hf-inference`. The answer is one vector per input.
//! * [`HfStyle::Tei`]: `POST {base}/embed` with `{"inputs": [...], "normalize": true, "truncate":
//!   true}`; the token is optional (TEI's `--api-key`). TEI accepts 32 inputs per request by default
//!   (`--max-client-batch-size`), which is this crate's batch limit.
//!
//! Errors keep the provider's `error` text; 429 (with `Retry-After`), 503 ("model is loading") and
//! other 5xx are transient and retried by [`resk_embed::Pipeline`].
//!
//! Why reqwest and not the `hf-hub`/inference SDKs: two endpoints, resk's own error kinds and retries.

use std::time::Duration;

use reqwest::header::AUTHORIZATION;
use resk_core::{Embedder, EmbedderInfo, Embedding, Error, ErrorKind, Result};
use resk_http::{check_response, client, read_json, secret_header, trace_context, transport_error};
use serde::Serialize;

const NAME: &str = "hf";
/// Inputs per request (TEI's default client batch limit; the Inference API accepts it too).
pub const MAX_BATCH: usize = 32;

/// Which API the base URL serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HfStyle {
    /// Hugging Face Inference API (feature-extraction pipeline).
    Inference,
    /// text-embeddings-inference's `/embed`.
    Tei,
}

/// Settings of an [`HfEmbedder`].
#[derive(Clone)]
pub struct HfConfig {
    /// API base (`https://router.huggingface.co/hf-inference`, or a TEI server's URL).
    pub base_url: String,
    /// Bearer token (required by the Inference API; optional for TEI).
    pub token: Option<String>,
    /// Model id, e.g. `sentence-transformers/all-MiniLM-L6-v2`.
    pub model: String,
    /// Output size of the model (checked on every answer).
    pub dims: usize,
    /// API style.
    pub style: HfStyle,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl std::fmt::Debug for HfConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfConfig")
            .field("base_url", &self.base_url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("model", &self.model)
            .field("dims", &self.dims)
            .field("style", &self.style)
            .finish()
    }
}

/// The Hugging Face embeddings client.
#[derive(Debug)]
pub struct HfEmbedder {
    http: reqwest::Client,
    url: String,
    token: Option<reqwest::header::HeaderValue>,
    style: HfStyle,
    info: EmbedderInfo,
}

#[derive(Serialize)]
struct Request<'a> {
    inputs: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    normalize: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    truncate: Option<bool>,
}

impl HfEmbedder {
    /// A client.
    pub fn new(config: HfConfig) -> Result<Self> {
        let base = config.base_url.trim_end_matches('/');
        let url = match config.style {
            HfStyle::Inference => {
                format!("{base}/models/{}/pipeline/feature-extraction", config.model)
            }
            HfStyle::Tei => format!("{base}/embed"),
        };
        if config.style == HfStyle::Inference && config.token.is_none() {
            return Err(Error::new(
                ErrorKind::Config,
                NAME,
                "new",
                "the Hugging Face Inference API needs HF_API_TOKEN",
            ));
        }
        let token = config
            .token
            .as_deref()
            .map(|t| secret_header(&format!("Bearer {t}")))
            .transpose()?;
        Ok(Self {
            http: client(NAME, config.timeout)?,
            url,
            token,
            style: config.style,
            info: EmbedderInfo::new(NAME, config.model, config.dims, MAX_BATCH),
        })
    }
}

impl Embedder for HfEmbedder {
    fn info(&self) -> &EmbedderInfo {
        &self.info
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Embedding>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        self.info.check_texts(texts)?;
        let tei = self.style == HfStyle::Tei;
        let body = Request {
            inputs: texts,
            normalize: tei.then_some(true),
            truncate: tei.then_some(true),
        };
        let mut request = self
            .http
            .post(&self.url)
            .headers(trace_context())
            .json(&body);
        if let Some(token) = &self.token {
            request = request.header(AUTHORIZATION, token.clone());
        }
        let response = request
            .send()
            .await
            .map_err(|e| transport_error(NAME, "embed", e))?;
        let response = check_response(NAME, "embed", response).await?;
        let vectors: Vec<Embedding> = read_json(
            NAME,
            "embed",
            response,
            "a list of vectors (is the model a sentence-embedding model?)",
        )
        .await?;
        if vectors.len() != texts.len() {
            return Err(Error::new(
                ErrorKind::Backend,
                NAME,
                "embed",
                format!("{} vectors for {} inputs", vectors.len(), texts.len()),
            ));
        }
        Ok(vectors)
    }
}
