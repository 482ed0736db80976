//! In-process sentence-transformers embeddings with [candle](https://github.com/huggingface/candle).
//!
//! `EMBEDDING_PROVIDER=local` runs a BERT-family sentence-transformers model (all-MiniLM-L6-v2 is the
//! tested one) inside the server: no network call per query, no data leaves the machine.
//!
//! The model directory (`EMBEDDING_MODEL_DIR`) holds what a sentence-transformers checkpoint ships:
//! `model.safetensors`, `tokenizer.json`, `config.json`, and optionally `modules.json`,
//! `1_Pooling/config.json` and `sentence_bert_config.json`. Pooling (mean, CLS, max, mean-sqrt-len)
//! follows `1_Pooling/config.json`, normalisation follows `modules.json` (an
//! `sentence_transformers.models.Normalize` module → unit-length vectors), and the token limit follows
//! `sentence_bert_config.json`'s `max_seq_length` — so the vectors are the model's own, not an
//! approximation (tested against reference vectors to cosine ≥ 0.9999).
//!
//! Why candle: it is Hugging Face's maintained pure-Rust inference library, loads safetensors
//! directly, and ships the BERT architecture; `tokenizers` is the same tokenizer code the Python
//! library uses. Downloading from the Hugging Face hub is not implemented (this build machine cannot
//! reach the hub to test it): fetch the files once and point `EMBEDDING_MODEL_DIR` at them.

mod cross;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

pub use cross::CrossEncoder;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use resk_core::{Embedder, EmbedderInfo, Embedding, Error, ErrorKind, Result};
use serde::Deserialize;
use tokenizers::{PaddingParams, Tokenizer, TruncationParams};

const NAME: &str = "local";
/// Texts per forward pass.
pub const MAX_BATCH: usize = 256;

/// How token vectors become one sentence vector (`1_Pooling/config.json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// Average of the non-padding tokens (sentence-transformers' usual choice).
    Mean,
    /// The `[CLS]` token.
    Cls,
    /// Element-wise maximum over the non-padding tokens.
    Max,
    /// Sum of the non-padding tokens divided by the square root of their number.
    MeanSqrtLen,
}

#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
}

#[derive(Deserialize)]
struct Module {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    path: String,
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
}

/// A loaded model; cheap to clone.
#[derive(Clone)]
pub struct LocalEmbedder {
    inner: Arc<Model>,
    info: EmbedderInfo,
    /// Where every embedding also leaves its texts' word vectors (token alignment reads them).
    words: Option<WordCache>,
}

struct Model {
    bert: BertModel,
    tokenizer: Tokenizer,
    pooling: Pooling,
    normalize: bool,
    device: Device,
}

impl std::fmt::Debug for LocalEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalEmbedder")
            .field("info", &self.info)
            .field("pooling", &self.inner.pooling)
            .field("normalize", &self.inner.normalize)
            .finish()
    }
}

fn config_err(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Config, NAME, "load", message)
}

fn model_err(op: &'static str, err: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Backend, NAME, op, err.to_string())
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| config_err(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(config_err(format!("{}: {e}", path.display()))),
    }
}

impl LocalEmbedder {
    /// Load the model in `dir` (blocking: reads ~90 MB for MiniLM). `label` names the model in
    /// semantic scopes and metrics; default: the directory's name.
    pub fn load(dir: &Path, label: Option<&str>) -> Result<Self> {
        let need = |name: &str| -> Result<PathBuf> {
            let p = dir.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                Err(config_err(format!(
                    "{} is missing: EMBEDDING_MODEL_DIR must hold model.safetensors, tokenizer.json \
                     and config.json of a sentence-transformers BERT model",
                    p.display()
                )))
            }
        };
        let config_path = need("config.json")?;
        let weights = need("model.safetensors")?;
        let tokenizer_path = need("tokenizer.json")?;
        let config: Config = read_json(&config_path)?
            .ok_or_else(|| config_err(format!("{} is missing", config_path.display())))?;

        // Pipeline modules: pooling and normalisation as the checkpoint declares them.
        let modules: Vec<Module> = read_json(&dir.join("modules.json"))?.unwrap_or_default();
        let normalize = modules.iter().any(|m| m.kind.ends_with("models.Normalize"));
        let pooling_dir = modules
            .iter()
            .find(|m| m.kind.ends_with("models.Pooling"))
            .map_or_else(|| "1_Pooling".to_owned(), |m| m.path.clone());
        let pooling = match read_json::<PoolingConfig>(&dir.join(pooling_dir).join("config.json"))?
        {
            None => Pooling::Mean,
            Some(p) if p.pooling_mode_mean_tokens => Pooling::Mean,
            Some(p) if p.pooling_mode_cls_token => Pooling::Cls,
            Some(p) if p.pooling_mode_max_tokens => Pooling::Max,
            Some(p) if p.pooling_mode_mean_sqrt_len_tokens => Pooling::MeanSqrtLen,
            Some(_) => return Err(config_err("1_Pooling/config.json enables no pooling mode")),
        };
        let max_len = read_json::<SentenceBertConfig>(&dir.join("sentence_bert_config.json"))?
            .and_then(|c| c.max_seq_length)
            .unwrap_or(512)
            .min(config.max_position_embeddings);

