//! The engine through its public API: what a Rust service adding `resk` gets.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use resk::{
    Cache, ErrorKind, Lookup, PutOptions, Semantic, SemanticConfig, Source, TenantId,
    embed::lexical::LexicalEmbedder, store::memory::MemoryStore,
    vector::embedded::EmbeddedVectorStore,
};
use serde_json::json;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

fn tenant(name: &str) -> TenantId {
    TenantId::new(name).unwrap()
}

fn exact() -> Cache {
    Cache::builder()
        .store(MemoryStore::default())
        .key_secret(SECRET)
        .build()
        .unwrap()
}

async fn semantic(threshold: f32) -> Cache {
    semantic_verified(threshold, resk::verify::defaults()).await
}

/// A lexical semantic cache at `threshold` deciding with `verifiers`.
async fn semantic_verified(threshold: f32, verifiers: Vec<resk::core::SharedVerifier>) -> Cache {
    let mut config = SemanticConfig::default();
    config.threshold = threshold;
    semantic_over(Arc::new(LexicalEmbedder::new()), config, verifiers).await
}

/// A memory cache with semantic search over `embedder` and an in-memory index.
async fn semantic_over(
    embedder: resk::SharedEmbedder,
    config: SemanticConfig,
    verifiers: Vec<resk::core::SharedVerifier>,
) -> Cache {
    let semantic = Semantic::new(embedder, Arc::new(EmbeddedVectorStore::in_memory()), config)
        .await
        .unwrap()
        .with_verifiers(verifiers);
    Cache::builder()
        .store(MemoryStore::default())
        .key_secret(SECRET)
        .semantic(semantic)
        .build()
        .unwrap()
}

