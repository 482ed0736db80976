//! `cargo xtask bench export`: what a privacy export of one subject costs in a Redis tenant of
//! `--n` entries (`--mine` of them the subject's), encrypted as resk-server stores them.
//!
//! * **cursor walk** (what resk does now): pages of 500 through `CacheStore::scan` and the cursor
//!   each page returns — one pass over the tenant's keys. Also timed: the slowest single export
//!   call (2 000 entries of the tenant, the server's budget per request).
//! * **baseline, re-SCAN per page**: the walk resk did before, kept here as it was written in
//!   `RedisStore::scan` so both run in one process against the same data: every page lists the
//!   whole tenant with `SCAN MATCH`, sorts the keys after the last one seen and reads the next 500
//!   one `GET` at a time — so a walk costs a pass over the tenant per page.
//!
//! Both walks decrypt and decode every entry and keep the subject's, and must find the same keys.

#![allow(clippy::print_stdout)] // printing the figures is this program's whole job

use std::{sync::Arc, time::Instant};

use bytes::Bytes;
use fred::prelude::{Builder, Client, ClientLike, Config};
use futures_util::StreamExt;
use resk_cache_redis::{RedisConfig, RedisStore};
use resk_core::{
    CacheEntry, CacheKey, CacheStore, CachedValue, Origin, PurgeScope, ScanCursor, SharedCipher,
    TenantId,
};
use resk_crypto::{AesGcmCipher, EncryptedStore, MasterKey};

type Error = Box<dyn std::error::Error + Send + Sync>;

const PAGE: usize = 500;
const EXPORT_BUDGET: usize = 2_000;

struct Args {
    url: String,
    n: usize,
    mine: usize,
}

