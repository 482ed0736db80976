//! A WebSocket client for `/api/ws`, shared by the in-process and real-binary tests.

use std::{net::SocketAddr, time::Duration};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async,
    tungstenite::{
        Message, client::IntoClientRequest, handshake::client::Request, http::HeaderValue,
    },
};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// An upgrade request to `/api/ws` on `addr` carrying one extra header.
pub fn request(addr: SocketAddr, header: &'static str, value: &str) -> Request {
    let mut req = format!("ws://{addr}/api/ws").into_client_request().unwrap();
    req.headers_mut()
        .insert(header, HeaderValue::from_str(value).unwrap());
    req
}

/// Connect with the token in the `Authorization` header.
pub async fn connect(addr: SocketAddr, token: &str) -> Ws {
    connect_async(request(addr, "authorization", &format!("Bearer {token}")))
        .await
        .unwrap()
        .0
}

/// Connect the browser way: the token as a `bearer.` subprotocol next to `resk.v1`.
pub async fn connect_browser(addr: SocketAddr, token: &str) -> Ws {
    connect_async(request(
        addr,
        "sec-websocket-protocol",
        &format!("resk.v1, bearer.{token}"),
    ))
    .await
    .unwrap()
    .0
}

pub async fn send(ws: &mut Ws, msg: Value) {
    ws.send(Message::text(msg.to_string())).await.unwrap();
}

/// The next JSON text frame (pings and pongs skipped; any other frame fails the test).
pub async fn next(ws: &mut Ws) -> Value {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("no message within 10 s")
            .expect("connection ended")
            .unwrap();
        match frame {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// Send `msg` and return the answer.
pub async fn ask(ws: &mut Ws, msg: Value) -> Value {
    send(ws, msg).await;
    next(ws).await
}

/// Subscribe to `channel` and check the acknowledgement.
pub async fn subscribe(ws: &mut Ws, channel: &str) {
    let ack = ask(ws, json!({"type": "subscribe", "channel": channel})).await;
    assert_eq!(ack, json!({"type": "subscribed", "channel": channel}));
}

/// The code and reason of the close frame that ends `ws` within `within` (other frames skipped).
pub async fn close_frame(ws: &mut Ws, within: Duration) -> (u16, String) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("connection not closed within {within:?}"));
        match frame {
            Some(Ok(Message::Close(Some(close)))) => {
                return (u16::from(close.code), close.reason.to_string());
            }
            Some(Ok(Message::Close(None))) | None => panic!("closed without a code"),
            Some(Ok(_)) => {}
            Some(Err(err)) => panic!("read failed before a close frame: {err}"),
        }
    }
}
