#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{sync::Arc, time::Duration};

use futures_util::StreamExt as _;
use resk_testkit::openai::FakeOpenAi;
use serde_json::{Value, json};

use super::*;
use crate::{
    Semantic, SemanticConfig, embed::lexical::LexicalEmbedder, store::memory::MemoryStore,
    vector::embedded::EmbeddedVectorStore,
};

const KEY: &str = "sk-upstream-secret-0123456789";

async fn cache() -> Cache {
    let config = SemanticConfig {
        threshold: 0.75,
        ..SemanticConfig::default()
    };
    let semantic = Semantic::new(
        Arc::new(LexicalEmbedder::new()),
        Arc::new(EmbeddedVectorStore::in_memory()),
        config,
    )
    .await
    .unwrap()
    .with_verifiers(crate::verify::defaults());
    Cache::builder()
        .store(MemoryStore::default())
        .key_secret(b"0123456789abcdef0123456789abcdef")
        .semantic(semantic)
        .build()
        .unwrap()
}

async fn gateway_with(policy: Policy) -> (Gateway, FakeOpenAi) {
    let fake = FakeOpenAi::start(KEY).await;
    let mut config =
        GatewayConfig::new(UpstreamConfig::new("default", fake.base_url()).api_key(KEY));
    config.policy = policy;
    config.aliases = vec![("fast".into(), "gpt-fake-mini".into())];
    config.prices = HashMap::from([("gpt-fake".to_owned(), Price::new(1.0, 2.0))]);
    config.timeouts.retry.base = Duration::from_millis(1);
    (Gateway::new(cache().await, config).unwrap(), fake)
}

async fn gateway() -> (Gateway, FakeOpenAi) {
    gateway_with(Policy::default()).await
}

fn caller(tenant: &str) -> Caller {
    Caller::new(TenantId::new(tenant).unwrap(), "user-1")
}