#[tokio::test]
async fn an_answer_is_a_hit_for_its_tenant_only() {
    let cache = exact();
    let ask = Lookup::new(tenant("acme"), "What are your opening hours?");
    assert!(cache.get(&ask).await.unwrap().is_none());
    let stored = cache
        .put(
            &ask,
            "9 to 5",
            &PutOptions::new().ttl(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    assert_eq!(stored.ttl, Duration::from_secs(60));
    // Case and spacing normalise to the same key.
    let again = Lookup::new(tenant("acme"), "  what are your OPENING   hours?");
    let hit = cache.get(&again).await.unwrap().unwrap();
    assert_eq!(hit.answer_as::<String>().unwrap(), "9 to 5");
    assert_eq!(hit.source, Source::Store("memory"));
    assert_eq!(hit.key, stored.key);
    assert!(!hit.stale && !hit.degraded && hit.similarity.is_none());
    let other = Lookup::new(tenant("globex"), "What are your opening hours?");
    assert!(cache.get(&other).await.unwrap().is_none());
    // Another model or language is another entry.
    let model = Lookup::new(tenant("acme"), "What are your opening hours?").model("m2");
    assert!(cache.get(&model).await.unwrap().is_none());
}

#[tokio::test]
async fn a_paraphrase_is_a_semantic_hit_with_its_similarity() {
    let cache = semantic(0.75).await;
    let written = Lookup::new(tenant("acme"), "How do I reset my password?");
    let stored = cache
        .put(
            &written,
            &json!({"answer": "Use the link on the sign-in page."}),
            &PutOptions::new(),
        )
        .await
        .unwrap();
    assert!(stored.semantic_indexed, "{:?}", stored.semantic_error);
    let asked = Lookup::new(tenant("acme"), "how can I reset my password");
    let hit = cache.get(&asked).await.unwrap().expect("a semantic hit");
    assert_eq!(hit.source, Source::Semantic);
    assert_eq!(
        hit.matched_query.as_deref(),
        Some("How do I reset my password?")
    );
    let similarity = hit.similarity.unwrap();
    assert!((0.75..=1.0).contains(&similarity), "{similarity}");
    assert_eq!(hit.key, stored.key);
    // Not in another tenant, and not with semantic search off or a stricter threshold.
    assert!(
        cache
            .get(&Lookup::new(tenant("other"), "how can I reset my password"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        cache
            .get(&asked.clone().semantic(false))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        cache
            .get(&asked.clone().threshold(similarity + 0.001))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn concurrent_misses_run_the_closure_once() {
    let cache = exact();
    let calls = Arc::new(AtomicUsize::new(0));
    let tasks = (0..50).map(|_| {
        let cache = cache.clone();
        let calls = calls.clone();
        tokio::spawn(async move {
            let ask = Lookup::new(tenant("acme"), "Capital of France?");
            cache
                .get_or_insert_with(&ask, &PutOptions::new(), || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Ok("Paris")
                })
                .await
                .unwrap()
        })
    });
    let hits = futures_util::future::join_all(tasks).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    for hit in hits {
        let hit = hit.unwrap();
        assert_eq!(hit.answer_as::<String>().unwrap(), "Paris");
        assert_eq!(hit.source, Source::Computed);
    }
    // Stored: the next call is a hit and does not run its closure.
    let ask = Lookup::new(tenant("acme"), "Capital of France?");
    let hit = cache
        .get_or_insert_with(&ask, &PutOptions::new(), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok("Lyon")
        })
        .await
        .unwrap();
    assert_eq!(hit.source, Source::Store("memory"));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_cancelled_leader_hands_over_to_a_waiter() {
    let cache = exact();
    let leader = {
        let cache = cache.clone();
        tokio::spawn(async move {
            let ask = Lookup::new(tenant("acme"), "slow question");
            cache
                .get_or_insert_with(&ask, &PutOptions::new(), || async {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    Ok("never")
                })
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let waiter = {
        let cache = cache.clone();
        tokio::spawn(async move {
            let ask = Lookup::new(tenant("acme"), "slow question");
            cache
                .get_or_insert_with(&ask, &PutOptions::new(), || async { Ok("from the waiter") })
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    leader.abort();
    let hit = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the waiter took over")
        .unwrap()
        .unwrap();
    assert_eq!(hit.answer_as::<String>().unwrap(), "from the waiter");
}

#[tokio::test]
async fn a_failing_closure_fails_every_waiter_and_stores_nothing() {
    let cache = exact();
    let ask = Lookup::new(tenant("acme"), "q");
    let err = cache
        .get_or_insert_with(&ask, &PutOptions::new(), || async {
            Err::<String, _>(resk::Error::new(
                ErrorKind::Unavailable,
                "llm",
                "complete",
                "provider down",
            ))
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(cache.get(&ask).await.unwrap().is_none());
}

#[tokio::test]
async fn builder_mistakes_name_the_fix() {
    let no_store = Cache::builder().key_secret(SECRET).build().unwrap_err();
    assert_eq!(no_store.kind(), ErrorKind::Config);
    assert!(no_store.message().contains(".store("), "{no_store}");
    let no_secret = Cache::builder()
        .store(MemoryStore::default())
        .build()
        .unwrap_err();
    assert!(no_secret.message().contains("key_secret"), "{no_secret}");
    let short = Cache::builder()
        .store(MemoryStore::default())
        .key_secret(b"short")
        .build()
        .unwrap_err();
    assert_eq!(short.kind(), ErrorKind::Config);
    assert!(short.message().contains("at least 32"), "{short}");
    let layered = Cache::builder()
        .assembled_store(Arc::new(MemoryStore::default()))
        .resilience(Default::default())
        .key_secret(SECRET)
        .build()
        .unwrap_err();
    assert!(layered.message().contains("no layers"), "{layered}");
}

#[cfg(feature = "encryption")]
#[tokio::test]
async fn encryption_mistakes_name_the_fix_and_values_are_sealed() {
    let empty = Cache::builder()
        .store(MemoryStore::default())
        .key_secret(SECRET)
        .encryption_key("  ")
        .build()
        .unwrap_err();
    assert!(empty.message().contains("without a key"), "{empty}");
    let bad = Cache::builder()
        .store(MemoryStore::default())
        .key_secret(SECRET)
        .encryption_key("not base64!")
        .build()
        .unwrap_err();
    assert_eq!(bad.kind(), ErrorKind::Config);

    let store = MemoryStore::default();
    let key = resk::crypto::MasterKey::generate_base64();
    let cache = Cache::builder()
        .store(store.clone())
        .key_secret(SECRET)
        .encryption_key(&key)
        .build()
        .unwrap();
    let ask = Lookup::new(tenant("acme"), "secret question");
    let stored = cache
        .put(&ask, "secret answer", &PutOptions::new())
        .await
        .unwrap();
    let raw = resk::CacheStore::get(&store, &stored.key)
        .await
        .unwrap()
        .unwrap();
    assert!(!String::from_utf8_lossy(&raw.bytes).contains("secret answer"));
    assert_eq!(
        cache
            .get(&ask)
            .await
            .unwrap()
            .unwrap()
            .answer_as::<String>()
            .unwrap(),
        "secret answer"
    );
    let report = cache.reencrypt().await.unwrap();
    assert_eq!(report.rewritten, 1);
    assert_eq!(report.unreadable, 0);
    assert_eq!(
        cache
            .get(&ask)
            .await
            .unwrap()
            .unwrap()
            .answer_as::<String>()
            .unwrap(),
        "secret answer"
    );
    let plain = exact();
    assert_eq!(
        plain.reencrypt().await.unwrap_err().kind(),
        ErrorKind::Config
    );
}

#[tokio::test]
async fn bad_lookups_and_answers_are_invalid_input_naming_the_field() {
    let cache = exact();
    let t = || tenant("acme");
    let cases: Vec<(Lookup<'static>, &str)> = vec![
        (Lookup::new(t(), "   "), "query"),
        (Lookup::new(t(), "q").language("en US"), "language"),
        (Lookup::new(t(), "q").model(" "), "model"),
        (Lookup::new(t(), "q").params(json!([1])), "params"),
        (Lookup::new(t(), "q").private(), "subject"),
        (Lookup::new(t(), "q").threshold(1.5), "threshold"),
        (Lookup::new(t(), "q").top_k(0), "k"),
        (Lookup::new(t(), "q").max_age(Duration::ZERO), "max_age"),
    ];
    for (lookup, field) in cases {
        let err = cache.get(&lookup).await.unwrap_err();
        assert_eq!(
            (err.kind(), err.op()),
            (ErrorKind::InvalidInput, field),
            "{err}"
        );
    }
    let ask = Lookup::new(t(), "q");
    let null = cache
        .put(&ask, &json!(null), &PutOptions::new())
        .await
        .unwrap_err();
    assert_eq!(null.op(), "response");
    let variants = cache
        .put(
            &ask,
            &json!({"variants": [], "variantStrategy": "random"}),
            &PutOptions::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(variants.op(), "variants");
    let long = cache
        .put(
            &ask,
            "a",
            &PutOptions::new().ttl(Duration::from_secs(30 * 86_400)),
        )
        .await
        .unwrap_err();
    assert_eq!(long.op(), "ttl");
    // Nothing was written by the refused calls.
    assert!(cache.get(&ask).await.unwrap().is_none());
}

#[tokio::test]
async fn private_entries_are_their_subjects_only() {
    let cache = exact();
    let mine = Lookup::new(tenant("acme"), "my balance")
        .subject("alice")
        .private();
    let stored = cache.put(&mine, "42", &PutOptions::new()).await.unwrap();
    assert!(cache.get(&mine).await.unwrap().is_some());
    let bob = Lookup::new(tenant("acme"), "my balance")
        .subject("bob")
        .private();
    assert!(cache.get(&bob).await.unwrap().is_none());
    // Bob cannot delete it by its key either.
    assert!(!cache.delete(&stored.key, Some("bob")).await.unwrap());
    assert!(cache.get(&mine).await.unwrap().is_some());
    assert!(cache.delete(&stored.key, Some("alice")).await.unwrap());
    assert!(cache.get(&mine).await.unwrap().is_none());
}

#[tokio::test]
async fn stale_answers_and_maximum_age() {
    let cache = Cache::builder()
        .store(MemoryStore::default())
        .key_secret(SECRET)
        .stale_grace(Duration::from_secs(60))
        .build()
        .unwrap();
    let ask = Lookup::new(tenant("acme"), "q");
    cache
        .put(&ask, "a", &PutOptions::new().ttl(Duration::from_secs(1)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let hit = cache.get(&ask).await.unwrap().unwrap();
    assert!(hit.stale);
    assert!(
        cache
            .get(&ask.clone().allow_stale(false))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        cache
            .get(&ask.clone().max_age(Duration::from_secs(1)))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn purge_export_and_erase() {
    let cache = semantic(0.75).await;
    let acme = tenant("acme");
    for (q, who) in [("q1", "alice"), ("q2", "alice"), ("q3", "bob")] {
        let ask = Lookup::new(acme.clone(), q).subject(who);
        cache.put(&ask, q, &PutOptions::new()).await.unwrap();
    }
    let export = cache.export_subject(&acme, "alice", None).await.unwrap();
    assert_eq!(export.entries.len(), 2);
    assert!(export.next.is_none());
    let erased = cache.erase_subject(&acme, "alice").await.unwrap();
    assert_eq!(erased.erased, 2);
    assert!(
        cache
            .get(&Lookup::new(acme.clone(), "q1"))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(cache.purge(&acme).await.unwrap(), 1);
    assert!(
        cache
            .get(&Lookup::new(acme.clone(), "q3"))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn calibration_needs_semantic_search() {
    let err = exact().calibrate(&[], 0.9).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    let cache = semantic(0.75).await;
    let pairs = resk::calibrate::parse_pairs(
        "1\tHow do I reset my password?\thow can I reset my password\n\
         0\tHow do I reset my password?\tWhere is your office?\n",
    )
    .unwrap();
    let calibration = cache.calibrate(&pairs, 1.0).await.unwrap();
    assert!(calibration.threshold.is_some());
}

/// The engine's own store stack (breaker, layer 1, encryption) keeps the store contract.
mod stack {
    use resk::{
        core::{LocalBus, SharedBus},
        layers::{Layer1, Layers},
        resilience::ResilienceConfig,
        store::memory::MemoryStore,
    };
    use std::{sync::Arc, time::Duration};

    fn stack() -> resk::SharedCacheStore {
        let bus: SharedBus = Arc::new(LocalBus::default());
        let mut layers = Layers::default();
        layers.resilience = Some(ResilienceConfig::default());
        layers.layer1 = Some(Layer1 {
            store: Arc::new(MemoryStore::default()),
            bus,
            max_ttl: Duration::from_secs(60),
        });
        #[cfg(feature = "encryption")]
        {
            let key = resk::crypto::MasterKey::generate();
            layers.cipher = Some(Arc::new(resk::crypto::AesGcmCipher::new(key)));
        }
        resk::layers::stack(MemoryStore::default(), layers)
    }

    resk_testkit::cache_suite!(async { stack() });
}

/// The store contract behind the circuit breaker and bulkhead alone.
mod guarded {
    use resk::{resilience::GuardedStore, store::memory::MemoryStore};

    resk_testkit::cache_suite!(async {
        GuardedStore::new(MemoryStore::default(), Default::default())
    });
}

/// The bus contract on the in-process bus.
mod local_bus {
    resk_testkit::bus_suite_if!(async { Some(resk::core::LocalBus::default()) });
}

#[tokio::test]
async fn guards_turn_down_the_opposite_question_and_say_why() {
    let cache = semantic(0.5).await;
    let t = tenant("acme");
    let enable = Lookup::new(t.clone(), "How do I enable two-factor authentication?");
    cache
        .put(&enable, "Settings > Security > Enable", &PutOptions::new())
        .await
        .unwrap();
    let disable = Lookup::new(t.clone(), "How do I disable two-factor authentication?");
    let resk::Outcome::Miss(miss) = cache.lookup(&disable).await.unwrap() else {
        panic!("the opposite question was served");
    };
    let rejected = &miss.rejected[0];
    assert_eq!(rejected.verification.by, "guards");
    assert_eq!(rejected.verification.label(), "antonym", "{rejected:?}");
    assert!(rejected.similarity >= 0.5 && !miss.degraded);
    // A paraphrase still hits, and says how it was decided.
    let paraphrase = Lookup::new(t.clone(), "How can I enable two-factor authentication?");
    let hit = cache
        .get(&paraphrase)
        .await
        .unwrap()
        .expect("a paraphrase hit");
    assert_eq!(hit.source, Source::Semantic);
    let v = hit
        .verification
        .expect("a semantic hit says how it was decided");
    assert_eq!(
        (v.verdict, v.by, v.label()),
        (resk::core::Verdict::Accept, "similarity", "above_accept")
    );
    // Without verifiers (a plain cosine cache) the opposite question is served.
    let plain = semantic_verified(0.5, Vec::new()).await;
    assert!(plain.semantic().unwrap().verifiers().is_empty());
    plain
        .put(&enable, "Enable", &PutOptions::new())
        .await
        .unwrap();
    let wrong = plain
        .get(&disable)
        .await
        .unwrap()
        .expect("plain cosine serves it");
    assert_eq!(wrong.verification.unwrap().by, "similarity");
}

/// A verifier that always fails.
#[derive(Debug)]
struct Broken(resk::core::VerifierInfo);

impl resk::core::Verifier for Broken {
    fn info(&self) -> &resk::core::VerifierInfo {
        &self.0
    }
    async fn verify(&self, _: &resk::core::Pair<'_>) -> resk::Result<resk::core::Judgement> {
        Err(resk::Error::new(
            ErrorKind::Unavailable,
            "broken",
            "verify",
            "judge unreachable",
        ))
    }
}

#[tokio::test]
async fn a_failing_verifier_rejects_and_marks_the_lookup_degraded() {
    let cache = semantic_verified(
        0.5,
        vec![Arc::new(Broken(
            resk::core::VerifierInfo::new("broken").everywhere(),
        ))],
    )
    .await;
    let t = tenant("acme");
    cache
        .put(
            &Lookup::new(t.clone(), "How do I reset my password?"),
            "Click forgot password",
            &PutOptions::new(),
        )
        .await
        .unwrap();
    let ask = Lookup::new(t, "How can I reset my password?");
    let resk::Outcome::Miss(miss) = cache.lookup(&ask).await.unwrap() else {
        panic!("a candidate no verifier could judge was served");
    };
    assert!(miss.degraded);
    assert_eq!(miss.rejected[0].verification.by, "broken");
    assert_eq!(miss.rejected[0].verification.label(), "error");
}

#[tokio::test]
async fn context_partitions_exact_and_semantic_lookups() {
    use resk::Message;
    let cache = semantic(0.5).await;
    let t = tenant("acme");
    let obama = vec![Message::new("user", "Who is Barack Obama?")];
    let hanks = vec![Message::new("user", "Who is Tom Hanks?")];
    cache
        .put(
            &Lookup::new(t.clone(), "How old is he?").context(obama.clone()),
            "64",
            &PutOptions::new(),
        )
        .await
        .unwrap();
    let same = Lookup::new(t.clone(), "how old is he?").context(obama.clone());
    let hit = cache
        .get(&same)
        .await
        .unwrap()
        .expect("same context, same question");
    assert_eq!(hit.source, Source::Store("memory"));
    // The same question after other turns, or with none, is another question.
    for other in [
        Lookup::new(t.clone(), "How old is he?").context(hanks),
        Lookup::new(t.clone(), "How old is he?"),
        Lookup::new(t.clone(), "How old is he?").context_text("a thread about Obama"),
    ] {
        assert!(cache.get(&other).await.unwrap().is_none(), "{other:?}");
    }
    // A paraphrase under the same context is a semantic hit.
    let reworded = Lookup::new(t.clone(), "How old is he now?").context(obama);
    let hit = cache
        .get(&reworded)
        .await
        .unwrap()
        .expect("a paraphrase, same context");
    assert_eq!(hit.source, Source::Semantic);
    // A malformed context is invalid input naming the field.
    let bad = Lookup::new(t, "How old is he?").context(vec![Message::new("", "x")]);
    let err = cache.get(&bad).await.unwrap_err();
    assert_eq!((err.kind(), err.op()), (ErrorKind::InvalidInput, "context"));
}

/// The figures of issue 17 on the development set in `docs/eval`, with the local model: a
/// regression guard for the guards, token alignment and the default zones (`cargo xtask eval`
/// prints the whole table).
#[cfg(feature = "local")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_development_set_meets_its_figures_with_the_local_model() {
    use resk::{embed::local::LocalEmbedder, eval};
    let Some(dir) = resk_testkit::model_dir() else {
        resk_testkit::skip_because(
            "the_development_set_meets_its_figures_with_the_local_model",
            "RESK_TEST_MODEL_DIR not set (run `cargo xtask test`)",
        );
        return;
    };
    let embedder = LocalEmbedder::load(&dir, Some("all-MiniLM-L6-v2"))
        .unwrap()
        .with_word_cache(resk::embed::local::word_cache(64 << 20));
    let build = |config, verifiers| semantic_over(Arc::new(embedder.clone()), config, verifiers);
    let mut plain_config = SemanticConfig::default();
    plain_config.threshold = 0.9;
    let plain = build(plain_config, Vec::new()).await;
    let pipeline = build(
        SemanticConfig::for_local_model(),
        resk::verify::local_defaults(embedder.clone()),
    )
    .await;
    let pairs =
        eval::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/eval"))
            .unwrap();
    assert!(pairs.len() >= 400, "{}", pairs.len());
    let (mut before, mut after) = (eval::Report::default(), eval::Report::default());
    for (i, pair) in pairs.iter().enumerate() {
        before.add(
            pair,
            eval::run(&plain, i, pair, false).await.unwrap().served,
        );
        after.add(
            pair,
            eval::run(&pipeline, i, pair, true).await.unwrap().served,
        );
    }
    for category in ["negation", "antonym", "direction", "number", "multiturn"] {
        let t = after.categories[category];
        assert_eq!(t.served_different, 0, "{category}: {t:?}");
    }
    for category in ["entity", "platform"] {
        let t = after.categories[category];
        assert!(
            t.served_different * 10 <= t.different(),
            "{category}: {t:?}"
        );
    }
    assert!(after.all.precision() >= 0.95, "{:?}", after.all);
    assert!(
        after.all.served_same >= 2 * before.all.served_same,
        "paraphrases served: {} with verification, {} with plain cosine",
        after.all.served_same,
        before.all.served_same
    );
}

#[tokio::test]
async fn a_wrong_report_stops_the_pairing_at_once_and_foreign_ids_are_not_found() {
    let cache = semantic(0.5).await;
    let t = tenant("acme");
    cache
        .put(
            &Lookup::new(t.clone(), "How do I reset my password?"),
            "Use the reset link",
            &PutOptions::new(),
        )
        .await
        .unwrap();
    let ask = Lookup::new(t.clone(), "How can I reset my password?");
    let hit = cache.get(&ask).await.unwrap().expect("a paraphrase hit");
    let id = hit.hit_id.clone().expect("a semantic hit has an id");
    // An exact hit has none.
    let exact = Lookup::new(t.clone(), "How do I reset my password?");
    assert!(cache.get(&exact).await.unwrap().unwrap().hit_id.is_none());
    // Another tenant, a forged or a garbled id: not found, and nothing changes.
    for (tenant_name, bad) in [
        ("globex", id.clone()),
        ("acme", id.replacen('.', ".0", 1)),
        ("acme", "not-a-hit-id".to_owned()),
    ] {
        let err = cache
            .feedback(&tenant(tenant_name), &bad, false)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{bad}");
    }
    assert!(cache.get(&ask).await.unwrap().is_some(), "still served");
    // A wrong report: that question is not answered by that entry again.
    let recorded = cache.feedback(&t, &id, false).await.unwrap();
    assert_eq!((recorded.right, recorded.wrong), (0, 1));
    assert!(recorded.bounds.floor.unwrap() > hit.similarity.unwrap());
    let resk::Outcome::Miss(miss) = cache.lookup(&ask).await.unwrap() else {
        panic!("a question reported wrong was served again");
    };
    assert_eq!(miss.rejected[0].verification.by, "feedback");
    assert_eq!(miss.rejected[0].verification.label(), "reported_wrong");
    // The exact entry itself still answers its own question.
    assert!(cache.get(&exact).await.unwrap().is_some());
    // Right reports count too (on another hit of the same entry).
    let other = Lookup::new(t.clone(), "how do I reset my password please");
    if let Some(hit) = cache.get(&other).await.unwrap() {
        let recorded = cache
            .feedback(&t, &hit.hit_id.unwrap(), true)
            .await
            .unwrap();
        assert_eq!((recorded.right, recorded.wrong), (1, 1));
    }
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn feedback_persists_with_the_entry_across_a_restart() {
    use resk::store::sqlite::{SqliteConfig, SqliteStore};
    let path = std::env::temp_dir().join(format!(
        "resk-feedback-{}-{}.db",
        std::process::id(),
        fastrand::u64(..)
    ));
    let vectors = Arc::new(EmbeddedVectorStore::in_memory());
    let open = || {
        let vectors = Arc::clone(&vectors);
        let path = path.clone();
        async move {
            let mut config = SemanticConfig::default();
            config.threshold = 0.5;
            let semantic = Semantic::new(Arc::new(LexicalEmbedder::new()), vectors, config)
                .await
                .unwrap();
            let store = SqliteStore::connect(SqliteConfig::new(path)).await.unwrap();
            Cache::builder()
                .store(store)
                .key_secret(SECRET)
                .semantic(semantic)
                .build()
                .unwrap()
        }
    };
    let t = tenant("acme");
    let ask = Lookup::new(t.clone(), "How can I reset my password?");
    {
        let cache = open().await;
        cache
            .put(
                &Lookup::new(t.clone(), "How do I reset my password?"),
                "Use the reset link",
                &PutOptions::new(),
            )
            .await
            .unwrap();
        let id = cache.get(&ask).await.unwrap().unwrap().hit_id.unwrap();
        cache.feedback(&t, &id, false).await.unwrap();
    }
    let cache = open().await;
    assert!(
        cache.get(&ask).await.unwrap().is_none(),
        "the report survived the restart"
    );
    let _ = std::fs::remove_file(&path);
}

/// A lookup's future is part of every request's state machine and is copied as the caller builds
/// its own around it (handler, middleware, task): the semantic search (the embedder's, the vector
/// store's and the verifiers' futures) is boxed, so an exact hit neither carries nor copies it.
#[tokio::test]
async fn a_lookups_future_stays_small() {
    let cache = semantic(0.5).await;
    let ask = Lookup::new(tenant("acme"), "What are your opening hours?");
    let lookup = cache.lookup(&ask);
    let size = std::mem::size_of_val(&lookup);
    eprintln!("lookup future: {size} bytes");
    assert!(size <= LOOKUP_FUTURE_BYTES, "{size} bytes");
    assert!(matches!(lookup.await.unwrap(), resk::Outcome::Miss(_)));
}

/// Bound of [`a_lookups_future_stays_small`]. Measured in a debug build: 1 536 bytes; 9 608 before
/// the semantic search was boxed.
const LOOKUP_FUTURE_BYTES: usize = 2_048;
