//! One upstream call shared by every identical request that arrives while it runs, streams
//! included: each follower reads the chunks recorded so far, then each new one as it arrives (a
//! `watch` channel says "something changed"; the chunks live in the flight), so no follower waits
//! for the leader's answer to end.
//!
//! The call runs in a task of its own, so the request that started it can go away without
//! cancelling it for the others; what happens when every client has gone is
//! [`OnDisconnect`](super::OnDisconnect)'s to say.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
};

use bytes::Bytes;
use futures_util::Stream;
use serde_json::{Map, Value};
use tokio::sync::watch;

use super::{
    GatewayError,
    record::{DONE, Renderer, StreamHead, sse},
};

/// How a call ended.
#[derive(Clone, Debug)]
pub(crate) enum End {
    /// Normally (`[DONE]`), with the usage the upstream reported.
    Done,
    /// With an error: before the answer began (`started` false: an HTTP error for every client) or
    /// in the middle of a stream (an `error` event).
    Failed(GatewayError),
}

#[derive(Debug, Default)]
pub(crate) struct State {
    /// The answer began (a stream's headers arrived).
    pub(crate) started: bool,
    pub(crate) head: Option<StreamHead>,
    /// The upstream's `id` and `created`, for the client that started the call.
    pub(crate) upstream_id: Option<(Value, Value)>,
    pub(crate) chunks: Vec<Arc<Value>>,
    pub(crate) usage: Option<Value>,
    /// A JSON call's answer.
    pub(crate) json: Option<Map<String, Value>>,
    pub(crate) end: Option<End>,
}

/// One shared call.
#[derive(Debug)]
pub(crate) struct Flight {
    state: Mutex<State>,
    tx: watch::Sender<u64>,
}

impl Flight {
    fn new() -> Self {
        Self {
            state: Mutex::new(State::default()),
            tx: watch::Sender::new(0),
        }
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind: keep using it.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Change the state and wake every reader.
    pub(crate) fn update(&self, change: impl FnOnce(&mut State)) {
        change(&mut self.state());
        self.tx.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Resolves when no client reads this call any more.
    pub(crate) async fn abandoned(&self) {
        self.tx.closed().await;
    }

    fn subscribe(self: &Arc<Self>, leader: bool) -> Subscription {
        Subscription {
            flight: self.clone(),
            rx: self.tx.subscribe(),
            leader,
        }
    }
}

/// The calls in flight, by what they compute.
#[derive(Debug, Default)]
pub(crate) struct Flights {
    map: Mutex<HashMap<String, Arc<Flight>>>,
}

impl Flights {
    /// Join the call for `key`, or start one: `Some(flight)` when this caller is the leader and
    /// must run it (then [`Flights::land`] it).
    pub(crate) fn join(&self, key: &str) -> (Subscription, Option<Arc<Flight>>) {
        let mut map = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(flight) = map.get(key) {
            return (flight.subscribe(false), None);
        }
        let flight = Arc::new(Flight::new());
        map.insert(key.to_owned(), flight.clone());
        (flight.subscribe(true), Some(flight))
    }

    /// The call for `key` is over: later requests start their own (or find the cache).
    pub(crate) fn land(&self, key: &str, flight: &Arc<Flight>) {
        let mut map = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.get(key).is_some_and(|f| Arc::ptr_eq(f, flight)) {
            map.remove(key);
        }
    }

    /// Calls in flight.
    pub(crate) fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or_default()
    }
}

/// A client's view of a flight.
pub(crate) struct Subscription {
    flight: Arc<Flight>,
    rx: watch::Receiver<u64>,
    /// This client started the call.
    pub(crate) leader: bool,
}

impl Subscription {
    /// Wait until the answer began, or failed before it did.
    pub(crate) async fn started(&mut self) -> Result<(), GatewayError> {
        loop {
            {
                let state = self.flight.state();
                match (&state.end, state.started) {
                    (Some(End::Failed(e)), false) => return Err(e.clone()),
                    (_, true) | (Some(End::Done), _) => return Ok(()),
                    (None, false) => {}
                }
            }
            if self.rx.changed().await.is_err() {
                return Err(GatewayError::upstream_cut());
            }
        }
    }

    /// Wait for a JSON call's answer.
    pub(crate) async fn json(mut self) -> Result<Map<String, Value>, GatewayError> {
        loop {
            {
                let state = self.flight.state();
                match (&state.end, &state.json) {
                    (Some(End::Failed(e)), _) => return Err(e.clone()),
                    (Some(End::Done), Some(json)) => return Ok(json.clone()),
                    (Some(End::Done), None) => return Err(GatewayError::upstream_malformed()),
                    (None, _) => {}
                }
            }
            if self.rx.changed().await.is_err() {
                return Err(GatewayError::upstream_cut());
            }
        }
    }

    /// The stream's events for one client, rendered with `renderer` (the leader keeps the
    /// upstream's `id` and `created`), from the first chunk: the chunks so far at once, then each
    /// one as it arrives, then the usage chunk if asked for and `[DONE]` — or an `error` event.
    pub(crate) fn into_sse(self, renderer: Renderer) -> Pin<Box<dyn Stream<Item = Bytes> + Send>> {
        let state = (self, renderer, 0usize, false);
        Box::pin(futures_util::stream::unfold(
            state,
            |(mut sub, mut renderer, next, over)| async move {
                if over {
                    return None;
                }
                if sub.leader && next == 0 {
                    let upstream_id = sub.flight.state().upstream_id.clone();
                    if let Some((id, created)) = upstream_id {
                        if let Some(id) = id.as_str() {
                            renderer.id = id.to_owned();
                        }
                        if let Some(created) = created.as_i64() {
                            renderer.created = created;
                        }
                    }
                }
                loop {
                    if let Some((frame, next, over)) = sub.frame(&renderer, next) {
                        return Some((frame, (sub, renderer, next, over)));
                    }
                    if sub.rx.changed().await.is_err() {
                        let frame = sse(&GatewayError::upstream_cut().body());
                        return Some((frame, (sub, renderer, next, true)));
                    }
                }
            },
        ))
    }

    /// The event after `next` chunks, if there is one yet: a chunk, or the end.
    fn frame(&self, renderer: &Renderer, next: usize) -> Option<(Bytes, usize, bool)> {
        let state = self.flight.state();
        let head = state.head.clone().unwrap_or_default();
        if let Some(chunk) = state.chunks.get(next) {
            return Some((renderer.chunk(&head, chunk), next + 1, false));
        }
        match &state.end {
            Some(End::Done) => {
                let mut out = Vec::new();
                if let Some(usage) = renderer.usage(&head, state.usage.as_ref()) {
                    out.extend_from_slice(&usage);
                }
                out.extend_from_slice(DONE);
                Some((Bytes::from(out), next, true))
            }
            Some(End::Failed(e)) => Some((sse(&e.body()), next, true)),
            None => None,
        }
    }
}
