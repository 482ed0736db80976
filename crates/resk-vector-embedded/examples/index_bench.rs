//! The embedded index at scale: insert rate, query p50/p99 and recall@10 against exact brute force,
//! side by side with brute force's own latency. Run by `cargo xtask bench`:
//!
//! ```text
//! cargo run --release -p resk-vector-embedded --example index_bench -- [N] [DIMS] [QUERIES]
//! ```
//!
//! Data, three kinds (queries are fresh points from the same distribution, never indexed ones):
//! * `clustered`: unit vectors around 1 000 random topic centres (centre + Gaussian noise of
//!   σ = 0.6/√dims per coordinate, renormalised) — a corpus of FAQ-like questions in tight topics;
//! * `lowrank`: a 32-dimensional Gaussian latent mapped into `dims` by a fixed random matrix, plus 10 %
//!   noise — sentence embeddings have an intrinsic dimension of a few dozen;
//! * `uniform`: uniformly random unit vectors, the worst case for every graph index (all points almost
//!   equidistant), shown so nobody mistakes the others for it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::Instant;

use resk_core::{CollectionSpec, Metric, TenantId, VectorQuery, VectorRecord, VectorStore};
use resk_vector_embedded::EmbeddedVectorStore;

/// Search candidate list sizes measured (the first is the store's default).
const EF_SWEEP: &[usize] = &[128, 64, 256];

fn gaussian(rng: &mut fastrand::Rng) -> f32 {
    // Box-Muller.
    let u1 = rng.f64().max(1e-12);
    let u2 = rng.f64();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

fn normalize(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn run(name: &str, n: usize, dims: usize, queries: usize) {
    let mut rng = fastrand::Rng::with_seed(7);
    let centres: Vec<Vec<f32>> = (0..1000)
        .map(|_| normalize((0..dims).map(|_| gaussian(&mut rng)).collect()))
        .collect();
    const LATENT: usize = 32;
    let projection: Vec<Vec<f32>> = (0..dims)
        .map(|_| (0..LATENT).map(|_| gaussian(&mut rng)).collect())
        .collect();
    let sigma = 0.6 / (dims as f32).sqrt();
    let point = |rng: &mut fastrand::Rng| -> Vec<f32> {
        match name {
            "clustered" => {
                let c = &centres[rng.usize(0..centres.len())];
                normalize(c.iter().map(|x| x + sigma * gaussian(rng)).collect())
            }
            "lowrank" => {
                let z: Vec<f32> = (0..LATENT).map(|_| gaussian(rng)).collect();
                let v: Vec<f32> = projection
                    .iter()
                    .map(|row| row.iter().zip(&z).map(|(a, b)| a * b).sum::<f32>())
                    .collect();
                let v = normalize(v);
                normalize(
                    v.iter()
                        .map(|x| x + 0.1 / (dims as f32).sqrt() * gaussian(rng))
                        .collect(),
                )
            }
            _ => normalize((0..dims).map(|_| gaussian(rng)).collect()),
        }
    };
    let tenant = TenantId::new("bench").unwrap();
    let store = EmbeddedVectorStore::in_memory();
    store
        .ensure_collection(
            "bench",
            CollectionSpec {
                dims,
                metric: Metric::Cosine,
            },
        )
        .await
        .unwrap();
    let data: Vec<Vec<f32>> = (0..n).map(|_| point(&mut rng)).collect();
    let start = Instant::now();
    for (b, chunk) in data.chunks(1000).enumerate() {
        let records = chunk
            .iter()
            .enumerate()
            .map(|(i, v)| VectorRecord {
                id: format!("r{}", b * 1000 + i),
                tenant: tenant.clone(),
                vector: v.clone(),
                metadata: serde_json::Map::new(),
            })
            .collect();
        store.upsert("bench", records).await.unwrap();
    }
    let insert_secs = start.elapsed().as_secs_f64();

    let qs: Vec<VectorQuery> = (0..queries)
        .map(|_| VectorQuery {
            tenant: tenant.clone(),
            vector: point(&mut rng),
            k: 10,
            min_similarity: None,
            filter: None,
        })
        .collect();
    let mut exact_ms = Vec::new();
    let mut truths = Vec::new();
    for q in &qs {
        let t = Instant::now();
        truths.push(store.exact_query("bench", q).unwrap());
        exact_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    exact_ms.sort_by(f64::total_cmp);
    for ef in EF_SWEEP {
        store.set_expansion_search(*ef);
        let (mut approx_ms, mut recall) = (Vec::new(), 0.0);
        for (q, truth) in qs.iter().zip(&truths) {
            let t = Instant::now();
            let got = store.query("bench", q).await.unwrap();
            approx_ms.push(t.elapsed().as_secs_f64() * 1e3);
            let hits = got
                .iter()
                .filter(|g| truth.iter().any(|t| t.id == g.id))
                .count();
            recall += hits as f64 / truth.len().max(1) as f64;
        }
        approx_ms.sort_by(f64::total_cmp);
        println!(
            "index_bench data={name} n={n} dims={dims} queries={queries} ef={ef} insert_per_s={:.0} \
             hnsw_p50_ms={:.3} hnsw_p99_ms={:.3} exact_p50_ms={:.3} exact_p99_ms={:.3} recall_at_10={:.4}",
            n as f64 / insert_secs,
            percentile(&approx_ms, 0.5),
            percentile(&approx_ms, 0.99),
            percentile(&exact_ms, 0.5),
            percentile(&exact_ms, 0.99),
            recall / queries as f64
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(100_000);
    let dims = args.get(1).copied().unwrap_or(384);
    let queries = args.get(2).copied().unwrap_or(1000);
    for data in ["clustered", "lowrank", "uniform"] {
        run(data, n, dims, queries).await;
    }
}
