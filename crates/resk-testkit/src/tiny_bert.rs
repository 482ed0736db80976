//! A tiny BERT sequence-classification checkpoint, written by the tests that load one: the
//! mechanism (config, safetensors weights under `bert.*`, pooler, classifier, a WordPiece
//! tokenizer) is the one a real cross-encoder ships, at a size that needs no download.

use std::{collections::HashMap, path::Path};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{
    Tokenizer, models::wordpiece::WordPiece, normalizers::BertNormalizer,
    pre_tokenizers::bert::BertPreTokenizer, processors::template::TemplateProcessing,
};

/// The words the tokenizer knows (others are `[UNK]`).
const WORDS: &[&str] = &[
    "how", "do", "i", "reset", "my", "password", "username", "enable", "disable", "the", "a",
    "what", "is", "capital", "of", "france", "?", ",", ".",
];

/// Write the checkpoint into `dir` (created): `labels` classifier outputs (1: a sigmoid score;
/// 2: a softmax over two labels), weights from a fixed pseudo-random sequence, and — when `bias` is given — a
/// classifier whose weights are zero and whose biases are `bias`, so its score is known in
/// advance whatever the input.
///
/// # Panics
/// On any I/O or tensor error (test code).
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub fn write(dir: &Path, labels: usize, bias: Option<&[f32]>) {
    std::fs::create_dir_all(dir).unwrap();
    let mut vocab: HashMap<String, u32> = HashMap::new();
    for (i, token) in ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
        .iter()
        .chain(WORDS)
        .enumerate()
    {
        vocab.insert((*token).to_owned(), i as u32);
    }
    let config = serde_json::json!({
        "architectures": ["BertForSequenceClassification"],
        "model_type": "bert",
        "vocab_size": vocab.len(),
        "hidden_size": 16,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 32,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "max_position_embeddings": 64,
        "type_vocab_size": 2,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0,
        "num_labels": labels,
        "id2label": (0..labels).map(|i| (i.to_string(), format!("LABEL_{i}"))).collect::<HashMap<_, _>>(),
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let bert_config: Config = serde_json::from_value(config).unwrap();

    // Every weight the model reads, created by loading it over a VarMap.
    let device = Device::Cpu;
    let mut varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
    BertModel::load(vb.pp("bert"), &bert_config).unwrap();
    candle_nn::linear(16, 16, vb.pp("bert.pooler.dense")).unwrap();
    candle_nn::linear(16, labels, vb.pp("classifier")).unwrap();
    // Candle's CPU generator cannot be seeded: overwrite every weight with a fixed pseudo-random
    // sequence, so the checkpoint is the same on every run.
    let mut names: Vec<(String, Vec<usize>)> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(name, var)| (name.clone(), var.dims().to_vec()))
        .collect();
    names.sort();
    for (n, (name, dims)) in names.iter().enumerate() {
        let count: usize = dims.iter().product();
        let values: Vec<f32> = (0..count)
            .map(|i| {
                let x = ((i as f32 + 1.0) * 12.9898 + n as f32 * 78.233).sin() * 43_758.547;
                (x - x.floor()) * 0.4 - 0.2
            })
            .collect();
        let tensor = Tensor::from_vec(values, dims.as_slice(), &device).unwrap();
        varmap.set_one(name, tensor).unwrap();
    }
    if let Some(bias) = bias {
        varmap
            .set_one(
                "classifier.weight",
                Tensor::zeros((labels, 16), DType::F32, &device).unwrap(),
            )
            .unwrap();
        varmap
            .set_one("classifier.bias", Tensor::new(bias, &device).unwrap())
            .unwrap();
    }
    varmap.save(dir.join("model.safetensors")).unwrap();

    let mut tokens: Vec<(&String, &u32)> = vocab.iter().collect();
    tokens.sort_by_key(|(_, id)| **id);
    let vocab_txt = dir.join("vocab.txt");
    let lines: Vec<&str> = tokens.iter().map(|(t, _)| t.as_str()).collect();
    std::fs::write(&vocab_txt, lines.join("\n") + "\n").unwrap();
    let wordpiece = WordPiece::from_file(&vocab_txt.to_string_lossy())
        .unk_token("[UNK]".into())
        .build()
        .unwrap();
    let mut tokenizer = Tokenizer::new(wordpiece);
    tokenizer.with_normalizer(Some(BertNormalizer::new(true, true, None, true)));
    tokenizer.with_pre_tokenizer(Some(BertPreTokenizer));
    let template = TemplateProcessing::builder()
        .try_single("[CLS] $A [SEP]")
        .unwrap()
        .try_pair("[CLS] $A [SEP] $B:1 [SEP]:1")
        .unwrap()
        .special_tokens(vec![("[CLS]", 2), ("[SEP]", 3)])
        .build()
        .unwrap();
    tokenizer.with_post_processor(Some(template));
    tokenizer
        .save(dir.join("tokenizer.json"), false)
        .expect("tokenizer saved");
}
