//! Precision and recall of semantic hits on the labelled development set in `docs/eval`, plain
//! cosine against the full pipeline, side by side in one run (`cargo xtask eval` runs this).
//!
//! Each pair is a cached question and a new one, labelled the same ask or not, in a category
//! (`paraphrase`, `negation`, `antonym`, `number`, `entity`, `direction`, `platform`,
//! `multiturn`). Every pair runs through a real [`Cache`]: the cached question is written in a
//! tenant of its own, the new one looked up. *Plain cosine* is a cache with no verifiers at
//! threshold 0.90 (resk's behaviour before verification, context ignored); *pipeline* is the
//! default configuration for the local model.
//!
//! Usage: `eval <model dir> <docs/eval dir> [--dump]` (`--dump` prints every pair's similarity
//! and verdict).

#![allow(clippy::print_stdout)] // a report printed for people

use std::{collections::BTreeMap, path::PathBuf, sync::Arc, time::Instant};

use resk::{
    Cache, Lookup, Message, PutOptions, Semantic, SemanticConfig, TenantId,
    embed::local::LocalEmbedder, store::memory::MemoryStore, vector::embedded::EmbeddedVectorStore,
};

struct Case {
    category: String,
    same: bool,
    cached: String,
    query: String,
    cached_context: Option<String>,
    query_context: Option<String>,
}

fn load(dir: &std::path::Path) -> Result<Vec<Case>, String> {
    let mut cases = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "tsv"))
        .collect();
    files.sort();
    for file in files {
        let category = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text =
            std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let cols: Vec<&str> = line.split('\t').collect();
            let case = match cols.as_slice() {
                [cached, query] => Case {
                    category: category.clone(),
                    same: category == "paraphrase",
                    cached: (*cached).into(),
                    query: (*query).into(),
                    cached_context: None,
                    query_context: None,
                },
                [cc, cached, qc, query, same] => Case {
                    category: category.clone(),
                    same: *same == "1",
                    cached: (*cached).into(),
                    query: (*query).into(),
                    cached_context: Some((*cc).into()),
                    query_context: Some((*qc).into()),
                },
                _ => {
                    return Err(format!(
                        "{}:{}: expected 2 or 5 columns",
                        file.display(),
                        n + 1
                    ));
                }
            };
            cases.push(case);
        }
    }
    Ok(cases)
}

async fn cache(
    embedder: &LocalEmbedder,
    config: SemanticConfig,
    plain: bool,
) -> resk::Result<Cache> {
    let mut semantic = Semantic::new(
        Arc::new(embedder.clone()),
        Arc::new(EmbeddedVectorStore::in_memory()),
        config,
    )
    .await?;
    semantic = semantic.with_verifiers(if plain {
        Vec::new()
    } else {
        resk::verify::local_defaults(embedder.clone())
    });
    Cache::builder()
        .store(MemoryStore::default())
        .key_secret(b"resk-eval-secret-at-least-32-bytes!!")
        .semantic(semantic)
        .build()
}

/// Served or not, with similarity and decision.
struct Outcome {
    served: bool,
    similarity: Option<f32>,
    decision: String,
}

async fn run(cache: &Cache, i: usize, case: &Case, with_context: bool) -> resk::Result<Outcome> {
    let tenant = TenantId::new(&format!("eval-{i}"))?;
    let ctx = |c: &Option<String>| c.as_ref().map(|c| vec![Message::new("user", c.clone())]);
    let mut write = Lookup::new(tenant.clone(), case.cached.as_str());
    let mut read = Lookup::new(tenant, case.query.as_str());
    if with_context {
        if let Some(c) = ctx(&case.cached_context) {
            write = write.context(c);
        }
        if let Some(c) = ctx(&case.query_context) {
            read = read.context(c);
        }
    }
    cache
        .put(&write, "the cached answer", &PutOptions::new())
        .await?;
    Ok(match cache.lookup(&read).await? {
        resk::Outcome::Hit(hit) => Outcome {
            served: true,
            similarity: hit.similarity,
            decision: hit.verification.map_or_else(
                || "exact".to_owned(),
                |v| format!("{} by {}: {}", v.verdict.as_str(), v.by, v.reason),
            ),
        },
        resk::Outcome::Miss(miss) => Outcome {
            served: false,
            similarity: miss.rejected.first().map(|r| r.similarity),
            decision: miss.rejected.first().map_or_else(
                || "no candidate".to_owned(),
                |r| {
                    format!(
                        "{} by {}: {}",
                        r.verification.verdict.as_str(),
                        r.verification.by,
                        r.verification.reason
                    )
                },
            ),
        },
    })
}

