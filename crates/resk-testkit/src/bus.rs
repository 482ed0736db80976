//! Bus scenarios, one per bullet of `Bus`'s contract (this process's side of it: delivery to other
//! processes is each remote bus's own test).

use std::time::Duration;

use bytes::Bytes;
use resk_core::{Bus, BusEvent, BusReceiver};

use crate::unique_id;

async fn next_on(rx: &mut BusReceiver, topic: &str) -> Bytes {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let event = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("a message within 5 s")
            .expect("the bus is open");
        if let BusEvent::Message(m) = event
            && &*m.topic == topic
        {
            return m.payload;
        }
    }
}

/// Every current subscriber receives a message, with its topic and payload.
pub async fn every_subscriber_receives<B: Bus>(bus: &B) {
    let topic = format!("t-{}", unique_id());
    let mut a = bus.subscribe();
    let mut b = bus.subscribe();
    bus.publish(&topic, Bytes::from_static(b"hello"))
        .await
        .unwrap();
    assert_eq!(next_on(&mut a, &topic).await, Bytes::from_static(b"hello"));
    assert_eq!(next_on(&mut b, &topic).await, Bytes::from_static(b"hello"));
}

/// Messages arrive in publish order, each once.
pub async fn order_per_publisher<B: Bus>(bus: &B) {
    let topic = format!("t-{}", unique_id());
    let mut rx = bus.subscribe();
    for i in 0..50u32 {
        bus.publish(&topic, Bytes::from(i.to_string()))
            .await
            .unwrap();
    }
    for i in 0..50u32 {
        assert_eq!(next_on(&mut rx, &topic).await, Bytes::from(i.to_string()));
    }
    // Nothing more on the topic: no duplicates.
    let extra = tokio::time::timeout(Duration::from_millis(300), next_on(&mut rx, &topic)).await;
    assert!(extra.is_err(), "a message was delivered twice");
}

/// A subscription sees only what is published after it.
pub async fn late_subscriber_sees_only_later<B: Bus>(bus: &B) {
    let topic = format!("t-{}", unique_id());
    bus.publish(&topic, Bytes::from_static(b"before"))
        .await
        .unwrap();
    // Let a remote bus deliver the first message to its (earlier) listeners.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut rx = bus.subscribe();
    bus.publish(&topic, Bytes::from_static(b"after"))
        .await
        .unwrap();
    assert_eq!(next_on(&mut rx, &topic).await, Bytes::from_static(b"after"));
}

/// Binary and empty payloads travel unchanged.
pub async fn payloads_unchanged<B: Bus>(bus: &B) {
    let topic = format!("t-{}", unique_id());
    let mut rx = bus.subscribe();
    let binary = Bytes::from((0u8..=255).collect::<Vec<_>>());
    bus.publish(&topic, binary.clone()).await.unwrap();
    bus.publish(&topic, Bytes::new()).await.unwrap();
    assert_eq!(next_on(&mut rx, &topic).await, binary);
    assert_eq!(next_on(&mut rx, &topic).await, Bytes::new());
}
