//! `GET /api/ws` against a server on a loopback port, with a real WebSocket client.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{net::SocketAddr, time::Duration};

use crate::common::{
    admin, app, now, sign, token_for,
    ws::{Ws, ask, connect, next, request, send, subscribe},
};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::{
    connect_async,
    tungstenite::{
        Message, client::IntoClientRequest, http::StatusCode, protocol::frame::coding::CloseCode,
    },
};

fn url(addr: SocketAddr) -> String {
    format!("ws://{addr}/api/ws")
}

/// The handshake status of a refused connection.
async fn refused(req: impl IntoClientRequest + Unpin) -> StatusCode {
    match connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status(),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("the handshake was accepted"),
    }
}

/// The close frame the server ends the connection with.
async fn close_code(ws: &mut Ws) -> CloseCode {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(15), ws.next())
            .await
            .expect("connection not closed within 15 s");
        match frame {
            Some(Ok(Message::Close(Some(close)))) => return close.code,
            Some(Ok(Message::Close(None))) | None => panic!("closed without a code"),
            Some(Ok(_)) => {}
            Some(Err(err)) => panic!("read failed before a close frame: {err}"),
        }
    }
}

#[tokio::test]
async fn the_upgrade_is_authenticated_by_header_or_subprotocol_never_by_query() {
    let app = app(&[]);
    let addr = app.listen().await;

    assert_eq!(refused(url(addr)).await, StatusCode::UNAUTHORIZED);
    let bad = format!("{}?access_token={}", url(addr), admin());
    assert_eq!(refused(bad).await, StatusCode::UNAUTHORIZED);
    let expired = sign(&json!({"sub": "a", "scope": "cache:read", "exp": now() - 600}));
    let req = request(
        addr,
        "sec-websocket-protocol",
        &format!("resk.v1, bearer.{expired}"),
    );
    assert_eq!(refused(req).await, StatusCode::UNAUTHORIZED);
    // A token without cache:read is authenticated but not authorised.
    let writer_only = token_for("w", "acme", "cache:write");
    let req = request(addr, "authorization", &format!("Bearer {writer_only}"));
    assert_eq!(refused(req).await, StatusCode::FORBIDDEN);

    // The browser way: the token as a subprotocol; the server selects `resk.v1`, never echoes it.
    let req = request(
        addr,
        "sec-websocket-protocol",
        &format!("resk.v1, bearer.{}", admin()),
    );
    let (mut ws, response) = connect_async(req).await.unwrap();
    assert_eq!(
        response.headers().get("sec-websocket-protocol").unwrap(),
        "resk.v1"
    );
    assert_eq!(
        ask(&mut ws, json!({"type": "ping", "id": 7})).await,
        json!({"type": "pong", "id": 7})
    );

    let mut ws = connect(addr, &admin()).await;
    assert_eq!(
        ask(&mut ws, json!({"type": "ping"})).await,
        json!({"type": "pong"})
    );
}

#[tokio::test]
async fn channels_deliver_within_a_tenant_only() {
    let app = app(&[]);
    let addr = app.listen().await;
    let mut alice = connect(addr, &admin()).await;
    let mut bob = connect(addr, &token_for("bob", "acme", "cache:read")).await;
    let mut eve = connect(addr, &token_for("eve", "globex", "cache:read cache:write")).await;
    subscribe(&mut bob, "news").await;
    subscribe(&mut eve, "news").await;

    let ack = ask(
        &mut alice,
        json!({"type": "publish", "channel": "news", "data": {"n": 1}, "id": "p1"}),
    )
    .await;
    assert_eq!(
        ack,
        json!({"type": "published", "channel": "news", "id": "p1"})
    );
    assert_eq!(
        next(&mut bob).await,
        json!({"type": "message", "channel": "news", "data": {"n": 1}})
    );
    // Eve's `news` is globex's channel: her own publish reaches her, acme's never does.
    send(
        &mut eve,
        json!({"type": "publish", "channel": "news", "data": "globex"}),
    )
    .await;
    assert_eq!(next(&mut eve).await["type"], "published");
    assert_eq!(next(&mut eve).await["data"], "globex");

    // After unsubscribing, nothing more arrives (the ping answer is the next frame).
    let ack = ask(&mut bob, json!({"type": "unsubscribe", "channel": "news"})).await;
    assert_eq!(ack, json!({"type": "unsubscribed", "channel": "news"}));
    ask(
        &mut alice,
        json!({"type": "publish", "channel": "news", "data": 2}),
    )
    .await;
    assert_eq!(
        ask(&mut bob, json!({"type": "ping"})).await,
        json!({"type": "pong"})
    );
}

