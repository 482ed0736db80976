//! Privacy requests and retention: export and erase a subject's entries (GDPR articles 15, 17 and
//! 20), and the maximum retention every backend is held to.
//!
//! A subject's entries are those it wrote (`origin.subject`) or that are private to it (`owner`).
//! Stores index entries by key only, and their values are encrypted, so finding them means walking
//! the tenant with [`resk_core::CacheStore::scan`] and reading each entry (an index by subject
//! would be one more place holding the subject's identity). An export call reads at most
//! [`EXPORT_BUDGET`] entries and answers a cursor to go on from, so no single request costs more
//! than that; an erasure walks the whole tenant once (the store's own cursor, so one pass, not a
//! pass per page) and deletes every entry found.
//!
//! Retention: no entry is written with a TTL past `CACHE_MAX_TTL_SECS`, so every backend drops it
//! by its own expiry. Entries written before that maximum was lowered are never served once older
//! than it (checked on every read) and are deleted by the retention sweep.

use std::time::Duration;

use resk_core::{
    CacheEntry, CacheKey, CacheStore, PurgeScope, Result, ScanCursor, SharedCacheStore, TenantId,
};
use time::OffsetDateTime;

use crate::semantic::Semantic;

/// Entries read per page while walking a tenant.
const PAGE: usize = 500;

/// Entries of the tenant one export call reads at most: a `cache:read` caller's request costs at
/// most this much of the store's time, whatever the tenant's size; the answer's `next` goes on.
pub const EXPORT_BUDGET: usize = 2_000;

/// Whether `entry` belongs to `subject`: written by it, or private to it.
pub(crate) fn belongs_to(entry: &CacheEntry, subject: &str) -> bool {
    entry.origin.subject.as_deref() == Some(subject) || entry.owner.as_deref() == Some(subject)
}

/// Call `visit` with the readable entries of `scope` from `cursor` on, page by page, until the
/// walk ends, `budget` entries were read, or twice the pages that takes were asked for (a sparse
/// scope on Redis can answer short pages); where the walk goes on (`None`: it is over). Values
/// that do not parse as entries (another program's data under the same prefix, or an unknown
/// schema) are skipped.
pub(crate) async fn walk_from(
    cache: &SharedCacheStore,
    scope: &PurgeScope,
    cursor: Option<ScanCursor>,
    budget: usize,
    mut visit: impl FnMut(CacheKey, CacheEntry),
) -> Result<Option<ScanCursor>> {
    walk_pages(cache, scope, cursor, budget, PAGE, |key, entry, _| {
        visit(key, entry);
        true
    })
    .await
}

/// [`walk_from`] in pages of `page` entries, with each entry's stored size; the walk also ends
/// after a page in which `visit` answered `false` (it has enough). A page is always visited
/// whole, so the cursor answered never skips an entry.
pub(crate) async fn walk_pages(
    cache: &SharedCacheStore,
    scope: &PurgeScope,
    mut cursor: Option<ScanCursor>,
    budget: usize,
    page: usize,
    mut visit: impl FnMut(CacheKey, CacheEntry, usize) -> bool,
) -> Result<Option<ScanCursor>> {
    let page = page.max(1);
    let mut read = 0usize;
    let mut pages_left = budget.div_ceil(page).saturating_mul(2);
    loop {
        pages_left -= 1;
        let found = cache
            .scan(scope, cursor.as_ref(), page.min(budget - read).max(1))
            .await?;
        read += found.entries.len();
        let mut more = true;
        for (key, value) in found.entries {
            if let Ok(entry) = CacheEntry::from_bytes(&value.bytes) {
                more &= visit(key, entry, value.bytes.len());
            }
        }
        cursor = found.next;
        if cursor.is_none() || !more || read >= budget || pages_left == 0 {
            return Ok(cursor);
        }
    }
}

/// Call `visit` with every readable entry in `scope`.
pub(crate) async fn walk(
    cache: &SharedCacheStore,
    scope: &PurgeScope,
    visit: impl FnMut(CacheKey, CacheEntry),
) -> Result<()> {
    walk_from(cache, scope, None, usize::MAX, visit).await?;
    Ok(())
}