#[derive(Default)]
struct Tally {
    pairs: usize,
    same: usize,
    served_same: usize,
    served_different: usize,
}

impl Tally {
    fn add(&mut self, case: &Case, served: bool) {
        self.pairs += 1;
        if case.same {
            self.same += 1;
            self.served_same += usize::from(served);
        } else {
            self.served_different += usize::from(served);
        }
    }

    fn cell(&self) -> String {
        let different = self.pairs - self.same;
        let mut out = String::new();
        if self.same > 0 {
            out.push_str(&format!("{}/{} hit", self.served_same, self.same));
        }
        if different > 0 {
            if !out.is_empty() {
                out.push_str(", ");
            }
            out.push_str(&format!("{}/{} wrong", self.served_different, different));
        }
        out
    }

    fn precision(&self) -> f64 {
        let served = self.served_same + self.served_different;
        if served == 0 {
            1.0
        } else {
            self.served_same as f64 / served as f64
        }
    }

    fn recall(&self) -> f64 {
        if self.same == 0 {
            0.0
        } else {
            self.served_same as f64 / self.same as f64
        }
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(model), Some(data)) = (args.first(), args.get(1)) else {
        return Err("usage: eval <model dir> <docs/eval dir> [--dump]".into());
    };
    let dump = args.iter().any(|a| a == "--dump");
    let cases = load(std::path::Path::new(data))?;
    let embedder = LocalEmbedder::load(std::path::Path::new(model), Some("all-MiniLM-L6-v2"))?;

    let mut plain_config = SemanticConfig::default();
    plain_config.threshold = 0.9;
    plain_config.negative_ttl = std::time::Duration::ZERO;
    let mut pipeline_config = SemanticConfig::for_local_model();
    pipeline_config.negative_ttl = std::time::Duration::ZERO;
    let aligner = resk::verify::Alignment::new(embedder.clone());
    let plain = cache(&embedder, plain_config, true).await?;
    let pipeline = cache(&embedder, pipeline_config.clone(), false).await?;

    let mut tallies: BTreeMap<String, (Tally, Tally)> = BTreeMap::new();
    let (mut all_plain, mut all_pipe) = (Tally::default(), Tally::default());
    let mut verify_time = std::time::Duration::ZERO;
    for (i, case) in cases.iter().enumerate() {
        let a = run(&plain, i, case, false).await?;
        let start = Instant::now();
        let b = run(&pipeline, i, case, true).await?;
        verify_time += start.elapsed();
        let t = tallies.entry(case.category.clone()).or_default();
        t.0.add(case, a.served);
        t.1.add(case, b.served);
        all_plain.add(case, a.served);
        all_pipe.add(case, b.served);
        if dump {
            let align = aligner
                .check(&case.query, &case.cached)
                .await
                .map_or_else(|e| e.to_string(), |j| j.reason.into_owned());
            println!(
                "{}\t{}\tcos={}\tplain={}\tpipeline={}\t{}\t{align}\t{} | {}",
                case.category,
                u8::from(case.same),
                a.similarity
                    .or(b.similarity)
                    .map_or_else(|| "-".into(), |s| format!("{s:.3}")),
                u8::from(a.served),
                u8::from(b.served),
                b.decision,
                case.cached,
                case.query
            );
        }
    }
    println!(
        "resk eval: {} pairs from {data}; model all-MiniLM-L6-v2; pipeline: threshold {}, accept {}, verifiers {:?}",
        cases.len(),
        pipeline_config.threshold,
        pipeline_config.accept.unwrap_or(pipeline_config.threshold),
        pipeline
            .semantic()
            .map(|s| s.verifiers())
            .unwrap_or_default(),
    );
    println!();
    println!("| category | pairs | plain cosine ≥ 0.90 | pipeline |");
    println!("|---|---|---|---|");
    for (category, (p, q)) in &tallies {
        println!("| {category} | {} | {} | {} |", p.pairs, p.cell(), q.cell());
    }
    println!(
        "| **all** | {} | {} | {} |",
        all_plain.pairs,
        all_plain.cell(),
        all_pipe.cell()
    );
    println!(
        "| precision | | {:.3} | {:.3} |",
        all_plain.precision(),
        all_pipe.precision()
    );
    println!(
        "| recall | | {:.3} | {:.3} |",
        all_plain.recall(),
        all_pipe.recall()
    );
    println!();
    println!(
        "pipeline: {:.1} ms per pair (write + lookup, embedding included)",
        verify_time.as_secs_f64() * 1000.0 / cases.len().max(1) as f64
    );
    Ok(())
}
