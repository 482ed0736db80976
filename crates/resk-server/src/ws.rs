//! `GET /api/ws`: WebSocket pub/sub per tenant, and the cache events published on it.
//!
//! # Authentication
//! The upgrade request passes the same gate as every API request (JWT rules, rate limit). Browsers
//! cannot set `Authorization` on a WebSocket, so the token may instead travel as a subprotocol:
//! `new WebSocket(url, ["resk.v1", "bearer." + token])`. The server answers with the `resk.v1`
//! subprotocol (never echoing the token). Tokens in the query string are refused on purpose: URLs end
//! up in access logs and proxy caches. The connection is closed with code 4001 when the token stops
//! being valid: at its expiry (reason `token expired`), or when it is revoked (reason `token
//! revoked`), on any instance: at once when the revocation is heard on the bus, else within
//! [`crate::revoke::Revocations::RECHECK`] plus a second (the connection asks the revocation list
//! every second, which reads the store at most once per `RECHECK`).
//!
//! # Protocol (JSON text frames)
//! Client → server, each with an optional `id` echoed in the answer:
//! * `{"type":"subscribe","channel":C}` → `{"type":"subscribed","channel":C}`
//! * `{"type":"unsubscribe","channel":C}` → `{"type":"unsubscribed","channel":C}`
//! * `{"type":"publish","channel":C,"data":…}` → `{"type":"published","channel":C}` (needs
//!   `cache:write`; the `cache` channel is reserved for the server)
//! * `{"type":"ping"}` → `{"type":"pong"}`
//!
//! Server → client: `{"type":"message","channel":C,"data":…}` for every message on a subscribed
//! channel, `{"type":"lagged"}` when messages were lost because this client or the bus fell behind,
//! and `{"type":"error","code":…,"message":…}` for a bad request; the connection stays open.
//!
//! Channels are scoped to the tenant of the token: `news` for tenant `acme` and `news` for tenant
//! `globex` never meet. On the `cache` channel the server publishes `{"event":"set"|"delete"|"purge",…}`
//! after each successful write, delete and purge of the tenant.
//!
//! # Limits
//! Messages larger than `WS_MAX_MESSAGE_BYTES` close the connection (1009); at most
//! `WS_MAX_SUBSCRIPTIONS` channels per connection; server pings every `WS_PING_SECS` and closes a
//! connection silent for two intervals (4000); each client has a queue of `WS_SEND_QUEUE` outgoing
//! messages: when it is full, channel messages for that client are dropped and counted in
//! `resk_ws_dropped_messages_total`, so a slow client never makes the server buffer without bound.

use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    extract::{
        State,
        ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade},
    },
    http::StatusCode,
    response::Response,
};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use resk_core::{Bus, BusEvent};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::{
    auth::{Principal, Scope},
    error::ApiError,
    hub::{CACHE_CHANNEL, Hub, topic},
    state::AppState,
};

/// The subprotocol the server speaks (and selects, so browsers accept the handshake).
pub(crate) const PROTOCOL: &str = "resk.v1";
/// Prefix of the subprotocol that carries a bearer token.
pub(crate) const TOKEN_PROTOCOL_PREFIX: &str = "bearer.";
const MAX_CHANNEL_LEN: usize = 64;

/// Close codes (4000–4999 are for applications).
const CLOSE_TOO_BIG: u16 = 1009;
const CLOSE_PING_TIMEOUT: u16 = 4000;
/// The token is no longer valid: expired or revoked.
const CLOSE_TOKEN_INVALID: u16 = 4001;
/// How often a connection asks the revocation list about its token.
const REVOCATION_POLL: Duration = Duration::from_secs(1);

