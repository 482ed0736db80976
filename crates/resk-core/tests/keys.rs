//! Property tests for canonical keys: normalisation is idempotent, cosmetic differences meet,
//! answer-changing differences never collide.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use resk_core::{KeyBuilder, KeyInput, TenantId, normalize_query};

fn keys() -> KeyBuilder {
    KeyBuilder::new(b"0123456789abcdef0123456789abcdef-test-secret").unwrap()
}

fn tenant(name: &str) -> TenantId {
    TenantId::new(name).unwrap()
}

/// Words of mixed scripts, including characters with compatibility and case-folding forms.
fn word() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            prop::char::range('a', 'z'),
            prop::char::range('A', 'Z'),
            prop::char::range('0', '9'),
            Just('é'),
            Just('ß'),
            Just('Σ'),
            Just('ς'),
            Just('ﬁ'),
            Just('Ａ'),
            Just('İ'),
            Just('?'),
            prop::char::range('\u{0391}', '\u{03C9}'),
            prop::char::range('\u{0410}', '\u{044F}'),
        ],
        1..8,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

fn white() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just(' '),
            Just('\t'),
            Just('\n'),
            Just('\u{00A0}'),
            Just('\u{3000}')
        ],
        1..4,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

proptest! {
    #[test]
    fn normalisation_is_idempotent(s in any::<String>()) {
        let once = normalize_query(&s);
        prop_assert_eq!(normalize_query(&once), once);
    }

    #[test]
    fn normalisation_is_idempotent_on_words(words in prop::collection::vec(word(), 0..6)) {
        let s = words.join(" ");
        let once = normalize_query(&s);
        prop_assert_eq!(normalize_query(&once), once);
    }

    #[test]
    fn case_space_and_unicode_form_give_the_same_key(
        words in prop::collection::vec(word(), 1..6),
        gaps in prop::collection::vec(white(), 6),
        lead in white(),
        trail in white(),
    ) {
        let plain = words.join(" ");
        let mut spaced = lead.clone();
        for (i, w) in words.iter().enumerate() {
            if i > 0 { spaced.push_str(&gaps[i % gaps.len()]); }
            spaced.push_str(&w.to_uppercase());
        }
        spaced.push_str(&trail);
        // NFD decomposes é into e + combining accent: a different byte string, the same text.
        let decomposed: String = unicode_normalization::UnicodeNormalization::nfd(spaced.as_str()).collect();
        let t = tenant("acme");
        let k = keys();
        let base = k.key(&t, &KeyInput { query: &plain, ..Default::default() });
        prop_assert_eq!(&base, &k.key(&t, &KeyInput { query: &spaced, ..Default::default() }));
        prop_assert_eq!(&base, &k.key(&t, &KeyInput { query: &decomposed, ..Default::default() }));
    }

    #[test]
    fn different_tenants_never_collide(q in ".{1,40}", a in "[a-z0-9]{1,12}", b in "[a-z0-9]{1,12}") {
        prop_assume!(a != b);
        let k = keys();
        let input = KeyInput { query: &q, ..Default::default() };
        let ka = k.key(&tenant(&a), &input);
        let kb = k.key(&tenant(&b), &input);
        prop_assert_ne!(ka.name(), kb.name());
    }

    #[test]
    fn different_models_never_collide(q in ".{1,40}", a in "[a-zA-Z0-9.-]{1,16}", b in "[a-zA-Z0-9.-]{1,16}") {
        prop_assume!(a != b);
        let k = keys();
        let t = tenant("acme");
        let ka = k.key(&t, &KeyInput { query: &q, model: Some(&a), ..Default::default() });
        let kb = k.key(&t, &KeyInput { query: &q, model: Some(&b), ..Default::default() });
        let none = k.key(&t, &KeyInput { query: &q, ..Default::default() });
        prop_assert_ne!(&ka, &kb);
        prop_assert_ne!(&ka, &none);
    }

    #[test]
    fn different_params_never_collide(q in ".{1,40}", x in any::<i64>(), y in any::<i64>(), name in "[a-z_]{1,10}") {
        prop_assume!(x != y);
        let k = keys();
        let t = tenant("acme");
        let px = serde_json::json!({ name.clone(): x });
        let py = serde_json::json!({ name: y });
        let kx = k.key(&t, &KeyInput { query: &q, params: Some(&px), ..Default::default() });
        let ky = k.key(&t, &KeyInput { query: &q, params: Some(&py), ..Default::default() });
        prop_assert_ne!(kx, ky);
    }

    #[test]
    fn field_boundaries_never_collide(a in "[a-z ]{0,10}", b in "[a-z ]{0,10}") {
        // Moving text between the query and the model must change the key (length-prefixed fields).
        let k = keys();
        let t = tenant("acme");
        let q1 = format!("{a}{b}");
        let k1 = k.key(&t, &KeyInput { query: &q1, model: Some("m"), ..Default::default() });
        let k2 = k.key(&t, &KeyInput { query: &a, model: Some(&format!("{b}m")), ..Default::default() });
        prop_assume!(!b.trim().is_empty());
        prop_assert_ne!(k1, k2);
    }
}

#[test]
fn param_key_order_does_not_matter() {
    let k = keys();
    let t = tenant("acme");
    let a = serde_json::json!({"temperature": 0.2, "system": {"id": 7, "v": 2}});
    let b = serde_json::json!({"system": {"v": 2, "id": 7}, "temperature": 0.2});
    assert_eq!(
        k.key(
            &t,
            &KeyInput {
                query: "q",
                params: Some(&a),
                ..Default::default()
            }
        ),
        k.key(
            &t,
            &KeyInput {
                query: "q",
                params: Some(&b),
                ..Default::default()
            }
        ),
    );
}

#[test]
fn language_is_case_insensitive_and_empty_params_mean_none() {
    let k = keys();
    let t = tenant("acme");
    let empty = serde_json::json!({});
    let base = k.key(
        &t,
        &KeyInput {
            query: "q",
            language: Some("en-US"),
            ..Default::default()
        },
    );
    assert_eq!(
        base,
        k.key(
            &t,
            &KeyInput {
                query: "q",
                language: Some(" en-us "),
                ..Default::default()
            }
        )
    );
    assert_eq!(
        k.key(
            &t,
            &KeyInput {
                query: "q",
                ..Default::default()
            }
        ),
        k.key(
            &t,
            &KeyInput {
                query: "q",
                params: Some(&empty),
                ..Default::default()
            }
        ),
    );
    assert_ne!(
        base,
        k.key(
            &t,
            &KeyInput {
                query: "q",
                language: Some("fr"),
                ..Default::default()
            }
        )
    );
}

#[test]
fn different_secrets_give_different_keys() {
    let other = KeyBuilder::new(b"another secret that is long enough to use!!").unwrap();
    let t = tenant("acme");
    let input = KeyInput {
        query: "q",
        ..Default::default()
    };
    assert_ne!(keys().key(&t, &input), other.key(&t, &input));
}
