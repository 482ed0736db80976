//! [`RedisBus`]: a [`Bus`] spanning every process connected to one Redis, over Redis pub/sub.

use std::{sync::Arc, time::Duration};

use bytes::{BufMut, Bytes, BytesMut};
use fred::{
    clients::{Client, SubscriberClient},
    interfaces::{ClientLike, EventInterface, PubsubInterface},
};
use resk_core::{
    BackendInfo, Bus, BusEvent, BusMessage, BusReceiver, Capabilities, LocalBus, Result,
};
use tokio::{sync::watch, task::JoinHandle};

use crate::{RedisConfig, builder, convert};

/// Envelope: `origin (16 bytes) ‖ topic length (u16, big-endian) ‖ topic ‖ payload`.
const ORIGIN_LEN: usize = 16;

fn encode(origin: &[u8; ORIGIN_LEN], topic: &str, payload: &[u8]) -> Option<Bytes> {
    let topic_len = u16::try_from(topic.len()).ok()?;
    let mut out = BytesMut::with_capacity(ORIGIN_LEN + 2 + topic.len() + payload.len());
    out.put_slice(origin);
    out.put_u16(topic_len);
    out.put_slice(topic.as_bytes());
    out.put_slice(payload);
    Some(out.freeze())
}

fn decode(mut raw: Bytes) -> Option<([u8; ORIGIN_LEN], BusMessage)> {
    if raw.len() < ORIGIN_LEN + 2 {
        return None;
    }
    let mut origin = [0u8; ORIGIN_LEN];
    origin.copy_from_slice(&raw.split_to(ORIGIN_LEN));
    let len = usize::from(u16::from_be_bytes([raw[0], raw[1]]));
    let _ = raw.split_to(2);
    if raw.len() < len {
        return None;
    }
    let topic = std::str::from_utf8(&raw.split_to(len)).ok()?.into();
    Some((
        origin,
        BusMessage {
            topic,
            payload: raw,
        },
    ))
}

/// A bus shared by every process connected to the same Redis with the same key prefix.
///
/// All topics travel on one Redis channel, `{prefix}:bus`, so one subscription per process serves
/// any number of topics (WebSocket channels come and go; Redis channels would have to follow).
/// Each process delivers its own publishes to its local subscribers directly (no round trip, and
/// they still arrive while Redis is away) and drops the echo Redis sends back, recognised by a
/// random per-process origin id in the envelope.
///
/// A dedicated connection subscribes; on every (re)connection it subscribes again and delivers
/// [`BusEvent::Gap`], because messages published while it was away are lost (Redis pub/sub is
/// at-most-once). Subscribers such as a layer-1 cache clear what they hold on a gap.
#[derive(Debug)]
pub struct RedisBus {
    local: LocalBus,
    publisher: Client,
    subscriber: SubscriberClient,
    channel: String,
    origin: [u8; ORIGIN_LEN],
    info: BackendInfo,
    task: JoinHandle<()>,
}

impl RedisBus {
    /// Connect the publishing and subscribing connections. An unreachable Redis is not an error:
    /// the bus delivers locally at once, and joins the other processes when Redis answers.
    /// Waits at most `config.connect_timeout` for the subscription to be in place.
    pub async fn connect(config: &RedisConfig) -> Result<Self> {
        let builder = builder(config)?;
        let publisher = builder.build().map_err(|e| convert("bus", e))?;
        let subscriber = builder
            .build_subscriber_client()
            .map_err(|e| convert("bus", e))?;
        let local = LocalBus::default();
        let channel = format!("{}:bus", config.prefix);
        let origin = *uuid::Uuid::new_v4().as_bytes();
        let (ready_tx, mut ready_rx) = watch::channel(false);
        // Listen before connecting: the first connection is announced as a reconnection.
        let task = tokio::spawn(listen(
            subscriber.clone(),
            channel.clone(),
            origin,
            local.clone(),
            ready_tx,
        ));
        let _publisher_task = publisher.connect();
        let _subscriber_task = subscriber.connect();
        let wait = async {
            let _ = publisher.wait_for_connect().await;
            let _ = ready_rx.wait_for(|ready| *ready).await;
        };
        if tokio::time::timeout(config.connect_timeout, wait)
            .await
            .is_err()
        {
            tracing::warn!("Redis bus not connected yet; retrying in the background");
        }
        Ok(Self {
            local,
            publisher,
            subscriber,
            channel,
            origin,
            info: BackendInfo {
                name: crate::SCHEME,
                capabilities: Capabilities::new(false, true, true),
            },
            task,
        })
    }

