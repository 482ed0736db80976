//! Cross-encoders: a BERT-family sequence-classification checkpoint that reads two texts together
//! and scores whether they mean the same (Quora duplicate questions, STS-B, MS MARCO-style
//! rerankers). Far stronger than comparing two embeddings — it sees both questions at once — and
//! far slower (one forward pass per candidate), which is why resk asks it only about candidates in
//! the similarity band.
//!
//! The directory holds what `transformers` saves for `BertForSequenceClassification`:
//! `config.json` (a BERT config with `num_labels`/`id2label`), `model.safetensors` (`bert.*` or
//! unprefixed encoder weights, `bert.pooler.dense`, `classifier`) and `tokenizer.json`. The score:
//! one label → the sigmoid of its logit; two labels → the softmax probability of label 1; more →
//! the probability of the label `id2label` names `duplicate`, `paraphrase`, `entailment`,
//! `equivalent` or `same` (case-insensitive). The operator supplies the weights; nothing is
//! downloaded.

use std::{collections::HashMap, path::Path, sync::Arc};

use candle_core::{DType, Device};
use candle_nn::{Linear, Module, VarBuilder};
use candle_transformers::models::bert::{BertModel, Config};
use resk_core::Result;
use serde::Deserialize;
use tokenizers::{PaddingParams, Tokenizer, TruncationParams};

use crate::{blocking, config_err, forward, model_err, read_json};

/// Label names whose probability is the score of a multi-label model.
const POSITIVE_LABELS: &[&str] = &[
    "duplicate",
    "paraphrase",
    "entailment",
    "equivalent",
    "same",
];

#[derive(Deserialize)]
struct Labels {
    #[serde(default)]
    num_labels: Option<usize>,
    #[serde(default)]
    id2label: Option<HashMap<String, String>>,
}

/// How logits become one score.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Head {
    /// One logit: its sigmoid.
    Sigmoid,
    /// The softmax probability of this label.
    Softmax(usize),
}

struct Model {
    bert: BertModel,
    pooler: Linear,
    classifier: Linear,
    tokenizer: Tokenizer,
    head: Head,
    labels: usize,
    device: Device,
}

/// A loaded cross-encoder; cheap to clone.
#[derive(Clone)]
pub struct CrossEncoder {
    inner: Arc<Model>,
    label: String,
}

impl std::fmt::Debug for CrossEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrossEncoder")
            .field("label", &self.label)
            .field("head", &self.inner.head)
            .finish()
    }
}

