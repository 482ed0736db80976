//! Tenant isolation as a property: for any sequence of writes, exact and semantic lookups, deletes,
//! purges and WebSocket publishes by users of two tenants, no call of one tenant ever returns,
//! removes or overwrites the other's answers, no WebSocket client hears of another tenant's cache
//! events or messages, and private entries never reach another user of the same tenant.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, HashSet};

use crate::common::{TestApp, semantic_app, token_for, ws};
use axum::http::StatusCode;
use proptest::prelude::*;
use serde_json::json;

const QUERIES: [&str; 3] = [
    "How do I reset my password?",
    "What are your opening hours?",
    "Where is my order?",
];
/// Paraphrases of [`QUERIES`] the lexical embedder matches (exercises the semantic path).
const PARAPHRASES: [&str; 3] = [
    "how can I reset my password",
    "what are the opening hours",
    "where's my order",
];

#[derive(Clone, Debug)]
enum Op {
    Write {
        user: usize,
        q: usize,
        private: bool,
    },
    Query {
        user: usize,
        q: usize,
        paraphrase: bool,
        private: bool,
    },
    Delete {
        user: usize,
    },
    Purge {
        user: usize,
    },
    /// Publish on the tenant-scoped WebSocket channel `news`.
    Publish {
        user: usize,
    },
}

/// Users: (subject, tenant). 0 and 1 share tenant `acme`; 2 is in `globex`.
const USERS: [(&str, &str); 3] = [("alice", "acme"), ("bob", "acme"), ("carol", "globex")];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize, 0..3usize, any::<bool>())
            .prop_map(|(user, q, private)| Op::Write { user, q, private }),
        6 => (0..3usize, 0..3usize, any::<bool>(), any::<bool>())
            .prop_map(|(user, q, paraphrase, private)| Op::Query { user, q, paraphrase, private }),
        1 => (0..3usize).prop_map(|user| Op::Delete { user }),
        1 => (0..3usize).prop_map(|user| Op::Purge { user }),
        2 => (0..3usize).prop_map(|user| Op::Publish { user }),
    ]
}