fn ask(question: &str, stream: bool) -> Vec<u8> {
    json!({"model": "gpt-fake", "stream": stream,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": question}]})
    .to_string()
    .into_bytes()
}

fn none() -> Directives {
    Directives::default()
}

async fn frames(reply: Reply) -> Vec<String> {
    let ReplyBody::Stream(stream) = reply.body else {
        panic!("not a stream");
    };
    let bytes: Vec<Bytes> = stream.collect().await;
    let text: String = bytes
        .iter()
        .map(|b| std::str::from_utf8(b).unwrap())
        .collect();
    text.split("\n\n")
        .filter(|f| !f.is_empty())
        .map(|f| f.strip_prefix("data: ").expect("a data frame").to_owned())
        .collect()
}

fn chunks(frames: &[String]) -> Vec<Value> {
    frames
        .iter()
        .filter(|f| *f != "[DONE]")
        .map(|f| serde_json::from_str(f).unwrap())
        .collect()
}

fn deltas(frames: &[String]) -> Vec<Value> {
    chunks(frames)
        .into_iter()
        .filter_map(|c| c["choices"].get(0).cloned())
        .map(|c| json!({"delta": c["delta"], "finish_reason": c["finish_reason"]}))
        .collect()
}

fn json_of(reply: Reply) -> Value {
    match reply.body {
        ReplyBody::Json(v) => v,
        ReplyBody::Stream(_) => panic!("not JSON"),
    }
}

#[tokio::test]
async fn a_second_identical_request_is_answered_without_an_upstream_call() {
    let (gw, fake) = gateway().await;
    let first = gw
        .chat(&caller("acme"), &ask("What is resk?", false), none())
        .await
        .unwrap();
    assert_eq!(first.provenance.status, CacheStatus::Miss);
    let first = json_of(first);
    assert_eq!(
        first["choices"][0]["message"]["content"],
        "Answer to: What is resk?"
    );
    let second = gw
        .chat(&caller("acme"), &ask("What is resk?", false), none())
        .await
        .unwrap();
    assert_eq!(second.provenance.status, CacheStatus::Hit);
    assert_eq!(second.provenance.source, Some(Source::Store("memory")));
    let second = json_of(second);
    assert_eq!(fake.chat_calls(), 1);
    assert_eq!(second["choices"], first["choices"]);
    assert_eq!(second["usage"], first["usage"]);
    assert_ne!(second["id"], first["id"]);
    assert_eq!(second["object"], "chat.completion");
    // The upstream got the key from the server, the model resolved, and nothing about the caller.
    let sent = &fake.requests()[0];
    assert_eq!(sent["model"], "gpt-fake");
    // Another tenant never sees it.
    let other = gw
        .chat(&caller("globex"), &ask("What is resk?", false), none())
        .await
        .unwrap();
    assert_eq!(other.provenance.status, CacheStatus::Miss);
    assert_eq!(fake.chat_calls(), 2);
    // Savings: one hit of a priced model.
    let saved = gw.savings(&TenantId::new("acme").unwrap());
    assert_eq!(saved.len(), 1);
    assert_eq!(
        (saved[0].hits, saved[0].misses, saved[0].upstream_calls),
        (1, 1, 1)
    );
    assert!(saved[0].saved_completion_tokens > 0 && saved[0].saved_usd > 0.0);
    let total = gw.total_savings(&TenantId::new("acme").unwrap());
    assert_eq!(total.model, "");
    assert_eq!((total.hits, total.misses, total.upstream_calls), (1, 1, 1));
    assert_eq!(total.saved_usd, saved[0].saved_usd);
}

#[tokio::test]
async fn a_cached_stream_replays_the_same_deltas_with_fresh_ids() {
    let (gw, fake) = gateway().await;
    let body =
        json!({"model": "reasoner", "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "Why is the sky blue?"}]})
        .to_string();
    let miss = gw
        .chat(&caller("acme"), body.as_bytes(), none())
        .await
        .unwrap();
    assert_eq!(miss.provenance.status, CacheStatus::Miss);
    let miss = frames(miss).await;
    assert_eq!(miss.last().unwrap(), "[DONE]");
    let hit = gw
        .chat(&caller("acme"), body.as_bytes(), none())
        .await
        .unwrap();
    assert_eq!(hit.provenance.status, CacheStatus::Hit);
    let hit = frames(hit).await;
    assert_eq!(fake.chat_calls(), 1);
    assert_eq!(deltas(&hit), deltas(&miss));
    assert!(deltas(&hit).len() > 5, "{hit:?}");
    assert!(
        deltas(&hit)
            .iter()
            .any(|d| d["delta"]["reasoning_content"].is_string())
    );
    // Usage chunk last, as asked; fresh id and created, shared by every chunk of the response.
    let (m, h) = (chunks(&miss), chunks(&hit));
    assert_eq!(h.last().unwrap()["usage"], m.last().unwrap()["usage"]);
    assert_eq!(h.last().unwrap()["choices"], json!([]));
    assert_ne!(h[0]["id"], m[0]["id"]);
    assert!(h.iter().all(|c| c["id"] == h[0]["id"]));
    // Without include_usage: no usage chunk and no usage member.
    let plain = json!({"model": "reasoner", "stream": true,
        "messages": [{"role": "user", "content": "Why is the sky blue?"}]})
    .to_string();
    let replay = frames(
        gw.chat(&caller("acme"), plain.as_bytes(), none())
            .await
            .unwrap(),
    )
    .await;
    assert!(chunks(&replay).iter().all(|c| c.get("usage").is_none()));
    assert_eq!(deltas(&replay), deltas(&miss));
    // The upstream was asked for usage even so (the savings need it).
    assert_eq!(fake.requests()[0]["stream_options"]["include_usage"], true);
}

#[tokio::test]
async fn json_and_stream_answer_each_other() {
    let (gw, fake) = gateway().await;
    let json_answer = json_of(
        gw.chat(&caller("acme"), &ask("Name a colour", false), none())
            .await
            .unwrap(),
    );
    let streamed = frames(
        gw.chat(&caller("acme"), &ask("Name a colour", true), none())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(fake.chat_calls(), 1);
    let text: String = deltas(&streamed)
        .iter()
        .filter_map(|d| d["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        text,
        json_answer["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
    );
    assert_eq!(deltas(&streamed).last().unwrap()["finish_reason"], "stop");
    // And a stream first, then JSON.
    frames(
        gw.chat(&caller("acme"), &ask("Name a fruit", true), none())
            .await
            .unwrap(),
    )
    .await;
    let assembled = json_of(
        gw.chat(&caller("acme"), &ask("Name a fruit", false), none())
            .await
            .unwrap(),
    );
    assert_eq!(fake.chat_calls(), 2);
    assert_eq!(
        assembled["choices"][0]["message"]["content"],
        "Answer to: Name a fruit"
    );
    assert_eq!(assembled["choices"][0]["finish_reason"], "stop");
    assert_eq!(assembled["object"], "chat.completion");
}

#[tokio::test]
async fn a_paraphrase_hits_but_not_after_other_turns() {
    let (gw, fake) = gateway().await;
    gw.chat(
        &caller("acme"),
        &ask("How do I reset my password?", false),
        none(),
    )
    .await
    .unwrap();
    let para = gw
        .chat(
            &caller("acme"),
            &ask("how can I reset my password", false),
            none(),
        )
        .await
        .unwrap();
    assert_eq!(para.provenance.status, CacheStatus::Hit);
    assert_eq!(para.provenance.source, Some(Source::Semantic));
    assert!(para.provenance.similarity.unwrap() >= 0.75);
    assert!(para.provenance.hit_id.is_some());
    assert_eq!(fake.chat_calls(), 1);
    // The same last question after another system prompt: another conversation.
    let other = json!({"model": "gpt-fake", "messages": [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "How do I reset my password?"}]})
    .to_string();
    let miss = gw
        .chat(&caller("acme"), other.as_bytes(), none())
        .await
        .unwrap();
    assert_eq!(miss.provenance.status, CacheStatus::Miss);
    assert_eq!(fake.chat_calls(), 2);
    // A caller bound to exact hits misses the paraphrase.
    let exact_only = caller("acme").bounds(Bounds {
        no_semantic: true,
        ..Bounds::default()
    });
    let r = gw
        .chat(
            &exact_only,
            &ask("how can I reset my password", false),
            none(),
        )
        .await
        .unwrap();
    assert_eq!(r.provenance.status, CacheStatus::Miss);
}

#[tokio::test]
async fn unfinished_tool_calling_and_odd_requests_are_not_cached() {
    let (gw, fake) = gateway().await;
    let mut calls = 0;
    for (body, bypass) in [
        (ask("Tell me more [length]", false), None),
        (ask("Tell me more [length]", true), None),
        (json!({"model": "gpt-fake", "n": 2, "messages": [{"role": "user", "content": "hi"}]}).to_string().into_bytes(), Some("n")),
        (json!({"model": "gpt-fake", "logprobs": true, "messages": [{"role": "user", "content": "hi"}]}).to_string().into_bytes(), Some("logprobs")),
        (json!({"model": "gpt-fake", "temperature": 1.5, "messages": [{"role": "user", "content": "hi"}]}).to_string().into_bytes(), Some("temperature")),
        (json!({"model": "gpt-fake", "tools": [{"type": "function", "function": {"name": "get_weather"}}],
            "messages": [{"role": "user", "content": "Weather in Paris?"}]}).to_string().into_bytes(), None),
    ] {
        for _ in 0..2 {
            let reply = gw.chat(&caller("acme"), &body, none()).await.unwrap();
            assert_eq!(reply.provenance.reason, bypass);
            assert_ne!(reply.provenance.status, CacheStatus::Hit);
            if let ReplyBody::Stream(_) = reply.body {
                frames(reply).await;
            }
            calls += 1;
        }
    }
    assert_eq!(fake.chat_calls(), calls);
    // With the switch on, tool calls are cached, streamed calls included, and replay whole.
    let (gw, fake) = gateway_with(Policy {
        cache_tool_calls: true,
        ..Policy::default()
    })
    .await;
    let tools = json!({"model": "gpt-fake", "stream": true,
        "tools": [{"type": "function", "function": {"name": "get_weather"}}],
        "messages": [{"role": "user", "content": "Weather in Paris?"}]})
    .to_string();
    let first = frames(
        gw.chat(&caller("acme"), tools.as_bytes(), none())
            .await
            .unwrap(),
    )
    .await;
    let again = gw
        .chat(&caller("acme"), tools.as_bytes(), none())
        .await
        .unwrap();
    assert_eq!(again.provenance.status, CacheStatus::Hit);
    assert_eq!(deltas(&frames(again).await), deltas(&first));
    let json = json_of(
        gw.chat(
            &caller("acme"),
            tools
                .replace("\"stream\":true", "\"stream\":false")
                .as_bytes(),
            none(),
        )
        .await
        .unwrap(),
    );
    assert_eq!(
        json["choices"][0]["message"]["tool_calls"],
        json!([{"id": "call_fake_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}])
    );
    assert_eq!(fake.chat_calls(), 1);
}

#[tokio::test]
async fn upstream_failures_become_openai_errors_and_are_never_cached() {
    let (gw, fake) = gateway().await;
    let e = gw
        .chat(&caller("acme"), &ask("x [error-500]", false), none())
        .await
        .unwrap_err();
    assert_eq!((e.status(), e.code()), (502, Some("upstream_error")));
    // Retried before giving up (5xx are transient): 1 + 2 retries.
    assert_eq!(fake.chat_calls(), 3);
    let e = gw
        .chat(&caller("acme"), &ask("x [error-400]", true), none())
        .await
        .unwrap_err();
    assert_eq!(e.status(), 400);
    assert_eq!(e.body()["error"]["code"], "string_above_max_length");
    let e = gw
        .chat(&caller("acme"), &ask("x [error-429]", false), none())
        .await
        .unwrap_err();
    assert_eq!(e.status(), 429);
    // A stream that dies or reports an error mid-way ends with an error event, no [DONE], no cache.
    for bad in ["x [cut]", "x [stream-error]"] {
        for _ in 0..2 {
            let f = frames(
                gw.chat(&caller("acme"), &ask(bad, true), none())
                    .await
                    .unwrap(),
            )
            .await;
            assert_ne!(f.last().unwrap(), "[DONE]", "{f:?}");
            let last: Value = serde_json::from_str(f.last().unwrap()).unwrap();
            assert!(last["error"]["message"].is_string(), "{last}");
        }
    }
    let before = fake.chat_calls();
    gw.chat(&caller("acme"), &ask("x [error-400]", false), none())
        .await
        .unwrap_err();
    assert_eq!(fake.chat_calls(), before + 1);
}

#[tokio::test]
async fn the_provider_key_never_reaches_a_client() {
    let (gw, _fake) = gateway().await;
    let e = gw
        .chat(&caller("acme"), &ask("x [echo-key]", false), none())
        .await
        .unwrap_err();
    let body = e.body().to_string();
    assert!(!body.contains(KEY), "{body}");
    assert!(body.contains("[redacted]"), "{body}");
    // A wrong key on the server: the client gets a 502 that says so, not the provider's text.
    let fake = FakeOpenAi::start("sk-other").await;
    let config = GatewayConfig::new(UpstreamConfig::new("default", fake.base_url()).api_key(KEY));
    let gw = Gateway::new(cache().await, config).unwrap();
    let e = gw
        .chat(&caller("acme"), &ask("hello", false), none())
        .await
        .unwrap_err();
    assert_eq!((e.status(), e.code()), (502, Some("upstream_auth")));
    assert!(!e.body().to_string().contains(KEY));
    assert!(!format!("{gw:?}").contains(KEY));
}

#[tokio::test]
async fn concurrent_identical_streams_share_one_call_and_get_chunks_live() {
    let (gw, fake) = gateway().await;
    let body = ask("Tell me a story [slow]", true);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let gw = gw.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let reply = gw.chat(&caller("acme"), &body, none()).await.unwrap();
            let coalesced = reply.provenance.coalesced;
            let ReplyBody::Stream(mut stream) = reply.body else {
                panic!()
            };
            // The first chunk arrives long before the whole answer (60 ms per chunk upstream).
            let start = Instant::now();
            let first = stream.next().await.unwrap();
            let first_at = start.elapsed();
            let mut rest: Vec<Bytes> = stream.collect().await;
            rest.insert(0, first);
            (coalesced, first_at, start.elapsed(), rest)
        }));
    }
    let mut followers = 0;
    let mut outputs = Vec::new();
    for t in tasks {
        let (coalesced, first_at, total, frames) = t.await.unwrap();
        followers += usize::from(coalesced);
        assert!(
            first_at < total / 2,
            "first chunk at {first_at:?} of {total:?}"
        );
        let text: String = frames
            .iter()
            .map(|b| std::str::from_utf8(b).unwrap())
            .collect();
        outputs.push(deltas(
            &text
                .split("\n\n")
                .filter(|f| !f.is_empty())
                .map(|f| f[6..].to_owned())
                .collect::<Vec<_>>(),
        ));
    }
    assert_eq!(fake.chat_calls(), 1);
    assert_eq!(followers, 19);
    assert!(outputs.iter().all(|o| *o == outputs[0]));
}

#[tokio::test]
async fn cache_control_and_threshold_directives() {
    let (gw, fake) = gateway().await;
    let d = |cc: &str| Directives::parse(Some(cc), None).unwrap();
    let q = ask("What time is it in Paris?", false);
    let e = gw
        .chat(&caller("acme"), &q, d("only-if-cached"))
        .await
        .unwrap_err();
    assert_eq!((e.status(), e.code()), (504, Some("cache_miss")));
    assert_eq!(fake.chat_calls(), 0);
    let r = gw.chat(&caller("acme"), &q, d("no-store")).await.unwrap();
    assert_eq!(
        (r.provenance.status, r.provenance.reason),
        (CacheStatus::Bypass, Some("no-store"))
    );
    assert!(
        gw.chat(&caller("acme"), &q, d("only-if-cached"))
            .await
            .is_err()
    );
    gw.chat(&caller("acme"), &q, none()).await.unwrap();
    let r = gw
        .chat(&caller("acme"), &q, d("only-if-cached"))
        .await
        .unwrap();
    assert_eq!(r.provenance.status, CacheStatus::Hit);
    let calls = fake.chat_calls();
    let r = gw.chat(&caller("acme"), &q, d("no-cache")).await.unwrap();
    assert_eq!(r.provenance.status, CacheStatus::Miss);
    assert_eq!(fake.chat_calls(), calls + 1);
    let r = gw
        .chat(&caller("acme"), &q, d("max-age=3600"))
        .await
        .unwrap();
    assert_eq!(r.provenance.status, CacheStatus::Hit);
    assert!(r.provenance.age.unwrap() < Duration::from_secs(5));
    // A threshold above the paraphrase's similarity turns the semantic hit into a miss.
    let p = ask("what time is it in paris right now", false);
    let strict = Directives::parse(None, Some("0.999")).unwrap();
    let r = gw
        .chat(
            &caller("acme"),
            &p,
            Directives {
                only_if_cached: true,
                ..strict
            },
        )
        .await;
    assert_eq!(r.unwrap_err().code(), Some("cache_miss"));
}

#[tokio::test]
async fn models_aliases_and_the_allow_list() {
    let fake = FakeOpenAi::start(KEY).await;
    let mut config =
        GatewayConfig::new(UpstreamConfig::new("default", fake.base_url()).api_key(KEY));
    config.allowed_models = vec!["gpt-fake".into()];
    config.aliases = vec![("fast".into(), "gpt-fake".into())];
    let gw = Gateway::new(cache().await, config).unwrap();
    let list = gw.models().await.unwrap();
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["fast", "gpt-fake"]);
    let body =
        json!({"model": "fast", "messages": [{"role": "user", "content": "hi"}]}).to_string();
    json_of(
        gw.chat(&caller("acme"), body.as_bytes(), none())
            .await
            .unwrap(),
    );
    assert_eq!(fake.requests()[0]["model"], "gpt-fake");
    let other = json!({"model": "gpt-fake-mini", "messages": [{"role": "user", "content": "hi"}]})
        .to_string();
    let e = gw
        .chat(&caller("acme"), other.as_bytes(), none())
        .await
        .unwrap_err();
    assert_eq!((e.status(), e.code()), (404, Some("model_not_found")));
    assert_eq!(fake.chat_calls(), 1);
    // Without an allow-list the upstream's list is passed on.
    let (gw, _fake) = gateway().await;
    let list = gw.models().await.unwrap();
    assert!(
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "gpt-fake-mini")
    );
}

#[tokio::test]
async fn embeddings_are_cached_whole() {
    let (gw, fake) = gateway().await;
    let body = json!({"model": "text-embedding-3-small", "input": ["alpha", "beta"]}).to_string();
    let a = gw
        .embeddings(&caller("acme"), body.as_bytes(), none())
        .await
        .unwrap();
    assert_eq!(a.provenance.status, CacheStatus::Miss);
    let b = gw
        .embeddings(&caller("acme"), body.as_bytes(), none())
        .await
        .unwrap();
    assert_eq!(b.provenance.status, CacheStatus::Hit);
    assert_eq!(json_of(a), json_of(b));
    assert_eq!(fake.embedding_calls(), 1);
    for bad in [
        json!({"input": "x"}),
        json!({"model": "m"}),
        json!({"model": "m", "input": []}),
    ] {
        let e = gw
            .embeddings(&caller("acme"), bad.to_string().as_bytes(), none())
            .await
            .unwrap_err();
        assert_eq!(e.status(), 400);
    }
    assert_eq!(fake.embedding_calls(), 1);
}

#[tokio::test]
async fn a_dropped_client_finishes_and_caches_or_aborts_as_configured() {
    for (on_disconnect, cached) in [(OnDisconnect::Finish, true), (OnDisconnect::Abort, false)] {
        let (gw, fake) = gateway_with(Policy {
            on_disconnect,
            ..Policy::default()
        })
        .await;
        let body = ask("A long answer please [slow]", true);
        let reply = gw.chat(&caller("acme"), &body, none()).await.unwrap();
        let ReplyBody::Stream(mut stream) = reply.body else {
            panic!()
        };
        stream.next().await.unwrap();
        drop(stream);
        tokio::time::sleep(Duration::from_millis(900)).await;
        let again = gw
            .chat(
                &caller("acme"),
                &body,
                Directives::parse(Some("only-if-cached"), None).unwrap(),
            )
            .await;
        assert_eq!(again.is_ok(), cached, "{on_disconnect:?}");
        assert_eq!(fake.chat_calls(), 1);
    }
}

#[tokio::test]
async fn bad_requests_are_refused_before_any_upstream_call() {
    let (gw, fake) = gateway().await;
    for body in [
        b"not json".to_vec(),
        b"[]".to_vec(),
        json!({"messages": [{"role": "user", "content": "x"}]}).to_string().into_bytes(),
        json!({"model": "gpt-fake", "messages": "x"}).to_string().into_bytes(),
        json!({"model": "gpt-fake", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}).to_string().into_bytes(),
    ] {
        let e = gw.chat(&caller("acme"), &body, none()).await.unwrap_err();
        assert_eq!(e.status(), 400);
        assert_eq!(e.body()["error"]["type"], "invalid_request_error");
    }
    assert_eq!(fake.chat_calls(), 0);
}

#[tokio::test]
async fn a_slow_upstream_is_a_504_and_nothing_is_cached() {
    let fake = FakeOpenAi::start(KEY).await;
    let mut config =
        GatewayConfig::new(UpstreamConfig::new("default", fake.base_url()).api_key(KEY));
    config.timeouts.response = Duration::from_millis(150);
    config.timeouts.retry.max_retries = 1;
    config.timeouts.retry.base = Duration::from_millis(1);
    let gw = Gateway::new(cache().await, config).unwrap();
    fake.set_first_byte_delay(Duration::from_millis(600));
    for stream in [false, true] {
        let e = gw
            .chat(&caller("acme"), &ask("Are you there?", stream), none())
            .await
            .unwrap_err();
        assert_eq!(
            (e.status(), e.code()),
            (504, Some("upstream_timeout")),
            "{e}"
        );
        assert_eq!(e.body()["error"]["type"], "api_error");
    }
    // Each request tried twice (one retry).
    assert_eq!(fake.chat_calls(), 4);
    fake.set_first_byte_delay(Duration::ZERO);
    let only = Directives::parse(Some("only-if-cached"), None).unwrap();
    assert!(
        gw.chat(&caller("acme"), &ask("Are you there?", false), only)
            .await
            .is_err()
    );
}