#[tokio::test]
async fn bad_messages_get_an_error_and_keep_the_connection() {
    let app = app(&["--ws-max-subscriptions", "2"]);
    let addr = app.listen().await;
    let mut ws = connect(addr, &token_for("r", "acme", "cache:read")).await;
    let cases = [
        (Message::text("{not json"), "bad_json"),
        (Message::text("[1,2]"), "bad_message"),
        (Message::text(r#"{"type":"shout","id":3}"#), "unknown_type"),
        (Message::text(r#"{"type":"subscribe"}"#), "bad_message"),
        (
            Message::text(r#"{"type":"subscribe","channel":"a","extra":1}"#),
            "bad_message",
        ),
        (
            Message::text(r#"{"type":"subscribe","channel":"a/b"}"#),
            "invalid_channel",
        ),
        (
            Message::text(r#"{"type":"subscribe","channel":""}"#),
            "invalid_channel",
        ),
        (Message::binary(vec![1, 2, 3]), "bad_message"),
        // Read-only token: publishing is refused, and the cache channel is the server's.
        (
            Message::text(r#"{"type":"publish","channel":"news","data":1}"#),
            "insufficient_scope",
        ),
    ];
    for (frame, code) in cases {
        ws.send(frame.clone()).await.unwrap();
        let reply = next(&mut ws).await;
        assert_eq!(reply["type"], "error", "{frame:?}: {reply}");
        assert_eq!(reply["code"], code, "{frame:?}: {reply}");
        assert!(reply["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let reply = ask(&mut ws, json!({"type": "shout", "id": 3})).await;
    assert_eq!(reply["id"], 3);

    let mut writer = connect(addr, &admin()).await;
    let reply = ask(
        &mut writer,
        json!({"type": "publish", "channel": "cache", "data": {}}),
    )
    .await;
    assert_eq!(reply["code"], "reserved_channel");

    subscribe(&mut ws, "a").await;
    subscribe(&mut ws, "b").await;
    subscribe(&mut ws, "a").await; // already subscribed: not a new subscription
    let reply = ask(&mut ws, json!({"type": "subscribe", "channel": "c"})).await;
    assert_eq!(reply["code"], "too_many_subscriptions");
    // Still connected and serving.
    assert_eq!(
        ask(&mut ws, json!({"type": "ping"})).await,
        json!({"type": "pong"})
    );
}

#[tokio::test]
async fn oversized_messages_close_the_connection_with_1009() {
    let app = app(&["--ws-max-message-bytes", "1024"]);
    let addr = app.listen().await;
    let mut ws = connect(addr, &admin()).await;
    let big = json!({"type": "publish", "channel": "x", "data": "y".repeat(4096)});
    let _ = ws.send(Message::text(big.to_string())).await;
    assert_eq!(close_code(&mut ws).await, CloseCode::Size);
}

#[tokio::test]
async fn cache_writes_deletes_and_purges_are_published_on_the_cache_channel() {
    let app = app(&[]);
    let addr = app.listen().await;
    let mut ws = connect(addr, &token_for("watcher", "acme", "cache:read")).await;
    let mut other_tenant = connect(addr, &token_for("w2", "globex", "cache:read")).await;
    subscribe(&mut ws, "cache").await;
    subscribe(&mut other_tenant, "cache").await;

    let written = app
        .write(&admin(), json!({"query": "hello?", "response": "hi"}))
        .await;
    assert_eq!(written.status, 201);
    let key = written.body["key"].as_str().unwrap().to_owned();
    let event = next(&mut ws).await;
    assert_eq!(event["channel"], "cache");
    assert_eq!(event["data"]["event"], "set");
    assert_eq!(event["data"]["key"], key.as_str());
    assert!(event["data"]["expires_at"].is_string());

    let deleted = app
        .call("DELETE", &format!("/api/cache/{key}"), Some(&admin()), None)
        .await;
    assert_eq!(deleted.status, 200, "{}", deleted.text);
    assert_eq!(deleted.body, json!({"success": true, "deleted": true}));
    let event = next(&mut ws).await;
    assert_eq!(event["data"], json!({"event": "delete", "key": key}));

    let purged = app.call("DELETE", "/api/cache", Some(&admin()), None).await;
    assert_eq!(purged.status, 200);
    let event = next(&mut ws).await;
    assert_eq!(event["data"], json!({"event": "purge", "purged": 0}));

    // globex saw none of it.
    assert_eq!(
        ask(&mut other_tenant, json!({"type": "ping"})).await,
        json!({"type": "pong"})
    );
}

/// A revoked token's sockets close with 4001: at once on the instance that revoked it, and on
/// another instance that hears no bus message (another bus, one store) within the 5 s recheck plus
/// the one-second poll; a socket of another token stays open.
#[tokio::test]
async fn connections_end_when_the_token_is_revoked() {
    use resk_core::{LocalBus, SharedBus, SharedCacheStore};
    let store = resk_cache_memory::MemoryStore::default();
    let instance = || {
        let config = crate::common::config(&[]);
        let shared: SharedCacheStore = std::sync::Arc::new(store.clone());
        let bus: SharedBus = std::sync::Arc::new(LocalBus::default());
        crate::common::TestApp {
            router: resk_server::App::with_backends(
                &config,
                resk_server::Backends {
                    cache: shared,
                    bus,
                    semantic: None,
                    turns: None,
                    limiter: None,
                },
            )
            .unwrap()
            .router,
            store: store.clone(),
            config,
        }
    };
    let (a, b) = (instance(), instance());
    let (addr_a, addr_b) = (a.listen().await, b.listen().await);
    let token = crate::common::token_with_jti("alice", "acme", "cache:read", "ws-revoked");
    let other = crate::common::token_with_jti("bob", "acme", "cache:read", "ws-kept");
    let mut on_a = connect(addr_a, &token).await;
    let mut on_b = connect(addr_b, &token).await;
    let mut bystander = connect(addr_a, &other).await;
    for ws in [&mut on_a, &mut on_b, &mut bystander] {
        assert_eq!(
            ask(ws, json!({"type": "ping"})).await,
            json!({"type": "pong"})
        );
    }
    let started = std::time::Instant::now();
    let r = a
        .call("POST", "/api/auth/revoke", Some(&token), Some(&json!({})))
        .await;
    assert_eq!(r.status, axum::http::StatusCode::OK, "{}", r.text);
    let closed = crate::common::ws::close_frame(&mut on_a, Duration::from_secs(2)).await;
    assert_eq!(closed, (4001, "token revoked".to_owned()));
    let closed = crate::common::ws::close_frame(&mut on_b, Duration::from_secs(7)).await;
    assert_eq!(closed, (4001, "token revoked".to_owned()));
    assert!(started.elapsed() < Duration::from_secs(7));
    assert_eq!(
        ask(&mut bystander, json!({"type": "ping"})).await,
        json!({"type": "pong"})
    );
}

#[tokio::test]
async fn connections_end_when_the_token_expires() {
    let app = app(&["--jwt-leeway-secs", "0"]);
    let addr = app.listen().await;
    let short = sign(&json!({"sub": "s", "scope": "cache:read", "exp": now() + 2}));
    let mut ws = connect(addr, &short).await;
    assert_eq!(close_code(&mut ws).await, CloseCode::from(4001));
}

#[tokio::test]
async fn silent_clients_are_dropped_after_two_ping_intervals() {
    let app = app(&["--ws-ping-secs", "1"]);
    let addr = app.listen().await;
    let mut ws = connect(addr, &admin()).await;
    // Not reading means not answering pings.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(close_code(&mut ws).await, CloseCode::from(4000));
}

#[tokio::test]
async fn a_slow_client_loses_messages_and_they_are_counted() {
    let app = app(&["--ws-send-queue", "4"]);
    let addr = app.listen().await;
    let mut slow = connect(addr, &token_for("slow", "acme", "cache:read")).await;
    subscribe(&mut slow, "firehose").await;
    let mut publisher = connect(addr, &admin()).await;
    // ~40 MB towards a client that reads nothing: socket buffers fill, then its queue, then the
    // server drops (it never buffers without bound).
    let payload = "z".repeat(32 * 1024);
    for _ in 0..1200 {
        send(
            &mut publisher,
            json!({"type": "publish", "channel": "firehose", "data": payload}),
        )
        .await;
        assert_eq!(next(&mut publisher).await["type"], "published");
    }
    let metrics = app.call("GET", "/api/metrics", None, None).await.text;
    let dropped: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("resk_ws_dropped_messages_total "))
        .unwrap_or_else(|| panic!("no drop counter in\n{metrics}"))
        .trim()
        .parse()
        .unwrap();
    assert!(dropped > 0.0, "nothing dropped");
    // The slow client is still connected and gets what was queued, then a pong.
    let mut received = 0;
    send(&mut slow, json!({"type": "ping"})).await;
    loop {
        let msg = next(&mut slow).await;
        if msg["type"] == "pong" {
            break;
        }
        received += 1;
    }
    assert!(received < 1200, "received {received}: nothing was dropped");
}