async fn run(mut ops: Vec<Op>) {
    // Every sequence starts with a write and a paraphrase of it by the same user, which must hit:
    // the property is never vacuously true for lack of hits.
    ops.splice(
        0..0,
        [
            Op::Write {
                user: 0,
                q: 0,
                private: false,
            },
            Op::Query {
                user: 0,
                q: 0,
                paraphrase: true,
                private: false,
            },
        ],
    );
    let app: TestApp = semantic_app(&[]).await;
    let tokens: Vec<String> = USERS
        .iter()
        .map(|(sub, tenant)| token_for(sub, tenant, "cache:read cache:write cache:admin"))
        .collect();
    // The last key each user wrote, to delete.
    let mut last_key: HashMap<usize, String> = HashMap::new();
    // Every key written per tenant, and purges per tenant: what a tenant's WebSocket may hear of.
    let mut tenant_keys: HashMap<&str, HashSet<String>> = HashMap::new();
    let mut tenant_purges: HashMap<&str, usize> = HashMap::new();
    // Each user watches `cache` and `news` on a WebSocket of its own.
    let addr = app.listen().await;
    let mut sockets = Vec::new();
    for token in &tokens {
        let mut socket = ws::connect(addr, token).await;
        ws::subscribe(&mut socket, "cache").await;
        ws::subscribe(&mut socket, "news").await;
        sockets.push(socket);
    }
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Write { user, q, private } => {
                let mut body = json!({
                    "query": QUERIES[q],
                    // Who wrote it, so a read can tell where an answer came from.
                    "response": {"user": user, "private": private, "step": step},
                });
                if private {
                    body["visibility"] = json!("user");
                }
                let r = app.write(&tokens[user], body).await;
                assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
                let key = r.body["key"].as_str().unwrap().to_owned();
                tenant_keys
                    .entry(USERS[user].1)
                    .or_default()
                    .insert(key.clone());
                last_key.insert(user, key);
            }
            Op::Query {
                user,
                q,
                paraphrase,
                private,
            } => {
                let text = if paraphrase {
                    PARAPHRASES[q]
                } else {
                    QUERIES[q]
                };
                let mut body = json!({"query": text});
                if private {
                    body["visibility"] = json!("user");
                }
                let r = app.query(&tokens[user], body).await;
                assert_eq!(r.status, StatusCode::OK, "{}", r.text);
                if step == 1 {
                    assert_eq!(
                        r.body["hit"], true,
                        "the opening paraphrase hits: {}",
                        r.body
                    );
                    assert_eq!(r.body["source"], "semantic", "{}", r.body);
                }
                if r.body["hit"] == true {
                    let writer = r.body["response"]["user"].as_u64().unwrap() as usize;
                    let was_private = r.body["response"]["private"].as_bool().unwrap();
                    assert_eq!(
                        USERS[writer].1, USERS[user].1,
                        "{} read an answer of tenant {}: {}",
                        USERS[user].0, USERS[writer].1, r.body
                    );
                    assert_eq!(
                        was_private, private,
                        "private and shared never mix: {}",
                        r.body
                    );
                    if was_private {
                        assert_eq!(
                            writer, user,
                            "a private answer reached another user: {}",
                            r.body
                        );
                    }
                }
            }
            Op::Delete { user } => {
                if let Some(key) = last_key.get(&user) {
                    let r = app
                        .call(
                            "DELETE",
                            &format!("/api/cache/{key}"),
                            Some(&tokens[user]),
                            None,
                        )
                        .await;
                    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
                }
            }
            Op::Purge { user } => {
                let r = app
                    .call("DELETE", "/api/cache", Some(&tokens[user]), None)
                    .await;
                assert_eq!(r.status, StatusCode::OK, "{}", r.text);
                *tenant_purges.entry(USERS[user].1).or_default() += 1;
            }
            Op::Publish { user } => {
                ws::send(
                    &mut sockets[user],
                    json!({"type": "publish", "channel": "news", "data": {"from": user, "step": step}}),
                )
                .await;
            }
        }
    }
    // Each user's own last message (it hears its own publishes) ends what it has to read; then
    // nothing it heard may come from the other tenant.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    for (user, socket) in sockets.iter_mut().enumerate() {
        let tenant = USERS[user].1;
        ws::send(
            socket,
            json!({"type": "publish", "channel": "news", "data": {"from": user, "end": true}}),
        )
        .await;
        let mut purges_heard = 0;
        loop {
            let frame = ws::next(socket).await;
            match (frame["type"].as_str(), frame["channel"].as_str()) {
                (Some("published"), _) => {}
                (Some("message"), Some("news")) => {
                    let from = frame["data"]["from"].as_u64().unwrap() as usize;
                    assert_eq!(
                        USERS[from].1, tenant,
                        "{} heard a message of tenant {}: {frame}",
                        USERS[user].0, USERS[from].1
                    );
                    if from == user && frame["data"]["end"] == true {
                        break;
                    }
                }
                (Some("message"), Some("cache")) => match frame["data"]["event"].as_str() {
                    Some("purge") => purges_heard += 1,
                    _ => {
                        let key = frame["data"]["key"].as_str().unwrap();
                        assert!(
                            tenant_keys.get(tenant).is_some_and(|k| k.contains(key)),
                            "{} heard of a key its tenant never wrote: {frame}",
                            USERS[user].0
                        );
                    }
                },
                _ => panic!("unexpected frame {frame}"),
            }
        }
        assert!(
            purges_heard <= tenant_purges.get(tenant).copied().unwrap_or(0),
            "{} heard of another tenant's purge",
            USERS[user].0
        );
    }
    // Finally: every user's lookups of every question only ever return their own tenant's answers
    // (checked above), and a purge by one tenant left the other's entries alone.
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn no_sequence_of_calls_crosses_tenants_or_users(ops in proptest::collection::vec(op(), 1..40)) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(run(ops));
    }
}

/// The purge half of the property, spelled out: a purge by one tenant removes nothing of another's.
#[tokio::test]
async fn a_purge_leaves_other_tenants_alone() {
    let app = semantic_app(&[]).await;
    let acme = token_for("alice", "acme", "cache:read cache:write cache:admin");
    let globex = token_for("carol", "globex", "cache:read cache:write cache:admin");
    for t in [&acme, &globex] {
        let r = app
            .write(t, json!({"query": QUERIES[0], "response": "mine"}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    let r = app.call("DELETE", "/api/cache", Some(&acme), None).await;
    assert_eq!(r.body["purged"], 1, "{}", r.text);
    let r = app.query(&globex, json!({"query": PARAPHRASES[0]})).await;
    assert_eq!(r.body["hit"], true, "{}", r.text);
    let r = app.query(&acme, json!({"query": QUERIES[0]})).await;
    assert_eq!(r.body["hit"], false, "{}", r.text);
}