        let mut tokenizer = Tokenizer::from_file(&tokenizer_path)
            .map_err(|e| config_err(format!("{}: {e}", tokenizer_path.display())))?;
        tokenizer.with_padding(Some(PaddingParams::default()));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                ..TruncationParams::default()
            }))
            .map_err(|e| config_err(format!("tokenizer truncation: {e}")))?;

        let device = Device::Cpu;
        let bytes = std::fs::read(&weights)
            .map_err(|e| config_err(format!("{}: {e}", weights.display())))?;
        let vb = VarBuilder::from_buffered_safetensors(bytes, DType::F32, &device)
            .map_err(|e| config_err(format!("{}: {e}", weights.display())))?;
        let bert = BertModel::load(vb, &config).map_err(|e| {
            config_err(format!("{}: not a BERT checkpoint: {e}", weights.display()))
        })?;

        let model = label.map(str::to_owned).unwrap_or_else(|| {
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "local-model".to_owned())
        });
        tracing::info!(
            model,
            dims = config.hidden_size,
            ?pooling,
            normalize,
            max_len,
            "local embedding model loaded"
        );
        Ok(Self {
            info: EmbedderInfo::new(NAME, model, config.hidden_size, MAX_BATCH),
            inner: Arc::new(Model {
                bert,
                tokenizer,
                pooling,
                normalize,
                device,
            }),
            words: None,
        })
    }

    /// Also keep every embedded text's word vectors in `cache` (from the same forward pass:
    /// a copy of the hidden state, no second pass), for token alignment to read. Clones share it.
    pub fn with_word_cache(mut self, cache: WordCache) -> Self {
        self.words = Some(cache);
        self
    }

    /// The word-vector memory, when one is attached.
    pub fn word_cache(&self) -> Option<&WordCache> {
        self.words.as_ref()
    }

    /// Embed synchronously (CPU-bound; the async `embed` runs this on the blocking pool).
    pub fn embed_blocking(&self, texts: &[String]) -> Result<Vec<Embedding>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        self.info.check_texts(texts)?;
        self.inner.forward(texts, self.words.as_ref())
    }
}

/// The word vectors of `texts` from their encodings and the model's last hidden state.
fn extract_words(
    texts: &[String],
    encodings: &[tokenizers::Encoding],
    hidden: &Tensor,
) -> Result<Vec<WordVectors>> {
    let hidden = hidden.to_vec3::<f32>().map_err(|e| model_err("embed", e))?;
    let mut out = Vec::with_capacity(encodings.len());
    for (text, (encoding, rows)) in texts.iter().zip(encodings.iter().zip(hidden)) {
        let mut words: Vec<String> = Vec::new();
        let mut vectors: Vec<Vec<f32>> = Vec::new();
        let mut last_word = None;
        for ((word_id, (start, end)), row) in encoding
            .get_word_ids()
            .iter()
            .zip(encoding.get_offsets())
            .zip(rows)
        {
            // Special tokens and padding have no word.
            let Some(word_id) = *word_id else { continue };
            let piece = text.get(*start..*end).unwrap_or_default().to_lowercase();
            if last_word == Some(word_id) {
                if let (Some(w), Some(v)) = (words.last_mut(), vectors.last_mut()) {
                    w.push_str(&piece);
                    for (a, b) in v.iter_mut().zip(&row) {
                        *a += b;
                    }
                }
            } else {
                words.push(piece);
                vectors.push(row);
                last_word = Some(word_id);
            }
        }
        for v in &mut vectors {
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            if norm > 0.0 {
                v.iter_mut().for_each(|x| *x /= norm);
            }
        }
        out.push(WordVectors { words, vectors });
    }
    Ok(out)
}

/// Word vectors remembered by text, shared by the embedder that computes them on every embedding
/// (its forward pass has them for free) and the token alignment that reads them.
pub type WordCache = moka::sync::Cache<String, Arc<WordVectors>>;

/// A [`WordCache`] holding about `bytes` of vectors.
pub fn word_cache(bytes: u64) -> WordCache {
    moka::sync::Cache::builder()
        .weigher(|text: &String, v: &Arc<WordVectors>| {
            let floats: usize = v.vectors.iter().map(Vec::len).sum();
            u32::try_from(text.len() + floats * 4 + v.words.len() * 24).unwrap_or(u32::MAX)
        })
        .max_capacity(bytes)
        .build()
}