    /// Close both connections.
    pub async fn quit(&self) {
        self.task.abort();
        let _ = self.subscriber.quit().await;
        let _ = self.publisher.quit().await;
    }
}

impl Drop for RedisBus {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Subscribe on every (re)connection, then forward other processes' messages to local subscribers.
async fn listen(
    subscriber: SubscriberClient,
    channel: String,
    origin: [u8; ORIGIN_LEN],
    local: LocalBus,
    ready: watch::Sender<bool>,
) {
    let mut reconnects = subscriber.reconnect_rx();
    let mut messages = subscriber.message_rx();
    let delivered = metrics::counter!("resk_bus_messages_total", "direction" => "received");
    let malformed = metrics::counter!("resk_bus_malformed_total");
    let gaps = metrics::counter!("resk_bus_gaps_total");
    loop {
        tokio::select! {
            reconnect = reconnects.recv() => {
                if matches!(reconnect, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                    return;
                }
                // Subscribe again on the new connection; retry while it is flapping.
                loop {
                    match subscriber.subscribe(channel.as_str()).await {
                        Ok(()) => break,
                        Err(err) => {
                            tracing::warn!(error = %err, "Redis bus subscribe failed; retrying");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
                gaps.increment(1);
                local.deliver(BusEvent::Gap);
                let _ = ready.send(true);
            }
            message = messages.recv() => match message {
                Ok(message) => {
                    if *message.channel != *channel {
                        continue;
                    }
                    let raw = match message.value.as_bytes() {
                        Some(raw) => Bytes::copy_from_slice(raw),
                        None => {
                            malformed.increment(1);
                            continue;
                        }
                    };
                    match decode(raw) {
                        Some((from, _)) if from == origin => {}
                        Some((_, msg)) => {
                            delivered.increment(1);
                            local.deliver(BusEvent::Message(msg));
                        }
                        None => malformed.increment(1),
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    gaps.increment(1);
                    local.deliver(BusEvent::Gap);
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

impl Bus for RedisBus {
    fn info(&self) -> &BackendInfo {
        &self.info
    }

    async fn publish(&self, topic: &str, payload: Bytes) -> Result<()> {
        let Some(envelope) = encode(&self.origin, topic, &payload) else {
            return Err(resk_core::Error::new(
                resk_core::ErrorKind::InvalidInput,
                crate::SCHEME,
                "publish",
                "topic longer than 65535 bytes",
            ));
        };
        self.local.deliver(BusEvent::Message(BusMessage {
            topic: Arc::from(topic),
            payload,
        }));
        let _: i64 = self
            .publisher
            .publish(self.channel.as_str(), envelope)
            .await
            .map_err(|e| convert("publish", e))?;
        metrics::counter!("resk_bus_messages_total", "direction" => "sent").increment(1);
        Ok(())
    }

    fn subscribe(&self) -> BusReceiver {
        self.local.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_and_reject_garbage() {
        let origin = [7u8; ORIGIN_LEN];
        let raw = encode(&origin, "ws/acme/news", b"{\"a\":1}").unwrap();
        let (from, msg) = decode(raw).unwrap();
        assert_eq!(from, origin);
        assert_eq!(&*msg.topic, "ws/acme/news");
        assert_eq!(&msg.payload[..], b"{\"a\":1}");
        assert!(decode(Bytes::from_static(b"short")).is_none());
        let mut bad = encode(&origin, "topic", b"").unwrap().to_vec();
        bad.truncate(ORIGIN_LEN + 3);
        assert!(decode(Bytes::from(bad)).is_none());
        assert!(encode(&origin, &"x".repeat(70_000), b"").is_none());
    }
}