/// The entries of `subject` in `tenant` among the next `budget` entries of the tenant's walk from
/// `cursor`, and where the walk goes on. Each key once, in key order within the call.
pub(crate) async fn export(
    cache: &SharedCacheStore,
    tenant: &TenantId,
    subject: &str,
    cursor: Option<ScanCursor>,
    budget: usize,
) -> Result<(Vec<(CacheKey, CacheEntry)>, Option<ScanCursor>)> {
    let mut found = Vec::new();
    let scope = PurgeScope::Tenant(tenant.clone());
    let next = walk_from(cache, &scope, cursor, budget, |key, entry| {
        if entry.tenant == *tenant && belongs_to(&entry, subject) {
            found.push((key, entry));
        }
    })
    .await?;
    // Redis's SCAN may name a key twice.
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found.dedup_by(|a, b| a.0 == b.0);
    Ok((found, next))
}

/// The keys of every entry of `subject` in `tenant`: the whole tenant walked, so an erasure misses
/// nothing present throughout it.
pub(crate) async fn subject_keys(
    cache: &SharedCacheStore,
    tenant: &TenantId,
    subject: &str,
) -> Result<Vec<CacheKey>> {
    let (found, _) = export(cache, tenant, subject, None, usize::MAX).await?;
    Ok(found.into_iter().map(|(key, _)| key).collect())
}

/// Delete `keys` of `tenant` and their vectors; how many entries existed. Vector failures are
/// logged and counted but do not stop the erasure: a vector left behind points at a deleted entry,
/// which lookups skip, and carries no text.
pub(crate) async fn delete_all(
    cache: &SharedCacheStore,
    semantic: Option<&Semantic>,
    tenant: &TenantId,
    keys: &[CacheKey],
) -> Result<u64> {
    let mut deleted = 0;
    for key in keys {
        deleted += u64::from(cache.delete(key).await?);
    }
    if let Some(sem) = semantic {
        let names: Vec<String> = keys.iter().map(|k| k.name().to_owned()).collect();
        for chunk in names.chunks(PAGE) {
            if let Err(err) = sem.delete(tenant, chunk).await {
                metrics::counter!("resk_semantic_errors_total", "op" => "erase").increment(1);
                tracing::warn!(error = %err, "vectors of erased entries not deleted");
            }
        }
    }
    Ok(deleted)
}

/// Whether an entry written at `created_at` is past the maximum retention `max_age` at `now`.
pub(crate) fn past_retention(
    created_at: OffsetDateTime,
    now: OffsetDateTime,
    max_age: Duration,
) -> bool {
    (now - created_at).whole_milliseconds()
        >= i128::try_from(max_age.as_millis()).unwrap_or(i128::MAX)
}

/// Delete every entry older than `max_age` (and its vectors), in every tenant `keep` does not
/// exempt; how many were deleted.
pub(crate) async fn sweep_retention(
    cache: &SharedCacheStore,
    semantic: Option<&Semantic>,
    max_age: Duration,
    keep: &(dyn Fn(&TenantId) -> bool + Send + Sync),
) -> Result<u64> {
    let now = OffsetDateTime::now_utc();
    let mut old: Vec<(TenantId, CacheKey)> = Vec::new();
    walk(cache, &PurgeScope::All, |key, entry| {
        if !keep(key.tenant()) && past_retention(entry.created_at, now, max_age) {
            old.push((key.tenant().clone(), key));
        }
    })
    .await?;
    let mut deleted = 0;
    for tenant_keys in old.chunk_by(|a, b| a.0 == b.0) {
        let Some((tenant, _)) = tenant_keys.first() else {
            continue;
        };
        let keys: Vec<CacheKey> = tenant_keys.iter().map(|(_, k)| k.clone()).collect();
        deleted += delete_all(cache, semantic, tenant, &keys).await?;
    }
    Ok(deleted)
}
