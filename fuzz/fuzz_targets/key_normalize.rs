//! Query normalisation and cache keys: for any text, normalising is idempotent, never panics, and
//! two texts with the same normal form get the same key (and a different tenant a different key).
#![no_main]

use libfuzzer_sys::fuzz_target;
use resk_core::{KeyBuilder, KeyInput, TenantId, normalize_query};

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    let normal = normalize_query(query);
    assert_eq!(
        normalize_query(&normal),
        normal,
        "normalisation is not idempotent"
    );
    // Setup failures panic: a target that returned early would pass while testing nothing.
    let keys = KeyBuilder::new(b"resk fuzzing secret of 32+ bytes!!")
        .unwrap_or_else(|e| panic!("key builder: {e}"));
    let (a, b) = (
        TenantId::new("fuzz-a").unwrap_or_else(|e| panic!("{e}")),
        TenantId::new("fuzz-b").unwrap_or_else(|e| panic!("{e}")),
    );
    let input = |q| KeyInput {
        query: q,
        ..Default::default()
    };
    let key = keys.key(&a, &input(query));
    assert_eq!(
        key,
        keys.key(&a, &input(&normal)),
        "same normal form, other key"
    );
    assert_ne!(
        key.name(),
        keys.key(&b, &input(query)).name(),
        "tenants share a key"
    );
    assert_eq!(key.name().len(), 64);
});