/// `GET /api/ws`.
pub(crate) async fn upgrade(
    State(app): State<Arc<AppState>>,
    principal: Principal,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    principal.require(Scope::Read)?;
    let ws = ws.map_err(|e| {
        ApiError::new(
            e.status(),
            "upgrade_required",
            format!("this route only accepts WebSocket upgrades: {e}"),
        )
    })?;
    let hub = &app.hub;
    let Ok(slot) = hub.slots.clone().try_acquire_owned() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_connections",
            "the WebSocket connection limit of this instance is reached; retry later",
        ));
    };
    let app = app.clone();
    Ok(ws
        .protocols([PROTOCOL])
        .max_message_size(hub.limits.max_message_bytes)
        .max_frame_size(hub.limits.max_message_bytes)
        .on_upgrade(move |socket| async move {
            let _slot = slot;
            app.hub.connections.increment(1.0);
            Connection::new(&app.hub, &app.revocations, principal)
                .run(socket)
                .await;
            app.hub.connections.decrement(1.0);
        }))
}

/// A client request.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum Request {
    Subscribe {
        channel: String,
        #[serde(default)]
        id: Option<Value>,
    },
    Unsubscribe {
        channel: String,
        #[serde(default)]
        id: Option<Value>,
    },
    Publish {
        channel: String,
        data: Value,
        #[serde(default)]
        id: Option<Value>,
    },
    Ping {
        #[serde(default)]
        id: Option<Value>,
    },
}

const TYPES: &[&str] = &["subscribe", "unsubscribe", "publish", "ping"];

/// An answer to a request.
#[derive(Serialize)]
struct Reply<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a Value>,
}

impl<'a> Reply<'a> {
    fn ack(kind: &'static str, channel: Option<&'a str>, id: Option<&'a Value>) -> Self {
        Self {
            kind,
            channel,
            code: None,
            message: None,
            id,
        }
    }

    fn error(code: &'static str, message: &'a str, id: Option<&'a Value>) -> Self {
        Self {
            kind: "error",
            channel: None,
            code: Some(code),
            message: Some(message),
            id,
        }
    }

    fn frame(&self) -> Message {
        Message::Text(Utf8Bytes::from(
            serde_json::to_string(self).unwrap_or_else(|_| r#"{"type":"error"}"#.into()),
        ))
    }
}

fn valid_channel(channel: &str) -> bool {
    !channel.is_empty()
        && channel.len() <= MAX_CHANNEL_LEN
        && channel
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
}

/// Why the reader loop ended.
enum End {
    /// The client closed or went away; nothing more to send.
    Gone,
    /// Close with this code and reason.
    Close(u16, &'static str),
}

struct Connection<'h> {
    hub: &'h Hub,
    revocations: &'h crate::revoke::Revocations,
    /// The token's name in revocations (`tenant/jti`); `None`: it has no `jti`, so it cannot be
    /// revoked.
    token: Option<Arc<str>>,
    principal: Principal,
    /// `ws/{tenant}/`: every topic of this tenant starts with it.
    prefix: String,
    channels: HashSet<String>,
}

impl<'h> Connection<'h> {
    fn new(
        hub: &'h Hub,
        revocations: &'h crate::revoke::Revocations,
        principal: Principal,
    ) -> Self {
        let prefix = topic(&principal.tenant, "");
        let token = principal.revocation_id.clone();
        Self {
            hub,
            revocations,
            token,
            principal,
            prefix,
            channels: HashSet::new(),
        }
    }

    async fn run(mut self, socket: WebSocket) {
        let (mut sink, mut stream) = socket.split();
        let (tx, mut rx) = mpsc::channel::<Message>(self.hub.limits.send_queue);
        let sent = self.hub.sent.clone();
        let writer = tokio::spawn(async move {
            while let Some(message) = rx.recv().await {
                let closing = matches!(message, Message::Close(_));
                if sink.send(message).await.is_err() {
                    break;
                }
                sent.increment(1);
                if closing {
                    break;
                }
            }
            let _ = sink.close().await;
        });

        let end = self.read_loop(&mut stream, &tx).await;
        if let End::Close(code, reason) = end {
            let _ = tx
                .send(Message::Close(Some(CloseFrame {
                    code,
                    reason: Utf8Bytes::from_static(reason),
                })))
                .await;
        }
        drop(tx);
        let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    }

