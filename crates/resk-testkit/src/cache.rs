//! Cache store scenarios, one per bullet of `CacheStore`'s `# Behavior` docs.

use std::time::Duration;

use bytes::Bytes;
use resk_core::{CacheKey, CacheStore, PurgeScope, ScanCursor, SetOptions, TenantId};

use crate::unique_id;

/// A random tenant, so scenarios never see another run's data.
pub fn tenant() -> TenantId {
    TenantId::new(&format!("t-{}", unique_id())).unwrap()
}

fn key(tenant: &TenantId, name: &str) -> CacheKey {
    CacheKey::new(tenant.clone(), name).unwrap()
}

async fn read<S: CacheStore>(store: &S, key: &CacheKey) -> Option<Bytes> {
    store.get(key).await.unwrap().map(|v| v.bytes)
}

/// `get` after `set` returns the bytes written, with the expiry the TTL implies.
pub async fn set_then_get<S: CacheStore>(store: &S) {
    let t = tenant();
    let k = key(&t, "greeting");
    store
        .set(
            &k,
            Bytes::from_static(b"hello"),
            SetOptions::ttl(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    let value = store
        .get(&k)
        .await
        .unwrap()
        .expect("value written must be read back");
    assert_eq!(value.bytes, Bytes::from_static(b"hello"));
    let left = value
        .remaining_ttl()
        .expect("a TTL was given, so an expiry must be reported");
    assert!(
        left <= Duration::from_secs(60) && left > Duration::from_secs(50),
        "remaining {left:?}"
    );
    let k2 = key(&t, "forever");
    store
        .set(&k2, Bytes::from_static(b"x"), SetOptions::default())
        .await
        .unwrap();
    assert_eq!(store.get(&k2).await.unwrap().unwrap().expires_at, None);
}

/// A key never written reads as `None`, not an error.
pub async fn missing_is_none<S: CacheStore>(store: &S) {
    assert!(
        store
            .get(&key(&tenant(), "never-written"))
            .await
            .unwrap()
            .is_none()
    );
    store.ping().await.unwrap();
}

/// A second `set` replaces the value and its TTL.
pub async fn overwrite_replaces<S: CacheStore>(store: &S) {
    let t = tenant();
    let k = key(&t, "answer");
    store
        .set(
            &k,
            Bytes::from_static(b"first"),
            SetOptions::ttl(Duration::from_secs(5)),
        )
        .await
        .unwrap();
    store
        .set(
            &k,
            Bytes::from_static(b"second"),
            SetOptions::ttl(Duration::from_secs(600)),
        )
        .await
        .unwrap();
    let value = store.get(&k).await.unwrap().unwrap();
    assert_eq!(value.bytes, Bytes::from_static(b"second"));
    assert!(
        value.remaining_ttl().unwrap() > Duration::from_secs(500),
        "the TTL must be replaced too"
    );
}

/// `delete` removes one entry and reports whether it existed.
pub async fn delete_removes<S: CacheStore>(store: &S) {
    let t = tenant();
    let (a, b) = (key(&t, "a"), key(&t, "b"));
    store
        .set(&a, Bytes::from_static(b"1"), SetOptions::default())
        .await
        .unwrap();
    store
        .set(&b, Bytes::from_static(b"2"), SetOptions::default())
        .await
        .unwrap();
    assert!(store.delete(&a).await.unwrap());
    assert!(
        !store.delete(&a).await.unwrap(),
        "second delete finds nothing"
    );
    assert!(read(store, &a).await.is_none());
    assert_eq!(
        read(store, &b).await,
        Some(Bytes::from_static(b"2")),
        "delete removes only its key"
    );
}

/// An entry is never returned after its TTL has elapsed; entries without a TTL stay.
pub async fn ttl_expires<S: CacheStore>(store: &S) {
    let t = tenant();
    let short = key(&t, "short");
    let long = key(&t, "long");
    store
        .set(
            &short,
            Bytes::from_static(b"s"),
            SetOptions::ttl(Duration::from_secs(1)),
        )
        .await
        .unwrap();
    store
        .set(
            &long,
            Bytes::from_static(b"l"),
            SetOptions::ttl(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Past the TTL the entry must be gone at once, not eventually.
    assert!(
        read(store, &short).await.is_none(),
        "expired entry was returned"
    );
    assert_eq!(read(store, &long).await, Some(Bytes::from_static(b"l")));
}

/// `purge(All)` removes every entry of every tenant and counts them.
pub async fn purge_all<S: CacheStore>(store: &S) {
    let (t1, t2) = (tenant(), tenant());
    for (t, name) in [(&t1, "a"), (&t1, "b"), (&t2, "a"), (&t2, "c")] {
        store
            .set(
                &key(t, name),
                Bytes::from_static(b"v"),
                SetOptions::default(),
            )
            .await
            .unwrap();
    }
    assert_eq!(store.purge(&PurgeScope::All).await.unwrap(), 4);
    for (t, name) in [(&t1, "a"), (&t1, "b"), (&t2, "a"), (&t2, "c")] {
        assert!(read(store, &key(t, name)).await.is_none());
    }
    assert_eq!(store.purge(&PurgeScope::All).await.unwrap(), 0);
}

/// `purge(Tenant(t))` removes exactly `t`'s entries.
pub async fn purge_tenant_only<S: CacheStore>(store: &S) {
    let (t1, t2) = (tenant(), tenant());
    for i in 0..25 {
        store
            .set(
                &key(&t1, &format!("k{i}")),
                Bytes::from_static(b"1"),
                SetOptions::default(),
            )
            .await
            .unwrap();
        store
            .set(
                &key(&t2, &format!("k{i}")),
                Bytes::from_static(b"2"),
                SetOptions::default(),
            )
            .await
            .unwrap();
    }
    assert_eq!(
        store.purge(&PurgeScope::Tenant(t1.clone())).await.unwrap(),
        25
    );
    for i in 0..25 {
        assert!(read(store, &key(&t1, &format!("k{i}"))).await.is_none());
        assert_eq!(
            read(store, &key(&t2, &format!("k{i}"))).await,
            Some(Bytes::from_static(b"2"))
        );
    }
}

/// Every key of a walk with `limit`, following the cursor until `next` is `None`, sorted and
/// deduplicated (Redis `SCAN` may return a key twice). Every page is within `limit` and `scope`.
async fn walk<S: CacheStore>(store: &S, scope: &PurgeScope, limit: usize) -> Vec<CacheKey> {
    let mut keys = Vec::new();
    let mut cursor: Option<ScanCursor> = None;
    // A walk ends: no store needs more calls than a page per entry plus a few empty steps.
    for _ in 0..10_000 {
        let page = store.scan(scope, cursor.as_ref(), limit).await.unwrap();
        assert!(
            page.entries.len() <= limit,
            "page of {} > limit {limit}",
            page.entries.len()
        );
        for (key, value) in page.entries {
            assert!(scope.contains(&key), "{key} outside {scope:?}");
            // Values come back as written.
            assert_eq!(&value.bytes[..], format!("v-{}", key.name()).as_bytes());
            keys.push(key);
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => {
                keys.sort();
                keys.dedup();
                return keys;
            }
        }
    }
    panic!("the walk did not end");
}

/// `scan` walks every live entry of its scope, page by page, each page within its limit; expired
/// entries and other tenants' entries are not in a tenant's walk; a cursor the store did not make
/// is refused as invalid input.
pub async fn scan_pages<S: CacheStore>(store: &S) {
    let (t1, t2) = (tenant(), tenant());
    let mut expected1 = Vec::new();
    for i in 0..11 {
        let k = key(&t1, &format!("k{i:02}"));
        store
            .set(
                &k,
                Bytes::from(format!("v-k{i:02}")),
                SetOptions::ttl(Duration::from_secs(600)),
            )
            .await
            .unwrap();
        expected1.push(k);
    }
    for i in 0..4 {
        let k = key(&t2, &format!("k{i:02}"));
        store
            .set(&k, Bytes::from(format!("v-k{i:02}")), SetOptions::default())
            .await
            .unwrap();
    }
    let gone = key(&t1, "k05-expired");
    store
        .set(
            &gone,
            Bytes::from_static(b"v-k05-expired"),
            SetOptions::ttl(Duration::from_millis(50)),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(120)).await;

    for limit in [1, 3, 11, 100] {
        assert_eq!(
            walk(store, &PurgeScope::Tenant(t1.clone()), limit).await,
            expected1,
            "limit {limit}"
        );
    }
    // The whole store: both tenants (other data may share the store).
    let all: Vec<CacheKey> = walk(store, &PurgeScope::All, 4)
        .await
        .into_iter()
        .filter(|k| k.tenant() == &t1 || k.tenant() == &t2)
        .collect();
    assert_eq!(all.len(), 15);
    // A deleted entry is no longer walked.
    store.delete(&expected1[3]).await.unwrap();
    expected1.remove(3);
    assert_eq!(
        walk(store, &PurgeScope::Tenant(t1.clone()), 5).await,
        expected1
    );
    // A made-up cursor is the caller's mistake, not the store's failure.
    let forged = ScanCursor::new("not a cursor").unwrap();
    let err = store
        .scan(&PurgeScope::Tenant(t1), Some(&forged), 5)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), resk_core::ErrorKind::InvalidInput, "{err}");
}

/// Equal names in different tenants are different entries.
pub async fn tenants_are_isolated<S: CacheStore>(store: &S) {
    let (t1, t2) = (tenant(), tenant());
    let (k1, k2) = (key(&t1, "same-name"), key(&t2, "same-name"));
    store
        .set(
            &k1,
            Bytes::from_static(b"tenant one"),
            SetOptions::default(),
        )
        .await
        .unwrap();
    assert!(
        read(store, &k2).await.is_none(),
        "a tenant read another tenant's entry"
    );
    store
        .set(
            &k2,
            Bytes::from_static(b"tenant two"),
            SetOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        read(store, &k1).await,
        Some(Bytes::from_static(b"tenant one"))
    );
    assert!(store.delete(&k2).await.unwrap());
    assert_eq!(
        read(store, &k1).await,
        Some(Bytes::from_static(b"tenant one"))
    );
}

/// Values of several MiB round-trip byte for byte.
pub async fn large_value<S: CacheStore>(store: &S) {
    let t = tenant();
    let k = key(&t, "large");
    let value: Vec<u8> = (0..(3 * 1024 * 1024 + 7))
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    store
        .set(
            &k,
            Bytes::from(value.clone()),
            SetOptions::ttl(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    assert_eq!(read(store, &k).await.as_deref(), Some(value.as_slice()));
}

/// Names in any script, with separators and glob characters, are stored and purged exactly.
pub async fn unicode_names<S: CacheStore>(store: &S) {
    let t = tenant();
    let names = [
        "日本語の質問",
        "émoji 🚀 key",
        "Straße/ß",
        "glob*chars?[a-z]",
        "colon:separated:name",
        "percent%and\\backslash",
        "\u{202E}rtl override",
    ];
    for (i, name) in names.iter().enumerate() {
        store
            .set(
                &key(&t, name),
                Bytes::from(format!("v{i}")),
                SetOptions::default(),
            )
            .await
            .unwrap();
    }
    for (i, name) in names.iter().enumerate() {
        assert_eq!(
            read(store, &key(&t, name)).await,
            Some(Bytes::from(format!("v{i}"))),
            "{name}"
        );
    }
    // A glob-looking name must not match (and so delete) other names.
    assert!(store.delete(&key(&t, "glob*chars?[a-z]")).await.unwrap());
    assert!(
        read(store, &key(&t, "colon:separated:name"))
            .await
            .is_some()
    );
    assert_eq!(
        store.purge(&PurgeScope::Tenant(t)).await.unwrap(),
        names.len() as u64 - 1
    );
}

/// Arbitrary bytes, including NUL and invalid UTF-8, round-trip unchanged.
pub async fn binary_values<S: CacheStore>(store: &S) {
    let t = tenant();
    let k = key(&t, "binary");
    let value: Vec<u8> = (0..=255u8).chain([0, 0xff, 0xfe, 0xc3, 0x28]).collect();
    store
        .set(&k, Bytes::from(value.clone()), SetOptions::default())
        .await
        .unwrap();
    assert_eq!(read(store, &k).await.as_deref(), Some(value.as_slice()));
    let empty = key(&t, "empty");
    store
        .set(&empty, Bytes::new(), SetOptions::default())
        .await
        .unwrap();
    assert_eq!(
        read(store, &empty).await,
        Some(Bytes::new()),
        "an empty value is a value, not a miss"
    );
}

/// Concurrent writers to distinct and equal keys leave every key readable and consistent.
pub async fn concurrent_writers<S: CacheStore>(store: &S) {
    let t = tenant();
    let shared = key(&t, "contended");
    let writers = 16;
    let per_writer = 40;
    futures_join_all((0..writers).map(|w| {
        let t = t.clone();
        let shared = shared.clone();
        async move {
            for i in 0..per_writer {
                let own = key(&t, &format!("w{w}-{i}"));
                store
                    .set(&own, Bytes::from(format!("{w}:{i}")), SetOptions::default())
                    .await
                    .unwrap();
                store
                    .set(
                        &shared,
                        Bytes::from(format!("writer {w}")),
                        SetOptions::default(),
                    )
                    .await
                    .unwrap();
            }
        }
    }))
    .await;
    for w in 0..writers {
        for i in 0..per_writer {
            let own = key(&t, &format!("w{w}-{i}"));
            assert_eq!(
                read(store, &own).await,
                Some(Bytes::from(format!("{w}:{i}")))
            );
        }
    }
    let last = read(store, &shared).await.unwrap();
    let text = std::str::from_utf8(&last).unwrap();
    assert!(
        (0..writers).any(|w| text == format!("writer {w}")),
        "contended key holds a torn or foreign value: {text:?}"
    );
    assert_eq!(
        store.purge(&PurgeScope::Tenant(t)).await.unwrap(),
        (writers * per_writer + 1) as u64
    );
}

/// Drive futures concurrently on the current task (no `futures` dependency needed).
async fn futures_join_all<F: std::future::Future<Output = ()>>(futs: impl Iterator<Item = F>) {
    let mut set = Vec::new();
    for f in futs {
        set.push(Box::pin(f));
    }
    std::future::poll_fn(|cx| {
        set.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if set.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
}

/// `set` with `if_absent`: of concurrent writers of one key exactly one writes, and the value read
/// afterwards is the winner's; a later `if_absent` write of a live key changes nothing, and a plain
/// `set` still replaces it.
pub async fn if_absent_one_winner<S: CacheStore>(store: &S) {
    let t = tenant();
    let k = key(&t, "claimed");
    let options = SetOptions::ttl(Duration::from_secs(60)).if_absent();
    let writers = 16;
    let won = std::sync::Mutex::new(Vec::new());
    let won_ref = &won;
    futures_join_all((0..writers).map(|w| {
        let k = k.clone();
        async move {
            let written = store
                .set(&k, Bytes::from(format!("writer {w}")), options)
                .await
                .unwrap();
            if written {
                won_ref.lock().unwrap().push(w);
            }
        }
    }))
    .await;
    let winners = won.into_inner().unwrap();
    assert_eq!(
        winners.len(),
        1,
        "exactly one if_absent writer wins: {winners:?}"
    );
    assert_eq!(
        read(store, &k).await,
        Some(Bytes::from(format!("writer {}", winners[0])))
    );
    assert!(
        !store
            .set(&k, Bytes::from_static(b"late"), options)
            .await
            .unwrap()
    );
    assert!(
        store
            .set(&k, Bytes::from_static(b"plain"), SetOptions::default())
            .await
            .unwrap()
    );
    assert_eq!(read(store, &k).await, Some(Bytes::from_static(b"plain")));
    store.purge(&PurgeScope::Tenant(t)).await.unwrap();
}

/// `set` with `if_absent` over an expired entry writes: an expired entry counts as absent.
pub async fn if_absent_over_expired<S: CacheStore>(store: &S) {
    let t = tenant();
    let k = key(&t, "lapsed");
    store
        .set(
            &k,
            Bytes::from_static(b"old"),
            SetOptions::ttl(Duration::from_secs(1)),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let written = store
        .set(
            &k,
            Bytes::from_static(b"new"),
            SetOptions::ttl(Duration::from_secs(60)).if_absent(),
        )
        .await
        .unwrap();
    assert!(
        written,
        "an expired entry must not block an if_absent write"
    );
    assert_eq!(read(store, &k).await, Some(Bytes::from_static(b"new")));
    store.purge(&PurgeScope::Tenant(t)).await.unwrap();
}