/// Run `bert` over a padded batch of `encodings`: the last hidden state `(rows, cols, dims)` and the
/// attention mask `(rows, cols)`.
pub(crate) fn forward(
    bert: &BertModel,
    encodings: &[tokenizers::Encoding],
    device: &Device,
) -> candle_core::Result<(Tensor, Tensor)> {
    let rows = encodings.len();
    let cols = encodings.first().map_or(0, |e| e.get_ids().len());
    let mut ids = Vec::with_capacity(rows * cols);
    let mut types = Vec::with_capacity(rows * cols);
    let mut mask = Vec::with_capacity(rows * cols);
    for e in encodings {
        ids.extend_from_slice(e.get_ids());
        types.extend_from_slice(e.get_type_ids());
        mask.extend_from_slice(e.get_attention_mask());
    }
    let ids = Tensor::from_vec(ids, (rows, cols), device)?;
    let types = Tensor::from_vec(types, (rows, cols), device)?;
    let mask = Tensor::from_vec(mask, (rows, cols), device)?;
    let hidden = bert.forward(&ids, &types, Some(&mask))?;
    Ok((hidden, mask))
}

/// Run the CPU-bound `work` on the blocking pool (a panic there is a `Backend` error of `op`).
pub(crate) async fn blocking<T: Send + 'static>(
    op: &'static str,
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| model_err(op, e))?
}

/// The contextual vectors of one text's words: each word (as the tokenizer's pre-tokenizer splits
/// the text: punctuation apart) with the average of its word pieces' last-layer vectors.
#[derive(Clone, Debug)]
pub struct WordVectors {
    /// The words, lowercase as the model sees them.
    pub words: Vec<String>,
    /// One unit-length vector per word.
    pub vectors: Vec<Vec<f32>>,
}

impl LocalEmbedder {
    /// The contextual word vectors of `texts` (one forward pass, as [`LocalEmbedder::embed_blocking`]
    /// makes, without the pooling): what token alignment compares. Blocking, CPU-bound.
    pub fn word_vectors_blocking(&self, texts: &[String]) -> Result<Vec<WordVectors>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        self.info.check_texts(texts)?;
        self.inner.word_vectors(texts)
    }

    /// [`LocalEmbedder::word_vectors_blocking`] on the blocking pool.
    pub async fn word_vectors(&self, texts: &[String]) -> Result<Vec<WordVectors>> {
        let (this, texts) = (self.clone(), texts.to_vec());
        blocking("embed", move || this.word_vectors_blocking(&texts)).await
    }
}

impl Model {
    /// Tokenize and run the model: the encodings, the last hidden state `(rows, cols, dims)` and the
    /// attention mask `(rows, cols)`.
    fn hidden(&self, texts: &[String]) -> Result<(Vec<tokenizers::Encoding>, Tensor, Tensor)> {
        let op = |e: candle_core::Error| model_err("embed", e);
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| model_err("tokenize", e))?;
        let (hidden, mask) = forward(&self.bert, &encodings, &self.device).map_err(op)?;
        Ok((encodings, hidden, mask))
    }

    fn word_vectors(&self, texts: &[String]) -> Result<Vec<WordVectors>> {
        let (encodings, hidden, _) = self.hidden(texts)?;
        extract_words(texts, &encodings, &hidden)
    }

    fn forward(&self, texts: &[String], words: Option<&WordCache>) -> Result<Vec<Embedding>> {
        let op = |e: candle_core::Error| model_err("embed", e);
        let (encodings, hidden, mask) = self.hidden(texts)?;
        if let Some(cache) = words {
            for (text, vectors) in texts.iter().zip(extract_words(texts, &encodings, &hidden)?) {
                cache.insert(text.clone(), Arc::new(vectors));
            }
        }
        let maskf = mask
            .to_dtype(DType::F32)
            .map_err(op)?
            .unsqueeze(2)
            .map_err(op)?;
        let pooled = match self.pooling {
            Pooling::Cls => hidden.narrow(1, 0, 1).and_then(|t| t.squeeze(1)),
            Pooling::Mean | Pooling::MeanSqrtLen => {
                let summed = hidden.broadcast_mul(&maskf).and_then(|t| t.sum(1));
                let counts = maskf.sum(1);
                match (summed, counts) {
                    (Ok(s), Ok(c)) => {
                        let c = if self.pooling == Pooling::Mean {
                            Ok(c)
                        } else {
                            c.sqrt()
                        };
                        c.and_then(|c| s.broadcast_div(&c))
                    }
                    (Err(e), _) | (_, Err(e)) => Err(e),
                }
            }
            Pooling::Max => {
                // Padding positions get a large negative value so they never win the maximum.
                let neg = maskf.affine(1.0, -1.0).and_then(|m| m.affine(1e9, 0.0));
                neg.and_then(|n| hidden.broadcast_add(&n))
                    .and_then(|t| t.max(1))
            }
        }
        .map_err(op)?;
        let pooled = if self.normalize {
            let norm = pooled
                .sqr()
                .and_then(|t| t.sum_keepdim(1))
                .and_then(|t| t.sqrt())
                .map_err(op)?;
            pooled.broadcast_div(&norm).map_err(op)?
        } else {
            pooled
        };
        pooled.to_vec2::<f32>().map_err(op)
    }
}

impl Embedder for LocalEmbedder {
    fn info(&self) -> &EmbedderInfo {
        &self.info
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Embedding>> {
        let (this, texts) = (self.clone(), texts.to_vec());
        blocking("embed", move || this.embed_blocking(&texts)).await
    }
}