    async fn read_loop(
        &mut self,
        stream: &mut futures_util::stream::SplitStream<WebSocket>,
        tx: &mpsc::Sender<Message>,
    ) -> End {
        let mut bus = self.hub.bus.subscribe();
        let interval = self.hub.limits.ping_interval;
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        let mut last_seen = Instant::now();
        let now_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let expiry = tokio::time::sleep(Duration::from_secs(
            self.principal.valid_until().saturating_sub(now_unix),
        ));
        tokio::pin!(expiry);
        let mut revocation_poll = tokio::time::interval_at(
            tokio::time::Instant::now() + REVOCATION_POLL,
            REVOCATION_POLL,
        );
        loop {
            tokio::select! {
                frame = stream.next() => {
                    last_seen = Instant::now();
                    match frame {
                        None | Some(Ok(Message::Close(_))) => return End::Gone,
                        Some(Err(err)) => {
                            // axum does not expose tungstenite's error kind; its capacity error
                            // reads "Space limit exceeded: Message too long: …".
                            let text = err.to_string();
                            let too_big = text.contains("too long") || text.contains("too big");
                            tracing::debug!(error = %err, "WebSocket read failed");
                            return if too_big {
                                End::Close(CLOSE_TOO_BIG, "message too big")
                            } else {
                                End::Gone
                            };
                        }
                        Some(Ok(Message::Text(text))) => {
                            self.hub.received.increment(1);
                            if tx.send(self.handle(text.as_str()).await).await.is_err() {
                                return End::Gone;
                            }
                        }
                        Some(Ok(Message::Binary(_))) => {
                            self.hub.received.increment(1);
                            let reply = Reply::error("bad_message", "send JSON text frames", None);
                            if tx.send(reply.frame()).await.is_err() {
                                return End::Gone;
                            }
                        }
                        // Pings are answered by the WebSocket layer; pongs only prove liveness.
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    }
                }
                event = bus.recv() => match event {
                    Some(BusEvent::Message(msg)) => {
                        if let Some(revoked) = crate::revoke::announced(&msg) {
                            if Some(revoked) == self.token.as_deref() {
                                return End::Close(CLOSE_TOKEN_INVALID, "token revoked");
                            }
                            continue;
                        }
                        let subscribed = msg
                            .topic
                            .strip_prefix(self.prefix.as_str())
                            .is_some_and(|channel| self.channels.contains(channel));
                        if subscribed {
                            self.offer(tx, msg.payload);
                        }
                    }
                    Some(BusEvent::Gap) => {
                        self.hub.lagged.increment(1);
                        if !self.channels.is_empty() {
                            self.offer(tx, Bytes::from_static(br#"{"type":"lagged"}"#));
                        }
                    }
                    None => return End::Close(1011, "server shutting down"),
                },
                _ = ping.tick() => {
                    if last_seen.elapsed() > interval * 2 {
                        return End::Close(CLOSE_PING_TIMEOUT, "keep-alive timeout");
                    }
                    // A full queue already proves the client is slow; skipping a ping is fine.
                    let _ = tx.try_send(Message::Ping(Bytes::from_static(b"resk")));
                }
                () = &mut expiry => return End::Close(CLOSE_TOKEN_INVALID, "token expired"),
                _ = revocation_poll.tick(), if self.token.is_some() => {
                    if let Some(token) = &self.token
                        && self.revocations.is_revoked_ident(token).await
                    {
                        return End::Close(CLOSE_TOKEN_INVALID, "token revoked");
                    }
                }
            }
        }
    }

    /// Queue a channel message for this client, or drop and count it when the client is behind.
    fn offer(&self, tx: &mpsc::Sender<Message>, frame: Bytes) {
        let Ok(text) = Utf8Bytes::try_from(frame) else {
            return;
        };
        if tx.try_send(Message::Text(text)).is_err() {
            self.hub.dropped.increment(1);
        }
    }

    /// Answer one client request.
    async fn handle(&mut self, text: &str) -> Message {
        let value: Value = match serde_json::from_str(text) {
            Ok(value) => value,
            Err(_) => {
                return Reply::error("bad_json", "the message is not valid JSON", None).frame();
            }
        };
        let id = value.get("id").cloned();
        let kind = value.get("type").and_then(Value::as_str);
        match kind {
            None => {
                return Reply::error(
                    "bad_message",
                    "a message is a JSON object with a string `type`",
                    id.as_ref(),
                )
                .frame();
            }
            Some(kind) if !TYPES.contains(&kind) => {
                return Reply::error(
                    "unknown_type",
                    "`type` must be subscribe, unsubscribe, publish or ping",
                    id.as_ref(),
                )
                .frame();
            }
            Some(_) => {}
        }
        let request: Request = match serde_json::from_value(value) {
            Ok(request) => request,
            Err(err) => {
                let message = err.to_string();
                return Reply::error("bad_message", &message, id.as_ref()).frame();
            }
        };
        match request {
            Request::Ping { id } => Reply::ack("pong", None, id.as_ref()).frame(),
            Request::Subscribe { channel, id } => {
                if !valid_channel(&channel) {
                    return invalid_channel(id.as_ref());
                }
                if !self.channels.contains(&channel)
                    && self.channels.len() >= self.hub.limits.max_subscriptions
                {
                    return Reply::error(
                        "too_many_subscriptions",
                        "the per-connection subscription limit is reached",
                        id.as_ref(),
                    )
                    .frame();
                }
                let frame = Reply::ack("subscribed", Some(&channel), id.as_ref()).frame();
                self.channels.insert(channel);
                frame
            }
            Request::Unsubscribe { channel, id } => {
                if !valid_channel(&channel) {
                    return invalid_channel(id.as_ref());
                }
                self.channels.remove(&channel);
                Reply::ack("unsubscribed", Some(&channel), id.as_ref()).frame()
            }
            Request::Publish { channel, data, id } => {
                if !valid_channel(&channel) {
                    return invalid_channel(id.as_ref());
                }
                if channel == CACHE_CHANNEL {
                    return Reply::error(
                        "reserved_channel",
                        "the cache channel is written by the server only",
                        id.as_ref(),
                    )
                    .frame();
                }
                if !self.principal.has(Scope::Write) {
                    return Reply::error(
                        "insufficient_scope",
                        "publishing needs the cache:write scope",
                        id.as_ref(),
                    )
                    .frame();
                }
                match self
                    .hub
                    .publish(&self.principal.tenant, &channel, &data)
                    .await
                {
                    Ok(()) => Reply::ack("published", Some(&channel), id.as_ref()).frame(),
                    Err(err) => {
                        tracing::warn!(error = %err, "WebSocket publish not fanned out");
                        Reply::error(
                            "unavailable",
                            "delivered on this instance only: the bus to other instances is down",
                            id.as_ref(),
                        )
                        .frame()
                    }
                }
            }
        }
    }
}

fn invalid_channel(id: Option<&Value>) -> Message {
    Reply::error(
        "invalid_channel",
        "a channel is 1-64 characters of A-Z a-z 0-9 . _ - :",
        id,
    )
    .frame()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names() {
        assert!(valid_channel("cache"));
        assert!(valid_channel("team-1:news_v2.x"));
        assert!(!valid_channel(""));
        assert!(!valid_channel("a/b"));
        assert!(!valid_channel("über"));
        assert!(!valid_channel(&"x".repeat(65)));
    }

    #[test]
    fn topics_are_scoped_by_tenant() {
        let acme = resk_core::TenantId::new("acme").unwrap();
        assert_eq!(topic(&acme, "news"), "ws/acme/news");
        assert!(topic(&acme, "news").starts_with(&topic(&acme, "")));
    }
}
