//! OpenAI embeddings for resk, and every server that speaks the same API.
//!
//! * **OpenAI** (`https://api.openai.com/v1`): `POST {base}/embeddings` with
//!   `Authorization: Bearer {OPENAI_API_KEY}` and `{"model", "input": [...], "encoding_format":
//!   "float", "dimensions"?}`; the answer's `data[i].embedding` is matched to the input by `index`.
//! * **OpenAI-compatible servers** — vLLM (`http://host:8000/v1`), Ollama (`http://host:11434/v1`),
//!   text-embeddings-inference's OpenAI route (`http://host:8080/v1`): the same request, another
//!   `OPENAI_BASE_URL`. A key is still required by resk; use any placeholder for servers without auth.
//! * **Azure OpenAI** ([`Auth::Azure`]): `POST {base}/openai/deployments/{model}/embeddings
//!   ?api-version={version}` with an `api-key` header; `EMBEDDING_MODEL` is the deployment name.
//!
//! One request carries at most 2048 inputs (OpenAI's limit); batching across requests, concurrency,
//! retries with backoff on 429/5xx/timeouts (honouring `Retry-After`) and dimension checks come from
//! [`resk_embed::Pipeline`], which the server wraps around this type. The API key is sent as a
//! sensitive header and never appears in errors, logs or `Debug` output.
//!
//! Why reqwest (and not `async-openai`): resk needs one endpoint, its own error kinds and full control
//! of retries; a full SDK would add a large dependency for a 40-line request.

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderName};
use resk_core::{Embedder, EmbedderInfo, Embedding, Error, ErrorKind, Result};
use resk_http::{check_response, client, read_json, secret_header, trace_context, transport_error};
use serde::{Deserialize, Serialize};

const NAME: &str = "openai";
/// Inputs per request (OpenAI's documented maximum).
pub const MAX_BATCH: usize = 2048;

/// How requests authenticate, and which URL shape they use.
#[derive(Clone)]
pub enum Auth {
    /// `Authorization: Bearer <key>`, `{base}/embeddings`.
    Bearer(String),
    /// Azure OpenAI: `api-key: <key>`, `{base}/openai/deployments/{model}/embeddings?api-version=…`.
    Azure {
        /// The resource's key.
        api_key: String,
        /// The `api-version` query parameter, e.g. `2024-02-01`.
        api_version: String,
    },
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            Auth::Azure { api_version, .. } => f
                .debug_struct("Azure")
                .field("api_key", &"<redacted>")
                .field("api_version", api_version)
                .finish(),
        }
    }
}

/// Settings of an [`OpenAiEmbedder`].
#[derive(Clone, Debug)]
pub struct OpenAiConfig {
    /// API base, e.g. `https://api.openai.com/v1` (Azure: `https://{resource}.openai.azure.com`).
    pub base_url: String,
    /// Credentials and URL style.
    pub auth: Auth,
    /// Model (Azure: deployment name).
    pub model: String,
    /// Requested output size (`dimensions`, text-embedding-3 models); also the checked size.
    pub dimensions: Option<usize>,
    /// Per-request timeout.
    pub timeout: Duration,
}

/// Output sizes of OpenAI's own models, used when `dimensions` is not given.
pub fn known_dims(model: &str) -> Option<usize> {
    match model {
        "text-embedding-3-small" | "text-embedding-ada-002" => Some(1536),
        "text-embedding-3-large" => Some(3072),
        _ => None,
    }
}

/// The OpenAI embeddings client.
#[derive(Debug)]
pub struct OpenAiEmbedder {
    http: reqwest::Client,
    url: String,
    auth: (HeaderName, reqwest::header::HeaderValue),
    model: String,
    dimensions: Option<usize>,
    info: EmbedderInfo,
}

#[derive(Serialize)]
struct Request<'a> {
    model: &'a str,
    input: &'a [String],
    encoding_format: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    dimensions: Option<usize>,
}

#[derive(Deserialize)]
struct Response {
    data: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    index: usize,
    embedding: Vec<f32>,
}

impl OpenAiEmbedder {
    /// A client; fails on an unknown output size or an API key that cannot be sent.
    pub fn new(config: OpenAiConfig) -> Result<Self> {
        let dims = config
            .dimensions
            .or_else(|| known_dims(&config.model))
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Config,
                    NAME,
                    "new",
                    format!(
                        "the output size of model `{}` is unknown: set EMBEDDING_DIMENSIONS",
                        config.model
                    ),
                )
            })?;
        let base = config.base_url.trim_end_matches('/');
        let (url, auth) = match &config.auth {
            Auth::Bearer(key) => (
                format!("{base}/embeddings"),
                (AUTHORIZATION, secret_header(&format!("Bearer {key}"))?),
            ),
            Auth::Azure {
                api_key,
                api_version,
            } => (
                format!(
                    "{base}/openai/deployments/{}/embeddings?api-version={api_version}",
                    config.model
                ),
                (HeaderName::from_static("api-key"), secret_header(api_key)?),
            ),
        };
        Ok(Self {
            http: client(NAME, config.timeout)?,
            url,
            auth,
            model: config.model.clone(),
            dimensions: config.dimensions,
            info: EmbedderInfo::new(NAME, config.model, dims, MAX_BATCH),
        })
    }
}

impl Embedder for OpenAiEmbedder {
    fn info(&self) -> &EmbedderInfo {
        &self.info
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Embedding>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        self.info.check_texts(texts)?;
        let body = Request {
            model: &self.model,
            input: texts,
            encoding_format: "float",
            dimensions: self.dimensions,
        };
        let response = self
            .http
            .post(&self.url)
            .header(self.auth.0.clone(), self.auth.1.clone())
            .headers(trace_context())
            .json(&body)
            .send()
            .await
            .map_err(|e| transport_error(NAME, "embed", e))?;
        let response = check_response(NAME, "embed", response).await?;
        let parsed: Response = read_json(NAME, "embed", response, "an embeddings list").await?;
        let mut out: Vec<Option<Embedding>> = vec![None; texts.len()];
        for item in parsed.data {
            if let Some(slot) = out.get_mut(item.index) {
                *slot = Some(item.embedding);
            }
        }
        out.into_iter()
            .enumerate()
            .map(|(i, v)| {
                v.ok_or_else(|| {
                    Error::new(
                        ErrorKind::Backend,
                        NAME,
                        "embed",
                        format!("the answer has no embedding for input {i}"),
                    )
                })
            })
            .collect()
    }
}
