//! Upsert throughput (vectors/s, in batches) and query p50/p99 (k = 10, one tenant) of each vector
//! store at N entries, in one run so the figures are side by side:
//!
//! ```text
//! resk-vector-bench [--n 10000] [--dims 384] [--batch 500] [--queries 500]
//!                   [--chroma URL] [--pgvector URL] [--milvus URL]
//! ```
//!
//! The embedded index always runs; Chroma, pgvector and Milvus when their URL is given (`cargo xtask bench
//! vectors` starts private servers on loopback). Vectors are unit vectors around 1 000 topic centres,
//! the shape of an FAQ corpus; queries are fresh points of the same distribution.
#![allow(clippy::print_stdout)]

use std::{sync::Arc, time::Instant};

use resk_core::{
    CollectionSpec, Metric, SharedVectorStore, TenantId, VectorQuery, VectorRecord, VectorStore,
};

struct Args {
    n: usize,
    dims: usize,
    batch: usize,
    queries: usize,
    chroma: Option<String>,
    pgvector: Option<String>,
    milvus: Option<String>,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        n: 10_000,
        dims: 384,
        batch: 500,
        queries: 500,
        chroma: None,
        pgvector: None,
        milvus: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let num = || value.parse::<usize>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--n" => a.n = num()?,
            "--dims" => a.dims = num()?,
            "--batch" => a.batch = num()?.max(1),
            "--queries" => a.queries = num()?.max(1),
            "--chroma" => a.chroma = Some(value),
            "--pgvector" => a.pgvector = Some(value),
            "--milvus" => a.milvus = Some(value),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(a)
}

fn gaussian(rng: &mut fastrand::Rng) -> f32 {
    let u1 = rng.f64().max(1e-12);
    let u2 = rng.f64();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

fn normalize(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= n);
    v
}

struct Data {
    vectors: Vec<Vec<f32>>,
    queries: Vec<Vec<f32>>,
}

fn data(a: &Args) -> Data {
    let mut rng = fastrand::Rng::with_seed(11);
    let centres: Vec<Vec<f32>> = (0..1000)
        .map(|_| normalize((0..a.dims).map(|_| gaussian(&mut rng)).collect()))
        .collect();
    let sigma = 0.6 / (a.dims as f32).sqrt();
    let point = |rng: &mut fastrand::Rng| {
        let c = &centres[rng.usize(0..centres.len())];
        normalize(c.iter().map(|x| x + sigma * gaussian(rng)).collect())
    };
    Data {
        vectors: (0..a.n).map(|_| point(&mut rng)).collect(),
        queries: (0..a.queries).map(|_| point(&mut rng)).collect(),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 - 1.0) * p).round() as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

async fn measure(name: &str, store: SharedVectorStore, a: &Args, d: &Data) -> Result<(), String> {
    let collection = format!("resk_bench_{}_{}", a.dims, std::process::id());
    let spec = CollectionSpec {
        dims: a.dims,
        metric: Metric::Cosine,
    };
    store
        .ensure_collection(&collection, spec)
        .await
        .map_err(|e| format!("{name}: {e}"))?;
    let tenant = TenantId::new("bench").map_err(|e| e.to_string())?;
    let started = Instant::now();
    for (b, chunk) in d.vectors.chunks(a.batch).enumerate() {
        let records = chunk
            .iter()
            .enumerate()
            .map(|(i, v)| VectorRecord {
                id: format!("r{}", b * a.batch + i),
                tenant: tenant.clone(),
                vector: v.clone(),
                metadata: serde_json::Map::from_iter([("scope".into(), "s".into())]),
            })
            .collect();
        store
            .upsert(&collection, records)
            .await
            .map_err(|e| format!("{name}: {e}"))?;
    }
    let rate = d.vectors.len() as f64 / started.elapsed().as_secs_f64();
    let mut lat = Vec::with_capacity(d.queries.len());
    let mut found = 0usize;
    for q in &d.queries {
        let t = Instant::now();
        let hits = store
            .query(
                &collection,
                &VectorQuery {
                    tenant: tenant.clone(),
                    vector: q.clone(),
                    k: 10,
                    min_similarity: None,
                    filter: Some(resk_core::Filter::Eq("scope".into(), "s".into())),
                },
            )
            .await
            .map_err(|e| format!("{name}: {e}"))?;
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
        found += hits.len();
    }
    lat.sort_by(f64::total_cmp);
    let removed = store
        .purge(&collection, &resk_core::VectorPurge::All)
        .await
        .map_err(|e| format!("{name}: {e}"))?;
    println!(
        "vector-bench {name:<9} n={} batch={} upsert_per_s={rate:.0} query_p50_ms={:.3} query_p99_ms={:.3} mean_hits={:.1} purged={removed}",
        d.vectors.len(),
        a.batch,
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        found as f64 / d.queries.len() as f64,
    );
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("resk-vector-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let a = parse()?;
    let d = data(&a);
    let embedded: SharedVectorStore =
        Arc::new(resk_vector_embedded::EmbeddedVectorStore::in_memory());
    measure("embedded", embedded, &a, &d).await?;
    if let Some(url) = &a.chroma {
        let store = resk_vector_chroma::ChromaVectorStore::new(
            resk_vector_chroma::ChromaConfig::new(url.clone()),
        )
        .map_err(|e| e.to_string())?;
        measure("chroma", Arc::new(store), &a, &d).await?;
    }
    if let Some(url) = &a.pgvector {
        let store = resk_vector_pgvector::PgVectorStore::connect(
            resk_vector_pgvector::PgVectorConfig::new(url.clone()),
        )
        .await
        .map_err(|e| e.to_string())?;
        measure("pgvector", Arc::new(store), &a, &d).await?;
    }
    if let Some(url) = &a.milvus {
        let store = resk_vector_milvus::MilvusVectorStore::connect(
            resk_vector_milvus::MilvusConfig::new(url.clone()),
        )
        .await
        .map_err(|e| e.to_string())?;
        measure("milvus", Arc::new(store), &a, &d).await?;
    }
    Ok(())
}