impl CrossEncoder {
    /// Load the checkpoint in `dir` (blocking). `setting` names the setting that points at it in
    /// error messages (`CROSS_ENCODER_DIR`).
    pub fn load(dir: &Path, setting: &str) -> Result<Self> {
        let need = |name: &str| {
            let p = dir.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                Err(config_err(format!(
                    "{setting}: {} is missing; the directory must hold a BERT sequence-classification \
                     checkpoint (config.json, model.safetensors, tokenizer.json)",
                    p.display()
                )))
            }
        };
        let (config_path, weights, tokenizer_path) = (
            need("config.json")?,
            need("model.safetensors")?,
            need("tokenizer.json")?,
        );
        let config: Config = read_json(&config_path)?.ok_or_else(|| {
            config_err(format!("{setting}: {} is missing", config_path.display()))
        })?;
        let labels: Labels = read_json(&config_path)?.unwrap_or(Labels {
            num_labels: None,
            id2label: None,
        });
        let count = labels
            .num_labels
            .or_else(|| labels.id2label.as_ref().map(HashMap::len))
            .unwrap_or(2);
        let head = match count {
            0 => return Err(config_err(format!("{setting}: num_labels is 0"))),
            1 => Head::Sigmoid,
            2 => Head::Softmax(1),
            _ => {
                let positive = labels.id2label.as_ref().and_then(|m| {
                    m.iter().find_map(|(id, name)| {
                        POSITIVE_LABELS
                            .contains(&name.to_ascii_lowercase().as_str())
                            .then(|| id.parse::<usize>().ok())
                            .flatten()
                    })
                });
                Head::Softmax(positive.filter(|p| *p < count).ok_or_else(|| {
                    config_err(format!(
                        "{setting}: {count} labels and none of id2label is one of {POSITIVE_LABELS:?}"
                    ))
                })?)
            }
        };
        let mut tokenizer = Tokenizer::from_file(&tokenizer_path)
            .map_err(|e| config_err(format!("{setting}: {}: {e}", tokenizer_path.display())))?;
        tokenizer.with_padding(Some(PaddingParams::default()));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: config.max_position_embeddings.min(512),
                ..TruncationParams::default()
            }))
            .map_err(|e| config_err(format!("{setting}: tokenizer truncation: {e}")))?;
        let device = Device::Cpu;
        let bytes = std::fs::read(&weights)
            .map_err(|e| config_err(format!("{setting}: {}: {e}", weights.display())))?;
        let vb = VarBuilder::from_buffered_safetensors(bytes, DType::F32, &device)
            .map_err(|e| config_err(format!("{setting}: {}: {e}", weights.display())))?;
        let not_bert = |e: candle_core::Error| {
            config_err(format!(
                "{setting}: {}: not a BERT sequence-classification checkpoint: {e}",
                weights.display()
            ))
        };
        let bert = BertModel::load(vb.clone(), &config).map_err(not_bert)?;
        let prefix = config.model_type.as_deref().unwrap_or("bert");
        let pooler_vb = if vb.contains_tensor("pooler.dense.weight") {
            vb.pp("pooler.dense")
        } else {
            vb.pp(format!("{prefix}.pooler.dense"))
        };
        let pooler = candle_nn::linear(config.hidden_size, config.hidden_size, pooler_vb)
            .map_err(not_bert)?;
        let classifier =
            candle_nn::linear(config.hidden_size, count, vb.pp("classifier")).map_err(not_bert)?;
        let label = dir.file_name().map_or_else(
            || "cross-encoder".to_owned(),
            |n| n.to_string_lossy().into_owned(),
        );
        tracing::info!(model = %label, labels = count, ?head, "cross-encoder loaded");
        Ok(Self {
            inner: Arc::new(Model {
                bert,
                pooler,
                classifier,
                tokenizer,
                head,
                labels: count,
                device,
            }),
            label,
        })
    }

    /// The model's name (its directory).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The score (0-1: how surely `a` and `b` mean the same) of each pair, in order. Blocking,
    /// CPU-bound.
    pub fn score_blocking(&self, pairs: &[(String, String)]) -> Result<Vec<f32>> {
        if pairs.is_empty() {
            return Ok(Vec::new());
        }
        self.inner.score(pairs)
    }

    /// [`CrossEncoder::score_blocking`] on the blocking pool.
    pub async fn score(&self, pairs: &[(String, String)]) -> Result<Vec<f32>> {
        let (this, pairs) = (self.clone(), pairs.to_vec());
        blocking("score", move || this.score_blocking(&pairs)).await
    }
}

impl Model {
    fn score(&self, pairs: &[(String, String)]) -> Result<Vec<f32>> {
        let op = |e: candle_core::Error| model_err("score", e);
        let inputs: Vec<tokenizers::EncodeInput<'_>> = pairs
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()).into())
            .collect();
        let encodings = self
            .tokenizer
            .encode_batch(inputs, true)
            .map_err(|e| model_err("tokenize", e))?;
        let (hidden, _) = forward(&self.bert, &encodings, &self.device).map_err(op)?;
        let cls = hidden
            .narrow(1, 0, 1)
            .and_then(|t| t.squeeze(1))
            .map_err(op)?;
        let pooled = self
            .pooler
            .forward(&cls)
            .and_then(|t| t.tanh())
            .map_err(op)?;
        let logits = self.classifier.forward(&pooled).map_err(op)?;
        let logits = logits.to_vec2::<f32>().map_err(op)?;
        Ok(logits
            .iter()
            .map(|row| match self.head {
                Head::Sigmoid => 1.0 / (1.0 + (-row.first().copied().unwrap_or(0.0)).exp()),
                Head::Softmax(label) => {
                    let max = row.iter().copied().fold(f32::MIN, f32::max);
                    let exps: Vec<f32> = row.iter().map(|x| (x - max).exp()).collect();
                    let sum: f32 = exps.iter().sum();
                    exps.get(label).copied().unwrap_or(0.0) / sum.max(f32::MIN_POSITIVE)
                }
            })
            .collect())
    }
}

impl CrossEncoder {
    /// How many labels the classifier has.
    pub fn labels(&self) -> usize {
        self.inner.labels
    }
}