fn args() -> Result<Args, Error> {
    let mut out = Args {
        url: "redis://127.0.0.1:6379".into(),
        n: 100_000,
        mine: 1_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--redis" => out.url = value,
            "--n" => out.n = value.parse()?,
            "--mine" => out.mine = value.parse()?,
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    Ok(out)
}

fn subject_of(entry: &CacheEntry) -> Option<&str> {
    entry.origin.subject.as_deref()
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args = args()?;
    let prefix = format!("resk-scanbench-{}", std::process::id());
    let redis = RedisStore::connect(RedisConfig::new(&args.url).with_prefix(&prefix)).await?;
    let cipher: SharedCipher = Arc::new(AesGcmCipher::new(MasterKey::generate()));
    let store = Arc::new(EncryptedStore::new(redis.clone(), cipher.clone()));
    let tenant = TenantId::new("bench")?;
    let lister = Builder::from_config(Config::from_url(&args.url)?).build()?;
    lister.init().await?;

    // Fill: `n` entries of ~300 bytes, every (n / mine)-th the subject's.
    let started = Instant::now();
    let every = (args.n / args.mine.max(1)).max(1);
    let mut writes = futures_util::stream::iter(0..args.n)
        .map(|i| {
            let store = store.clone();
            let tenant = tenant.clone();
            async move {
                let subject = if i % every == 0 { "alice" } else { "bob" };
                let entry = CacheEntry::new(
                    tenant.clone(),
                    format!("question number {i} about something"),
                    CacheEntry::raw(&serde_json::json!(format!(
                        "answer {i} {}",
                        "x".repeat(200)
                    )))?,
                    std::time::Duration::from_secs(3600),
                    Origin {
                        source: "bench".into(),
                        subject: Some(subject.into()),
                    },
                )?;
                let key = CacheKey::new(tenant, format!("{i:064x}"))?;
                store
                    .set(
                        &key,
                        Bytes::from(entry.to_bytes()?),
                        resk_core::SetOptions::ttl(std::time::Duration::from_secs(3600)),
                    )
                    .await
            }
        })
        .buffer_unordered(64);
    while let Some(done) = writes.next().await {
        done?;
    }
    println!(
        "filled {} entries ({} of the subject) in {:.1} s",
        args.n,
        args.n.div_ceil(every),
        started.elapsed().as_secs_f64()
    );

    // The cursor walk, and the slowest single export call.
    let scope = PurgeScope::Tenant(tenant.clone());
    let started = Instant::now();
    let mut found_now = Vec::new();
    let mut cursor: Option<ScanCursor> = None;
    let (mut calls, mut slowest_call, mut read_in_call) = (0usize, 0f64, 0usize);
    let mut call_started = Instant::now();
    loop {
        let page = store.scan(&scope, cursor.as_ref(), PAGE).await?;
        read_in_call += page.entries.len();
        for (key, value) in page.entries {
            let entry = CacheEntry::from_bytes(&value.bytes)?;
            if subject_of(&entry) == Some("alice") {
                found_now.push(key);
            }
        }
        cursor = page.next;
        if read_in_call >= EXPORT_BUDGET || cursor.is_none() {
            calls += 1;
            slowest_call = slowest_call.max(call_started.elapsed().as_secs_f64());
            read_in_call = 0;
            call_started = Instant::now();
        }
        if cursor.is_none() {
            break;
        }
    }
    let now_secs = started.elapsed().as_secs_f64();

    // The baseline: the previous scan, re-listing the tenant for every page.
    let started = Instant::now();
    let mut found_before = Vec::new();
    let mut after: Option<CacheKey> = None;
    let mut pages_before = 0usize;
    loop {
        let page = legacy_scan(&redis, &lister, &prefix, &tenant, after.as_ref(), PAGE).await?;
        pages_before += 1;
        let last = page.len() < PAGE;
        after = page.last().map(|(key, _)| key.clone()).or(after);
        for (key, value) in page {
            let plain = cipher.open(key.tenant(), &key.associated_data(), &value.bytes)?;
            let entry = CacheEntry::from_bytes(&plain)?;
            if subject_of(&entry) == Some("alice") {
                found_before.push(key);
            }
        }
        if last {
            break;
        }
    }
    let before_secs = started.elapsed().as_secs_f64();

    found_now.sort();
    found_now.dedup();
    found_before.sort();
    if found_now != found_before {
        return Err(format!(
            "the walks disagree: {} vs {} entries",
            found_now.len(),
            found_before.len()
        )
        .into());
    }
    println!(
        "# export of one subject ({} entries) in a Redis tenant of {} entries, encrypted",
        found_now.len(),
        args.n
    );
    println!("| walk | whole export | export calls | slowest call | speed-up |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    println!(
        "| baseline: re-SCAN per page ({pages_before} pages of {PAGE}) | {before_secs:.2} s | 1 (unbounded) | {before_secs:.2} s | 1.0x |"
    );
    println!(
        "| cursor walk (pages of {PAGE}, {EXPORT_BUDGET} entries per call) | {now_secs:.2} s | {calls} | {:.0} ms | {:.1}x |",
        slowest_call * 1e3,
        before_secs / now_secs
    );
    redis.purge(&PurgeScope::All).await?;
    redis.quit().await;
    lister.quit().await?;
    Ok(())
}

/// The previous `RedisStore::scan`, as it was written: list every key of the scope with `SCAN
/// MATCH`, keep and sort those after `after`, read them one `GET` at a time until the page is full.
async fn legacy_scan(
    redis: &RedisStore,
    client: &Client,
    prefix: &str,
    tenant: &TenantId,
    after: Option<&CacheKey>,
    limit: usize,
) -> Result<Vec<(CacheKey, CachedValue)>, Error> {
    let pattern = format!("{prefix}:{tenant}:*");
    let mut found = client.scan_buffered(pattern, Some(1000), None).boxed();
    let head = format!("{prefix}:");
    let mut keys = Vec::new();
    while let Some(key) = found.next().await {
        let key = key?;
        let parsed = key
            .as_str()
            .and_then(|k| k.strip_prefix(&head))
            .and_then(|rest| rest.split_once(':'))
            .and_then(|(tenant, name)| {
                CacheKey::new(TenantId::new(tenant).ok()?, name.to_owned()).ok()
            });
        if let Some(key) = parsed
            && after.is_none_or(|a| key > *a)
        {
            keys.push(key);
        }
    }
    keys.sort_unstable();
    keys.dedup();
    let mut page = Vec::with_capacity(limit.min(keys.len()));
    for key in keys {
        if page.len() == limit {
            break;
        }
        if let Some(value) = redis.get(&key).await? {
            page.push((key, value));
        }
    }
    Ok(page)
}
