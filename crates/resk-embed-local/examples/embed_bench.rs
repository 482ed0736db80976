//! Local embedder throughput: sentences/s one per call vs in batches through the same pipeline the
//! server and ingest use (length-sorted batches of `batch`, two in flight), same sentences, same run.
//!
//! ```text
//! cargo run --release -p resk-embed-local --example embed_bench -- <model dir> [sentences] [batch]
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::Instant;

use resk_core::Embedder;
use resk_embed::{Pipeline, PipelineConfig};
use resk_embed_local::LocalEmbedder;

const WORDS: &[&str] = &[
    "how",
    "do",
    "I",
    "reset",
    "my",
    "password",
    "cancel",
    "subscription",
    "refund",
    "order",
    "shipping",
    "address",
    "change",
    "email",
    "account",
    "delete",
    "invoice",
    "payment",
    "card",
    "login",
    "two-factor",
    "support",
    "hours",
    "contact",
    "upgrade",
    "plan",
];

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .expect("usage: embed_bench <model dir> [sentences] [batch]");
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(256);
    let batch: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(32);
    let model = LocalEmbedder::load(std::path::Path::new(&dir), Some("all-MiniLM-L6-v2")).unwrap();
    let mut rng = fastrand::Rng::with_seed(1);
    let sentences: Vec<String> = (0..n)
        .map(|_| {
            let len = rng.usize(6..14);
            (0..len)
                .map(|_| WORDS[rng.usize(0..WORDS.len())])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    // Warm up (allocations, thread pool).
    model.embed_blocking(&sentences[..8]).unwrap();

    let t = Instant::now();
    for s in &sentences {
        model.embed_blocking(std::slice::from_ref(s)).unwrap();
    }
    let single = n as f64 / t.elapsed().as_secs_f64();
    let pipeline = Pipeline::new(
        model.clone(),
        PipelineConfig {
            batch_size: batch,
            concurrency: 2,
            ..PipelineConfig::default()
        },
    );
    let t = Instant::now();
    let vectors = pipeline.embed(&sentences).await.unwrap();
    let batched = n as f64 / t.elapsed().as_secs_f64();
    assert_eq!(vectors.len(), n);
    println!(
        "embed_bench sentences={n} batch={batch} single_per_s={single:.1} batched_per_s={batched:.1} ratio={:.2}",
        batched / single
    );
}
