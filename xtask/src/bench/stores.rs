//! `bench export` and `bench vectors`: the privacy-export walk and the vector stores.

use crate::prelude::*;

/// The vector stores side by side at 10 000 × 384: the embedded index, and Chroma, pgvector and Milvus on
/// private loopback servers (the test command's fixtures), each upserted in batches of 500 and queried
/// 500 times (k = 10) by `examples/vector-bench`.
/// `cargo xtask bench export`: a privacy export of one subject (1 000 entries) in a Redis tenant of
/// 100 000 encrypted entries, walked with the store's cursor and, as the baseline in the same run,
/// with the previous re-SCAN per page (`examples/scan-bench`). A private redis-server, or
/// `RESK_TEST_REDIS_URL`.
pub(crate) fn bench_export() -> Result {
    run(cargo().args(["build", "--release", "-p", "resk-scan-bench"]))?;
    let redis = private_redis()?;
    let url = match (&redis, env::var("RESK_TEST_REDIS_URL")) {
        (Some((_, url)), _) => url.clone(),
        (None, Ok(url)) if !url.is_empty() => url,
        _ => return Err("bench export needs redis-server or RESK_TEST_REDIS_URL".into()),
    };
    run(Command::new(target_dir().join("release/resk-scan-bench"))
        .args(["--redis", &url, "--n", "100000", "--mine", "1000"]))
}

pub(crate) fn bench_vectors() -> Result {
    run(cargo().args(["build", "--release", "-p", "resk-vector-bench"]))?;
    let venv = venv()?;
    let chroma = private_chroma(venv.as_deref())?;
    let pgvector = private_pgvector(venv.as_deref())?;
    let milvus = private_milvus(venv.as_deref())?;
    let mut cmd = Command::new(target_dir().join("release/resk-vector-bench"));
    cmd.args([
        "--n",
        "10000",
        "--dims",
        "384",
        "--batch",
        "500",
        "--queries",
        "500",
    ]);
    match (&chroma, env::var("RESK_TEST_CHROMA_URL")) {
        (Some(c), _) => {
            cmd.args(["--chroma", &c.url]);
        }
        (None, Ok(url)) if !url.is_empty() => {
            cmd.args(["--chroma", &url]);
        }
        _ => println!("SKIP vector-bench chroma: no Chroma server (python3 + PyPI needed)"),
    }
    match (&pgvector, env::var("RESK_TEST_PGVECTOR_URL")) {
        (Some(p), _) => {
            cmd.args(["--pgvector", &p.url]);
        }
        (None, Ok(url)) if !url.is_empty() => {
            cmd.args(["--pgvector", &url]);
        }
        _ => println!("SKIP vector-bench pgvector: no PostgreSQL with pgvector"),
    }
    match (&milvus, env::var("RESK_TEST_MILVUS_URL")) {
        (Some(m), _) => {
            cmd.args(["--milvus", &m.url]);
        }
        (None, Ok(url)) if !url.is_empty() => {
            cmd.args(["--milvus", &url]);
        }
        _ => println!("SKIP vector-bench milvus: no milvus-lite server"),
    }
    println!("# vector stores: 10 000 x 384 cosine, upserts in batches of 500, 500 queries k=10");
    run(&mut cmd)?;
    drop((chroma, pgvector, milvus));
    Ok(())
}
