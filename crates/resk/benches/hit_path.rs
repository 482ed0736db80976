//! The engine's share of an exact hit, in process (no HTTP), layer by layer: the key (query
//! normalisation + HMAC), the store read (moka), AES-256-GCM, the entry decode, and the guards a
//! semantic candidate passes — so a change to the hot path can be judged against these figures
//! (`cargo bench -p resk --bench hit_path`; `cargo test` runs each benchmark once, which keeps them
//! compiling and working).
//!
//! divan rather than criterion: one small dependency, per-benchmark allocation counts, and a test
//! mode that runs each benchmark once under `cargo test`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use divan::{Bencher, black_box};
use resk::{Cache, Lookup, PutOptions, TenantId, store::memory::MemoryStore};

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
const AES_KEY: &str = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";
const QUERY: &str = "How do I reset my password?";
const ANSWER: &str = "Open Settings, then Security, then Reset password. You will get an email with a link that is valid for one hour.";

fn main() {
    divan::main();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn cache(encrypted: bool) -> Cache {
    let mut builder = Cache::builder()
        .store(MemoryStore::default())
        .key_secret(SECRET);
    if encrypted {
        builder = builder.encryption_key(AES_KEY);
    }
    builder.build().unwrap()
}

fn lookup() -> Lookup<'static> {
    Lookup::new(TenantId::new("acme").unwrap(), QUERY).semantic(false)
}

/// Normalising the query and computing its keyed HMAC.
#[divan::bench]
fn key(bencher: Bencher<'_, '_>) {
    let cache = cache(false);
    let ask = lookup();
    bencher.bench_local(|| black_box(cache.key(black_box(&ask)).unwrap()));
}

/// A whole exact hit: key, store read, (decryption), decode, hit assembly.
#[divan::bench(args = [false, true])]
fn exact_hit(bencher: Bencher<'_, '_>, encrypted: bool) {
    let rt = runtime();
    let cache = cache(encrypted);
    let ask = lookup();
    rt.block_on(cache.put(&ask, ANSWER, &PutOptions::new()))
        .unwrap();
    bencher.bench_local(|| {
        let hit = rt.block_on(cache.get(black_box(&ask))).unwrap();
        black_box(hit.expect("a hit"))
    });
}

/// An exact miss: key and store read only.
#[divan::bench]
fn exact_miss(bencher: Bencher<'_, '_>) {
    let rt = runtime();
    let cache = cache(false);
    let ask = lookup();
    bencher.bench_local(|| black_box(rt.block_on(cache.get(black_box(&ask))).unwrap()));
}

/// A write of the same answer (overwriting): key, encode, (encryption), store write.
#[divan::bench(args = [false, true])]
fn put(bencher: Bencher<'_, '_>, encrypted: bool) {
    let rt = runtime();
    let cache = cache(encrypted);
    let ask = lookup();
    let options = PutOptions::new();
    bencher.bench_local(|| {
        black_box(
            rt.block_on(cache.put(black_box(&ask), ANSWER, &options))
                .unwrap(),
        )
    });
}

/// The guards' check of a semantic candidate (negation, antonyms, numbers, closed classes,
/// direction), which runs on every candidate a semantic lookup considers, sure ones included.
#[divan::bench]
fn semantic_guards(bencher: Bencher<'_, '_>) {
    use resk::verify::Guards;
    let guards = Guards::new();
    let candidate = "How can I reset the password of my account?";
    bencher.bench_local(|| black_box(guards.check(black_box(QUERY), black_box(candidate))));
}

/// The same check as the engine runs it on a semantic lookup: the query's analysis prepared
/// before the embedding (`Verifier::prepare`), so only the candidate's side and the comparison
/// remain after it.
#[divan::bench]
fn semantic_guards_prepared(bencher: Bencher<'_, '_>) {
    use resk::verify::Guards;
    use resk_core::{Pair, Verifier};
    let guards = Guards::new();
    let candidate = "How can I reset the password of my account?";
    let prepared = guards.prepare(QUERY);
    let rt = runtime();
    bencher.bench_local(|| {
        let pair =
            Pair::new(black_box(QUERY), black_box(candidate), 0.9).with_prepared(prepared.as_ref());
        black_box(rt.block_on(guards.verify(&pair)).unwrap())
    });
}
