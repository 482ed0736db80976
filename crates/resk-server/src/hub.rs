//! The hub of cache events and WebSocket pub/sub: the bus every connection listens to, the
//! connection limits, and the cache events handlers publish (`GET /api/ws` itself is the `ws` module).

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use resk_core::{Bus, SharedBus, TenantId};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::Semaphore;

/// The channel the server publishes cache events on.
pub(crate) const CACHE_CHANNEL: &str = "cache";

/// WebSocket limits.
#[derive(Clone, Copy, Debug)]
pub struct WsLimits {
    /// Largest client message, bytes.
    pub max_message_bytes: usize,
    /// Most subscriptions per connection.
    pub max_subscriptions: usize,
    /// Per-client send queue length.
    pub send_queue: usize,
    /// Ping interval.
    pub ping_interval: Duration,
    /// Most concurrent connections.
    pub max_connections: usize,
}

/// Connection limits and the bus every connection listens to.
#[derive(Debug)]
pub(crate) struct Hub {
    pub(crate) bus: SharedBus,
    pub(crate) limits: WsLimits,
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) dropped: metrics::Counter,
    pub(crate) lagged: metrics::Counter,
    pub(crate) received: metrics::Counter,
    pub(crate) sent: metrics::Counter,
    pub(crate) connections: metrics::Gauge,
}

pub(crate) fn topic(tenant: &TenantId, channel: &str) -> String {
    format!("ws/{tenant}/{channel}")
}

/// What travels on the bus for a channel message: the frame every subscriber receives, rendered once.
#[derive(Serialize)]
pub(crate) struct Delivery<'a> {
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    pub(crate) channel: &'a str,
    pub(crate) data: &'a Value,
}

impl Hub {
    pub(crate) fn new(bus: SharedBus, limits: WsLimits) -> Self {
        Self {
            bus,
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            limits,
            dropped: metrics::counter!("resk_ws_dropped_messages_total"),
            lagged: metrics::counter!("resk_ws_lagged_total"),
            received: metrics::counter!("resk_ws_messages_total", "direction" => "in"),
            sent: metrics::counter!("resk_ws_messages_total", "direction" => "out"),
            connections: metrics::gauge!("resk_ws_connections"),
        }
    }

    /// Publish `data` on `channel` of `tenant`, to every subscriber on every instance.
    pub(crate) async fn publish(
        &self,
        tenant: &TenantId,
        channel: &str,
        data: &Value,
    ) -> resk_core::Result<()> {
        let frame = serde_json::to_vec(&Delivery {
            kind: "message",
            channel,
            data,
        })
        .map_err(|e| {
            resk_core::Error::new(
                resk_core::ErrorKind::InvalidInput,
                "ws",
                "publish",
                e.to_string(),
            )
        })?;
        self.bus
            .publish(&topic(tenant, channel), Bytes::from(frame))
            .await
    }

    /// Publish a cache event for `tenant` on its `cache` channel. Best effort: a failure is logged
    /// and counted, never the caller's error (the cache operation itself succeeded).
    pub(crate) async fn cache_event(&self, tenant: &TenantId, event: Value) {
        if let Err(err) = self.publish(tenant, CACHE_CHANNEL, &event).await {
            metrics::counter!("resk_ws_event_publish_failures_total").increment(1);
            tracing::warn!(error = %err, "cache event not published to other instances");
        }
    }
}
