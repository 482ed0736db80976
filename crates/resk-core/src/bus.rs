//! Message buses: how the instances of one deployment tell each other what changed.
//!
//! A tiered cache uses a bus to evict the layer-1 copies other instances hold after a write, delete
//! or purge; resk-server uses it to fan WebSocket messages out to clients connected to any instance.
//! [`LocalBus`] serves one process; `resk_cache_redis::RedisBus` spans every process that shares a
//! Redis.
//!
//! Subscribers get a [`BusReceiver`] over a bounded buffer. A subscriber that falls behind, or a bus
//! that lost its connection for a while, receives [`BusEvent::Gap`] instead of silently missing
//! messages, so a cache can drop what it can no longer trust.

use std::{fmt::Debug, future::Future, sync::Arc};

use bytes::Bytes;
use tokio::sync::broadcast;

use crate::{BackendInfo, BoxFuture, Capabilities, Result};

/// One message: a topic and opaque bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BusMessage {
    /// What the message is about (`"cache.invalidate"`, `"ws/acme/news"`, …).
    pub topic: Arc<str>,
    /// The message itself; the bus never inspects it.
    pub payload: Bytes,
}

/// What a subscriber receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BusEvent {
    /// A message published on this or another instance.
    Message(BusMessage),
    /// Messages may have been lost (this subscriber fell behind, or the bus was disconnected and has
    /// just reconnected). Anything derived from earlier messages should be treated as stale.
    Gap,
}

/// A subscription: the events published after [`Bus::subscribe`] returned.
#[derive(Debug)]
pub struct BusReceiver {
    rx: broadcast::Receiver<BusEvent>,
}

impl BusReceiver {
    /// Wrap the receiving end of a bus's broadcast channel (for [`Bus`] implementations).
    pub fn new(rx: broadcast::Receiver<BusEvent>) -> Self {
        Self { rx }
    }

    /// The next event; `None` once the bus is gone. A subscriber that fell behind gets one
    /// [`BusEvent::Gap`] for the messages it missed, then continues with the oldest retained message.
    pub async fn recv(&mut self) -> Option<BusEvent> {
        match self.rx.recv().await {
            Ok(event) => Some(event),
            Err(broadcast::error::RecvError::Lagged(_)) => Some(BusEvent::Gap),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

/// A publish/subscribe bus shared by the instances of a deployment.
///
/// # Contract
/// * `publish` delivers the message to every current subscriber of this process before it returns,
///   and to the subscribers of every other process sharing the bus shortly after (best effort: a
///   disconnected bus reports `Unavailable` and its remote subscribers receive [`BusEvent::Gap`] once
///   it reconnects).
/// * Each subscriber receives each message at most once, in publish order per publisher.
/// * Memory is bounded: a subscriber that does not keep up loses messages and is told so with
///   [`BusEvent::Gap`]; it never makes the bus buffer without limit.
pub trait Bus: Send + Sync + Debug + 'static {
    /// The bus's name and capabilities (`shared` when it spans processes).
    fn info(&self) -> &BackendInfo;

    /// Publish `payload` on `topic`.
    fn publish(&self, topic: &str, payload: Bytes) -> impl Future<Output = Result<()>> + Send;

    /// Receive every event published from now on, on every topic.
    fn subscribe(&self) -> BusReceiver;
}

/// The object-safe twin of [`Bus`]; blanket-implemented, never implemented by hand.
#[allow(missing_docs)] // each method mirrors the Bus method of the same name
pub trait BusDyn: Send + Sync + Debug + 'static {
    fn info_dyn(&self) -> &BackendInfo;
    fn publish_dyn<'a>(&'a self, topic: &'a str, payload: Bytes) -> BoxFuture<'a, Result<()>>;
    fn subscribe_dyn(&self) -> BusReceiver;
}

impl<T: Bus + ?Sized> BusDyn for T {
    fn info_dyn(&self) -> &BackendInfo {
        self.info()
    }
    fn publish_dyn<'a>(&'a self, topic: &'a str, payload: Bytes) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.publish(topic, payload))
    }
    fn subscribe_dyn(&self) -> BusReceiver {
        self.subscribe()
    }
}

impl<T: BusDyn + ?Sized> Bus for Arc<T> {
    fn info(&self) -> &BackendInfo {
        (**self).info_dyn()
    }
    async fn publish(&self, topic: &str, payload: Bytes) -> Result<()> {
        (**self).publish_dyn(topic, payload).await
    }
    fn subscribe(&self) -> BusReceiver {
        (**self).subscribe_dyn()
    }
}

/// A bus chosen at run time.
pub type SharedBus = Arc<dyn BusDyn>;

/// An in-process bus: a bounded broadcast channel. Also the local half of shared buses, which
/// deliver their own publishes through it directly and the other instances' as they arrive.
#[derive(Debug, Clone)]
pub struct LocalBus {
    tx: broadcast::Sender<BusEvent>,
    info: BackendInfo,
}

impl LocalBus {
    /// Default number of events buffered for the slowest subscriber.
    pub const DEFAULT_CAPACITY: usize = 4096;

    /// A bus that buffers up to `capacity` events for its slowest subscriber (at least 1).
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Self {
            tx,
            info: BackendInfo {
                name: "local",
                capabilities: Capabilities::new(false, false, true),
            },
        }
    }

    /// Hand `event` to every current subscriber of this process.
    pub fn deliver(&self, event: BusEvent) {
        // An error only means nobody is subscribed right now.
        let _ = self.tx.send(event);
    }
}

impl Default for LocalBus {
    fn default() -> Self {
        Self::new(Self::DEFAULT_CAPACITY)
    }
}

impl Bus for LocalBus {
    fn info(&self) -> &BackendInfo {
        &self.info
    }

    async fn publish(&self, topic: &str, payload: Bytes) -> Result<()> {
        self.deliver(BusEvent::Message(BusMessage {
            topic: topic.into(),
            payload,
        }));
        Ok(())
    }

    fn subscribe(&self) -> BusReceiver {
        BusReceiver::new(self.tx.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_bus_delivers_in_order_and_reports_lag() {
        let bus: SharedBus = Arc::new(LocalBus::new(2));
        let mut rx = bus.subscribe();
        for i in 0..3u8 {
            bus.publish("t", Bytes::from(vec![i])).await.unwrap();
        }
        // Capacity 2: the first message was overwritten, which the receiver learns as a gap.
        assert_eq!(rx.recv().await, Some(BusEvent::Gap));
        for i in 1..3u8 {
            match rx.recv().await {
                Some(BusEvent::Message(m)) => {
                    assert_eq!((&*m.topic, &m.payload[..]), ("t", &[i][..]));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn receivers_end_when_the_bus_is_gone() {
        let bus = LocalBus::new(4);
        let mut rx = bus.subscribe();
        drop(bus);
        assert_eq!(rx.recv().await, None);
    }
}
